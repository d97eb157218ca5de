"""Suite `clustering`: jaxseg.kmeans and jaxseg.gmm against scikit-learn and OpenCV.

  python experiments/bench.py --suites=clustering

On BSDS500 val images (481x321 RGB in [0, 1], K = 8), measured side by side in one run:
- K-means per image: jaxseg (distinct colours weighted by their counts, then Lloyd, then a label
  per pixel) against scikit-learn `KMeans(n_init=1)` and OpenCV `cv2.kmeans` (k-means++, one
  attempt), all with tol 1e-4 (for OpenCV, whose epsilon bounds the largest centroid move, the
  epsilon implied by scikit-learn's bound on the summed squared moves, sqrt(tol * mean
  variance)); objective: inertia over all pixels (lower is better).
- K-means batched throughput: `jax.vmap` over a batch of images against the peers one image
  after another (their per-image times).
- GMM per image: jaxseg against scikit-learn `GaussianMixture(covariance_type="full")`, both
  K-means initialised, tol 1e-3, reg_covar 1e-6; objective: mean log-likelihood per pixel
  (higher is better).
- Elbow sweep K = 2..10: `jaxseg.kmeans.elbow` (one compiled call) against scikit-learn fitting
  those K one after another.
Every jaxseg time includes counting the image's distinct colours on the host (to pick the static
size, rounded up to a multiple of 4096), and excludes compilation (one untimed warm-up call per
image). Times are medians over images of the median over repeats; ratio = peer time / jaxseg
time (> 1: jaxseg faster). Writes clustering.json to the output folder.
"""

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from benchmarks import common
from jaxseg import features, gmm, kmeans

_NUM_IMAGES = flags.DEFINE_integer(
    "clustering_num_images", 10, "BSDS500 val images (sorted by name) for the K-means rows."
)
_GMM_IMAGES = flags.DEFINE_integer(
    "clustering_gmm_images", 3, "Images for the GMM rows (scikit-learn takes seconds each)."
)
_ELBOW_IMAGES = flags.DEFINE_integer("clustering_elbow_images", 3, "Images for the elbow rows.")
_BATCH = flags.DEFINE_integer("clustering_batch", 8, "Images per vmapped batch.")
_K = flags.DEFINE_integer("clustering_k", 8, "Number of clusters / components.")
_REPEATS = flags.DEFINE_integer("clustering_repeats", 3, "Timed runs per image (median).")
_SEED = flags.DEFINE_integer("clustering_seed", 0, "Seed of every method.")

_BUCKET = 4096
_TOL = 1e-4


def _size(images) -> int:
    """Static number of distinct-colour rows for these images: the largest count, rounded up."""
    count = max(features.count_distinct_colours(image) for image in images)
    return -(-count // _BUCKET) * _BUCKET


@functools.partial(jax.jit, static_argnames=("n_clusters", "size"))
def _kmeans_labels(image, key, *, n_clusters, size):
    dc = features.distinct_colours(image, size=size)
    fit = kmeans.fit(
        features.colour_features(dc.colours), n_clusters, key, tol=_TOL, sample_weight=dc.counts
    )
    # A nearest-centroid pass over the pixels is cheaper on CPU than gathering through
    # dc.inverse (a binary search), and gives the same labels.
    return kmeans.predict(
        features.colour_features(image.reshape(-1, 3)), fit.centroids
    ), fit.inertia


@functools.partial(jax.jit, static_argnames=("n_components", "size"))
def _gmm_labels(image, key, *, n_components, size):
    dc = features.distinct_colours(image, size=size)
    fit = gmm.fit(features.colour_features(dc.colours), n_components, key, sample_weight=dc.counts)
    return gmm.predict(features.colour_features(image.reshape(-1, 3)), fit), fit.log_likelihood


@functools.partial(jax.jit, static_argnames=("size",))
def _elbow_labels(image, key, *, size):
    dc = features.distinct_colours(image, size=size)
    found = kmeans.elbow(
        features.colour_features(dc.colours), key, k_min=2, k_max=10, sample_weight=dc.counts
    )
    labels = kmeans.predict(features.colour_features(image.reshape(-1, 3)), found.best.centroids)
    return labels, found.n_clusters, found.inertia


def _time(fn, repeats: int):
    """(median seconds, last result) of fn() over repeats, after one untimed warm-up call."""
    result = jax.block_until_ready(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), result


def _ours_kmeans(image, key, k):
    _, inertia = _kmeans_labels(image, key, n_clusters=k, size=_size([image]))
    return float(inertia)


def _sklearn_kmeans(pixels, k, seed):
    return KMeans(k, n_init=1, tol=_TOL, max_iter=300, random_state=seed).fit(pixels).inertia_


def _opencv_kmeans(pixels, k, seed):
    import cv2  # bench extra; imported here so other suites run without it

    cv2.setRNGSeed(seed)
    epsilon = float(np.sqrt(_TOL * np.mean(np.var(pixels, axis=0))))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 300, epsilon)
    compactness, _, _ = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return float(compactness)


def _row(method, impl, seconds, objectives, ours_seconds, ours_objectives, **extra):
    return {
        "suite": "clustering",
        "method": method,
        "impl": impl,
        "peer": impl != "jaxseg",
        "median_s": float(np.median(seconds)),
        "ratio": float(np.median(seconds) / np.median(ours_seconds)),
        "objective": float(np.median(objectives)),
        "objective_vs_jaxseg": float(np.median(np.asarray(objectives) / ours_objectives)),
        "images": len(seconds),
        **extra,
    }


def run(out_dir: Path) -> list[dict]:
    folder = common.data_dir() / "BSDS500" / "images" / "val"
    paths = sorted(folder.glob("*.jpg"))[: max(_NUM_IMAGES.value, _BATCH.value)]
    if not paths:
        raise FileNotFoundError(f"no BSDS500 val images in {folder} (set --clustering_data_dir)")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    pixels = [im.reshape(-1, 3).astype(np.float32) / 255.0 for im in images]
    k, seed, repeats = _K.value, _SEED.value, _REPEATS.value
    key = jax.random.key(seed)
    rows = []

    # K-means, one image at a time.
    times = {"jaxseg": [], "sklearn": [], "opencv": []}
    objectives = {name: [] for name in times}
    for image, x in list(zip(images, pixels, strict=True))[: _NUM_IMAGES.value]:
        runs = {
            "jaxseg": lambda image=image: _ours_kmeans(image, key, k),
            "sklearn": lambda x=x: _sklearn_kmeans(x, k, seed),
            "opencv": lambda x=x: _opencv_kmeans(x, k, seed),
        }
        for name, fn in runs.items():
            seconds, objective = _time(fn, repeats)
            times[name].append(seconds)
            objectives[name].append(objective)
    ours_t, ours_o = np.asarray(times["jaxseg"]), np.asarray(objectives["jaxseg"])
    for name in times:
        rows.append(_row("kmeans", name, times[name], objectives[name], ours_t, ours_o))

    # K-means batched throughput: vmap over a batch against the peers image after image.
    batch = np.stack([im.reshape(-1, 3) for im in images[: _BATCH.value]])  # [b, h*w, 3]
    size = _size(images[: _BATCH.value])
    batched = jax.jit(
        jax.vmap(functools.partial(_kmeans_labels, n_clusters=k, size=size), in_axes=(0, 0))
    )
    keys = jax.random.split(key, len(batch))
    seconds, (_, inertia) = _time(lambda: batched(batch, keys), repeats)
    throughput = {"jaxseg": len(batch) / seconds}
    for name in ("sklearn", "opencv"):
        per_image = np.asarray(times[name][: len(batch)])
        throughput[name] = len(per_image) / per_image.sum()
    for name, images_per_s in throughput.items():
        rows.append(
            {
                "suite": "clustering",
                "method": "kmeans_batched",
                "impl": name,
                "peer": name != "jaxseg",
                "images_per_s": float(images_per_s),
                "ratio": float(throughput["jaxseg"] / images_per_s),
                "batch": len(batch),
                "objective": float(np.median(inertia)) if name == "jaxseg" else None,
            }
        )

    # GMM, one image at a time.
    times = {"jaxseg": [], "sklearn": []}
    objectives = {name: [] for name in times}
    for image, x in list(zip(images, pixels, strict=True))[: _GMM_IMAGES.value]:
        size = _size([image])
        seconds, (_, log_likelihood) = _time(
            lambda image=image, size=size: _gmm_labels(image, key, n_components=k, size=size),
            repeats,
        )
        times["jaxseg"].append(seconds)
        objectives["jaxseg"].append(float(log_likelihood))
        reference = GaussianMixture(
            k, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, random_state=seed
        )
        start = time.perf_counter()
        reference.fit(x)
        times["sklearn"].append(time.perf_counter() - start)
        objectives["sklearn"].append(reference.score(x))
    ours_t, ours_o = np.asarray(times["jaxseg"]), np.asarray(objectives["jaxseg"])
    for name in times:
        rows.append(_row("gmm_full", name, times[name], objectives[name], ours_t, ours_o))

    # Elbow sweep over K = 2..10.
    times = {"jaxseg": [], "sklearn": []}
    objectives = {name: [] for name in times}  # summed inertia over the K
    chosen = []
    for image, x in list(zip(images, pixels, strict=True))[: _ELBOW_IMAGES.value]:
        size = _size([image])
        seconds, (_, n_clusters, inertia) = _time(
            lambda image=image, size=size: _elbow_labels(image, key, size=size), repeats
        )
        times["jaxseg"].append(seconds)
        objectives["jaxseg"].append(float(jnp.sum(inertia)))
        chosen.append(int(n_clusters))
        seconds, curve = _time(lambda x=x: [_sklearn_kmeans(x, kk, seed) for kk in range(2, 11)], 1)
        times["sklearn"].append(seconds)
        objectives["sklearn"].append(float(np.sum(curve)))
    ours_t, ours_o = np.asarray(times["jaxseg"]), np.asarray(objectives["jaxseg"])
    for name in times:
        rows.append(
            _row("elbow_2_10", name, times[name], objectives[name], ours_t, ours_o, chosen_k=chosen)
        )

    _print(rows)
    (out_dir / "clustering.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _print(rows) -> None:
    print(f"backend: {jax.default_backend()}  devices: {jax.devices()}")
    header = (
        f"{'method':<16}{'impl':<9}{'median s':>10}{'images/s':>10}{'ratio':>8}{'objective':>12}"
    )
    print(header + f"{'obj/ours':>10}")
    for row in rows:
        seconds = f"{row['median_s']:.4f}" if "median_s" in row else ""
        per_s = f"{row['images_per_s']:.2f}" if "images_per_s" in row else ""
        objective = f"{row['objective']:.4f}" if row.get("objective") is not None else ""
        relative = f"{row['objective_vs_jaxseg']:.4f}" if "objective_vs_jaxseg" in row else ""
        print(
            f"{row['method']:<16}{row['impl']:<9}{seconds:>10}{per_s:>10}{row['ratio']:>8.2f}"
            f"{objective:>12}{relative:>10}"
        )
