"""Berkeley Segmentation Data Set: images, human ground truth, datasets by name.

Datasets are lazy: `load_dataset` only lists files; indexing reads one image (and its
ground truth) on demand. Ground-truth label maps keep the official BSDS values: segments
are numbered from 1 and 0 would mean "unlabelled" (the official benchmark ignores it).

Data location: the folder that holds `BSDS500/` (laid out as in the official tarball's
`BSR/BSDS500/data/`: `images/{train,val,test}/<id>.jpg`, `groundTruth/{split}/<id>.mat`),
passed as `data_dir` or set in `$JAXSEG_DATA_DIR`. The `samples` dataset ships inside the
package and needs neither.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import scipy.io
from PIL import Image

__all__ = [
    "BSDS500_URL",
    "DATA_DIR_ENV",
    "IMAGE_SUFFIXES",
    "SAMPLE_IDS",
    "SPLITS",
    "Dataset",
    "Sample",
    "download_bsds500",
    "load_dataset",
    "read_ground_truth",
    "read_image",
    "read_seg_file",
    "resolve_data_dir",
]

DATA_DIR_ENV = "JAXSEG_DATA_DIR"

# Where the Berkeley group publishes the official BSDS500 tarball.
BSDS500_URL = (
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
)

# The five images of the paper's Table 7.3, in the table's order (the `samples` dataset).
_HOW_TO_GET = (
    "to get BSDS500 run `jaxseg-download --data_dir=DIR` (or `python -m jaxseg.download`; "
    "--url=PATH for a local BSR_bsds500.tgz)"
)
SAMPLE_IDS = ("25098", "3096", "35058", "22090", "23025")

# Splits of each named dataset; split=None means all of them.
SPLITS = {
    "bsds500": ("train", "val", "test"),
    "bsds300": ("train", "test"),
    "samples": (),
}

# BSDS300's own train/test splits are BSDS500's train/val.
_BSDS300_SPLITS = {"train": "train", "test": "val"}

# File suffixes (lower-cased) a plain folder dataset reads as images; other files are ignored.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

_SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# Prefix of the images and ground truth inside the official tarball.
_TARBALL_ROOT = ("BSR", "BSDS500", "data")
_TARBALL_FOLDERS = ("images", "groundTruth")

_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_MAT_ERRORS = (OSError, ValueError, EOFError, zlib.error, scipy.io.matlab.MatReadError)


class Sample(NamedTuple):
    """One image and its human segmentations.

    Attributes:
      image_id: the file name without suffix, e.g. "3096".
      image: uint8 RGB image [H, W, 3].
      ground_truth: int32 label maps [H, W], one per human annotation, with the official
        label values (segments 1..n; 0 means unlabelled). Empty when the image has no
        ground truth (BSDS500 test split without `groundTruth/test/`, plain folders).
    """

    image_id: str
    image: np.ndarray
    ground_truth: tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True, repr=False)
class Dataset(Sequence):
    """A lazy, ordered sequence of `Sample`s; indexing reads one image from disk.

    Images are ordered by plain sorted file name (string order, not numeric: "100075.jpg"
    comes before "2092.jpg"), the order of the official benchmark's `eval_cover_img.txt`.
    Slicing returns a smaller `Dataset`.

    Attributes:
      name: "bsds500", "bsds300", "samples", or the folder's name for a plain folder.
      split: the split, or None for the whole dataset.
      ids: image ids, one per image.
      image_paths: image files, one per image.
      ground_truth_paths: `.mat` ground-truth files, one per image; None where there is none.
    """

    name: str
    split: str | None
    ids: tuple[str, ...]
    image_paths: tuple[Path, ...]
    ground_truth_paths: tuple[Path | None, ...]

    def __post_init__(self):
        if not len(self.ids) == len(self.image_paths) == len(self.ground_truth_paths):
            raise ValueError(
                f"ids ({len(self.ids)}), image_paths ({len(self.image_paths)}) and "
                f"ground_truth_paths ({len(self.ground_truth_paths)}) differ in length"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | slice) -> Sample | Dataset:
        if isinstance(index, slice):
            return dataclasses.replace(
                self,
                ids=self.ids[index],
                image_paths=self.image_paths[index],
                ground_truth_paths=self.ground_truth_paths[index],
            )
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return _read_sample(self.ids[i], self.image_paths[i], self.ground_truth_paths[i])

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, split={self.split!r}, {len(self)} images)"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds `BSDS500/`: `data_dir`, else `$JAXSEG_DATA_DIR`.

    Raises:
      FileNotFoundError: neither is set, or the folder or its `BSDS500/` does not exist.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        if data_dir is None:
            raise FileNotFoundError(
                f"no data directory: pass data_dir (--data_dir) or set {DATA_DIR_ENV} to the "
                f"folder that holds BSDS500/; {_HOW_TO_GET}"
            )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist; {_HOW_TO_GET}")
    if not (root / "BSDS500").is_dir():
        raise FileNotFoundError(
            f"{root / 'BSDS500'} not found: data_dir (or {DATA_DIR_ENV}) must name the folder "
            f"that holds BSDS500/; {_HOW_TO_GET}"
        )
    return root


def load_dataset(
    name: str | os.PathLike,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Lists a dataset's images (and ground truth) without reading them.

    Args:
      name: "samples" (embedded in the package: the five images of the paper's Table 7.3
        with ground truth; needs no data_dir), "bsds500" (splits train/val/test),
        "bsds300" (the 300 BSDS500 train+val images; its train = BSDS500 train, its
        test = BSDS500 val), or the path of a plain folder of images (no ground truth;
        ids are the file names without suffix). A folder named like a dataset needs a
        path such as "./samples". With split=None, the images of all splits are merged
        into one file-name order.
      split: one of the dataset's splits (`SPLITS[name]`); None for all its images.
      data_dir: the folder holding `BSDS500/` (see `resolve_data_dir`); bsds500/bsds300 only.

    Raises:
      ValueError: unknown name or split, or a folder without images.
      FileNotFoundError: a missing data, image or ground-truth folder (the ground truth of
        bsds500's test split is optional), or an image without its ground-truth file.
    """
    if isinstance(name, str) and name in SPLITS:
        splits = SPLITS[name]
        if split is not None and split not in splits:
            choices = ", ".join(repr(s) for s in (*splits, None))
            raise ValueError(f"unknown split {split!r} of {name}: choose from {choices}")
        if name == "samples":
            return _bsds_dataset("samples", None, _SAMPLES_DIR, "")
        bsds500 = resolve_data_dir(data_dir) / "BSDS500"
        if name == "bsds300":
            chosen = (split,) if split is not None else tuple(_BSDS300_SPLITS)
            return _bsds_dataset(name, split, bsds500, *(_BSDS300_SPLITS[s] for s in chosen))
        return _bsds_dataset(name, split, bsds500, *((split,) if split else splits))
    folder = Path(name).expanduser()
    looks_like_a_name = isinstance(name, str) and "/" not in name and os.sep not in name
    if looks_like_a_name and not folder.exists():
        raise ValueError(
            f"unknown dataset {str(name)!r}: choose from {', '.join(SPLITS)}, or the path of "
            "a folder of images"
        )
    if split is not None:
        raise ValueError(f"a folder dataset has no splits, got split={split!r}")
    return _folder_dataset(folder)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB [H, W, 3].

    Grayscale and palette images are expanded to RGB, alpha is dropped (not composited),
    16-bit grayscale is scaled to 8 bits; EXIF orientation is not applied (as MATLAB's
    imread, which the official benchmark uses).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a readable image, or has 32-bit integer/float pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    try:
        with Image.open(path) as image:
            image.load()
    except _PIL_ERRORS as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    if image.mode.startswith("I;16"):
        gray = np.rint(np.asarray(image) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        raise ValueError(f"image {path} has 32-bit {image.mode!r} pixels: convert it to 8 bits")
    try:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    except ValueError as err:
        raise ValueError(f"cannot convert image {path} from {image.mode!r} to RGB: {err}") from err


def read_ground_truth(path: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """Reads an official BSDS500 ground-truth `.mat` file.

    The file holds a cell `groundTruth`, one struct per human annotation, each with a
    `Segmentation` label map (segments 1..n; 0 would mean unlabelled).

    Returns:
      int32 label maps [H, W], one per annotation, values as stored.

    Raises:
      FileNotFoundError: no such file.
      ValueError: unreadable file, no `groundTruth` cell, an annotation without
        `Segmentation`, non-integer or negative labels, or annotations of different sizes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {path} not found")
    try:
        contents = scipy.io.loadmat(path)
    except _MAT_ERRORS as err:
        raise ValueError(f"cannot read ground-truth file {path}: {err}") from err
    if "groundTruth" not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"{path} has no 'groundTruth' variable (found {found})")
    cell = np.asarray(contents["groundTruth"])
    if cell.dtype != object or cell.size == 0:
        raise ValueError(f"{path}: 'groundTruth' is not a non-empty cell of structs")
    label_maps = []
    for n, entry in enumerate(cell.flat, start=1):
        entry = np.asarray(entry)
        if entry.dtype.names is None or "Segmentation" not in entry.dtype.names:
            raise ValueError(f"{path}: annotation {n} has no 'Segmentation' field")
        field = entry["Segmentation"]
        if field.size != 1:
            raise ValueError(f"{path}: annotation {n} has {field.size} 'Segmentation' values")
        label_maps.append(_as_label_map(np.asarray(field.item()), path, n))
    shapes = sorted({m.shape for m in label_maps})
    if len(shapes) > 1:
        raise ValueError(f"{path}: annotations have different sizes {shapes}")
    return tuple(label_maps)


def read_seg_file(path: str | os.PathLike) -> np.ndarray:
    """Reads a BSDS300 `.seg` segmentation as an int32 label map [H, W].

    Format: header lines up to a line `data` (the header gives `width W` and `height H`,
    optionally `segments N`), then one line `segment row col_start col_end` per run of
    pixels; all 0-based, end column inclusive. As the official `readSeg.m`, the labels
    returned are segment + 1 (1..n, like the BSDS500 `.mat` ground truth).

    Raises:
      FileNotFoundError: no such file.
      ValueError: no `data` line, missing/invalid width or height, a malformed run, a run
        out of range, or pixels covered by no run or by several.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation file {path} not found")
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    header = {}
    for number, line in enumerate(lines):
        fields = line.split()
        if fields == ["data"]:
            break
        if len(fields) == 2 and fields[0] in ("width", "height", "segments"):
            header[fields[0]] = _parse_int(fields[1], path, number + 1)
    else:
        raise ValueError(f"{path}: no 'data' line ends the header")
    for key in ("width", "height"):
        if header.get(key, 0) <= 0:
            raise ValueError(f"{path}: header needs a positive '{key}'")
    width, height = header["width"], header["height"]
    runs = _parse_runs(lines[number + 1 :], path, first_line=number + 2)
    segment, row, start, end = runs.T
    checks = {
        "negative segment": segment < 0,
        f"row outside 0..{height - 1}": (row < 0) | (row >= height),
        f"columns outside 0..{width - 1} or end before start": (start < 0)
        | (end < start)
        | (end >= width),
    }
    if "segments" in header:
        checks[f"segment >= segments ({header['segments']})"] = segment >= header["segments"]
    for problem, bad in checks.items():
        if bad.any():
            line = number + 2 + int(np.argmax(bad))
            raise ValueError(f"{path}, line {line}: {problem}")
    lengths = end - start + 1
    if lengths.sum() != width * height:
        raise ValueError(
            f"{path}: runs cover {lengths.sum()} pixels (counting repeats) but the image has "
            f"{width * height}"
        )
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pixels = np.repeat(row * width + start, lengths) + np.arange(lengths.sum()) - offsets
    if np.bincount(pixels, minlength=width * height).max() > 1:
        raise ValueError(f"{path}: runs overlap (some pixels covered twice, others never)")
    labels = np.empty(width * height, np.int32)
    labels[pixels] = np.repeat(segment + 1, lengths)
    return labels.reshape(height, width)


def download_bsds500(url: str, dest_dir: str | os.PathLike) -> Path:
    """Downloads the official BSDS500 tarball and unpacks it as `dest_dir/BSDS500/`.

    Fetches `url` with urllib (so `file://` URLs work; the official one is `BSDS500_URL`),
    and copies the tarball's `BSR/BSDS500/data/{images,groundTruth}/` to
    `dest_dir/BSDS500/{images,groundTruth}/`, ignoring its other folders. Extraction is
    safe: any member with an absolute path or `..` aborts it, links and special files
    under those folders are refused, and nothing is left behind on failure.

    Returns:
      `dest_dir`, ready to pass as `data_dir`.

    Raises:
      FileExistsError: `dest_dir/BSDS500` already exists.
      ValueError: the archive is not a tarball laid out as `BSR/BSDS500/data/images/...`,
        or holds an unsafe member.
    """
    dest = Path(dest_dir).expanduser()
    target = dest / "BSDS500"
    if target.exists():
        raise FileExistsError(f"{target} already exists: remove it or choose another dest_dir")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".BSDS500-", dir=dest))
    try:
        archive = staging / "download.tgz"
        with urllib.request.urlopen(url) as response, open(archive, "wb") as file:
            shutil.copyfileobj(response, file)
        unpacked = staging / "BSDS500"
        _extract_bsds500(archive, unpacked, url)
        unpacked.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _bsds_dataset(name: str, split: str | None, root: Path, *splits: str) -> Dataset:
    """Images `root/images/<s>/*.jpg` with ground truth `root/groundTruth/<s>/<id>.mat`.

    An empty split name `""` reads `root/images/*.jpg` (the embedded samples). Every image
    needs its ground-truth file, except in the test split, where a missing
    `groundTruth/test/` folder means no ground truth (the official test GT may be absent).
    """
    entries = []
    for s in splits:
        image_dir, truth_dir = root / "images" / s, root / "groundTruth" / s
        for folder in (image_dir, truth_dir) if s != "test" else (image_dir,):
            if not folder.is_dir():
                raise FileNotFoundError(f"folder {folder} not found")
        has_truth = truth_dir.is_dir()
        for image_path in image_dir.glob("*.jpg"):
            truth_path = truth_dir / f"{image_path.stem}.mat" if has_truth else None
            if has_truth and not truth_path.is_file():
                raise FileNotFoundError(
                    f"ground-truth file {truth_path} for image {image_path} not found"
                )
            entries.append((image_path.name, image_path, truth_path))
    return _dataset(name, split, entries)


def _folder_dataset(folder: Path) -> Dataset:
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} not found")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    entries = [
        (path.name, path, None)
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    stems = [path.stem for _, path, _ in entries]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ValueError(f"folder {folder} has several images with the same id: {repeated}")
    return _dataset(folder.resolve().name, None, entries)


def _dataset(name: str, split: str | None, entries: list) -> Dataset:
    """A Dataset of (file name, image path, ground-truth path) entries sorted by file name."""
    entries = sorted(entries, key=lambda entry: entry[0])
    return Dataset(
        name=name,
        split=split,
        ids=tuple(path.stem for _, path, _ in entries),
        image_paths=tuple(path for _, path, _ in entries),
        ground_truth_paths=tuple(truth for _, _, truth in entries),
    )


def _read_sample(image_id: str, image_path: Path, truth_path: Path | None) -> Sample:
    image = read_image(image_path)
    ground_truth = () if truth_path is None else read_ground_truth(truth_path)
    for label_map in ground_truth:
        if label_map.shape != image.shape[:2]:
            raise ValueError(
                f"ground truth {truth_path} is {label_map.shape[0]}x{label_map.shape[1]} but "
                f"image {image_path} is {image.shape[0]}x{image.shape[1]}"
            )
    return Sample(image_id, image, ground_truth)


def _as_label_map(segmentation: np.ndarray, path: Path, n: int) -> np.ndarray:
    """Validates one annotation's label map and returns it as int32."""
    where = f"{path}: annotation {n}"
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise ValueError(f"{where} is not a 2-D label map (shape {segmentation.shape})")
    if segmentation.dtype.kind == "f":
        if not np.all(np.isfinite(segmentation) & (segmentation == np.round(segmentation))):
            raise ValueError(f"{where} has non-integer labels")
    elif segmentation.dtype.kind not in "iu":
        raise ValueError(f"{where} has labels of type {segmentation.dtype}, not integers")
    if segmentation.min() < 0 or segmentation.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{where} has labels outside 0..2**31-1")
    return segmentation.astype(np.int32)


def _parse_int(text: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: {text!r} is not an integer") from None


def _parse_runs(lines: list[str], path: Path, *, first_line: int) -> np.ndarray:
    """The `segment row col_start col_end` lines as an int64 array [n_runs, 4]."""
    runs = []
    for number, line in enumerate(lines, start=first_line):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise ValueError(f"{path}, line {number}: expected 'segment row col_start col_end'")
        runs.append([_parse_int(field, path, number) for field in fields])
    if not runs:
        raise ValueError(f"{path}: no pixel runs after the 'data' line")
    return np.array(runs, dtype=np.int64)


def _extract_bsds500(archive: Path, target: Path, source: str) -> None:
    """Copies BSR/BSDS500/data/{images,groundTruth}/... of `archive` to `target`."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{source} is not a tar archive: {err}") from err
    with tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if PurePosixPath(member.name).is_absolute() or ".." in parts:
                raise ValueError(f"{source}: unsafe path {member.name!r} in the archive")
            root, rest = parts[: len(_TARBALL_ROOT)], parts[len(_TARBALL_ROOT) :]
            if root != _TARBALL_ROOT or not rest or rest[0] not in _TARBALL_FOLDERS:
                continue
            if member.isdir():
                continue
            if not member.isfile():
                raise ValueError(f"{source}: {member.name!r} is a link or special file")
            path = target.joinpath(*rest)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (target / "images").is_dir():
        raise ValueError(f"{source} has no {'/'.join(_TARBALL_ROOT)}/images/ folder")
