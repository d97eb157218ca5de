"""Per-image scores of a run against the ground truth, and the ODS cut of its hierarchies.

`score` gives what a record (`rundir.Record`) holds for one (image, unit): the label map's
metrics (`metrics.image_metrics`) and boundary counts (`boundary.boundary_stats`) against the
annotations' boundaries; with several K, its region statistics (the ODS / OIS over K); for a
hierarchy (`ucm2`), its region statistics at the official thresholds and the boundary counts of
its curve. `cut_at_ods` cuts every hierarchy of a run directory again at its unit's ODS
covering threshold, so the per-unit means of a hierarchy are those of its ODS labels.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, NamedTuple

import numpy as np

from jaxseg import boundary, data, hierarchy, metrics, visualize
from jaxseg.rundir import RunDir, boundary_stats_to_row, read_ucm
from jaxseg.summary import hierarchy_benchmarks

__all__ = ["Scores", "cut_at_ods", "score"]

_log = logging.getLogger("jaxseg.runner")


class Scores(NamedTuple):
    """One (image, unit)'s scores, as `rundir.Record` holds them (None: not computed).

    Attributes:
      metrics: `metrics.image_metrics` of the label map.
      region_stats: `metrics.region_stats_to_row` of the label map (runs with several K).
      ucm_region_stats: a hierarchy's {"index": [nthresh] row of each official threshold,
        "rows": the distinct cuts' `metrics.region_stats_to_row`}.
      boundary_stats: `rundir.boundary_stats_to_row` of the label map (one threshold) or of
        the hierarchy's curve (the official thresholds).
    """

    metrics: dict[str, float] | None = None
    region_stats: dict[str, Any] | None = None
    ucm_region_stats: dict[str, Any] | None = None
    boundary_stats: dict[str, list[float]] | None = None


def _gt_boundaries(ground_truth) -> list[np.ndarray]:
    """The annotations' boundary maps as the official benchmark builds them from segmentations
    (`thin(seg_boundaries(.))`, equal to the stored `Boundaries` of the official files)."""
    return [boundary.thin(boundary.seg_boundaries(g)) for g in ground_truth]


def _ucm_scores(ucm2: np.ndarray, ground_truth, nthresh: int) -> tuple[dict, dict]:
    """(region statistics at the `nthresh` official thresholds, boundary counts of the curve).
    A cut depends only on the ucm2 levels at or below it: equal cuts are scored once."""
    thresholds = metrics.ucm_thresholds(nthresh)
    levels = np.unique(ucm2)
    rows: list[dict] = []
    seen: dict[int, int] = {}
    index = []
    for t in thresholds:
        cut = int(np.searchsorted(levels, t, side="right"))
        if cut not in seen:
            seg = metrics.ucm_segmentation(ucm2, t)
            stats = metrics.region_stats(seg, ground_truth, official_labels=True)
            seen[cut] = len(rows)
            rows.append(metrics.region_stats_to_row(stats))
        index.append(seen[cut])
    maps = boundary.threshold_maps(boundary.ucm_boundary_map(ucm2), thresholds)
    bdry = boundary.boundary_stats(maps, _gt_boundaries(ground_truth), thresholds=thresholds)
    return {"index": index, "rows": rows}, boundary_stats_to_row(bdry)


def score(
    labels: np.ndarray,
    ground_truth,
    *,
    ucm2: np.ndarray | None = None,
    nthresh: int,
    region_stats: bool = False,
) -> Scores:
    """The scores of one image's label map [h, w] (and hierarchy `ucm2` [2h + 1, 2w + 1], cut
    at `nthresh` official thresholds) against its annotations; all None without annotations.
    `region_stats`: also the label map's region statistics (a flat unit of a run with several
    K)."""
    if not ground_truth:
        return Scores()
    scores = metrics.image_metrics(labels, ground_truth)
    if ucm2 is not None:
        return Scores(scores, None, *_ucm_scores(ucm2, ground_truth, nthresh))
    edges = boundary.seg_boundaries(labels)
    bdry = boundary.boundary_stats([edges], _gt_boundaries(ground_truth))
    stats = (
        metrics.region_stats_to_row(metrics.region_stats(labels, ground_truth))
        if region_stats
        else None
    )
    return Scores(scores, stats, None, boundary_stats_to_row(bdry))


def cut_at_ods(run_dir: RunDir, dataset: data.Dataset) -> list[int]:
    """Cuts every hierarchy at its unit's ODS covering threshold over the directory's records:
    rewrites the label map, removes its stale pictures and, last, rewrites the record
    (threshold, per-image metrics, n_clusters). Records already at that threshold are left
    alone (idempotent); a unit without ground truth keeps its threshold. A failure leaves
    the record as it was (logged).

    Returns:
      The sorted dataset indices of the images re-cut (draw their panels and pictures:
      `panels.draw`).
    """
    records = run_dir.records()
    ods = {name: b.ods_covering_threshold for name, b in hierarchy_benchmarks(records).items()}
    recut = set()
    for record in records:
        threshold = ods.get(record.unit)
        if threshold is None or record.threshold == threshold:
            continue
        try:
            sample = dataset[record.index]
            if sample.image_id != record.image_id:
                raise ValueError(f"dataset image {record.index} is {sample.image_id}")
            ucm2 = read_ucm(run_dir.ucm_path(record.unit, record.image_id))
            labels = hierarchy.labels_at(ucm2, threshold)
            run_dir.write_labels(record.unit, record.image_id, labels)
            for kind in visualize.PICTURES:  # stale: `panels.draw` redraws missing pictures
                run_dir.picture_path(kind, record.unit, record.image_id).unlink(missing_ok=True)
            scores = (
                metrics.image_metrics(labels, sample.ground_truth) if sample.ground_truth else None
            )
        except Exception as error:  # noqa: BLE001 - the record stays as it was
            _log.warning("cannot cut %s of %s: %s", record.unit, record.image_id, error)
            continue
        run_dir.write_record(
            dataclasses.replace(
                record, threshold=threshold, metrics=scores, n_clusters=int(labels.max() + 1)
            )
        )
        recut.add(record.index)
    return sorted(recut)
