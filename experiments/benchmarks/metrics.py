"""Benchmark suite `metrics`: every jaxseg metric on one 481x321 image with 5 annotations.

  python experiments/bench.py --suites=metrics

The image is an embedded sample (the first with at least 5 annotations); the prediction is its
grey levels quantised into `--metrics_clusters` clusters, which, like a K-means result, has many
small connected segments. Each row times one jaxseg function (median over
`--metrics_repeats` runs, after one warm-up) and, where one exists, the scikit-learn or
scikit-image function computing the same number on the same input in the same run; `ratio` is
peer time / jaxseg time and `value`/`peer_value` show that both agree. The target for
`image_metrics` (every per-image metric) is well under 0.1 s on one CPU core.
"""

import statistics
import time
from pathlib import Path

import numpy as np
from absl import flags
from skimage.measure import label as skimage_label
from skimage.metrics import variation_of_information as skimage_voi
from sklearn.metrics import rand_score

from jaxseg import data, metrics

_REPEATS = flags.DEFINE_integer("metrics_repeats", 20, "Timed runs per measurement.")
_CLUSTERS = flags.DEFINE_integer("metrics_clusters", 8, "Clusters of the quantised prediction.")
_ANNOTATIONS = 5


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
    return rows
