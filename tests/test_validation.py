"""Bad settings and input that used to pass silently now raise a clear ValueError (issue 9)."""

import jax
import numpy as np
import pytest

from jaxseg import gmm, kmeans, metrics

KEY = jax.random.PRNGKey(0)


def test_gmm_without_regularisation_is_refused():
    # Two distinct points in 3-D: with reg_covar = 0 every covariance is singular (NaN before).
    x = np.array([[0.1, 0.2, 0.3], [0.6, 0.5, 0.4]], np.float32)
    with pytest.raises(ValueError, match="reg_covar must be finite and > 0"):
        gmm.fit(x, 1, KEY, reg_covar=0.0)
    assert np.isfinite(gmm.fit(x, 1, KEY).log_likelihood)


def test_overflowing_points_are_refused():
    x = np.random.default_rng(0).random((20, 3), dtype=np.float32) * np.float32(1e30)
    for fit in (
        lambda: kmeans.fit(x, 2, KEY),
        lambda: gmm.fit(x, 2, KEY),
        lambda: gmm.fit_from_labels(x, np.arange(20) % 2, 2),
    ):
        with pytest.raises(ValueError, match="squared norms overflow float32"):
            fit()
    assert np.isfinite(kmeans.fit(x / np.float32(1e30), 2, KEY).inertia)


@pytest.mark.parametrize("n_clusters", [2.5, "3", None])
def test_non_integer_k_is_a_value_error(n_clusters):
    x = np.random.default_rng(1).random((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="n_clusters must be an integer"):
        kmeans.fit(x, n_clusters, KEY)
    with pytest.raises(ValueError, match="n_components must be an integer"):
        gmm.fit(x, n_clusters, KEY)


def test_float_labels_name_their_dtype():
    x = np.random.default_rng(2).random((50, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(50,\), got float"):
        gmm.fit_from_labels(x, np.zeros(50, np.float32), 2)


def test_one_pixel_image_has_a_defined_pri():
    scores = metrics.image_metrics(np.zeros((1, 1), np.int32), [np.ones((1, 1), np.int32)])
    assert scores["pri"] == 1.0 and np.isfinite(scores["voi"])


def test_ucm_with_nan_is_refused():
    ucm2 = np.zeros((5, 5))
    ucm2[2, 2] = np.nan
    with pytest.raises(ValueError, match="ucm2 holds NaN or inf"):
        metrics.ucm_segmentation(ucm2, 0.5)
