"""jaxseg.kmeans against scikit-learn, on synthetic blobs, under vmap/jit, and on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from jaxseg import features, kmeans


def _bsds_pixels(data_dir, name, step=4):
    image = np.asarray(Image.open(data_dir / "BSDS500" / "images" / "val" / f"{name}.jpg"))
    return image[::step, ::step]


def _blobs(seed=0, n_per=200, centres=((0, 0), (5, 5), (0, 6), (6, 0))):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.4, (n_per, 2)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(len(centres)), n_per), np.asarray(centres, np.float32)


@pytest.mark.parametrize("name", ["3096", "42049"])
def test_matches_sklearn_from_same_initial_centroids(data_dir, name):
    x = np.asarray(features.pixel_features(_bsds_pixels(data_dir, name)))
    init = np.asarray(kmeans.fit(x, 8, jax.random.key(1), max_iter=1).centroids)
    ours = kmeans.fit(x, 8, jax.random.key(0), init=init)
    ref = KMeans(8, init=init, n_init=1, tol=1e-4, max_iter=300).fit(x)
    assert float(ours.inertia) == pytest.approx(ref.inertia_, rel=1e-3)
    assert np.mean(np.asarray(ours.labels) == ref.labels_) > 0.99
    assert np.allclose(np.asarray(ours.centroids), ref.cluster_centers_, atol=1e-3)
    assert bool(ours.converged)


def test_weighted_distinct_colours_give_the_full_image_objective(data_dir):
    image = _bsds_pixels(data_dir, "3096")
    dc = features.distinct_colours(image, size=features.count_distinct_colours(image))
    colours = features.colour_features(dc.colours)
    pixels = features.pixel_features(image)
    init = pixels[:: pixels.shape[0] // 5][:5]
    full = kmeans.fit(pixels, 5, None, init=init)
    compressed = kmeans.fit(colours, 5, None, init=init, sample_weight=dc.counts)
    assert float(compressed.inertia) == pytest.approx(float(full.inertia), rel=1e-5)
    assert np.mean(np.asarray(compressed.labels[dc.inverse]) == np.asarray(full.labels)) > 0.999
    ref = KMeans(5, init=np.asarray(init), n_init=1, tol=0.0).fit(
        np.asarray(colours), sample_weight=np.asarray(dc.counts)
    )
    assert float(compressed.inertia) == pytest.approx(ref.inertia_, rel=1e-3)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_recovers_blobs(init):
    x, truth, centres = _blobs()
    result = kmeans.fit(x, 4, jax.random.key(3), init=init, n_init=4)
    assert adjusted_rand_score(truth, np.asarray(result.labels)) == 1.0
    found = np.asarray(result.centroids)
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.1
    assert result.labels.dtype == jnp.int32 and result.centroids.shape == (4, 2)
    history = np.asarray(result.inertia_history)
    n_iter = int(result.n_iter)
    assert np.isnan(history[n_iter:]).all() and np.all(np.diff(history[:n_iter]) <= 1e-3)
    assert np.array_equal(kmeans.predict(x, result.centroids), result.labels)


def test_n_init_keeps_the_best_restart():
    x, _, _ = _blobs(seed=1, centres=((0, 0), (3, 0), (0, 3), (3, 3), (1.5, 1.5)))
    key = jax.random.key(7)
    best = kmeans.fit(x, 5, key, n_init=6)
    singles = [float(kmeans.fit(x, 5, k).inertia) for k in jax.random.split(key, 6)]
    assert float(best.inertia) == pytest.approx(min(singles), rel=1e-6)


def test_vmap_over_a_masked_batch_agrees_with_one_by_one(data_dir):
    images = [_bsds_pixels(data_dir, "3096", 6), _bsds_pixels(data_dir, "42049", 6)]
    points = [np.asarray(features.pixel_features(im)) for im in images]
    n = max(len(p) for p in points) + 37  # padding at the end, filled with garbage
    batch = np.full((len(points), n, 3), 0.5, np.float32)
    weights = np.zeros((len(points), n), np.float32)
    for i, p in enumerate(points):
        batch[i, : len(p)], weights[i, : len(p)] = p, 1.0
    keys = jax.random.split(jax.random.key(0), len(points))
    fit = jax.jit(jax.vmap(lambda x, w, k: kmeans.fit(x, 6, k, sample_weight=w)))
    batched = fit(batch, weights, keys)
    for i, p in enumerate(points):
        single = kmeans.fit(p, 6, keys[i])
        assert float(batched.inertia[i]) == pytest.approx(float(single.inertia), rel=1e-5)
        agree = np.asarray(batched.labels[i, : len(p)]) == np.asarray(single.labels)
        assert agree.mean() >= 0.999


def test_second_call_does_not_recompile():
    x, _, _ = _blobs()
    kmeans.fit(x, 4, jax.random.key(0), tol=1e-4)
    size = kmeans._fit_seeded._cache_size()
    kmeans.fit(x + 1.0, 4, jax.random.key(1), tol=1e-3)
    assert kmeans._fit_seeded._cache_size() == size


def test_one_colour_image_gives_one_cluster_without_nan():
    image = np.full((12, 9, 3), 77, np.uint8)
    result = kmeans.fit(features.pixel_features(image), 4, jax.random.key(0))
    assert np.unique(np.asarray(result.labels)).size == 1
    assert np.isfinite(np.asarray(result.centroids)).all()
    assert float(result.inertia) < 1e-8 and bool(result.converged)  # float32 mean of 108 pixels
    found = kmeans.elbow(features.pixel_features(image), jax.random.key(0), k_max=4)
    assert int(found.n_clusters) == 2 and np.isfinite(np.asarray(found.score)).all()


def test_empty_cluster_is_reseeded_at_the_farthest_point():
    x = np.array([[0.0], [0.1], [0.2], [10.0]], np.float32)
    init = np.array([[0.1], [100.0], [200.0]], np.float32)  # clusters 1 and 2 start empty
    result = kmeans.fit(x, 3, None, init=init)
    assert np.isfinite(np.asarray(result.centroids)).all()
    assert np.unique(np.asarray(result.labels)).size == 3
    assert float(result.inertia) == pytest.approx(0.005, abs=1e-6)  # {0}, {0.1, 0.2}, {10}


def test_under_jit_non_finite_rows_are_masked():
    x, _, _ = _blobs()
    noisy = x.copy()
    noisy[5] = np.nan
    noisy[9, 1] = np.inf
    keep = np.ones(len(x), bool)
    keep[[5, 9]] = False
    result = jax.jit(kmeans.fit, static_argnums=1)(noisy, 4, jax.random.key(0))
    clean = kmeans.fit(x, 4, jax.random.key(0), sample_weight=keep.astype(np.float32))
    assert np.isfinite(float(result.inertia))
    assert float(result.inertia) == pytest.approx(float(clean.inertia), rel=1e-5)


@pytest.mark.parametrize(
    ("x", "k", "kwargs", "message"),
    [
        (np.zeros((5, 3, 1), np.float32), 2, {}, "shape"),
        (np.zeros((5, 3), np.float32), 0, {}, "between 1"),
        (np.zeros((5, 3), np.float32), 6, {}, "between 1"),
        (np.array([[0.0], [np.nan], [1.0]], np.float32), 2, {}, "NaN"),
        (np.zeros((5, 3), np.float32), 2, {"sample_weight": np.zeros(5)}, "masked"),
        (np.zeros((5, 3), np.float32), 2, {"sample_weight": -np.ones(5)}, ">= 0"),
        (
            np.zeros((5, 3), np.float32),
            3,
            {"sample_weight": np.eye(5)[0] + np.eye(5)[1]},
            "2 points",
        ),
        (np.zeros((5, 3), np.float32), 2, {"sample_weight": np.ones(4)}, "shape"),
        (np.zeros((5, 3), np.float32), 2, {"init": "kmeans"}, "init"),
        (np.zeros((5, 3), np.float32), 2, {"init": np.zeros((3, 3))}, "init centroids"),
        (np.zeros((5, 3), np.float32), 2, {"init": np.zeros((2, 3)), "n_init": 2}, "n_init"),
        (np.zeros((5, 3), np.float32), 2, {"max_iter": 0}, "max_iter"),
        (np.zeros((5, 3), np.float32), 2, {"tol": -1.0}, "tol"),
        (np.zeros((5, 3), np.int32), 2, {}, "floating"),
    ],
)
def test_bad_input_raises(x, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans.fit(x, k, jax.random.key(0), **kwargs)


def test_kneedle_picks_the_corner_of_a_hand_made_curve():
    candidates = jnp.arange(2, 7)
    inertia = jnp.array([100.0, 30.0, 20.0, 15.0, 12.0])
    score = kmeans._kneedle(candidates, inertia, 500.0)
    # chord from (0, 100) to (1, 12); at K=3 (position 1/4) it is 78, 48 above the curve
    assert float(score[1]) == pytest.approx(48.0 / 88.0)
    assert int(jnp.argmax(score)) == 1 and float(score[0]) == 0.0
    flat = kmeans._kneedle(candidates, inertia * 1e-9, 500.0)  # drops by < 1e-6 * 500
    np.testing.assert_array_equal(np.asarray(flat), 0.0)


def test_elbow_finds_the_number_of_blobs_in_one_compile():
    x, truth, _ = _blobs(seed=2)
    found = kmeans.elbow(x, jax.random.key(0), k_min=2, k_max=8)
    assert int(found.n_clusters) == 4
    assert found.inertia.shape == (7,) and found.labels.shape == (7, len(x))
    assert adjusted_rand_score(truth, np.asarray(found.best.labels)) == 1.0
    assert np.all(np.asarray(found.centroids[0, 2:]) == 0.0)  # rows past K are unused
    residual = x - np.asarray(found.best.centroids)[np.asarray(found.best.labels)]
    assert float(found.best.inertia) == pytest.approx(float(np.sum(residual**2)), rel=1e-4)
    size = kmeans._elbow._cache_size()
    kmeans.elbow(x * 2.0, jax.random.key(1), k_min=2, k_max=8)
    assert kmeans._elbow._cache_size() == size
    ref = KMeans(4, n_init=10, random_state=0).fit(x).inertia_
    assert float(found.inertia[2]) == pytest.approx(ref, rel=1e-3)


def test_elbow_bad_range_raises():
    x, _, _ = _blobs()
    with pytest.raises(ValueError, match="k_min"):
        kmeans.elbow(x, jax.random.key(0), k_min=5, k_max=4)
    with pytest.raises(ValueError, match="k_max"):
        kmeans.elbow(x[:3], jax.random.key(0), k_min=2, k_max=4)


def test_elbow_under_vmap_agrees_with_one_by_one():
    x = np.stack([_blobs(seed=s, n_per=60)[0] for s in range(2)])
    weights = np.ones(x.shape[:2], np.float32)
    weights[1, -30:] = 0.0  # the second item's last points are padding
    keys = jax.random.split(jax.random.key(4), 2)
    batched = jax.vmap(lambda x, w, k: kmeans.elbow(x, k, k_max=6, sample_weight=w))(
        x, weights, keys
    )
    for i in range(2):
        single = kmeans.elbow(x[i], keys[i], k_max=6, sample_weight=weights[i])
        assert int(batched.n_clusters[i]) == int(single.n_clusters)
        np.testing.assert_allclose(np.asarray(batched.inertia[i]), single.inertia, rtol=1e-5)
