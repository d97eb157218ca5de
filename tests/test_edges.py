"""Boundary cues: half-disc kernels, gradients at known edges, batching, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxseg import edges

_SMALL = {
    "colour_radii": (2, 4),
    "texture_radii": (4,),
    "colour_histogram_radii": (2, 4),
    "n_orientations": 4,
    "n_textons": 4,
    "n_colour_bins": 4,
}


def test_half_disc_kernels_by_hand():
    kernels = edges.half_disc_kernels(1, 2)
    assert kernels.shape == (3, 3, 3)
    # Angle 0: the line is horizontal, the halves are the rows above and below.
    np.testing.assert_allclose(np.abs(kernels[0]), [[0, 1, 0], [0, 0, 0], [0, 1, 0]], atol=1e-7)
    # Angle pi/2: the line is vertical, the halves are the columns left and right.
    np.testing.assert_allclose(np.abs(kernels[1]), [[0, 0, 0], [1, 0, 1], [0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(kernels[1].sum(), 0, atol=1e-7)
    np.testing.assert_allclose(kernels[2], [[0, 1, 0], [1, 1, 1], [0, 1, 0]] / np.float32(5))
    for radius in (3, 8):
        many = edges.half_disc_kernels(radius, 8)
        np.testing.assert_allclose(many[:-1].sum(axis=(1, 2)), 0, atol=1e-6)
        np.testing.assert_allclose(np.abs(many[:-1]).sum(axis=(1, 2)), 2, atol=1e-5)


def test_filter_bank_is_zero_mean_unit_l1():
    bank = edges.filter_bank()
    assert bank.shape[0] == 2 * (2 * 4 + 1)
    np.testing.assert_allclose(bank.sum(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(np.abs(bank).sum(axis=(1, 2)), 1, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "min"])
def test_colour_gradient_matches_a_direct_correlation(pooling):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    cues = edges.boundary_cues(image, jax.random.key(0), scale_pooling=pooling, **_SMALL)
    # Reference: scipy correlation of Lab / 100 with the same kernels, symmetric padding.
    from jaxseg import features

    lab = np.asarray(features.colour_features(image.reshape(-1, 3), space="lab")).reshape(20, 24, 3)
    expected = []
    for radius in _SMALL["colour_radii"]:
        kernels = edges.half_disc_kernels(radius, 4)[:-1].astype(np.float64)
        diffs = np.stack(
            [
                [scipy.ndimage.correlate(lab[..., c], k, mode="reflect") for k in kernels]
                for c in range(3)
            ]
        )
        expected.append(np.sqrt((diffs**2).sum(axis=0) + 1e-12))
    expected = np.mean(expected, axis=0) if pooling == "mean" else np.min(expected, axis=0)
    np.testing.assert_allclose(np.asarray(cues.colour), expected, atol=2e-4)


def _chi_squared_gradient(labels: np.ndarray, n: int, radii) -> np.ndarray:
    """0.25 * sum_k (H1 - H2)^2 / ((H1 + H2) / 2) of half-disc histograms, by scipy, [o, h, w]."""
    one_hot = np.eye(n)[labels]
    out = []
    for radius in radii:
        kernels = edges.half_disc_kernels(radius, 4).astype(np.float64)
        hist = np.stack(
            [
                [
                    scipy.ndimage.correlate(one_hot[..., k], kernel, mode="reflect")
                    for kernel in kernels
                ]
                for k in range(n)
            ]
        )
        out.append(0.25 * np.sum(hist[:, :-1] ** 2 / np.maximum(hist[:, -1:], 1e-6), axis=0))
    return np.mean(out, axis=0)


def test_colour_histogram_gradient_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    image[:, 12:] //= 4  # a darker right half: two colour populations
    cues = edges.boundary_cues(image, jax.random.key(0), **_SMALL)
    bins = np.asarray(cues.colour_bins)
    assert bins.shape == (20, 24) and set(np.unique(bins)) <= set(range(4))
    expected = _chi_squared_gradient(bins, 4, _SMALL["colour_histogram_radii"])
    np.testing.assert_allclose(np.asarray(cues.colour_histogram), expected, atol=2e-4)
    # Off: no bins, no gradient, and the strength is that of the other two cues alone.
    off = edges.boundary_cues(image, jax.random.key(0), colour_histogram_weight=0.0, **_SMALL)
    assert not np.asarray(off.colour_bins).any() and not np.asarray(off.colour_histogram).any()
    gradient = np.asarray(off.colour) + 0.25 * np.asarray(off.texture)
    np.testing.assert_allclose(np.asarray(off.oriented), 1 - np.exp(-gradient / 0.25), atol=1e-5)


def test_isotropic_part_of_the_gradient_is_removed():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    options = dict(_SMALL, colour_weight=1.0, texture_weight=0.5, gain=0.25)
    cues = edges.boundary_cues(image, jax.random.key(0), isotropic_weight=0.5, **options)
    gradient = (
        np.asarray(cues.colour)
        + 0.5 * np.asarray(cues.texture)
        + 0.5 * np.asarray(cues.colour_histogram)  # the default weight
    )
    gradient = np.maximum(gradient - 0.5 * gradient.min(axis=0), 0)
    np.testing.assert_allclose(np.asarray(cues.oriented), 1 - np.exp(-gradient / 0.25), atol=1e-5)
    plain = edges.boundary_cues(image, jax.random.key(0), isotropic_weight=0.0, **options)
    assert np.all(np.asarray(cues.strength) <= np.asarray(plain.strength) + 1e-6)


def test_step_edge_is_found_with_its_orientation():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255  # a vertical edge between columns 15 and 16
    cues = edges.boundary_cues(image, jax.random.key(0), **_SMALL)
    strength = np.asarray(cues.strength)
    assert strength.shape == (32, 32)
    assert 0 <= strength.min() and strength.max() < 1
    assert set(np.argmax(strength, axis=1)) <= {15, 16}
    assert strength[:, 15:17].min() > 10 * strength[:, :8].max()
    # A vertical line is the line at angle pi/2.
    np.testing.assert_allclose(np.asarray(cues.orientation)[:, 15:17], np.pi / 2)


def test_texture_edge_between_equal_mean_textures():
    # Left: horizontal stripes; right: vertical stripes; same mean colour on both sides.
    image = np.zeros((32, 32, 3), np.uint8)
    rows, cols = np.mgrid[:32, :32]
    stripes = np.where(cols < 16, rows % 4 < 2, cols % 4 < 2)
    image[stripes] = 255
    cues = edges.boundary_cues(image, jax.random.key(0), **_SMALL)
    texture = np.asarray(cues.texture).max(axis=0)
    assert texture[8:24, 14:18].mean() > 2 * texture[8:24, 4:8].mean()


def test_vmap_over_a_batch_matches_single_images():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.vmap(lambda im, k: edges.boundary_cues(im, k, **_SMALL))(
        jnp.asarray(images), keys
    )
    for i in range(2):
        single = edges.boundary_cues(images[i], keys[i], **_SMALL)
        np.testing.assert_allclose(batched.colour[i], single.colour, atol=1e-5)


@pytest.mark.parametrize(
    ("image", "options", "message"),
    [
        (np.zeros((8, 8)), {}, "shape"),
        (np.full((8, 8, 3), np.nan, np.float32), {}, "NaN"),
        (np.full((8, 8, 3), 2.0, np.float32), {}, r"\[0, 1\]"),
        (np.zeros((2, 2, 3), np.uint8), {"n_textons": 5}, "n_textons"),
        (np.zeros((8, 8, 3), np.uint8), {"colour_radii": ()}, "colour_radii"),
        (np.zeros((8, 8, 3), np.uint8), {"colour_histogram_radii": (0,)}, "colour_histogram"),
        (np.zeros((2, 2, 3), np.uint8), {"n_textons": 4, "n_colour_bins": 5}, "n_colour_bins"),
        (np.zeros((8, 8, 3), np.uint8), {"colour_histogram_weight": -1.0}, "weights"),
        (
            np.zeros((8, 8, 3), np.uint8),
            {"colour_weight": 0.0, "texture_weight": 0.0, "colour_histogram_weight": 0.0},
            "not all 0",
        ),
        (np.zeros((8, 8, 3), np.uint8), {"gain": 0.0}, "gain"),
        (np.zeros((8, 8, 3), np.uint8), {"colour_weight": -1.0}, "weights"),
        (np.zeros((8, 8, 3), np.uint8), {"scale_pooling": "max"}, "scale_pooling"),
        (np.zeros((8, 8, 3), np.uint8), {"isotropic_weight": 1.5}, "isotropic_weight"),
    ],
)
def test_bad_input_is_rejected(image, options, message):
    with pytest.raises(ValueError, match=message):
        edges.boundary_cues(image, jax.random.key(0), **options)


def test_one_colour_image_has_no_boundary():
    cues = edges.boundary_cues(np.full((12, 12, 3), 90, np.uint8), jax.random.key(0), **_SMALL)
    np.testing.assert_allclose(np.asarray(cues.strength), 0, atol=1e-3)


def test_textons_alone_are_the_cues_textons():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    key = jax.random.key(3)
    alone = np.asarray(edges.textons(image, key, n_textons=4))
    within = np.asarray(edges.boundary_cues(image, key, **_SMALL).textons)
    # One computation in two compiled programs: a response on a rounding boundary could move
    # a pixel, so agreement rather than identity.
    assert alone.shape == (24, 30) and alone.dtype == np.int32
    assert np.mean(alone == within) > 0.99
    with pytest.raises(ValueError, match="n_textons"):
        edges.textons(image, key, n_textons=0)
