"""A run directory: its paths, atomic writes, the per-image records, and its lock.

  labels/<unit>/<id>.png   label map, lossless single-channel integers (8-bit, or 16-bit above
                           255 labels)
  color/<unit>/<id>.png    each segment painted in its mean colour (derived from labels)
  segments/<unit>/<id>.png each segment in a colour of its own (derived from labels)
  overlays/<unit>/<id>.png segment borders drawn over the image (derived from labels)
  ucm2/<unit>/<id>.mat     a hierarchy's ultrametric contour map, variable `ucm2`: double
                           [2h + 1, 2w + 1] in [0, 1] (BSDS 'doubleSize'); its labels/ are its
                           cut at the record's `threshold`
  networks/cnn-<hash>.msgpack  a trained dataset-mode network (`cnn.save_params`)
  panels/<id>.png          image | every unit | the first annotation (derived from labels)
  records/<unit>/<id>.json `Record`: written last, atomically; its presence marks the
                           (image, unit) done
  failed/<unit>/<id>.json  `Failure` of an (image, unit) that failed (retried on the next run)
  config.json              the label settings; a rerun must keep them
  metrics.csv, timings.csv, summary.json, report.md, summary.png, pr.png   the summary of
                           every record in the directory
  .lock                    held (fcntl.flock) by the run writing into the directory

Every file is written to `.<name>.<pid>.tmp` and renamed, so a kill leaves no partial file
under its real name; `RunDir.lock` removes the temporaries a killed run left behind.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from jaxseg import boundary

__all__ = [
    "Failure",
    "Record",
    "RunDir",
    "boundary_stats_from_row",
    "boundary_stats_to_row",
    "read_labels",
    "read_ucm",
]


@dataclasses.dataclass(frozen=True)
class Record:
    """One (image, unit) done: what metrics.csv, timings.csv and the summary are built from.

    Attributes:
      image_id, index: the image and its index in the sorted dataset.
      unit, method, k: the unit's name, its method and K candidate (None: the method picks
        its own number of labels).
      n_clusters: labels in the label map.
      metrics: `metrics.image_metrics`, or None without ground truth.
      region_stats: `metrics.region_stats_to_row` (runs with several K), else None.
      threshold: a hierarchy's cut that gave the label map and `metrics` (first a default,
        then the run's ODS threshold); None for a flat segmentation.
      ucm_region_stats: a hierarchy's region statistics at `metrics.ucm_thresholds(nthresh)`:
        {"rows": the distinct cuts' `metrics.region_stats_to_row`, "index": [nthresh] the row
        of each threshold}; else None.
      boundary_stats: `boundary_stats_to_row` of the label map (one threshold, 1) or of the
        hierarchy (the ucm thresholds); None without ground truth.
      seconds: the batch's wall time for the unit's stages divided by its images.
      batch_size: images in that batch; compiled: whether a stage compiled in that call.
    """

    image_id: str
    index: int
    unit: str
    method: str
    k: int | str | None
    n_clusters: int
    metrics: dict[str, float] | None
    region_stats: dict[str, Any] | None
    seconds: float
    batch_size: int
    compiled: bool
    threshold: float | None = None
    ucm_region_stats: dict[str, Any] | None = None
    boundary_stats: dict[str, list[float]] | None = None

    @classmethod
    def from_json(cls, obj: dict) -> Record:
        """Parses a record; the fields with defaults may be missing (older run directories)."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        if not isinstance(obj, dict) or not required <= set(obj) <= names:
            raise ValueError(f"not a record: keys {sorted(obj) if isinstance(obj, dict) else obj}")
        return cls(**obj)


def boundary_stats_to_row(stats: boundary.BoundaryStats) -> dict[str, list[float]]:
    """`stats` as JSON lists, one per field."""
    return {name: np.asarray(value).tolist() for name, value in stats._asdict().items()}


def boundary_stats_from_row(row: dict[str, list[float]]) -> boundary.BoundaryStats:
    """Inverse of `boundary_stats_to_row` (raises ValueError for a malformed row)."""
    if set(row) != set(boundary.BoundaryStats._fields):
        raise ValueError(f"not boundary stats: keys {sorted(row)}")
    return boundary.BoundaryStats(
        np.asarray(row["thresholds"], np.float64),
        *(np.asarray(row[name], np.int64) for name in boundary.BoundaryStats._fields[1:]),
    )


@dataclasses.dataclass(frozen=True)
class Failure:
    """An (image, unit) that failed: the error in one line and its traceback."""

    image_id: str
    unit: str
    error: str
    traceback: list[str]


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """A label map written by the runner, as int32 [h, w]."""
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int32)


class RunDir:
    """Paths and atomic I/O of one run directory (see the module doc)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def record_path(self, unit: str, image_id: str) -> Path:
        return self.root / "records" / unit / f"{image_id}.json"

    def failure_path(self, unit: str, image_id: str) -> Path:
        return self.root / "failed" / unit / f"{image_id}.json"

    def labels_path(self, unit: str, image_id: str) -> Path:
        return self.root / "labels" / unit / f"{image_id}.png"

    def picture_path(self, kind: str, unit: str, image_id: str) -> Path:
        """`<kind>/<unit>/<id>.png`, kind one of `visualize.PICTURES`."""
        return self.root / kind / unit / f"{image_id}.png"

    def network_path(self, config) -> Path:
        """`networks/cnn-<hash of the cnn.Config>.msgpack`: a trained dataset-mode network."""
        digest = hashlib.sha1(repr(config).encode()).hexdigest()[:12]
        return self.root / "networks" / f"cnn-{digest}.msgpack"

    def panel_path(self, image_id: str) -> Path:
        return self.root / "panels" / f"{image_id}.png"

    def ucm_path(self, unit: str, image_id: str) -> Path:
        return self.root / "ucm2" / unit / f"{image_id}.mat"

    # ------------------------------------------------------------------ writing

    def write(self, path: Path, write: Callable[[Path], Any]) -> None:
        """Calls `write(tmp_path)`, then renames the temporary file to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_text(self, path: Path, text: str) -> None:
        self.write(path, lambda tmp: tmp.write_text(text))

    def write_json(self, path: Path, obj) -> None:
        self.write_text(path, json.dumps(obj, indent=1) + "\n")

    def write_image(self, path: Path, image: Image.Image | np.ndarray) -> None:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        self.write(path, lambda tmp: image.save(tmp, format="PNG"))

    def write_labels(self, unit: str, image_id: str, labels: np.ndarray) -> None:
        dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
        self.write_image(self.labels_path(unit, image_id), labels.astype(dtype))

    def write_ucm(self, unit: str, image_id: str, ucm2: np.ndarray) -> None:
        """Writes `ucm2` (float64, as the official files hold it) to `ucm2/<unit>/<id>.mat`."""
        ucm2 = np.asarray(ucm2, np.float64)
        self.write(self.ucm_path(unit, image_id), lambda tmp: _savemat(tmp, ucm2))

    def write_csv(self, path: Path, header: list[str], rows: list[list]) -> None:
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(rows)

        self.write(path, write)

    def write_record(self, record: Record) -> None:
        self.write_json(self.record_path(record.unit, record.image_id), dataclasses.asdict(record))
        self.failure_path(record.unit, record.image_id).unlink(missing_ok=True)

    def write_failure(self, failure: Failure) -> None:
        self.write_json(
            self.failure_path(failure.unit, failure.image_id), dataclasses.asdict(failure)
        )

    # ------------------------------------------------------------------ reading

    def read_record(self, unit: str, image_id: str) -> Record | None:
        """The record of (image, unit), or None when there is none or it is unreadable."""
        return _read(self.record_path(unit, image_id), Record.from_json)

    def records(self) -> list[Record]:
        """Every readable record in the directory, sorted by (image index, unit)."""
        found = [
            _read(path, Record.from_json)
            for path in sorted((self.root / "records").glob("*/*.json"))
        ]
        return sorted((r for r in found if r is not None), key=lambda r: (r.index, r.unit))

    def failures(self) -> list[Failure]:
        """Every failure not superseded by a record, sorted by (image, unit)."""
        found = [
            _read(path, lambda obj: Failure(**obj))
            for path in sorted((self.root / "failed").glob("*/*.json"))
        ]
        return [
            f for f in found if f is not None and not self.record_path(f.unit, f.image_id).exists()
        ]

    def read_json(self, path: Path):
        return _read(path, lambda obj: obj)

    def check_settings(self, settings: dict) -> None:
        """Writes config.json in a new run directory, or checks that a rerun keeps its
        settings (ValueError naming those that changed)."""
        path = self.root / "config.json"
        saved = self.read_json(path)
        if saved is None:
            self.write_json(path, settings)
            return
        changed = sorted(
            k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k)
        )
        if changed:
            diff = ", ".join(f"{k} {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{self.root} holds a run with other settings ({diff}); choose another output_dir"
            )

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds `<root>/.lock` for the duration; a second run into the directory is refused
        with a ValueError (it does not wait), as is a directory that cannot be written.
        Removes the temporaries a killed run left behind."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / ".lock", "a+")  # noqa: SIM115 - closed below
        except OSError as error:
            raise ValueError(f"cannot write to {self.root}: {error.strerror or error}") from None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(
                    f"another run is writing into {self.root} (it holds {self.root / '.lock'}); "
                    "wait for it to finish or choose another output_dir"
                ) from None
            for tmp in self.root.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def read_ucm(path: str | os.PathLike) -> np.ndarray:
    """The `ucm2` of a file written by `RunDir.write_ucm`, float64 `[2h + 1, 2w + 1]`."""
    return np.asarray(scipy.io.loadmat(path)["ucm2"], np.float64)


def _savemat(path: Path, ucm2: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: savemat would append .mat to the tmp name
        scipy.io.savemat(f, {"ucm2": ucm2})


def _read(path: Path, parse):
    """parse(JSON of `path`), or None when it is missing or unreadable."""
    try:
        return parse(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
