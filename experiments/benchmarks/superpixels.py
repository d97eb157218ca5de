"""Suite `superpixels`: jaxseg.slic against scikit-image's SLIC.

  python experiments/bench.py --suites=superpixels

On BSDS500 val images (sorted by name, 481 x 321 or 321 x 481 uint8 RGB), for each n_segments:
- per image: `jaxseg.slic.segment` (compiled; one untimed warm-up call per image shape) against
  `skimage.segmentation.slic` (max_num_iter=10, enforce_connectivity=True, start_label=0), both
  with the same n_segments and compactness in scikit-image's units (CIE Lab, L* in [0, 100];
  jaxseg.slic takes the same value, see its docstring);
- quality on the same images: boundary recall (ground-truth boundary pixels within 2 px of a
  superpixel boundary, mean over annotations) and undersegmentation error (Neubert & Protzel),
  with `jaxseg.slic.boundary_recall` / `undersegmentation_error`, and the number of segments;
- batched: `jaxseg.slic.segment_batch` over the landscape images as one batch (images/s) against
  scikit-image's per-image times.
Times are medians over images of the median over repeats; ratio = scikit-image time / jaxseg
time (> 1: jaxseg faster); cpu ratio the same with the process's CPU time, steadier on a shared
machine. Writes superpixels.json to the output folder.
"""

import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags
from skimage.segmentation import slic as skimage_slic

from benchmarks import common
from jaxseg import data, slic

_NUM_IMAGES = flags.DEFINE_integer("superpixels_num_images", 10, "BSDS500 val images.")
_N_SEGMENTS = flags.DEFINE_list("superpixels_n_segments", ["800", "2500"], "n_segments values.")
_COMPACTNESS = flags.DEFINE_float("superpixels_compactness", 10.0, "SLIC compactness.")
_REPEATS = flags.DEFINE_integer("superpixels_repeats", 3, "Timed runs per image (median).")


def _time(fn, repeats: int):
    """(median wall seconds, median CPU seconds of this process, last result) of fn() over
    repeats, after one untimed warm-up call. CPU time is steadier than wall time on a shared
    machine."""
    result = jax.block_until_ready(fn())
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = jax.block_until_ready(fn())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu)), result


def run(out_dir: Path) -> list[dict]:
    folder = common.data_dir() / "BSDS500"
    paths = sorted((folder / "images" / "val").glob("*.jpg"))[: _NUM_IMAGES.value]
    if not paths:
        raise FileNotFoundError(f"no BSDS500 val images in {folder} (set --data_dir)")
    images = [data.read_image(p) for p in paths]
    truths = [
        data.read_ground_truth(folder / "groundTruth" / "val" / f"{p.stem}.mat") for p in paths
    ]
    compactness, repeats = _COMPACTNESS.value, _REPEATS.value
    rows = []
    for n_segments in (int(n) for n in _N_SEGMENTS.value):
        runs = {
            "jaxseg": lambda image, n=n_segments: (
                slic.segment(image, n_segments=n, compactness=compactness).labels
            ),
            "skimage": lambda image, n=n_segments: skimage_slic(
                image, n_segments=n, compactness=compactness, start_label=0
            ),
        }
        measured = {
            name: {"s": [], "cpu_s": [], "recall": [], "error": [], "segments": []} for name in runs
        }
        for image, gts in zip(images, truths, strict=True):
            for name, fn in runs.items():
                seconds, cpu, labels = _time(lambda fn=fn, image=image: fn(image), repeats)
                labels = np.asarray(labels)
                measured[name]["s"].append(seconds)
                measured[name]["cpu_s"].append(cpu)
                measured[name]["recall"].append(slic.boundary_recall(labels, gts))
                measured[name]["error"].append(slic.undersegmentation_error(labels, gts))
                measured[name]["segments"].append(int(labels.max()) + 1)
        ours = np.median(measured["jaxseg"]["s"])
        ours_cpu = np.median(measured["jaxseg"]["cpu_s"])
        for name, m in measured.items():
            rows.append(
                {
                    "suite": "superpixels",
                    "method": f"slic_{n_segments}",
                    "impl": name,
                    "peer": name != "jaxseg",
                    "median_s": float(np.median(m["s"])),
                    "ratio": float(np.median(m["s"]) / ours),
                    "median_cpu_s": float(np.median(m["cpu_s"])),
                    "cpu_ratio": float(np.median(m["cpu_s"]) / ours_cpu),
                    "boundary_recall": float(np.mean(m["recall"])),
                    "undersegmentation_error": float(np.mean(m["error"])),
                    "segments": float(np.mean(m["segments"])),
                    "images": len(m["s"]),
                    "compactness": compactness,
                }
            )

        # Batched throughput: the landscape images as one vmapped batch.
        batch = np.stack([im for im in images if im.shape[0] < im.shape[1]])
        seconds, cpu, _ = _time(
            lambda batch=batch, n=n_segments: (
                slic.segment_batch(batch, n_segments=n, compactness=compactness).labels
            ),
            repeats,
        )
        peer = len(measured["skimage"]["s"]) / np.sum(measured["skimage"]["s"])
        peer_cpu = len(measured["skimage"]["cpu_s"]) / np.sum(measured["skimage"]["cpu_s"])
        ours_cpu = len(batch) / cpu
        for name, images_per_s, images_per_cpu_s in (
            ("jaxseg", len(batch) / seconds, ours_cpu),
            ("skimage", peer, peer_cpu),
        ):
            rows.append(
                {
                    "suite": "superpixels",
                    "method": f"slic_{n_segments}_batched",
                    "impl": name,
                    "peer": name != "jaxseg",
                    "images_per_s": float(images_per_s),
                    "ratio": float(len(batch) / seconds / images_per_s),
                    "images_per_cpu_s": float(images_per_cpu_s),
                    "cpu_ratio": float(ours_cpu / images_per_cpu_s),
                    "batch": len(batch),
                }
            )
    _print(rows)
    (out_dir / "superpixels.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _print(rows) -> None:
    print(f"backend: {jax.default_backend()}  devices: {jax.devices()}")
    print(
        f"{'method':<20}{'impl':<9}{'median s':>10}{'images/s':>10}{'ratio':>8}"
        f"{'cpu ratio':>10}{'recall':>8}{'UE':>8}{'segments':>10}"
    )
    for row in rows:
        seconds = f"{row['median_s']:.4f}" if "median_s" in row else ""
        per_s = f"{row['images_per_s']:.2f}" if "images_per_s" in row else ""
        recall = f"{row['boundary_recall']:.4f}" if "boundary_recall" in row else ""
        error = f"{row['undersegmentation_error']:.4f}" if "undersegmentation_error" in row else ""
        segments = f"{row['segments']:.1f}" if "segments" in row else ""
        print(
            f"{row['method']:<20}{row['impl']:<9}{seconds:>10}{per_s:>10}{row['ratio']:>8.2f}"
            f"{row['cpu_ratio']:>10.2f}{recall:>8}{error:>8}{segments:>10}"
        )
