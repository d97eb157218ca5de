"""jaxseg.features: RGB, CIE Lab (against scikit-image), position, distinct-colour compression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.color import rgb2lab

from jaxseg import features


def _image(h=7, w=5, seed=0, levels=256):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, levels, (h, w, 3)) * (255 // (levels - 1))).astype(np.uint8)


def test_rgb_features_are_pixels_in_unit_range():
    image = _image()
    x = features.pixel_features(image)
    assert x.shape == (35, 3) and x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), image.reshape(-1, 3) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(features.pixel_features(image / 255.0), x, rtol=1e-6)


def test_lab_matches_scikit_image():
    rng = np.random.default_rng(1)
    colours = np.concatenate(
        [rng.integers(0, 256, (500, 3)), [[0, 0, 0], [255, 255, 255], [1, 2, 3], [255, 0, 0]]]
    ).astype(np.uint8)
    ours = np.asarray(features.colour_features(colours, space="lab"))
    ref = rgb2lab(colours[None].astype(np.float64) / 255.0)[0] / 100.0
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_unit_lab_is_scikit_image_lab_in_the_unit_cube():
    rng = np.random.default_rng(2)
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
    image = np.concatenate([rng.random((37, 3)), corners]).reshape(5, 9, 3)
    ours = np.asarray(features.unit_lab(image))
    np.testing.assert_allclose(ours, rgb2lab(image) / 216 + [0.0, 0.5, 0.5], atol=1e-5)
    # The sRGB cube's corners (blue: b* = -107.9, the extreme) stay inside [0, 1], distinct.
    assert ours.min() >= 0 and ours.max() <= 1
    assert len(np.unique(ours.reshape(-1, 3).round(3), axis=0)) == 45
    np.testing.assert_allclose(
        features.unit_lab((image * 255).round().astype(np.uint8)), ours, atol=0.01
    )
    for bad, match in [
        (image[..., :2], "shape"),
        (image * np.nan, "NaN"),
        (image + 1, r"\[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            features.unit_lab(bad)


def test_xy_is_appended_scaled_to_unit_range_times_weight():
    image = _image(h=4, w=3)
    x = np.asarray(features.pixel_features(image, space="lab", xy_weight=0.5))
    assert x.shape == (12, 5)
    xy = x[:, 3:].reshape(4, 3, 2)
    np.testing.assert_allclose(xy[0, 0], [0.0, 0.0])
    np.testing.assert_allclose(xy[3, 2], [0.5, 0.5])
    np.testing.assert_allclose(xy[2, 1], [2 / 3 * 0.5, 0.5 * 0.5], rtol=1e-6)


def test_distinct_colours_match_numpy_unique():
    image = _image(h=20, w=15, levels=4)  # few colours, many repeats
    pixels = image.reshape(-1, 3)
    colours, inverse, counts = np.unique(pixels, axis=0, return_inverse=True, return_counts=True)
    n = len(colours)
    assert features.count_distinct_colours(image) == n
    dc = features.distinct_colours(image, size=n + 5)
    assert int(dc.n_distinct) == n and dc.colours.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(dc.colours[:n]), colours)
    np.testing.assert_array_equal(np.asarray(dc.counts[:n]), counts)
    np.testing.assert_array_equal(np.asarray(dc.counts[n:]), 0)
    np.testing.assert_array_equal(np.asarray(dc.inverse), inverse.ravel())
    np.testing.assert_array_equal(np.asarray(dc.colours)[np.asarray(dc.inverse)], pixels)


def test_distinct_colours_under_vmap_agree_with_one_by_one():
    images = np.stack([_image(h=9, w=8, seed=s, levels=3) for s in range(3)])
    batched = jax.jit(jax.vmap(lambda im: features.distinct_colours(im, size=27)))(images)
    for i, image in enumerate(images):
        single = features.distinct_colours(image, size=27)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))


def test_distinct_colours_too_small_size():
    image = _image(h=10, w=10)
    with pytest.raises(ValueError, match="distinct colours, more than size=5"):
        features.distinct_colours(image, size=5)
    traced = jax.jit(lambda im: features.distinct_colours(im, size=5))(image)
    assert int(traced.n_distinct) == features.count_distinct_colours(image) > 5


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((4, 4), np.uint8), {}, "shape"),
        (np.zeros((4, 4, 4), np.uint8), {}, "shape"),
        (np.full((4, 4, 3), 1.5, np.float32), {}, r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), {}, "NaN"),
        (np.zeros((4, 4, 3), np.int64), {}, "uint8 or float"),
        (np.zeros((4, 4, 3), np.uint8), {"space": "hsv"}, "space"),
        (np.zeros((4, 4, 3), np.uint8), {"xy_weight": -1.0}, "xy_weight"),
    ],
)
def test_pixel_features_bad_input(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        features.pixel_features(image, **kwargs)


def test_distinct_colours_needs_uint8():
    with pytest.raises(ValueError, match="uint8"):
        features.distinct_colours(np.zeros((4, 4, 3), np.float32), size=4)
    with pytest.raises(ValueError, match="uint8"):
        features.count_distinct_colours(np.zeros((4, 4, 3), np.float32))
