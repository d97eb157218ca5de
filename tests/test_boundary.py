"""jaxseg.boundary against scikit-image, a dense assignment solver, hand-made cases and the
official BSDS boundary-benchmark outputs (tests/data/bsds-bench)."""

import math

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import maximum_bipartite_matching
from skimage.morphology import thin as skimage_thin

from jaxseg import boundary, metrics

OFFICIAL_ORDER = ["2018", "3063", "5096", "6046", "8068"]  # sorted "<id>_ev1.txt" names
# Two official runs on the same segmentations (test_3, test_4) differ by up to 7.1e-4 (the
# official matcher draws its outlier edges at random); our exact optimum is within 1.3e-3 of
# every value of every official file. The tolerance is 5e-3.
TOLERANCE = 2.5e-3


@pytest.fixture(scope="module")
def bench(test_data):
    return test_data / "bsds-bench"


def _gt_boundaries(bench, image_id):
    cell = scipy.io.loadmat(bench / "groundTruth" / f"{image_id}.mat")["groundTruth"]
    return [entry["Boundaries"][0, 0] for entry in cell.flat]


# --------------------------------------------------------------------------- thinning


def test_thin_matches_skimage_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        bmap = rng.random((24, 31)) < rng.uniform(0.2, 0.9)
        np.testing.assert_array_equal(boundary.thin(bmap), skimage_thin(bmap))


def test_thinned_seg_boundaries_are_the_official_ground_truth_boundaries(bench):
    # The official groundTruth{i}.Boundaries = bwmorph(seg2bdry(Segmentation), 'thin', inf).
    for image_id in OFFICIAL_ORDER[:2]:
        cell = scipy.io.loadmat(bench / "groundTruth" / f"{image_id}.mat")["groundTruth"]
        for entry in cell.flat:
            ours = boundary.thin(boundary.seg_boundaries(entry["Segmentation"][0, 0]))
            np.testing.assert_array_equal(ours, entry["Boundaries"][0, 0] != 0)


def test_seg_boundaries_by_hand():
    seg = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    # Each pixel's grid corner below-right is set when an edge meeting it separates labels;
    # the last grid row and column copy their inner neighbours, which are edges: [0, 2] takes
    # the edge below pixel [0, 2] (labels 2, 2), [2, 1] the edge right of pixel [2, 1].
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(boundary.seg_boundaries(seg), expected)
    assert not boundary.seg_boundaries(np.ones((4, 5))).any()


# --------------------------------------------------------------------------- matching


def _reference_pairs(bmap1, bmap2, max_dist=boundary.MAX_DIST):
    """Pairs of the official objective from scipy's dense Hungarian solver."""
    p1, p2 = np.argwhere(bmap1), np.argwhere(bmap2)
    reach = max_dist * math.hypot(*bmap1.shape)
    outlier = math.ceil(100 * reach * 100)
    dist = np.sqrt(((p1[:, None] - p2[None]) ** 2).sum(-1))
    saving = np.where(dist <= reach, np.rint(dist * 100) - outlier, 0)
    rows, cols = linear_sum_assignment(saving)
    return int(np.count_nonzero(saving[rows, cols] < 0))


def test_matching_count_equals_dense_hungarian_solver():
    rng = np.random.default_rng(1)
    for _ in range(20):
        shape = (int(rng.integers(10, 40)), int(rng.integers(10, 40)))
        bmap1 = rng.random(shape) < 0.15
        bmap2 = rng.random(shape) < 0.15
        matched1, matched2 = boundary.correspond_pixels(bmap1, bmap2, max_dist=0.05)
        assert matched1.sum() == matched2.sum() == _reference_pairs(bmap1, bmap2, 0.05)
        assert not (matched1 & ~bmap1).any() and not (matched2 & ~bmap2).any()


def test_costs_can_beat_cardinality_on_long_shifted_contours():
    # Two 600-pixel lines 4 pixels apart lengthwise: matching all 600 pairs shifts 4 chains of
    # 150 pixels by 4 pixels each (60000 units per chain), more than the 48015 units each
    # extra pair saves, so the least-cost matching keeps the 596 overlapping pairs.
    bmap1, bmap2 = np.zeros((16, 640), bool), np.zeros((16, 640), bool)
    bmap1[8, 10:610] = True
    bmap2[8, 14:614] = True
    matched1, matched2 = boundary.correspond_pixels(bmap1, bmap2)
    assert matched1.sum() == matched2.sum() == 596
    edges = np.abs(np.arange(600)[:, None] - np.arange(4, 604)[None]) <= 4
    assert (maximum_bipartite_matching(scipy.sparse.csr_array(edges)) >= 0).sum() == 600
    # ... while a shorter shift pays: 100 pixels, every pixel matched.
    bmap1[8, 110:] = bmap2[8, 114:] = False
    assert boundary.correspond_pixels(bmap1, bmap2)[0].sum() == 100


def test_matching_by_hand():
    bmap1, bmap2 = np.zeros((100, 100), bool), np.zeros((100, 100), bool)  # reach 1.06 px
    bmap1[10, 10] = bmap2[11, 10] = True  # 1 pixel apart: a pair
    bmap1[50, 50] = bmap2[51, 51] = True  # 1.41 pixels apart: too far
    matched1, matched2 = boundary.correspond_pixels(bmap1, bmap2)
    assert np.argwhere(matched1).tolist() == [[10, 10]]
    assert np.argwhere(matched2).tolist() == [[11, 10]]
    empty = np.zeros_like(bmap1)
    assert not boundary.correspond_pixels(empty, bmap2)[1].any()
    with pytest.raises(ValueError, match="differ in shape"):
        boundary.correspond_pixels(bmap1, bmap2[:-1])
    with pytest.raises(ValueError, match="max_dist must be positive"):
        boundary.correspond_pixels(bmap1, bmap2, max_dist=0)
    with pytest.raises(ValueError, match="outlier_cost"):
        boundary.correspond_pixels(bmap1, bmap2, outlier_cost=1)


# --------------------------------------------------------------------------- per image


def test_boundary_stats_counts_and_edge_cases():
    gt = np.zeros((40, 40), bool)
    gt[20, 5:35] = True
    candidate = np.zeros_like(gt)
    candidate[20, 5:20] = True  # half the contour, exactly
    empty = np.zeros_like(gt)
    stats = boundary.boundary_stats([candidate, empty, candidate], [gt, empty])
    np.testing.assert_array_equal(stats.thresholds, [1, 2, 3])
    np.testing.assert_array_equal(stats.recall_count, [15, 0, 15])
    np.testing.assert_array_equal(stats.recall_total, [30, 30, 30])
    np.testing.assert_array_equal(stats.precision_count, [15, 0, 15])
    np.testing.assert_array_equal(stats.precision_total, [15, 0, 15])
    with pytest.raises(ValueError, match="shape"):
        boundary.boundary_stats([candidate], [gt[:-1]])
    with pytest.raises(ValueError, match="no candidates"):
        boundary.boundary_stats([], [gt])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        boundary.threshold_maps(np.full((4, 4), 1.5), [0.5])


def test_thinning_is_applied_to_candidates():
    gt = np.zeros((40, 40), bool)
    gt[20, 5:35] = True
    thick = np.zeros_like(gt)
    thick[19:22, 5:35] = True
    thinned = boundary.boundary_stats([thick], [gt])
    raw = boundary.boundary_stats([thick], [gt], thin_candidates=False)
    assert thinned.precision_total[0] == boundary.thin(thick).sum() < 90
    assert raw.precision_total[0] == 90 and raw.precision_count[0] == 30


# --------------------------------------------------------------------------- dataset


def test_aggregate_by_hand():
    stats = boundary.BoundaryStats(
        thresholds=np.array([0.25, 0.75]),
        recall_count=np.array([8, 4]),
        recall_total=np.array([10, 10]),
        precision_count=np.array([4, 4]),
        precision_total=np.array([8, 5]),
    )
    result = boundary.aggregate_boundary_stats([stats, stats])
    np.testing.assert_allclose(result.recall, [0.8, 0.4])
    np.testing.assert_allclose(result.precision, [0.5, 0.8])
    f0 = 2 * 0.8 * 0.5 / 1.3
    # Interpolated points r = 0.8 - 0.4 d, p = 0.5 + 0.3 d (d in linspace(0, 1, 100)).
    d = np.linspace(0, 1, 100)
    f = 2 * (0.8 - 0.4 * d) * (0.5 + 0.3 * d) / (1.3 - 0.1 * d)
    assert result.ods_f == pytest.approx(max(f0, f.max()))
    assert result.ods_threshold == pytest.approx(0.25 + 0.5 * d[np.argmax(f)])
    assert result.ois_f == pytest.approx(f0)  # the best uninterpolated F (0.615 > 0.533)
    np.testing.assert_allclose(result.image_f, [result.ods_f] * 2)
    # AP: precision interpolated over recall 0.4..0.8, sampled at 0:0.01:1, zero elsewhere.
    grid = np.linspace(0, 1, 101)
    inside = (grid >= 0.4 - 1e-12) & (grid <= 0.8 + 1e-12)
    assert result.ap == pytest.approx(np.sum(0.8 - 0.75 * (grid[inside] - 0.4)) * 0.01)


def _official_run(bench, kind):
    thresholds = metrics.ucm_thresholds(5)
    stats = []
    for image_id in OFFICIAL_ORDER:
        if kind == "segs":
            segs = scipy.io.loadmat(bench / "segs" / f"{image_id}.mat")["segs"].ravel()
            candidates, thresholds = [boundary.seg_boundaries(s) for s in segs], None
        elif kind == "png":
            pb = np.asarray(Image.open(bench / "png" / f"{image_id}.png")) / 255
            candidates = boundary.threshold_maps(pb, thresholds)
        else:
            ucm2 = scipy.io.loadmat(bench / "ucm2" / f"{image_id}.mat")["ucm2"]
            candidates = boundary.threshold_maps(boundary.ucm_boundary_map(ucm2), thresholds)
        gts = _gt_boundaries(bench, image_id)
        stats.append(boundary.boundary_stats(candidates, gts, thresholds=thresholds))
    return boundary.aggregate_boundary_stats(stats, official_rounding=True)


def assert_close_to_official(result, official_dir, tolerance=TOLERANCE):
    summary = np.loadtxt(official_dir / "eval_bdry.txt")
    images = np.loadtxt(official_dir / "eval_bdry_img.txt", ndmin=2)
    curve = np.loadtxt(official_dir / "eval_bdry_thr.txt", ndmin=2)
    step = np.diff(curve[:, 0]).max()
    assert abs(result.ods_threshold - summary[0]) <= step
    ours = [result.ods_recall, result.ods_precision, result.ods_f, result.ois_recall]
    ours += [result.ois_precision, result.ois_f, result.ap]
    np.testing.assert_allclose(ours, summary[1:], atol=tolerance)
    np.testing.assert_allclose(result.thresholds, curve[:, 0])
    np.testing.assert_allclose(
        np.stack([result.recall, result.precision, result.f], 1), curve[:, 1:], atol=tolerance
    )
    np.testing.assert_array_less(np.abs(result.image_threshold - images[:, 1]), step + 1e-9)
    np.testing.assert_allclose(
        np.stack([result.image_recall, result.image_precision, result.image_f], 1),
        images[:, 2:],
        atol=tolerance,
    )


@pytest.mark.parametrize(
    ("kind", "official"),
    [("png", "test_2"), ("segs", "test_3"), ("ucm2", "test_1"), ("segs", "test_4")],
)
def test_reproduces_official_boundary_benchmark(bench, kind, official):
    assert_close_to_official(_official_run(bench, kind), bench / official)
