"""The BSDS boundary benchmark on host (numpy/scipy): precision and recall of boundary pixels.

Reproduces the official `evaluation_bdry_image.m` (per-image counts) and `collect_eval_bdry.m`
(ODS, OIS and AP of a dataset) of the BSDS500 benchmark:
  * Candidates: a soft boundary map thresholded at `ucm_thresholds(n)` (`pb >= t`; a `.png` map
    holds pb * 255, a double-size `ucm2` is sampled at `ucm2[2::2, 2::2]`), or the region
    boundaries of segmentations (`seg_boundaries`, the official `seg2bdry(seg, 'imageSize')`).
  * Every candidate is thinned (`thin`, MATLAB's `bwmorph(bmap, 'thin', inf)`).
  * Each annotation's boundary pixels are matched one-to-one to the candidate's
    (`correspond_pixels`): pixels farther apart than `max_dist` times the image diagonal cannot
    match; among the rest the matching of least cost is chosen, where a matched pair costs
    its distance and an unmatched pixel an outlier cost of 100 maximal distances, in the
    official integer units (hundredths of a pixel). Recall counts annotation pixels matched,
    summed over annotations; precision counts candidate pixels matched by any annotation.

The official `correspondPixels` solves this assignment with Goldberg's CSA on a graph whose
outlier edges are drawn at random (6 per pixel); we solve it exactly with scipy's LAPJVsp on a
graph where every pixel may be an outlier. The random graph sometimes leaves the official
solver a slightly worse matching: two official runs on the same segmentations (`test_3`,
`test_4`) differ by up to 7.1e-4 in a per-image R, P or F, and our exact optimum, which matches
a few more pixels, is within 1.3e-3 of every per-image value and 7e-4 of every dataset value
of the official regression files (`test_1` to `test_4`; same ODS and per-image thresholds).

Speed: LAPJVsp dominates. Its rectangular form, which the outlier columns need, seeds no
assignment by column reduction, so every row starts a search over all columns: ~90 ms for a
5000-pixel annotation against itself, 1 ms for the same graph made square without outliers
(which would ignore the outlier costs). The 99-threshold boundary benchmark of a 481x321
image with 5 annotations and a ucm2 takes about 2.3 CPU seconds (experiments/bench.py
--suites=metrics).
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.ndimage
import scipy.sparse
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

__all__ = [
    "BoundaryBenchmark",
    "BoundaryStats",
    "aggregate_boundary_stats",
    "boundary_stats",
    "correspond_pixels",
    "seg_boundaries",
    "thin",
    "threshold_maps",
    "ucm_boundary_map",
]

MAX_DIST = 0.0075  # official maximal matching distance, as a fraction of the image diagonal
OUTLIER_COST = 100.0  # official cost of an unmatched pixel, in maximal distances
_MULTIPLIER = 100  # the official CSA code's integer cost units per pixel

# --------------------------------------------------------------------------- thinning

# Neighbour bits of a 3x3 window, Lam, Lee & Suen's x1..x8 (east, then counter-clockwise).
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thin_luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations, indexed by the 8 neighbour bits."""
    codes = np.arange(256)
    x = [(codes >> k) & 1 for k in range(8)] + [codes & 1]  # x[0..7] = x1..x8, x[8] = x1
    crossings = sum((1 - x[2 * i]) & (x[2 * i + 1] | x[2 * i + 2]) for i in range(4))
    n1 = sum(x[2 * k] | x[2 * k + 1] for k in range(4))
    n2 = sum(x[2 * k + 1] | x[2 * k + 2] for k in range(4))
    g12 = (crossings == 1) & (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
    first = ((x[1] | x[2] | (1 - x[7])) & x[0]) == 0  # G3
    second = ((x[5] | x[6] | (1 - x[3])) & x[4]) == 0  # G3'
    return g12 & first, g12 & second


_THIN_LUTS = _thin_luts()


def thin(bmap) -> np.ndarray:
    """MATLAB's `bwmorph(bmap, 'thin', inf)`: Lam, Lee & Suen's two-subiteration thinning.

    Each subiteration deletes, in parallel, every pixel whose 3x3 neighbourhood meets the
    conditions G1, G2 and G3 (first) or G3' (second) of Lam, Lee & Suen (1992), p. 879; the
    two alternate until nothing changes. Pixels outside the image are background.

    Args:
      bmap: `[H, W]` map, nonzero = boundary.

    Returns:
      bool `[H, W]`.
    """
    bmap = np.asarray(bmap)
    if bmap.ndim != 2:
        raise ValueError(f"bmap must be a 2-D map [H, W], got shape {bmap.shape}")
    padded = np.pad(bmap != 0, 1).astype(np.uint8)
    height, width = bmap.shape
    weights = [np.uint8(1 << k) for k in range(8)]
    while True:
        changed = False
        for lut in _THIN_LUTS:
            code = np.zeros((height, width), np.uint8)
            for (dy, dx), weight in zip(_NEIGHBOURS, weights, strict=True):
                code += padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] * weight
            inner = padded[1:-1, 1:-1]
            delete = lut[code] & (inner != 0)
            if delete.any():
                inner[delete] = 0
                changed = True
        if not changed:
            return padded[1:-1, 1:-1].astype(bool)


# --------------------------------------------------------------------------- candidates


def seg_boundaries(seg) -> np.ndarray:
    """The official `seg2bdry(seg, 'imageSize')`: pixels whose lower or right edge is a boundary.

    A label change between vertical or horizontal neighbours marks the edge between them on a
    double-size grid; every grid corner touching a marked edge is set, the outer frame copies
    its inner neighbour, and the corners below-right of the pixels are returned.

    Args:
      seg: integer label map `[H, W]`.

    Returns:
      bool `[H, W]`.
    """
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"seg must be a non-empty 2-D label map, got shape {seg.shape}")
    height, width = seg.shape
    vertical = np.zeros((height, width), bool)  # label differs from the pixel below
    vertical[:-1] = seg[:-1] != seg[1:]
    horizontal = np.zeros((height, width), bool)  # label differs from the pixel to the right
    horizontal[:, :-1] = seg[:, :-1] != seg[:, 1:]
    grid = np.zeros((2 * height + 1, 2 * width + 1), bool)
    grid[2::2, 1::2] = vertical
    grid[1::2, 2::2] = horizontal
    grid[2:-1:2, 2:-1:2] = (
        horizontal[:-1, :-1] | horizontal[1:, :-1] | vertical[:-1, :-1] | vertical[:-1, 1:]
    )
    grid[0] = grid[1]
    grid[:, 0] = grid[:, 1]
    grid[-1] = grid[-2]
    grid[:, -1] = grid[:, -2]
    return grid[2::2, 2::2]


def ucm_boundary_map(ucm2) -> np.ndarray:
    """The official soft boundary map of a double-size ultrametric contour map.

    Args:
      ucm2: `[2H + 1, 2W + 1]` map (BSDS 'doubleSize' format).

    Returns:
      float64 `[H, W]`: `ucm2[2::2, 2::2]`, the grid corners below-right of the pixels.
    """
    ucm2 = np.asarray(ucm2, dtype=np.float64)
    if ucm2.ndim != 2 or min(ucm2.shape) < 3 or ucm2.shape[0] % 2 == 0 or ucm2.shape[1] % 2 == 0:
        raise ValueError(f"ucm2 must be a [2H + 1, 2W + 1] map, got shape {ucm2.shape}")
    return ucm2[2::2, 2::2]


def threshold_maps(pb, thresholds) -> list[np.ndarray]:
    """Candidates of a soft boundary map: bool `pb >= t` `[H, W]` for every threshold t."""
    pb = np.asarray(pb, dtype=np.float64)
    if pb.ndim != 2 or pb.size == 0:
        raise ValueError(f"a boundary map must be a non-empty 2-D map, got shape {pb.shape}")
    if not np.all(np.isfinite(pb)) or pb.min() < 0 or pb.max() > 1:
        raise ValueError(
            f"boundary map values must lie in [0, 1], got [{np.nanmin(pb):g}, {np.nanmax(pb):g}]"
        )
    return [pb >= t for t in np.asarray(thresholds, dtype=np.float64)]


# --------------------------------------------------------------------------- matching


def _offsets(max_dist: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(dy, dx, cost)` of every offset within `max_dist` pixels; cost in official units."""
    r = math.ceil(max_dist)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    d2 = (dy * dy + dx * dx).ravel().astype(np.float64)
    keep = d2 <= max_dist * max_dist
    cost = np.rint(np.sqrt(d2[keep]) * _MULTIPLIER).astype(np.int64)
    return dy.ravel()[keep], dx.ravel()[keep], cost


def correspond_pixels(
    bmap1, bmap2, *, max_dist: float = MAX_DIST, outlier_cost: float = OUTLIER_COST
) -> tuple[np.ndarray, np.ndarray]:
    """The official `correspondPixels`: a least-cost one-to-one matching of boundary pixels.

    Pixels match only within `max_dist * hypot(H, W)` pixels. A matched pair costs its distance
    and an unmatched pixel `outlier_cost * max_dist * hypot(H, W)`, both in hundredths of a
    pixel rounded as the official code does (distance rounded, outlier cost rounded up);
    since unmatched pixels of both maps count, each pair saves one outlier cost minus its
    distance, and the matching maximises those savings (nearly, but not exactly, the largest
    matching: on long contours fewer but closer pairs can win).

    Args:
      bmap1, bmap2: `[H, W]` maps, nonzero = boundary pixel.
      max_dist: maximal distance as a fraction of the image diagonal.
      outlier_cost: cost of an unmatched pixel in maximal distances (> 1).

    Returns:
      `(matched1, matched2)`: bool `[H, W]`, the pixels of each map that found a partner.
    """
    bmap1, bmap2 = np.asarray(bmap1) != 0, np.asarray(bmap2) != 0
    if bmap1.ndim != 2 or bmap1.shape != bmap2.shape:
        raise ValueError(f"boundary maps differ in shape: {bmap1.shape} vs {bmap2.shape}")
    if not max_dist > 0:  # the official code asserts an outlier cost above the distance
        raise ValueError(f"max_dist must be positive, got {max_dist}")
    if outlier_cost <= 1:
        raise ValueError(f"outlier_cost must be > 1, got {outlier_cost}")
    height, width = bmap1.shape
    dist = max_dist * math.hypot(height, width)
    outlier = math.ceil(outlier_cost * dist * _MULTIPLIER)
    matched1, matched2 = np.zeros_like(bmap1), np.zeros_like(bmap2)
    ys, xs = np.nonzero(bmap1)
    if ys.size == 0 or not bmap2.any():
        return matched1, matched2

    # Every pair within reach: an index map of bmap2 pixels, gathered at each offset.
    dy, dx, cost = _offsets(dist)
    r = math.ceil(dist)
    index2 = np.full((height + 2 * r, width + 2 * r), -1, np.int64)
    index2[r : r + height, r : r + width][bmap2] = np.arange(np.count_nonzero(bmap2))
    partner = index2[(ys + r)[:, None] + dy, (xs + r)[:, None] + dx]  # [n1, offsets]
    rows, k = np.nonzero(partner >= 0)
    if rows.size == 0:
        return matched1, matched2
    cols, cost = partner[rows, k], cost[k]
    nodes1, rows = np.unique(rows, return_inverse=True)
    nodes2, cols = np.unique(cols, return_inverse=True)
    n1, n2 = nodes1.size, nodes2.size

    small, large = _least_cost_pairs(rows, cols, cost, n1, n2, outlier)
    matched1[ys[nodes1[small]], xs[nodes1[small]]] = True
    matched2.flat[np.flatnonzero(bmap2)[nodes2[large]]] = True
    return matched1, matched2


def _assignment(rows, cols, cost, n1: int, n2: int, outlier: int):
    """Pairs `(i [k], j [k])` of the least-cost matching of the edges `(rows, cols, cost)`.

    Every pair saves `outlier` minus its distance: the official objective is
    sum(distances) + outlier * (n1 + n2 - pairs). So match every node of the smaller side,
    either to a node or to its own outlier column of cost `outlier`: the least-cost full
    matching of that [n_small, n_large + n_small] graph has the same pairs. Costs are shifted
    by 1 to keep them nonzero (every full matching has n_small edges).
    """
    if n1 > n2:
        j, i = _assignment(cols, rows, cost, n2, n1, outlier)
        return i, j
    own = np.arange(n1)
    graph = scipy.sparse.csr_array(
        (
            np.concatenate([cost + 1, np.full(n1, outlier + 1)]).astype(np.float64),
            (np.concatenate([rows, own]), np.concatenate([cols, n2 + own])),
        ),
        shape=(n1, n1 + n2),
    )
    row, col = min_weight_full_bipartite_matching(graph)
    pairs = col < n2
    return row[pairs], col[pairs]


def _sub_assignment(rows, cols, cost, keep, outlier: int):
    """`_assignment` of the edges `keep`, on their own nodes."""
    nodes1, rows = np.unique(rows[keep], return_inverse=True)
    nodes2, cols = np.unique(cols[keep], return_inverse=True)
    i, j = _assignment(rows, cols, cost[keep], nodes1.size, nodes2.size, outlier)
    return nodes1[i], nodes2[j]


def _least_cost_pairs(rows, cols, cost, n1: int, n2: int, outlier: int, *, large: int = 500):
    """`_assignment`, solved per connected component of the graph.

    LAPJVsp's rectangular form starts a search over all columns from every row, so its time
    grows with rows x columns: components of more than `large` nodes are solved one by one,
    the rest together (12% less CPU time on 99-threshold ucm2 maps than one solve).
    """
    graph = scipy.sparse.coo_array(
        (np.ones(rows.size), (rows, n1 + cols)), shape=(n1 + n2, n1 + n2)
    )
    _, label = connected_components(graph, directed=False)
    size = np.bincount(label)[label[rows]]
    groups = [label[rows] == c for c in np.unique(label[rows][size > large])]
    groups.append(size <= large)
    pairs = [_sub_assignment(rows, cols, cost, keep, outlier) for keep in groups if keep.any()]
    return np.concatenate([i for i, _ in pairs]), np.concatenate([j for _, j in pairs])


# --------------------------------------------------------------------------- per image


class BoundaryStats(NamedTuple):
    """Boundary counts of one image at every threshold (the official `_ev1.txt` columns).

    Attributes:
      thresholds: `[n]` candidate parameters (boundary-map thresholds, or 1..n for segs).
      recall_count: `[n]` int64 annotation boundary pixels matched, summed over annotations
        (official `cntR`).
      recall_total: `[n]` int64 annotation boundary pixels, summed over annotations (`sumR`).
      precision_count: `[n]` int64 candidate pixels matched by at least one annotation (`cntP`).
      precision_total: `[n]` int64 candidate pixels after thinning (`sumP`).
    """

    thresholds: np.ndarray
    recall_count: np.ndarray
    recall_total: np.ndarray
    precision_count: np.ndarray
    precision_total: np.ndarray


def _check_boundaries(ground_truth, shape: tuple[int, ...]) -> list[np.ndarray]:
    if isinstance(ground_truth, np.ndarray) and ground_truth.ndim == 2:
        ground_truth = [ground_truth]
    maps = [np.asarray(g) != 0 for g in ground_truth]
    if not maps:
        raise ValueError("ground_truth is empty: at least one annotation is needed")
    for i, g in enumerate(maps):
        if g.shape != shape:
            raise ValueError(f"ground_truth[{i}] has shape {g.shape}, the candidates {shape}")
    return maps


def boundary_stats(
    candidates: Sequence,
    ground_truth,
    *,
    thresholds=None,
    max_dist: float = MAX_DIST,
    thin_candidates: bool = True,
) -> BoundaryStats:
    """Official boundary counts of one image (`evaluation_bdry_image.m`).

    Args:
      candidates: `[n]` binary boundary maps `[H, W]` (from `threshold_maps` or
        `seg_boundaries`).
      ground_truth: the annotations' boundary maps, one `[H, W]` or a sequence of them (the
        official `groundTruth{i}.Boundaries`).
      thresholds: `[n]` parameter of each candidate; defaults to 1..n.
      max_dist: maximal matching distance as a fraction of the image diagonal.
      thin_candidates: thin every candidate first (the official `thinpb`, on by default).

    Returns:
      A `BoundaryStats`; combine images with `aggregate_boundary_stats`. An empty candidate
      scores 0 of 0 (precision 0), an empty annotation adds nothing to recall.
    """
    candidates = [np.asarray(c) for c in candidates]
    if not candidates:
        raise ValueError("no candidates to score")
    shape = candidates[0].shape
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"candidates must be non-empty 2-D maps [H, W], got shape {shape}")
    for i, c in enumerate(candidates):
        if c.shape != shape:
            raise ValueError(f"candidate {i} has shape {c.shape}, candidate 0 has {shape}")
    gts = _check_boundaries(ground_truth, shape)
    if thresholds is None:
        thresholds = np.arange(1, len(candidates) + 1)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(candidates),):
        raise ValueError(f"need {len(candidates)} thresholds, got shape {thresholds.shape}")
    counts = np.zeros((len(candidates), 4), np.int64)
    # Consecutive candidates often coincide (ucm2 thresholds between two of its levels), or
    # thin to the same map: those reuse the previous counts.
    previous_raw, previous, previous_counts = None, None, None
    for t, candidate in enumerate(candidates):
        raw = candidate != 0
        if previous_raw is not None and np.array_equal(raw, previous_raw):
            counts[t] = previous_counts
            continue
        thinned = thin(raw) if thin_candidates else raw
        previous_raw = raw
        if previous is not None and np.array_equal(thinned, previous):
            counts[t] = previous_counts
            continue
        matched_any = np.zeros(shape, bool)
        for gt in gts:
            matched, matched_gt = correspond_pixels(thinned, gt, max_dist=max_dist)
            matched_any |= matched
            counts[t, 0] += np.count_nonzero(matched_gt)
            counts[t, 1] += np.count_nonzero(gt)
        counts[t, 2:] = np.count_nonzero(matched_any), np.count_nonzero(thinned)
        previous, previous_counts = thinned, counts[t]
    return BoundaryStats(thresholds, *counts.T.copy())


# --------------------------------------------------------------------------- dataset


class BoundaryBenchmark(NamedTuple):
    """The official boundary benchmark of a dataset (what `collect_eval_bdry.m` writes).

    ODS and the per-image best points interpolate the precision-recall curve linearly between
    consecutive thresholds (100 steps each, the first best F kept); OIS takes each image's
    first threshold of best F, uninterpolated, and pools its counts.

    Attributes:
      thresholds: `[n]`.
      recall, precision, f: `[n]` dataset scores per threshold from pooled counts
        (eval_bdry_thr.txt).
      ods_threshold, ods_recall, ods_precision, ods_f: the best interpolated point of that
        curve.
      ois_recall, ois_precision, ois_f: pooled counts with each image at its best threshold.
      ap: area under the precision-recall curve interpolated linearly over the distinct
        recalls (the first threshold's precision for a repeated recall, as MATLAB's `unique`
        since R2013a), sampled at recall 0:0.01:1, zero outside the recalls reached.
      image_threshold, image_recall, image_precision, image_f: `[n_images]` each image's best
        interpolated point (eval_bdry_img.txt).
    """

    thresholds: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    f: np.ndarray
    ods_threshold: float
    ods_recall: float
    ods_precision: float
    ods_f: float
    ois_recall: float
    ois_precision: float
    ois_f: float
    ap: float
    image_threshold: np.ndarray
    image_recall: np.ndarray
    image_precision: np.ndarray
    image_f: np.ndarray


def _ratio(count, total):
    return count / (total + (total == 0))


def _fmeasure(r, p):
    return 2 * p * r / (p + r + ((p + r) == 0))


_STEPS = np.linspace(0.0, 1.0, 100)  # MATLAB's linspace(0, 1)


def _max_f(thresholds, recall, precision) -> tuple[float, float, float, float]:
    """The official `maxF`: the first best F on the linearly interpolated curve."""
    d = _STEPS[None, :]
    t = thresholds[1:, None] * d + thresholds[:-1, None] * (1 - d)
    r = recall[1:, None] * d + recall[:-1, None] * (1 - d)
    p = precision[1:, None] * d + precision[:-1, None] * (1 - d)
    f = _fmeasure(r, p).ravel()
    best = (thresholds[0], recall[0], precision[0], _fmeasure(recall[0], precision[0]))
    if f.size and f.max() > best[3]:
        i = int(np.argmax(f))
        best = (t.ravel()[i], r.ravel()[i], p.ravel()[i], f[i])
    return tuple(float(x) for x in best)


def _round_official(values) -> np.ndarray:
    """Values as the official code reads them back from its `%10g` per-image files."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([float(f"{x:g}") for x in values.ravel()]).reshape(values.shape)


def aggregate_boundary_stats(
    stats: Sequence[BoundaryStats], *, official_rounding: bool = False
) -> BoundaryBenchmark:
    """ODS, OIS and AP of a dataset, as `collect_eval_bdry.m` computes them.

    Args:
      stats: one `BoundaryStats` per image, in the order of the `image_*` rows (the official
        order is sorted `<id>_ev1.txt` names); all with the same thresholds.
      official_rounding: round thresholds and counts to 6 significant digits first, as the
        official code does by passing them through `%10g` files (counts stay exact below 10^6).

    Returns:
      A `BoundaryBenchmark`.
    """
    if not stats:
        raise ValueError("no images to aggregate")
    thresholds = np.asarray(stats[0].thresholds, dtype=np.float64)
    for i, s in enumerate(stats):
        if not np.array_equal(s.thresholds, thresholds):
            raise ValueError(f"image {i} has other thresholds than image 0")
    finish = _round_official if official_rounding else np.asarray
    thresholds = finish(thresholds)
    # [image, threshold, (cntR, sumR, cntP, sumP)]
    counts = finish(
        np.array(
            [
                np.stack([s.recall_count, s.recall_total, s.precision_count, s.precision_total], 1)
                for s in stats
            ],
            dtype=np.float64,
        )
    )
    recall = _ratio(counts[..., 0], counts[..., 1])
    precision = _ratio(counts[..., 2], counts[..., 3])
    images = np.array([_max_f(thresholds, r, p) for r, p in zip(recall, precision, strict=True)])
    best = np.argmax(_fmeasure(recall, precision), axis=1)
    ois = counts[np.arange(len(stats)), best].sum(axis=0)

    total = counts.sum(axis=0)
    recall, precision = _ratio(total[:, 0], total[:, 1]), _ratio(total[:, 2], total[:, 3])
    ods = _max_f(thresholds, recall, precision)
    ois_recall, ois_precision = _ratio(ois[0], ois[1]), _ratio(ois[2], ois[3])

    unique_recall, first = np.unique(recall, return_index=True)
    ap = 0.0
    if unique_recall.size > 1:
        grid = np.linspace(0.0, 1.0, 101)
        ap = float(np.interp(grid, unique_recall, precision[first], left=0, right=0).sum() * 0.01)
    return BoundaryBenchmark(
        thresholds=thresholds,
        recall=recall,
        precision=precision,
        f=_fmeasure(recall, precision),
        ods_threshold=ods[0],
        ods_recall=ods[1],
        ods_precision=ods[2],
        ods_f=ods[3],
        ois_recall=float(ois_recall),
        ois_precision=float(ois_precision),
        ois_f=float(_fmeasure(ois_recall, ois_precision)),
        ap=ap,
        image_threshold=images[:, 0],
        image_recall=images[:, 1],
        image_precision=images[:, 2],
        image_f=images[:, 3],
    )
