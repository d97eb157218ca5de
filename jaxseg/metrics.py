"""Segmentation metrics on host (numpy), all computed from contingency tables.

Label conventions:
  * Predictions are jaxseg's 0-based integer label maps `[H, W]`; every pixel is labelled.
  * Ground-truth maps use the official BSDS convention: segments are 1, 2, ... and 0 means
    "unlabelled". Pixels whose ground-truth label is 0 are ignored: they count in no overlap,
    segment size, Rand index or VOI (the official covering alone still counts them in its IoU
    denominators, as its MATLAB code does; see `RegionStats`).
  * The BSDS region benchmark works on official labels, so predictions are shifted by +1 before
    scoring (`official_labels=True` skips the shift for maps that already follow the official
    convention, e.g. `segs` cells or thresholded `ucm2` maps, where 0 marks boundary pixels).

Metrics:
  * The paper's cluster score (`cluster_table`, `cluster_iou`): for every predicted cluster the
    ground-truth segment of highest IoU; the image score is the mean of those IoUs over clusters
    (`cluster_iou_mean`) or their cluster-size-weighted mean (`cluster_iou_weighted`).
  * The mIoU of Kim, Kanezaki & Tanaka (2020) (`kim_image_stats`, `kim_miou`): predictions are
    split into 4-connected segments; every ground-truth segment contributes its best IoU with any
    predicted segment; the mean is pooled over all ground-truth segments of a dataset.
  * The BSDS region benchmark (`region_stats`, `aggregate_region_stats`): segmentation covering,
    probabilistic Rand index and variation of information, per image and at ODS/OIS, exactly as
    the official MATLAB code (`evaluation_reg_image.m`, `collect_eval_reg.m`) computes them.
"""

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.ndimage

__all__ = [
    "KIM_MODES",
    "RegionBenchmark",
    "RegionStats",
    "aggregate_region_stats",
    "cluster_iou",
    "cluster_table",
    "connected_segments",
    "contingency_table",
    "image_metrics",
    "kim_image_stats",
    "kim_miou",
    "rand_index",
    "region_stats",
    "region_stats_from_row",
    "region_stats_to_row",
    "ucm_segmentation",
    "ucm_thresholds",
    "variation_of_information",
]

KIM_MODES = ("all", "fine", "coarse")

# Dense tables beyond this many cells are built on compacted labels instead.
_MAX_DENSE_CELLS = 1 << 22


def _check_label_map(labels, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label map [H, W], got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name} is empty (shape {labels.shape})")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"{name} has negative labels (min {labels.min()})")
    return labels.astype(np.int64, copy=False)


def _check_ground_truth(ground_truth, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Validates one map or a sequence of maps, all of `shape`; returns a list of int64 maps."""
    if isinstance(ground_truth, np.ndarray) and ground_truth.ndim == 2:
        ground_truth = [ground_truth]
    maps = [_check_label_map(g, f"ground_truth[{i}]") for i, g in enumerate(ground_truth)]
    if not maps:
        raise ValueError("ground_truth is empty: at least one annotation is needed")
    for i, g in enumerate(maps):
        if g.shape != shape:
            raise ValueError(f"ground_truth[{i}] has shape {g.shape}, prediction has {shape}")
        if g.max() == 0:
            raise ValueError(f"ground_truth[{i}] has no labelled pixel (all 0)")
    return maps


def _prediction(pred, *, official_labels: bool) -> np.ndarray:
    pred = _check_label_map(pred, "pred")
    if official_labels:
        if pred.max() == 0:
            raise ValueError("pred has no labelled pixel (all 0, the official 'unlabelled')")
        return pred
    return pred + 1


def contingency_table(a, b) -> np.ndarray:
    """Joint label histogram: `table[i, j]` = number of pixels with `a == i` and `b == j`.

    Args:
      a, b: non-negative integer label maps of one shape.

    Returns:
      int64 `[max(a) + 1, max(b) + 1]`.
    """
    a = _check_label_map(a, "a")
    b = _check_label_map(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return _table(a, b)


def _table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows, cols = int(a.max()) + 1, int(b.max()) + 1
    flat = np.bincount((a * cols + b).ravel(), minlength=rows * cols)
    return flat.reshape(rows, cols)


def _iou(table: np.ndarray) -> np.ndarray:
    """IoU of every row label with every column label; 0 where both are empty."""
    rows = table.sum(axis=1, keepdims=True)
    cols = table.sum(axis=0, keepdims=True)
    union = rows + cols - table
    return table / np.maximum(union, 1)


def _labelled(table: np.ndarray) -> np.ndarray:
    """Drops the unlabelled row and column (label 0) and empty labels of a [gt, pred] table."""
    table = table[1:, 1:]
    return table[table.any(axis=1)][:, table.any(axis=0)]


def _compact(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def _labelled_table(gt: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """[gt segment, predicted label] counts over pixels with both labels > 0, empty ones dropped."""
    if (int(gt.max()) + 1) * (int(seg.max()) + 1) > _MAX_DENSE_CELLS:
        keep = (gt > 0) & (seg > 0)
        gt = np.where(keep, _compact(gt) + 1, 0)
        seg = np.where(keep, _compact(seg) + 1, 0)
    return _labelled(_table(gt, seg))


# --------------------------------------------------------------------------- paper's score


def cluster_table(pred, gt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's Table 7.1 layout for one annotation.

    Args:
      pred: 0-based integer label map `[H, W]` (a cluster is a label, connected or not).
      gt: official ground-truth map `[H, W]` (1-based, 0 = unlabelled and ignored).

    Returns:
      `(clusters, best_segment, iou)`, each `[n_clusters]`: the predicted labels present on
      labelled pixels (ascending, int32), the ground-truth label of highest IoU with each (the
      smallest such label on ties, int32), and that IoU (float64).
    """
    pred = _check_label_map(pred, "pred")
    (gt,) = _check_ground_truth([gt], pred.shape)
    keep = gt > 0
    clusters, cluster_index = np.unique(pred[keep], return_inverse=True)
    segments, segment_index = np.unique(gt[keep], return_inverse=True)
    iou = _iou(_table(segment_index, cluster_index))  # [segment, cluster]
    best = iou.argmax(axis=0)
    return (
        clusters.astype(np.int32),
        segments[best].astype(np.int32),
        iou[best, np.arange(clusters.size)],
    )


def _cluster_scores(table: np.ndarray) -> tuple[float, float]:
    """(mean, size-weighted mean) over clusters of their best IoU; table is [gt, cluster]."""
    best = _iou(table).max(axis=0)
    sizes = table.sum(axis=0)
    return float(best.mean()), float(best @ sizes / sizes.sum())


def cluster_iou(pred, ground_truth) -> tuple[float, float]:
    """The paper's image score, averaged over the image's annotations.

    Args:
      pred: 0-based integer label map `[H, W]`.
      ground_truth: one official map `[H, W]` or a sequence of them (the annotations).

    Returns:
      `(mean, weighted)`: the mean over clusters of each cluster's best IoU with a ground-truth
      segment, and the same mean weighted by cluster size (pixels), each averaged over
      annotations.
    """
    pred = _check_label_map(pred, "pred")
    gts = _check_ground_truth(ground_truth, pred.shape)
    scores = np.array([_cluster_scores(_labelled_table(g, pred + 1)) for g in gts])
    mean, weighted = scores.mean(axis=0)
    return float(mean), float(weighted)


# --------------------------------------------------------------------------- Kim et al. mIoU


def connected_segments(labels) -> tuple[np.ndarray, int]:
    """Splits a label map into 4-connected segments of equal label.

    Returns:
      `(segments, n)`: int32 `[H, W]` with segment ids 0..n-1, and n.
    """
    labels = _check_label_map(labels, "labels")
    height, width = labels.shape
    # Pixels sit at even sites of a [2H - 1, 2W - 1] grid; the site between two 4-neighbours is
    # set when their labels agree, so the grid's 4-connected components are the segments.
    grid = np.zeros((2 * height - 1, 2 * width - 1), dtype=bool)
    grid[::2, ::2] = True
    grid[::2, 1::2] = labels[:, :-1] == labels[:, 1:]
    grid[1::2, ::2] = labels[:-1, :] == labels[1:, :]
    components, n = scipy.ndimage.label(grid)
    return (components[::2, ::2] - 1).astype(np.int32), int(n)


def _gt_best_iou(gt: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Best IoU of every non-empty segment of `gt` with any label of `seg`, over gt > 0 pixels.

    Sparse: only co-occurring (segment, label) pairs are scored, so `seg` may have many labels.
    """
    keep = gt > 0
    gt, seg = gt[keep], seg[keep]
    n_labels = int(seg.max()) + 1
    codes = gt * n_labels + seg
    if (int(gt.max()) + 1) * n_labels > _MAX_DENSE_CELLS:
        pairs, overlap = np.unique(codes, return_counts=True)
    else:
        counts = np.bincount(codes)
        pairs = np.flatnonzero(counts)
        overlap = counts[pairs]
    rows, cols = np.divmod(pairs, n_labels)
    union = np.bincount(gt)[rows] + np.bincount(seg)[cols] - overlap
    iou = overlap / union
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # pairs are sorted by row
    return np.maximum.reduceat(iou, starts)


def _kim_stats(best: Sequence[np.ndarray]) -> dict[str, float]:
    """Kim sums/counts from each annotation's per-segment best IoUs."""
    n_segments = [b.size for b in best]
    fine = int(np.argmax(n_segments))
    coarse = int(np.argmin(n_segments))
    chosen = {"all": best, "fine": [best[fine]], "coarse": [best[coarse]]}
    stats = {}
    for mode in KIM_MODES:
        stats[f"kim_{mode}_sum"] = float(sum(b.sum() for b in chosen[mode]))
        stats[f"kim_{mode}_count"] = float(sum(b.size for b in chosen[mode]))
    return stats


def kim_image_stats(pred, ground_truth) -> dict[str, float]:
    """Per-image terms of the Kim, Kanezaki & Tanaka (2020) mIoU.

    `pred` (0-based `[H, W]`) is split into 4-connected segments; each ground-truth segment's
    score is its best IoU with any of them. Mode `all` uses every annotation, `fine` the one with
    the most segments, `coarse` the one with the fewest (the first such annotation on ties).

    Returns:
      `{"kim_{mode}_sum": sum of the segments' best IoUs, "kim_{mode}_count": number of
      ground-truth segments}` for each mode in `KIM_MODES`; pool them with `kim_miou`'s rule
      (sum of sums / sum of counts).
    """
    pred = _check_label_map(pred, "pred")
    gts = _check_ground_truth(ground_truth, pred.shape)
    segments, _ = connected_segments(pred)
    return _kim_stats([_gt_best_iou(g, segments) for g in gts])


def kim_miou(preds, gts_per_image, mode: str) -> float:
    """The dataset mIoU of Kim et al.: mean best IoU over all ground-truth segments, pooled.

    Args:
      preds: one 0-based label map per image.
      gts_per_image: per image, its sequence of official annotations.
      mode: "all", "fine" or "coarse" (see `kim_image_stats`).
    """
    if mode not in KIM_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {KIM_MODES}")
    if len(preds) != len(gts_per_image):
        raise ValueError(f"{len(preds)} predictions but {len(gts_per_image)} ground truths")
    if not preds:
        raise ValueError("no images to score")
    stats = [kim_image_stats(p, g) for p, g in zip(preds, gts_per_image, strict=True)]
    total = sum(s[f"kim_{mode}_sum"] for s in stats)
    return total / sum(s[f"kim_{mode}_count"] for s in stats)


# --------------------------------------------------------------------------- Rand index, VOI


def _rand_index(table: np.ndarray) -> float:
    """Fraction of pixel pairs on which two partitions agree; 1 with fewer than two labelled
    pixels (no pair can disagree; the official formula would divide 0 by 0)."""
    n = float(table.sum())
    if n < 2:
        return 1.0
    rows = table.sum(axis=1).astype(np.float64)
    cols = table.sum(axis=0).astype(np.float64)
    disagreements = (rows @ rows + cols @ cols) / 2 - float(np.sum(table.astype(np.float64) ** 2))
    return 1.0 - disagreements / (n * (n - 1) / 2)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _variation_of_information(table: np.ndarray) -> float:
    joint = table / table.sum()
    p_rows = joint.sum(axis=1)
    p_cols = joint.sum(axis=0)
    i, j = np.nonzero(joint)
    p = joint[i, j]
    mutual_information = float((p * np.log2(p / (p_rows[i] * p_cols[j]))).sum())
    return _entropy(p_rows) + _entropy(p_cols) - 2 * mutual_information


def rand_index(pred, gt) -> float:
    """Rand index of a 0-based prediction and one official annotation (gt 0 pixels ignored)."""
    pred = _check_label_map(pred, "pred")
    (gt,) = _check_ground_truth([gt], pred.shape)
    return _rand_index(_labelled_table(gt, pred + 1))


def variation_of_information(pred, gt) -> float:
    """Variation of information (bits) of a 0-based prediction and one official annotation."""
    pred = _check_label_map(pred, "pred")
    (gt,) = _check_ground_truth([gt], pred.shape)
    return _variation_of_information(_labelled_table(gt, pred + 1))


# --------------------------------------------------------------------------- BSDS region bench


class RegionStats(NamedTuple):
    """One candidate segmentation of one image, scored against all its annotations.

    The official `evaluation_reg_image.m` per-image numbers (columns of its `_ev2`, `_ev3`,
    `_ev4` files) before any aggregation. Regions are the labels 1..max of each map (empty labels
    included, as `regionprops` does); the IoU marginals include unlabelled (0) pixels.

    Attributes:
      cover: `[n_gt_regions]` float64, for every region of every annotation (annotations
        concatenated, labels 1..max each) its area times its best IoU with any predicted region.
        `cover.sum()` is the official `cntR`; the per-region maxima over candidates give the
        best-possible covering.
      cover_area: total ground-truth area summed over annotations (official `sumR`).
      precision_count: sum over predicted regions of area times best IoU with any region of any
        annotation (official `cntP`).
      precision_area: labelled predicted area (official `sumP`).
      rand_index: mean over annotations of the Rand index (pixels with a 0 on either side are
        ignored).
      voi: mean over annotations of the variation of information, in bits.
    """

    cover: np.ndarray
    cover_area: float
    precision_count: float
    precision_area: float
    rand_index: float
    voi: float

    @property
    def cover_count(self) -> float:
        """Official `cntR`: the area-weighted best IoUs of all ground-truth regions."""
        return float(self.cover.sum())


def _region_stats_from_tables(tables: Sequence[np.ndarray]) -> RegionStats:
    """RegionStats from full [gt label, predicted label] tables (label 0 row and column kept)."""
    cover, seg_best = [], None
    cover_area = 0.0
    rand, voi = [], []
    for table in tables:
        iou = _iou(table)[1:, 1:]
        gt_area = table[1:].sum(axis=1)
        cover.append(gt_area * iou.max(axis=1))
        cover_area += float(gt_area.sum())
        best = iou.max(axis=0)
        seg_best = best if seg_best is None else np.maximum(seg_best, best)
        rand.append(_rand_index(table[1:, 1:]))
        voi.append(_variation_of_information(table[1:, 1:]))
    seg_area = tables[0][:, 1:].sum(axis=0)
    return RegionStats(
        cover=np.concatenate(cover),
        cover_area=cover_area,
        precision_count=float(seg_area @ seg_best),
        precision_area=float(seg_area.sum()),
        rand_index=float(np.mean(rand)),
        voi=float(np.mean(voi)),
    )


def _official_tables(seg: np.ndarray, gts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Full [gt label, predicted label] tables; empty predicted labels may be compacted away."""
    if (max(int(g.max()) for g in gts) + 1) * (int(seg.max()) + 1) > _MAX_DENSE_CELLS:
        seg = _compact(seg) + int(seg.min() > 0)  # keeps 0 as 0; empty labels score nothing
    tables = [_table(g, seg) for g in gts]
    for g, table in zip(gts, tables, strict=True):
        if not table[1:, 1:].any():
            raise ValueError(
                f"no pixel is labelled in both the prediction and an annotation "
                f"(annotation labels 1..{g.max()})"
            )
    return tables


def region_stats(pred, ground_truth, *, official_labels: bool = False) -> RegionStats:
    """Official BSDS region statistics of one candidate segmentation of one image.

    Args:
      pred: integer label map `[H, W]`: 0-based (shifted by +1 here) unless `official_labels`.
      ground_truth: one official map `[H, W]` or a sequence of them (the annotations).
      official_labels: `pred` already uses official labels (1.., 0 = unlabelled), as `segs`
        cells and `ucm_segmentation` maps do.

    Returns:
      A `RegionStats`; combine `[n_images][n_candidates]` of them with `aggregate_region_stats`.
    """
    seg = _prediction(pred, official_labels=official_labels)
    gts = _check_ground_truth(ground_truth, seg.shape)
    return _region_stats_from_tables(_official_tables(seg, gts))


def region_stats_to_row(stats: RegionStats) -> dict[str, float | str]:
    """Flattens `stats` for a CSV row: scalars as floats, `cover` as space-separated reprs."""
    row: dict[str, float | str] = {
        name: float(getattr(stats, name)) for name in RegionStats._fields if name != "cover"
    }
    row["cover"] = " ".join(repr(float(x)) for x in stats.cover)
    return row


def region_stats_from_row(row: Mapping[str, float | str]) -> RegionStats:
    """Inverse of `region_stats_to_row` (values may be strings, as read back from a CSV)."""
    missing = [name for name in RegionStats._fields if name not in row]
    if missing:
        raise ValueError(f"row lacks region statistics {missing}")
    scalars = {name: float(row[name]) for name in RegionStats._fields if name != "cover"}
    cover = np.array(str(row["cover"]).split(), dtype=np.float64)
    return RegionStats(cover=cover, **scalars)


def ucm_thresholds(n: int = 99) -> np.ndarray:
    """The official thresholds for an ultrametric contour map: `linspace(1/(n+1), n/(n+1), n)`."""
    if n < 1:
        raise ValueError(f"need at least one threshold, got {n}")
    return np.linspace(1 / (n + 1), 1 - 1 / (n + 1), n)


def ucm_segmentation(ucm2, threshold: float) -> np.ndarray:
    """The official segmentation of a double-size ultrametric contour map at `threshold`.

    Args:
      ucm2: `[2H + 1, 2W + 1]` float map (BSDS 'doubleSize' format, pixels at odd indices).
      threshold: regions are the 8-connected components of `ucm2 <= threshold`.

    Returns:
      int32 `[H, W]` official labels (1.., 0 where a pixel lies on a contour above threshold).
    """
    ucm2 = np.asarray(ucm2)
    if ucm2.ndim != 2 or min(ucm2.shape) < 3 or ucm2.shape[0] % 2 == 0 or ucm2.shape[1] % 2 == 0:
        raise ValueError(f"ucm2 must be a [2H + 1, 2W + 1] map, got shape {ucm2.shape}")
    if not np.isfinite(ucm2).all():
        raise ValueError("ucm2 holds NaN or inf")
    labels, _ = scipy.ndimage.label(ucm2 <= threshold, structure=np.ones((3, 3), dtype=bool))
    return labels[1::2, 1::2].astype(np.int32)


class RegionBenchmark(NamedTuple):
    """The official region benchmark of a dataset (what `collect_eval_reg.m` writes).

    Thresholds are candidate parameters: 1..n for lists of segmentations, `ucm_thresholds(n)` for
    ultrametric contour maps. ODS picks one threshold for the dataset (the first best), OIS each
    image's own (the last best, as the official code; `image_threshold` is the first best).

    Attributes:
      thresholds: `[n_candidates]`.
      covering: `[n_candidates]` dataset covering per threshold (pooled sums; eval_cover_th).
      ods_covering_threshold, ods_covering: best threshold of `covering` and its value.
      ois_covering: pooled covering with each image at its own best threshold.
      best_covering: pooled covering with every ground-truth region at its own best threshold.
      image_threshold, image_covering, image_precision: `[n_images]` each image's first best
        threshold, its covering there, and its precision-side covering there (eval_cover_img).
      pri, voi: `[n_candidates]` mean over images per threshold (eval_RI_VOI_thr).
      ods_pri_threshold, ods_pri: first threshold of highest mean PRI, and that PRI.
      ois_pri: mean over images of each image's best PRI.
      ods_voi_threshold, ods_voi: first threshold of lowest mean VOI, and that VOI.
      ois_voi: mean over images of each image's best (lowest) VOI.
    """

    thresholds: np.ndarray
    covering: np.ndarray
    ods_covering_threshold: float
    ods_covering: float
    ois_covering: float
    best_covering: float
    image_threshold: np.ndarray
    image_covering: np.ndarray
    image_precision: np.ndarray
    pri: np.ndarray
    voi: np.ndarray
    ods_pri_threshold: float
    ods_pri: float
    ois_pri: float
    ods_voi_threshold: float
    ods_voi: float
    ois_voi: float


def _ratio(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    return count / np.where(total == 0, 1, total)


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis."""
    return values.shape[-1] - 1 - np.argmax(values[..., ::-1], axis=-1)


def _round_official(values) -> np.ndarray:
    """Values as the official code reads them back from its `%10g` per-image files."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([float(f"{x:g}") for x in values.ravel()]).reshape(values.shape)


def aggregate_region_stats(
    stats: Sequence[Sequence[RegionStats]], thresholds=None, *, official_rounding: bool = False
) -> RegionBenchmark:
    """ODS/OIS covering, PRI and VOI of a dataset, as `collect_eval_reg.m` computes them.

    Args:
      stats: `[n_images][n_candidates]` `RegionStats`, images in the order their rows should
        take in `image_*` (the official order is sorted file names).
      thresholds: `[n_candidates]` parameter of each candidate; defaults to 1..n_candidates.
      official_rounding: round every per-image statistic (and threshold) to 6 significant
        digits first, as the official code does by passing them through `%10g` text files. This
        reproduces its output files byte for byte; results differ by about 1e-6 without it.

    Returns:
      A `RegionBenchmark`.
    """
    if not stats:
        raise ValueError("no images to aggregate")
    n_candidates = len(stats[0])
    for i, row in enumerate(stats):
        if len(row) != n_candidates or not row:
            raise ValueError(f"image {i} has {len(row)} candidates, image 0 has {n_candidates}")
    if thresholds is None:
        thresholds = np.arange(1, n_candidates + 1, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (n_candidates,):
        raise ValueError(f"need {n_candidates} thresholds, got shape {thresholds.shape}")
    for i, row in enumerate(stats):
        sizes = {s.cover.shape for s in row}
        if len(sizes) != 1:
            raise ValueError(f"image {i}: candidates cover different ground-truth regions")

    finish = _round_official if official_rounding else np.asarray

    def field(name: str) -> np.ndarray:
        return finish(np.array([[getattr(s, name) for s in row] for row in stats], np.float64))

    thresholds = finish(thresholds)
    cover_count = finish(np.array([[s.cover_count for s in row] for row in stats]))
    cover_area = field("cover_area")
    precision = _ratio(field("precision_count"), field("precision_area"))
    rand, voi = field("rand_index"), field("voi")
    best_cover = finish([np.max([s.cover for s in row], axis=0).sum() for row in stats])
    images = np.arange(len(stats))

    image_cover = _ratio(cover_count, cover_area)
    first = np.argmax(image_cover, axis=1)
    last = _last_argmax(image_cover)
    covering = _ratio(cover_count.sum(axis=0), cover_area.sum(axis=0))
    ods = int(np.argmax(covering))

    pri, mean_voi = rand.mean(axis=0), voi.mean(axis=0)
    ods_pri, ods_voi = int(np.argmax(pri)), int(np.argmin(mean_voi))
    return RegionBenchmark(
        thresholds=thresholds,
        covering=covering,
        ods_covering_threshold=float(thresholds[ods]),
        ods_covering=float(covering[ods]),
        ois_covering=float(_ratio(cover_count[images, last].sum(), cover_area[images, last].sum())),
        best_covering=float(best_cover.sum() / cover_area[:, 0].sum()),
        image_threshold=thresholds[first],
        image_covering=image_cover[images, first],
        image_precision=precision[images, first],
        pri=pri,
        voi=mean_voi,
        ods_pri_threshold=float(thresholds[ods_pri]),
        ods_pri=float(pri[ods_pri]),
        ois_pri=float(rand.max(axis=1).mean()),
        ods_voi_threshold=float(thresholds[ods_voi]),
        ods_voi=float(mean_voi[ods_voi]),
        ois_voi=float(voi.min(axis=1).mean()),
    )


# --------------------------------------------------------------------------- everything


def image_metrics(pred, ground_truth) -> dict[str, float]:
    """Every per-image metric of a 0-based prediction against an image's annotations.

    Args:
      pred: 0-based integer label map `[H, W]`.
      ground_truth: one official map `[H, W]` or a non-empty sequence of them.

    Returns:
      A flat dict with stable keys (CSV columns):
        `cluster_iou_mean`, `cluster_iou_weighted`: the paper's score (`cluster_iou`);
        `covering`: official segmentation covering (ground truth by prediction);
        `covering_precision`: the official precision-side covering (prediction by any
          annotation, eval_cover_img.txt's 4th column);
        `pri`, `voi`: mean over annotations of the Rand index and VOI (bits);
        `kim_{all,fine,coarse}_{sum,count}`: `kim_image_stats`;
        `n_segments`: number of distinct predicted labels;
        `n_connected_segments`: number of 4-connected predicted segments.
    """
    pred = _check_label_map(pred, "pred")
    gts = _check_ground_truth(ground_truth, pred.shape)
    seg = pred + 1
    tables = _official_tables(seg, gts)
    region = _region_stats_from_tables(tables)
    clusters = np.array([_cluster_scores(_labelled(t)) for t in tables])
    segments, n_connected = connected_segments(pred)
    kim = _kim_stats([_gt_best_iou(g, segments) for g in gts])
    mean, weighted = clusters.mean(axis=0)
    return {
        "cluster_iou_mean": float(mean),
        "cluster_iou_weighted": float(weighted),
        "covering": region.cover_count / region.cover_area,
        "covering_precision": region.precision_count / region.precision_area,
        "pri": region.rand_index,
        "voi": region.voi,
        **kim,
        "n_segments": float(np.count_nonzero(tables[0].sum(axis=0))),
        "n_connected_segments": float(n_connected),
    }
