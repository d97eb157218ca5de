"""Gaussian mixtures fitted by EM, as pure jit-compiled, vmappable functions.

`fit` follows scikit-learn's `GaussianMixture(init_params="kmeans")`, as the paper does: a
K-means partition gives the initial weights, means and covariances; EM then runs inside one
`lax.while_loop` until the mean log-likelihood per point changes by less than `tol`; the labels
are the MAP components under the final parameters. Log-densities go through Cholesky factors of
the precisions and logsumexp, so float32 stays stable.

Points are the rows of `x` [n, d] float32; `sample_weight` [n] (default 1) weights each point in
every sum (0 masks it), so the distinct colours of an image weighted by their pixel counts give
exactly the mixture of the full image. Covariances are [k, d, d] ("full"), [k, d] ("diag") or
[k] ("spherical"). As in `jaxseg.kmeans`, points are held as [d, n] and sums over the k
components are unrolled, which suits XLA on CPU.

`fit_from_labels(..., n_active=m)` fits m components in arrays sized for `n_components`: the
components from index m on have weight exactly 0 and take no part in the E-step, the M-step or
the log-likelihood. `n_active` may be traced, so one compilation with `n_components = k_max`
serves every K, and `vmap` fits images with different K together (as `jaxseg.kmeans.elbow`).
"""

import functools
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg import kmeans

__all__ = [
    "GMMResult",
    "bic",
    "fit",
    "fit_from_labels",
    "predict",
    "predict_proba",
    "score_samples",
]

_HIGHEST = lax.Precision.HIGHEST
_COVARIANCE_TYPES = ("full", "diag", "spherical")


class GMMResult(NamedTuple):
    """Result of `fit` (n points, k components, d features). Components at index >= n_active
    (`fit_from_labels`) have weight 0, mean 0 and identity covariance (1 for diag and
    spherical), so every field stays finite.

    Attributes:
      means: [k, d] float32.
      covariances: [k, d, d] (full), [k, d] (diag) or [k] (spherical) float32, reg_covar
        included.
      weights: [k] float32 mixing proportions, summing to 1.
      precisions_cholesky: Cholesky factors of the precisions, shaped as `covariances`; for
        "full" the upper-triangular U with precision = U U^T (scikit-learn's convention).
      labels: [n] int32 MAP component of each point under the final parameters.
      log_likelihood: [] float32 mean log-likelihood per (weighted) point under the final
        parameters, as scikit-learn's `score`.
      n_iter: [] int32 EM iterations run.
      converged: [] bool, True when the change of the mean log-likelihood fell below tol.
      log_likelihood_history: [max_iter] float32 mean log-likelihood before each M-step;
        NaN after `n_iter`.
    """

    means: jax.Array
    covariances: jax.Array
    weights: jax.Array
    precisions_cholesky: jax.Array
    labels: jax.Array
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    log_likelihood_history: jax.Array


class _Params(NamedTuple):
    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array


class _State(NamedTuple):
    params: _Params
    log_likelihood: jax.Array  # [] mean log-likelihood of the last E-step
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array  # [max_iter]


def _precisions_cholesky(covariances: jax.Array) -> jax.Array:
    if covariances.ndim < 3:
        return lax.rsqrt(covariances)
    lower = jnp.linalg.cholesky(covariances)
    eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype), lower.shape)
    return jnp.swapaxes(jax.scipy.linalg.solve_triangular(lower, eye, lower=True), -1, -2)


def _log_gaussian(xt: jax.Array, means: jax.Array, prec_chol: jax.Array) -> jax.Array:
    """Log-densities [k, n] of the points xt [d, n] under each component."""
    d = xt.shape[0]
    if prec_chol.ndim == 3:  # y_j = sum_i (x_i - mu_i) U_ij
        k = means.shape[0]
        y = jnp.dot(jnp.swapaxes(prec_chol, 1, 2).reshape(k * d, d), xt, precision=_HIGHEST)
        y = y.reshape(k, d, -1)
        offset = jnp.einsum("ki,kij->kj", means, prec_chol, precision=_HIGHEST)
        mahalanobis = sum((y[:, j] - offset[:, j, None]) ** 2 for j in range(d))
        log_det = jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
        return -0.5 * (d * math.log(2 * math.pi) + mahalanobis) + log_det[:, None]
    centred = [xt[i][None, :] - means[:, i, None] for i in range(d)]  # d x [k, n]
    if prec_chol.ndim == 2:
        mahalanobis = sum((centred[i] * prec_chol[:, i, None]) ** 2 for i in range(d))
        log_det = jnp.sum(jnp.log(prec_chol), axis=1)
    else:
        mahalanobis = sum(c**2 for c in centred) * prec_chol[:, None] ** 2
        log_det = d * jnp.log(prec_chol)
    return -0.5 * (d * math.log(2 * math.pi) + mahalanobis) + log_det[:, None]


def _e_step(xt, params: _Params):
    """log(weight) + log-density [k, n], its logsumexp over components [n], MAP labels [n]."""
    log_prob = jnp.log(params.weights)[:, None] + _log_gaussian(
        xt, params.means, params.precisions_cholesky
    )
    top, labels = log_prob[0], jnp.zeros(log_prob.shape[1], jnp.int32)
    for j in range(1, log_prob.shape[0]):  # unrolled max / argmax over the k rows
        higher = log_prob[j] > top
        top = jnp.where(higher, log_prob[j], top)
        labels = jnp.where(higher, j, labels)
    total = sum(jnp.exp(log_prob[j] - top) for j in range(log_prob.shape[0]))
    return log_prob, top + jnp.log(total), labels


def _m_step(x, xt, resp_w: jax.Array, active, covariance_type: str, reg_covar) -> _Params:
    """Parameters from weighted responsibilities resp_w [k, n] (scikit-learn's estimates) for
    the components where active [k] holds; the others (resp_w rows 0) get weight 0, mean 0 and
    identity covariance."""
    d = x.shape[1]
    nk = jnp.where(active, jnp.sum(resp_w, axis=1) + 10 * jnp.finfo(resp_w.dtype).eps, 0.0)
    safe_nk = jnp.where(active, nk, 1.0)  # [k]
    means = jnp.dot(resp_w, x, precision=_HIGHEST) / safe_nk[:, None]
    centred = [xt[i][None, :] - means[:, i, None] for i in range(d)]  # d x [k, n]
    # Second moments about the new means (raw moments lose too much in float32), as one
    # stacked reduction over the points: [k, pairs, n] -> [k, pairs].
    if covariance_type == "full":
        pairs = [(i, j) for i in range(d) for j in range(i, d)]
    else:
        pairs = [(i, i) for i in range(d)]
    moments = jnp.sum(jnp.stack([resp_w * centred[i] * centred[j] for i, j in pairs], 1), 2)
    diagonal = jnp.array([i == j for i, j in pairs], x.dtype)
    moments = moments / safe_nk[:, None] + reg_covar * diagonal
    moments = jnp.where(active[:, None], moments, diagonal)
    if covariance_type == "full":
        index = np.zeros((d, d), int)
        for p, (i, j) in enumerate(pairs):
            index[i, j] = index[j, i] = p
        covariances = moments[:, index]
    elif covariance_type == "diag":
        covariances = moments
    else:
        covariances = jnp.mean(moments, axis=1)
    return _Params(
        weights=nk / jnp.sum(nk),
        means=means,
        covariances=covariances,
        precisions_cholesky=_precisions_cholesky(covariances),
    )


def _em(
    x, sample_weight, labels, tol, reg_covar, n_active, *, n_components, covariance_type, max_iter
):
    x, w = kmeans.masked_points(x, sample_weight)
    total = jnp.sum(w)
    total = jnp.where(total > 0, total, 1.0)
    xt = x.T
    active = jnp.arange(n_components) < n_active
    one_hot = (labels[None, :] == jnp.arange(n_components)[:, None]) & active[:, None]
    params = _m_step(x, xt, jnp.where(one_hot, w, 0.0), active, covariance_type, reg_covar)

    def mean_log_likelihood(log_norm):
        return jnp.dot(w, log_norm, precision=_HIGHEST) / total

    def cond(state: _State):
        return (state.n_iter < max_iter) & ~state.converged

    def body(state: _State) -> _State:
        log_prob, log_norm, _ = _e_step(xt, state.params)
        log_likelihood = mean_log_likelihood(log_norm)
        resp_w = jnp.exp(log_prob - log_norm[None, :]) * w
        return _State(
            params=_m_step(x, xt, resp_w, active, covariance_type, reg_covar),
            log_likelihood=log_likelihood,
            n_iter=state.n_iter + 1,
            converged=jnp.abs(log_likelihood - state.log_likelihood) < tol,
            history=state.history.at[state.n_iter].set(log_likelihood),
        )

    state = lax.while_loop(
        cond,
        body,
        _State(
            params=params,
            log_likelihood=jnp.array(-jnp.inf, x.dtype),
            n_iter=jnp.zeros((), jnp.int32),
            converged=jnp.zeros((), bool),
            history=jnp.full((max_iter,), jnp.nan, x.dtype),
        ),
    )
    _, log_norm, labels = _e_step(xt, state.params)
    return GMMResult(
        means=state.params.means,
        covariances=state.params.covariances,
        weights=state.params.weights,
        precisions_cholesky=state.params.precisions_cholesky,
        labels=labels,
        log_likelihood=mean_log_likelihood(log_norm),
        n_iter=state.n_iter,
        converged=state.converged,
        log_likelihood_history=state.history,
    )


_STATIC = ("n_components", "covariance_type", "max_iter")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fit(x, sample_weight, key, tol, reg_covar, *, n_components, covariance_type, max_iter):
    labels = kmeans.fit(x, n_components, key, sample_weight=sample_weight).labels
    return _em(
        x,
        sample_weight,
        labels,
        tol,
        reg_covar,
        n_components,
        n_components=n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
    )


_fit_from_labels = jax.jit(_em, static_argnames=_STATIC)


def _check_options(covariance_type, tol, reg_covar, max_iter) -> None:
    if covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {_COVARIANCE_TYPES}, got {covariance_type!r}"
        )
    if operator.index(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not isinstance(tol, jax.core.Tracer) and not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    # reg_covar = 0 leaves the covariance of a cluster of fewer than d + 1 distinct points
    # singular: its Cholesky factor, means and log-likelihood become NaN.
    if not isinstance(reg_covar, jax.core.Tracer) and not (
        np.isfinite(reg_covar) and reg_covar > 0
    ):
        raise ValueError(f"reg_covar must be finite and > 0, got {reg_covar}")


def _check_result(result: GMMResult) -> GMMResult:
    """Raises ValueError when a concrete fit has non-finite parameters or log-likelihood."""
    if isinstance(result.log_likelihood, jax.core.Tracer):
        return result
    if not all(np.isfinite(np.asarray(a)).all() for a in (result.means, result.log_likelihood)):
        raise ValueError(
            "EM produced NaN or inf (a singular covariance or overflowing values): raise "
            "reg_covar or rescale x"
        )
    return result


def fit(
    x,
    n_components: int,
    key,
    *,
    covariance_type: str = "full",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    sample_weight=None,
) -> GMMResult:
    """Gaussian mixture of the rows of `x` by EM, initialised from K-means.

    The initial partition is `jaxseg.kmeans.fit(x, n_components, key,
    sample_weight=sample_weight)` (k-means++, one run, as scikit-learn's init_params="kmeans");
    see `fit_from_labels` to start from a partition of your own.

    Args:
      x: [n, d] float points.
      n_components: number of components k (static), 1 <= k <= number of points of positive
        weight.
      key: PRNG key for the K-means seeding.
      covariance_type: "full", "diag" or "spherical" (static).
      tol: stop when the mean log-likelihood per point changes by less than tol between two
        iterations (scikit-learn's rule).
      reg_covar: added to the diagonal of every covariance, keeping them positive definite.
      max_iter: maximum EM iterations (static).
      sample_weight: optional [n] weights >= 0; 0 masks a point.

    Returns:
      GMMResult.

    Raises:
      ValueError: as `jaxseg.kmeans.fit` for the points and weights (values checked only when
        concrete; under tracing NaN/inf rows and negative weights are masked), or for an
        unknown covariance_type, max_iter < 1, negative tol, reg_covar <= 0, or (concrete
        input) a fit whose means or log-likelihood are not finite.
    """
    x, sample_weight = kmeans.check_input(x, n_components, sample_weight, name="n_components")
    _check_options(covariance_type, tol, reg_covar, max_iter)
    result = _fit(
        x,
        sample_weight,
        key,
        tol,
        reg_covar,
        n_components=n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
    )
    return _check_result(result)


def fit_from_labels(
    x,
    labels,
    n_components: int,
    *,
    n_active=None,
    covariance_type: str = "full",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    sample_weight=None,
) -> GMMResult:
    """As `fit`, but EM starts from the partition `labels` [n] (ints in [0, n_active)),
    e.g. `jaxseg.kmeans.elbow(...).best.labels`: weights, means and covariances are those of
    its clusters (an empty cluster gets mean 0 and covariance reg_covar, as scikit-learn).

    `n_active` (default `n_components`; may be traced, clipped to [1, n_components] under
    tracing) is the number of components fitted: the arrays are sized for `n_components`
    (static), the components at index >= n_active get weight 0 and take no part in EM, and
    points labelled >= n_active start unassigned. The result equals the fit with
    `n_components = n_active` up to float rounding, so `n_components = k_max` with a traced
    `n_active` fits every K with one compilation and vmaps over images with different K.
    """
    labels = jnp.asarray(labels)
    name = "n_components" if n_active is None else "n_active"
    if n_active is None:
        n_active = n_components
    elif not isinstance(n_active, jax.core.Tracer):
        if not 1 <= operator.index(n_active) <= n_components:
            raise ValueError(f"n_active must be in [1, {n_components}], got {n_active}")
    concrete_k = None if isinstance(n_active, jax.core.Tracer) else operator.index(n_active)
    x, sample_weight = kmeans.check_input(
        x, n_components if concrete_k is None else concrete_k, sample_weight, name=name
    )
    _check_options(covariance_type, tol, reg_covar, max_iter)
    if labels.shape != x.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integers of shape {x.shape[:1]}, got {labels.dtype} {labels.shape}"
        )
    if concrete_k is not None and not isinstance(labels, jax.core.Tracer):
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() >= concrete_k):
            raise ValueError(f"labels must lie in [0, {concrete_k}), got {values.min()}..")
    result = _fit_from_labels(
        x,
        sample_weight,
        labels,
        tol,
        reg_covar,
        jnp.clip(jnp.asarray(n_active, jnp.int32), 1, n_components),
        n_components=n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
    )
    return _check_result(result)


def _params(result: GMMResult) -> _Params:
    return _Params(result.weights, result.means, result.covariances, result.precisions_cholesky)


@jax.jit
def score_samples(x, result: GMMResult) -> jax.Array:
    """Log-likelihood [n] of each row of `x` [n, d] under the mixture `result`."""
    return _e_step(jnp.asarray(x, jnp.float32).T, _params(result))[1]


@jax.jit
def predict(x, result: GMMResult) -> jax.Array:
    """MAP component [n] int32 of each row of `x` [n, d] under the mixture `result`."""
    return _e_step(jnp.asarray(x, jnp.float32).T, _params(result))[2]


@jax.jit
def predict_proba(x, result: GMMResult) -> jax.Array:
    """Responsibilities [n, k] of the components for each row of `x` [n, d]."""
    log_prob, log_norm, _ = _e_step(jnp.asarray(x, jnp.float32).T, _params(result))
    return jnp.exp(log_prob - log_norm[None, :]).T


@jax.jit
def bic(x, result: GMMResult, *, sample_weight=None) -> jax.Array:
    """Bayesian information criterion of the mixture on `x` [n, d] (lower is better), as
    scikit-learn: -2 * total log-likelihood + n_parameters * log(number of points), with the
    points counted by sample_weight."""
    x = jnp.asarray(x, jnp.float32)
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    d = result.means.shape[1]
    k = jnp.sum(result.weights > 0)  # components of weight 0 (index >= n_active) are unused
    n_covariance = {3: k * d * (d + 1) // 2, 2: k * d, 1: k}[result.covariances.ndim]
    n_parameters = n_covariance + k * d + k - 1
    log_likelihood = jnp.dot(w, score_samples(x, result), precision=_HIGHEST)
    return -2.0 * log_likelihood + n_parameters * jnp.log(jnp.sum(w))
