"""The run summary: a typed object built in one place from a run directory's records, with
to/from JSON (`summary.json`), and the rows of metrics.csv and timings.csv.

A summary describes every (image, unit) finished in the directory, whichever run wrote it, so a
rerun with fewer methods or images never shrinks it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import jax
import numpy as np

from jaxseg import boundary, data, metrics, pipeline
from jaxseg.rundir import Failure, Record, RunDir, boundary_stats_from_row, read_labels

__all__ = [
    "BoundarySummary",
    "ClusterTable",
    "DatasetSummary",
    "FailureSummary",
    "HierarchySummary",
    "RegionSummary",
    "Summary",
    "UnitSummary",
    "boundary_benchmarks",
    "build",
    "hierarchy_benchmarks",
    "metric_rows",
    "order",
    "timing_rows",
]

# Per-image metrics averaged over images (the Kim terms are pooled instead).
MEAN_METRICS = (
    "cluster_iou_mean",
    "cluster_iou_weighted",
    "covering",
    "covering_precision",
    "pri",
    "voi",
    "n_segments",
    "n_connected_segments",
)
TABLE_IMAGE = "3096"  # the paper's Tables 7.1 / 7.2


@dataclasses.dataclass(frozen=True)
class UnitSummary:
    """One unit (a method at one K candidate) over the images it finished."""

    name: str
    method: str
    k: int | str | None
    n_images: int
    n_scored: int
    n_clusters_mean: float | None
    seconds_median: float | None
    seconds_median_compiled_excluded: float | None
    mean: dict[str, float]  # MEAN_METRICS averaged over scored images; empty if none
    kim_miou: dict[str, float]  # metrics.KIM_MODES -> pooled mIoU; empty if none


@dataclasses.dataclass(frozen=True)
class RegionSummary:
    """ODS / OIS of one method over its K candidates (images scored for every K)."""

    k: list[int | str]
    n_images: int
    covering: list[float]
    ods_covering_k: int | str
    ods_covering: float
    ois_covering: float
    best_covering: float
    ods_pri_k: int | str
    ods_pri: float
    ois_pri: float
    ods_voi_k: int | str
    ods_voi: float
    ois_voi: float


@dataclasses.dataclass(frozen=True)
class HierarchySummary:
    """ODS / OIS of one hierarchical unit over its ucm2 thresholds (images with ground truth):
    `metrics.aggregate_region_stats` of the records' `ucm_region_stats`, as `jaxseg.evaluate`
    computes it from the ucm2 files."""

    n_images: int
    thresholds: list[float]
    covering: list[float]
    ods_covering_threshold: float
    ods_covering: float
    ois_covering: float
    best_covering: float
    ods_pri_threshold: float
    ods_pri: float
    ois_pri: float
    ods_voi_threshold: float
    ods_voi: float
    ois_voi: float


@dataclasses.dataclass(frozen=True)
class BoundarySummary:
    """Boundary precision / recall of one unit (`boundary.aggregate_boundary_stats`): one point
    for a flat segmentation (ODS = OIS, AP 0), a curve over the ucm2 thresholds for a
    hierarchy."""

    n_images: int
    thresholds: list[float]
    recall: list[float]
    precision: list[float]
    ods_threshold: float
    ods_recall: float
    ods_precision: float
    ods_f: float
    ois_recall: float
    ois_precision: float
    ois_f: float
    ap: float


@dataclasses.dataclass(frozen=True)
class ClusterTable:
    """Tables 7.1 / 7.2: image 3096's clusters against its coarsest annotation."""

    unit: str
    image_id: str
    annotation: int
    n_gt_segments: int
    clusters: list[int]
    best_segment: list[int]
    iou: list[float]


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    name: str
    split: str | None
    n_images: int  # images with a record or a failure in the directory


@dataclasses.dataclass(frozen=True)
class FailureSummary:
    image_id: str
    unit: str
    error: str


@dataclasses.dataclass(frozen=True)
class Summary:
    """Everything report.md shows (`jaxseg.report`).

    Attributes:
      config: the label settings (`config.label_settings`) and `method`, the methods in the
        directory.
      dataset, device: what ran where (`device`: backend, devices, process_count, jax).
      units: one per unit with a record, in method order.
      region_benchmark: method -> ODS / OIS over its K candidates (runs with several K).
      hierarchies: hierarchical unit -> ODS / OIS over its ucm2 thresholds.
      boundary: unit -> boundary precision / recall, ODS / OIS F and AP.
      table_7_3: image id (of the paper's five) -> unit name -> the paper's score.
      cluster_tables: "cnn" / "gmm" -> Tables 7.1 / 7.2.
      failures: (image, unit) pairs that failed and have no record.
      metrics_skipped: why some images have no metrics (no ground truth), or None.
    """

    config: dict[str, Any]
    dataset: DatasetSummary
    device: dict[str, Any]
    units: list[UnitSummary]
    region_benchmark: dict[str, RegionSummary]
    hierarchies: dict[str, HierarchySummary]
    boundary: dict[str, BoundarySummary]
    table_7_3: dict[str, dict[str, float]]
    cluster_tables: dict[str, ClusterTable]
    failures: list[FailureSummary]
    metrics_skipped: str | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Summary:
        """Parses summary.json (raises ValueError when it is not a summary)."""
        try:
            return _parse(cls, json.loads(text), "summary")
        except json.JSONDecodeError as error:
            raise ValueError(f"summary.json is not valid JSON: {error}") from None


def _parse(tp, obj, where: str):
    """`obj` (parsed JSON) as type `tp`: dataclasses, lists, dicts and scalars."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        if not isinstance(obj, dict) or sorted(obj) != sorted(names):
            raise ValueError(f"{where}: expected the fields {names}, got {_describe(obj)}")
        return tp(**{n: _parse(hints[n], obj[n], f"{where}.{n}") for n in names})
    if origin is list:
        if not isinstance(obj, list):
            raise ValueError(f"{where}: expected a list, got {_describe(obj)}")
        return [_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if origin is dict:
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected an object, got {_describe(obj)}")
        return {k: _parse(args[1], v, f"{where}.{k}") for k, v in obj.items()}
    return obj


def _describe(obj) -> str:
    return f"keys {sorted(obj)}" if isinstance(obj, dict) else type(obj).__name__


# --------------------------------------------------------------------------- building


def _method_order(method: str) -> int:
    order = pipeline.METHODS + pipeline.VARIANTS + pipeline.HIERARCHIES
    return order.index(method) if method in order else len(order)


def _k_order(k, ks: list) -> int:
    return ks.index(k) if k in ks else len(ks)


def order(records: list[Record], ks: list) -> list[Record]:
    """Records by image (dataset order), then method (`METHODS + VARIANTS + HIERARCHIES`),
    then K (`ks`)."""
    return sorted(records, key=lambda r: (r.index, _method_order(r.method), _k_order(r.k, ks)))


def metric_rows(records: list[Record]) -> tuple[list[str], list[list]]:
    """metrics.csv: image_id,method,k,n_clusters, then every metric (scored records)."""
    names = next((list(r.metrics) for r in records if r.metrics), [])
    rows = [
        [
            r.image_id,
            r.method,
            "" if r.k is None else r.k,
            r.n_clusters,
            *([r.metrics[m] for m in names] if r.metrics else []),
        ]
        for r in records
    ]
    return ["image_id", "method", "k", "n_clusters", *names], rows


def timing_rows(records: list[Record]) -> tuple[list[str], list[list]]:
    """timings.csv: seconds per image x unit (non-deterministic, so not in metrics.csv)."""
    rows = [
        [
            r.image_id,
            r.method,
            "" if r.k is None else r.k,
            f"{r.seconds:.6f}",
            r.batch_size,
            r.compiled,
        ]
        for r in records
    ]
    return ["image_id", "method", "k", "seconds", "batch_size", "compiled"], rows


def build(
    settings: dict[str, Any],
    dataset: data.Dataset,
    records: list[Record],
    failures: list[Failure],
    run_dir: RunDir,
) -> Summary:
    """The summary of `records` (every record of the directory, `RunDir.records`).

    Args:
      settings: the label settings (`config.label_settings`).
      dataset: the whole dataset (the 3096 sample's ground truth for Tables 7.1 / 7.2).
      records, failures: the directory's.
      run_dir: where the label maps are.
    """
    ks = list(settings["k"])
    by_unit: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: (_method_order(r.method), _k_order(r.k, ks), r.index)):
        by_unit.setdefault(r.unit, []).append(r)
    methods = list(dict.fromkeys(rs[0].method for rs in by_unit.values()))
    no_truth = {r.image_id for r in records if r.metrics is None}
    images = {r.image_id for r in records} | {f.image_id for f in failures}
    return Summary(
        config={**settings, "method": methods},
        dataset=DatasetSummary(dataset.name, dataset.split, len(images)),
        device={
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(),
            "jax": jax.__version__,
        },
        units=[_unit(rs) for rs in by_unit.values()],
        region_benchmark=_region_benchmarks(methods, by_unit),
        hierarchies=hierarchy_benchmarks(records),
        boundary=boundary_benchmarks(records),
        table_7_3={
            image_id: {
                name: r.metrics["cluster_iou_mean"]
                for name, rs in by_unit.items()
                for r in rs
                if r.image_id == image_id and r.metrics
            }
            for image_id in data.SAMPLE_IDS
            if any(r.image_id == image_id for r in records)
        },
        cluster_tables=_cluster_tables(dataset, by_unit, run_dir),
        failures=[FailureSummary(f.image_id, f.unit, f.error) for f in failures],
        metrics_skipped=(
            f"{len(no_truth)} images have no ground truth: their metrics were skipped"
            if no_truth
            else None
        ),
    )


def _unit(records: list[Record]) -> UnitSummary:
    first = records[0]
    scored = [r.metrics for r in records if r.metrics]
    fresh = [r.seconds for r in records if not r.compiled]
    mean, kim = {}, {}
    if scored:
        mean = {m: float(np.mean([s[m] for s in scored])) for m in MEAN_METRICS}
        for mode in metrics.KIM_MODES:
            total = sum(s[f"kim_{mode}_sum"] for s in scored)
            kim[mode] = total / sum(s[f"kim_{mode}_count"] for s in scored)
    return UnitSummary(
        name=first.unit,
        method=first.method,
        k=first.k,
        n_images=len(records),
        n_scored=len(scored),
        n_clusters_mean=float(np.mean([r.n_clusters for r in records])),
        seconds_median=float(np.median([r.seconds for r in records])),
        seconds_median_compiled_excluded=float(np.median(fresh)) if fresh else None,
        mean=mean,
        kim_miou=kim,
    )


def _region_benchmarks(methods: list[str], by_unit: dict[str, list[Record]]) -> dict:
    out = {}
    for method in methods:
        candidates = [
            rs for rs in by_unit.values() if rs[0].method == method and rs[0].k is not None
        ]
        if len(candidates) < 2:
            continue
        stats = [{r.image_id: r.region_stats for r in rs if r.region_stats} for rs in candidates]
        index = {r.image_id: r.index for rs in candidates for r in rs}
        ids = sorted(set.intersection(*(set(s) for s in stats)), key=index.__getitem__)
        if not ids:
            continue
        rows = [[metrics.region_stats_from_row(s[i]) for s in stats] for i in ids]
        bench = metrics.aggregate_region_stats(rows)
        ks = [rs[0].k for rs in candidates]

        def k_at(threshold: float, ks=ks):
            return ks[int(threshold) - 1]

        out[method] = RegionSummary(
            k=ks,
            n_images=len(ids),
            covering=bench.covering.tolist(),
            ods_covering_k=k_at(bench.ods_covering_threshold),
            ods_covering=float(bench.ods_covering),
            ois_covering=float(bench.ois_covering),
            best_covering=float(bench.best_covering),
            ods_pri_k=k_at(bench.ods_pri_threshold),
            ods_pri=float(bench.ods_pri),
            ois_pri=float(bench.ois_pri),
            ods_voi_k=k_at(bench.ods_voi_threshold),
            ods_voi=float(bench.ods_voi),
            ois_voi=float(bench.ois_voi),
        )
    return out


def _by_unit(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: r.index):
        out.setdefault(r.unit, []).append(r)
    return out


def hierarchy_benchmarks(records: list[Record]) -> dict[str, HierarchySummary]:
    """Unit -> region ODS / OIS of its records' `ucm_region_stats` (units that have some)."""
    out = {}
    for name, rs in _by_unit(records).items():
        scored = [r.ucm_region_stats for r in rs if r.ucm_region_stats]
        if not scored:
            continue
        rows = []
        for stats in scored:
            distinct = [metrics.region_stats_from_row(row) for row in stats["rows"]]
            rows.append([distinct[i] for i in stats["index"]])
        thresholds = metrics.ucm_thresholds(len(rows[0]))
        bench = metrics.aggregate_region_stats(rows, thresholds)
        out[name] = _from_bench(
            HierarchySummary,
            bench,
            n_images=len(rows),
            thresholds=thresholds.tolist(),
            covering=bench.covering.tolist(),
        )
    return out


def _from_bench(cls, bench, **lists):
    """A `cls` summary: `lists` (its per-threshold lists and count), and each other field
    taken from the `bench` attribute of the same name."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in lists]
    return cls(**lists, **{name: getattr(bench, name) for name in names})


def boundary_benchmarks(records: list[Record]) -> dict[str, BoundarySummary]:
    """Unit -> boundary benchmark of its records' `boundary_stats` (units that have some)."""
    out = {}
    for name, rs in _by_unit(records).items():
        stats = [boundary_stats_from_row(r.boundary_stats) for r in rs if r.boundary_stats]
        if not stats:
            continue
        bench = boundary.aggregate_boundary_stats(stats)
        out[name] = _from_bench(
            BoundarySummary,
            bench,
            n_images=len(stats),
            thresholds=bench.thresholds.tolist(),
            recall=bench.recall.tolist(),
            precision=bench.precision.tolist(),
        )
    return out


def _cluster_tables(dataset, by_unit: dict[str, list[Record]], run_dir: RunDir) -> dict:
    """Tables 7.1 / 7.2: image 3096's clusters against its coarsest annotation (CNN, GMM)."""
    if TABLE_IMAGE not in dataset.ids:
        return {}
    out = {}
    for name, rs in by_unit.items():
        method = rs[0].method
        if method not in ("cnn", "gmm") or method in out:
            continue
        if not any(r.image_id == TABLE_IMAGE and r.metrics for r in rs):
            continue
        sample = dataset[dataset.ids.index(TABLE_IMAGE)]
        counts = [len(np.unique(g[g > 0])) for g in sample.ground_truth]
        annotation = int(np.argmin(counts))
        labels = read_labels(run_dir.labels_path(name, TABLE_IMAGE))
        clusters, best, iou = metrics.cluster_table(labels, sample.ground_truth[annotation])
        out[method] = ClusterTable(
            unit=name,
            image_id=TABLE_IMAGE,
            annotation=annotation,
            n_gt_segments=counts[annotation],
            clusters=clusters.tolist(),
            best_segment=best.tolist(),
            iou=iou.tolist(),
        )
    return out
