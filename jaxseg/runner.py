"""The paper's experiments end to end: segment a dataset with several methods, score, report.

`run(config, workdir)` segments every image of `config`'s dataset with every unit (a method at
one K candidate: `gmm_kmeans` when `k` has one value, else `gmm_kmeans-k4`, `gmm_kmeans-elbow`,
...; the plain CNNs choose their own number of labels: one unit each), in compiled batches
sharded over the local devices (`distributed.data_parallel`), scores the labels against the
ground truth and writes the run directory (`jaxseg.rundir`) and its summary (`jaxseg.summary`,
`jaxseg.report`).

The runner executes `pipeline.plan`s stage by stage, so units whose plans share a prefix
(`cnn` and `cnn_kmeans`) compute it once per batch. A plan's host stage (`pipeline.Hierarchize`)
then runs per image on the image and its labels in their own orientation, with the key of its
index in the plan; its `ucm2` is written to `ucm2/<unit>/<id>.mat`, scored at the
`config.nthresh` official thresholds (region statistics and boundary counts, in the record),
and cut at `DEFAULT_THRESHOLD` for the label map. When the summary is built, every hierarchy is
cut again at its unit's ODS covering threshold (`_cut_at_ods`: labels, pictures, panel and the
record's per-image metrics rewritten; idempotent), so the per-unit means of a hierarchy are
those of its ODS labels. Every method's labels (a hierarchy: its curve) get boundary counts
(`boundary.boundary_stats`) against the annotations' boundaries.

Image i's key is `fold_in(PRNGKey(seed), i)` with i its index in the sorted dataset, so labels
do not depend on batch size, padding, devices or resumption, and equal `pipeline.segment`'s
for that key.

Resumable: finished (image, unit) pairs are skipped and their missing derived pictures redrawn.
A failure (an unreadable image, an error in a stage or a metric) is recorded for that (image,
unit) alone, logged, and retried on the next run. The directory is locked: a second run into it
is refused. Several processes (`jax.distributed`): each handles `distributed.process_indices`
of the dataset; the main process holds the lock and writes the summary after a barrier.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import boundary, cnn, data, distributed, hierarchy, metrics, pipeline, report, visualize
from jaxseg import config as config_lib
from jaxseg import scribbles as scribble_maps
from jaxseg.rundir import (
    Failure,
    Record,
    RunDir,
    boundary_stats_to_row,
    read_labels,
    read_ucm,
)
from jaxseg.summary import Summary, build, hierarchy_benchmarks, metric_rows, order, timing_rows

__all__ = ["DEFAULT_THRESHOLD", "Unit", "open_dataset", "run", "units"]

# The cut of a hierarchy's labels until the summary knows the unit's ODS threshold.
DEFAULT_THRESHOLD = 0.5

_log = logging.getLogger("jaxseg.runner")


class Unit(NamedTuple):
    """One method at one K candidate (k None: the method picks its own number of labels)."""

    method: str
    k: int | str | None
    name: str
    plan: tuple

    @property
    def host(self):
        """The plan's final host stage (`pipeline.Hierarchize`), or None."""
        return self.plan[-1] if pipeline.is_host(self.plan[-1]) else None


def units(config: config_lib.RunConfig) -> list[Unit]:
    """Every (method, K candidate) of the run, in method order, with its plan."""
    out = []
    for method in config.method:
        ks = config.k if pipeline.takes_k(method) else (None,)
        for k in ks:
            name = method if len(ks) == 1 else f"{method}-{k if k == 'elbow' else f'k{k}'}"
            stages = pipeline.plan(
                method, "elbow" if k is None else k, config.options, cnn_mode=config.cnn_mode
            )
            out.append(Unit(method, k, name, stages))
    return out


def open_dataset(config: config_lib.RunConfig) -> data.Dataset:
    """The whole dataset (raises FileNotFoundError / ValueError before any work is done)."""
    return data.load_dataset(config.dataset, split=config.split, data_dir=config.data_dir)


class _Item(NamedTuple):
    """An image waiting in its bucket, with the units it still needs."""

    index: int
    sample: data.Sample
    prepared: pipeline.Prepared
    units: tuple[Unit, ...]
    scribbles: np.ndarray | None = None  # [h, w] as the image (drawn over its pictures)


def _image_keys(seed: int, indices: Sequence[int]) -> jax.Array:
    """`fold_in(PRNGKey(seed), i)` for every dataset index i: [len(indices)] keys."""
    root = jax.random.PRNGKey(seed)
    return jax.vmap(jax.random.fold_in, (None, 0))(root, jnp.asarray(indices, jnp.uint32))


class _Executor:
    """The run's compiled stages (each wrapped once in `distributed.data_parallel`) and the
    dataset-mode CNN's trained parameters."""

    def __init__(self, config: config_lib.RunConfig):
        self.batch_size = config.batch_size
        self.params: dict[cnn.Config, Any] = {}
        self._fns: dict = {}
        # (host stage, image shape) pairs run before: the first run of each compiles the
        # stage's jitted parts (boundary cues, watershed).
        self.host_seen: set[tuple] = set()

    def call(self, stage, n_colours, images, mask, keys, labels=None, scribbles=None):
        """(Segmentation, seconds, compiled now) of `stage` on a batch ([n, ...] arrays), guided
        by `scribbles` [n, h, w] if given.

        A partial batch is padded to the batch size (CNN stages: to the next power of two, as
        vmapped CNN slots cost a full fit each) with copies of its first image under an
        all-False mask, so each stage compiles for few batch sizes; padded results are dropped.
        """
        n_colours = stage.colours(n_colours)
        key = (stage, n_colours, labels is None, scribbles is None)
        if key not in self._fns:
            params = self.params.get(stage.config) if isinstance(stage, pipeline.ApplyCNN) else None
            guided = scribbles is not None

            def fn(images, mask, keys, *rest):
                guide = {"scribbles": rest[-1]} if guided else {}
                labels = rest[: len(rest) - guided]
                return stage(
                    images, mask, keys, *labels, n_colours=n_colours, params=params, **guide
                )

            self._fns[key] = (distributed.data_parallel(fn), set())
        fn, shapes_seen = self._fns[key]
        n = len(images)
        size = self.batch_size
        if isinstance(stage, (pipeline.FitCNN, pipeline.ApplyCNN)) and n < size:
            size = min(size, 1 << (n - 1).bit_length())
        size = max(size, n)

        def pad(a, fill=None):
            a = jnp.asarray(a)
            fill = a[:1] if fill is None else fill
            return jnp.concatenate([a, jnp.repeat(fill, size - n, 0)])

        args = [pad(images), pad(mask, jnp.zeros_like(mask[:1])), pad(keys)]
        if labels is not None:
            args.append(pad(labels))
        if scribbles is not None:
            args.append(pad(scribbles, jnp.full_like(scribbles[:1], cnn.UNSCRIBBLED)))
        shapes = tuple(a.shape for a in args)
        compiled = shapes not in shapes_seen
        shapes_seen.add(shapes)
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        return jax.tree.map(lambda a: a[:n], out), time.perf_counter() - start, compiled

    def train(
        self, dataset, todo: list[Unit], config: config_lib.RunConfig, run_dir: RunDir
    ) -> None:
        """Dataset mode: one network per CNN setting, trained on every image of the dataset (one
        bucket shape) and saved as `networks/<setting>.msgpack`; loaded instead from
        `config.cnn_params`, or from that file when a rerun finds it."""
        configs = {s.config for u in todo for s in u.plan if isinstance(s, pipeline.ApplyCNN)}
        configs -= set(self.params)
        pending = []
        for cnn_config in configs:
            path = config.cnn_params or run_dir.network_path(cnn_config)
            if Path(path).is_file():
                _log.info("dataset-mode CNN: loading %s", path)
                try:
                    self.params[cnn_config] = cnn.load_params(path, cnn_config)
                except ValueError as error:
                    raise ValueError(f"{path}: {error}") from error
            else:
                pending.append(cnn_config)
        if not pending:
            return
        prepared = [
            pipeline.prepare(s.image, pad_multiple=config.pad_multiple, colours=False)
            for s in dataset
        ]
        shapes = sorted({p.image.shape for p in prepared})
        if len(shapes) != 1:
            raise ValueError(
                f"cnn_mode=dataset trains on images of one shape (after turning portrait images "
                f"to landscape), got {shapes}: set pad_multiple to pad them to one shape"
            )
        images = np.stack([p.image for p in prepared]).astype(np.float32) / 255
        mask = np.stack([p.mask for p in prepared])
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), np.uint32(2**32 - 1))
        for cnn_config in pending:
            _log.info("training the dataset-mode CNN on %d images", len(prepared))
            params = cnn.train_dataset(
                images,
                key,
                cnn_config,
                batch_size=min(config.batch_size, len(prepared)),
                mask=mask,
                progress=pipeline.log_cnn_progress,
                progress_every=25,
            )
            self.params[cnn_config] = params
            path = run_dir.network_path(cnn_config)
            run_dir.write(path, lambda tmp, params=params: cnn.save_params(tmp, params))
            _log.info("saved the trained network as %s (reuse: --cnn_params=%s)", path, path)


def _segment(items: list[_Item], todo: list[Unit], executor: _Executor, seed: int) -> dict:
    """{unit name: ([n] (labels, n_clusters), seconds per image, compiled) or the exception}
    for items of one bucket; a stage shared by several units' plans runs once."""
    images = np.stack([it.prepared.image for it in items])
    mask = np.stack([it.prepared.mask for it in items])
    keys = _image_keys(seed, [it.index for it in items])
    n_colours = items[0].prepared.n_colours
    scribbles = None
    if items[0].prepared.scribbles is not None:  # a run with --scribbles: each item has a map
        scribbles = np.stack([it.prepared.scribbles for it in items])
    done: dict[tuple, Any] = {}
    out: dict[str, Any] = {}
    for unit in todo:
        seconds, compiled, result = 0.0, False, None
        stages = pipeline.device_stages(unit.plan)
        try:
            for i in range(len(stages)):
                prefix = stages[: i + 1]
                if prefix not in done:
                    try:
                        done[prefix] = executor.call(
                            stages[i],
                            n_colours,
                            images,
                            mask,
                            pipeline.stage_keys(keys, i),
                            None if result is None else result.labels,
                            scribbles if pipeline.takes_scribbles(stages[i]) else None,
                        )
                    except Exception as error:  # noqa: BLE001 - recorded per (image, unit)
                        done[prefix] = error
                if isinstance(done[prefix], Exception):
                    raise done[prefix]
                result, more, now = done[prefix]
                seconds, compiled = seconds + more, compiled or now
        except Exception as error:  # noqa: BLE001
            out[unit.name] = error
            continue
        if result is None:  # a plan of a host stage only
            out[unit.name] = ([(None, 0)] * len(items), 0.0, False)
            continue
        labels, n_clusters = np.asarray(result.labels), np.asarray(result.n_clusters)
        _log.info(
            "  %s: %d images, %.1f s%s", unit.name, len(items), seconds, " (compiled)" * compiled
        )
        out[unit.name] = (
            list(zip(labels, n_clusters, strict=True)),
            seconds / len(items),
            compiled,
        )
    return out


def _fail(run_dir: RunDir, unit: str, image_id: str, error: BaseException) -> None:
    _log.error("image %s, %s failed: %s: %s", image_id, unit, type(error).__name__, error)
    run_dir.write_failure(
        Failure(
            image_id, unit, f"{type(error).__name__}: {error}", traceback.format_exception(error)
        )
    )


def _process(items, run_dir, executor, config, all_units) -> None:
    """Segments a bucket's batch and saves it; a unit that fails on a batch of several images
    is retried image by image, so a failure is pinned on its own (image, unit)."""
    todo = [u for u in all_units if any(u in it.units for it in items)]
    results = _segment(items, todo, executor, config.seed)
    for unit in todo:
        result = results[unit.name]
        if isinstance(result, Exception):
            if len(items) == 1:
                _fail(run_dir, unit.name, items[0].sample.image_id, result)
                continue
            _log.warning(
                "%s failed on a batch (%s); retrying its images one by one", unit.name, result
            )
            for it in items:
                if unit in it.units:
                    _process([it._replace(units=(unit,))], run_dir, executor, config, [unit])
            continue
        per_image, seconds, compiled = result
        for it, (labels, n_clusters) in zip(items, per_image, strict=True):
            if unit not in it.units:
                continue
            try:
                labels = None if labels is None else it.prepared.restore(labels)
                ucm2, host_seconds, host_compiled = None, 0.0, False
                if unit.host is not None:
                    seen = (unit.host, it.sample.image.shape)
                    host_compiled = seen not in executor.host_seen
                    executor.host_seen.add(seen)
                    start = time.perf_counter()
                    ucm2 = unit.host(
                        it.sample.image, _host_key(config.seed, it.index, unit), labels
                    )
                    host_seconds = time.perf_counter() - start
                    labels = hierarchy.labels_at(ucm2, DEFAULT_THRESHOLD)
                    n_clusters = labels.max() + 1
                _save(
                    run_dir,
                    config,
                    it,
                    unit,
                    labels,
                    int(n_clusters),
                    seconds + host_seconds,
                    compiled or host_compiled,
                    len(items),
                    ucm2,
                )
            except Exception as error:  # noqa: BLE001
                _fail(run_dir, unit.name, it.sample.image_id, error)


def _host_key(seed: int, index: int, unit: Unit) -> jax.Array:
    """The key of image `index`'s host stage: `stage_keys` at the stage's index in the plan."""
    return pipeline.stage_keys(_image_keys(seed, [index]), len(unit.plan) - 1)[0]


def _gt_boundaries(ground_truth) -> list[np.ndarray]:
    """The annotations' boundary maps as the official benchmark builds them from segmentations
    (`thin(seg_boundaries(.))`, equal to the stored `Boundaries` of the official files)."""
    return [boundary.thin(boundary.seg_boundaries(g)) for g in ground_truth]


def _ucm_scores(ucm2: np.ndarray, ground_truth, nthresh: int) -> tuple[dict, dict]:
    """(region statistics at the `nthresh` official thresholds as {"index": [nthresh] row of
    each threshold, "rows": distinct `region_stats_to_row`s}, boundary counts of the curve).
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


def _save(
    run_dir: RunDir,
    config,
    item: _Item,
    unit: Unit,
    labels,
    n_clusters,
    seconds,
    compiled,
    batch,
    ucm2=None,
) -> None:
    """Writes one (image, unit)'s ucm2 (a hierarchy), label map, rendering and, last, its
    record."""
    sample = item.sample
    if ucm2 is not None:
        run_dir.write_ucm(unit.name, sample.image_id, ucm2)
    run_dir.write_labels(unit.name, sample.image_id, labels)
    pictures = visualize.pictures(sample.image, labels, scribbles=item.scribbles)
    for kind, picture in pictures.items():
        run_dir.write_image(run_dir.picture_path(kind, unit.name, sample.image_id), picture)
    scores = stats = ucm_stats = bdry = None
    if sample.ground_truth:
        scores = metrics.image_metrics(labels, sample.ground_truth)
        if ucm2 is not None:
            ucm_stats, bdry = _ucm_scores(ucm2, sample.ground_truth, config.nthresh)
        else:
            edges = boundary.seg_boundaries(labels)
            gt = _gt_boundaries(sample.ground_truth)
            bdry = boundary_stats_to_row(boundary.boundary_stats([edges], gt))
            if len(config.k) > 1 and unit.k is not None:
                stats = metrics.region_stats_to_row(
                    metrics.region_stats(labels, sample.ground_truth)
                )
    run_dir.write_record(
        Record(
            sample.image_id,
            item.index,
            unit.name,
            unit.method,
            unit.k,
            n_clusters,
            scores,
            stats,
            seconds,
            batch,
            compiled,
            None if ucm2 is None else DEFAULT_THRESHOLD,
            ucm_stats,
            bdry,
        )
    )


def _draw(
    run_dir: RunDir,
    all_units: list[Unit],
    sample: data.Sample,
    *,
    only_missing: bool,
    scribbles: np.ndarray | None = None,
) -> None:
    """Draws the panel (the image with its `scribbles`, then each finished unit's and the
    first annotation's borders over it, captioned with their segment counts; a hierarchy at
    three levels: half its labels' threshold t, t, and halfway from t to 1) and any missing
    picture, from the label maps and ucm2 files on disk."""
    image_id = sample.image_id
    tiles = [("image", sample.image)]
    if scribbles is not None:
        n = len(np.unique(scribbles[scribbles != cnn.UNSCRIBBLED]))
        tiles = [
            (
                f"image, scribbles of {n} classes",
                visualize.strokes(sample.image, scribbles, width=2),
            )
        ]
    for unit in all_units:
        path = run_dir.labels_path(unit.name, image_id)
        if not run_dir.record_path(unit.name, image_id).exists() or not path.exists():
            continue
        labels = read_labels(path)
        missing = [
            kind
            for kind in visualize.PICTURES
            if not run_dir.picture_path(kind, unit.name, image_id).exists()
        ]
        if missing:
            drawn = visualize.pictures(sample.image, labels, scribbles=scribbles)
            for kind in missing:
                run_dir.write_image(run_dir.picture_path(kind, unit.name, image_id), drawn[kind])
        record = run_dir.read_record(unit.name, image_id)
        ucm_path = run_dir.ucm_path(unit.name, image_id)
        if record is None or record.threshold is None or not ucm_path.exists():
            tiles.append(_panel_tile(sample.image, labels, unit.name))
            continue
        ucm2, t = read_ucm(ucm_path), record.threshold
        for level, name in ((t / 2, "fine"), (t, "labels"), ((1 + t) / 2, "coarse")):
            cut = labels if level == t else hierarchy.labels_at(ucm2, level)
            tiles.append(_panel_tile(sample.image, cut, f"{unit.name} {name} (t={level:.2f})"))
    if sample.ground_truth:
        caption = f"annotation 1 of {len(sample.ground_truth)}"
        tiles.append(_panel_tile(sample.image, sample.ground_truth[0], caption))
    if len(tiles) > 1 and not (only_missing and run_dir.panel_path(image_id).exists()):
        panel = visualize.grid(tiles, title=f"image {image_id}: segment borders")
        run_dir.write_image(run_dir.panel_path(image_id), panel)


def _panel_tile(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    # Borders 2 px wide: panels shrink images to 240 px, which would blur 1 px lines away.
    n = len(np.unique(labels))
    return f"{name}: {n} labels", visualize.overlay(image, labels, width=2)


class _Progress:
    """Logs images done, images per second and the estimated time left."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        _log.info(
            "%d/%d images  %.3g images/s  elapsed %s  ETA %s",
            self.done,
            self.total,
            rate,
            _clock(elapsed),
            _clock(eta),
        )


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _check_settings(run_dir: RunDir, settings: dict) -> None:
    """Writes config.json in a new run directory, or checks that a rerun keeps its settings."""
    path = run_dir.root / "config.json"
    saved = run_dir.read_json(path)
    if saved is None:
        run_dir.write_json(path, settings)
        return
    changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    if changed:
        diff = ", ".join(f"{k} {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ValueError(
            f"{run_dir.root} holds a run with other settings ({diff}); choose another output_dir"
        )


def run(config: config_lib.RunConfig, workdir: str | os.PathLike) -> Summary | None:
    """Runs `config` into `workdir` (see the module doc); resumes what is already there.

    Raises before any work: FileNotFoundError / ValueError for a missing dataset, ValueError
    for an output folder that cannot be written, holds other settings or is locked.

    Returns:
      The summary of every record in `workdir` (also written to summary.json) in the main
      process; None in the others.
    """
    dataset = open_dataset(config)
    run_dir = RunDir(workdir)
    settings = config_lib.label_settings(config)
    if not distributed.is_main_process():
        distributed.barrier("jaxseg-runner-config")
        _work(config, dataset, run_dir)
        distributed.barrier("jaxseg-runner-done")
        return None
    with run_dir.lock():
        _check_settings(run_dir, settings)
        distributed.barrier("jaxseg-runner-config")
        _work(config, dataset, run_dir)
        distributed.barrier("jaxseg-runner-done")
        _cut_at_ods(run_dir, dataset, units(config), config.scribbles)
        records = order(run_dir.records(), list(config.k))
        summary = build(settings, dataset, records, run_dir.failures(), run_dir)
        run_dir.write_csv(run_dir.root / "metrics.csv", *metric_rows(records))
        run_dir.write_csv(run_dir.root / "timings.csv", *timing_rows(records))
        run_dir.write_text(run_dir.root / "summary.json", summary.to_json())
        report.write(run_dir, summary)
        _log.info("wrote %s", run_dir.root / "report.md")
        return summary


def _cut_at_ods(
    run_dir: RunDir, dataset: data.Dataset, all_units: list[Unit], scribble_dir: str | None
) -> None:
    """Cuts every hierarchy at its unit's ODS covering threshold over the directory's records:
    rewrites the label map, its pictures and the record's metrics (threshold, per-image
    metrics), then the image's panel. Records already at that threshold are left alone; a unit
    without ground truth keeps `DEFAULT_THRESHOLD`. A failure leaves the record as it was
    (logged)."""
    records = run_dir.records()
    ods = {name: b.ods_covering_threshold for name, b in hierarchy_benchmarks(records).items()}
    redraw = set()
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
            strokes = _scribbles_to_draw(scribble_dir, sample)
            for kind, picture in visualize.pictures(
                sample.image, labels, scribbles=strokes
            ).items():
                path = run_dir.picture_path(kind, record.unit, record.image_id)
                run_dir.write_image(path, picture)
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
        redraw.add(record.index)
    for index in sorted(redraw):
        sample = dataset[index]
        strokes = _scribbles_to_draw(scribble_dir, sample)
        _draw(run_dir, all_units, sample, only_missing=False, scribbles=strokes)


def _work(config: config_lib.RunConfig, dataset: data.Dataset, run_dir: RunDir) -> None:
    """Segments this process's share of the images that are not done; redraws missing panels."""
    all_units = units(config)
    subset = dataset if config.num_images is None else dataset[: config.num_images]
    mine = [int(i) for i in distributed.process_indices(len(subset))]
    pending, repair = [], []
    for i in mine:
        image_id = dataset.ids[i]
        todo = tuple(
            u
            for u in all_units
            if not (
                run_dir.record_path(u.name, image_id).exists()
                and run_dir.labels_path(u.name, image_id).exists()
                and (u.host is None or run_dir.ucm_path(u.name, image_id).exists())
            )
        )
        if todo:
            pending.append((i, todo))
        elif not run_dir.panel_path(image_id).exists() or any(
            not run_dir.picture_path(kind, u.name, image_id).exists()
            for u in all_units
            for kind in visualize.PICTURES
        ):
            repair.append(i)
    _log.info(
        "%s: %d images x %d units in %s; %d images done before, %d to do",
        subset,
        len(mine),
        len(all_units),
        run_dir.root,
        len(mine) - len(pending),
        len(pending),
    )
    executor = _Executor(config)
    if config.cnn_mode == "dataset" and pending:
        executor.train(dataset, [u for _, todo in pending for u in todo], config, run_dir)
    for i in repair:
        sample = dataset[i]
        strokes = _scribbles_to_draw(config.scribbles, sample)
        _draw(run_dir, all_units, sample, only_missing=True, scribbles=strokes)
    progress = _Progress(len(pending))
    buckets: dict[tuple, list[_Item]] = {}
    for item in _load(dataset, pending, config, run_dir, progress):
        bucket = buckets.setdefault(item.prepared.bucket, [])
        bucket.append(item)
        if len(bucket) == config.batch_size:
            _finish(
                buckets.pop(item.prepared.bucket), run_dir, executor, config, all_units, progress
            )
    for bucket in buckets.values():
        _finish(bucket, run_dir, executor, config, all_units, progress)


def _finish(items, run_dir, executor, config, all_units, progress) -> None:
    _process(items, run_dir, executor, config, all_units)
    for it in items:
        _draw(run_dir, all_units, it.sample, only_missing=False, scribbles=it.scribbles)
    progress.update(len(items))


def _load(dataset, pending, config, run_dir: RunDir, progress: _Progress):
    """Yields the pending images as `_Item`s; an unreadable image is recorded as failed for
    each of its units, counted as done, and skipped."""
    for index, todo in pending:
        try:
            sample = dataset[index]
            scribbles, guide = None, None
            if config.scribbles is not None:
                scribbles, todo = _scribbles(config.scribbles, sample, todo, run_dir)
                guide = np.full(sample.image.shape[:2], cnn.UNSCRIBBLED, np.uint8)
                guide = guide if scribbles is None else scribbles
            colours = any(isinstance(s, pipeline.Cluster) for u in todo for s in u.plan)
            prepared = pipeline.prepare(
                sample.image, pad_multiple=config.pad_multiple, colours=colours, scribbles=guide
            )
        except Exception as error:  # noqa: BLE001 - any bad image is recorded and skipped
            for unit in todo:
                _fail(run_dir, unit.name, dataset.ids[index], error)
            progress.update(1)
            continue
        if not todo:  # every unit failed on the scribbles
            progress.update(1)
            continue
        yield _Item(index, sample, prepared, todo, scribbles)


def _scribbles(folder: str, sample: data.Sample, todo, run_dir: RunDir):
    """(the image's scribble map [h, w] or None, its units still to run). No file, or one
    without a scribbled pixel (logged): None, unguided. A bad file raises `ValueError` naming
    it; a unit whose CNN has too few channels for the classes is recorded as failed."""
    path = scribble_maps.find(folder, sample.image_id)
    if path is None:
        return None, todo
    scribbles = scribble_maps.read(path, sample.image.shape[:2])
    marked = scribbles[scribbles != cnn.UNSCRIBBLED]
    if marked.size == 0:
        _log.warning(
            "scribble file %s has no scribbled pixel: %s runs unguided", path, sample.image_id
        )
        return None, todo
    top, left = int(marked.max()), []
    for unit in todo:
        channels = pipeline.scribble_channels(unit.plan)
        if top < channels:
            left.append(unit)
            continue
        error = ValueError(
            f"scribble file {path}: class {top} needs more than the {channels} channels of "
            f"{unit.name}'s CNN (classes 0..{channels - 1})"
        )
        _fail(run_dir, unit.name, sample.image_id, error)
    return scribbles, tuple(left)


def _scribbles_to_draw(folder: str | None, sample: data.Sample) -> np.ndarray | None:
    """The scribbles drawn over a redrawn picture of `sample` (None: none, or a bad file)."""
    path = None if folder is None else scribble_maps.find(folder, sample.image_id)
    try:
        scribbles = None if path is None else scribble_maps.read(path, sample.image.shape[:2])
    except ValueError:
        return None
    return scribbles if scribbles is not None and scribbles.min() < cnn.UNSCRIBBLED else None
