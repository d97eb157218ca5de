"""Suite `hierarchy`: jaxseg's hierarchical segmentation against scikit-image's Felzenszwalb.

  python experiments/bench.py --suites=hierarchy --hierarchy_split=val --hierarchy_images=100

On BSDS500 images (481x321, sorted by name), measured side by side in one run:
- jaxseg: `hierarchy.hierarchical_segmentation` (boundary cues on the JAX CPU device, watershed,
  greedy merging into a ucm2), scored by the official region benchmark at the thresholds
  `metrics.ucm_thresholds(--hierarchy_thresholds)`.
- peer: `skimage.segmentation.felzenszwalb` at the scales `--hierarchy_felzenszwalb_scales`
  (sigma 0.8, min_size 20), each scale a candidate segmentation scored the same way (ODS picks
  one scale for the dataset, OIS each image's own); it gives no hierarchy.
Times are per image, whole pipeline (jaxseg: cues + watershed + merging; peer: all its scales),
medians over images, compilation excluded (each worker first segments one untimed image);
ratio = peer time / jaxseg time. Images are spread over `--hierarchy_workers` processes, each
timing its own images, so on a machine with fewer free cores than workers the times include
waiting. jaxseg's maps cut at the covering ODS threshold are also scored by Kim et al.'s mIoU
(mode all). Writes hierarchy.json to the output folder.
"""

import json
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
from absl import flags

from benchmarks import common

_SPLIT = flags.DEFINE_enum("hierarchy_split", "val", ["train", "val"], "BSDS500 split.")
_IMAGES = flags.DEFINE_integer("hierarchy_images", 10, "Images (sorted by name); 0 for all.")
_THRESHOLDS = flags.DEFINE_integer("hierarchy_thresholds", 99, "ucm2 thresholds scored.")
_WORKERS = flags.DEFINE_integer("hierarchy_workers", 2, "Worker processes over images.")
_SCALES = flags.DEFINE_list(
    "hierarchy_felzenszwalb_scales",
    ["50", "100", "200", "400", "800", "1600"],
    "Felzenszwalb scale of each peer candidate.",
)
_SEED = flags.DEFINE_integer("hierarchy_seed", 0, "Seed of the texton K-means.")


def _init(data_dir: str, split: str, seed: int) -> None:
    import jax

    from jaxseg import data, hierarchy

    global _DATASET, _KEY
    _DATASET = data.load_dataset("bsds500", split=split, data_dir=data_dir)
    _KEY = jax.random.key(seed)
    hierarchy.hierarchical_segmentation(_DATASET[0].image, _KEY)  # compile, untimed


def _score(index: int, thresholds: np.ndarray, scales: list[float]) -> dict:
    # An exception that does not pickle (e.g. scipy's ArpackNoConvergence) would hang the pool.
    try:
        return _score_image(index, thresholds, scales)
    except Exception as error:  # noqa: BLE001 - re-raised as a picklable error
        raise RuntimeError(f"image {index}: {type(error).__name__}: {error}") from None


def _score_image(index: int, thresholds: np.ndarray, scales: list[float]) -> dict:
    from skimage.segmentation import felzenszwalb

    from jaxseg import hierarchy, metrics

    sample = _DATASET[index]
    start = time.perf_counter()
    result = hierarchy.hierarchical_segmentation(sample.image, _KEY)
    ours_s = time.perf_counter() - start
    ours = [
        metrics.region_stats(
            metrics.ucm_segmentation(result.ucm2, t), sample.ground_truth, official_labels=True
        )
        for t in thresholds
    ]
    start = time.perf_counter()
    segs = [felzenszwalb(sample.image, scale=s, sigma=0.8, min_size=20) for s in scales]
    peer_s = time.perf_counter() - start
    peer = [metrics.region_stats(seg, sample.ground_truth) for seg in segs]
    return {
        "image_id": sample.image_id,
        "ours_s": ours_s,
        "peer_s": peer_s,
        "n_regions": result.n_regions,
        "ucm2": result.ucm2,
        "ours": ours,
        "peer": peer,
    }


def _summary(bench) -> dict:
    return {
        "covering_ods": bench.ods_covering,
        "covering_ois": bench.ois_covering,
        "pri_ods": bench.ods_pri,
        "pri_ois": bench.ois_pri,
        "voi_ods": bench.ods_voi,
        "voi_ois": bench.ois_voi,
        "ods_covering_threshold": bench.ods_covering_threshold,
    }


def run(out_dir: Path) -> list[dict]:
    from jaxseg import data, metrics

    root = common.data_dir()
    dataset = data.load_dataset("bsds500", split=_SPLIT.value, data_dir=root)
    n = len(dataset) if _IMAGES.value <= 0 else min(_IMAGES.value, len(dataset))
    thresholds = metrics.ucm_thresholds(_THRESHOLDS.value)
    scales = [float(s) for s in _SCALES.value]
    print(
        f"BSDS500 {_SPLIT.value}: {n} images, {len(thresholds)} ucm thresholds, Felzenszwalb "
        f"scales {scales}, {_WORKERS.value} workers"
    )
    context = multiprocessing.get_context("spawn")
    with context.Pool(
        _WORKERS.value, initializer=_init, initargs=(str(root), _SPLIT.value, _SEED.value)
    ) as pool:
        results = pool.starmap(_score, [(i, thresholds, scales) for i in range(n)])
    ours = metrics.aggregate_region_stats([r["ours"] for r in results], thresholds)
    peer = metrics.aggregate_region_stats([r["peer"] for r in results], scales)
    ods_labels = [
        metrics.ucm_segmentation(r["ucm2"], ours.ods_covering_threshold) - 1 for r in results
    ]
    kim = metrics.kim_miou(ods_labels, [dataset[i].ground_truth for i in range(n)], "all")
    ours_s = statistics.median(r["ours_s"] for r in results)
    peer_s = statistics.median(r["peer_s"] for r in results)
    row = {
        "method": "jaxseg hierarchical_segmentation (cues + watershed + merging)",
        "split": _SPLIT.value,
        "n_images": n,
        "median_s": ours_s,
        "median_regions": statistics.median(r["n_regions"] for r in results),
        **_summary(ours),
        "kim_miou_all_at_ods": kim,
        "peer": f"skimage felzenszwalb x{len(scales)} scales",
        "peer_median_s": peer_s,
        **{f"peer_{k}": v for k, v in _summary(peer).items()},
        "ratio": peer_s / ours_s,
    }
    header = f"{'method':34s} {'median s':>9s} {'cov ODS':>8s} {'cov OIS':>8s} "
    header += f"{'PRI ODS':>8s} {'PRI OIS':>8s} {'VOI ODS':>8s} {'VOI OIS':>8s}"
    print(header)
    for name, seconds, bench in (
        ("jaxseg hierarchy (ucm2)", ours_s, ours),
        (f"felzenszwalb x{len(scales)} (peer)", peer_s, peer),
    ):
        print(
            f"{name:34s} {seconds:9.3f} {bench.ods_covering:8.3f} {bench.ois_covering:8.3f} "
            f"{bench.ods_pri:8.3f} {bench.ois_pri:8.3f} {bench.ods_voi:8.3f} {bench.ois_voi:8.3f}"
        )
    print(f"jaxseg Kim et al. mIoU (all) at the covering ODS threshold: {kim:.3f}")
    print(f"ratio (peer s / jaxseg s): {row['ratio']:.2f}")
    (out_dir / "hierarchy.json").write_text(json.dumps(row, indent=2) + "\n")
    return [row]
