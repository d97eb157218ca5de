"""jaxseg.slic: connectivity and coverage, region boundaries, batches with masks, bad input, and
scikit-image's SLIC on BSDS500 val images (same grid, boundary recall, undersegmentation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import slic as skimage_slic
from skimage.util import regular_grid

from jaxseg import data, slic

_SHAPE = (48, 64)  # one image shape for most tests: one compilation


def _textured(seed=0, shape=_SHAPE) -> np.ndarray:
    """uint8 RGB: smoothed noise, so superpixels have ragged shapes and orphan fragments."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((*shape, 3)), sigma=(2, 2, 0))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.round(255 * noise).astype(np.uint8)


def _regions(shape=_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-constant image (4 colours: two rectangles, a disc, background), its regions."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    regions = np.zeros(shape, np.int32)
    regions[: h // 2, : w // 3] = 1
    regions[h // 2 :, w // 2 :] = 2
    regions[(yy - h // 3) ** 2 + (xx - 2 * w // 3) ** 2 < (h // 5) ** 2] = 3
    colours = np.array([[30, 30, 30], [220, 40, 40], [40, 200, 60], [60, 80, 230]], np.uint8)
    return colours[regions], regions


def _assert_valid_segmentation(result, mask=None):
    labels = np.asarray(result.labels)
    mask = np.ones(labels.shape, bool) if mask is None else mask
    n = int(result.n_segments)
    assert n >= 1
    np.testing.assert_array_equal(np.unique(labels[mask]), np.arange(n))  # consecutive, covering
    assert (labels[~mask] == 0).all()
    for k in range(n):
        _, count = ndimage.label((labels == k) & mask)  # 4-connectivity (the default cross)
        assert count == 1, f"segment {k} has {count} 4-connected components"
    sizes = np.bincount(labels[mask], minlength=len(result.sizes))
    np.testing.assert_array_equal(np.asarray(result.sizes), sizes)
    rows = np.mgrid[: labels.shape[0], : labels.shape[1]][0]
    mean_rows = np.bincount(labels[mask], rows[mask], minlength=len(sizes)) / np.maximum(sizes, 1)
    np.testing.assert_allclose(np.asarray(result.centroids)[:, 3], mean_rows, atol=1e-3)
    return labels, n


@pytest.mark.parametrize("compactness,max_iter", [(10.0, 10), (1.0, 10), (0.1, 3)])
def test_segments_are_connected_consecutive_and_large_enough(compactness, max_iter):
    image = _textured()
    result = slic.segment(image, n_segments=40, compactness=compactness, max_iter=max_iter)
    labels, n = _assert_valid_segmentation(result)
    centres, bound = slic.grid_shape(*_SHAPE, 40, masked=False)
    assert n <= bound
    min_size = int(0.5 * labels.size / centres)
    assert np.bincount(labels.ravel()).min() >= min_size
    if compactness < 1:
        # Ragged clusters: their orphan fragments (separate components without the merge)
        # were merged away.
        split = slic.segment(
            image, n_segments=40, compactness=compactness, max_iter=max_iter, min_size_factor=0.0
        )
        _assert_valid_segmentation(split)
        assert int(split.n_segments) > n


def test_uniform_image_gives_one_segment_per_grid_cell():
    # Colour plays no part: the superpixels are the Voronoi cells of the grid, one per centre.
    image = np.full((*_SHAPE, 3), 128, np.uint8)
    result = slic.segment(image, n_segments=40)
    labels, n = _assert_valid_segmentation(result)
    assert n == slic.grid_shape(*_SHAPE, 40, masked=False)[0] == 35  # 5 x 7, step 9
    for k, box in enumerate(ndimage.find_objects(labels + 1)):
        rows, cols = box
        assert (rows.stop - rows.start) * (cols.stop - cols.start) == np.sum(labels == k)


@pytest.mark.parametrize(
    "shape,n_segments",
    [((48, 64), 40), ((321, 481), 800), ((481, 321), 2500), ((5, 400), 50), ((7, 9), 100)],
)
def test_grid_has_scikit_image_centres(shape, n_segments):
    rows, cols = regular_grid((1, *shape), n_segments)[1:]
    expected = len(range(*rows.indices(shape[0]))) * len(range(*cols.indices(shape[1])))
    assert slic.grid_shape(*shape, n_segments, masked=False)[0] == expected
    assert slic.grid_shape(*shape, n_segments, masked=True)[0] >= expected


def test_boundaries_follow_piecewise_constant_regions():
    image, regions = _regions()
    result = slic.segment(image, n_segments=40)
    labels, n = _assert_valid_segmentation(result)
    # Every superpixel lies inside one region, and every region edge is a superpixel edge.
    table = np.zeros((regions.max() + 1, n), int)
    np.add.at(table, (regions.ravel(), labels.ravel()), 1)
    assert ((table > 0).sum(axis=0) == 1).all()
    assert slic.boundary_recall(labels, regions, tolerance=0) == 1.0
    assert slic.undersegmentation_error(labels, regions) == 0.0


def test_grey_uint8_and_float_inputs_agree():
    image = _textured(1)
    ours = np.asarray(slic.segment(image, n_segments=40).labels)
    as_float = np.asarray(slic.segment(image.astype(np.float32) / 255, n_segments=40).labels)
    assert np.mean(ours == as_float) >= 0.99
    grey = image[..., 0]
    np.testing.assert_array_equal(
        np.asarray(slic.segment(grey, n_segments=40).labels),
        np.asarray(slic.segment(np.repeat(grey[..., None], 3, axis=2), n_segments=40).labels),
    )


def test_batch_with_mask_matches_each_image_alone():
    # Two images padded top-left into one batch; each must get the superpixels it gets alone.
    shapes = [_SHAPE, (40, 52)]
    images = [_textured(2), _textured(3, shape=shapes[1])]
    batch = np.zeros((2, *_SHAPE, 3), np.uint8)
    mask = np.zeros((2, *_SHAPE), bool)
    for i, (image, (h, w)) in enumerate(zip(images, shapes, strict=True)):
        batch[i, :h, :w] = image
        mask[i, :h, :w] = True
    batched = slic.segment_batch(batch, n_segments=40, mask=mask)
    for i, (image, (h, w)) in enumerate(zip(images, shapes, strict=True)):
        one = jax.tree.map(lambda a, i=i: a[i], batched)
        _assert_valid_segmentation(one, mask[i])
        alone = slic.segment(image, n_segments=40)
        # Same grid, same numbering: measured identical here; a few float ties may differ.
        assert np.mean(np.asarray(one.labels)[:h, :w] == np.asarray(alone.labels)) >= 0.99
        assert abs(int(one.n_segments) - int(alone.n_segments)) <= 1


def test_vmap_of_segment_equals_one_by_one():
    images = np.stack([_textured(4), _textured(5)])
    batched = jax.vmap(lambda im: slic.segment(im, n_segments=40))(jnp.asarray(images))
    for i, image in enumerate(images):
        alone = slic.segment(image, n_segments=40)
        assert np.mean(np.asarray(batched.labels[i]) == np.asarray(alone.labels)) >= 0.99


def test_traced_nan_pixels_are_left_out():
    image = _textured(6).astype(np.float32) / 255
    image[10, 20] = np.nan
    result = jax.jit(lambda im: slic.segment(im, n_segments=40))(image)
    mask = np.ones(_SHAPE, bool)
    mask[10, 20] = False
    _assert_valid_segmentation(result, mask)
    assert np.isfinite(np.asarray(result.centroids)).all()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n_segments": 0}, "n_segments"),
        ({"compactness": 0.0}, "compactness"),
        ({"compactness": -1.0}, "compactness"),
        ({"compactness": float("nan")}, "compactness"),
        ({"max_iter": 0}, "max_iter"),
        ({"min_size_factor": 1.5}, "min_size_factor"),
        ({"mask": np.ones((4, 4), bool)}, "mask"),
        ({"mask": np.zeros(_SHAPE, bool)}, "mask"),
        ({"mask": np.ones(_SHAPE, np.uint8)}, "mask"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        slic.segment(_textured(), **kwargs)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros(8, np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.int32), "uint8 or float"),
    ],
)
def test_bad_images_raise(image, message):
    with pytest.raises(ValueError, match=message):
        slic.segment(image, n_segments=4)


def test_metrics_on_hand_made_cases():
    gt = np.array([[0, 0, 1, 1]] * 4)
    assert slic.boundary_recall(gt, gt, tolerance=0) == 1.0
    assert slic.boundary_recall(np.zeros((4, 4), int), gt) == 0.0
    assert slic.undersegmentation_error(gt, gt) == 0.0
    # One superpixel over both halves: each half leaks min(8, 8) = 8 pixels, 16 / 16.
    assert slic.undersegmentation_error(np.zeros((4, 4), int), gt) == 1.0
    # Superpixel 0 spans columns 0-2: against region 0 it leaks min(8, 4) = 4 pixels, against
    # region 1 min(4, 8) = 4; superpixel 1 (column 3) leaks nothing: 8 / 16.
    shifted = np.array([[0, 0, 0, 1]] * 4)
    assert slic.undersegmentation_error(shifted, gt) == pytest.approx(8 / 16)
    assert slic.boundary_recall(shifted, gt, tolerance=1) == 1.0


_VAL_IDS = ("101085", "102061", "106024")


@pytest.fixture(scope="module")
def bsds_val(data_dir):
    """Three landscape BSDS500 val images (321 x 481) with their ground truth."""
    folder = data_dir / "BSDS500"
    return [
        (
            data.read_image(folder / "images" / "val" / f"{image_id}.jpg"),
            data.read_ground_truth(folder / "groundTruth" / "val" / f"{image_id}.mat"),
        )
        for image_id in _VAL_IDS
    ]


def test_quality_matches_scikit_image_on_bsds_val(bsds_val):
    ours, ref = [], []
    for image, gts in bsds_val:
        result = slic.segment(image, n_segments=800, compactness=10.0)
        labels, n = _assert_valid_segmentation(result)
        reference = skimage_slic(image, n_segments=800, compactness=10.0, start_label=0)
        assert 0.8 * (reference.max() + 1) <= n <= 1.2 * (reference.max() + 1)
        for scores, segmentation in ((ours, labels), (ref, reference)):
            scores.append(
                (
                    slic.boundary_recall(segmentation, gts),
                    slic.undersegmentation_error(segmentation, gts),
                )
            )
    (recall, error), (ref_recall, ref_error) = np.mean(ours, axis=0), np.mean(ref, axis=0)
    # Measured means (ours / scikit-image): recall 0.897 / 0.872, error 0.082 / 0.096.
    assert recall >= ref_recall - 0.02
    assert error <= ref_error * 1.05
