"""Boundaries from pointwise mutual information (Isola et al. 2014, "Crisp boundary detection").

An image's own statistics decide which colours belong together: colours that meet often,
relative to how common each is, are parts of one surface (the light and dark shades of water,
leaves and their shadows); colours that rarely meet do so on object borders. Every pixel gets
a feature (Lab / 100 and its local contrast, the square root of the standard deviation of the
first principal component of RGB in a 3 x 3 window; each channel scaled to [0, 1]) and the
nearest of `n_clusters` K-means centres of those features (`jaxseg.kmeans`). The counts of
centre pairs (A, B) among pixel pairs at most `pair_radius` apart, smoothed by a Gaussian kernel
of width `bandwidth` between centres (a kernel density estimate on the centres), give P(A, B)
and P(A), and

    PMI_rho(A, B) = log(P(A, B) ** rho / (P(A) P(B)))

(rho > 1 favours pairs that are also common, not only surprising). Pixels at most `radius`
apart get the affinity exp(PMI_rho) of their centres. The boundaries are gPb's spectral ones
computed on this affinity: the normalised-cut eigenvectors, with Arbelaez et al.'s DNCuts
(the affinity decimated to every other row and column twice, each time squared through the
dropped pixels, the eigenvectors of the small problem interpolated back), each scaled to
[0, 1] and divided by the square root of its eigenvalue; a pixel's oriented strength is the sum
over eigenvectors of their Gaussian derivatives (sigma 1) across the orientation, squashed to
[0, 1) by `1 - exp(-s / gain)`.

The affinity is computed with JAX (a pure function, vmappable over equal-size images); the
eigenvectors and their derivatives on host (scipy's sparse Lanczos solver: JAX has no sparse
eigensolver), as the hierarchy's merging is.

Nothing is learned from human boundaries. Isola et al.'s settings (rho 1.25, radius 5, Lab and
contrast features) were kept; their per-image kernel density estimate (a KD-tree over sampled
pairs, bandwidths fitted to the image) is replaced by the smoothed counts of K-means centres,
their random-forest approximation of the PMI by the table itself, and their 100 eigenvectors
at three image scales by 32 at one. `gain` 3.7 gives the median BSDS500 train image's 99th
percentile the strength of `edges.boundary_cues`' (40 train images, every 5th from the 3rd).
Measured as `hierarchy.hierarchical_segmentation`'s boundary (in place of `edges`' local
gradients; 25 thresholds, cues cached, covering / PRI / VOI at ODS): on those 40 images 0.633 /
0.823 / 1.565 -> 0.653 / 0.829 / 1.445 (added to the local gradients at weight 0.5 / 1 / 2
instead: 0.642 / 0.824 / 1.491, 0.643 / 0.825 / 1.510, 0.625 / 0.821 / 1.569), on 80 other train
images (every 5th from the 2nd and the 5th) 0.611 / 0.830 / 1.636 -> 0.642 / 0.839 / 1.469
(a throwaway script, SciPy's K-means; the rule, fixed before measuring: PRI +0.005 on the 40,
+0.003 on the 80, then val). On BSDS500 val (100 images, 99 thresholds, README's bench command,
this module): 0.575 / 0.799 / 1.732 -> 0.608 / 0.815 / 1.590 (OIS 0.644 / 0.850 / 1.488 ->
0.666 / 0.859 / 1.401), median 6.0 s per image for the whole hierarchy (2 workers, 2 cores). The
local gradients fire inside textured regions as strongly as on their borders; the PMI of a
texture's colours is high, so its inner edges fade.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg

from jaxseg import features, kmeans

__all__ = ["PMIBoundaries", "affinity", "boundaries", "offsets", "pmi_table"]

# Below this many nodes the eigenproblem is solved densely; decimation stops before a side
# falls below _MIN_SIDE pixels.
_DENSE_EIGEN = 1500
_MIN_SIDE = 16


class PMIBoundaries(NamedTuple):
    """PMI boundaries of an `[h, w, 3]` image (o orientations, k eigenvectors).

    Attributes:
      oriented: `[o, h, w]` float32 strength in [0, 1) across the line at angle pi * i / o
        (i = 0: a horizontal line), as `edges.BoundaryCues.oriented`.
      strength: `[h, w]` float32, the maximum of `oriented` over orientations.
      eigenvalues: `[k]` float64 normalised-cut eigenvalues of the eigenvectors used (at most
        `n_eigenvectors`; fewer on small images, none on a featureless one).
    """

    oriented: np.ndarray
    strength: np.ndarray
    eigenvalues: np.ndarray


def offsets(radius: int) -> np.ndarray:
    """The `[m, 2]` (dy, dx) offsets of one half of the disc of `radius` (dy > 0, or dy = 0 and
    dx > 0): every unordered pair of pixels at most `radius` apart once."""
    r = int(radius)
    return np.array(
        [
            (dy, dx)
            for dy in range(r + 1)
            for dx in range(-r, r + 1)
            if (dy > 0 or dx > 0) and dy * dy + dx * dx <= r * r
        ],
        dtype=np.int64,
    ).reshape(-1, 2)


def _shifted(q: jax.Array, radius: int, fill: int) -> jax.Array:
    """`[m, h, w]`: `q[y + dy, x + dx]` for each of `offsets(radius)`, `fill` outside the image."""
    h, w = q.shape
    padded = jnp.pad(q, radius, constant_values=fill)
    return jnp.stack(
        [
            padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            for dy, dx in offsets(radius)
        ]
    )


def _pixel_features(rgb: jax.Array) -> jax.Array:
    """`[h * w, 4]` features in [0, 1]: Lab / 100 and the local contrast, each channel scaled."""
    h, w, _ = rgb.shape
    flat = rgb.reshape(h * w, 3)
    lab = features.colour_features(flat, space="lab")
    centred = flat - flat.mean(0)
    _, vectors = jnp.linalg.eigh(centred.T @ centred)
    first = (centred @ vectors[:, -1]).reshape(h, w)

    def box(x):  # 3 x 3 mean, edges reflected
        p = jnp.pad(x, 1, mode="symmetric")
        return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0

    mean = box(first)
    contrast = jnp.maximum(box(first * first) - mean * mean, 0.0) ** 0.25
    x = jnp.concatenate([lab, contrast.reshape(h * w, 1)], axis=1)
    lo, hi = x.min(0), x.max(0)
    return (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)


def pmi_table(labels, centroids, *, rho: float = 1.25, bandwidth: float = 0.05, pair_radius=3):
    """`[k, k]` float32 PMI_rho of the `k` clusters of a labelled image.

    Args:
      labels: `[h, w]` int cluster of every pixel, in [0, k).
      centroids: `[k, d]` the clusters' centres (the kernel density estimate's points).
      rho: exponent of P(A, B) (> 0).
      bandwidth: width of the Gaussian kernel between centres (> 0).
      pair_radius: pixel pairs at most this far apart are counted (static, >= 1).
    """
    labels = jnp.asarray(labels)
    centroids = jnp.asarray(centroids, jnp.float32)
    k = centroids.shape[0]
    if labels.ndim != 2 or centroids.ndim != 2:
        raise ValueError(
            f"need [h, w] labels and [k, d] centroids, got {labels.shape}, {centroids.shape}"
        )
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= k:
            raise ValueError(f"labels must lie in [0, {k}), got [{low}, {high}]")
    pairs = labels * (k + 1) + _shifted(labels, pair_radius, k)  # partner k: outside the image
    counts = jnp.bincount(pairs.ravel(), length=(k + 1) ** 2).reshape(k + 1, k + 1)[:k, :k]
    counts = (counts + counts.T).astype(jnp.float32)
    d2 = jnp.sum((centroids[:, None] - centroids[None]) ** 2, axis=-1)
    kernel = jnp.exp(-d2 / (2.0 * bandwidth**2))
    joint = kernel @ counts @ kernel.T
    marginal = kernel @ jnp.bincount(labels.ravel(), length=k).astype(jnp.float32)
    tiny = jnp.finfo(jnp.float32).tiny
    log_joint = jnp.log(jnp.maximum(joint / joint.sum(), tiny))
    log_marginal = jnp.log(jnp.maximum(marginal / marginal.sum(), tiny))
    return rho * log_joint - log_marginal[:, None] - log_marginal[None, :]


@functools.partial(jax.jit, static_argnames=("n_clusters", "pair_radius", "radius"))
def _affinity(rgb, key, rho, bandwidth, *, n_clusters, pair_radius, radius):
    h, w, _ = rgb.shape
    x = _pixel_features(rgb)
    fit = kmeans.fit(x, n_clusters, key, max_iter=30, tol=1e-3)
    labels = fit.labels.reshape(h, w)
    table = pmi_table(labels, fit.centroids, rho=rho, bandwidth=bandwidth, pair_radius=pair_radius)
    # A common factor leaves the normalised cut unchanged; the largest PMI of clusters that
    # hold pixels (an empty one far from the others has a meaningless one) becomes exp(0) = 1.
    used = jnp.bincount(labels.ravel(), length=n_clusters) > 0
    table = table - jnp.max(jnp.where(used[:, None] & used[None, :], table, -jnp.inf))
    partners = _shifted(labels, radius, -1)
    # The floor keeps every degree positive (float32 exp(-30) ~ 1e-13).
    values = jnp.exp(jnp.maximum(table[labels, jnp.maximum(partners, 0)], -30.0))
    return jnp.where(partners >= 0, values, 0.0)


def affinity(
    image,
    key,
    *,
    n_clusters: int = 64,
    rho: float = 1.25,
    bandwidth: float = 0.05,
    pair_radius: int = 3,
    radius: int = 5,
) -> jax.Array:
    """PMI affinities of each pixel with its neighbours at `offsets(radius)`.

    Args:
      image: `[h, w, 3]` uint8, or float in [0, 1]; vmap over a batch of equal-size images.
      key: PRNG key of the features' K-means seeding.
      n_clusters: K-means centres the features are quantised to (static), in [1, h * w].
      rho, bandwidth, pair_radius: as `pmi_table` (`pair_radius` static).
      radius: neighbours at most this far apart are connected (static, >= 1).

    Returns:
      `[m, h, w]` float32 in (0, 1]: entry `[i, y, x]` is the affinity of pixel (y, x) with
      (y, x) + `offsets(radius)[i]`, 0 where that lies outside the image.

    Raises:
      ValueError: not an `[h, w, 3]` RGB image, NaN/inf or out-of-range values (when
        concrete), or bad options.
    """
    rgb = features._check_rgb(image, rank=3)
    h, w, _ = rgb.shape
    if not 1 <= n_clusters <= h * w:
        raise ValueError(
            f"n_clusters must lie in [1, {h * w}] for a {h}x{w} image, got {n_clusters}"
        )
    for name, value in (("rho", rho), ("bandwidth", bandwidth)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    for name, value in (("pair_radius", pair_radius), ("radius", radius)):
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return _affinity(
        rgb,
        key,
        jnp.float32(rho),
        jnp.float32(bandwidth),
        n_clusters=int(n_clusters),
        pair_radius=pair_radius,
        radius=radius,
    )


def _sparse(stencil: np.ndarray, radius: int) -> scipy.sparse.csr_matrix:
    """The symmetric `[h * w, h * w]` affinity matrix of an `affinity` stencil."""
    m, h, w = stencil.shape
    n = h * w
    # The flat index of the neighbour minus the pixel's. On narrow images two offsets can share
    # a shift; for any one pixel at most one of them lies inside the image, so they add.
    shifts, slot = np.unique(offsets(radius) @ np.array([w, 1]), return_inverse=True)
    diagonals = np.zeros((len(shifts), n))
    for i in range(m):  # dia_matrix stores A[j - shift, j] at [slot, j]
        shift = shifts[slot[i]]
        if abs(shift) < n:  # (shift < 0 only on images narrower than the radius)
            first, last = max(shift, 0), n + min(shift, 0)
            diagonals[slot[i], first:last] += stencil[i].ravel()[first - shift : last - shift]
    upper = scipy.sparse.dia_matrix((diagonals, shifts), shape=(n, n)).tocsr()
    upper.eliminate_zeros()  # neighbours outside the image
    return (upper + upper.T).tocsr()


def _eigenvectors(matrix, shape, n_eigenvectors: int):
    """DNCuts: the `[n, k]` smallest non-trivial normalised-cut eigenvectors and their `[k]`
    eigenvalues, k <= n_eigenvectors."""
    h, w = shape
    lifts = []
    while min(h, w) >= 2 * _MIN_SIDE:
        rows, cols = np.divmod(np.arange(h * w), w)
        keep = np.flatnonzero((rows % 2 == 1) & (cols % 2 == 1))
        kept = matrix[:, keep].T.tocsr()  # [n_kept, n]: kept pixels' affinities
        spread = np.asarray(kept.sum(axis=0)).ravel()
        # Each pixel as the affinity-weighted mean of the kept pixels it touches.
        lift = (kept @ scipy.sparse.diags(1.0 / np.maximum(spread, 1e-300))).T.tocsr()
        matrix = kept @ lift
        matrix = ((matrix + matrix.T) / 2).tocsr()
        lifts.append(lift)
        h, w = h // 2, w // 2
    n = matrix.shape[0]
    k = min(n_eigenvectors + 1, n - 1)
    if k < 2:
        return np.zeros((shape[0] * shape[1], 0)), np.zeros(0)
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    root = scipy.sparse.diags(1.0 / np.sqrt(degree))
    normalised = root @ matrix @ root  # eigenvalues 1 - lambda
    if n <= _DENSE_EIGEN:
        mu, u = np.linalg.eigh(normalised.toarray())
        mu, u = mu[-k:], u[:, -k:]
    else:
        start = np.random.default_rng(0).standard_normal(n)  # deterministic ARPACK start
        mu, u = scipy.sparse.linalg.eigsh(normalised, k, which="LA", v0=start, tol=1e-6)
    order = np.argsort(-mu)[1:]  # without the constant vector (lambda = 0)
    vectors = root @ u[:, order]
    for lift in reversed(lifts):
        vectors = lift @ vectors
    return vectors, np.maximum(1.0 - mu[order], 0.0)


def boundaries(
    image,
    key,
    *,
    n_eigenvectors: int = 32,
    n_orientations: int = 8,
    gain: float = 3.7,
    radius: int = 5,
    **affinity_options,
) -> PMIBoundaries:
    """Oriented boundary strength of an RGB image from the spectral cut of its PMI affinity.

    Args:
      image: `[h, w, 3]` uint8, or float in [0, 1] (one image: the eigenvectors are found on
        host).
      key: PRNG key of the features' K-means seeding.
      n_eigenvectors: eigenvectors summed (>= 1; fewer on images too small to have them).
      n_orientations: orientations in [0, pi) (>= 1).
      gain: the summed derivatives s map to strength 1 - exp(-s / gain) (> 0).
      radius, **affinity_options: passed to `affinity`.

    Returns:
      PMIBoundaries; all zeros for an image of one colour (it has no boundary).

    Raises:
      ValueError: as `affinity`, or bad options.
    """
    rgb = np.asarray(features._check_rgb(image, rank=3))
    for name, value in (("n_eigenvectors", n_eigenvectors), ("n_orientations", n_orientations)):
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be finite and > 0, got {gain}")
    stencil = np.asarray(affinity(rgb, key, radius=radius, **affinity_options))
    h, w, _ = rgb.shape
    oriented = np.zeros((n_orientations, h, w))
    eigenvalues = np.zeros(0)
    if np.ptp(rgb.reshape(-1, 3), axis=0).any():
        vectors, eigenvalues = _eigenvectors(_sparse(stencil, radius), (h, w), n_eigenvectors)
        angles = np.pi * np.arange(n_orientations) / n_orientations
        for vector, value in zip(vectors.T, eigenvalues, strict=True):
            if value <= 0:
                continue
            v = vector.reshape(h, w)
            v = (v - v.min()) / max(v.max() - v.min(), 1e-300) / np.sqrt(value)
            dy = scipy.ndimage.gaussian_filter(v, 1.0, order=(1, 0))
            dx = scipy.ndimage.gaussian_filter(v, 1.0, order=(0, 1))
            # Across the line at angle theta (rows grow downwards), as edges.half_disc_kernels.
            oriented += np.abs(
                dx[None] * np.sin(angles)[:, None, None] - dy[None] * np.cos(angles)[:, None, None]
            )
    oriented = (1.0 - np.exp(-oriented / gain)).astype(np.float32)
    return PMIBoundaries(oriented, oriented.max(axis=0), eigenvalues)
