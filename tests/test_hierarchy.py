"""Hierarchies: valid ultrametric contour maps in the official format, nesting, bad input."""

import jax
import numpy as np
import pytest
import scipy.ndimage

from jaxseg import edges, hierarchy, metrics, pmi, slic

_SMALL_CUES = {
    "colour_radii": (2, 4),
    "texture_radii": (4,),
    "colour_histogram_radii": (2, 4),
    "n_textons": 4,
    "n_colour_bins": 4,
}


def _nested() -> tuple[np.ndarray, np.ndarray]:
    """64x64 image and its regions: a background, a big square, and inside it two small squares
    of their own colours, closer to the big square's colour than it is to the background's."""
    image = np.full((64, 64, 3), 30, np.uint8)
    truth = np.zeros((64, 64), np.int32)
    for label, (rows, cols, colour) in enumerate(
        [
            (slice(10, 54), slice(10, 54), (200, 60, 60)),
            (slice(18, 30), slice(18, 32), (230, 110, 90)),
            (slice(36, 46), slice(34, 46), (150, 40, 40)),
        ],
        start=1,
    ):
        image[rows, cols] = colour
        truth[rows, cols] = label
    return image, truth


@pytest.fixture(scope="module")
def nested():
    # Flat colours have no texture, and 12-pixel squares need thin discs and little smoothing:
    # the colour means' gradient alone (with the colour histograms at radii 1 and 2 too, the
    # smallest square's best IoU at the 4-region level was 0.82: their edge is wider).
    image, truth = _nested()
    return truth, hierarchy.hierarchical_segmentation(
        image,
        jax.random.key(0),
        boundary="local",
        sigma=0.5,
        **dict(_SMALL_CUES, colour_radii=(1, 2)),
        texture_weight=0.0,
        colour_histogram_weight=0.0,
    )


def _best_iou(truth: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Best IoU of every truth region with any region of `labels`."""
    table = metrics.contingency_table(truth, labels)
    union = table.sum(axis=1, keepdims=True) + table.sum(axis=0, keepdims=True) - table
    return (table / union).max(axis=1)


def _check_ucm2(ucm2: np.ndarray, shape: tuple[int, int]) -> None:
    h, w = shape
    assert ucm2.shape == (2 * h + 1, 2 * w + 1)
    assert ucm2.dtype == np.float64
    assert np.isfinite(ucm2).all() and ucm2.min() >= 0 and ucm2.max() <= 1
    np.testing.assert_array_equal(ucm2[1::2, 1::2], 0)  # pixel sites
    # Every site between four pixels is the largest of its four borders.
    corners = np.maximum(
        np.maximum(ucm2[1:-2:2, 2:-1:2], ucm2[3::2, 2:-1:2]),
        np.maximum(ucm2[2:-1:2, 1:-2:2], ucm2[2:-1:2, 3::2]),
    )
    np.testing.assert_array_equal(ucm2[2:-1:2, 2:-1:2], corners)


def _check_ultrametric(ucm2: np.ndarray) -> None:
    """Every cut yields closed regions (a border site is above the threshold exactly when its
    two pixels lie in different regions) and the cuts nest."""
    previous = None
    for threshold in [0.0, *np.unique(ucm2), 1.0]:
        labels = hierarchy.labels_at(ucm2, threshold)
        assert labels.min() == 0
        horizontal = ucm2[1::2, 2:-1:2] > threshold
        vertical = ucm2[2:-1:2, 1::2] > threshold
        np.testing.assert_array_equal(horizontal, labels[:, :-1] != labels[:, 1:])
        np.testing.assert_array_equal(vertical, labels[:-1, :] != labels[1:, :])
        # Regions are connected: relabelling 4-connected components changes nothing.
        assert metrics.connected_segments(labels)[1] == labels.max() + 1
        if previous is not None:
            # Nesting: every finer region lies inside one coarser region.
            table = metrics.contingency_table(previous, labels)
            assert ((table > 0).sum(axis=1) == 1).all()
        previous = labels


def _check_nested_levels(ucm2: np.ndarray, truth: np.ndarray, *, four_iou: float) -> None:
    """The four regions of `_nested` appear at some level, and the squares against the
    background at another."""
    levels = np.unique(ucm2)
    counts = [hierarchy.labels_at(ucm2, t).max() + 1 for t in levels]
    assert 4 in counts and 2 in counts, counts
    four = hierarchy.labels_at(ucm2, levels[counts.index(4)])
    assert _best_iou(truth, four).min() > four_iou
    two = hierarchy.labels_at(ucm2, levels[counts.index(2)])
    assert _best_iou((truth > 0).astype(np.int32), two).min() > 0.9


def test_nested_squares_give_a_valid_nested_hierarchy(nested):
    truth, result = nested
    _check_ucm2(result.ucm2, truth.shape)
    _check_ultrametric(result.ucm2)
    assert result.regions.shape == truth.shape and result.n_regions == result.regions.max() + 1
    # The four regions appear at some level (up to pixels near the edges, which the blurred cues
    # give to either side); the small squares join the big one before it joins the background.
    _check_nested_levels(result.ucm2, truth, four_iou=0.85)


def test_slic_regions_give_a_valid_nested_hierarchy():
    # The finest regions are SLIC's superpixels (100 of ~41 pixels on the 64 x 64 image); on
    # flat colours they follow the squares' edges, so the four-region and two-region levels
    # match the truth (best IoU 1.0 on the development machine).
    image, truth = _nested()
    result = hierarchy.hierarchical_segmentation(
        image,
        jax.random.key(0),
        boundary="local",
        oversegmentation="slic",
        superpixel_size=41,
        **dict(_SMALL_CUES, colour_radii=(1, 2)),
        texture_weight=0.0,
        colour_histogram_weight=0.0,
    )
    np.testing.assert_array_equal(
        result.regions, np.asarray(slic.segment(image, n_segments=100).labels)
    )
    _check_ucm2(result.ucm2, truth.shape)
    _check_ultrametric(result.ucm2)
    levels = np.unique(result.ucm2)
    counts = [hierarchy.labels_at(result.ucm2, t).max() + 1 for t in levels]
    assert counts[0] == result.n_regions > 4
    four = hierarchy.labels_at(result.ucm2, levels[counts.index(4)])
    assert _best_iou(truth, four).min() > 0.95
    two = hierarchy.labels_at(result.ucm2, levels[counts.index(2)])
    assert _best_iou((truth > 0).astype(np.int32), two).min() > 0.95


def test_ucm2_works_with_the_official_region_benchmark(nested):
    truth, result = nested
    thresholds = metrics.ucm_thresholds(19)
    stats = [
        [
            metrics.region_stats(
                metrics.ucm_segmentation(result.ucm2, t), truth + 1, official_labels=True
            )
            for t in thresholds
        ]
    ]
    bench = metrics.aggregate_region_stats(stats, thresholds)
    assert bench.ois_covering > 0.85
    assert bench.ois_pri > 0.9


@pytest.mark.parametrize("count_weight", [0.0, 0.5, 1.0])
def test_hierarchy_from_labels_starts_from_the_segments(count_weight):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(16, 20))
    strength = rng.uniform(size=(16, 20))
    ucm2 = hierarchy.hierarchy_from_labels(
        labels,
        strength,
        rng.uniform(size=(16, 20, 3)),
        feature_weight=1.0,
        size_power=0.5,
        count_weight=count_weight,
    )
    _check_ucm2(ucm2, labels.shape)
    _check_ultrametric(ucm2)
    finest = hierarchy.labels_at(ucm2, 0.0)
    segments, n = metrics.connected_segments(labels)
    assert finest.max() + 1 == n
    table = metrics.contingency_table(segments, finest)
    assert ((table > 0).sum(axis=1) == 1).all() and ((table > 0).sum(axis=0) == 1).all()
    assert hierarchy.labels_at(ucm2, 1.0).max() == 0  # everything joins at the top


def test_merge_order_follows_mean_border_strength():
    # Three vertical stripes; the left border is weak, the right one strong.
    regions = np.repeat([[0, 0, 1, 1, 2, 2]], 4, axis=0)
    strength = np.zeros((4, 6))
    strength[:, 1:3] = 0.2
    strength[:, 3:5] = 0.8
    ucm2 = hierarchy.ucm_from_regions(regions, strength)
    np.testing.assert_allclose(ucm2[1::2, 4], 1 - np.exp(-0.2))
    np.testing.assert_allclose(ucm2[1::2, 8], 1 - np.exp(-0.8))
    np.testing.assert_array_equal(hierarchy.labels_at(ucm2, 0.5), [[0, 0, 0, 0, 1, 1]] * 4)


def test_texton_histograms_are_compared_by_chi_squared():
    # Two regions, colours equal, disjoint texton histograms: chi-squared distance 1.
    regions = np.repeat([[0, 0, 1, 1]], 3, axis=0)
    strength = np.full((3, 4), 0.3)
    histogram = np.stack([regions == 0, regions == 1], axis=-1).astype(float)
    features = np.concatenate([np.zeros((3, 4, 3)), 0.5 * histogram], axis=-1)
    ucm2 = hierarchy.ucm_from_regions(
        regions, strength, features, feature_weight=4.0, histogram_dims=2
    )
    np.testing.assert_allclose(ucm2[1::2, 4], 1 - np.exp(-0.3 * (1 + 4.0 * 0.5)))


def test_contrast_normalisation_discounts_borders_between_textured_regions():
    # Two regions with strength 0.3 everywhere (texture): the border's cost 0.3 is divided by
    # 1 + 2 * 0.3. With one side smooth (strength 0 away from the border) it is not.
    regions = np.repeat([[0, 0, 0, 1, 1, 1]], 6, axis=0)
    textured = np.full((6, 6), 0.3)
    ucm2 = hierarchy.ucm_from_regions(regions, textured, contrast_weight=2.0, contrast_size=3)
    np.testing.assert_allclose(ucm2[1::2, 6], 1 - np.exp(-0.3 / (1 + 2.0 * 0.3)))
    one_smooth = textured.copy()
    one_smooth[:, :2] = 0.0
    ucm2 = hierarchy.ucm_from_regions(regions, one_smooth, contrast_weight=2.0, contrast_size=3)
    np.testing.assert_allclose(ucm2[1::2, 6], 1 - np.exp(-0.3))


def _blocks(n_side: int = 8, cell: int = 4):
    """A grid of n_side x n_side square regions; the border between the left and the right
    half is strong (0.8), the others weak (0.2)."""
    size = n_side * cell
    rows, cols = np.divmod(np.arange(size * size).reshape(size, size), size)
    regions = (rows // cell) * n_side + cols // cell
    strength = np.full((size, size), 0.2)
    strength[:, size // 2 - 1 : size // 2 + 1] = 0.8
    return regions, strength


@pytest.mark.parametrize("dense", [True, False])
def test_spectral_strength_singles_out_the_global_border(dense, monkeypatch):
    regions, strength = _blocks()
    if not dense:
        monkeypatch.setattr(hierarchy, "_DENSE_EIGEN", 0)  # ARPACK
    n = regions.max() + 1
    graph = hierarchy._adjacency(regions, n, strength[None])
    spectral = hierarchy._spectral_strength(graph, np.bincount(regions.ravel()) * 1.0, 8, 0.1)
    left, right = graph.pairs[:, 0] % 8 < 4, graph.pairs[:, 1] % 8 < 4
    across = left != right
    assert spectral.shape == (graph.pairs.shape[0],) and spectral.max() == 1.0
    assert spectral[across].min() > 3 * spectral[~across].max()


def test_spectral_strength_is_the_same_from_both_eigen_solvers(monkeypatch):
    regions, strength = _blocks()
    graph = hierarchy._adjacency(regions, regions.max() + 1, strength[None])
    sizes = np.bincount(regions.ravel()) * 1.0
    dense = hierarchy._spectral_strength(graph, sizes, 4, 0.1)
    monkeypatch.setattr(hierarchy, "_DENSE_EIGEN", 0)
    # The eigenvectors' signs may differ, not the absolute differences.
    np.testing.assert_allclose(hierarchy._spectral_strength(graph, sizes, 4, 0.1), dense, atol=1e-5)


def test_oversegment_separates_basins():
    strength = np.zeros((20, 20))
    strength[:, 10] = 1.0
    regions = hierarchy.oversegment(strength, sigma=0)
    assert regions.max() + 1 == 2
    assert len(np.unique(regions[:, :10])) == 1 and len(np.unique(regions[:, 11:])) == 1
    assert scipy.ndimage.label(regions == regions[0, 0])[1] == 1


def test_one_colour_and_thin_images_give_trivial_valid_hierarchies():
    flat = np.full((10, 12, 3), 128, np.uint8)
    for options in ({"boundary": "local", **_SMALL_CUES}, {"n_textons": 4}):
        result = hierarchy.hierarchical_segmentation(flat, jax.random.key(0), **options)
        _check_ucm2(result.ucm2, (10, 12))
        np.testing.assert_array_equal(result.ucm2, 0)
        assert result.n_regions == 1
    for shape in ((1, 9), (9, 1), (1, 1)):
        strength = np.linspace(0, 1, shape[0] * shape[1]).reshape(shape)
        labels = np.arange(strength.size).reshape(shape) // 3
        for spectral_weight in (0.0, 1.0):
            ucm2 = hierarchy.hierarchy_from_labels(
                labels, strength, spectral_weight=spectral_weight
            )
            _check_ucm2(ucm2, shape)
            _check_ultrametric(ucm2)


@pytest.mark.parametrize(
    ("regions", "strength", "message"),
    [
        (np.zeros((4, 5), int), np.zeros((4, 6)), "differ in shape"),
        (np.zeros((4, 5), int), np.full((4, 5), np.nan), "NaN"),
        (np.zeros((4, 5), int), np.full((4, 5), 2.0), r"\[0, 1\]"),
        (np.zeros((4, 5), int), np.zeros(5), r"\[h, w\]"),
        (np.zeros((4, 5)), np.zeros((4, 5)), "integer"),
        (-np.ones((4, 5), int), np.zeros((4, 5)), "negative"),
    ],
)
def test_bad_input_is_rejected(regions, strength, message):
    with pytest.raises(ValueError, match=message):
        hierarchy.ucm_from_regions(regions, strength)


def test_pmi_boundaries_give_a_valid_nested_hierarchy():
    # The default boundary, the spectral cut of the PMI affinity, with the watershed smoothing
    # small squares need (best IoU at four regions 0.87 / 0.92 / 0.95 / 0.98 on the development
    # machine; 0.65 for the smallest square with the default sigma 2).
    image, truth = _nested()
    result = hierarchy.hierarchical_segmentation(image, jax.random.key(0), sigma=0.5)
    _check_ucm2(result.ucm2, truth.shape)
    _check_ultrametric(result.ucm2)
    np.testing.assert_array_equal(
        result.strength, pmi.boundaries(image, jax.random.fold_in(jax.random.key(0), 2)).strength
    )
    _check_nested_levels(result.ucm2, truth, four_iou=0.8)


def test_given_cues_are_the_computed_ones_and_must_fit_the_image():
    image, _ = _nested()
    key = jax.random.key(0)
    cues = edges.boundary_cues(image, key)
    np.testing.assert_array_equal(  # one computation, done inside or passed in
        hierarchy.hierarchical_segmentation(image, key, boundary="local", cues=cues).ucm2,
        hierarchy.hierarchical_segmentation(image, key, boundary="local").ucm2,
    )
    with pytest.raises(ValueError, match="boundary='local' only"):
        hierarchy.hierarchical_segmentation(image, key, colour_radii=(2,))
    with pytest.raises(ValueError, match="boundary must be one of"):
        hierarchy.hierarchical_segmentation(image, key, boundary="gpb")
    with pytest.raises(ValueError, match="not this"):
        hierarchy.hierarchical_segmentation(image[:32], key, cues=cues)
    with pytest.raises(ValueError, match="cannot apply to given cues"):
        hierarchy.hierarchical_segmentation(image, key, cues=cues, n_textons=8)


def test_bad_options_and_thresholds_are_rejected():
    regions, strength = np.zeros((4, 5), int), np.zeros((4, 5))
    with pytest.raises(ValueError, match="level_scale"):
        hierarchy.ucm_from_regions(regions, strength, level_scale=0)
    with pytest.raises(ValueError, match="count_weight"):
        hierarchy.ucm_from_regions(regions, strength, count_weight=1.5)
    with pytest.raises(ValueError, match="feature_weight"):
        hierarchy.ucm_from_regions(regions, strength, feature_weight=-1)
    with pytest.raises(ValueError, match="region_features"):
        hierarchy.ucm_from_regions(regions, strength, np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="spectral_scale"):
        hierarchy.ucm_from_regions(regions, strength, spectral_scale=0)
    with pytest.raises(ValueError, match="spectral_weight"):
        hierarchy.ucm_from_regions(regions, strength, spectral_weight=-1)
    with pytest.raises(ValueError, match="n_eigenvectors"):
        hierarchy.ucm_from_regions(regions, strength, n_eigenvectors=0)
    with pytest.raises(ValueError, match="histogram_dims"):
        hierarchy.ucm_from_regions(regions, strength, np.zeros((4, 5, 3)), histogram_dims=4)
    with pytest.raises(ValueError, match="contrast_weight"):
        hierarchy.ucm_from_regions(regions, strength, contrast_weight=-1)
    with pytest.raises(ValueError, match="contrast_weight"):
        hierarchy.ucm_from_regions(regions, strength, contrast_weight=np.nan)
    with pytest.raises(ValueError, match="contrast_size"):
        hierarchy.ucm_from_regions(regions, strength, contrast_size=0)
    with pytest.raises(ValueError, match="contrast_size"):
        hierarchy.ucm_from_regions(regions, strength, contrast_size=2.5)
    with pytest.raises(ValueError, match="histogram features"):
        hierarchy.ucm_from_regions(regions, strength, -np.ones((4, 5, 3)), histogram_dims=2)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="oversegmentation must be one of"):
        hierarchy.hierarchical_segmentation(image, jax.random.key(0), oversegmentation="fh")
    for size in (0, 2.5, True):
        with pytest.raises(ValueError, match="superpixel_size must be an integer >= 1"):
            hierarchy.hierarchical_segmentation(
                image, jax.random.key(0), oversegmentation="slic", superpixel_size=size
            )
    with pytest.raises(ValueError, match="threshold"):
        hierarchy.labels_at(np.zeros((3, 3)), -0.5)
    with pytest.raises(ValueError, match="pixel sites"):
        hierarchy.labels_at(np.ones((3, 3)), 0.5)


def test_split_labels_by_hand():
    # Labels split left | right; the ucm2 has one border, between the two rows, at level 0.5.
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    ucm2 = np.zeros((5, 9))
    ucm2[2] = 0.5
    np.testing.assert_array_equal(hierarchy.split_labels(labels, ucm2, 0.5), labels)
    split = hierarchy.split_labels(labels, ucm2, 0.3)
    np.testing.assert_array_equal(split, [[0, 0, 1, 1], [2, 2, 3, 3]])
    assert split.dtype == np.int32
    # A piece with a kept pixel takes back its label; the others follow the largest kept one.
    keep = np.zeros((2, 4), bool)
    keep[1, 3] = True
    kept = hierarchy.split_labels(labels, ucm2, 0.3, keep=keep)
    np.testing.assert_array_equal(kept, [[2, 2, 3, 3], [4, 4, 1, 1]])
    none_kept = hierarchy.split_labels(labels, ucm2, 0.3, keep=np.zeros((2, 4), bool))
    np.testing.assert_array_equal(none_kept, split)


def test_split_labels_refines_both_partitions(nested):
    # Every piece lies in one label and one region of the cut, and pieces are 0..n-1.
    truth, result = nested
    labels = (np.arange(64)[None, :] >= 20).astype(np.int32) * np.ones((64, 1), np.int32)
    for t in (0.0, 0.3, 0.6, 1.0):
        split = hierarchy.split_labels(labels, result.ucm2, t)
        regions = hierarchy.labels_at(result.ucm2, t)
        for other in (labels, regions):
            pairs = np.unique(np.stack([split.ravel(), other.ravel()]), axis=1)
            assert pairs.shape[1] == split.max() + 1
        assert set(np.unique(split)) == set(range(split.max() + 1))


def test_split_labels_rejects_bad_input():
    ucm2 = np.zeros((5, 9))
    with pytest.raises(ValueError, match="labels must be"):
        hierarchy.split_labels(np.zeros((2, 4)), ucm2, 0.5)
    with pytest.raises(ValueError, match="labels must be"):
        hierarchy.split_labels(-np.ones((2, 4), int), ucm2, 0.5)
    with pytest.raises(ValueError, match=r"ucm2 must be \[5, 9\]"):
        hierarchy.split_labels(np.zeros((2, 4), int), np.zeros((5, 7)), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        hierarchy.split_labels(np.zeros((2, 4), int), ucm2, np.nan)
    with pytest.raises(ValueError, match="keep must be"):
        hierarchy.split_labels(np.zeros((2, 4), int), ucm2, 0.5, keep=np.zeros((2, 4)))
