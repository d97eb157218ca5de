"""K-means: Lloyd's algorithm with k-means++ seeding, as pure jit-compiled, vmappable functions.

`fit` follows scikit-learn's `KMeans(algorithm="lloyd")`: greedy k-means++ (or random) seeding,
then Lloyd iterations inside one `lax.while_loop` until the labels stop changing or the summed
squared centroid shift is at most `tol` times the mean per-feature variance of the data. Empty
clusters are re-seeded at the points farthest from their centroids, as scikit-learn does.
`elbow` fits every K of a range in one compiled call and picks K by the kneedle rule.

Points are the rows of `x` [n, d] float32. `sample_weight` [n] (default 1) weights each point in
the centroids, the inertia and the tolerance; weight 0 masks a point (padding in a batch). With
the distinct colours of an image as points and their pixel counts as weights (see
`jaxseg.features.distinct_colours`) the objective is exactly that of the full image.

Internally the points are held as [d, n] so that the K x N distance matrix comes from one matmul
and the nearest centroid from an unrolled elementwise minimum over the K rows; XLA's CPU backend
is slow at reductions over a leading axis.
"""

import functools
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "ElbowResult",
    "KMeansResult",
    "check_input",
    "elbow",
    "fit",
    "masked_points",
    "predict",
]

_HIGHEST = lax.Precision.HIGHEST
_UNROLL_FEATURES = 8  # up to this many features, distances are unrolled elementwise
_INITS = ("k-means++", "random")


class KMeansResult(NamedTuple):
    """Result of `fit` (n points, k clusters, d features).

    Attributes:
      centroids: [k, d] float32 cluster centres.
      labels: [n] int32 index of the nearest centroid of each point (for the final centroids).
      inertia: [] float32, sum over points of sample_weight * squared distance to its centroid.
      n_iter: [] int32 Lloyd iterations run.
      converged: [] bool, True when the loop stopped on the tolerance or on unchanged labels
        rather than at `max_iter`.
      inertia_history: [max_iter] float32 inertia of the labels found at each iteration
        (measured against the centroids they were assigned to); NaN after `n_iter`.
    """

    centroids: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    inertia_history: jax.Array


class ElbowResult(NamedTuple):
    """Result of `elbow`: one Lloyd fit per K in `candidates` (m = k_max - k_min + 1).

    Attributes:
      n_clusters: [] int32, the K chosen by the kneedle rule.
      candidates: [m] int32, K = k_min, ..., k_max.
      inertia: [m] float32 final inertia of each K.
      score: [m] float32 kneedle score (distance below the chord of the inertia curve, in units
        of its total drop); `n_clusters` is the first K where it is largest.
      centroids: [m, k_max, d] float32; rows K.. of the entry for K are 0 (unused).
      labels: [m, n] int32 labels of each K.
      n_iter: [m] int32.
      converged: [m] bool.
      inertia_history: [m, max_iter] float32, as in KMeansResult.
    """

    n_clusters: jax.Array
    candidates: jax.Array
    inertia: jax.Array
    score: jax.Array
    centroids: jax.Array
    labels: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    inertia_history: jax.Array

    @property
    def best(self) -> KMeansResult:
        """The fit for the chosen K (unbatched results only); centroids are [k_max, d]."""
        i = self.n_clusters - self.candidates[0]
        return KMeansResult(
            centroids=self.centroids[i],
            labels=self.labels[i],
            inertia=self.inertia[i],
            n_iter=self.n_iter[i],
            converged=self.converged[i],
            inertia_history=self.inertia_history[i],
        )


class _Points(NamedTuple):
    """Sanitised points: non-finite rows and negative weights are masked (weight 0)."""

    x: jax.Array  # [n, d]
    xt: jax.Array  # [d, n]
    w: jax.Array  # [n]
    xw: jax.Array  # [n, d + 1]: w * x, then w
    sq_norms: jax.Array  # [n] squared norm of each point
    tol: jax.Array  # [] absolute tolerance on the summed squared centroid shift


class _State(NamedTuple):
    centroids: jax.Array  # [k, d]
    labels: jax.Array  # [n] labels of the previous iteration (-1 before the first)
    n_iter: jax.Array
    converged: jax.Array
    inertia_history: jax.Array  # [max_iter]


def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_input(x, n_clusters: int, sample_weight=None, *, name: str = "n_clusters"):
    """Validates points for a clustering of `n_clusters` and returns (x float32, sample_weight).

    Shapes and `n_clusters` are always checked; values (finite features, weights >= 0, at least
    `n_clusters` points of positive weight) only when the arrays are concrete, not under tracing.
    Raises ValueError naming the problem. `name` is the argument's name in the messages.
    """
    n_clusters = _index(n_clusters, name)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape [n, d], got shape {x.shape} (vmap for batches)")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point, got {x.dtype}")
    x = x.astype(jnp.float32)
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"{name}={n_clusters} must be between 1 and the number of points {n}")
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight, jnp.float32)
        if sample_weight.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {sample_weight.shape}")
    if _is_concrete(x):
        finite = np.isfinite(np.asarray(x))
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            raise ValueError(f"x has NaN or inf in {rows.size} rows (first: row {rows[0]})")
        # Distances and variances square the features: beyond ~1.8e19 they overflow float32
        # and the fit returns inf or NaN.
        with np.errstate(over="ignore"):
            square = np.square(np.asarray(x)).sum(axis=1)
        if not np.isfinite(square).all():
            raise ValueError(
                f"x's squared norms overflow float32 (|x| up to {np.abs(np.asarray(x)).max():.3g}):"
                " rescale the points"
            )
    n_points = n
    if sample_weight is not None and _is_concrete(sample_weight):
        w = np.asarray(sample_weight)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and >= 0")
        n_points = int(np.count_nonzero(w))
        if n_points == 0:
            raise ValueError("sample_weight is 0 everywhere: every point is masked")
    if n_clusters > n_points:
        raise ValueError(
            f"{name}={n_clusters} exceeds the {n_points} points of positive sample_weight"
        )
    return x, sample_weight


def _index(value, name: str) -> int:
    """`value` as a Python int (ValueError, not TypeError, for a non-integer)."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _check_options(max_iter: int, tol) -> None:
    if operator.index(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if _is_concrete(tol) and not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")


def masked_points(x: jax.Array, sample_weight) -> tuple[jax.Array, jax.Array]:
    """`x` [n, d] with non-finite rows zeroed, and weights [n] that are 0 for those rows and for
    non-positive `sample_weight` (default 1): how traced bad points are masked, never NaN."""
    finite = jnp.all(jnp.isfinite(x), axis=1)
    x = jnp.where(finite[:, None], x, 0.0)
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    return x, jnp.where(finite & (w > 0), w, 0.0)


def _prepare(x: jax.Array, sample_weight, tol) -> _Points:
    x, w = masked_points(x, sample_weight)
    total = jnp.sum(w)
    safe_total = jnp.where(total > 0, total, 1.0)
    mean = jnp.dot(w, x, precision=_HIGHEST) / safe_total
    variance = jnp.dot(w, (x - mean) ** 2, precision=_HIGHEST) / safe_total
    xt = x.T
    return _Points(
        x=x,
        xt=xt,
        w=w,
        xw=jnp.concatenate([x * w[:, None], w[:, None]], axis=1),
        sq_norms=jnp.dot(jnp.ones(x.shape[1], x.dtype), xt * xt, precision=_HIGHEST),
        tol=tol * jnp.mean(variance),
    )


def _nearest(points: _Points, centroids: jax.Array, n_active) -> tuple[jax.Array, jax.Array]:
    """Squared distance [n] to, and index [n] int32 of, the nearest of the first n_active."""
    k, d = centroids.shape
    # ||c||^2 - 2 c.x for every centroid: [k, n], one matmul, or for few features an unrolled
    # elementwise expression that XLA fuses with the minimum below (and batches well).
    offsets = jnp.sum(centroids**2, axis=1)
    if d <= _UNROLL_FEATURES:
        scores = [
            offsets[j] - 2.0 * sum(centroids[j, i] * points.xt[i] for i in range(d))
            for j in range(k)
        ]
    else:
        scores = offsets[:, None] - 2.0 * jnp.dot(centroids, points.xt, precision=_HIGHEST)
    best, labels = scores[0], jnp.zeros(points.xt.shape[1], jnp.int32)
    for j in range(1, k):  # ties go to the lowest index, as argmin
        closer = (scores[j] < best) & (j < n_active)
        best = jnp.where(closer, scores[j], best)
        labels = jnp.where(closer, j, labels)
    return jnp.maximum(best + points.sq_norms, 0.0), labels


@functools.cache
def _cluster_totals(k: int):
    """segment_sum(values [n, m], labels [n], k) -> [k, m], whose vmap sums into b * k
    segments of one flat segment_sum: XLA's batched scatter is several times slower on CPU."""

    @jax.custom_batching.custom_vmap
    def totals(values, labels):
        return jax.ops.segment_sum(values, labels, k)

    @totals.def_vmap
    def _(axis_size, in_batched, values, labels):
        values, labels = (
            a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, batched in zip((values, labels), in_batched, strict=True)
        )
        labels = labels + k * jnp.arange(axis_size, dtype=labels.dtype)[:, None]
        flat = _cluster_totals(axis_size * k)(values.reshape(-1, values.shape[-1]), labels.ravel())
        return flat.reshape(axis_size, k, -1), True

    return totals


def _sample(key, mass: jax.Array, shape) -> jax.Array:
    """Indices drawn with probability proportional to mass (uniform over w > 0 if mass is 0)."""
    cumulative = jnp.cumsum(mass)
    u = jax.random.uniform(key, shape, mass.dtype) * cumulative[-1]
    return jnp.minimum(jnp.searchsorted(cumulative, u, side="right"), mass.shape[0] - 1)


def _kmeans_plus_plus(points: _Points, n_clusters: int, key) -> jax.Array:
    """Greedy k-means++ seeding (scikit-learn's): 2 + log(k) candidates per new centroid."""
    n_trials = 2 + int(math.log(n_clusters))
    key, first_key = jax.random.split(key)
    first = _sample(first_key, points.w, ())
    centroids = (
        jnp.zeros((n_clusters, points.x.shape[1]), points.x.dtype).at[0].set(points.x[first])
    )
    closest = jnp.maximum(
        points.sq_norms
        - 2.0 * jnp.dot(points.x[first], points.xt, precision=_HIGHEST)
        + points.sq_norms[first],
        0.0,
    )

    def add_centroid(i, carry):
        centroids, closest = carry
        mass = points.w * closest
        mass = jnp.where(jnp.sum(mass) > 0, mass, points.w)
        candidates = _sample(jax.random.fold_in(key, i), mass, (n_trials,))
        c = points.x[candidates]  # [n_trials, d]
        dist = (
            points.sq_norms
            - 2.0 * jnp.dot(c, points.xt, precision=_HIGHEST)
            + jnp.sum(c**2, axis=1)[:, None]
        )
        dist = jnp.minimum(closest, jnp.maximum(dist, 0.0))
        best = jnp.argmin(jnp.dot(dist, points.w, precision=_HIGHEST))
        return centroids.at[i].set(c[best]), dist[best]

    centroids, _ = lax.fori_loop(1, n_clusters, add_centroid, (centroids, closest))
    return centroids


def _random_init(points: _Points, n_clusters: int, key) -> jax.Array:
    total = jnp.sum(points.w)
    p = points.w / jnp.where(total > 0, total, 1.0)
    index = jax.random.choice(key, points.x.shape[0], (n_clusters,), replace=False, p=p)
    return points.x[index]


def _seed(points: _Points, n_clusters: int, key, init: str) -> jax.Array:
    if init == "k-means++":
        return _kmeans_plus_plus(points, n_clusters, key)
    return _random_init(points, n_clusters, key)


def _update(points, centroids, labels, sq_dist, n_active):
    """New centroids: weighted means, empty clusters moved to the farthest points."""
    k, d = centroids.shape
    totals = _cluster_totals(k)(points.xw, labels)  # [k, d + 1]: sum of w * x, sum of w
    empty = (totals[:, d] <= 0) & (jnp.arange(k) < n_active)

    def relocate(totals):
        # scikit-learn's rule: the i-th empty cluster takes the i-th farthest point, which
        # leaves the cluster it was assigned to.
        _, farthest = lax.top_k(jnp.where(points.w > 0, sq_dist, -1.0), k)
        far = farthest[jnp.maximum(jnp.cumsum(empty) - 1, 0)]  # [k] point taken by each cluster
        moved = jnp.where(empty[:, None], points.xw[far], 0.0)  # [k, d + 1]
        return jnp.where(empty[:, None], moved, totals) - _cluster_totals(k)(moved, labels[far])

    totals = lax.cond(jnp.any(empty), relocate, lambda totals: totals, totals)
    sums, counts = totals[:, :d], totals[:, d]
    safe_counts = jnp.where(counts > 0, counts, 1.0)
    return jnp.where(counts[:, None] > 0, sums / safe_counts[:, None], centroids)


def _lloyd(points: _Points, centroids: jax.Array, n_active, max_iter: int) -> KMeansResult:
    """Lloyd iterations from `centroids`, using only the first n_active of them."""
    n = points.x.shape[0]

    def cond(state: _State):
        return (state.n_iter < max_iter) & ~state.converged

    def body(state: _State) -> _State:
        sq_dist, labels = _nearest(points, state.centroids, n_active)
        centroids = _update(points, state.centroids, labels, sq_dist, n_active)
        shift = jnp.sum((centroids - state.centroids) ** 2)
        return _State(
            centroids=centroids,
            labels=labels,
            n_iter=state.n_iter + 1,
            converged=jnp.all(labels == state.labels) | (shift <= points.tol),
            inertia_history=state.inertia_history.at[state.n_iter].set(
                jnp.dot(points.w, sq_dist, precision=_HIGHEST)
            ),
        )

    state = lax.while_loop(
        cond,
        body,
        _State(
            centroids=centroids,
            labels=jnp.full((n,), -1, jnp.int32),
            n_iter=jnp.zeros((), jnp.int32),
            converged=jnp.zeros((), bool),
            inertia_history=jnp.full((max_iter,), jnp.nan, points.x.dtype),
        ),
    )
    _, labels = _nearest(points, state.centroids, n_active)
    residual = points.x - state.centroids[labels]  # exact distances for the reported inertia
    return KMeansResult(
        centroids=state.centroids,
        labels=labels,
        inertia=jnp.dot(points.w, jnp.sum(residual**2, axis=1), precision=_HIGHEST),
        n_iter=state.n_iter,
        converged=state.converged,
        inertia_history=state.inertia_history,
    )


@functools.partial(jax.jit, static_argnames=("n_clusters", "init", "n_init", "max_iter"))
def _fit_seeded(x, sample_weight, key, tol, *, n_clusters, init, n_init, max_iter):
    points = _prepare(x, sample_weight, tol)

    def run(key):
        return _lloyd(points, _seed(points, n_clusters, key, init), n_clusters, max_iter)

    if n_init == 1:
        return run(key)
    runs = jax.vmap(run)(jax.random.split(key, n_init))
    best = jnp.argmin(runs.inertia)
    return jax.tree.map(lambda a: a[best], runs)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit_from(x, sample_weight, centroids, tol, *, max_iter):
    points = _prepare(x, sample_weight, tol)
    return _lloyd(points, centroids, centroids.shape[0], max_iter)


def fit(
    x,
    n_clusters: int,
    key,
    *,
    init="k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    sample_weight=None,
) -> KMeansResult:
    """K-means of the rows of `x` by Lloyd's algorithm.

    Args:
      x: [n, d] float points.
      n_clusters: number of clusters k (static), 1 <= k <= number of points of positive weight.
      key: PRNG key for the seeding.
      init: "k-means++" (greedy, as scikit-learn), "random" (k distinct points drawn with
        probability proportional to sample_weight), both static; or a [k, d] array of initial
        centroids (then `key` is unused and n_init must be 1).
      n_init: restarts (static), run in parallel with keys split from `key`; the lowest inertia
        wins.
      max_iter: maximum Lloyd iterations per run (static).
      tol: stop when the summed squared centroid shift is <= tol * mean over features of the
        (sample_weight-weighted) variance of `x`, scikit-learn's rule; also stop when the labels
        do not change.
      sample_weight: optional [n] weights >= 0; 0 masks a point.

    Returns:
      KMeansResult.

    Raises:
      ValueError: wrong shapes, k out of range, unknown init, NaN/inf features or negative or
        all-zero weights (values are checked only when concrete). Under tracing, rows with
        NaN/inf and negative weights are masked instead; an all-masked input gives inertia 0
        and centroids taken from the (masked) points, without NaN.
    """
    x, sample_weight = check_input(x, n_clusters, sample_weight)
    _check_options(max_iter, tol)
    if isinstance(init, str):
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS} or a [k, d] array, got {init!r}")
        if operator.index(n_init) < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        return _fit_seeded(
            x,
            sample_weight,
            key,
            tol,
            n_clusters=n_clusters,
            init=init,
            n_init=n_init,
            max_iter=max_iter,
        )
    centroids = jnp.asarray(init, jnp.float32)
    if centroids.shape != (n_clusters, x.shape[1]):
        raise ValueError(
            f"init centroids must have shape ({n_clusters}, {x.shape[1]}), got {centroids.shape}"
        )
    if n_init != 1:
        raise ValueError(f"n_init must be 1 when init is an array, got {n_init}")
    if _is_concrete(centroids) and not np.isfinite(np.asarray(centroids)).all():
        raise ValueError("init centroids contain NaN or inf")
    return _fit_from(x, sample_weight, centroids, tol, max_iter=max_iter)


@jax.jit
def predict(x, centroids) -> jax.Array:
    """Index [n] int32 of the nearest of `centroids` [k, d] for each row of `x` [n, d]."""
    x = jnp.asarray(x, jnp.float32)
    points = _prepare(x, None, 0.0)
    return _nearest(points, jnp.asarray(centroids, jnp.float32), centroids.shape[0])[1]


def _kneedle(candidates: jax.Array, inertia: jax.Array, scale) -> jax.Array:
    """Distance of each point below the chord from the first to the last point of the curve,
    with K and inertia both scaled to [0, 1] (kneedle's difference curve); all 0 when the
    curve drops by at most 1e-6 * scale (rounding noise: a flat curve)."""
    span = jnp.maximum(candidates[-1] - candidates[0], 1)
    position = (candidates - candidates[0]) / span
    drop = inertia[0] - inertia[-1]
    chord = inertia[0] - drop * position
    flat = drop <= 1e-6 * scale
    return jnp.where(flat, 0.0, (chord - inertia) / jnp.where(flat, 1.0, drop))


@functools.partial(jax.jit, static_argnames=("k_min", "k_max", "init", "max_iter"))
def _elbow(x, sample_weight, key, tol, *, k_min, k_max, init, max_iter):
    points = _prepare(x, sample_weight, tol)
    # The seeds of K are the first K seeds of k_max: k-means++ adds centroids one at a time.
    seeds = _seed(points, k_max, key, init)
    candidates = jnp.arange(k_min, k_max + 1, dtype=jnp.int32)
    fits = jax.vmap(lambda k: _lloyd(points, seeds, k, max_iter))(candidates)
    # Inertia is resolved to about float32 epsilon times the summed squared norms.
    scale = jnp.dot(points.w, points.sq_norms, precision=_HIGHEST)
    score = _kneedle(candidates, fits.inertia, scale)
    unused = jnp.arange(k_max)[None, :] >= candidates[:, None]
    return ElbowResult(
        n_clusters=candidates[jnp.argmax(score)],
        candidates=candidates,
        inertia=fits.inertia,
        score=score,
        centroids=jnp.where(unused[:, :, None], 0.0, fits.centroids),
        labels=fits.labels,
        n_iter=fits.n_iter,
        converged=fits.converged,
        inertia_history=fits.inertia_history,
    )


def elbow(
    x,
    key,
    *,
    k_min: int = 2,
    k_max: int = 10,
    init: str = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    sample_weight=None,
) -> ElbowResult:
    """Chooses the number of clusters by the elbow of the inertia curve, in one compiled call.

    Every K in k_min..k_max is fitted by `fit`'s Lloyd iterations (vmapped over K, each K using
    the first K of one k-means++ seeding for k_max, with 2 + log(k_max) candidates per centroid).
    The rule (kneedle): scale K and inertia to [0, 1] between the first and last K, and choose
    the first K whose inertia lies farthest below the straight chord joining the two ends. A
    curve that drops by at most 1e-6 of sum(sample_weight * |x|^2), float32's resolution of the
    inertia, is flat (e.g. a one-colour image) and gives k_min.

    Args:
      x, init, max_iter, tol, sample_weight: as in `fit` (init a string only).
      key: PRNG key for the seeding.
      k_min, k_max: the range of K (static), 1 <= k_min <= k_max.

    Returns:
      ElbowResult; `.best` is the fit of the chosen K.
    """
    if not 1 <= operator.index(k_min) <= operator.index(k_max):
        raise ValueError(f"need 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    x, sample_weight = check_input(x, k_max, sample_weight, name="k_max")
    _check_options(max_iter, tol)
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    return _elbow(
        x, sample_weight, key, tol, k_min=k_min, k_max=k_max, init=init, max_iter=max_iter
    )
