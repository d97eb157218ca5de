"""jaxseg.gmm against scikit-learn, on synthetic blobs, under vmap/jit, and on bad input."""

import jax
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from jaxseg import features, gmm, kmeans


def _bsds_points(data_dir, name, step=4):
    image = np.asarray(Image.open(data_dir / "BSDS500" / "images" / "val" / f"{name}.jpg"))
    return np.asarray(features.pixel_features(image[::step, ::step]))


def _sklearn_init(x, labels, k, covariance_type, reg_covar=1e-6):
    """scikit-learn's initial parameters for a partition, computed independently in float64."""
    one_hot = np.eye(k)[labels]
    nk = one_hot.sum(0) + 10 * np.finfo(np.float64).eps
    means = one_hot.T @ x.astype(np.float64) / nk[:, None]
    covariances = np.stack(
        [(one_hot[:, j, None] * (x - means[j])).T @ (x - means[j]) / nk[j] for j in range(k)]
    ) + reg_covar * np.eye(x.shape[1])
    precisions = {
        "full": lambda: np.linalg.inv(covariances),
        "diag": lambda: 1.0 / np.diagonal(covariances, axis1=1, axis2=2),
        "spherical": lambda: 1.0 / np.diagonal(covariances, axis1=1, axis2=2).mean(1),
    }[covariance_type]()
    return {"weights_init": nk / nk.sum(), "means_init": means, "precisions_init": precisions}


@pytest.mark.parametrize(
    ("name", "covariance_type"), [("3096", "full"), ("42049", "diag"), ("42049", "spherical")]
)
def test_matches_sklearn_from_the_same_partition(data_dir, name, covariance_type):
    x = _bsds_points(data_dir, name)
    labels = np.asarray(kmeans.fit(x, 6, jax.random.key(0)).labels)
    ours = gmm.fit_from_labels(x, labels, 6, covariance_type=covariance_type)
    ref = GaussianMixture(
        6, covariance_type=covariance_type, **_sklearn_init(x, labels, 6, covariance_type)
    ).fit(x)
    assert float(ours.log_likelihood) == pytest.approx(ref.score(x), rel=1e-3)
    assert float(gmm.bic(x, ours)) == pytest.approx(ref.bic(x), rel=1e-3)
    assert np.mean(np.asarray(ours.labels) == ref.predict(x)) > 0.99
    assert ours.covariances.shape == ref.covariances_.shape
    np.testing.assert_allclose(np.asarray(ours.weights), ref.weights_, atol=1e-3)
    assert bool(ours.converged) and int(ours.n_iter) == ref.n_iter_


def test_recovers_blobs_and_its_helpers_agree():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [6, 0], [0, 6]], np.float32)
    scales = np.array([[0.5, 0.2], [0.2, 0.8], [0.4, 0.4]], np.float32)
    x = np.concatenate([rng.normal(c, s, (300, 2)) for c, s in zip(centres, scales, strict=True)])
    x = x.astype(np.float32)
    truth = np.repeat(np.arange(3), 300)
    result = gmm.fit(x, 3, jax.random.key(1), covariance_type="diag")
    assert adjusted_rand_score(truth, np.asarray(result.labels)) == 1.0
    order = np.argsort(np.asarray(result.means)[:, 0] + 10 * np.asarray(result.means)[:, 1])
    np.testing.assert_allclose(np.asarray(result.means)[order], centres[[0, 1, 2]], atol=0.1)
    np.testing.assert_allclose(np.sqrt(result.covariances)[order], scales, atol=0.06)
    np.testing.assert_array_equal(gmm.predict(x, result), result.labels)
    proba = np.asarray(gmm.predict_proba(x, result))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    mean_score = float(np.mean(gmm.score_samples(x, result)))
    assert mean_score == pytest.approx(float(result.log_likelihood), rel=1e-5)
    history = np.asarray(result.log_likelihood_history)
    n_iter = int(result.n_iter)
    assert np.isnan(history[n_iter:]).all() and np.all(np.diff(history[:n_iter]) > -1e-4)


def test_weighted_distinct_colours_give_the_full_image_mixture(data_dir):
    image = np.asarray(Image.open(data_dir / "BSDS500" / "images" / "val" / "3096.jpg"))[::4, ::4]
    dc = features.distinct_colours(image, size=features.count_distinct_colours(image))
    pixels = features.pixel_features(image)
    labels = kmeans.fit(pixels, 5, jax.random.key(0)).labels
    full = gmm.fit_from_labels(pixels, labels, 5)
    colour_labels = np.zeros(dc.colours.shape[0], np.int32)
    colour_labels[np.asarray(dc.inverse)] = np.asarray(labels)
    compressed = gmm.fit_from_labels(
        features.colour_features(dc.colours), colour_labels, 5, sample_weight=dc.counts
    )
    assert float(compressed.log_likelihood) == pytest.approx(float(full.log_likelihood), rel=1e-5)
    same = np.asarray(compressed.labels[dc.inverse]) == np.asarray(full.labels)
    assert same.mean() > 0.999


def test_vmap_over_a_masked_batch_agrees_with_one_by_one(data_dir):
    points = [_bsds_points(data_dir, "3096", 6), _bsds_points(data_dir, "42049", 6)]
    n = max(len(p) for p in points) + 50
    batch = np.full((len(points), n, 3), 0.25, np.float32)
    weights = np.zeros((len(points), n), np.float32)
    for i, p in enumerate(points):
        batch[i, : len(p)], weights[i, : len(p)] = p, 1.0
    keys = jax.random.split(jax.random.key(2), len(points))
    fit = jax.jit(jax.vmap(lambda x, w, k: gmm.fit(x, 4, k, sample_weight=w)))
    batched = fit(batch, weights, keys)
    for i, p in enumerate(points):
        single = gmm.fit(p, 4, keys[i])
        assert float(batched.log_likelihood[i]) == pytest.approx(
            float(single.log_likelihood), rel=1e-5
        )
        agree = np.asarray(batched.labels[i, : len(p)]) == np.asarray(single.labels)
        assert agree.mean() >= 0.999


def _labels(x, k, seed=0):
    return np.asarray(kmeans.fit(x, k, jax.random.key(seed)).labels)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_inactive_components_give_the_static_k_fit(data_dir, covariance_type):
    x = _bsds_points(data_dir, "3096", 6)
    labels = _labels(x, 4)
    static = gmm.fit_from_labels(x, labels, 4, covariance_type=covariance_type)
    masked = gmm.fit_from_labels(x, labels, 7, n_active=4, covariance_type=covariance_type)
    assert float(masked.log_likelihood) == pytest.approx(float(static.log_likelihood), rel=1e-5)
    assert np.mean(np.asarray(masked.labels) == np.asarray(static.labels)) >= 0.999
    assert int(masked.n_iter) == int(static.n_iter) and bool(masked.converged)
    assert float(gmm.bic(x, masked)) == pytest.approx(float(gmm.bic(x, static)), rel=1e-5)
    np.testing.assert_allclose(masked.weights[:4], static.weights, atol=1e-5)
    np.testing.assert_allclose(masked.means[:4], static.means, atol=1e-4)
    np.testing.assert_array_equal(masked.weights[4:], 0.0)
    np.testing.assert_array_equal(masked.means[4:], 0.0)
    assert np.asarray(masked.labels).max() < 4
    np.testing.assert_array_equal(np.asarray(gmm.predict_proba(x, masked))[:, 4:], 0.0)
    for leaf in jax.tree.leaves(masked._replace(log_likelihood_history=masked.means)):
        assert np.isfinite(np.asarray(leaf)).all()


def test_vmap_over_images_with_different_k_agrees_with_one_by_one(data_dir):
    points = [_bsds_points(data_dir, "3096", 8), _bsds_points(data_dir, "42049", 8)]
    ks = np.array([3, 5], np.int32)
    n = max(len(p) for p in points) + 40
    batch = np.full((len(points), n, 3), 0.5, np.float32)
    weights = np.zeros((len(points), n), np.float32)
    labels = np.full((len(points), n), 6, np.int32)  # padding labelled >= n_active: ignored
    for i, (p, k) in enumerate(zip(points, ks, strict=True)):
        batch[i, : len(p)], weights[i, : len(p)], labels[i, : len(p)] = p, 1.0, _labels(p, k)
    fit = jax.jit(
        jax.vmap(lambda x, w, y, k: gmm.fit_from_labels(x, y, 7, n_active=k, sample_weight=w))
    )
    batched = fit(batch, weights, labels, ks)
    for i, (p, k) in enumerate(zip(points, ks, strict=True)):
        single = gmm.fit_from_labels(p, labels[i, : len(p)], int(k))
        assert float(batched.log_likelihood[i]) == pytest.approx(
            float(single.log_likelihood), rel=1e-5
        )
        agree = np.asarray(batched.labels[i, : len(p)]) == np.asarray(single.labels)
        assert agree.mean() >= 0.999
        np.testing.assert_array_equal(batched.weights[i, k:], 0.0)


def test_one_compilation_serves_every_n_active():
    x = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
    gmm.fit_from_labels(x, np.arange(120) % 2, 6, n_active=2)
    size = gmm._fit_from_labels._cache_size()
    for k in (1, 4, 6):
        result = gmm.fit_from_labels(x, np.arange(120) % k, 6, n_active=k)
        assert np.count_nonzero(np.asarray(result.weights)) == k
    assert gmm._fit_from_labels._cache_size() == size


def test_second_call_does_not_recompile():
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    gmm.fit(x, 3, jax.random.key(0), tol=1e-3, reg_covar=1e-6)
    size = gmm._fit._cache_size()
    gmm.fit(x * 2.0, 3, jax.random.key(1), tol=1e-2, reg_covar=1e-5)
    assert gmm._fit._cache_size() == size


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_one_colour_image_gives_one_cluster_without_nan(covariance_type):
    x = features.pixel_features(np.full((10, 10, 3), 200, np.uint8))
    result = gmm.fit(x, 3, jax.random.key(0), covariance_type=covariance_type)
    assert np.unique(np.asarray(result.labels)).size == 1
    for leaf in jax.tree.leaves(result._replace(log_likelihood_history=result.means)):
        assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"covariance_type": "tied"}, "covariance_type"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"tol": float("nan")}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"sample_weight": np.zeros(6)}, "masked"),
    ],
)
def test_bad_input_raises(kwargs, message):
    x = np.arange(18, dtype=np.float32).reshape(6, 3)
    with pytest.raises(ValueError, match=message):
        gmm.fit(x, 2, jax.random.key(0), **kwargs)


def test_bad_points_and_labels_raise():
    x = np.arange(18, dtype=np.float32).reshape(6, 3)
    with pytest.raises(ValueError, match="n_components=7"):
        gmm.fit(x, 7, jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        gmm.fit(np.where(x == 4, np.inf, x), 2, jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        gmm.fit(x[None], 2, jax.random.key(0))
    with pytest.raises(ValueError, match="labels must lie"):
        gmm.fit_from_labels(x, np.array([0, 1, 2, 0, 1, 2]), 2)
    with pytest.raises(ValueError, match="labels must be integers"):
        gmm.fit_from_labels(x, np.zeros(5, np.int32), 2)
    for n_active in (0, 3):
        with pytest.raises(ValueError, match="n_active must be in"):
            gmm.fit_from_labels(x, np.zeros(6, np.int32), 2, n_active=n_active)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        gmm.fit_from_labels(x, np.array([0, 1, 2, 0, 1, 2]), 4, n_active=2)
