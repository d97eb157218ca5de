"""PMI boundaries: the PMI table and affinities against brute force, texture edges, bad input."""

import jax
import numpy as np
import pytest

from jaxseg import edges, pmi


def _brute_pmi(labels, centroids, rho, bandwidth, pair_radius):
    """PMI_rho by loops over pixel pairs and the kernel density formula written out."""
    h, w = labels.shape
    k = len(centroids)
    counts = np.zeros((k, k))
    for y in range(h):
        for x in range(w):
            for v in range(h):
                for u in range(w):
                    d2 = (y - v) ** 2 + (x - u) ** 2
                    if 0 < d2 <= pair_radius**2:
                        counts[labels[y, x], labels[v, u]] += 1
    kernel = np.exp(-((centroids[:, None] - centroids[None]) ** 2).sum(-1) / (2 * bandwidth**2))
    joint = np.einsum("ac,cd,bd->ab", kernel, counts, kernel)
    marginal = kernel @ np.bincount(labels.ravel(), minlength=k)
    joint, marginal = joint / joint.sum(), marginal / marginal.sum()
    return np.log(joint**rho / np.outer(marginal, marginal))


def test_offsets_cover_each_pair_once():
    for radius in (1, 2, 5):
        half = pmi.offsets(radius)
        disc = {
            (dy, dx)
            for dy in range(-radius, radius + 1)
            for dx in range(-radius, radius + 1)
            if 0 < dy * dy + dx * dx <= radius * radius
        }
        both = [tuple(o) for o in half] + [tuple(-o) for o in half]
        assert sorted(both) == sorted(disc)
    assert pmi.offsets(1).tolist() == [[0, 1], [1, 0]]


def test_pmi_table_matches_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (7, 9))
    labels[:, :4] = rng.integers(0, 2, (7, 4))  # left: clusters 0/1, right: mostly 2/3
    centroids = rng.random((4, 3))
    for rho, bandwidth, pair_radius in ((1.25, 0.05, 2), (1.0, 0.5, 3)):
        np.testing.assert_allclose(
            pmi.pmi_table(labels, centroids, rho=rho, bandwidth=bandwidth, pair_radius=pair_radius),
            _brute_pmi(labels, centroids, rho, bandwidth, pair_radius),
            rtol=1e-4,
            atol=1e-4,
        )


def test_pmi_table_rejects_labels_outside_the_clusters():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        pmi.pmi_table(np.array([[0, 2]]), np.eye(2))
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        pmi.pmi_table(np.array([0, 1]), np.eye(2))


def test_colours_that_meet_inside_a_region_have_higher_pmi_than_across_its_border():
    # Left half: clusters 0 and 1 mixed; right half: 2 and 3 mixed.
    rng = np.random.default_rng(1)
    labels = np.concatenate([rng.integers(0, 2, (20, 10)), rng.integers(2, 4, (20, 10))], 1)
    table = np.asarray(pmi.pmi_table(labels, np.eye(4), bandwidth=0.05))
    assert min(table[0, 1], table[2, 3]) > max(table[0, 2], table[1, 3]) + 1.0


def test_affinity_is_exp_pmi_of_the_neighbours_clusters():
    # Two exact colours, two clusters: the labelling is known up to their order.
    rng = np.random.default_rng(2)
    labels = (rng.random((9, 11)) < 0.3).astype(int)
    labels[:, 6:] = 1 - labels[:, 6:] * (rng.random((9, 5)) < 0.5)
    colours = np.array([[20, 40, 200], [220, 200, 30]], np.uint8)
    radius = 2
    stencil = np.asarray(
        pmi.affinity(colours[labels], jax.random.key(0), n_clusters=2, radius=radius)
    )
    assert stencil.shape == (len(pmi.offsets(radius)), 9, 11)
    # Recover the table from the stencil and compare it with the brute-force PMI of the labels.
    found = {}
    for (dy, dx), values in zip(pmi.offsets(radius), stencil, strict=True):
        for y in range(9):
            for x in range(11):
                inside = 0 <= y + dy < 9 and 0 <= x + dx < 11
                assert (values[y, x] > 0) == inside
                if inside:
                    found.setdefault((labels[y, x], labels[y + dy, x + dx]), []).append(
                        values[y, x]
                    )
    log = {}
    for pair, values in found.items():  # one value per cluster pair
        np.testing.assert_allclose(values, values[0], rtol=1e-5)
        log[pair] = np.log(values[0])
    # Features are scaled to [0, 1], so the two clusters' centres lie far beyond the bandwidth:
    # the smoothed counts are the counts.
    expected = _brute_pmi(labels, np.eye(2), 1.25, 0.05, 3)
    expected -= expected.max()
    for (a, b), value in log.items():
        np.testing.assert_allclose(value, expected[a, b], atol=1e-4)


def test_sparse_matrix_holds_each_stencil_entry_both_ways():
    # Narrow images make two offsets share a flat shift, or the shift negative.
    rng = np.random.default_rng(6)
    for h, w in ((30, 1), (1, 30), (7, 3), (3, 7), (9, 11)):
        stencil = rng.random((len(pmi.offsets(5)), h, w))
        expected = np.zeros((h * w, h * w))
        for (dy, dx), values in zip(pmi.offsets(5), stencil, strict=True):
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        expected[y * w + x, (y + dy) * w + x + dx] = values[y, x]
                    else:
                        values[y, x] = 0.0  # as `affinity` leaves it
        np.testing.assert_array_equal(pmi._sparse(stencil, 5).toarray(), expected + expected.T)


def test_boundary_between_textures_is_strong_and_inside_them_weak():
    # Speckle of two colours on each side: the local colour gradient fires everywhere, but the
    # PMI of each side's two colours is high, so the border between the sides stands out.
    rng = np.random.default_rng(3)
    left = np.array([[200, 30, 30], [30, 160, 30]], np.uint8)[rng.integers(0, 2, (48, 32))]
    right = np.array([[30, 30, 200], [220, 200, 40]], np.uint8)[rng.integers(0, 2, (48, 32))]
    image = np.concatenate([left, right], 1)
    result = pmi.boundaries(image, jax.random.key(0), n_eigenvectors=8)
    assert result.oriented.shape == (8, 48, 64) and result.strength.shape == (48, 64)
    assert 0 <= result.oriented.min() and result.oriented.max() < 1
    np.testing.assert_array_equal(result.strength, result.oriented.max(0))

    def contrast(strength):  # mean strength on the border's columns over that inside
        columns = np.asarray(strength)[4:-4].mean(0)
        return columns[30:34].mean() / np.r_[columns[4:26], columns[38:60]].mean()

    # Measured 4.3 (PMI) and 1.6 (edges' local gradients).
    local = contrast(edges.boundary_cues(image, jax.random.key(0)).strength)
    assert contrast(result.strength) > max(3.0, 2 * local)
    # The border is vertical: its strength is across the vertical line (orientation 4 of 8).
    assert result.oriented[:, 8:-8, 31:33].mean((1, 2)).argmax() == 4


def test_one_colour_and_thin_images_give_valid_boundaries():
    flat = pmi.boundaries(np.full((10, 12, 3), 90, np.uint8), jax.random.key(0))
    np.testing.assert_array_equal(flat.oriented, 0)
    assert flat.eigenvalues.size == 0
    rng = np.random.default_rng(4)
    for shape in ((1, 30), (30, 1)):
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        result = pmi.boundaries(image, jax.random.key(0), n_clusters=4)
        assert result.oriented.shape == (8, *shape)
        assert np.isfinite(result.oriented).all() and 0 <= result.oriented.min() < 1
        assert result.oriented.max() < 1


def test_affinity_vmaps_over_a_batch():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
    keys = jax.random.split(jax.random.key(0), 2)
    batch = np.asarray(jax.vmap(lambda i, k: pmi.affinity(i, k, n_clusters=6))(images, keys))
    for image, key, out in zip(images, keys, batch, strict=True):
        one = np.asarray(pmi.affinity(image, key, n_clusters=6))
        # One computation, batched or not; a K-means label flipped by float round-off would
        # change a few entries only.
        assert np.mean(np.isclose(one, out, rtol=1e-4, atol=1e-7)) > 0.95


@pytest.mark.parametrize(
    ("image", "options", "message"),
    [
        (np.zeros((4, 5)), {}, r"\[h, w, 3\]"),
        (np.full((4, 5, 3), np.nan, np.float32), {}, "NaN"),
        (np.zeros((4, 5, 3), np.uint8), {"n_clusters": 21}, "n_clusters"),
        (np.zeros((4, 5, 3), np.uint8), {"radius": 0}, "radius"),
        (np.zeros((4, 5, 3), np.uint8), {"rho": 0.0}, "rho"),
        (np.zeros((4, 5, 3), np.uint8), {"bandwidth": np.nan}, "bandwidth"),
        (np.zeros((4, 5, 3), np.uint8), {"gain": -1.0}, "gain"),
        (np.zeros((4, 5, 3), np.uint8), {"n_eigenvectors": 0}, "n_eigenvectors"),
    ],
)
def test_bad_input_is_rejected(image, options, message):
    with pytest.raises(ValueError, match=message):
        pmi.boundaries(image, jax.random.key(0), **{"n_clusters": 4, **options})
