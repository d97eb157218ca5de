"""jaxseg.pipeline: every method as a plan, buckets and masks, batch independence, jit/vmap."""

import dataclasses
import functools
import logging

import jax
import numpy as np
import pytest

from jaxseg import cnn, pipeline, stages

# Few CNN iterations and channels, and few elbow candidates, keep compilation short.
TINY_CNN = dataclasses.replace(cnn.Config.paper(), n_channels=8, max_iter=4)
FAST = {"cnn": TINY_CNN, "k_max": 4}


def _regions(
    height: int, width: int, seed: int, n_regions: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy uint8 image of three or four regions and its true partition [h, w]."""
    truth = np.zeros((height, width), np.int32)
    truth[height // 2 :] = 1
    truth[:, : width // 3] = 2
    if n_regions == 4:
        truth[: height // 2, 2 * width // 3 :] = 3
    colours = np.array([[200, 40, 40], [40, 40, 200], [40, 190, 40], [220, 220, 60]])
    noise = np.random.default_rng(seed).integers(-12, 13, (height, width, 3))
    return np.clip(colours[truth] + noise, 0, 255).astype(np.uint8), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps are equal up to renaming labels."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _merges(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Whether every label of `fine` lies inside one label of `coarse`."""
    pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]


def test_prepare_round_trip_and_mask():
    image = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)  # portrait
    prepared = pipeline.prepare(image, pad_multiple=4)
    assert prepared.image.shape == (4, 8, 3) and prepared.image.dtype == np.uint8  # stays uint8
    np.testing.assert_array_equal(prepared.image[:3, :5], image.transpose(1, 0, 2))
    assert prepared.mask.sum() == 15 and prepared.mask[:3, :5].all()
    assert not prepared.image[~prepared.mask].any()  # zero padding
    labels = np.arange(32).reshape(4, 8)
    np.testing.assert_array_equal(prepared.restore(labels), labels[:3, :5].T)
    landscape = pipeline.prepare(image.transpose(1, 0, 2))
    np.testing.assert_array_equal(landscape.restore(labels), labels[:3, :5])
    assert pipeline.prepare(image, pad_multiple=4).bucket == prepared.bucket


@pytest.mark.parametrize("method", ["kmeans", "gmm", "kmeans_xy"])
def test_clusterings_recover_regions(method):
    image, truth = _regions(12, 15, seed=0)
    labels = pipeline.segment(image, method, key=jax.random.PRNGKey(0), n_clusters=3, **FAST)
    assert labels.shape == truth.shape and labels.dtype == np.int32
    assert _same_partition(np.asarray(labels), truth)


def test_elbow_finds_three_regions():
    image, truth = _regions(12, 15, seed=1)
    labels = np.asarray(pipeline.segment(image, "kmeans", key=jax.random.PRNGKey(1), **FAST))
    assert _same_partition(labels, truth)


@pytest.mark.parametrize("method", ["gmm_kmeans", "cnn_kmeans"])
def test_ensemble_only_merges_its_first_stage(method):
    # The ensemble's first stage uses the same key as the plain method, so its K-means stage
    # can only merge the plain method's segments (each pixel holds its segment's mean colour).
    image, _ = _regions(12, 15, seed=2)
    key = jax.random.PRNGKey(3)
    first = method.removesuffix("_kmeans")
    base = np.asarray(pipeline.segment(image, first, key=key, **FAST))
    ensemble = np.asarray(pipeline.segment(image, method, key=key, **FAST))
    assert _merges(base, ensemble)
    assert len(np.unique(ensemble)) <= len(np.unique(base))
    for labels in (base, ensemble):  # consecutive labels 0..n-1
        np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_plans():
    options = pipeline.Options(**FAST)
    # The ensembles extend their first method's plan (K by the elbow): a shared prefix.
    assert pipeline.plan("gmm_kmeans", 3, options)[0] == pipeline.plan("gmm", "elbow", options)[0]
    assert pipeline.plan("cnn_kmeans", 3, options)[:1] == pipeline.plan("cnn", 3, options)
    assert isinstance(pipeline.plan("cnn_kmeans", 3, options)[1], stages.Recluster)
    assert pipeline.plan("cnn_ce", options=options)[0].config.mu == 0
    assert pipeline.plan("cnn", options=options)[0].config.mu == TINY_CNN.mu
    assert pipeline.plan("gmm_xy", options=options)[0].options.xy_weight == pipeline.XY_WEIGHT
    assert isinstance(pipeline.plan("cnn", cnn_mode="dataset")[0], stages.ApplyCNN)
    assert [pipeline.takes_k(m) for m in pipeline.METHODS + pipeline.VARIANTS] == [
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
    ]
    hash(pipeline.plan("gmm_kmeans", "elbow", options))  # static arguments


def test_batched_equals_one_by_one():
    images = [_regions(12, 15, seed=s)[0] for s in range(3)] + [_regions(15, 12, seed=9)[0]]
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(0), np.arange(4))
    batched = pipeline.segment_images(images, "gmm_kmeans", keys=keys, **FAST)
    for image, key, labels in zip(images, keys, batched, strict=True):
        alone = pipeline.segment(image, "gmm_kmeans", key=key, **FAST)
        assert labels.shape == image.shape[:2]
        np.testing.assert_array_equal(labels, alone)


def test_gmm_batch_of_different_elbow_k_equals_one_by_one():
    # One vmapped GMM fit with each image's K traced (k_max components, the first K fitted).
    images = np.stack([_regions(12, 15, seed=4)[0], _regions(12, 15, seed=4, n_regions=4)[0]])
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    options = pipeline.Options(**{**FAST, "k_max": 6})
    batched = pipeline.segment_batch(images, keys, method="gmm", options=options)
    np.testing.assert_array_equal(batched.n_clusters, [3, 4])
    for i in range(2):
        alone = pipeline.segment_batch(
            images[i : i + 1], keys[i : i + 1], method="gmm", options=options
        )
        np.testing.assert_array_equal(batched.labels[i], alone.labels[0])


def test_segment_batch_under_jit_and_vmap():
    # segment_batch is pure: jit (static method / n_clusters / options / n_colours) and vmap
    # over a further leading axis give the eager labels.
    images = np.stack([_regions(12, 15, seed=s)[0] for s in range(4)]).reshape(2, 2, 12, 15, 3)
    keys = jax.random.split(jax.random.PRNGKey(5), 4).reshape(2, 2, -1)
    options = pipeline.Options(**FAST)
    static = {"method": "gmm", "n_clusters": 3, "options": options, "n_colours": 90}
    fn = functools.partial(pipeline.segment_batch, **static)
    eager = [fn(images[i], keys[i]) for i in range(2)]
    jitted = jax.jit(pipeline.segment_batch, static_argnames=tuple(static))(
        images[0], keys[0], **static
    )
    np.testing.assert_array_equal(jitted.labels, eager[0].labels)
    mapped = jax.vmap(fn)(images, keys)
    for i in range(2):
        np.testing.assert_array_equal(mapped.labels[i], eager[i].labels)
        np.testing.assert_array_equal(mapped.n_clusters[i], eager[i].n_clusters)


def test_mask_keeps_padding_out():
    image, _ = _regions(12, 15, seed=5)
    prepared = pipeline.prepare(image, pad_multiple=8)
    mask = prepared.mask
    garbage = np.where(mask[..., None], prepared.image, np.uint8(230))
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    options = pipeline.Options(**FAST)
    for method in ("kmeans", "gmm"):
        clean = pipeline.segment_batch(
            prepared.image[None], keys, mask[None], method=method, options=options
        )
        noisy = pipeline.segment_batch(
            garbage[None], keys, mask[None], method=method, options=options
        )
        np.testing.assert_array_equal(clean.labels[0][mask], noisy.labels[0][mask])
        assert not np.asarray(clean.labels[0])[~mask].any()


def test_cnn_padding_does_not_change_labels():
    image, _ = _regions(12, 15, seed=2)
    key = jax.random.PRNGKey(3)[None]
    exact = pipeline.segment_images([image], "cnn", keys=key, **FAST)[0]
    padded = pipeline.segment_images([image], "cnn", keys=key, pad_multiple=8, **FAST)[0]
    # Zero "same" padding and masked statistics make the padded fit the unpadded one, up to
    # float reduction order.
    assert np.mean(np.asarray(exact) == np.asarray(padded)) >= 0.99


def test_grey_rgba_and_float_images():
    image, _ = _regions(12, 15, seed=6)
    key = jax.random.PRNGKey(6)
    rgb = np.asarray(pipeline.segment(image, "kmeans", key=key, **FAST))
    rgba = np.concatenate([image, np.full((12, 15, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(pipeline.segment(rgba, "kmeans", key=key, **FAST), rgb)
    grey = image[..., 0]
    np.testing.assert_array_equal(
        pipeline.segment(grey, "kmeans", key=key, **FAST),
        pipeline.segment(np.repeat(grey[..., None], 3, -1), "kmeans", key=key, **FAST),
    )
    # Float input clusters every pixel instead of the distinct colours: the same partition.
    floats = pipeline.segment(image / 255, "kmeans", key=key, n_clusters=3, **FAST)
    ints = pipeline.segment(image, "kmeans", key=key, n_clusters=3, **FAST)
    assert _same_partition(np.asarray(floats), np.asarray(ints))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "watershed"}, "unknown method 'watershed'"),
        ({"n_clusters": 1}, "n_clusters must be >= 2"),
        ({"n_clusters": "many"}, "n_clusters must be an integer"),
        ({"n_clusters": 2.5}, "n_clusters must be an integer"),
        ({"colour": "hsv"}, r"unknown options \['colour'\]"),
        ({"space": "hsv"}, "space must be 'rgb' or 'lab'"),
        ({"k_min": 5, "k_max": 3}, "k_min <= k_max"),
        ({"covariance_type": "tied"}, "covariance_type must be one of"),
    ],
)
def test_bad_arguments(kwargs, message):
    image, _ = _regions(8, 8, seed=0)
    with pytest.raises(ValueError, match=message):
        pipeline.segment(image, key=jax.random.PRNGKey(0), **kwargs)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 2), np.uint8), r"must be \[h, w\], \[h, w, 3\] or \[h, w, 4\]"),
        (np.zeros((0, 0, 3), np.uint8), "image is empty"),
        (np.full((8, 8, 3), 2.0, np.float32), r"finite values in \[0, 1\]"),
        (np.full((8, 8, 3), np.nan, np.float32), r"finite values in \[0, 1\]"),
        (np.zeros((8, 8, 3), np.int64), "uint8 or float"),
    ],
)
def test_bad_images(image, message):
    with pytest.raises(ValueError, match=message):
        pipeline.segment(image, "kmeans", key=jax.random.PRNGKey(0))


def test_bad_pad_multiple():
    with pytest.raises(ValueError, match="pad_multiple must be >= 1"):
        pipeline.prepare(np.zeros((4, 4, 3), np.uint8), pad_multiple=0)


def test_cnn_stages_log_their_progress(caplog):
    # The runner's log shows long CNN fits as they run: one line per 25 device iterations.
    image, _ = _regions(12, 15, seed=3)
    config = dataclasses.replace(TINY_CNN, max_iter=26, min_labels=1)
    with caplog.at_level(logging.INFO, logger="jaxseg.stages"):
        pipeline.segment(image, "cnn", key=jax.random.key(0), cnn=config)
    lines = [r.getMessage() for r in caplog.records if "CNN iteration" in r.getMessage()]
    assert lines and lines[-1].startswith("  CNN iteration 25: labels per image [")
