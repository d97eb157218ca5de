"""Every method of the paper behind one call: `segment` one image, `segment_batch` many.

Methods (`METHODS`, the paper's five, and `VARIANTS`, the ablations of its research question 2):

  kmeans       K-means on pixel features (paper 5.1).
  gmm          Gaussian mixture fitted by EM, initialised by K-means, MAP labels (paper 5.3).
  cnn          the differentiable feature clustering CNN of Kim, Kanezaki & Tanaka (paper 5.2).
  cnn_kmeans   ensemble: the CNN, then K-means on its mean-colour image (see below).
  gmm_kmeans   ensemble: the GMM, then K-means on its mean-colour image.
  cnn_ce       the CNN with the similarity (cross-entropy) loss only: mu = 0 (paper Figure 1).
  kmeans_xy, gmm_xy   K-means / GMM with each pixel's (row, col), scaled to [0, 1], appended to
               its colour at weight `XY_WEIGHT` (does spatial position help the clusterings?).

The ensembles, as we read the paper's section 7: "we first got the segmented image from the CNN,
and then used that image into a less intensive K Means approach". The first method segments the
image; every pixel is replaced by the mean RGB colour of its segment; K-means, with K by the
elbow method, clusters that mean-colour image's pixels (colour only). Pixels of one segment share
one colour, so the second stage can only merge first-stage segments, never split them, and it
runs on the segments' mean colours weighted by their sizes: the same objective.

K-means and the GMM of a uint8 image cluster its distinct colours weighted by their pixel
counts (`colour_size`): the same objective as over all pixels, on fewer points.

Keys: a method splits its image's key in two, `(base_key, ensemble_key) = split(key)`. The first
stage (K-means, GMM or CNN) uses `base_key`, the ensemble's K-means `ensemble_key`, so
`cnn_kmeans` refines exactly the labels `cnn` returns for the same key.

Shapes: images of any size batch together through buckets (`bucket_shape`): a portrait image is
transposed to landscape, then padded with zeros at the bottom and right up to a multiple of
`pad_multiple`, with a mask that keeps the padding out of every fit (zero sample weight; the
CNN's loss and BatchNorm statistics; the CNN's zero "same" padding makes its padded fit equal to
the unpadded one). The bucket depends only on the image's own shape, so an image's labels
never depend on which other images share its batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import cnn, features, gmm, kmeans

__all__ = [
    "METHODS",
    "VARIANTS",
    "XY_WEIGHT",
    "Options",
    "Segmentation",
    "base_method",
    "bucket_shape",
    "colour_size",
    "consecutive_labels",
    "from_bucket",
    "is_ensemble",
    "label_bound",
    "method_options",
    "recluster_mean_colours",
    "segment",
    "segment_base",
    "segment_batch",
    "segment_images",
    "split_keys",
    "to_bucket",
]

METHODS = ("kmeans", "gmm", "cnn", "cnn_kmeans", "gmm_kmeans")
VARIANTS = ("cnn_ce", "kmeans_xy", "gmm_xy")

# Weight of the (row, col) features of the `kmeans_xy` / `gmm_xy` variants, relative to colour
# in [0, 1]: of 0.25, 0.5, 1 and 2, the best mean covering and PRI of K-means on 10 BSDS500
# train images (every 20th).
XY_WEIGHT = 0.5

_BASE = {
    "kmeans": "kmeans",
    "gmm": "gmm",
    "cnn": "cnn",
    "cnn_kmeans": "cnn",
    "gmm_kmeans": "gmm",
    "cnn_ce": "cnn",
    "kmeans_xy": "kmeans",
    "gmm_xy": "gmm",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings shared by the methods (hashable: a static argument of the compiled stages).

    Attributes:
      space: pixel colour features, "rgb" (in [0, 1], the paper) or "lab" (see
        `jaxseg.features.pixel_features`); also used by the ensembles' K-means stage.
      xy_weight: weight of the (row, col) features appended to colour (0: colour only).
      k_min, k_max: the range of K searched by the elbow method.
      covariance_type: the GMM's covariance type ("full", "diag", "spherical").
      cnn_config: the CNN's `jaxseg.cnn.Config`; None is the paper preset.
    """

    space: str = "rgb"
    xy_weight: float = 0.0
    k_min: int = 2
    k_max: int = 10
    covariance_type: str = "full"
    cnn_config: cnn.Config | None = None

    def __post_init__(self):
        if self.space not in ("rgb", "lab"):
            raise ValueError(f"space must be 'rgb' or 'lab', got {self.space!r}")
        if not self.xy_weight >= 0:
            raise ValueError(f"xy_weight must be >= 0, got {self.xy_weight}")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}, {self.k_max}")
        if self.covariance_type not in ("full", "diag", "spherical"):
            raise ValueError(f"unknown covariance_type {self.covariance_type!r}")

    @property
    def cnn(self) -> cnn.Config:
        return cnn.Config.paper() if self.cnn_config is None else self.cnn_config


class Segmentation(NamedTuple):
    """Label maps of a batch.

    Attributes:
      labels: [b, h, w] int32, consecutive labels 0..n_clusters-1 over the unmasked pixels
        (masked pixels are 0).
      n_clusters: [b] int32, the number of distinct labels.
    """

    labels: jax.Array
    n_clusters: jax.Array


def base_method(method: str) -> str:
    """The first-stage method of `method`: "kmeans", "gmm" or "cnn"."""
    _check_method(method)
    return _BASE[method]


def is_ensemble(method: str) -> bool:
    """Whether `method` re-clusters its first stage's mean-colour image with K-means."""
    _check_method(method)
    return method.endswith("_kmeans")


def method_options(method: str, options: Options) -> Options:
    """The options `method`'s first stage runs with: `options` with its variant's overrides."""
    _check_method(method)
    if method == "cnn_ce":
        return dataclasses.replace(options, cnn_config=dataclasses.replace(options.cnn, mu=0.0))
    if method.endswith("_xy"):
        return dataclasses.replace(options, xy_weight=XY_WEIGHT)
    return options


def split_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[b]` image keys -> `(base_keys, ensemble_keys)`, each `[b]` (see the module doc)."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


# --------------------------------------------------------------------------- buckets


def bucket_shape(height: int, width: int, *, pad_multiple: int = 1) -> tuple[int, int, bool]:
    """`(bucket_height, bucket_width, transposed)` for an image of shape [height, width].

    Portrait images (height > width) are transposed; each side is rounded up to a multiple of
    `pad_multiple` (1: no padding).
    """
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    transposed = height > width
    if transposed:
        height, width = width, height
    height, width = (-(-side // pad_multiple) * pad_multiple for side in (height, width))
    return height, width, transposed


def to_bucket(image: np.ndarray, *, pad_multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`(bucketed image [H, W, 3] float32 in [0, 1], mask [H, W] bool)` (see `bucket_shape`)."""
    image = _as_float_image(np.asarray(image))
    height, width, transposed = bucket_shape(*image.shape[:2], pad_multiple=pad_multiple)
    if transposed:
        image = image.transpose(1, 0, 2)
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]))
    mask = np.pad(np.ones(image.shape[:2], dtype=bool), pad)
    return np.pad(image, (*pad, (0, 0))), mask


def from_bucket(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bucketed labels [H, W] back to an image of shape [height, width] (`to_bucket` inverted)."""
    height, width = shape
    if height > width:
        return np.ascontiguousarray(labels[:width, :height].T)
    return labels[:height, :width]


def _as_float_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [h, w, 3], got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError("a float image must hold finite values in [0, 1]")
    return image.astype(np.float32)


# --------------------------------------------------------------------------- stages


def consecutive_labels(labels: jax.Array, mask: jax.Array, size: int) -> Segmentation:
    """Renumbers a batch of labels [b, h, w] in [0, size) to 0..n-1 (in order of value) over
    the unmasked pixels (mask [b, h, w]); masked pixels get 0."""

    def one(labels, mask):
        present = jnp.zeros(size, bool).at[labels].max(mask)
        rank = jnp.cumsum(present) - 1
        return jnp.where(mask, rank[labels], 0).astype(jnp.int32), present.sum(dtype=jnp.int32)

    return Segmentation(*jax.vmap(one)(labels, mask))


def _pixel_features(images: jax.Array, mask: jax.Array, options: Options):
    """`([b, h*w, d] features, [b, h*w] sample weights)` of a batch."""
    x = jax.vmap(
        functools.partial(features.pixel_features, space=options.space, xy_weight=options.xy_weight)
    )(images)
    return x, mask.reshape(mask.shape[0], -1).astype(jnp.float32)


def _elbow(x, w, key, options: Options):
    """(labels [n] of the K the elbow method chooses, that K) for one image's points."""
    result = kmeans.elbow(x, key, k_min=options.k_min, k_max=options.k_max, sample_weight=w)
    return result.labels[result.n_clusters - options.k_min], result.n_clusters


def _kmeans_labels(x, weight, keys, n_clusters, options: Options):
    """K-means labels [b, n] (K fixed, or by the elbow method), and their upper bound."""
    if n_clusters == "elbow":
        labels, _ = jax.vmap(functools.partial(_elbow, options=options))(x, weight, keys)
        return labels, options.k_max
    result = jax.vmap(lambda x, w, key: kmeans.fit(x, n_clusters, key, sample_weight=w))(
        x, weight, keys
    )
    return result.labels, n_clusters


def _gmm_labels(x, weight, keys, n_clusters, options: Options):
    """GMM MAP labels [b, n], and their upper bound.

    With a fixed K, `gmm.fit` (K-means initialisation) under vmap. With K by the elbow method,
    EM starts from the elbow's K-means partition of the chosen K (the paper's "prior from
    K-means, K by the elbow method"): `gmm.fit_from_labels` with arrays for k_max components of
    which the first K (traced, per image) are fitted, so one compilation covers every K and the
    batch runs under vmap.
    """
    covariance_type = options.covariance_type
    if n_clusters != "elbow":
        result = jax.vmap(
            lambda x, w, key: gmm.fit(
                x, n_clusters, key, covariance_type=covariance_type, sample_weight=w
            )
        )(x, weight, keys)
        return result.labels, n_clusters
    labels, chosen = jax.vmap(functools.partial(_elbow, options=options))(x, weight, keys)
    result = jax.vmap(
        lambda x, w, labels, k: gmm.fit_from_labels(
            x,
            labels,
            options.k_max,
            n_active=k,
            covariance_type=covariance_type,
            sample_weight=w,
        )
    )(x, weight, labels, chosen)
    return result.labels, options.k_max


def colour_size(image: np.ndarray) -> int | None:
    """Static size of the distinct-colour compression of a bucketed image [h, w, 3] (float
    holding uint8 values / 255, as `to_bucket` gives for uint8 input): half its pixel count when
    it has at most that many distinct colours (BSDS images have 5k to 90k of 154k), else None
    (every pixel a point). One size per image shape keeps one compilation per shape, and depends
    only on the image, so its labels do not depend on its batch."""
    size = image.shape[0] * image.shape[1] // 2
    count = features.count_distinct_colours(np.round(image * 255).astype(np.uint8))
    return size if 0 < count <= size else None


def _colour_points(images, mask, n_colours: int, options: Options):
    """Distinct colours as weighted points: ([b, n_colours, 3] features, [b, n_colours]
    unmasked pixel counts, [b, h*w] each pixel's row)."""
    b = images.shape[0]
    pixels = jnp.round(images * 255).astype(jnp.uint8).reshape(b, -1, 3)
    found = jax.vmap(functools.partial(features.distinct_colours, size=n_colours))(pixels)
    counts = jax.vmap(functools.partial(jax.ops.segment_sum, num_segments=n_colours))(
        mask.reshape(b, -1).astype(jnp.float32), found.inverse
    )
    x = jax.vmap(functools.partial(features.colour_features, space=options.space))(found.colours)
    return x, counts, found.inverse


def segment_base(
    images: jax.Array,
    keys: jax.Array,
    mask: jax.Array,
    *,
    base: str,
    n_clusters: int | str,
    options: Options,
    n_colours: int | None = None,
) -> Segmentation:
    """The first stage of a batch: K-means, GMM or the CNN (pure; jit and shard it).

    Args:
      images: [b, h, w, 3] float32 in [0, 1].
      keys: [b] base keys (`split_keys`).
      mask: [b, h, w] bool, False on padding.
      base: "kmeans", "gmm" or "cnn".
      n_clusters: K, or "elbow" (ignored by the CNN, which picks its own number of labels).
      options: the method's `Options` (`method_options`).
      n_colours: K-means and GMM on colour features only (xy_weight 0) cluster the images'
        distinct colours weighted by their pixel counts, exactly the objective over all pixels,
        when this static size (>= every image's number of distinct colours, `colour_size`, and
        >= K) is given; the images must then hold uint8 values / 255. None: every pixel is a
        point.
    """
    b, h, w, _ = images.shape
    if base == "cnn":
        result = cnn.segment_batch(images, keys, options.cnn, mask=mask)
        return consecutive_labels(result.labels, mask, options.cnn.n_channels)
    fit = _kmeans_labels if base == "kmeans" else _gmm_labels
    n_max = options.k_max if n_clusters == "elbow" else n_clusters
    if n_colours is not None and n_colours >= n_max and options.xy_weight == 0:
        x, weight, inverse = _colour_points(images, mask, n_colours, options)
        colour_labels, bound = fit(x, weight, keys, n_clusters, options)
        labels = jnp.take_along_axis(colour_labels, inverse, axis=1)
    else:
        x, weight = _pixel_features(images, mask, options)
        labels, bound = fit(x, weight, keys, n_clusters, options)
    return consecutive_labels(labels.reshape(b, h, w), mask, bound)


def label_bound(method: str, n_clusters: int | str, options: Options) -> int:
    """An upper bound (exclusive) of the labels `method`'s first stage can return."""
    base = base_method(method)
    if base == "cnn":
        return method_options(method, options).cnn.n_channels
    return options.k_max if n_clusters == "elbow" else n_clusters


def recluster_mean_colours(
    images: jax.Array,
    labels: jax.Array,
    keys: jax.Array,
    mask: jax.Array,
    *,
    n_segments: int,
    n_clusters: int | str,
    options: Options,
) -> Segmentation:
    """The ensembles' second stage: K-means of the first stage's mean-colour image (pure).

    Every pixel of a segment holds the segment's mean colour, so K-means of that image's pixels
    is K-means of the segments' mean colours weighted by their pixel counts: the same objective
    over `n_segments` points instead of h*w, solved that way. Position features are not used
    (`options.xy_weight` is ignored): the paper re-clusters the segmented image's colours.

    Args:
      images: [b, h, w, 3] float32 in [0, 1].
      labels: [b, h, w] int32 first-stage labels in [0, n_segments) (`label_bound`).
      keys: [b] ensemble keys (`split_keys`).
      mask: [b, h, w] bool, False on padding.
      n_segments: static bound of `labels`.
      n_clusters: K of the K-means stage, or "elbow".
      options: `Options` (colour space, elbow range).
    """
    b, h, w, _ = images.shape
    n_points = max(n_segments, options.k_max if n_clusters == "elbow" else n_clusters)

    def segment_colours(image, labels, mask):
        weight = mask.reshape(-1).astype(image.dtype)
        flat = labels.reshape(-1)
        sums = jax.ops.segment_sum(image.reshape(-1, 3) * weight[:, None], flat, n_points)
        counts = jax.ops.segment_sum(weight, flat, n_points)
        means = sums / jnp.maximum(counts, 1)[:, None]
        return features.colour_features(means, space=options.space), counts

    x, counts = jax.vmap(segment_colours)(images, labels, mask)
    segment_labels, bound = _kmeans_labels(x, counts, keys, n_clusters, options)
    new_labels = jnp.take_along_axis(segment_labels, labels.reshape(b, -1), axis=1)
    return consecutive_labels(new_labels.reshape(b, h, w), mask, bound)


# --------------------------------------------------------------------------- entry points


@functools.partial(jax.jit, static_argnames=("method", "n_clusters", "options", "n_colours"))
def _segment_batch(images, keys, mask, *, method, n_clusters, options, n_colours):
    base_keys, ensemble_keys = split_keys(keys)
    base_options = method_options(method, options)
    base_n_clusters = "elbow" if is_ensemble(method) else n_clusters
    result = segment_base(
        images,
        base_keys,
        mask,
        base=_BASE[method],
        n_clusters=base_n_clusters,
        options=base_options,
        n_colours=n_colours,
    )
    if not is_ensemble(method):
        return result
    return recluster_mean_colours(
        images,
        result.labels,
        ensemble_keys,
        mask,
        n_segments=label_bound(method, base_n_clusters, options),
        n_clusters=n_clusters,
        options=options,
    )


def segment_batch(
    images: jax.Array,
    method: str = "gmm_kmeans",
    *,
    keys: jax.Array,
    mask: jax.Array | None = None,
    n_clusters: int | str = "elbow",
    n_colours: int | None = None,
    **options,
) -> Segmentation:
    """Segments a batch of same-shape images with `method`, in one compiled call.

    Args:
      images: [b, h, w, 3], uint8 or float in [0, 1].
      method: one of `METHODS + VARIANTS`.
      keys: [b] PRNG keys, one per image (the runner uses `fold_in(PRNGKey(seed), index)`).
      mask: [b, h, w] bool, False on padded pixels; None: every pixel counts.
      n_clusters: K of K-means / GMM (of the K-means stage for the ensembles), or "elbow".
      n_colours: cluster the distinct colours (see `segment_base`): a static size >= every
        image's number of distinct colours (`colour_size`); the images must hold uint8 values.
        None: cluster every pixel.
      **options: fields of `Options`.

    Returns:
      A `Segmentation` with labels [b, h, w]. Image i's labels depend only on images[i],
      keys[i], mask[i] and n_colours.
    """
    opts = _options(options)
    _check_method(method)
    _check_n_clusters(n_clusters)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [b, h, w, 3], got shape {images.shape}")
    images = np.stack([_as_float_image(image) for image in images])
    if mask is None:
        mask = np.ones(images.shape[:3], dtype=bool)
    elif np.shape(mask) != images.shape[:3]:
        raise ValueError(f"mask must have shape {images.shape[:3]}, got {np.shape(mask)}")
    if len(keys) != len(images):
        raise ValueError(f"need one key per image: {len(keys)} keys, {len(images)} images")
    if n_colours is not None:
        if not np.array_equal(np.round(images * 255) / np.float32(255), images):
            raise ValueError("n_colours needs images of uint8 values (uint8, or uint8 / 255)")
        counts = [
            features.count_distinct_colours(np.round(x * 255).astype(np.uint8)) for x in images
        ]
        if max(counts) > n_colours:
            raise ValueError(f"an image has {max(counts)} distinct colours > n_colours={n_colours}")
    return _segment_batch(
        images,
        keys,
        jnp.asarray(mask, bool),
        method=method,
        n_clusters=n_clusters,
        options=opts,
        n_colours=n_colours,
    )


def segment(
    image,
    method: str = "gmm_kmeans",
    *,
    key: jax.Array,
    n_clusters: int | str = "elbow",
    **options,
) -> jax.Array:
    """Segments one image with `method` through the runner's pipeline.

    Args:
      image: [h, w, 3], uint8 or float in [0, 1].
      method: one of `METHODS + VARIANTS` (see the module doc).
      key: PRNG key.
      n_clusters: K of K-means / GMM (of the K-means stage for the ensembles), or "elbow".
      **options: fields of `Options` (space, xy_weight, k_min, k_max, covariance_type,
        cnn_config).

    Returns:
      The label map [h, w] int32, labels 0..n-1. Equal to the labels the runner and
      `segment_images` give this image with this key, whatever the batch. K-means and GMM of a
      uint8 image run over its distinct colours (the same objective, `colour_size`).
    """
    return segment_images([image], method, keys=key[None], n_clusters=n_clusters, **options)[0]


def segment_images(
    images: Sequence[np.ndarray],
    method: str = "gmm_kmeans",
    *,
    keys: jax.Array,
    n_clusters: int | str = "elbow",
    pad_multiple: int = 1,
    **options,
) -> list[jax.Array]:
    """Segments images of any shapes, batching those that share a bucket: the same
    `bucket_shape` and, for uint8 images, the same `colour_size`.

    Returns one label map [h_i, w_i] int32 per image, in order.
    """
    if len(keys) != len(images):
        raise ValueError(f"need one key per image: {len(keys)} keys, {len(images)} images")
    buckets: dict[tuple, list[int]] = {}
    prepared = [to_bucket(image, pad_multiple=pad_multiple) for image in images]
    for i, (bucketed, _) in enumerate(prepared):
        n_colours = colour_size(bucketed) if np.asarray(images[i]).dtype == np.uint8 else None
        buckets.setdefault((bucketed.shape[:2], n_colours), []).append(i)
    out: list = [None] * len(images)
    for (_, n_colours), members in buckets.items():
        result = segment_batch(
            np.stack([prepared[i][0] for i in members]),
            method,
            keys=keys[np.asarray(members)],
            mask=np.stack([prepared[i][1] for i in members]),
            n_clusters=n_clusters,
            n_colours=n_colours,
            **options,
        )
        labels = np.asarray(result.labels)
        for j, i in enumerate(members):
            out[i] = jnp.asarray(from_bucket(labels[j], np.shape(images[i])[:2]))
    return out


def _options(options: dict) -> Options:
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(Options)})
    if unknown:
        fields = ", ".join(f.name for f in dataclasses.fields(Options))
        raise ValueError(f"unknown options {unknown}; choose from {fields}")
    return Options(**options)


def _check_method(method: str) -> None:
    if method not in _BASE:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(_BASE)}")


def _check_n_clusters(n_clusters) -> None:
    if n_clusters == "elbow":
        return
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise ValueError(f"n_clusters must be an integer >= 2 or 'elbow', got {n_clusters!r}")
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2 or 'elbow', got {n_clusters}")
