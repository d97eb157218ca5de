"""The paper's experiments end to end: segment a dataset with several methods, score, report.

`run(config, workdir)` segments every image of `config`'s dataset with every unit (a method at
one K candidate: `gmm_kmeans` when `k` has one value, else `gmm_kmeans-k4`, `gmm_kmeans-elbow`,
...; the plain CNNs choose their own number of labels: one unit each), in compiled batches
sharded over the local devices (`distributed.data_parallel`), scores the labels against the
ground truth (`jaxseg.scoring`) and writes the run directory (`jaxseg.rundir`, its pictures:
`jaxseg.panels`) and its summary (`jaxseg.summary`, `jaxseg.report`); with `config.workers` > 1
the saving, scoring and drawing run in that many processes beside the device work (`_Writer`).
The log follows the run (`jaxseg.progress`): after each image, images done and the ETA; inside a
CNN batch and dataset-mode training, every `stages.PROGRESS_EVERY` iterations, the iteration,
the images, their labels and the time left.

The runner executes `pipeline.plan`s stage by stage, so units whose plans share a prefix
(`cnn` and `cnn_kmeans`) compute it once per batch. A plan's host stage then runs per image
on the image, its labels and scribbles in their own orientation, with the key of its index in
the plan: `stages.Split` (`cnn_refined`) gives the final labels; `stages.Hierarchize` a
hierarchy, whose `ucm2` is written to `ucm2/<unit>/<id>.mat`, scored at the
`config.nthresh` official thresholds (region statistics and boundary counts, in the record),
and cut at `DEFAULT_THRESHOLD` for the label map. When the summary is built, every hierarchy is
cut again at its unit's ODS covering threshold (`scoring.cut_at_ods`: labels, pictures, panel
and the record's per-image metrics rewritten; idempotent), so the per-unit means of a hierarchy
are those of its ODS labels. Every method's labels (a hierarchy: its curve) get boundary counts
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

import collections
import concurrent.futures
import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import (
    cnn,
    data,
    distributed,
    hierarchy,
    networks,
    panels,
    pipeline,
    report,
    scoring,
    stages,
)
from jaxseg import config as config_lib
from jaxseg import scribbles as scribble_maps
from jaxseg.progress import ImageProgress, LoopProgress
from jaxseg.rundir import Failure, Record, RunDir
from jaxseg.summary import Summary, build, metric_rows, order, timing_rows

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
        """The plan's final host stage (`stages.Hierarchize`, `stages.Split`), or None."""
        return self.plan[-1] if stages.is_host(self.plan[-1]) else None


def units(config: config_lib.RunConfig) -> list[Unit]:
    """Every (method, K candidate) of the run, in method order, with its plan."""
    out = []
    for method in config.method:
        ks = config.k if pipeline.takes_k(method) else (None,)
        for k in ks:
            name = method if len(ks) == 1 else f"{method}-{k if k == 'elbow' else f'k{k}'}"
            plan = pipeline.plan(
                method, "elbow" if k is None else k, config.options, cnn_mode=config.cnn_mode
            )
            out.append(Unit(method, k, name, plan))
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
    """The run's compiled stages (each wrapped once in `distributed.data_parallel`, a stage
    with a CNN loop with its `LoopProgress`) and the dataset-mode CNN's trained parameters."""

    def __init__(self, config: config_lib.RunConfig):
        self.batch_size = config.batch_size
        self.params: dict[cnn.Config, Any] = {}
        self._fns: dict = {}
        # (host stage, image shape) pairs run before: the first run of each compiles the
        # stage's jitted parts (boundary cues, watershed).
        self.host_seen: set[tuple] = set()

    def call(
        self, stage, n_colours, images, mask, keys, labels=None, scribbles=None, *, what: str = ""
    ):
        """(Segmentation, seconds, compiled now) of `stage` on a batch ([n, ...] arrays), guided
        by `scribbles` [n, h, w] if given; a CNN loop's progress lines start with `what` (the
        unit and its images).

        A partial batch is padded to the batch size (CNN stages: to the next power of two, as
        vmapped CNN slots cost a full fit each) with copies of its first image under an
        all-False mask, so each stage compiles for few batch sizes; padded results are dropped.
        """
        n_colours = stage.colours(n_colours)
        key = (stage, n_colours, labels is None, scribbles is None)
        if key not in self._fns:
            params = self.params.get(stage.config) if isinstance(stage, stages.ApplyCNN) else None
            bound = stages.cnn_iterations(stage)
            progress = None if bound is None else LoopProgress(bound, may_stop=True)
            loop = {} if progress is None else {"progress": progress}
            guided = scribbles is not None

            def fn(images, mask, keys, *rest):
                guide = {"scribbles": rest[-1]} if guided else {}
                labels = rest[: len(rest) - guided]
                return stage(
                    images, mask, keys, *labels, n_colours=n_colours, params=params, **loop, **guide
                )

            self._fns[key] = (distributed.data_parallel(fn), set(), progress)
        fn, shapes_seen, progress = self._fns[key]
        n = len(images)
        size = _padded_size(stage, n, self.batch_size)

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
        if progress is not None:
            progress.start(what, compiling=compiled)
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        return jax.tree.map(lambda a: a[:n], out), time.perf_counter() - start, compiled


def _padded_size(stage, n: int, batch_size: int) -> int:
    """The batch size `stage` runs `n` images at: `batch_size` (or n if more), a stage fitting
    or applying a CNN the next power of two if smaller (each slot costs a full fit)."""
    if n < batch_size and (
        isinstance(stage, stages.ApplyCNN) or stages.cnn_iterations(stage) is not None
    ):
        return min(batch_size, 1 << (n - 1).bit_length())
    return max(batch_size, n)


def _segment(items: list[_Item], todo: list[Unit], executor: _Executor, seed: int) -> dict:
    """{unit name: ([n] (labels, n_clusters), seconds per image, compiled) or the exception}
    for items of one bucket; a stage shared by several units' plans runs once."""
    images = np.stack([it.prepared.image for it in items])
    mask = np.stack([it.prepared.mask for it in items])
    keys = _image_keys(seed, [it.index for it in items])
    n_colours = items[0].prepared.n_colours
    ids = ", ".join(it.sample.image_id for it in items)
    scribbles = None
    if items[0].prepared.scribbles is not None:  # a run with --scribbles: each item has a map
        scribbles = np.stack([it.prepared.scribbles for it in items])
    done: dict[tuple, Any] = {}
    out: dict[str, Any] = {}
    for unit in todo:
        seconds, compiled, result = 0.0, False, None
        device = stages.device_stages(unit.plan)
        try:
            for i in range(len(device)):
                prefix = device[: i + 1]
                if prefix not in done:
                    try:
                        done[prefix] = executor.call(
                            device[i],
                            n_colours,
                            images,
                            mask,
                            pipeline.stage_keys(keys, i),
                            None if result is None else result.labels,
                            scribbles if stages.takes_scribbles(device[i]) else None,
                            what=f"{unit.name} on images {ids}",
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


def _process(items, run_dir, executor, config, all_units) -> dict[int, list[_Result]]:
    """Segments a bucket's batch (host stages included) and returns, per item index, its
    results to save; a unit that fails on a batch of several images is retried image by image,
    so a failure is pinned on its own (image, unit) and recorded at once."""
    todo = [u for u in all_units if any(u in it.units for it in items)]
    results = _segment(items, todo, executor, config.seed)
    out: dict[int, list[_Result]] = {it.index: [] for it in items}
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
                    alone = _process(
                        [it._replace(units=(unit,))], run_dir, executor, config, [unit]
                    )
                    out[it.index] += alone[it.index]
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
                    host_output = unit.host(
                        it.sample.image,
                        _host_key(config.seed, it.index, unit),
                        labels,
                        None
                        if it.prepared.scribbles is None
                        else it.prepared.restore(it.prepared.scribbles),
                    )
                    host_seconds = time.perf_counter() - start
                    if stages.gives_hierarchy(unit.host):
                        ucm2 = host_output
                        labels = hierarchy.labels_at(ucm2, DEFAULT_THRESHOLD)
                    else:
                        labels = host_output
                    n_clusters = labels.max() + 1
                out[it.index].append(
                    _Result(
                        unit,
                        labels,
                        int(n_clusters),
                        seconds + host_seconds,
                        compiled or host_compiled,
                        len(items),
                        ucm2,
                    )
                )
            except Exception as error:  # noqa: BLE001
                _fail(run_dir, unit.name, it.sample.image_id, error)
    return out


def _host_key(seed: int, index: int, unit: Unit) -> jax.Array:
    """The key of image `index`'s host stage: `stage_keys` at the stage's index in the plan."""
    return pipeline.stage_keys(_image_keys(seed, [index]), len(unit.plan) - 1)[0]


class _Result(NamedTuple):
    """One (image, unit)'s segmentation, waiting to be saved and scored."""

    unit: Unit
    labels: np.ndarray
    n_clusters: int
    seconds: float
    compiled: bool
    batch: int
    ucm2: np.ndarray | None


def _write_item(run_dir: RunDir, config, item: _Item, results, names) -> None:
    """Saves and scores an item's results (`_save`; a failure is recorded for its (image, unit)
    alone), then draws its panel of `names`. Runs in a `_Writer`'s worker or in-process."""
    for result in results:
        try:
            _save(run_dir, config, item, result)
        except Exception as error:  # noqa: BLE001
            _fail(run_dir, result.unit.name, item.sample.image_id, error)
    panels.draw(run_dir, names, item.sample, only_missing=False, scribbles=item.scribbles)


def _save(run_dir: RunDir, config, item: _Item, result: _Result) -> None:
    """Writes one (image, unit)'s ucm2 (a hierarchy), label map, rendering and, last, its
    record."""
    sample, unit, labels, ucm2 = item.sample, result.unit, result.labels, result.ucm2
    if ucm2 is not None:
        run_dir.write_ucm(unit.name, sample.image_id, ucm2)
    run_dir.write_labels(unit.name, sample.image_id, labels)
    panels.write_pictures(run_dir, unit.name, sample, labels, scribbles=item.scribbles)
    scores = scoring.score(
        labels,
        sample.ground_truth,
        ucm2=ucm2,
        nthresh=config.nthresh,
        region_stats=len(config.k) > 1 and unit.k is not None,
    )
    run_dir.write_record(
        Record(
            sample.image_id,
            item.index,
            unit.name,
            unit.method,
            unit.k,
            result.n_clusters,
            scores.metrics,
            scores.region_stats,
            result.seconds,
            result.batch,
            result.compiled,
            None if ucm2 is None else DEFAULT_THRESHOLD,
            scores.ucm_region_stats,
            scores.boundary_stats,
        )
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
        run_dir.check_settings(settings)
        distributed.barrier("jaxseg-runner-config")
        _work(config, dataset, run_dir)
        distributed.barrier("jaxseg-runner-done")
        names = [u.name for u in units(config)]
        for index in scoring.cut_at_ods(run_dir, dataset):
            sample = dataset[index]
            strokes = scribble_maps.to_draw(config.scribbles, sample)
            panels.draw(run_dir, names, sample, only_missing=False, scribbles=strokes)
        records = order(run_dir.records(), list(config.k))
        summary = build(settings, dataset, records, run_dir.failures(), run_dir)
        run_dir.write_csv(run_dir.root / "metrics.csv", *metric_rows(records))
        run_dir.write_csv(run_dir.root / "timings.csv", *timing_rows(records))
        run_dir.write_text(run_dir.root / "summary.json", summary.to_json())
        report.write(run_dir, summary)
        _log.info("wrote %s", run_dir.root / "report.md")
        return summary


def _work(config: config_lib.RunConfig, dataset: data.Dataset, run_dir: RunDir) -> None:
    """Segments this process's share of the images that are not done; redraws missing panels."""
    all_units = units(config)
    names = [u.name for u in all_units]
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
        elif panels.missing(run_dir, names, image_id):
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
        plans = [s for _, todo in pending for u in todo for s in u.plan]
        configs = {s.config for s in plans if isinstance(s, stages.ApplyCNN)}
        executor.params.update(networks.load_or_train(dataset, configs, config, run_dir))
    for i in repair:
        sample = dataset[i]
        strokes = scribble_maps.to_draw(config.scribbles, sample)
        panels.draw(run_dir, names, sample, only_missing=True, scribbles=strokes)
    progress = ImageProgress(len(pending))
    buckets: dict[tuple, list[_Item]] = {}
    with _Writer(run_dir, config, names, progress) as writer:
        for item in _load(dataset, pending, config, run_dir, progress):
            bucket = buckets.setdefault(item.prepared.bucket, [])
            bucket.append(item)
            if len(bucket) == config.batch_size:
                bucket = buckets.pop(item.prepared.bucket)
                _finish(bucket, run_dir, executor, config, all_units, writer)
        for bucket in buckets.values():
            _finish(bucket, run_dir, executor, config, all_units, writer)


def _finish(items, run_dir, executor, config, all_units, writer: _Writer) -> None:
    results = _process(items, run_dir, executor, config, all_units)
    for it in items:
        writer.submit(it, results[it.index])


def _writer_init() -> None:
    """A writer process only scores and draws: JAX stays off the parent's accelerator."""
    jax.config.update("jax_platforms", "cpu")


class _Writer:
    """Saves, scores and draws finished items (`_write_item`): in this process, or with
    `config.workers` > 1 in as many spawned processes while the next batches compute.

    Scoring dominates a hierarchy's cost (the official thresholds' boundary matching, single
    threaded: 8-10 CPU-s per 321x481 image at 99 against ~2.5 s for the hierarchy on a 2-core
    CPU and 0.16 s on an H200 before the colour-histogram cue), so a GPU run of `ucm` is
    host-bound without workers. At most `2 * workers` items are in flight, which bounds the
    memory they hold. An interruption, or a worker that dies (`BrokenProcessPool`), loses only
    the unwritten records, which a resumed run redoes.
    """

    def __init__(self, run_dir: RunDir, config: config_lib.RunConfig, names, progress):
        self._args = (run_dir, config)
        self._names = list(names)
        self._progress = progress
        self._limit = 2 * config.workers
        self._pending: collections.deque = collections.deque()
        self._pool = None
        if config.workers > 1:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                config.workers,
                # "spawn": forking a process that has imported JAX can deadlock.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_writer_init,
            )

    def submit(self, item: _Item, results: list[_Result]) -> None:
        args = (*self._args, item._replace(prepared=None, units=()), results, self._names)
        if self._pool is None:
            _write_item(*args)
            self._progress.update(1)
            return
        self._pending.append(self._pool.submit(_write_item, *args))
        while self._pending and (len(self._pending) > self._limit or self._pending[0].done()):
            self._collect()

    def _collect(self) -> None:
        self._pending.popleft().result()  # re-raises what the worker raised
        self._progress.update(1)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self._pool is None:
            return
        try:
            while kind is None and self._pending:
                self._collect()
        finally:
            self._pool.shutdown(cancel_futures=True)


def _load(dataset, pending, config, run_dir: RunDir, progress: ImageProgress):
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
            colours = any(isinstance(s, stages.Cluster) for u in todo for s in u.plan)
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
    """(the image's scribble map [h, w] or None: unguided (`scribbles.for_image`), its units
    still to run); a unit whose CNN has too few channels for the classes is recorded as
    failed. A bad file raises `ValueError` naming it."""
    scribbles = scribble_maps.for_image(folder, sample)
    if scribbles is None:
        return None, todo
    top, left = int(scribbles[scribbles != cnn.UNSCRIBBLED].max()), []
    for unit in todo:
        channels = stages.scribble_channels(unit.plan)
        if top < channels:
            left.append(unit)
            continue
        error = ValueError(
            f"scribble file {scribble_maps.find(folder, sample.image_id)}: class {top} needs "
            f"more than the {channels} channels of {unit.name}'s CNN (classes 0..{channels - 1})"
        )
        _fail(run_dir, unit.name, sample.image_id, error)
    return scribbles, tuple(left)
