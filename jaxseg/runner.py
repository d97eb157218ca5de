"""The paper's experiments end to end: segment a dataset with several methods, score, report.

`run(config, workdir)` segments every image of `config`'s dataset with every method (and every
K candidate), in compiled batches sharded over the local devices (`distributed.data_parallel`),
scores the labels against the ground truth, and writes under `workdir`:

  labels/<unit>/<id>.png   label map, lossless (8-bit, or 16-bit above 255 labels)
  color/<unit>/<id>.png    each segment painted in its mean colour
  panels/<id>.png          image | every unit | the first annotation (the paper's Figures 1-4)
  records/<unit>/<id>.json per-image result (K, metrics, timing): written last, atomically;
                           its presence marks the image done for that unit
  failed/<unit>/<id>.json  the error of an image that failed (retried on the next run)
  metrics.csv              one row per image x unit: image_id,method,k,n_clusters,<metrics>
  timings.csv              seconds per image x unit (non-deterministic, so not in metrics.csv)
  summary.json, report.md, summary.png   (written by the main process, `jaxseg.report`)
  config.json              the settings the labels depend on; a rerun must match them

A *unit* is a method with one K candidate: `gmm_kmeans` when `--k` has one value, else
`gmm_kmeans-k4`, `gmm_kmeans-elbow`, ... (the CNN and its CE-only variant choose their own
number of labels: one unit each).

Resumable: finished (image, unit) pairs are skipped; every file is written to a temporary name
and renamed, so an interrupted run leaves no partial file that counts. A failing image (an
unreadable file, an error in a solver or metric) is logged with its error and skipped; the
summary lists the failures. Image i's key is `fold_in(PRNGKey(seed), i)` with i its index in the
sorted dataset, so labels do not depend on batch size, padding, devices or resumption.

Several processes (`jax.distributed`): each handles `distributed.process_indices` of the dataset
and writes its own images' files; after a barrier the main process assembles the summary.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
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
from PIL import Image

from jaxseg import cnn, data, distributed, metrics, pipeline, report

__all__ = [
    "CNN_MODES",
    "CNN_PRESETS",
    "RunConfig",
    "Unit",
    "mean_colour",
    "open_dataset",
    "read_labels",
    "run",
    "settings_conflict",
]

CNN_PRESETS = ("paper", "kim2020")
CNN_MODES = ("per-image", "dataset")

_log = logging.getLogger("jaxseg.runner")

# The settings a run directory's labels depend on: a rerun into it must not change them.
_LABEL_SETTINGS = (
    "dataset",
    "split",
    "k",
    "elbow_k_min",
    "elbow_k_max",
    "features",
    "xy_weight",
    "cnn_preset",
    "cnn_max_iter",
    "cnn_mu",
    "cnn_mode",
    "pad_multiple",
    "seed",
)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What to run (see `experiments/run.py` for the flags that fill it).

    Attributes:
      methods: from `pipeline.METHODS + pipeline.VARIANTS`.
      dataset: "samples", "bsds300", "bsds500" or a folder of images (`data.load_dataset`).
      split: the dataset's split, or None for all of it.
      data_dir: the folder holding BSDS500/ (else $JAXSEG_DATA_DIR).
      num_images: the first `num_images` images of the sorted dataset; None: all.
      k: K candidates, each an integer >= 2 or "elbow". With several, each method runs once
        per candidate and ODS/OIS are reported over them.
      elbow_k_min, elbow_k_max: the range of K the elbow method searches.
      features: "rgb" or "lab" pixel colour features.
      xy_weight: weight of (row, col) features for K-means/GMM (the `_xy` variants override it).
      cnn_preset: "paper" or "kim2020" (`cnn.Config`).
      cnn_max_iter, cnn_mu: override the preset's when not None.
      cnn_mode: "per-image" (one CNN fitted per image, the paper) or "dataset" (one CNN trained
        on all the run's images, then applied to each: `cnn.train_dataset` / `cnn.apply`).
      batch_size: images per compiled batch; a partial batch is padded to it with masked
        slots (for the CNN to the next power of two), so few batch sizes compile.
      pad_multiple: image sides are padded up to a multiple of this (1: batch only equal
        shapes; larger: fewer compiled shapes, masked padding).
      seed: root of the per-image keys.
    """

    methods: tuple[str, ...] = ("gmm_kmeans",)
    dataset: str = "samples"
    split: str | None = None
    data_dir: str | None = None
    num_images: int | None = None
    k: tuple[int | str, ...] = ("elbow",)
    elbow_k_min: int = 2
    elbow_k_max: int = 10
    features: str = "rgb"
    xy_weight: float = 0.0
    cnn_preset: str = "paper"
    cnn_max_iter: int | None = None
    cnn_mu: float | None = None
    cnn_mode: str = "per-image"
    batch_size: int = 4
    pad_multiple: int = 1
    seed: int = 0

    def __post_init__(self):
        choices = pipeline.METHODS + pipeline.VARIANTS
        if not self.methods:
            raise ValueError("no method given")
        for method in self.methods:
            if method not in choices:
                raise ValueError(f"unknown method {method!r}; choose from {', '.join(choices)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat: {list(self.methods)}")
        if not self.k:
            raise ValueError("no K candidate given")
        for k in self.k:
            if k != "elbow" and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
                raise ValueError(f"k must be an integer >= 2 or 'elbow', got {k!r}")
        if len(set(self.k)) != len(self.k):
            raise ValueError(f"K candidates repeat: {list(self.k)}")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if self.cnn_preset not in CNN_PRESETS:
            raise ValueError(f"cnn_preset must be one of {CNN_PRESETS}, got {self.cnn_preset!r}")
        if self.cnn_mode not in CNN_MODES:
            raise ValueError(f"cnn_mode must be one of {CNN_MODES}, got {self.cnn_mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.options()  # validates features, xy_weight, and the CNN settings

    def cnn_config(self) -> cnn.Config:
        config = cnn.Config.paper() if self.cnn_preset == "paper" else cnn.Config.kim2020()
        overrides = {"max_iter": self.cnn_max_iter, "mu": self.cnn_mu}
        return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})

    def options(self) -> pipeline.Options:
        return pipeline.Options(
            space=self.features,
            xy_weight=self.xy_weight,
            k_min=self.elbow_k_min,
            k_max=self.elbow_k_max,
            cnn_config=self.cnn_config(),
        )

    def units(self) -> list[Unit]:
        """Every (method, K candidate) pair to run, in method order."""
        units = []
        for method in self.methods:
            if pipeline.base_method(method) == "cnn" and not pipeline.is_ensemble(method):
                units.append(Unit(method, None, method))
                continue
            for k in self.k:
                name = method if len(self.k) == 1 else f"{method}-{k if k == 'elbow' else f'k{k}'}"
                units.append(Unit(method, k, name))
        return units

    def label_settings(self) -> dict[str, Any]:
        settings = {name: getattr(self, name) for name in _LABEL_SETTINGS}
        settings["k"] = list(self.k)
        return settings


class Unit(NamedTuple):
    """One method at one K candidate (k None: the method picks its own number of labels)."""

    method: str
    k: int | str | None
    name: str


def open_dataset(config: RunConfig) -> data.Dataset:
    """The run's images: the dataset, cut to `num_images` (raises before any work is done)."""
    dataset = data.load_dataset(config.dataset, split=config.split, data_dir=config.data_dir)
    return dataset if config.num_images is None else dataset[: config.num_images]


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, write) -> None:
    """Calls `write(tmp_path)`, then renames the temporary file to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"))


def _write_png(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _label_png(labels: np.ndarray) -> np.ndarray:
    """Labels as an array Pillow saves losslessly: uint8, or uint16 for labels above 255."""
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def read_labels(path: Path) -> np.ndarray:
    """A label map written by the runner, as int32 [h, w]."""
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int32)


def mean_colour(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every segment of `labels` painted in its mean colour: uint8 [h, w, 3]."""
    flat = labels.reshape(-1)
    counts = np.bincount(flat)
    sums = np.stack([np.bincount(flat, image.reshape(-1, 3)[:, c]) for c in range(3)], axis=1)
    colours = sums / np.maximum(counts, 1)[:, None]
    return np.round(colours[flat]).astype(np.uint8).reshape(image.shape)


class _Paths:
    def __init__(self, workdir: Path):
        self.workdir = workdir

    def record(self, unit: Unit, image_id: str) -> Path:
        return self.workdir / "records" / unit.name / f"{image_id}.json"

    def failure(self, unit: Unit, image_id: str) -> Path:
        return self.workdir / "failed" / unit.name / f"{image_id}.json"

    def labels(self, unit: Unit, image_id: str) -> Path:
        return self.workdir / "labels" / unit.name / f"{image_id}.png"

    def colour(self, unit: Unit, image_id: str) -> Path:
        return self.workdir / "color" / unit.name / f"{image_id}.png"

    def panel(self, image_id: str) -> Path:
        return self.workdir / "panels" / f"{image_id}.png"


# --------------------------------------------------------------------------- compute


class _Item(NamedTuple):
    """An image waiting in its bucket: dataset index, sample, bucketed image and mask, the
    size of its distinct-colour compression (`pipeline.colour_size`; None for CNN-only work),
    and the units it still needs."""

    index: int
    sample: data.Sample
    bucketed: np.ndarray
    mask: np.ndarray
    n_colours: int | None
    units: tuple[Unit, ...]

    @property
    def bucket(self) -> tuple:
        return self.bucketed.shape, self.n_colours


def _first_stage(unit: Unit) -> tuple[str, int | str | None]:
    """(method, K) of a unit's first stage; an ensemble's first stage uses K by the elbow."""
    if pipeline.is_ensemble(unit.method):
        method, k = pipeline.base_method(unit.method), "elbow"
    else:
        method, k = unit.method, unit.k
    return method, None if pipeline.base_method(method) == "cnn" else k


def _image_keys(seed: int, indices: Sequence[int]) -> jax.Array:
    """`fold_in(PRNGKey(seed), i)` for every dataset index i: [len(indices)] keys."""
    root = jax.random.PRNGKey(seed)
    return jax.vmap(jax.random.fold_in, (None, 0))(root, jnp.asarray(indices, jnp.uint32))


def _dataset_key(seed: int) -> jax.Array:
    """The key of the dataset-mode CNN (an index no image has)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), np.uint32(2**32 - 1))


def _compiled_batch_size(n: int, batch_size: int) -> int:
    """Batch size compiled for n images: batch_size, or the smallest power of two >= n."""
    return batch_size if n >= batch_size else min(batch_size, 1 << (n - 1).bit_length())


def _apply_cnn(images, mask, *, params, n_channels):
    """Dataset-mode CNN: one forward pass per image with a trained network."""
    labels = jax.vmap(lambda x, m: cnn.response(params, x[None], m[None])[0].argmax(-1))(
        images, mask
    )
    return pipeline.consecutive_labels(labels.astype(jnp.int32), mask, n_channels)


# Stage key -> (compiled function, argument shapes it was called with), shared by every run in
# this process: a stage's key fixes its function.
_SHARED_STAGES: dict = {}


class _Stages:
    """The run's compiled stages, each wrapped once in `distributed.data_parallel`."""

    def __init__(self, config: RunConfig):
        self.options = config.options()
        self.cnn_mode = config.cnn_mode
        self.batch_size = config.batch_size
        self.cnn_params: dict[cnn.Config, Any] = {}
        self._fns: dict = {}

    def _call(self, stage, make, *args, cnn_stage=False, shared=True):
        """(outputs, seconds, compiled now) of the stage `stage` on `args` ([n, ...] each).

        A partial batch is padded to the batch size (CNN stages: to the next power of two, as
        vmapped CNN slots cost a full fit each) with copies of its first image under an
        all-False mask (masked out of every fit), so each stage compiles for few batch sizes;
        the padded slots' results are dropped.
        """
        fns = _SHARED_STAGES if shared else self._fns
        if stage not in fns:
            fns[stage] = (distributed.data_parallel(make()), set())
        fn, compiled_shapes = fns[stage]
        n = len(args[0])
        size = _compiled_batch_size(n, self.batch_size) if cnn_stage else self.batch_size
        size = max(size, n)

        def pad(a):
            fill = jnp.zeros_like(a[:1]) if a.dtype == bool else a[:1]
            return jnp.concatenate([a, jnp.repeat(fill, size - n, 0)])

        args = tuple(pad(jnp.asarray(a)) for a in args)
        shapes = tuple(np.shape(a) for a in args)
        compiled = shapes not in compiled_shapes
        compiled_shapes.add(shapes)
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        seconds = time.perf_counter() - start
        return jax.tree.map(lambda a: a[:n], out), seconds, compiled

    def first(self, method, k, n_colours, images, keys, mask):
        base = pipeline.base_method(method)
        options = pipeline.method_options(method, self.options)
        if base == "cnn" and self.cnn_mode == "dataset":
            config = options.cnn
            make = lambda: functools.partial(  # noqa: E731
                _apply_cnn, params=self.cnn_params[config], n_channels=config.n_channels
            )
            stage = ("dataset-cnn", config)
            return self._call(stage, make, images, mask, cnn_stage=True, shared=False)
        n_clusters = "elbow" if k is None else k
        if base == "cnn" or options.xy_weight > 0:
            n_colours = None  # unused: one compilation for every colour count
        make = lambda: functools.partial(  # noqa: E731
            pipeline.segment_base,
            base=base,
            n_clusters=n_clusters,
            options=options,
            n_colours=n_colours,
        )
        stage = ("first", base, n_clusters, options, n_colours)
        return self._call(stage, make, images, keys, mask, cnn_stage=base == "cnn")

    def second(self, method, k, images, labels, keys, mask):
        n_segments = pipeline.label_bound(method, "elbow", self.options)
        make = lambda: functools.partial(  # noqa: E731
            pipeline.recluster_mean_colours,
            n_segments=n_segments,
            n_clusters=k,
            options=self.options,
        )
        stage = ("ensemble", n_segments, k, self.options)
        return self._call(stage, make, images, labels, keys, mask)

    def train_cnn(self, items: list[_Item], config: RunConfig) -> None:
        """Dataset mode: trains one network per CNN setting on all `items` (one shape)."""
        shapes = {it.bucketed.shape for it in items}
        if len(shapes) != 1:
            raise ValueError(
                f"cnn_mode=dataset trains on images of one shape (after turning portrait images "
                f"to landscape), got {sorted(shapes)}: set pad_multiple to pad them to one shape"
            )
        images = np.stack([it.bucketed for it in items])
        mask = np.stack([it.mask for it in items])
        for method in {u.method for it in items for u in it.units}:
            if pipeline.base_method(method) != "cnn":
                continue
            settings = pipeline.method_options(
                _first_stage(Unit(method, None, ""))[0], self.options
            )
            if settings.cnn in self.cnn_params:
                continue
            _log.info("training the dataset-mode CNN (%s) on %d images", method, len(items))
            self.cnn_params[settings.cnn] = cnn.train_dataset(
                images,
                _dataset_key(config.seed),
                settings.cnn,
                batch_size=min(config.batch_size, len(items)),
                mask=mask,
            )


def _run_batch(items: list[_Item], config: RunConfig, stages: _Stages) -> dict:
    """Segments items of one bucket shape.

    Returns {(index, unit name): (labels [h, w] numpy, n_clusters, seconds, compiled)}: seconds
    is the time of the unit's stages over the batch divided by its images (a first stage shared
    by several units counts for each); compiled says whether a stage was compiled in the call.
    """
    images = np.stack([it.bucketed for it in items])
    mask = np.stack([it.mask for it in items])
    base_keys, ensemble_keys = pipeline.split_keys(
        _image_keys(config.seed, [it.index for it in items])
    )
    firsts: dict = {}
    results = {}
    for unit in [u for u in config.units() if any(u in it.units for it in items)]:
        first = _first_stage(unit)
        if first not in firsts:
            firsts[first] = stages.first(*first, items[0].n_colours, images, base_keys, mask)
        out, seconds, compiled = firsts[first]
        if pipeline.is_ensemble(unit.method):
            out, more, compiled_now = stages.second(
                unit.method, unit.k, images, out.labels, ensemble_keys, mask
            )
            seconds, compiled = seconds + more, compiled or compiled_now
        _log.info(
            "  %s: %d images, %.1f s%s",
            unit.name,
            len(items),
            seconds,
            " (compiled)" if compiled else "",
        )
        labels, n_clusters = np.asarray(out.labels), np.asarray(out.n_clusters)
        for j, it in enumerate(items):
            if unit in it.units:
                labels_j = pipeline.from_bucket(labels[j], it.sample.image.shape[:2])
                results[(it.index, unit.name)] = (
                    labels_j,
                    int(n_clusters[j]),
                    seconds / len(items),
                    compiled,
                )
    return results


# --------------------------------------------------------------------------- per image


def _fail(paths: _Paths, unit: Unit, image_id: str, error: BaseException) -> None:
    _log.error("image %s, %s failed: %s: %s", image_id, unit.name, type(error).__name__, error)
    _write_json(
        paths.failure(unit, image_id),
        {
            "image_id": image_id,
            "unit": unit.name,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exception(error),
        },
    )


def _save_unit(paths, config, item: _Item, unit: Unit, result) -> None:
    """Writes one (image, unit)'s label map, rendering and, last, its record."""
    labels, n_clusters, seconds, compiled = result
    sample = item.sample
    _write_png(paths.labels(unit, sample.image_id), _label_png(labels))
    _write_png(paths.colour(unit, sample.image_id), mean_colour(sample.image, labels))
    record = {
        "image_id": sample.image_id,
        "index": item.index,
        "method": unit.method,
        "k": unit.k,
        "n_clusters": n_clusters,
        "metrics": None,
        "region_stats": None,
        "seconds": seconds,
        "batch_size": config.batch_size,
        "compiled": compiled,
    }
    if sample.ground_truth:
        record["metrics"] = metrics.image_metrics(labels, sample.ground_truth)
        if len(config.k) > 1 and unit.k is not None:
            stats = metrics.region_stats(labels, sample.ground_truth)
            record["region_stats"] = metrics.region_stats_to_row(stats)
    _write_json(paths.record(unit, sample.image_id), record)
    paths.failure(unit, sample.image_id).unlink(missing_ok=True)


def _save_panel(paths: _Paths, units: list[Unit], sample: data.Sample) -> None:
    """image | each unit's rendering (those done so far) | the first annotation."""
    tiles = [("image", sample.image)]
    for unit in units:
        path = paths.colour(unit, sample.image_id)
        if path.exists():
            with Image.open(path) as im:
                tiles.append((unit.name, np.asarray(im.convert("RGB"))))
    if sample.ground_truth:
        tiles.append(("ground truth", mean_colour(sample.image, sample.ground_truth[0])))
    panel = report.panel(tiles)
    _atomic_write(paths.panel(sample.image_id), lambda tmp: panel.save(tmp, format="PNG"))


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


# --------------------------------------------------------------------------- run


def settings_conflict(workdir: str | os.PathLike, config: RunConfig) -> str | None:
    """Why `config` cannot run into `workdir` (it holds a run with other label settings), or
    None when it can."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    settings = config.label_settings()
    changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    if not changed:
        return None
    diff = ", ".join(f"{k} {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
    return f"{workdir} holds a run with other settings ({diff}); choose another output_dir"


def _check_settings(workdir: Path, config: RunConfig) -> None:
    """Writes config.json in a new run directory, or checks a rerun keeps its settings."""
    if distributed.is_main_process() and not (workdir / "config.json").exists():
        _write_json(workdir / "config.json", config.label_settings())
    distributed.barrier("jaxseg-runner-config")
    conflict = settings_conflict(workdir, config)
    if conflict:
        raise ValueError(conflict)


def run(config: RunConfig, workdir: str | os.PathLike) -> dict | None:
    """Runs `config` into `workdir` (see the module doc); resumes what is already there.

    Returns:
      The summary (also written to summary.json) in the main process; None in the others.
    """
    workdir = Path(workdir)
    dataset = open_dataset(config)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_settings(workdir, config)
    paths = _Paths(workdir)
    units = config.units()
    mine = distributed.process_indices(len(dataset))
    pending = []
    for i in mine:
        todo = tuple(u for u in units if not paths.record(u, dataset.ids[i]).exists())
        if todo:
            pending.append((int(i), todo))
    _log.info(
        "%s: %d images x %d units in %s; %d images done before, %d to do",
        dataset,
        len(mine),
        len(units),
        workdir,
        len(mine) - len(pending),
        len(pending),
    )
    stages = _Stages(config)
    progress = _Progress(len(pending))
    needs_training = config.cnn_mode == "dataset" and any(
        pipeline.base_method(u.method) == "cnn" for _, todo in pending for u in todo
    )
    items = _load(dataset, pending, config, paths, progress)
    if needs_training:
        every = _load(dataset, [(i, tuple(units)) for i in range(len(dataset))], config, None)
        stages.train_cnn(list(every), config)
    buckets: dict[tuple, list[_Item]] = {}
    for item in items:
        bucket = buckets.setdefault(item.bucket, [])
        bucket.append(item)
        if len(bucket) == config.batch_size:
            _process(buckets.pop(item.bucket), config, stages, paths, progress)
    for bucket in buckets.values():
        _process(bucket, config, stages, paths, progress)
    distributed.barrier("jaxseg-runner-done")
    if not distributed.is_main_process():
        return None
    summary = _summarise(config, dataset, paths)
    _write_json(workdir / "summary.json", summary)
    report.write(workdir, summary)
    _log.info("wrote %s", workdir / "report.md")
    return summary


def _load(dataset, pending, config: RunConfig, paths: _Paths | None, progress=None):
    """Yields the pending images as `_Item`s; an unreadable image is logged as failed (when
    `paths` is given), counted as done by `progress`, and skipped."""
    for index, todo in pending:
        try:
            sample = dataset[index]
            bucketed, mask = pipeline.to_bucket(sample.image, pad_multiple=config.pad_multiple)
            clusters = any(pipeline.base_method(u.method) != "cnn" for u in todo)
            n_colours = pipeline.colour_size(bucketed) if clusters else None
        except Exception as error:  # noqa: BLE001 - any bad image is logged and skipped
            if paths is not None:
                for unit in todo:
                    _fail(paths, unit, dataset.ids[index], error)
            if progress is not None:
                progress.update(1)
            continue
        yield _Item(index, sample, bucketed, mask, n_colours, todo)


def _process(items, config, stages, paths, progress) -> None:
    """Segments and saves a batch; a failing batch is retried image by image."""
    try:
        results = _run_batch(items, config, stages)
    except Exception as error:  # noqa: BLE001
        if len(items) > 1:
            _log.warning("a batch failed (%s); retrying its images one by one", error)
            for item in items:
                _process([item], config, stages, paths, progress)
            return
        for unit in items[0].units:
            _fail(paths, unit, items[0].sample.image_id, error)
        progress.update(1)
        return
    units = config.units()
    for item in items:
        for unit in item.units:
            try:
                _save_unit(paths, config, item, unit, results[(item.index, unit.name)])
            except Exception as error:  # noqa: BLE001
                _fail(paths, unit, item.sample.image_id, error)
        _save_panel(paths, units, item.sample)
    progress.update(len(items))


# --------------------------------------------------------------------------- summary

# Per-image metrics averaged over images in the summary (the Kim terms are pooled instead).
_MEAN_METRICS = (
    "cluster_iou_mean",
    "cluster_iou_weighted",
    "covering",
    "covering_precision",
    "pri",
    "voi",
    "n_segments",
    "n_connected_segments",
)
_TABLE_IMAGE = "3096"  # the paper's Tables 7.1 / 7.2


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    _atomic_write(path, write)


def _summarise(config: RunConfig, dataset: data.Dataset, paths: _Paths) -> dict:
    """Assembles metrics.csv, timings.csv and the summary from the per-image records."""
    units = config.units()
    records = {u.name: {i: _read_json(paths.record(u, i)) for i in dataset.ids} for u in units}
    failures = []
    for unit in units:
        for image_id in dataset.ids:
            failure = _read_json(paths.failure(unit, image_id))
            if failure is not None and records[unit.name][image_id] is None:
                failures.append({k: failure[k] for k in ("image_id", "unit", "error")})
    scored = [r for u in units for r in records[u.name].values() if r and r["metrics"]]
    metric_names = list(scored[0]["metrics"]) if scored else []
    metric_rows, timing_rows = [], []
    for image_id in dataset.ids:
        for unit in units:
            r = records[unit.name][image_id]
            if r is None:
                continue
            k = "" if unit.k is None else unit.k
            values = [r["metrics"][m] for m in metric_names] if r["metrics"] else []
            metric_rows.append([image_id, unit.method, k, r["n_clusters"], *values])
            timing_rows.append(
                [image_id, unit.method, k, f"{r['seconds']:.6f}", r["batch_size"], r["compiled"]]
            )
    _write_csv(
        paths.workdir / "metrics.csv",
        ["image_id", "method", "k", "n_clusters", *metric_names],
        metric_rows,
    )
    _write_csv(
        paths.workdir / "timings.csv",
        ["image_id", "method", "k", "seconds", "batch_size", "compiled"],
        timing_rows,
    )
    no_truth = [r["image_id"] for r in records[units[0].name].values() if r and not r["metrics"]]
    summary = {
        "config": dataclasses.asdict(config),
        "dataset": {"name": dataset.name, "split": dataset.split, "n_images": len(dataset)},
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(),
            "jax": jax.__version__,
        },
        "units": [_unit_summary(u, records[u.name]) for u in units],
        "region_benchmark": _region_benchmarks(config, units, records, dataset.ids),
        "table_7_3": {
            image_id: {
                u.name: records[u.name][image_id]["metrics"]["cluster_iou_mean"]
                for u in units
                if records[u.name][image_id] and records[u.name][image_id]["metrics"]
            }
            for image_id in data.SAMPLE_IDS
            if image_id in dataset.ids
        },
        "cluster_tables": _cluster_tables(units, dataset, paths, records),
        "failures": failures,
        "metrics_skipped": (
            f"{len(no_truth)} images have no ground truth: their metrics were skipped"
            if no_truth
            else None
        ),
    }
    return json.loads(json.dumps(summary))  # as summary.json reads back: lists, not tuples


def _unit_summary(unit: Unit, records: dict) -> dict:
    done = [r for r in records.values() if r is not None]
    scored = [r["metrics"] for r in done if r["metrics"]]
    fresh = [r["seconds"] for r in done if not r["compiled"]]
    out = {
        "name": unit.name,
        "method": unit.method,
        "k": unit.k,
        "n_images": len(done),
        "n_scored": len(scored),
        "n_clusters_mean": float(np.mean([r["n_clusters"] for r in done])) if done else None,
        "seconds_median": float(np.median([r["seconds"] for r in done])) if done else None,
        "seconds_median_compiled_excluded": float(np.median(fresh)) if fresh else None,
        "mean": {},
        "kim_miou": {},
    }
    if scored:
        out["mean"] = {m: float(np.mean([s[m] for s in scored])) for m in _MEAN_METRICS}
        for mode in metrics.KIM_MODES:
            total = sum(s[f"kim_{mode}_sum"] for s in scored)
            out["kim_miou"][mode] = total / sum(s[f"kim_{mode}_count"] for s in scored)
    return out


def _region_benchmarks(config, units, records, ids) -> dict:
    """ODS/OIS over the K candidates, per method with several (images scored for every K)."""
    out = {}
    for method in config.methods:
        candidates = [u for u in units if u.method == method and u.k is not None]
        if len(candidates) < 2:
            continue
        rows = []
        for image_id in ids:
            found = [records[u.name][image_id] for u in candidates]
            if all(r and r["region_stats"] for r in found):
                rows.append([metrics.region_stats_from_row(r["region_stats"]) for r in found])
        if not rows:
            continue
        bench = metrics.aggregate_region_stats(rows)
        ks = [u.k for u in candidates]

        def k_at(threshold: float, ks=ks):
            return ks[int(threshold) - 1]

        out[method] = {
            "k": ks,
            "n_images": len(rows),
            "covering": bench.covering.tolist(),
            "ods_covering_k": k_at(bench.ods_covering_threshold),
            "ods_covering": bench.ods_covering,
            "ois_covering": bench.ois_covering,
            "best_covering": bench.best_covering,
            "ods_pri_k": k_at(bench.ods_pri_threshold),
            "ods_pri": bench.ods_pri,
            "ois_pri": bench.ois_pri,
            "ods_voi_k": k_at(bench.ods_voi_threshold),
            "ods_voi": bench.ods_voi,
            "ois_voi": bench.ois_voi,
        }
    return out


def _cluster_tables(units, dataset, paths, records) -> dict:
    """Tables 7.1 / 7.2: image 3096's clusters against its coarsest annotation (CNN, GMM)."""
    if _TABLE_IMAGE not in dataset.ids:
        return {}
    sample = dataset[dataset.ids.index(_TABLE_IMAGE)]
    if not sample.ground_truth:
        return {}
    counts = [len(np.unique(g[g > 0])) for g in sample.ground_truth]
    annotation = int(np.argmin(counts))
    out = {}
    for unit in units:
        if unit.method not in ("cnn", "gmm") or records[unit.name][_TABLE_IMAGE] is None:
            continue
        if unit.method in out:
            continue
        labels = read_labels(paths.labels(unit, _TABLE_IMAGE))
        clusters, best, iou = metrics.cluster_table(labels, sample.ground_truth[annotation])
        out[unit.method] = {
            "unit": unit.name,
            "image_id": _TABLE_IMAGE,
            "annotation": annotation,
            "n_gt_segments": counts[annotation],
            "clusters": clusters.tolist(),
            "best_segment": best.tolist(),
            "iou": iou.tolist(),
        }
    return out
