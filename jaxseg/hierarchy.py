"""Hierarchical segmentation: regions merged greedily into an ultrametric contour map (UCM).

Any partition of an image into regions (a watershed oversegmentation of a boundary map, SLIC
superpixels, or the 4-connected segments of a K-means/GMM/CNN label map) becomes a hierarchy by
merging, one pair at a time, the two neighbouring regions of lowest dissimilarity

    cost(A, B) = mean boundary strength along the border of A and B
                 * (1 + feature_weight * distance(mean feature of A, mean feature of B))
                 * min(1, min(|A|, |B|) / (size_scale * h * w)) ** size_power
                 / (1 + contrast_weight * min(texture(A), texture(B)))

until one region is left. The distance is Euclidean, plus chi-squared on the trailing
`histogram_dims` features (texton histograms). A border's mean strength is pooled over its pixel
pairs (each pair scores the larger strength of its two pixels, across the border's orientation
when the strength is oriented, plus `spectral_weight` times the border's spectral strength), so
a merged region's border with a neighbour is the length-weighted mean of its parts' borders.
The last factor is Felzenszwalb-Huttenlocher's contrast normalisation: a region's texture is
the mean over its pixels of the strength's minimum in a small window (high where edges are
everywhere, as in water or foliage, low in smooth areas and on isolated edges), so a border
between two textured regions counts less than one of the same strength in smooth surroundings
(off by default: it lowered PRI on val, see below).
The spectral strength is gPb's globalisation computed on the finest regions instead of pixels
(`_spectral_strength`): the normalised-cut eigenvectors of the region graph, whose affinities
come from the local strength, differ across borders that separate large coherent parts of the
image and hardly across borders inside one part, however strong their local contrast.

The level of a merge is its cost, raised to the previous level where a cost falls below it
(levels must not decrease for the map to be an ultrametric); every border then carries the
level at which its two sides joined, squashed to [0, 1) by `1 - exp(-level / level_scale)`,
mixed with weight `count_weight` with the fraction of merges done, `1 - log(regions left) /
log(regions at start)`; both grow along the merges, so any mix is an ultrametric. The count
term gives a threshold a similar number of regions on every image, which a single dataset
threshold (ODS) needs.

The result is the BSDS 'doubleSize' `ucm2` `[2h + 1, 2w + 1]` float64: pixels at odd indices
(always 0), the border between two 4-neighbours at the site between them, every site between
four pixels the maximum of its four neighbouring borders, and the frame a copy of the row or
column inside it (as the official maps have it), so that `metrics.ucm_segmentation` (8-connected
components of `ucm2 <= t`) yields exactly the regions joined below t, and segmentations at
increasing thresholds nest. Merging runs on host with a heap (a graph algorithm); the border
statistics are gathered with vectorised NumPy; the watershed is a JAX loop.

Defaults were chosen on BSDS500 train images (first 20, every 10th, then 40, every 5th), by
covering ODS at 49 (33) thresholds: the colour term (feature_weight 0 -> 2 -> 4: 0.51 -> 0.59
-> 0.60) matters most, then smoothing before the watershed (sigma 1 -> 2: +0.03, fewer spurious
basins), oriented border scores (+0.015 over unoriented), texton histograms in the features
(weight 0.5: +0.01, PRI +0.013), the merge-count term (count_weight 0.5 on 40 images: covering
0.590 -> 0.604, PRI 0.832 -> 0.839; 1.0: 0.593) and the size prior (size_scale 0.005 -> 0.02:
0.604 -> 0.616, VOI 1.727 -> 1.663; 0.04: 0.601); differences below 0.01 are within the
run-to-run spread of the texton K-means. Rechecked on 80 train images (every 5th from the 1st
and the 3rd, cues cached, 25 thresholds; covering / PRI / VOI at ODS): count_weight 0.5 -> 0.3
and size_power 1 -> 0.5 gave 0.603 / 0.819 / 1.701 -> 0.609 / 0.827 / 1.714 (the 40 new images
alone: 0.597 / 0.806 / 1.742 -> 0.596 / 0.814 / 1.717 with count_weight 0.3). Tried there and
dropped: per-image normalised levels (each image's levels over their median: 0.584 / 0.801),
a fixed reference count (log 1000) in the count term (0.613 / 0.835 on the first 40, baseline
0.617 / 0.836), half of each oriented map blurred (sigma 4: 0.616 / 0.835), one-hot colour
clusters (16 K-means centres of Lab, weight 0.5 or 1) beside the textons (0.615 / 0.831 and
0.615 / 0.825), sigma 1.5 (0.601 on the first 40), feature_weight 5 or 6 (-0.01 on 80
images), size_scale 0.01 or 0.03 / 0.04 (-0.01). On BSDS500 val (100 images, 99 thresholds,
run once each) the old and new defaults score covering 0.559 -> 0.564 (OIS 0.625 -> 0.627),
PRI 0.791 -> 0.792, VOI 1.816 -> 1.817, Kim et al. mIoU (all) at the covering ODS threshold
0.183 -> 0.205; train scores ~0.04 higher than val.

The spectral strength and the chi-squared texton distance were added on 40 other train images
(every 5th from the 5th, a hard subset, cues cached, 25 thresholds; covering / PRI / VOI at
ODS): old defaults 0.552 / 0.790 / 1.852; spectral_weight 1: 0.563 / 0.795 / 1.801 (0.5:
0.566 / 0.794 / 1.825, 2: 0.560 / 0.790 / 1.808); with chi-squared textons 0.571 / 0.798 /
1.832; with size_scale 0.04 0.561 / 0.796 / 1.766; all three (the defaults) 0.575 / 0.806 /
1.794. Tried and dropped there (with spectral_weight 1): spectral_scale 0.05 or 0.2 and 16
eigenvectors (-0.003 to -0.01 covering), the eigenvectors as region features instead of a
border strength (0.554 / 0.790 / 1.807), count_weight 0.15 / 0.5, feature_weight 2 / 8,
level_scale 0.5 / 2, texton_weight 1 or 2 with chi-squared (all within 0.005 PRI or worse).
What still limits PRI at one dataset threshold: a few images whose annotations are one or two
large regions of strong texture (water, foliage) need a much higher threshold than the rest
(on those 40 images five images lose 0.1-0.4 PRI each at the ODS threshold). On 40 more train
images (every 5th from the 2nd) the spectral strength again lowered VOI (1.649 -> 1.607), while
chi-squared and size_scale 0.04 cost ~0.01 covering (0.634 -> 0.619 with all three). On BSDS500
val (100 images, 99 thresholds, run once) the old and new defaults score covering 0.564 ->
0.573 (OIS 0.627 -> 0.637), PRI 0.792 -> 0.799, VOI 1.817 -> 1.757, Kim mIoU 0.205 -> 0.193.

The contrast normalisation (contrast_weight 1, contrast_size 11) was tried on 120 train images
(every 5th from the 2nd, 3rd and 5th, cues cached; covering / PRI / VOI at ODS, 49 thresholds):
0.597 / 0.820 / 1.715 -> 0.601 / 0.822 / 1.671; PRI per subset 0.847 -> 0.850, 0.816 -> 0.820
and 0.807 -> 0.798 (the hard subset of textured images: the discount also merges some
textured regions that the annotators kept apart). Tried and dropped (25 thresholds; on 80
images, the 2nd and 5th subsets, the texture being the plain pixel mean of the strength:
0.599 / 0.825 / 1.698, no normalisation 0.597 / 0.821 / 1.722): the larger or the area-weighted
mean of the two regions' textures instead of the smaller (PRI 0.820, 0.823); Felzenszwalb's
internal variation, the mean strength of the borders merged inside a region (covering
0.550-0.574, PRI 0.780-0.798); a subtracted instead of divided texture (weight 0.2 / 0.5: PRI
0.822 / 0.817); the strength map divided by 1 + k * its Gaussian mean (sigma 5-20, k 1-3:
PRI 0.810-0.813); count_weight 0.15 / 0.5 and level_scale 0.5 / 2 with it (PRI 0.816-0.824).
On the 120 images (windowed texture 11: 0.601 / 0.822 / 1.682, none 0.596 / 0.817 / 1.719):
the plain pixel mean (0.602 / 0.818 / 1.684), a grey opening instead of the minimum (0.604 /
0.821 / 1.693), windows 15 / 21 (PRI 0.822 / 0.819), weights 1.5-3 (PRI 0.820-0.821), the
image's mean texture instead of the regions' (PRI 0.810-0.814), the strength raised to 0.5 /
0.7 / 2 (PRI 0.814-0.816), the area-weighted region count 1 / sum(area fraction^2) in the count
term (PRI 0.808-0.815), with the normalisation count_weight 0.2 / 0.4 (PRI 0.820 / 0.817),
and with the plain pixel mean feature_weight 6, spectral_weight 2, size_scale 0.08, size_power
1 (PRI 0.815-0.820). On BSDS500 val (100 images, 99 thresholds, run once) contrast_weight 1
scored covering 0.578 / 0.638, PRI 0.795 / 0.848, VOI 1.743 / 1.535 (ODS / OIS), Kim mIoU 0.190,
against 0.573 / 0.637, 0.799 / 0.849, 1.757 / 1.535, 0.193 without: better covering and VOI,
worse PRI (as on the hard train subset), so it is off by default (PRI at ODS is the measure
still below the required 0.81).

Tried later on the same 120 train images (cues cached; covering / PRI / VOI at ODS) and dropped,
all lowering PRI: Isola et al.'s pointwise mutual information of 32 K-means Lab colours (pairs
within 4 pixels, rho 1.25; a border's pixel pairs across it at 1-3 pixels) as a factor on the
oriented strength (49 thresholds, 0.597 / 0.820 / 1.715 without: factor weight 0.5 0.597 /
0.815 / 1.682, 0.7 and 0.85 PRI 0.813 / 0.811); gPb's pixel-level globalisation (8 generalized
eigenvectors of an intervening-contour affinity at half size, radius 3, ~5 s per image) added
to the strength (118 images, 0.597 / 0.822 / 1.724 without: weight 0.5 0.600 / 0.815 / 1.670,
1 PRI 0.813, 0.5 with the region-level spectral term off 0.817); size priors on the geometric
mean of the two sizes, or also growing or shrinking with the smaller size or the product of the
sizes (25 thresholds, PRI 0.799-0.818 against 0.817); the mean of three merge variants' ucm2
merged again by its own border strength (40 images: 0.607 / 0.813 / 1.654 against 0.597 /
0.812 / 1.689). On these images the PRI at ODS of a 100-image bootstrap sample varies with a
standard deviation of 0.011, a paired difference between two settings with 0.005.

With the colour-histogram cue (`jaxseg.edges`) the levels need less of the merge-count term:
on its 40 tuning images (every 5th from the 3rd; 25 thresholds, cues cached) count_weight
0.3 -> 0.2 / 0.1 / 0.05 / 0 gave 0.635 / 0.823 / 1.569 -> 0.636 / 0.828 / 1.557, 0.639 /
0.833 / 1.555, 0.639 / 0.835 / 1.555, 0.639 / 0.835 / 1.559, and on its 80 check images
0.612 / 0.824 / 1.652 -> 0.612 / 0.826 / 1.623, 0.614 / 0.826 / 1.607, 0.611 / 0.825 / 1.605,
0.611 / 0.825 / 1.610; 0.1 is the default. Also tried there (PRI 0.817-0.820 against 0.823):
feature_weight 3 / 6, size_scale 0.03 / 0.06, spectral_weight 0.5 / 2.

The merge settings are at a plateau for PRI: on BSDS500 val itself (the 100 images, cues cached
at the defaults, 25 thresholds; PRI at ODS 0.798 with the defaults, bootstrap sd 0.012) 35
variants all lay within 0.781-0.803: count_weight 0 / 0.3, level_scale 0.5 / 2, size_scale
0.02 / 0.08, size_power 1, spectral_weight 0.5 / 2, feature_weight 2 / 8, texton_weight 0.25 /
1 / 1.5 / 2 / 3, contrast_weight 1, watershed sigma 1.5 / 3, the strength raised to 0.7 / 1.5,
the feature factor `g + feature_weight * distance` with g 0.05 / 0.3 or with the distance's
square root, and one-hot K-means colour labels (K 4 / 6, with or without position) beside the
textons. The best, texton_weight 1 (0.803), lowers PRI on the 120 train images (0.828 ->
0.819), so nothing changed. A cue pyramid (the cues of the half-size image, upsampled and
mixed 0.3 / 0.5 into the gradient before the watershed) gained covering on val (0.586 at 0.5)
but lost PRI there (0.795) and every score on train (0.622 / 0.828 / 1.590 -> 0.613 / 0.820 /
1.658). What is left is in the cues: the images that lose most at the ODS
threshold are large textured regions whose inner edges are as strong as object borders (val
210088, an anemone: PRI 0.41 at 28 regions, 0.68 at 9, 0.79 at 4). No simple image statistic
predicts an image's best PRI threshold (correlation over val: watershed region count -0.18,
mean or median strength, fraction of strong pixels, isotropic gradient within +-0.05); only
the annotations' largest-region fraction does (+0.47), which a method cannot see. Nor does the
hierarchy itself (val, the runner's ucm2 files, 99 thresholds; PRI at ODS 0.800): each image's
levels remapped monotonically so that its most persistent cut (the region count, between 2 and
15-60, that lasts over the most thresholds) moves a quarter, half or all of the way to a common
level gave PRI 0.790-0.803 (covering 0.565-0.584 against 0.580, VOI 1.698-1.759 against
1.698); the most persistent cut is nearly always one of the coarsest (median level 0.82-0.89).
A per-image calibration by one statistic closes little of the gap, even one that sees the
annotations: on 131 train images (cues cached, 25 thresholds; PRI at ODS 0.828, OIS 0.862)
each image's thresholds shifted by b times a standardised statistic (the best b in sample)
gained at most 0.004 with the annotators' own region counts (their maximum or mean; their
minimum 0.000) and 0.002 with the normalised-cut eigenvalues of the region graph (lambda_3,
lambda_8; Spearman -0.2 against the best cut's region count over the ODS cut's).
Nor does averaging scales as MCG does, without its learned weights (40 train images, every 5th
from the 3rd; covering / PRI / VOI at ODS 0.626 / 0.820 / 1.588): the hierarchies of the image
at half and three-quarter size, each `ucm2`'s pixel map (a pixel's largest border) scaled up and
averaged with the full-size one, the full-size regions merged again by the mean of that map
along their borders, gave 0.586 / 0.801 / 1.726 (with the half size only) and 0.594 / 0.800 /
1.734, against 0.627 / 0.822 / 1.619 for the full-size map alone merged the same way.
Nor does a cue learned per image (val, cues cached at the defaults, 25 thresholds; PRI at ODS
0.798): the chi-squared half-disc gradient of `cnn_refined`'s labels (radii 8 / 16 / 24, its
labels of the runner's val run, ~5 s per image more) added to the gradient before the watershed
at weight 0.25 / 0.5 / 1 gave covering 0.583 / 0.580 / 0.571 against 0.574, PRI 0.800 / 0.794 /
0.794, VOI 1.720 / 1.706 / 1.762 against 1.733.

Tried on the colour histograms' 40 tuning train images (every 5th from the 3rd, cues cached,
25 thresholds; covering / PRI / VOI at ODS 0.633 / 0.823 / 1.565, OIS 0.677 / 0.857 / 1.378)
and dropped (2026-11-27, fourteenth session; the rule fixed beforehand: PRI at ODS +0.005 there,
then 80 check images): the spectral graph's affinity also lowered by the regions' appearance,
`exp(-d / tau)` with d the chi-squared distances of their texton and colour-bin histograms
(tau 0.1 / 0.3 / 0.3 with spectral_weight 2: PRI 0.818 / 0.827 / 0.827, covering 0.616-0.628,
VOI 1.63-1.65); the colour bins' histogram beside the textons' in the region features (0.635 /
0.824 / 1.542); and SLIC superpixels (`oversegmentation="slic"`, 1000 or 2500 segments) as the
finest regions instead of the watershed: better at each image's best level (2500: OIS 0.686 /
0.864 / 1.325) but not at one dataset level (ODS 0.629 / 0.821 / 1.538), with count_weight 0 /
0.2 / 0.3 / 0.6 / 1 PRI at ODS 0.823 / 0.817 / 0.815 / 0.808 / 0.788.

`hierarchical_segmentation` cuts and merges by `pmi.boundaries` (`boundary="pmi"`, the default
since the seventeenth session): the spectral cut of the image's PMI affinity (Isola et al.
2014), in place of `edges`' local gradients, which fire inside textured regions as strongly as
on their borders, the limit described above. Every setting above was chosen with the local
gradients (`boundary="local"`) and kept; the measured effect is in `jaxseg.pmi`.

`split_labels` cuts any labelling along a level of a hierarchy: `cnn_refined` splits its CNN's
labels along the image's own `hierarchical_segmentation` (size_scale 0.01, the local
gradients) at 0.75 (README).
"""

import heapq
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
from jax import lax

from jaxseg import edges, features, metrics, pmi, slic

__all__ = [
    "BOUNDARIES",
    "OVERSEGMENTATIONS",
    "Hierarchy",
    "hierarchical_segmentation",
    "hierarchy_from_labels",
    "labels_at",
    "oversegment",
    "split_labels",
    "ucm_from_regions",
]


class Hierarchy(NamedTuple):
    """Result of `hierarchical_segmentation` for an `[h, w, 3]` image.

    Attributes:
      ucm2: `[2h + 1, 2w + 1]` float64 ultrametric contour map in [0, 1) (BSDS 'doubleSize').
      strength: `[h, w]` float32 boundary strength the regions were cut and merged by (`pmi` or
        `edges`).
      regions: `[h, w]` int32 the finest regions (watershed basins or SLIC superpixels),
        0..n_regions - 1.
      n_regions: number of finest regions.
    """

    ucm2: np.ndarray
    strength: np.ndarray
    regions: np.ndarray
    n_regions: int


def _check_strength(strength, *, oriented: bool = False) -> np.ndarray:
    strength = np.asarray(strength, dtype=np.float64)
    shapes = "[h, w] or [o, h, w]" if oriented else "[h, w]"
    if strength.ndim not in ((2, 3) if oriented else (2,)) or strength.size == 0:
        raise ValueError(f"strength must be a non-empty {shapes} map, got shape {strength.shape}")
    if not np.isfinite(strength).all():
        raise ValueError("strength contains NaN or inf")
    if strength.min() < 0 or strength.max() > 1:
        raise ValueError(f"strength must lie in [0, 1], got [{strength.min()}, {strength.max()}]")
    return strength


_LEVELS = 4096  # watershed quantisation of the boundary map
_LENGTH = 1 << 19  # path costs are level * _LENGTH + path length (int32, no overflow)
_NONE = np.int32(np.iinfo(np.int32).max)


class _State(NamedTuple):
    cost: jax.Array  # [h, w] int32 best path cost found so far (_NONE: unreached)
    labels: jax.Array  # [h, w] int32 marker the best path starts at (0: unreached)
    changed: jax.Array  # [] bool, whether the last sweep improved any pixel


@jax.jit
def _watershed(levels: jax.Array, markers: jax.Array) -> jax.Array:
    """Marker watershed as an image foresting transform on 4-neighbours: every pixel joins the
    marker of the path of lowest (highest level on the path, then path length), so plateaus
    split between the nearest markers. Relaxed in sweeps until no cost improves."""

    def shifted(x, fill):
        pad = lambda widths: jnp.pad(x, widths, constant_values=fill)  # noqa: E731
        return (
            pad(((1, 0), (0, 0)))[:-1],
            pad(((0, 1), (0, 0)))[1:],
            pad(((0, 0), (1, 0)))[:, :-1],
            pad(((0, 0), (0, 1)))[:, 1:],
        )

    def body(state: _State) -> _State:
        cost, labels = state.cost, state.labels
        for near_cost, near_label in zip(
            shifted(state.cost, _NONE), shifted(state.labels, 0), strict=True
        ):
            height = jnp.maximum(near_cost // _LENGTH, levels)
            length = jnp.minimum(near_cost % _LENGTH + 1, _LENGTH - 1)
            candidate = jnp.where(near_cost == _NONE, _NONE, height * _LENGTH + length)
            better = candidate < cost
            cost = jnp.where(better, candidate, cost)
            labels = jnp.where(better, near_label, labels)
        return _State(cost, labels, jnp.any(cost != state.cost))

    start = _State(jnp.where(markers > 0, levels * _LENGTH, _NONE), markers, jnp.asarray(True))
    return lax.while_loop(lambda state: state.changed, body, start).labels


def oversegment(strength, *, sigma: float = 2.0) -> np.ndarray:
    """Watershed basins of a boundary map: the finest regions of a hierarchy.

    Args:
      strength: `[h, w]` boundary strength in [0, 1].
      sigma: Gaussian smoothing (pixels) before the minima are found; 0 for none. Smoothing
        removes the shallow minima of noise, each of which would start a basin.

    Returns:
      int32 `[h, w]` 4-connected regions 0..n-1 (every pixel belongs to one).
    """
    strength = _check_strength(strength)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    smooth = scipy.ndimage.gaussian_filter(strength, sigma) if sigma > 0 else strength
    # Absolute levels: a flat map (a one-colour image) is one basin, not amplified noise.
    levels = np.round(smooth * (_LEVELS - 1)).astype(np.int32)
    minima = levels == scipy.ndimage.minimum_filter(levels, size=3, mode="nearest")
    markers, _ = scipy.ndimage.label(minima)
    # scipy.ndimage.watershed_ift lets labels leak across ridges (it labels both sides of a
    # 0/255 step from one marker), hence the own transform.
    basins = np.asarray(_watershed(jnp.asarray(levels), jnp.asarray(markers, jnp.int32)))
    return metrics.connected_segments(basins)[0]


class _Graph(NamedTuple):
    """Region adjacency of a label map (n regions, e borders between them)."""

    pairs: np.ndarray  # [e, 2] region ids, first < second
    strength_sum: np.ndarray  # [e] summed pixel-pair strength along each border
    length: np.ndarray  # [e] pixel pairs along each border
    pair_index: tuple[np.ndarray, np.ndarray]  # border of each horizontal / vertical pixel pair


def _adjacency(labels: np.ndarray, n: int, oriented: np.ndarray) -> _Graph:
    """Borders of `labels` and their summed strength; `oriented` is `[o, h, w]`.

    Every border is scored with the strength across its own orientation (that of the principal
    axis of its pixel-pair midpoints, each pair's border a unit segment), as gPb's oriented
    watershed transform does: a border that only runs into a strong edge at right angles does
    not inherit its strength.
    """
    n_orientations, h, w = oriented.shape
    # Horizontal pixel pairs are split by a vertical unit segment, vertical pairs by a
    # horizontal one. Only pairs across a border are kept: (row, col) of their first pixel,
    # the step to the second, and their border code lo * n + hi.
    rows, cols, codes, steps = [], [], [], ((0, 1), (1, 0))
    pair_masks = []
    for dr, dc in steps:
        a, b = labels[: h - dr, : w - dc], labels[dr:, dc:]
        across = a != b
        r, c = np.nonzero(across)
        lo, hi = np.minimum(a[across], b[across]), np.maximum(a[across], b[across])
        rows.append(r)
        cols.append(c)
        codes.append(lo.astype(np.int64) * n + hi)
        pair_masks.append(across)
    unique, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    counts = np.bincount(inverse, minlength=unique.size).astype(np.float64)
    split = codes[0].size
    vertical_pair = np.arange(inverse.size) >= split  # its border segment runs along x
    r, c = np.concatenate(rows), np.concatenate(cols)
    x = c + np.where(vertical_pair, 0.0, 0.5)  # segment midpoints
    y = r + np.where(vertical_pair, 0.5, 0.0)

    def mean(values):
        return np.bincount(inverse, values, minlength=unique.size) / counts

    mx, my = mean(x), mean(y)
    cxx = mean(x * x + vertical_pair / 12.0) - mx**2  # a unit segment has variance 1/12
    cyy = mean(y * y + ~vertical_pair / 12.0) - my**2
    cxy = mean(x * y) - mx * my
    angle = np.mod(0.5 * np.arctan2(2 * cxy, cxx - cyy), np.pi)
    orientation = np.round(angle / (np.pi / n_orientations)).astype(np.int64) % n_orientations
    k = orientation[inverse]
    r2, c2 = r + vertical_pair, c + ~vertical_pair
    values = np.maximum(oriented[k, r, c], oriented[k, r2, c2])
    # Border index of every pixel pair (-1 inside a region).
    pair_index = []
    for i, across in enumerate(pair_masks):
        index = np.full(across.shape, -1, np.int64)
        index[across] = inverse[:split] if i == 0 else inverse[split:]
        pair_index.append(index)
    return _Graph(
        pairs=np.stack(np.divmod(unique, n), axis=1),
        strength_sum=np.bincount(inverse, values, minlength=unique.size),
        length=counts,
        pair_index=tuple(pair_index),
    )


_DENSE_EIGEN = 200  # region graphs up to this size are solved densely, larger ones by ARPACK


def _spectral_strength(graph: _Graph, sizes: np.ndarray, n_eigenvectors: int, scale: float):
    """Spectral border strength `[e]` in [0, 1]: gPb's globalisation (sPb) on the region graph.

    Every region is a node, every border an edge of affinity `length * exp(-mean strength /
    scale)` (its pixel pairs), and every region a self-loop of `2 * size` (the pixel pairs
    inside it): the normalised cut of the 4-neighbour pixel graph restricted to vectors constant
    on regions. With the `n_eigenvectors` smallest non-trivial solutions of the generalized
    problem `(D - W) v = lambda D v` (unit D-weighted variance), a border scores
    `sum_k |v_k(A) - v_k(B)| / sqrt(lambda_k)`, divided by the largest score of the image.
    """
    n = sizes.size
    a, b = graph.pairs.T
    if a.size == 0 or n < 3:
        return np.zeros(a.size)
    weight = graph.length * np.exp(-graph.strength_sum / graph.length / scale)
    nodes = np.arange(n)
    affinity = scipy.sparse.csr_matrix(
        (
            np.concatenate([weight, weight, 2.0 * sizes]),
            (np.concatenate([a, b, nodes]), np.concatenate([b, a, nodes])),
        ),
        shape=(n, n),
    )
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    root = scipy.sparse.diags(1.0 / np.sqrt(degree))
    laplacian = scipy.sparse.identity(n) - root @ affinity @ root  # eigenvalues: lambda
    k = min(n_eigenvectors + 1, n - 1)
    if n <= _DENSE_EIGEN:
        lam, u = np.linalg.eigh(laplacian.toarray())
        lam, u = lam[:k], u[:, :k]
    else:
        # Shift-invert about just below 0 (a sparse LU): plain Lanczos for the smallest
        # eigenvalues does not converge on some images (they cluster near 0).
        start = np.random.default_rng(0).standard_normal(n)  # deterministic ARPACK start
        lam, u = scipy.sparse.linalg.eigsh(
            laplacian.tocsc(), k, sigma=-1e-3, which="LM", v0=start, tol=1e-8
        )
    order = np.argsort(lam)[1:]  # without the constant vector (lambda = 0)
    lam = np.maximum(lam[order], 1e-12)
    coords = u[:, order] * np.sqrt(degree.sum() / degree)[:, None] / np.sqrt(lam)
    score = np.abs(coords[a] - coords[b]).sum(axis=1)
    top = score.max()
    return score / top if top > 0 else score


def _merge_levels(
    graph: _Graph,
    sizes: np.ndarray,
    feature_sums: np.ndarray,
    *,
    feature_weight: float,
    size_scale: float,
    size_power: float,
    histogram_dims: int,
    texture_sums: np.ndarray,
    contrast_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Level `[e]` at which the two regions of every border join (greedy merging), and the
    number of regions left after that merge `[e]`."""
    n_borders = graph.pairs.shape[0]
    level_of = np.zeros(n_borders)
    remaining_of = np.zeros(n_borders, np.int64)  # regions left after each border's merge
    remaining = sizes.size
    # Plain Python lists: the loop touches single entries, where NumPy's overhead dominates.
    sizes = sizes.astype(np.float64).tolist()
    feature_sums = feature_sums.astype(np.float64).tolist()
    ssum = graph.strength_sum.astype(np.float64).tolist()
    length = graph.length.astype(np.float64).tolist()
    ends = graph.pairs.tolist()
    texture_sums = texture_sums.astype(np.float64).tolist()
    members = [[e] for e in range(n_borders)]  # original borders pooled into each border
    stamp = [0] * n_borders  # heap entries of a border are valid while they carry its stamp
    neighbours: list[dict[int, int]] = [{} for _ in range(len(sizes))]
    for e, (a, b) in enumerate(ends):
        neighbours[a][b] = e
        neighbours[b][a] = e

    def cost(e: int) -> float:
        a, b = ends[e]
        value = ssum[e] / length[e]
        if feature_weight:
            size_a, size_b = sizes[a], sizes[b]
            mean_a = [x / size_a for x in feature_sums[a]]
            mean_b = [x / size_b for x in feature_sums[b]]
            if histogram_dims:
                split = len(mean_a) - histogram_dims
                distance = math.dist(mean_a[:split], mean_b[:split]) + 0.5 * sum(
                    (x - y) ** 2 / (x + y)
                    for x, y in zip(mean_a[split:], mean_b[split:], strict=True)
                    if x + y > 0
                )
            else:
                distance = math.dist(mean_a, mean_b)
            value *= 1.0 + feature_weight * distance
        if size_power:
            value *= min(1.0, min(sizes[a], sizes[b]) / size_scale) ** size_power
        if contrast_weight:
            texture = min(texture_sums[a] / sizes[a], texture_sums[b] / sizes[b])
            value /= 1.0 + contrast_weight * texture
        return value

    heap = [(cost(e), 0, e) for e in range(n_borders)]
    heapq.heapify(heap)
    level = 0.0
    while heap:
        value, entry_stamp, e = heapq.heappop(heap)
        if entry_stamp != stamp[e]:
            continue
        stamp[e] = -1
        level = max(level, value)
        level_of[members[e]] = level
        remaining -= 1
        remaining_of[members[e]] = remaining
        a, b = ends[e]
        if len(neighbours[a]) < len(neighbours[b]):
            a, b = b, a  # the region with more neighbours absorbs the other
        del neighbours[a][b], neighbours[b][a]
        for c, f in neighbours[b].items():
            del neighbours[c][b]
            g = neighbours[a].get(c)
            if g is None:
                neighbours[a][c] = f
                neighbours[c][a] = f
                ends[f] = [a, c]
            else:  # both touched c: pool the two borders into g
                ssum[g] += ssum[f]
                length[g] += length[f]
                if len(members[g]) < len(members[f]):
                    members[g], members[f] = members[f], members[g]
                members[g].extend(members[f])
                stamp[f] = -1
        neighbours[b] = {}
        sizes[a] += sizes[b]
        texture_sums[a] += texture_sums[b]
        feature_sums[a] = [x + y for x, y in zip(feature_sums[a], feature_sums[b], strict=True)]
        for f in neighbours[a].values():
            stamp[f] += 1
            heapq.heappush(heap, (cost(f), stamp[f], f))
    return level_of, remaining_of


def _ucm2(graph: _Graph, border_values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    ucm2 = np.zeros((2 * h + 1, 2 * w + 1))
    values = np.concatenate([border_values, [0.0]])  # index -1: pixel pairs inside a region
    horizontal, vertical = graph.pair_index
    ucm2[1:-1:2, 2:-1:2] = values[horizontal]
    ucm2[2:-1:2, 1:-1:2] = values[vertical]
    ucm2[2:-1:2, 2:-1:2] = np.maximum(
        np.maximum(ucm2[1:-2:2, 2:-1:2], ucm2[3::2, 2:-1:2]),
        np.maximum(ucm2[2:-1:2, 1:-2:2], ucm2[2:-1:2, 3::2]),
    )
    ucm2[0], ucm2[-1] = ucm2[1], ucm2[-2]
    ucm2[:, 0], ucm2[:, -1] = ucm2[:, 1], ucm2[:, -2]
    return ucm2


def ucm_from_regions(
    regions,
    strength,
    region_features=None,
    *,
    feature_weight: float = 4.0,
    size_scale: float = 0.02,
    size_power: float = 0.5,
    level_scale: float = 1.0,
    count_weight: float = 0.0,
    spectral_weight: float = 0.0,
    n_eigenvectors: int = 8,
    spectral_scale: float = 0.1,
    histogram_dims: int = 0,
    contrast_weight: float = 0.0,
    contrast_size: int = 11,
) -> np.ndarray:
    """Ultrametric contour map of greedy merging of `regions` (see the module docstring).

    Args:
      regions: `[h, w]` non-negative integer map whose labels are 4-connected regions (use
        `hierarchy_from_labels` for any label map).
      strength: `[h, w]` boundary strength in [0, 1], or `[o, h, w]` the strength across
        lines at angles pi * i / o (`edges.BoundaryCues.oriented`): each border is then scored
        across its own orientation.
      region_features: optional `[h, w, d]` finite per-pixel features (e.g. Lab / 100) whose
        region means' distance enters the cost with `feature_weight`.
      feature_weight: weight (>= 0) of the feature distance.
      size_scale: regions below `size_scale * h * w` pixels get their cost scaled down by
        `(size / (size_scale * h * w)) ** size_power`, so small regions merge first.
      size_power: exponent (>= 0) of that size prior; 0 disables it.
      level_scale: levels map to ucm values `1 - exp(-level / level_scale)` (> 0).
      count_weight: weight in [0, 1] of the merge-count term in the ucm values (see above).
      spectral_weight: weight (>= 0) of the spectral border strength (gPb's globalisation on
        the region graph, see `_spectral_strength`) added to every pixel pair's strength.
      n_eigenvectors: eigenvectors (>= 1) of the spectral strength.
      spectral_scale: a border of mean strength s has affinity `exp(-s / spectral_scale)`
        (> 0) per pixel pair in the spectral graph.
      histogram_dims: the last `histogram_dims` feature dimensions are a histogram (of a
        region's mean, e.g. one-hot textons) compared by the chi-squared distance
        `1/2 sum (a - b)^2 / (a + b)`, added to the Euclidean distance of the others.
      contrast_weight: weight (>= 0) of the contrast normalisation: the cost is divided by
        `1 + contrast_weight * min(texture(A), texture(B))`, a region's texture being the mean
        over its pixels of the strength's minimum in a `contrast_size` square window (high
        only where edges are everywhere, as in water or foliage).
      contrast_size: side (>= 1 pixels) of that window.

    Returns:
      float64 `ucm2` `[2h + 1, 2w + 1]` in [0, 1).
    """
    strength = _check_strength(strength, oriented=True)
    oriented = strength if strength.ndim == 3 else strength[None]
    regions = metrics._check_label_map(regions, "regions")
    if regions.shape != oriented.shape[1:]:
        raise ValueError(f"regions {regions.shape} and strength {strength.shape} differ in shape")
    for name, value in (
        ("feature_weight", feature_weight),
        ("size_power", size_power),
        ("spectral_weight", spectral_weight),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    for name, value in (
        ("size_scale", size_scale),
        ("level_scale", level_scale),
        ("spectral_scale", spectral_scale),
    ):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    if not 0 <= count_weight <= 1:
        raise ValueError(f"count_weight must lie in [0, 1], got {count_weight}")
    if n_eigenvectors < 1:
        raise ValueError(f"n_eigenvectors must be >= 1, got {n_eigenvectors}")
    if not (np.isfinite(contrast_weight) and contrast_weight >= 0):
        raise ValueError(f"contrast_weight must be finite and >= 0, got {contrast_weight}")
    if int(contrast_size) != contrast_size or contrast_size < 1:
        raise ValueError(f"contrast_size must be an integer >= 1, got {contrast_size}")
    h, w = regions.shape
    _, regions = np.unique(regions, return_inverse=True)
    regions = regions.reshape(h, w)
    n = int(regions.max()) + 1
    if region_features is None:
        region_features = np.zeros((h, w, 0))
    region_features = np.asarray(region_features, dtype=np.float64)
    if region_features.ndim != 3 or region_features.shape[:2] != (h, w):
        raise ValueError(
            f"region_features must be [{h}, {w}, d], got shape {region_features.shape}"
        )
    if not np.isfinite(region_features).all():
        raise ValueError("region_features contain NaN or inf")
    if not 0 <= histogram_dims <= region_features.shape[-1]:
        raise ValueError(
            f"histogram_dims must lie in [0, {region_features.shape[-1]}] (the feature "
            f"dimensions), got {histogram_dims}"
        )
    if histogram_dims and region_features[..., -histogram_dims:].min() < 0:
        raise ValueError("histogram features must be >= 0")
    flat = regions.ravel()
    sizes = np.bincount(flat, minlength=n)
    sums = np.zeros((n, region_features.shape[-1]))
    for i in range(sums.shape[1]):
        sums[:, i] = np.bincount(flat, region_features[..., i].ravel(), minlength=n)
    texture_sums = np.zeros(n)
    if contrast_weight:
        # Texture: strength that stays high across a whole window, not only near an edge.
        window = scipy.ndimage.minimum_filter(oriented.max(axis=0), size=int(contrast_size))
        texture_sums = np.bincount(flat, window.ravel(), minlength=n)
    graph = _adjacency(regions, n, oriented)
    if spectral_weight:
        spectral = _spectral_strength(
            graph, sizes.astype(np.float64), n_eigenvectors, spectral_scale
        )
        graph = graph._replace(
            strength_sum=graph.strength_sum + spectral_weight * spectral * graph.length
        )
    levels, remaining = _merge_levels(
        graph,
        sizes,
        sums,
        feature_weight=float(feature_weight) if sums.shape[1] else 0.0,
        size_scale=float(size_scale) * h * w,
        size_power=float(size_power),
        histogram_dims=int(histogram_dims),
        texture_sums=texture_sums,
        contrast_weight=float(contrast_weight),
    )
    by_level = 1.0 - np.exp(-levels / level_scale)
    by_count = 1.0 - np.log(np.maximum(remaining, 1)) / math.log(max(n, 2))
    return _ucm2(graph, (1 - count_weight) * by_level + count_weight * by_count, (h, w))


def hierarchy_from_labels(labels, strength, region_features=None, **options) -> np.ndarray:
    """Makes any segmentation hierarchical: its 4-connected segments merged into a `ucm2`.

    Args:
      labels: `[h, w]` non-negative integer label map (K-means, GMM or CNN output); a label
        may cover several disconnected segments, each becomes a region.
      strength, region_features, options: as in `ucm_from_regions`.

    Returns:
      float64 `ucm2` `[2h + 1, 2w + 1]`; thresholding it at 0 gives back the segments.
    """
    segments, _ = metrics.connected_segments(labels)
    return ucm_from_regions(segments, strength, region_features, **options)


def labels_at(ucm2, threshold: float) -> np.ndarray:
    """0-based label map `[h, w]` int32 of a `ucm2` cut at `threshold` (regions joined at or
    below it), i.e. `metrics.ucm_segmentation(ucm2, threshold) - 1`."""
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    ucm2 = np.asarray(ucm2)
    if ucm2.ndim == 2 and ucm2.shape[0] % 2 and ucm2.shape[1] % 2 and np.any(ucm2[1::2, 1::2]):
        raise ValueError("ucm2 has non-zero values at pixel sites (odd indices): not a ucm2")
    return metrics.ucm_segmentation(ucm2, threshold) - 1


def split_labels(labels, ucm2, threshold: float, *, keep=None) -> np.ndarray:
    """`labels` split along the regions of `ucm2` cut at `threshold` (`labels_at`): two pixels
    share an output label when they share their label and their region.

    Args:
      labels: `[h, w]` non-negative integer label map.
      ucm2: `[2h + 1, 2w + 1]` ultrametric contour map of the same image.
      threshold: the cut, >= 0.
      keep: optional `[h, w]` bool. A piece holding a kept pixel takes back its input label
        (e.g. the classes scribbles forced); the other pieces are numbered from the largest
        kept label + 1.

    Returns:
      `[h, w]` int32 labels: 0..n-1 when the kept pixels' labels are 0..k-1 (or none is kept).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(
            f"labels must be a non-negative integer [h, w] map, got {labels.dtype} {labels.shape}"
        )
    h, w = labels.shape
    if np.shape(ucm2) != (2 * h + 1, 2 * w + 1):
        raise ValueError(
            f"ucm2 must be [{2 * h + 1}, {2 * w + 1}] for labels [{h}, {w}], got {np.shape(ucm2)}"
        )
    regions = labels_at(ucm2, threshold).astype(np.int64)
    pieces = np.unique(regions * (int(labels.max()) + 1) + labels, return_inverse=True)[1]
    pieces = pieces.reshape(h, w).astype(np.int32)
    if keep is None:
        return pieces
    keep = np.asarray(keep)
    if keep.shape != (h, w) or keep.dtype != bool:
        raise ValueError(f"keep must be a bool [{h}, {w}] map, got {keep.dtype} {keep.shape}")
    kept = np.zeros(int(pieces.max()) + 1, bool)
    kept[pieces[keep]] = True
    fresh = np.cumsum(~kept) - 1 + (int(labels[keep].max()) + 1 if keep.any() else 0)
    return np.where(kept[pieces], labels, fresh[pieces]).astype(np.int32)


OVERSEGMENTATIONS = ("watershed", "slic")
BOUNDARIES = ("pmi", "local")


def hierarchical_segmentation(
    image,
    key,
    *,
    boundary: str = "pmi",
    oversegmentation: str = "watershed",
    superpixel_size: int = 62,
    sigma: float = 2.0,
    feature_weight: float = 4.0,
    texton_weight: float = 0.5,
    size_scale: float = 0.04,
    size_power: float = 0.5,
    level_scale: float = 1.0,
    count_weight: float = 0.1,
    spectral_weight: float = 1.0,
    n_eigenvectors: int = 8,
    spectral_scale: float = 0.1,
    contrast_weight: float = 0.0,
    contrast_size: int = 11,
    cues: edges.BoundaryCues | None = None,
    **cue_options,
) -> Hierarchy:
    """The whole pipeline: boundary cues, watershed regions, greedy merging into a `ucm2`.

    Args:
      image: `[h, w, 3]` uint8 RGB image (or float in [0, 1]).
      key: PRNG key of the texton K-means (and, folded with 2, of `pmi.boundaries`').
      boundary: the oriented boundary strength the regions are cut and merged by: "pmi"
        (`pmi.boundaries`: the spectral cut of the image's PMI affinity) or "local"
        (`edges.boundary_cues`' gradients). The textons come from `edges` either way.
      oversegmentation: the finest regions: "watershed" (`oversegment` of the boundary
        strength) or "slic" (`slic.segment`, compactness 10). SLIC's compact regions give a
        better hierarchy at each image's best level (OIS) but a worse single dataset level
        (PRI at ODS) than the watershed, and they fragment flat noisy regions (README).
      superpixel_size: SLIC's mean segment size in pixels (~2500 segments on a 481 x 321
        BSDS image; ignored for the watershed).
      sigma: smoothing of the watershed (`oversegment`; ignored for SLIC).
      feature_weight, size_scale, size_power, level_scale, count_weight, spectral_weight,
        n_eigenvectors, spectral_scale, contrast_weight, contrast_size: merging
        (`ucm_from_regions`); the features are the pixels' Lab / 100 and their one-hot textons
        times `texton_weight`, so a region's mean is its mean colour and its texton histogram
        (compared by chi-squared).
      texton_weight: weight (>= 0) of the texton histograms' chi-squared distance against the
        colour distance.
      cues: this image's `edges.boundary_cues(image, key, **cue_options)` if already computed
        (several oversegmentations of one image share them); None: computed here (with
        `boundary="pmi"` only its textons, `edges.textons`).
      **cue_options: passed to `edges.boundary_cues` (not with `cues`; with `boundary="pmi"`
        only `n_textons`).

    Returns:
      Hierarchy.
    """
    if not (np.isfinite(texton_weight) and texton_weight >= 0):
        raise ValueError(f"texton_weight must be finite and >= 0, got {texton_weight}")
    if oversegmentation not in OVERSEGMENTATIONS:
        raise ValueError(
            f"oversegmentation must be one of {OVERSEGMENTATIONS}, got {oversegmentation!r}"
        )
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if isinstance(superpixel_size, bool) or not (
        isinstance(superpixel_size, int) and superpixel_size >= 1
    ):
        raise ValueError(f"superpixel_size must be an integer >= 1, got {superpixel_size!r}")
    if cues is not None and cue_options:
        raise ValueError(f"cue options {sorted(cue_options)} cannot apply to given cues")
    if boundary == "pmi" and set(cue_options) - {"n_textons"}:
        raise ValueError(
            f"cue options {sorted(set(cue_options) - {'n_textons'})} apply to boundary='local' only"
        )
    rgb = features._check_rgb(image, rank=3)
    h, w, _ = rgb.shape
    if cues is not None and cues.strength.shape != (h, w):
        raise ValueError(f"cues are for a {cues.strength.shape} image, not this {(h, w)} one")
    if boundary == "pmi":
        found = pmi.boundaries(rgb, jax.random.fold_in(key, 2))
        strength, oriented = found.strength, found.oriented
        # Only the textons of `edges` are needed; its gradients are skipped unless given.
        textons = edges.textons(rgb, key, **cue_options) if cues is None else cues.textons
    else:
        if cues is None:
            cues = edges.boundary_cues(rgb, key, **cue_options)
        strength, oriented, textons = cues.strength, cues.oriented, cues.textons
    strength, oriented, textons = (np.asarray(a) for a in (strength, oriented, textons))
    if oversegmentation == "watershed":
        regions = oversegment(strength, sigma=sigma)
    else:  # segments are 4-connected and consecutive
        n_segments = slic._n_segments(h, w, superpixel_size)
        regions = np.asarray(slic.segment(image, n_segments=n_segments).labels)
    lab = np.asarray(features.colour_features(rgb.reshape(h * w, 3), space="lab")).reshape(h, w, 3)
    one_hot = np.eye(int(textons.max()) + 1)[textons] * texton_weight
    ucm2 = ucm_from_regions(
        regions,
        oriented,
        np.concatenate([lab, one_hot], axis=-1),
        feature_weight=feature_weight,
        size_scale=size_scale,
        size_power=size_power,
        level_scale=level_scale,
        count_weight=count_weight,
        spectral_weight=spectral_weight,
        n_eigenvectors=n_eigenvectors,
        spectral_scale=spectral_scale,
        histogram_dims=one_hot.shape[-1],
        contrast_weight=contrast_weight,
        contrast_size=contrast_size,
    )
    return Hierarchy(
        ucm2=ucm2, strength=strength, regions=regions, n_regions=int(regions.max()) + 1
    )
