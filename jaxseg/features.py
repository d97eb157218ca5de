"""Per-pixel features for clustering, and the distinct-colour compression of an image.

`pixel_features` turns an [h, w, 3] image into the [h*w, d] points that K-means and the GMM
cluster: RGB in [0, 1] (the paper), or CIE Lab, optionally followed by the pixel's (row, col)
position scaled to [0, 1] and multiplied by `xy_weight`.

Colour-only features depend on a pixel's colour alone, so clustering the image's distinct colours,
each weighted by its pixel count, optimises exactly the same objective over 3-9x fewer points
(BSDS images have 5k-70k distinct colours among 154k pixels):

    dc = distinct_colours(image, size=size)          # static size >= number of distinct colours
    fit = kmeans.fit(colour_features(dc.colours), k, key, sample_weight=dc.counts)
    labels = fit.labels[dc.inverse].reshape(image.shape[:2])
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DistinctColours",
    "colour_features",
    "count_distinct_colours",
    "distinct_colours",
    "pixel_features",
    "unit_lab",
]

_SPACES = ("rgb", "lab")
# sRGB (linear) to CIE XYZ, D65 white point (IEC 61966-2-1), and the D65 reference white.
_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    np.float32,
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883], np.float32)
_LAB_SCALE = 100.0
_UNIT_LAB_SCALE = 216.0  # 2 * max |a*|, |b*| over sRGB (b* of blue: -107.9)


class DistinctColours(NamedTuple):
    """The distinct colours of an image of n pixels, padded to a static `size`.

    Attributes:
      colours: [size, 3] uint8 distinct colours in increasing (r, g, b) order; rows from
        `n_distinct` on are 0.
      counts: [size] float32 number of pixels of each colour (0 for the padding rows), ready to
        be a `sample_weight`.
      inverse: [n] int32 row of `colours` holding each pixel's colour, so that
        `labels_of_colours[inverse]` gives per-pixel labels.
      n_distinct: [] int32 number of distinct colours.
    """

    colours: jax.Array
    counts: jax.Array
    inverse: jax.Array
    n_distinct: jax.Array


def _check_rgb(image, *, rank: int | None = None) -> jax.Array:
    """Checks an RGB array [..., 3] (uint8, or float in [0, 1]) and returns float32 in [0, 1]."""
    image = jnp.asarray(image)
    if image.shape[-1:] != (3,) or (rank is not None and image.ndim != rank):
        expected = "[h, w, 3]" if rank == 3 else "[..., 3]"
        raise ValueError(f"expected an RGB array of shape {expected}, got shape {image.shape}")
    if image.dtype == jnp.uint8:
        return image.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"RGB values must be uint8 or float in [0, 1], got {image.dtype}")
    if not isinstance(image, jax.core.Tracer):
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ValueError("RGB values contain NaN or inf")
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(
                f"float RGB values must lie in [0, 1], got [{values.min()}, {values.max()}]"
            )
    return image.astype(jnp.float32)


def _srgb_to_lab(rgb: jax.Array) -> jax.Array:
    """CIE L*a*b* (D65, 2-degree observer, as skimage.color.rgb2lab) of sRGB in [0, 1]."""
    linear = jnp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = jnp.dot(linear, _RGB_TO_XYZ.T, precision=jax.lax.Precision.HIGHEST) / _WHITE_D65
    delta = 6.0 / 29.0
    f = jnp.where(xyz > delta**3, jnp.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def colour_features(colours, *, space: str = "rgb") -> jax.Array:
    """Features [n, 3] float32 of colours [n, 3] (uint8, or float in [0, 1]).

    space: "rgb" gives RGB in [0, 1]; "lab" gives CIE L*a*b* (sRGB, D65) divided by 100, so
    L* lies in [0, 1], a* and b* in about [-0.9, 1.0], and Euclidean distance is CIE76 Delta E
    / 100.
    """
    if space not in _SPACES:
        raise ValueError(f"space must be one of {_SPACES}, got {space!r}")
    rgb = _check_rgb(colours)
    if rgb.ndim != 2:
        raise ValueError(f"colours must have shape [n, 3], got shape {rgb.shape}")
    return rgb if space == "rgb" else _srgb_to_lab(rgb) / _LAB_SCALE


def unit_lab(images: jax.Array) -> jax.Array:
    """CIE L*a*b* of sRGB images [..., 3] (uint8, or float in [0, 1]) in the unit cube:
    (L*, a*, b*) / 216 + (0, 1/2, 1/2). sRGB's L* spans 0..100, a* -86..98 and b* -108..95, so
    every colour lands inside [0, 1] with L* weighed against a* and b* as in Lab / 100.
    `cnn_refined` fits its CNN on these (`refined_space`): its first convolution is followed by
    BatchNorm, so only the channels' relative scale matters."""
    lab = _srgb_to_lab(_check_rgb(images))
    return lab / _UNIT_LAB_SCALE + jnp.array([0.0, 0.5, 0.5], jnp.float32)


def pixel_features(image, *, space: str = "rgb", xy_weight: float = 0.0) -> jax.Array:
    """Per-pixel features [h*w, d] float32 of an image [h, w, 3] (uint8, or float in [0, 1]).

    The colour part is `colour_features` (d = 3). With xy_weight > 0 (a Python number), the
    pixel's row / (h - 1) and column / (w - 1), each in [0, 1], times xy_weight are appended
    (d = 5); xy_weight sets how much spatial continuity counts against colour.
    """
    rgb = _check_rgb(image, rank=3)
    if not (np.isfinite(xy_weight) and xy_weight >= 0):
        raise ValueError(f"xy_weight must be finite and >= 0, got {xy_weight}")
    h, w, _ = rgb.shape
    features = colour_features(rgb.reshape(h * w, 3), space=space)
    if xy_weight == 0:
        return features
    rows, cols = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) / max(h - 1, 1),
        jnp.arange(w, dtype=jnp.float32) / max(w - 1, 1),
        indexing="ij",
    )
    xy = jnp.stack([rows.ravel(), cols.ravel()], axis=1) * jnp.float32(xy_weight)
    return jnp.concatenate([features, xy], axis=1)


def _codes(pixels: jax.Array) -> jax.Array:
    """24-bit integer code r << 16 | g << 8 | b of uint8 pixels [n, 3]."""
    p = pixels.astype(jnp.int32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


@functools.partial(jax.jit, static_argnames=("size",))
def _distinct_colours(pixels: jax.Array, *, size: int) -> DistinctColours:
    codes = _codes(pixels)
    n = codes.shape[0]
    ordered = jax.lax.sort(codes, is_stable=False)  # XLA's fast path: one int32 operand
    starts = jnp.concatenate([jnp.ones(1, bool), ordered[1:] != ordered[:-1]])
    # Run starts in order, padded with n; run lengths are the gaps between them.
    first = jnp.nonzero(starts, size=size + 1, fill_value=n)[0]
    unique = jnp.where(first[:-1] < n, ordered[jnp.minimum(first[:-1], n - 1)], 0)
    valid = jnp.arange(size) < jnp.sum(starts)
    # Padding codes sort after every colour so that searchsorted finds each pixel's row.
    inverse = jnp.searchsorted(jnp.where(valid, unique, 1 << 24), codes).astype(jnp.int32)
    colours = jnp.stack([unique >> 16, (unique >> 8) & 255, unique & 255], axis=1)
    return DistinctColours(
        colours=colours.astype(jnp.uint8),
        counts=(first[1:] - first[:-1]).astype(jnp.float32),
        inverse=jnp.minimum(inverse, size - 1),
        n_distinct=jnp.sum(starts).astype(jnp.int32),
    )


def distinct_colours(image, *, size: int) -> DistinctColours:
    """The distinct colours of a uint8 image [h, w, 3] (or pixels [n, 3]) and their counts.

    Args:
      image: uint8 RGB image [h, w, 3] or pixel list [n, 3]; vmap for a batch.
      size: static number of rows to return, at least the number of distinct colours (see
        `count_distinct_colours`); round it up to a few buckets to limit recompilation.

    Returns:
      DistinctColours. When the image is concrete and has more than `size` distinct colours a
      ValueError is raised; under tracing the colours past `size` are dropped (their pixels get
      inverse `size - 1`, the counts no longer sum to n) and `n_distinct` tells.
    """
    image = jnp.asarray(image)
    if image.dtype != jnp.uint8 or image.shape[-1:] != (3,) or image.ndim not in (2, 3):
        raise ValueError(
            f"expected a uint8 image [h, w, 3] or pixels [n, 3], got {image.dtype} {image.shape}"
        )
    pixels = image.reshape(-1, 3)
    if not 1 <= size:
        raise ValueError(f"size must be >= 1, got {size}")
    result = _distinct_colours(pixels, size=size)
    if not isinstance(result.n_distinct, jax.core.Tracer) and int(result.n_distinct) > size:
        raise ValueError(
            f"the image has {int(result.n_distinct)} distinct colours, more than size={size}"
        )
    return result


def count_distinct_colours(image) -> int:
    """Number of distinct colours of a concrete uint8 image [h, w, 3] (host-side NumPy)."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.shape[-1:] != (3,):
        raise ValueError(f"expected a uint8 RGB image, got {pixels.dtype} {pixels.shape}")
    pixels = pixels.reshape(-1, 3).astype(np.int32)
    return int(np.unique((pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]).size)
