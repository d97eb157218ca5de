"""cnn_refined (the recommended CNN): superpixel-refined labels, its own settings, bad settings."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxseg import cnn, data, features, hierarchy, pipeline, slic, stages


def _piecewise(kind: str, seed: int, size: int = 48, sigma: float = 0.05):
    """A piecewise-constant colour image with Gaussian noise, and its region map."""
    rows, cols = np.mgrid[:size, :size]
    if kind == "three":  # issue 11's image: three flat colour regions
        truth = (rows >= size // 2).astype(int) + (cols >= size // 2) * (rows >= size // 2)
    elif kind == "disc":  # a disc on a background, cut by a vertical border
        truth = ((rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 4) ** 2).astype(int)
        truth = np.where((cols < size // 5) & (truth == 0), 2, truth)
    else:  # four quadrants
        truth = (rows >= size // 2) * 2 + (cols >= size // 2)
    colours = np.random.default_rng(seed).uniform(0.1, 0.9, (truth.max() + 1, 3))
    colours[1] = np.clip(colours[0] + np.array([0.35, -0.3, 0.3]), 0.05, 0.95)
    noise = np.random.default_rng(seed + 1).normal(0, sigma, (size, size, 3))
    return np.clip(colours[truth] + noise, 0, 1).astype(np.float32), truth


def _worst_region_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    best = []
    for region in np.unique(truth):
        inside = truth == region
        best.append(
            max(
                np.sum(inside & (labels == lab)) / np.sum(inside | (labels == lab))
                for lab in np.unique(labels)
            )
        )
    return min(best)


@pytest.mark.parametrize(("kind", "size"), [("three", 48), ("disc", 96), ("quadrants", 48)])
def test_recovers_noisy_piecewise_constant_regions(kind, size):
    # Issue 11's target: every true region's best IoU >= 0.9, with cnn_refined's own settings
    # (the published CNN fragments the three-region 48 x 48 image: best IoU 0.62-0.77). The
    # disc is 96 x 96: cnn_refined fits on the image shrunk (by 0.75), and a 12-pixel disc
    # scaled back up from 2 x 2 blocks scores 0.89 from its jagged border alone.
    image, truth = _piecewise(kind, seed=3, size=size)
    labels = np.asarray(pipeline.segment(image, "cnn_refined", key=jax.random.key(0)))
    assert labels.shape == truth.shape
    assert _worst_region_iou(labels, truth) >= 0.9


def test_output_refined_on_full_size_superpixels():
    # output_superpixel_size > 0: the fit's labels, scaled up, voted on full-size superpixels.
    image, _ = _piecewise("quadrants", seed=3, size=48)
    options = pipeline.Options(output_superpixel_size=24)
    mask = np.ones((1, 48, 48), bool)
    labels, fit = stages.RefinedCNN(options).fit(image[None], mask, jax.random.key(0)[None])
    assert labels.labels.shape == (1, 48, 48) and fit.labels.shape == (1, 36, 36)
    assert 1 <= int(fit.n_iter[0]) <= options.refined.max_iter
    superpixels = slic.segment_batch(image[None], n_segments=96, compactness=10.0, mask=mask)
    pairs = np.unique(np.stack([superpixels.labels[0].ravel(), labels.labels[0].ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # one label per superpixel


@pytest.mark.parametrize(("space", "scale"), [("lab", 1.0), ("rgb", 1.0), ("lab", 2.0)])
def test_full_size_output_is_the_fitted_network_at_output_scale(space, scale):
    # full_size_output: the fitted net's argmax on the image scaled by output_scale (2 by
    # default), sampled back to full size (nearest; pixel refining), so the disc's border is
    # not made of 2 x 2 blocks (those alone cap its IoU at ~0.89; measured 0.96-0.99 over 3
    # keys at scale 1), seeing the image in refined_space.
    image, truth = _piecewise("disc", seed=3, size=96)
    options = pipeline.Options(output_scale=scale, refined_space=space)
    mask = np.ones((1, 96, 96), bool)
    labels, fit = stages.RefinedCNN(options).fit(image[None], mask, jax.random.key(0)[None])
    labels = np.asarray(labels.labels[0])
    assert labels.shape == truth.shape and fit.labels.shape == (1, 72, 72)
    assert _worst_region_iou(labels, truth) >= 0.94
    params = jax.tree.map(lambda x: x[0], fit.params)
    size = round(96 * scale)
    scaled = np.clip(jax.image.resize(image, (size, size, 3), "linear", antialias=True), 0, 1)
    seen = features.unit_lab(scaled) if space == "lab" else scaled
    direct = cnn.response(params, seen[None])[0].argmax(-1)
    direct = np.asarray(jax.image.resize(direct, (96, 96), "nearest"))
    # Same computation up to XLA's fusion: the partitions agree on (almost) every pixel.
    pairs, counts = np.unique(
        np.stack([labels.ravel(), direct.ravel()]), axis=1, return_counts=True
    )
    agree = sum(counts[pairs[0] == lab].max() for lab in np.unique(labels))
    assert agree >= 0.99 * labels.size
    assert pipeline.Options().output_scale == 2.0


def test_split_refines_the_cnn_labels():
    # The default plan's host stage cuts the CNN's labels (split_threshold=0: the plan without
    # it) along the image's own hierarchy: every piece lies inside one CNN label (one fit, so
    # no two compilations are compared), and segment_batch, pure and on device, refuses it.
    image, _ = _piecewise("disc", seed=3, size=96)
    key = jax.random.key(0)
    whole = np.asarray(pipeline.segment(image, "cnn_refined", key=key, split_threshold=0.0))
    for oversegmentation in stages.SPLIT_OVERSEGMENTATIONS:
        _, stage = pipeline.plan(
            "cnn_refined", options=pipeline.Options(split_oversegmentation=oversegmentation)
        )
        assert stage.oversegmentation == oversegmentation
        split = stage(image, pipeline.stage_keys(key[None], 1)[0], whole)
        pairs = np.unique(np.stack([split.ravel(), whole.ravel()]), axis=1)
        assert pairs.shape[1] == split.max() + 1 >= whole.max() + 1
    with pytest.raises(ValueError, match="host stage"):
        pipeline.segment_batch(image[None], jax.random.key(0)[None], method="cnn_refined")


def test_auto_split_takes_slic_unless_its_cut_fragments_the_image():
    # On the small three-region image SLIC's cut fragments the flat regions (8 regions against
    # the watershed's 3): "auto" falls back to the watershed's hierarchy. On a photograph the
    # cuts have about as many regions (3096: 8 and 7) and "auto" keeps SLIC's. The same calls
    # in one process: equal results.
    key = jax.random.key(0)

    def ucm2s(image):
        return {
            name: stages.Split(0.75, 0.01, name).ucm2(image, key)
            for name in stages.SPLIT_OVERSEGMENTATIONS
        }

    noisy, _ = _piecewise("three", seed=3, size=48)
    photo = data.load_dataset("samples")[3].image  # 3096
    for image, chosen in ((noisy, "watershed"), (photo, "slic")):
        by = ucm2s(image)
        counts = {n: hierarchy.labels_at(u, 0.75).max() + 1 for n, u in by.items()}
        assert (counts["slic"] > 1.5 * counts["watershed"]) == (chosen == "watershed")
        np.testing.assert_array_equal(by["auto"], by[chosen])


def test_refined_labels_are_constant_on_superpixels():
    labels = np.array([[0, 0, 1, 1], [0, 2, 1, 1]], np.int32)
    segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.int32)
    refined = np.asarray(cnn.refine_labels(labels, segments, 2, 3))
    np.testing.assert_array_equal(refined, [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_plan_and_settings():
    options = pipeline.Options()
    assert options.refined == cnn.Config.refined()
    stage, split = pipeline.plan("cnn_refined", options=options)
    assert isinstance(stage, stages.RefinedCNN) and stage.bound == options.refined.n_channels
    assert split == stages.Split(0.75, 0.01, "auto") and stages.is_host(split)
    unsplit = dataclasses.replace(options, split_threshold=0.0)
    assert pipeline.plan("cnn_refined", options=unsplit) == (stages.RefinedCNN(unsplit),)
    first, second = pipeline.plan("cnn_refined_kmeans", options=options)
    assert first == stage and isinstance(second, stages.Recluster)
    assert not pipeline.takes_k("cnn_refined") and pipeline.takes_k("cnn_refined_kmeans")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("superpixel_size", 0, "superpixel_size"),
        ("compactness", 0.0, "compactness"),
        ("compactness", float("nan"), "compactness"),
        ("refined_scale", 0.0, "refined_scale"),
        ("refined_scale", 1.5, "refined_scale"),
        ("output_superpixel_size", -1, "output_superpixel_size"),
        ("full_size_output", "yes", "full_size_output"),
        ("output_scale", 0.5, "output_scale"),
        ("output_scale", float("inf"), "output_scale"),
        ("split_threshold", -0.1, "split_threshold"),
        ("split_threshold", 1.5, "split_threshold"),
        ("split_threshold", float("nan"), "split_threshold"),
        ("split_size_scale", 0.0, "split_size_scale"),
        ("split_oversegmentation", "felzenszwalb", "split_oversegmentation must be one of"),
        ("n_fits", 0, "n_fits must be an integer >= 1"),
        ("n_fits", 1.5, "n_fits must be an integer >= 1"),
        ("n_fits", True, "n_fits must be an integer >= 1"),
        ("refined_space", "hsv", "refined_space must be 'rgb' or 'lab'"),
        ("refined", "fast", "refined must be a jaxseg.cnn.Config"),
    ],
)
def test_bad_settings(field, value, match):
    with pytest.raises(ValueError, match=match):
        pipeline.Options(**{field: value})


def test_several_fits_need_the_full_size_output():
    with pytest.raises(ValueError, match="n_fits > 1 .* needs full_size_output"):
        pipeline.Options(n_fits=2, full_size_output=False)


def test_combine_fits_matches_channels_by_overlap():
    # Network 0 labels the left half 0 and the right half 1; network 1 says the same with its
    # channels renumbered (0 -> 2, 1 -> 0) and splits the right half over channels 0 and 3.
    left = np.arange(4)[None, :] < 2
    labels0 = np.where(left, 0, 1).repeat(2, 0)  # [2, 4]
    labels1 = np.where(left, 2, np.array([0, 0, 0, 3])).repeat(2, 0)
    responses = 5.0 * np.stack([np.eye(4)[labels0], np.eye(4)[labels1]])  # [2, 2, 4, 4]
    np.testing.assert_array_equal(cnn.combine_fits(responses), labels0)
    # One network, or two identical ones: network 0's argmax.
    np.testing.assert_array_equal(cnn.combine_fits(responses[:1]), labels0)
    np.testing.assert_array_equal(cnn.combine_fits(responses[[0, 0]]), labels0)


def test_combine_fits_sums_matched_softmaxes():
    # Hand-computed: two channels, four pixels. Network 1's channel 0 overlaps network 0's
    # channel 1 on two pixels and its 0 on one, so it becomes 1; its channel 1 becomes 0.
    r0 = np.array([[[2.0, 0.0], [0.2, 0.0], [0.0, 2.0], [0.0, 2.0]]])  # argmax 0, 0, 1, 1
    r1 = np.array([[[0.0, 2.0], [3.0, 0.0], [2.0, 0.0], [2.0, 0.0]]])  # argmax 1, 0, 0, 0
    # Pixel 1, where they disagree: network 0 gives its channel 0 sigmoid(0.2) = 0.55, network
    # 1 gives (matched) channel 1 sigmoid(3) = 0.95: 0.55 + 0.05 against 0.45 + 0.95.
    np.testing.assert_array_equal(cnn.combine_fits(np.stack([r0, r1])), [[0, 1, 1, 1]])
    # Masked pixels do not count in the matching: without pixels 2 and 3, network 1's channel
    # 0 overlaps network 0's channel 0 only, so both its channels become 0.
    mask = np.array([[True, True, False, False]])
    np.testing.assert_array_equal(cnn.combine_fits(np.stack([r0, r1]), mask), [[0, 0, 0, 0]])


def test_combine_fits_rejects_bad_shapes():
    with pytest.raises(ValueError, match="responses must be"):
        cnn.combine_fits(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="responses must be"):
        cnn.combine_fits(np.zeros((0, 4, 4, 3)))
    with pytest.raises(ValueError, match="mask must be"):
        cnn.combine_fits(np.zeros((2, 4, 4, 3)), np.ones((4, 5), bool))


def test_several_fits_recover_noisy_regions():
    # Two networks per image, combined: still every true region's best IoU >= 0.9 on issue
    # 11's three-region image; the fit returned and the progress reported are the first
    # network's ([b] leading axes).
    image, truth = _piecewise("three", seed=3, size=48)
    options = pipeline.Options(n_fits=2)
    mask = np.ones((1, 48, 48), bool)
    labels, fit = stages.RefinedCNN(options).fit(image[None], mask, jax.random.key(0)[None])
    assert fit.n_iter.shape == (1,) and fit.labels.shape == (1, 36, 36)
    assert _worst_region_iou(np.asarray(labels.labels[0]), truth) >= 0.9
    # Run past the first report (every 25 iterations): one entry per image, not per fit.
    long = dataclasses.replace(options.refined, max_iter=26, min_labels=1, stop_change=0.0)
    reported = []
    stages.RefinedCNN(dataclasses.replace(options, refined=long)).fit(
        image[None],
        mask,
        jax.random.key(0)[None],
        progress=lambda iteration, n_labels, loss: reported.append(len(n_labels)),
    )
    assert reported == [1]
    split = np.asarray(pipeline.segment(image, "cnn_refined", key=jax.random.key(0), n_fits=2))
    assert _worst_region_iou(split, truth) >= 0.9
