"""The BSDS region benchmark as a command: a Python replacement for the official MATLAB code.

  python -m jaxseg.evaluate --input DIR --gt DIR --out DIR [--nthresh N] [--workers W]

Reproduces `regionBench.m` + `collect_eval_reg.m` of the BSDS500 benchmark: segmentation
covering, probabilistic Rand index and variation of information at ODS and OIS. `--input` holds
one result per image, named `<id>.mat` or `<id>.png`:
  * `.mat` with a cell `segs` of official label maps (1.., 0 = unlabelled): one candidate per
    entry, thresholds 1..n (`--nthresh` is ignored, as the official code does);
  * `.mat` with a double-size ultrametric contour map `ucm2`: candidates at the `--nthresh`
    thresholds `linspace(1/(n+1), n/(n+1), n)`;
  * `.png`: one single-channel jaxseg label map (0-based; shifted to official labels).
`--gt` holds the official `<id>.mat` ground truth. `--out` receives `eval_cover.txt`,
`eval_cover_img.txt`, `eval_cover_th.txt`, `eval_RI_VOI.txt` and `eval_RI_VOI_thr.txt` in the
official formats; images are numbered in the official order (sorted `<id>_ev2.txt` names). One
image is scored per worker process; progress goes to stderr.
"""

import argparse
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from jaxseg import metrics
from jaxseg.data import read_ground_truth

__all__ = [
    "evaluate_folder",
    "evaluate_image",
    "main",
    "read_candidates",
    "result_files",
    "write_region_benchmark",
]

_SUFFIXES = (".mat", ".png")
_PNG_MODES = ("L", "I;16", "I", "P")


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
    except (ValueError, OSError, TypeError) as err:
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


def evaluate_image(
    result_path, gt_path, *, nthresh: int = 99
) -> tuple[np.ndarray, list[metrics.RegionStats]]:
    """Scores every candidate of one result file: `(thresholds [n], n RegionStats)`."""
    thresholds, candidates = read_candidates(result_path, nthresh=nthresh)
    ground_truth = read_ground_truth(gt_path)
    try:
        stats = [metrics.region_stats(c, ground_truth, official_labels=True) for c in candidates]
    except ValueError as err:
        raise ValueError(f"{result_path}: {err}") from err
    return thresholds, stats


def result_files(input_dir, gt_dir) -> list[tuple[Path, Path]]:
    """`(result, ground truth)` path pairs in the official image order.

    The official code lists its `<id>_ev2.txt` files sorted by name, so ids sort as
    `<id>_ev2.txt` (e.g. "20180" before "2018").
    """
    input_dir, gt_dir = Path(input_dir), Path(gt_dir)
    for folder in (input_dir, gt_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} not found")
    results = sorted(
        (p for p in input_dir.iterdir() if p.suffix in _SUFFIXES and p.is_file()),
        key=lambda p: p.stem + "_ev2.txt",
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


def _evaluate_job(job: tuple[int, Path, Path, int]):
    index, result_path, gt_path, nthresh = job
    return index, evaluate_image(result_path, gt_path, nthresh=nthresh)


def evaluate_folder(
    input_dir,
    gt_dir,
    *,
    nthresh: int = 99,
    workers: int | None = None,
    official_rounding: bool = True,
    progress: bool = True,
) -> tuple[list[str], metrics.RegionBenchmark]:
    """Runs the region benchmark on a folder of results.

    Args:
      input_dir: results, one `<id>.mat` or `<id>.png` per image (see the module docstring).
      gt_dir: official ground truth `<id>.mat` for every result.
      nthresh: number of thresholds for `ucm2` results.
      workers: processes scoring one image each; defaults to every core; 1 runs in-process.
      official_rounding: round per-image statistics to 6 significant digits as the official
        code does (see `metrics.aggregate_region_stats`), for byte-identical output files.
      progress: print one line per finished image to stderr.

    Returns:
      `(ids, benchmark)`: image ids in the official order and the `RegionBenchmark`.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    pairs = result_files(input_dir, gt_dir)
    workers = min(workers or os.cpu_count() or 1, len(pairs))
    jobs = [(i, r, g, nthresh) for i, (r, g) in enumerate(pairs)]
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
    for (result_path, _), (image_thresholds, _) in zip(pairs, scored, strict=True):
        if not np.array_equal(image_thresholds, thresholds):
            raise ValueError(
                f"{result_path} has {len(image_thresholds)} candidates, "
                f"{pairs[0][0]} has {len(thresholds)}: every image needs the same thresholds"
            )
    benchmark = metrics.aggregate_region_stats(
        [stats for _, stats in scored], thresholds, official_rounding=official_rounding
    )
    return [p.stem for p, _ in pairs], benchmark


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jaxseg.evaluate",
        description="BSDS region benchmark (covering, PRI, VOI at ODS/OIS), official formats.",
    )
    parser.add_argument("--input", required=True, help="folder of <id>.mat / <id>.png results")
    parser.add_argument("--gt", required=True, help="folder of official <id>.mat ground truth")
    parser.add_argument("--out", required=True, help="folder for the eval_*.txt files")
    parser.add_argument("--nthresh", type=int, default=99, help="thresholds for ucm2 results")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="processes (default: every core)"
    )
    parser.add_argument(
        "--full_precision",
        action="store_true",
        help="skip the official code's rounding of per-image statistics to 6 digits",
    )
    args = parser.parse_args(argv)
    ids, benchmark = evaluate_folder(
        args.input,
        args.gt,
        nthresh=args.nthresh,
        workers=args.workers,
        official_rounding=not args.full_precision,
    )
    write_region_benchmark(benchmark, args.out)
    b = benchmark
    print(
        f"{len(ids)} images -> {args.out}\n"
        f"covering  ODS {b.ods_covering:.4f}  OIS {b.ois_covering:.4f}"
        f"  best {b.best_covering:.4f}\n"
        f"PRI       ODS {b.ods_pri:.4f}  OIS {b.ois_pri:.4f}\n"
        f"VOI       ODS {b.ods_voi:.4f}  OIS {b.ois_voi:.4f}"
    )


if __name__ == "__main__":
    main()
