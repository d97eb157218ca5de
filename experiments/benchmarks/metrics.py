"""Benchmark suite `metrics`: every jaxseg metric on one 481x321 image with 5 annotations.

  python experiments/bench.py --suites=metrics

The image is an embedded sample (the first with at least 5 annotations); the prediction is its
grey levels quantised into `--metrics_clusters` clusters, which, like a K-means result, has many
small connected segments. Each row times one jaxseg function (median over
`--metrics_repeats` runs, after one warm-up) and, where one exists, the scikit-learn or
scikit-image function computing the same number on the same input in the same run; `ratio` is
peer time / jaxseg time and `value`/`peer_value` show that both agree. The target for
`image_metrics` (every per-image metric) is well under 0.1 s on one CPU core.

The last row times the boundary benchmark end to end (`jaxseg.evaluate.evaluate_folder`, files
read, every worker process) on `--metrics_boundary_images` images (val, then train; never test)
with synthetic ultrametric contour maps at 99 thresholds, one run; the target is under 5
minutes for 200 images on a 2-core CPU. On a shared machine the wall time says little, so the
row also gives the CPU seconds of all processes (`cpu_s`). The maps (`synthetic_ucm2`) merge
~400 SLIC superpixels by Kruskal's rule on mean-colour differences, a merge at rank u getting level
u**20: that puts about as many boundary pixels above each threshold from 0.1 up as the
official gPb-owt-ucm regression maps hold (~5000 at 0.1, ~2000 at 0.3); their finest level
is sparser (~9000 pixels above 0.01 instead of ~21000). `--metrics_boundary_images=0` skips
the row.
"""

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
from absl import flags
from skimage.measure import label as skimage_label
from skimage.metrics import variation_of_information as skimage_voi
from skimage.segmentation import slic
from sklearn.metrics import rand_score

from benchmarks import common
from jaxseg import data, evaluate, metrics

_REPEATS = flags.DEFINE_integer("metrics_repeats", 20, "Timed runs per measurement.")
_CLUSTERS = flags.DEFINE_integer("metrics_clusters", 8, "Clusters of the quantised prediction.")
_BOUNDARY_IMAGES = flags.DEFINE_integer(
    "metrics_boundary_images", 200, "Images of the boundary-benchmark row (0 skips it)."
)
_BOUNDARY_WORKERS = flags.DEFINE_integer(
    "metrics_boundary_workers", os.cpu_count() or 1, "Processes of the boundary benchmark."
)
_ANNOTATIONS = 5
_UCM_GAMMA = 20  # level = (merge rank / merges) ** gamma, see the module docstring


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    value = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def _inputs(n_clusters: int):
    sample = next(s for s in data.load_dataset("samples") if len(s.ground_truth) >= _ANNOTATIONS)
    grey = sample.image.mean(axis=-1)
    edges = np.quantile(grey, np.linspace(0, 1, n_clusters + 1)[1:-1])
    pred = np.digitize(grey, edges).astype(np.int32)
    return sample.image_id, pred, list(sample.ground_truth[:_ANNOTATIONS])


def synthetic_ucm2(image: np.ndarray, *, n_segments: int = 400) -> np.ndarray:
    """A double-size ultrametric contour map `[2H + 1, 2W + 1]` of an RGB image.

    SLIC superpixels are merged by Kruskal's rule in order of mean-colour difference; the
    contour between two superpixels gets the level of the merge that joins their regions,
    (rank / merges) ** 20, so thresholding it gives the regions of a hierarchy.
    """
    labels = slic(image, n_segments=n_segments, compactness=10, start_label=0)
    n = int(labels.max()) + 1
    sizes = np.bincount(labels.ravel(), minlength=n)
    colour = (
        np.stack(
            [np.bincount(labels.ravel(), image[..., c].ravel().astype(float), n) for c in range(3)],
            1,
        )
        / np.maximum(sizes, 1)[:, None]
    )
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
        ]
    )
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    difference = np.linalg.norm(colour[pairs[:, 0]] - colour[pairs[:, 1]], axis=1)
    region = np.arange(n)
    level = np.zeros(len(pairs))
    merges = 0
    for e in np.argsort(difference, kind="stable"):
        a, b = region[pairs[e]]
        if a == b:
            continue
        merges += 1
        ends = region[pairs]
        joined = ((ends[:, 0] == a) & (ends[:, 1] == b)) | ((ends[:, 0] == b) & (ends[:, 1] == a))
        level[joined] = merges
        region[region == b] = a
    level = (level / merges) ** _UCM_GAMMA
    table = np.zeros((n, n))
    table[pairs[:, 0], pairs[:, 1]] = level
    table = np.maximum(table, table.T)
    height, width = labels.shape
    ucm2 = np.zeros((2 * height + 1, 2 * width + 1))
    ucm2[1::2, 2:-1:2] = table[labels[:, :-1], labels[:, 1:]]
    ucm2[2:-1:2, 1::2] = table[labels[:-1], labels[1:]]
    ucm2[2:-1:2, 2:-1:2] = np.maximum.reduce(
        [ucm2[1:-2:2, 2:-1:2], ucm2[3::2, 2:-1:2], ucm2[2:-1:2, 1:-2:2], ucm2[2:-1:2, 3::2]]
    )
    return ucm2


def _boundary_row(n_images: int, workers: int) -> dict:
    """Times the boundary benchmark on synthetic ucm2 maps of val (then train) images."""
    root = common.data_dir().resolve()  # the links below must not be relative
    samples = [
        (split, sample)
        for split in ("val", "train")
        for sample in data.load_dataset("bsds500", split=split, data_dir=root)
    ][:n_images]
    with tempfile.TemporaryDirectory() as tmp:
        ucm_dir, gt_dir = Path(tmp, "ucm2"), Path(tmp, "gt")
        ucm_dir.mkdir()
        gt_dir.mkdir()
        for split, sample in samples:
            ucm2 = synthetic_ucm2(sample.image)
            scipy.io.savemat(ucm_dir / f"{sample.image_id}.mat", {"ucm2": ucm2})
            truth = root / "BSDS500" / "groundTruth" / split / f"{sample.image_id}.mat"
            (gt_dir / f"{sample.image_id}.mat").symlink_to(truth)
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        result = evaluate.evaluate_folder(
            ucm_dir, gt_dir, nthresh=99, region=False, workers=workers, progress=False
        )
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {
        "method": f"boundary benchmark, {len(samples)} ucm2 x 99 thresholds, {workers} workers",
        "median_s": seconds,
        "value": result.boundary.ods_f,
        "peer": None,
        "peer_median_s": None,
        "peer_value": None,
        "ratio": None,
        "cpu_s": cpu,
    }


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers), in seconds."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def run(out_dir: Path) -> list[dict]:
    del out_dir  # everything goes into the rows
    repeats = _REPEATS.value
    image_id, pred, gts = _inputs(_CLUSTERS.value)
    n_segments = metrics.connected_segments(pred)[1]
    print(
        f"image {image_id} {pred.shape[0]}x{pred.shape[1]}, {len(gts)} annotations, "
        f"{_CLUSTERS.value} clusters in {n_segments} connected segments, median of {repeats}"
    )
    keep = [g.ravel() > 0 for g in gts]
    cases = [
        ("image_metrics (all)", lambda: metrics.image_metrics(pred, gts)["covering"], None, None),
        (
            "region_stats (covering, PRI, VOI)",
            lambda: metrics.region_stats(pred, gts).cover_count,
            None,
            None,
        ),
        ("cluster_iou", lambda: metrics.cluster_iou(pred, gts)[0], None, None),
        ("kim_image_stats", lambda: metrics.kim_image_stats(pred, gts)["kim_all_sum"], None, None),
        (
            "rand_index x5",
            lambda: float(np.mean([metrics.rand_index(pred, g) for g in gts])),
            "sklearn rand_score",
            lambda: float(
                np.mean(
                    [
                        rand_score(g.ravel()[k], pred.ravel()[k])
                        for g, k in zip(gts, keep, strict=True)
                    ]
                )
            ),
        ),
        (
            "variation_of_information x5",
            lambda: float(np.mean([metrics.variation_of_information(pred, g) for g in gts])),
            "skimage variation_of_information",
            lambda: float(np.mean([skimage_voi(g, pred, ignore_labels=[0]).sum() for g in gts])),
        ),
        (
            "connected_segments",
            lambda: metrics.connected_segments(pred)[1],
            "skimage label",
            lambda: int(skimage_label(pred, connectivity=1, background=-1).max()),
        ),
    ]
    rows = []
    print(f"{'method':36s} {'median s':>10s} {'peer':34s} {'peer s':>10s} {'ratio':>7s}")
    for method, fn, peer, peer_fn in cases:
        seconds, value = _median_seconds(fn, repeats)
        row = {
            "method": method,
            "median_s": seconds,
            "value": float(value),
            "peer": peer,
            "peer_median_s": None,
            "peer_value": None,
            "ratio": None,
        }
        if peer_fn is not None:
            peer_seconds, peer_value = _median_seconds(peer_fn, repeats)
            row.update(
                peer_median_s=peer_seconds,
                peer_value=float(peer_value),
                ratio=peer_seconds / seconds,
            )
        rows.append(row)
        peer_text = f"{peer:34s} {row['peer_median_s']:10.4f} {row['ratio']:7.1f}" if peer else ""
        print(f"{method:36s} {seconds:10.4f} {peer_text}")
    if _BOUNDARY_IMAGES.value > 0:
        row = _boundary_row(_BOUNDARY_IMAGES.value, _BOUNDARY_WORKERS.value)
        rows.append(row)
        print(
            f"{row['method']}: {row['median_s']:.1f} s wall (one run), {row['cpu_s']:.1f} CPU s "
            f"(wall on 2 idle cores ~ CPU s / 2), ODS F {row['value']:.4f}"
        )
    return rows
