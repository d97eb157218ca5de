"""Unsupervised local boundary cues: multi-scale oriented gradients of colour and texture.

The cues follow gPb's local part (Arbelaez et al. 2011) without its learned weights. At every
pixel and for every orientation theta, a disc of radius r is split into two halves by a line
through the pixel at angle theta, and each cue compares the two halves:

  * colour: the distance between the halves' mean CIE Lab colours (`features.colour_features`,
    so Lab / 100); a difference of means is linear, so it is one convolution per orientation.
  * texture: every pixel gets a texton, its nearest K-means centre (`jaxseg.kmeans`) among the
    responses of a small filter bank on L*; the cue is the chi-squared distance between the
    halves' texton histograms. With D = h1 - h2 and S = (h1 + h2) / 2 the half-disc histograms'
    difference and mean, chi2 = 1/2 sum_k (H1 - H2)^2 / (H1 + H2) = 1/4 sum_k D_k^2 / S_k, so it
    takes one convolution per orientation plus one for the disc, per texton.
  * colour histograms: every pixel gets a colour bin, its nearest K-means centre among the
    pixels' Lab colours; the cue is the chi-squared distance between the halves' bin
    histograms, as for textons (gPb's colour gradients compare histograms too). Inside a region
    of mixed colours (light and dark water, leaves and their shadows) both halves hold the same
    mix, so it stays low where the difference of means is high at small radii.

All convolutions are products of FFTs of the symmetrically padded maps (the half-disc kernels
are up to 49 x 49). Each cue's oriented gradients are averaged over its scales (or pooled by
their minimum, `scale_pooling="min"`: an edge shows at every radius, texture speckle fades at
large ones), weighted (`colour_weight`, `texture_weight`, `colour_histogram_weight`) and
summed; optionally
`isotropic_weight` times the sum's minimum over orientations (its isotropic part: texture
differs across every line through a pixel, an edge only across its own direction) is
subtracted; the rest is squashed to [0, 1) by `1 - exp(-g / gain)`; the strength is the
maximum over orientations.

Nothing is learned from human boundaries. The weights were chosen by the region benchmark of
the hierarchy built on these cues (`jaxseg.hierarchy`) on 20 BSDS500 train images: texture
weight 1 -> 0.5 -> 0.25 raised covering ODS 0.51 -> 0.52 -> 0.56 (the chi-squared distance of
small texton histograms is noisy, so texture starts at radius 8), gain 0.25 beat 0.12 and 0.5.

Retuned against the limit of the hierarchy's PRI at one dataset threshold (large regions of
strong texture, water or foliage, cut into pieces because the colour gradient is strong all
over them), with the merge defaults fixed, on 80 train images (indices 1, 6, ..., 196 and 2,
7, ..., 197; per-radius gradients cached, watershed and merge rebuilt per setting, 25 thresholds;
covering / PRI / VOI at ODS). The defaults (mean over scales, no isotropic term): 0.607 /
0.824 / 1.676. Pooling by the minimum over scales: 0.621 / 0.829 / 1.582; subtracting half the
minimum over orientations: 0.613 / 0.831 / 1.679 (0.3: 0.615 / 0.833 / 1.672, 0.7: 0.613 /
0.834 / 1.693, 1: 0.598 / 0.821 / 1.739; half the mean instead of the minimum: 0.611 / 0.824 /
1.694); both: 0.628 / 0.836 / 1.594, PRI per 40-image subset 0.846 -> 0.855 and 0.814 ->
0.818. On BSDS500 val (100 images, 99 thresholds, run once) both scored covering 0.568 / 0.640,
PRI 0.797 / 0.848, VOI 1.730 / 1.510 (ODS / OIS), Kim mIoU 0.210, against 0.573 / 0.637,
0.799 / 0.849, 1.757 / 1.535, 0.193 with the defaults: the train gain in PRI and covering did
not carry over (VOI and mIoU did), so both stay off by default. Tried on train and dropped (PRI
within 0.004 of both or worse): with both,
isotropic weight 0.3 (0.835), gain 0.15 / 0.2 (0.834 / 0.833; gain 0.15 with the minimum
alone: 0.635 / 0.834 / 1.562), texture weight 0.5 (0.825), colour radii 4 / 8 / 16 / 32
(0.833) or 8 / 16 / 24 (0.826), texture radii 8 / 16 / 24 / 32 (0.834), the minimum over scales for
colour only (0.828); without them: colour radii 8 / 16 / 24, 8 / 16 / 32, 16 / 24 / 32 (PRI
0.824, 0.823, 0.820; covering 0.618, 0.607, 0.602), texture weight 0.5 (0.826), and 1 with
colour radii 8 / 16 / 24 (0.818), gain 0.1 / 0.15 / 0.4 (0.827 / 0.826 / 0.819), the
geometric mean over scales (0.825).

The colour histograms were added on the 120 train images of `jaxseg.hierarchy`'s later tuning
(the other cues cached, the watershed and merging rebuilt, 25 thresholds; covering / PRI / VOI
at ODS), chosen on 40 of them (every 5th from the 3rd, indices 2, 7, ..., 197) and checked
on the other 80.
On the 40, without: 0.597 / 0.812 / 1.689; weight 0.5 at radii 8 / 16 / 24 with 16 bins: 0.635
/ 0.823 / 1.569 (16 / 24 / 32: 0.630 / 0.817 / 1.579; weight 0.3 / 0.8: PRI 0.820 / 0.812;
8 bins: 0.806; radii 4 / 8 / 16: 0.623 / 0.814 / 1.592, and there weight 0.2 / 1: PRI 0.816 /
0.807, 32 bins 0.811, the other cues halved 0.624 / 0.812 / 1.574). On the 80: 0.597 / 0.821 / 1.722
without, 0.612 / 0.824 / 1.652 with (weight 0.3: 0.608 / 0.823 / 1.646). It costs ~1 s per
481 x 321 image on the 2-core CPU (~1.4 -> ~2.5 s for the whole hierarchy).

gPb's own colour and brightness cues, the chi-squared gradients of each of L*, a* and b*'s
histograms (12 bins with linear soft assignment over L* [0, 100], a* and b* [-60, 60]; radii
4 / 8 / 16; mean over the three channels), were tried in 2026-11 (twelfth session; a throwaway
script, the hierarchy's defaults otherwise, 25 thresholds, covering / PRI / VOI at ODS) in
place of the difference of mean colours: on the colour histograms' 40 tuning images 0.626 /
0.820 / 1.588 -> 0.635 / 0.827 / 1.563, but on their 80 check images 0.611 / 0.831 / 1.631 ->
0.611 / 0.828 / 1.603; added to it at weight 0.5 / 1: PRI 0.831 / 0.824 on the 40, 0.825 /
0.829 on the 80. Dropped: no PRI gain on the check images.

A structure image for the mean-colour cue, aimed at texture edges (thirteenth session, the same
images, script and rule): Zhang et al.'s rolling guidance filter (a Gaussian, then 4 joint
bilateral passes guided by the previous result; sigma_s 3 px, sigma_r 0.1 in RGB), the other
cues on the image itself. On the 40: 0.626 / 0.820 / 1.588 -> 0.641 / 0.829 / 1.538 (the
colour histograms on it too: 0.627 / 0.820 / 1.635; sigma_s 5: 0.633 / 0.821 / 1.555); on the
80: 0.611 / 0.831 / 1.631 -> 0.617 / 0.829 / 1.619. Dropped: no PRI gain on the check images.

L* weighed against a* and b* (sixteenth session, the same 40 tuning images, rule and kind of
script; L* scaled by w wherever the hierarchy uses Lab: this cue, the colour bins, the region
features), aimed at shading inside objects: w 0.5 / 0.75 / 1.5 gave 0.628 / 0.815 / 1.568,
0.632 / 0.822 / 1.553 and 0.623 / 0.824 / 1.625 against 0.626 / 0.820 / 1.588 (w 0.5 raised
every OIS: 0.684 / 0.860 / 1.341 against 0.674 / 0.856 / 1.384). Dropped: no PRI gain of 0.005.
A larger texton vocabulary (n_textons 32 / 64, as gPb's) gave 0.643 / 0.829 / 1.563 and 0.632 /
0.822 / 1.580 there; 32 on the 40 images every 5th from the 1st (0, 5, ..., 195): 0.646 / 0.843
/ 1.501 against 0.643 / 0.843 / 1.519 (OIS 0.698 / 0.883 / 1.333 against 0.692 / 0.877 /
1.351). Better covering, VOI and OIS on both, but no PRI gain on the second (the rule fixed
beforehand: +0.003 there), so 16 stays.

Everything is a pure function of the image and a PRNG key (for the texton and colour K-means);
`jax.vmap` it over a batch of equal-size images.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import features, kmeans

__all__ = ["BoundaryCues", "boundary_cues", "filter_bank", "half_disc_kernels", "textons"]

_EPS = 1e-6


class BoundaryCues(NamedTuple):
    """Local boundary cues of an `[h, w, 3]` image (o orientations).

    Attributes:
      strength: `[h, w]` float32 boundary strength in [0, 1), the maximum of `oriented` over
        orientations.
      oriented: `[o, h, w]` float32 boundary strength across the line at angle pi * i / o
        (i = 0: a horizontal line, i = o / 2: a vertical one), in [0, 1).
      orientation: `[h, w]` float32 angle in [0, pi) of the strongest oriented gradient (the
        direction across which the halves differ most is its normal).
      colour: `[o, h, w]` float32 colour gradient per orientation, pooled over scales.
      texture: `[o, h, w]` float32 texton chi-squared gradient per orientation, pooled over
        scales.
      textons: `[h, w]` int32 texton of every pixel.
      colour_histogram: `[o, h, w]` float32 chi-squared gradient of the colour bins'
        histograms per orientation, pooled over scales (zeros when its weight is 0).
      colour_bins: `[h, w]` int32 colour bin of every pixel (zeros when that weight is 0).
    """

    strength: jax.Array
    oriented: jax.Array
    orientation: jax.Array
    colour: jax.Array
    texture: jax.Array
    textons: jax.Array
    colour_histogram: jax.Array
    colour_bins: jax.Array


def half_disc_kernels(radius: int, n_orientations: int) -> np.ndarray:
    """Half-disc difference kernels and the disc kernel, `[n_orientations + 1, 2r + 1, 2r + 1]`.

    Row o < n_orientations is h1 - h2 for the line at angle pi * o / n_orientations: h1 and h2
    are the two open half-discs, each normalised to sum 1 (pixels on the line belong to
    neither). The last row is the whole disc normalised to sum 1.
    """
    if radius < 1 or n_orientations < 1:
        raise ValueError(
            f"need radius >= 1 and n_orientations >= 1, got {radius}, {n_orientations}"
        )
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    disc = dx**2 + dy**2 <= radius**2 + 0.5
    kernels = []
    for theta in np.pi * np.arange(n_orientations) / n_orientations:
        # Normal of the splitting line (rows grow downwards, so y points down).
        side = dx * np.sin(theta) - dy * np.cos(theta)
        first = disc & (side > 1e-9)
        second = disc & (side < -1e-9)
        kernels.append(first / first.sum() - second / second.sum())
    kernels.append(disc / disc.sum())
    return np.stack(kernels).astype(np.float32)


def filter_bank(sigmas=(1.0, 2.0), n_orientations: int = 4) -> np.ndarray:
    """Texture filters `[n, k, k]`: oriented first and second Gaussian derivatives (odd and even
    elongated filters, 3:1 aspect ratio) at each sigma and orientation, and a centre-surround
    difference of Gaussians per sigma; each has zero mean and unit L1 norm."""
    half = int(np.ceil(3 * max(sigmas)))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    filters = []
    for sigma in sigmas:
        for theta in np.pi * np.arange(n_orientations) / n_orientations:
            u = x * np.cos(theta) + y * np.sin(theta)  # across the edge
            v = -x * np.sin(theta) + y * np.cos(theta)  # along it
            g = np.exp(-(u**2) / (2 * sigma**2) - v**2 / (2 * (3 * sigma) ** 2))
            filters.append(-u * g)
            filters.append((u**2 / sigma**2 - 1) * g)
        r2 = x**2 + y**2
        filters.append(
            np.exp(-r2 / (2 * sigma**2)) / sigma**2 - np.exp(-r2 / (4 * sigma**2)) / (2 * sigma**2)
        )
    bank = np.stack(filters)
    bank -= bank.mean(axis=(1, 2), keepdims=True)
    bank /= np.abs(bank).sum(axis=(1, 2), keepdims=True)
    return bank.astype(np.float32)


def _fft_shape(h: int, w: int, pad: int) -> tuple[int, int]:
    return h + 2 * pad, w + 2 * pad


def _kernel_spectra(kernels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of kernels `[m, k, k]` centred on the origin of a `shape` grid (for convolution)."""
    m, k, _ = kernels.shape
    grid = np.zeros((m, *shape), np.float32)
    grid[:, :k, :k] = kernels[:, ::-1, ::-1]  # flipped: the FFT product is a correlation then
    grid = np.roll(grid, (-(k // 2), -(k // 2)), axis=(1, 2))
    return np.fft.rfft2(grid).astype(np.complex64)


def _correlate(spectra: jax.Array, kernel_spectra: np.ndarray, shape, h: int, w: int, pad: int):
    """Correlations `[c, m, h, w]` of maps (as `spectra` `[c, H, W/2+1]`) with m kernels."""
    out = jnp.fft.irfft2(spectra[:, None] * kernel_spectra[None], s=shape)
    return out[..., pad : pad + h, pad : pad + w]


def _lab(image: jax.Array) -> jax.Array:
    """`[3, h, w]` CIE Lab / 100 of an `[h, w, 3]` RGB image in [0, 1]."""
    h, w, _ = image.shape
    lab = features.colour_features(image.reshape(h * w, 3), space="lab").reshape(h, w, 3)
    return jnp.moveaxis(lab, -1, 0)


def _textons(lab: jax.Array, key, n_textons: int) -> jax.Array:
    """`[h, w]` int32 texton of every pixel: K-means of the filter bank's responses on L*."""
    _, h, w = lab.shape
    bank = filter_bank()
    bank_pad = bank.shape[-1] // 2
    bank_shape = _fft_shape(h, w, bank_pad)
    light = jnp.pad(lab[:1], ((0, 0), (bank_pad, bank_pad), (bank_pad, bank_pad)), mode="symmetric")
    responses = _correlate(
        jnp.fft.rfft2(light), _kernel_spectra(bank, bank_shape), bank_shape, h, w, bank_pad
    )[0]
    # FFT round-off (~1e-6) would split a flat image into textons; 1e-4 is far below texture.
    responses = jnp.round(responses.reshape(bank.shape[0], h * w).T * 1e4) / 1e4
    fit = kmeans.fit(responses, n_textons, key, max_iter=30, tol=1e-3)
    return fit.labels.reshape(h, w).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("n_textons",))
def _texton_map(image, key, n_textons):
    return _textons(_lab(image), key, n_textons)


def textons(image, key, *, n_textons: int = 16) -> jax.Array:
    """`[h, w]` int32 texton of every pixel, as `boundary_cues(image, key).textons` (the same
    computation without the gradients; vmap over a batch of equal-size images).

    Raises:
      ValueError: not an `[h, w, 3]` RGB image, NaN/inf or out-of-range values (when
        concrete), or `n_textons` outside [1, h * w].
    """
    image = features._check_rgb(image, rank=3)
    h, w, _ = image.shape
    if not 1 <= n_textons <= h * w:
        raise ValueError(f"n_textons must lie in [1, {h * w}] for a {h}x{w} image, got {n_textons}")
    return _texton_map(image, key, int(n_textons))


@functools.partial(
    jax.jit,
    static_argnames=(
        "colour_radii",
        "texture_radii",
        "colour_histogram_radii",
        "n_orientations",
        "n_textons",
        "n_colour_bins",
        "colour_weight",
        "texture_weight",
        "colour_histogram_weight",
        "gain",
        "scale_pooling",
        "isotropic_weight",
    ),
)
def _boundary_cues(
    image,
    key,
    *,
    colour_radii,
    texture_radii,
    colour_histogram_radii,
    n_orientations,
    n_textons,
    n_colour_bins,
    colour_weight,
    texture_weight,
    colour_histogram_weight,
    gain,
    scale_pooling,
    isotropic_weight,
):
    h, w, _ = image.shape
    lab = _lab(image)
    textons = _textons(lab, key, n_textons)

    radii = colour_radii + texture_radii
    if colour_histogram_weight:  # static: that cue's radii widen the padding only when it is on
        radii += colour_histogram_radii
    pad = max(radii)
    shape = _fft_shape(h, w, pad)

    def spectra(maps):
        return jnp.fft.rfft2(jnp.pad(maps, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric"))

    @functools.cache  # cues at the same radius share one constant
    def kernels(radius):
        return _kernel_spectra(half_disc_kernels(radius, n_orientations), shape)

    pool = {"mean": jnp.mean, "min": jnp.min}[scale_pooling]

    def histogram_gradient(labels, n, radii):
        """Chi-squared distance of the half-discs' histograms of `labels` `[o, h, w]`."""
        one_hot = spectra(jnp.moveaxis(jax.nn.one_hot(labels, n, dtype=jnp.float32), -1, 0))
        out = []
        for radius in radii:
            hist = _correlate(one_hot, kernels(radius), shape, h, w, pad)  # [n, o + 1, h, w]
            mean = jnp.maximum(hist[:, -1:], _EPS)
            out.append(0.25 * jnp.sum(hist[:, :-1] ** 2 / mean, axis=0))
        return pool(jnp.stack(out), axis=0)

    lab_spectra = spectra(lab)
    colour = []
    for radius in colour_radii:
        diff = _correlate(lab_spectra, kernels(radius)[:-1], shape, h, w, pad)  # [3, o, h, w]
        colour.append(jnp.sqrt(jnp.sum(diff**2, axis=0) + _EPS**2))
    colour = pool(jnp.stack(colour), axis=0)
    texture = histogram_gradient(textons, n_textons, texture_radii)
    gradient = colour_weight * colour + texture_weight * texture
    bins = jnp.zeros((h, w), jnp.int32)
    colour_histogram = jnp.zeros_like(colour)
    if colour_histogram_weight:  # static: no clustering when off
        pixels = jnp.moveaxis(lab, 0, -1).reshape(h * w, 3)
        fit = kmeans.fit(pixels, n_colour_bins, jax.random.fold_in(key, 1), max_iter=30, tol=1e-3)
        bins = fit.labels.reshape(h, w)
        colour_histogram = histogram_gradient(bins, n_colour_bins, colour_histogram_radii)
        gradient = gradient + colour_histogram_weight * colour_histogram
    if isotropic_weight:  # static: no reduction when off
        # Texture has a gradient across every line, an edge only across its own direction.
        gradient = jnp.maximum(gradient - isotropic_weight * jnp.min(gradient, axis=0), 0.0)
    oriented = 1.0 - jnp.exp(-gradient / gain)
    strength = jnp.max(oriented, axis=0)
    orientation = jnp.pi * jnp.argmax(oriented, axis=0).astype(jnp.float32) / n_orientations
    return BoundaryCues(
        strength,
        oriented,
        orientation,
        colour,
        texture,
        textons,
        colour_histogram,
        bins.astype(jnp.int32),
    )


def boundary_cues(
    image,
    key,
    *,
    colour_radii=(4, 8, 16),
    texture_radii=(8, 16, 24),
    colour_histogram_radii=(8, 16, 24),
    n_orientations: int = 8,
    n_textons: int = 16,
    n_colour_bins: int = 16,
    colour_weight: float = 1.0,
    texture_weight: float = 0.25,
    colour_histogram_weight: float = 0.5,
    gain: float = 0.25,
    scale_pooling: str = "mean",
    isotropic_weight: float = 0.0,
) -> BoundaryCues:
    """Local boundary strength of an RGB image from oriented colour and texture gradients.

    Args:
      image: `[h, w, 3]` uint8, or float in [0, 1]; vmap over a batch of equal-size images.
      key: PRNG key of the texton K-means seeding (and, folded with 1, the colour bins').
      colour_radii, texture_radii, colour_histogram_radii: half-disc radii in pixels (static)
        of each cue, one scale each; small discs hold too few textons for a steady
        histogram, so texture starts larger.
      n_orientations: orientations in [0, pi) (static).
      n_textons: texton vocabulary size (static), at most h * w.
      n_colour_bins: colour vocabulary size (static), at most h * w: K-means clusters of the
        pixels' Lab colours.
      colour_weight, texture_weight, colour_histogram_weight: weights (static) of the cues'
        oriented gradients (the colour means', the textons', the colour bins' histograms').
      gain: the combined gradient g maps to strength 1 - exp(-g / gain) (static, > 0).
      scale_pooling: how each cue's gradients are pooled over its radii (static): "mean" or
        "min" (an edge is there at every radius, texture speckle fades at large ones).
      isotropic_weight: weight in [0, 1] (static) of the combined gradient's minimum over
        orientations (its isotropic part, high inside texture), subtracted before squashing.

    Returns:
      BoundaryCues.

    Raises:
      ValueError: not an `[h, w, 3]` RGB image, NaN/inf or out-of-range values (when
        concrete), or bad options.
    """
    image = features._check_rgb(image, rank=3)
    colour_radii = tuple(int(r) for r in colour_radii)
    texture_radii = tuple(int(r) for r in texture_radii)
    colour_histogram_radii = tuple(int(r) for r in colour_histogram_radii)
    for name, radii in (
        ("colour_radii", colour_radii),
        ("texture_radii", texture_radii),
        ("colour_histogram_radii", colour_histogram_radii),
    ):
        if not radii or min(radii) < 1:
            raise ValueError(f"{name} must be a non-empty sequence of radii >= 1, got {radii}")
    if n_orientations < 1:
        raise ValueError(f"n_orientations must be >= 1, got {n_orientations}")
    h, w, _ = image.shape
    for name, n in (("n_textons", n_textons), ("n_colour_bins", n_colour_bins)):
        if not 1 <= n <= h * w:
            raise ValueError(f"{name} must lie in [1, {h * w}] for a {h}x{w} image, got {n}")
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be finite and > 0, got {gain}")
    if scale_pooling not in ("mean", "min"):
        raise ValueError(f"scale_pooling must be 'mean' or 'min', got {scale_pooling!r}")
    if not 0 <= isotropic_weight <= 1:
        raise ValueError(f"isotropic_weight must lie in [0, 1], got {isotropic_weight}")
    weights = (colour_weight, texture_weight, colour_histogram_weight)
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"weights must be >= 0, not all 0; got colour {colour_weight}, "
            f"texture {texture_weight}, colour histogram {colour_histogram_weight}"
        )
    return _boundary_cues(
        image,
        key,
        colour_radii=colour_radii,
        texture_radii=texture_radii,
        colour_histogram_radii=colour_histogram_radii,
        n_orientations=int(n_orientations),
        n_textons=int(n_textons),
        n_colour_bins=int(n_colour_bins),
        colour_weight=float(colour_weight),
        texture_weight=float(texture_weight),
        colour_histogram_weight=float(colour_histogram_weight),
        gain=float(gain),
        scale_pooling=scale_pooling,
        isotropic_weight=float(isotropic_weight),
    )
