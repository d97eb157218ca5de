"""The BSDS benchmarks as a command: a Python replacement for the official MATLAB code.

  python -m jaxseg.evaluate --input DIR --gt DIR --out DIR [--kind K] [--nthresh N] [--workers W]

Reproduces the official `allBench.m` (`--kind segmentation`, the default: region and boundary
benchmarks) and `boundaryBench.m` (`--kind boundary`): segmentation covering, probabilistic Rand
index and variation of information (`regionBench.m` + `collect_eval_reg.m`), and boundary
precision, recall and F at ODS and OIS with AP (`evaluation_bdry_image.m` +
`collect_eval_bdry.m`, see `jaxseg.boundary`). `--input` holds one result per image, named
`<id>.mat` or `<id>.png`:
  * `.mat` with a cell `segs` of official label maps (1.., 0 = unlabelled): one candidate per
    entry, thresholds 1..n (`--nthresh` is ignored, as the official code does);
  * `.mat` with a double-size ultrametric contour map `ucm2`: candidates at the `--nthresh`
    thresholds `linspace(1/(n+1), n/(n+1), n)`;
  * `.png`, `--kind segmentation`: one single-channel jaxseg label map (0-based; shifted to
    official labels), one candidate; its boundaries are its label changes;
  * `.png`, `--kind boundary`: a soft boundary map, pb = value / 255 (8-bit) or / 65535
    (16-bit), thresholded at the `--nthresh` thresholds; boundary benchmark only.
`--gt` holds the official `<id>.mat` ground truth (boundaries from `groundTruth{i}.Boundaries`,
or from the segmentation where that field is missing). `--out` receives the official files:
`eval_cover.txt`, `eval_cover_img.txt`, `eval_cover_th.txt`, `eval_RI_VOI.txt`,
`eval_RI_VOI_thr.txt` (region) and `eval_bdry.txt`, `eval_bdry_img.txt`, `eval_bdry_thr.txt`
(boundary); images are numbered in the official order (sorted `<id>_ev1.txt` names). Every
file is checked before any work; a bad setting or file prints one `error: ...` line and exits
non-zero. One image is scored per worker process; progress goes to stderr.
"""

import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io
from absl import app, flags
from PIL import Image

from jaxseg import boundary, metrics
from jaxseg.data import read_ground_truth

__all__ = [
    "KINDS",
    "Evaluation",
    "check_files",
    "evaluate_folder",
    "evaluate_image",
    "main",
    "read_boundary_candidates",
    "read_candidates",
    "read_ground_truth_boundaries",
    "result_files",
    "run",
    "write_boundary_benchmark",
    "write_region_benchmark",
]

KINDS = ("segmentation", "boundary")
_SUFFIXES = (".mat", ".png")
_PNG_MODES = ("L", "I;16", "I", "P")
_PNG_SCALES = {"L": 255.0, "I;16": 65535.0}
_MAT_ERRORS = (OSError, ValueError, TypeError, EOFError, scipy.io.matlab.MatReadError)


def read_candidates(path, *, nthresh: int = 99) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reads one result file as candidate segmentations in official labels.

    Args:
      path: `.mat` file with a cell `segs` or a map `ucm2`, or a `.png` label map (0-based).
      nthresh: number of `ucm2` thresholds (unused for `segs` and `.png`).

    Returns:
      `(thresholds [n], maps)`: the candidates' parameters (1..n for `segs` and `.png`) and n
      integer label maps `[H, W]` (1.., 0 = unlabelled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file {path} not found")
    if path.suffix == ".png":
        with Image.open(path) as image:
            if image.mode not in _PNG_MODES:
                raise ValueError(f"{path}: a label map must be single-channel, not {image.mode}")
            labels = np.asarray(image).astype(np.int64)
        return np.ones(1), [labels + 1]
    if path.suffix != ".mat":
        raise ValueError(f"{path}: expected a .mat or .png result file")
    try:
        contents = scipy.io.loadmat(path)
    except _MAT_ERRORS as err:
        raise ValueError(f"cannot read result file {path}: {err}") from err
    if "segs" in contents:
        segs = [np.asarray(s) for s in np.asarray(contents["segs"]).ravel()]
        if not segs:
            raise ValueError(f"{path}: 'segs' is an empty cell")
        for i, seg in enumerate(segs, start=1):
            # MATLAB often stores label maps as doubles; integral values are labels.
            if not np.issubdtype(seg.dtype, np.integer) and not np.all(np.mod(seg, 1) == 0):
                raise ValueError(f"{path}: segs{{{i}}} holds non-integer labels")
        return np.arange(1.0, len(segs) + 1), [s.astype(np.int64) for s in segs]
    if "ucm2" in contents:
        ucm2 = np.asarray(contents["ucm2"], dtype=np.float64)
        thresholds = metrics.ucm_thresholds(nthresh)
        return thresholds, [metrics.ucm_segmentation(ucm2, t) for t in thresholds]
    found = sorted(k for k in contents if not k.startswith("__"))
    raise ValueError(f"{path} has neither 'segs' nor 'ucm2' (found {found})")


def read_boundary_candidates(
    path, *, nthresh: int = 99, kind: str = "segmentation"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reads one result file as candidate boundary maps (before thinning).

    Args:
      path: `.mat` file with a cell `segs` or a map `ucm2`, or a `.png` (a label map for
        `kind="segmentation"`, a soft boundary map for `kind="boundary"`).
      nthresh: number of thresholds of `ucm2` maps and soft boundary maps.
      kind: how to read `.png` files, one of `KINDS`.

    Returns:
      `(thresholds [n], maps)`: n bool maps `[H, W]`.
    """
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    if path.suffix == ".png" and kind == "boundary":
        if not path.is_file():
            raise FileNotFoundError(f"result file {path} not found")
        with Image.open(path) as image:
            if image.mode not in _PNG_SCALES:
                raise ValueError(
                    f"{path}: a boundary map must be 8- or 16-bit greyscale, not {image.mode}"
                )
            pb = np.asarray(image, dtype=np.float64) / _PNG_SCALES[image.mode]
        thresholds = metrics.ucm_thresholds(nthresh)
        return thresholds, boundary.threshold_maps(pb, thresholds)
    if path.suffix == ".mat":
        try:
            contents = scipy.io.loadmat(path)
        except _MAT_ERRORS as err:
            raise ValueError(f"cannot read result file {path}: {err}") from err
        if "ucm2" in contents and "segs" not in contents:
            try:
                pb = boundary.ucm_boundary_map(contents["ucm2"])
                thresholds = metrics.ucm_thresholds(nthresh)
                return thresholds, boundary.threshold_maps(pb, thresholds)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from err
    thresholds, label_maps = read_candidates(path, nthresh=nthresh)
    return thresholds, [boundary.seg_boundaries(m) for m in label_maps]


def read_ground_truth_boundaries(path) -> tuple[np.ndarray, ...]:
    """The annotations' boundary maps of an official ground-truth file: bool `[H, W]` each.

    `groundTruth{i}.Boundaries` where present, else the official construction from the
    segmentation (`thin(seg_boundaries(Segmentation))`, which equals the stored field on every
    official file we checked).
    """
    path = Path(path)
    label_maps = read_ground_truth(path)  # validates the file and its segmentations
    cell = np.asarray(scipy.io.loadmat(path)["groundTruth"])
    maps = []
    for entry, labels in zip(cell.flat, label_maps, strict=True):
        entry = np.asarray(entry)
        if "Boundaries" in entry.dtype.names:
            bdry = np.asarray(entry["Boundaries"].item())
            if bdry.shape != labels.shape:
                raise ValueError(
                    f"{path}: Boundaries of shape {bdry.shape}, Segmentation {labels.shape}"
                )
            maps.append(bdry != 0)
        else:
            maps.append(boundary.thin(boundary.seg_boundaries(labels)))
    return tuple(maps)


def evaluate_image(
    result_path,
    gt_path,
    *,
    nthresh: int = 99,
    kind: str = "segmentation",
    region: bool = True,
    bdry: bool = True,
    max_dist: float = boundary.MAX_DIST,
    thin: bool = True,
) -> tuple[np.ndarray, list[metrics.RegionStats] | None, boundary.BoundaryStats | None]:
    """Scores one result file: `(thresholds [n], n RegionStats or None, BoundaryStats or None)`.

    `region` and `bdry` select the benchmarks (`kind="boundary"` has no region benchmark);
    `max_dist` and `thin` are the official `maxDist` and `thinpb` of the boundary benchmark.
    """
    thresholds, region_stats, boundary_stats = None, None, None
    if region:
        if kind == "boundary":
            raise ValueError("soft boundary maps (kind 'boundary') have no region benchmark")
        thresholds, candidates = read_candidates(result_path, nthresh=nthresh)
        ground_truth = read_ground_truth(gt_path)
        try:
            region_stats = [
                metrics.region_stats(c, ground_truth, official_labels=True) for c in candidates
            ]
        except ValueError as err:
            raise ValueError(f"{result_path}: {err}") from err
    if bdry:
        thresholds, candidates = read_boundary_candidates(result_path, nthresh=nthresh, kind=kind)
        try:
            boundary_stats = boundary.boundary_stats(
                candidates,
                read_ground_truth_boundaries(gt_path),
                thresholds=thresholds,
                max_dist=max_dist,
                thin_candidates=thin,
            )
        except ValueError as err:
            raise ValueError(f"{result_path}: {err}") from err
    if thresholds is None:
        raise ValueError("no benchmark selected: set region and/or bdry")
    return thresholds, region_stats, boundary_stats


def result_files(input_dir, gt_dir) -> list[tuple[Path, Path]]:
    """`(result, ground truth)` path pairs in the official image order.

    The official code lists its `<id>_ev1.txt` / `<id>_ev2.txt` files sorted by name, so ids
    sort as `<id>_ev1.txt` (e.g. "20180" before "2018"; both suffixes give the same order).
    """
    input_dir, gt_dir = Path(input_dir), Path(gt_dir)
    for folder in (input_dir, gt_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} not found")
    results = sorted(
        (p for p in input_dir.iterdir() if p.suffix in _SUFFIXES and p.is_file()),
        key=lambda p: p.stem + "_ev1.txt",
    )
    if not results:
        raise FileNotFoundError(f"no .mat or .png results in {input_dir}")
    stems = [p.stem for p in results]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"{input_dir}: ids with both .mat and .png results: {duplicates}")
    pairs = [(p, gt_dir / f"{p.stem}.mat") for p in results]
    missing = [str(g) for _, g in pairs if not g.is_file()]
    if missing:
        raise FileNotFoundError(f"ground truth missing for {len(missing)} results: {missing}")
    return pairs


def check_files(pairs: Sequence[tuple[Path, Path]], *, kind: str = "segmentation") -> None:
    """Cheap checks of every file before any work: readable, holding what it should.

    Raises:
      ValueError: naming the first bad file (empty, unreadable, wrong variables or image mode).
    """
    for result_path, gt_path in pairs:
        for path, wanted in ((result_path, ("segs", "ucm2")), (gt_path, ("groundTruth",))):
            if path.stat().st_size == 0:
                raise ValueError(f"{path} is an empty file")
            if path.suffix == ".png":
                try:
                    with Image.open(path) as image:
                        mode = image.mode
                except OSError as err:
                    raise ValueError(f"cannot read image {path}: {err}") from err
                modes = _PNG_SCALES if kind == "boundary" else _PNG_MODES
                if mode not in modes:
                    raise ValueError(f"{path}: image mode {mode} is not one of {tuple(modes)}")
                continue
            try:
                names = [name for name, _, _ in scipy.io.whosmat(path)]
            except _MAT_ERRORS as err:
                raise ValueError(f"cannot read {path}: {err}") from err
            if not any(name in names for name in wanted):
                raise ValueError(f"{path} has none of {list(wanted)} (found {sorted(names)})")


class Evaluation(NamedTuple):
    """What `evaluate_folder` measured.

    Attributes:
      ids: image ids in the official order.
      thresholds: `[n]` candidate parameters.
      region: the `metrics.RegionBenchmark`, or None when not run.
      boundary: the `boundary.BoundaryBenchmark`, or None when not run.
    """

    ids: list[str]
    thresholds: np.ndarray
    region: metrics.RegionBenchmark | None
    boundary: boundary.BoundaryBenchmark | None


def _evaluate_job(job: tuple[int, Path, Path, dict]):
    index, result_path, gt_path, options = job
    return index, evaluate_image(result_path, gt_path, **options)


def evaluate_folder(
    input_dir,
    gt_dir,
    *,
    nthresh: int = 99,
    kind: str = "segmentation",
    region: bool = True,
    bdry: bool = True,
    max_dist: float = boundary.MAX_DIST,
    thin: bool = True,
    workers: int | None = None,
    official_rounding: bool = True,
    progress: bool = True,
) -> Evaluation:
    """Runs the region and/or boundary benchmark on a folder of results.

    Args:
      input_dir: results, one `<id>.mat` or `<id>.png` per image (see the module docstring).
      gt_dir: official ground truth `<id>.mat` for every result.
      nthresh: number of thresholds for `ucm2` results and soft boundary maps.
      kind: "segmentation" (`.png` = label maps) or "boundary" (`.png` = soft boundary maps;
        no region benchmark).
      region, bdry: run the region / boundary benchmark.
      max_dist, thin: the boundary benchmark's `maxDist` and `thinpb`.
      workers: processes scoring one image each; defaults to every core; 1 runs in-process.
      official_rounding: round per-image statistics to 6 significant digits as the official
        code does (see `metrics.aggregate_region_stats`), for byte-identical output files.
      progress: print one line per finished image to stderr.

    Returns:
      An `Evaluation`.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    if nthresh < 1:
        raise ValueError(f"nthresh must be positive, got {nthresh}")
    region = region and kind != "boundary"
    if not (region or bdry):
        raise ValueError("no benchmark to run")
    pairs = result_files(input_dir, gt_dir)
    check_files(pairs, kind=kind)
    workers = min(workers or os.cpu_count() or 1, len(pairs))
    options = dict(
        nthresh=nthresh, kind=kind, region=region, bdry=bdry, max_dist=max_dist, thin=thin
    )
    jobs = [(i, r, g, options) for i, (r, g) in enumerate(pairs)]
    scored: list = [None] * len(jobs)
    # "spawn": forking a process that has imported JAX can deadlock.
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        outputs = pool.imap_unordered(_evaluate_job, jobs) if pool else map(_evaluate_job, jobs)
        for done, (index, output) in enumerate(outputs, start=1):
            scored[index] = output
            if progress:
                print(f"[{done}/{len(jobs)}] {pairs[index][0].name}", file=sys.stderr, flush=True)
    finally:
        if pool:
            pool.terminate()
    thresholds = scored[0][0]
    for (result_path, _), (image_thresholds, _, _) in zip(pairs, scored, strict=True):
        if not np.array_equal(image_thresholds, thresholds):
            raise ValueError(
                f"{result_path} has {len(image_thresholds)} candidates, "
                f"{pairs[0][0]} has {len(thresholds)}: every image needs the same thresholds"
            )
    region_benchmark = boundary_benchmark = None
    if region:
        region_benchmark = metrics.aggregate_region_stats(
            [s for _, s, _ in scored], thresholds, official_rounding=official_rounding
        )
    if bdry:
        boundary_benchmark = boundary.aggregate_boundary_stats(
            [s for _, _, s in scored], official_rounding=official_rounding
        )
    return Evaluation([p.stem for p, _ in pairs], thresholds, region_benchmark, boundary_benchmark)


def _lines(rows: Sequence[Sequence[float]], formats: str) -> str:
    return "".join(formats % tuple(row) + "\n" for row in rows)


def write_region_benchmark(benchmark: metrics.RegionBenchmark, out_dir) -> list[Path]:
    """Writes the five official region-benchmark files (`%10g` columns) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = benchmark
    n_images = len(b.image_covering)
    texts = {
        "eval_cover.txt": _lines(
            [[b.ods_covering_threshold, b.ods_covering, b.ois_covering, b.best_covering]],
            "%10g %10g %10g %10g",
        ),
        "eval_cover_img.txt": _lines(
            zip(
                range(1, n_images + 1),
                b.image_threshold,
                b.image_covering,
                b.image_precision,
                strict=True,
            ),
            "%10d %10g %10g %10g",
        ),
        "eval_cover_th.txt": _lines(zip(b.thresholds, b.covering, strict=True), "%10g %10g"),
        "eval_RI_VOI.txt": _lines(
            [
                [
                    b.ods_pri_threshold,
                    b.ods_pri,
                    b.ois_pri,
                    b.ods_voi_threshold,
                    b.ods_voi,
                    b.ois_voi,
                ]
            ],
            "%10g %10g %10g %10g %10g %10g",
        ),
        "eval_RI_VOI_thr.txt": _lines(
            zip(b.thresholds, b.pri, b.voi, strict=True), "%10g %10g %10g"
        ),
    }
    paths = []
    for name, text in texts.items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths


def write_boundary_benchmark(benchmark: boundary.BoundaryBenchmark, out_dir) -> list[Path]:
    """Writes the three official boundary-benchmark files (`%10g` columns) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b = benchmark
    n_images = len(b.image_f)
    texts = {
        "eval_bdry.txt": _lines(
            [
                [
                    b.ods_threshold,
                    b.ods_recall,
                    b.ods_precision,
                    b.ods_f,
                    b.ois_recall,
                    b.ois_precision,
                    b.ois_f,
                    b.ap,
                ]
            ],
            " ".join(["%10g"] * 8),
        ),
        "eval_bdry_img.txt": _lines(
            zip(
                range(1, n_images + 1),
                b.image_threshold,
                b.image_recall,
                b.image_precision,
                b.image_f,
                strict=True,
            ),
            "%10d %10g %10g %10g %10g",
        ),
        "eval_bdry_thr.txt": _lines(
            zip(b.thresholds, b.recall, b.precision, b.f, strict=True), "%10g %10g %10g %10g"
        ),
    }
    paths = []
    for name, text in texts.items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths


# --------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command's flags once (not on import: the module is also a library)."""
    if "input" in FLAGS:
        return
    app.define_help_flags()
    flags.DEFINE_string("input", None, "Folder of <id>.mat / <id>.png results.")
    flags.DEFINE_string("gt", None, "Folder of official <id>.mat ground truth.")
    flags.DEFINE_string("out", None, "Folder for the eval_*.txt files.")
    flags.DEFINE_enum(
        "kind",
        "segmentation",
        KINDS,
        "segmentation: region and boundary benchmarks (allBench), .png = 0-based label maps; "
        "boundary: boundary benchmark only (boundaryBench), .png = soft boundary maps "
        "(value / 255).",
    )
    flags.DEFINE_integer(
        "nthresh", 99, "Thresholds for ucm2 results and boundary maps.", lower_bound=1
    )
    flags.DEFINE_integer(
        "workers", os.cpu_count() or 1, "Processes (default: every core).", lower_bound=1
    )
    flags.DEFINE_bool("region", True, "Run the region benchmark (not with --kind=boundary).")
    flags.DEFINE_bool("boundary", True, "Run the boundary benchmark (--noboundary skips it).")
    flags.DEFINE_float(
        "max_dist",
        boundary.MAX_DIST,
        "Boundary matching distance, a fraction of the image diagonal.",
    )
    flags.register_validator("max_dist", lambda v: v > 0, "--max_dist must be positive")
    flags.DEFINE_bool("thin", True, "Thin boundary candidates first (the official thinpb).")
    flags.DEFINE_bool(
        "full_precision",
        False,
        "Skip the official code's rounding of per-image statistics to 6 digits.",
    )
    for name in ("input", "gt", "out"):
        flags.mark_flag_as_required(name)


def _fail(message: str, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _parse(argv: Sequence[str]) -> list[str]:
    """Parses `argv` (program name first) into FLAGS; a bad flag is one `error:` line."""
    _define_flags()
    FLAGS.unparse_flags()
    try:
        rest = FLAGS(list(argv))
    except flags.Error as err:
        _fail(str(err), 2)
    except SystemExit:  # absl's --help printed the usage and exits 1; help is no failure
        sys.exit(0)
    if len(rest) > 1:
        _fail(f"unexpected arguments {rest[1:]}", 2)
    return list(argv)


def main(argv: Sequence[str]) -> int:
    """The command: `argv` is the program name followed by flags (see the module docstring).

    Returns 0; a bad setting or input exits with status 2 or 1 after one `error:` line.
    """
    _parse(argv)
    try:
        result = evaluate_folder(
            FLAGS.input,
            FLAGS.gt,
            nthresh=FLAGS.nthresh,
            kind=FLAGS.kind,
            region=FLAGS.region,
            bdry=FLAGS.boundary,
            max_dist=FLAGS.max_dist,
            thin=FLAGS.thin,
            workers=FLAGS.workers,
            official_rounding=not FLAGS.full_precision,
        )
        lines = [f"{len(result.ids)} images -> {FLAGS.out}"]
        if result.region is not None:
            write_region_benchmark(result.region, FLAGS.out)
            r = result.region
            lines += [
                f"covering  ODS {r.ods_covering:.4f}  OIS {r.ois_covering:.4f}"
                f"  best {r.best_covering:.4f}",
                f"PRI       ODS {r.ods_pri:.4f}  OIS {r.ois_pri:.4f}",
                f"VOI       ODS {r.ods_voi:.4f}  OIS {r.ois_voi:.4f}",
            ]
        if result.boundary is not None:
            write_boundary_benchmark(result.boundary, FLAGS.out)
            b = result.boundary
            lines.append(f"boundary  ODS F {b.ods_f:.4f}  OIS F {b.ois_f:.4f}  AP {b.ap:.4f}")
    except (ValueError, OSError) as err:
        _fail(str(err), 1)
    print("\n".join(lines))
    return 0


def run() -> None:
    """Console-script entry point (`jaxseg-evaluate = jaxseg.evaluate:run`)."""
    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        # A console script's __main__ defines no flags: list this module's own.
        _define_flags()
        module = sys.argv[0] if __name__ == "__main__" else __name__  # absl's name for it
        print(f"{__doc__.strip()}\n\nflags:\n{flags.FLAGS.module_help(module)}")
        sys.exit(0)
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    run()
