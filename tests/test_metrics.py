"""jaxseg.metrics against official BSDS outputs, scikit-learn, scikit-image and hand-made cases."""

import math

import numpy as np
import pytest
import scipy.io
from skimage.measure import label as skimage_label
from skimage.metrics import variation_of_information as skimage_voi
from sklearn.metrics import rand_score

from jaxseg import metrics

RNG = np.random.default_rng(0)


def _read_gt(path):
    cell = scipy.io.loadmat(path)["groundTruth"].ravel()
    return [entry["Segmentation"][0, 0] for entry in cell]


def _bench_ids(bench):
    return sorted(p.stem for p in (bench / "groundTruth").glob("*.mat"))


def _assert_matches_official(result, official_dir, *, thresholds):
    """Every number of the five official region files, to 1e-4."""
    read = lambda name: np.loadtxt(official_dir / name, ndmin=2)  # noqa: E731
    cover = read("eval_cover.txt")[0]
    np.testing.assert_allclose(
        [result.ods_covering_threshold, result.ods_covering, result.ois_covering],
        cover[:3],
        atol=1e-4,
    )
    np.testing.assert_allclose(result.best_covering, cover[3], atol=1e-4)
    image = read("eval_cover_img.txt")
    np.testing.assert_array_equal(image[:, 0], np.arange(1, len(image) + 1))
    np.testing.assert_allclose(result.image_threshold, image[:, 1], atol=1e-4)
    np.testing.assert_allclose(result.image_covering, image[:, 2], atol=1e-4)
    np.testing.assert_allclose(result.image_precision, image[:, 3], atol=1e-4)
    by_threshold = read("eval_cover_th.txt")
    np.testing.assert_allclose(thresholds, by_threshold[:, 0], atol=1e-4)
    np.testing.assert_allclose(result.covering, by_threshold[:, 1], atol=1e-4)
    ri_voi = read("eval_RI_VOI.txt")[0]
    ours = [result.ods_pri_threshold, result.ods_pri, result.ois_pri]
    ours += [result.ods_voi_threshold, result.ods_voi, result.ois_voi]
    np.testing.assert_allclose(ours, ri_voi, atol=1e-4)
    ri_voi_thr = read("eval_RI_VOI_thr.txt")
    np.testing.assert_allclose(result.pri, ri_voi_thr[:, 1], atol=1e-4)
    np.testing.assert_allclose(result.voi, ri_voi_thr[:, 2], atol=1e-4)


@pytest.mark.parametrize("test_name", ["test_4", "test_5"])
def test_segs_reproduce_official_region_benchmark(test_data, test_name):
    bench = test_data / "bsds-bench"
    stats = []
    for image_id in _bench_ids(bench):
        segs = scipy.io.loadmat(bench / "segs" / f"{image_id}.mat")["segs"].ravel()
        gt = _read_gt(bench / "groundTruth" / f"{image_id}.mat")
        stats.append([metrics.region_stats(s, gt, official_labels=True) for s in segs])
    result = metrics.aggregate_region_stats(stats)
    _assert_matches_official(result, bench / test_name, thresholds=np.arange(1, 6))


def test_ucm2_reproduces_official_region_benchmark(test_data):
    bench = test_data / "bsds-bench"
    thresholds = metrics.ucm_thresholds(5)
    stats = []
    for image_id in _bench_ids(bench):
        ucm2 = scipy.io.loadmat(bench / "ucm2" / f"{image_id}.mat")["ucm2"]
        gt = _read_gt(bench / "groundTruth" / f"{image_id}.mat")
        candidates = [metrics.ucm_segmentation(ucm2, t) for t in thresholds]
        stats.append([metrics.region_stats(c, gt, official_labels=True) for c in candidates])
    result = metrics.aggregate_region_stats(stats, thresholds)
    _assert_matches_official(result, bench / "test_1", thresholds=thresholds)
    rounded = metrics.aggregate_region_stats(stats, thresholds, official_rounding=True)
    assert abs(rounded.ois_covering - result.ois_covering) < 1e-5


def test_ucm_thresholds_are_the_official_ones():
    np.testing.assert_allclose(metrics.ucm_thresholds(5), np.arange(1, 6) / 6)
    assert metrics.ucm_thresholds().shape == (99,)
    with pytest.raises(ValueError, match="threshold"):
        metrics.ucm_thresholds(0)


def test_ucm_segmentation_by_hand():
    # Two pixels side by side, separated by a contour of strength 0.5 (double-size map 3x5).
    ucm2 = np.zeros((3, 5))
    ucm2[:, 2] = 0.5
    np.testing.assert_array_equal(metrics.ucm_segmentation(ucm2, 0.4), [[1, 2]])
    np.testing.assert_array_equal(metrics.ucm_segmentation(ucm2, 0.5), [[1, 1]])
    with pytest.raises(ValueError, match="2H"):
        metrics.ucm_segmentation(np.zeros((4, 5)), 0.5)


def _random_maps(shape=(23, 31), k_pred=6, k_gt=5):
    pred = RNG.integers(0, k_pred, size=shape)
    gt = RNG.integers(1, k_gt + 1, size=shape)
    return pred, gt


@pytest.mark.parametrize("seed", range(3))
def test_rand_index_matches_sklearn(seed):
    del seed
    pred, gt = _random_maps()
    assert metrics.rand_index(pred, gt) == pytest.approx(rand_score(gt.ravel(), pred.ravel()))
    # Unlabelled ground truth (0) is ignored.
    gt[:5] = 0
    keep = gt > 0
    expected = rand_score(gt[keep], pred[keep])
    assert metrics.rand_index(pred, gt) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_voi_matches_skimage(seed):
    del seed
    pred, gt = _random_maps()
    assert metrics.variation_of_information(pred, gt) == pytest.approx(skimage_voi(gt, pred).sum())
    gt[:, :4] = 0
    expected = skimage_voi(gt, pred, ignore_labels=[0]).sum()
    assert metrics.variation_of_information(pred, gt) == pytest.approx(expected)


def test_contingency_table_by_hand():
    table = metrics.contingency_table([[0, 0, 1], [2, 2, 2]], [[1, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(table, [[1, 1], [0, 1], [1, 2]])


def test_cluster_table_and_paper_score_by_hand():
    pred = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    gt = np.array([[1, 1, 1, 2], [1, 1, 2, 2]])
    clusters, best_segment, iou = metrics.cluster_table(pred, gt)
    np.testing.assert_array_equal(clusters, [0, 1, 2])
    # Cluster 0 = gt 1 minus one pixel: 4/5. Cluster 1 ties 1/5 (gt 1) and 1/4 (gt 2).
    np.testing.assert_array_equal(best_segment, [1, 2, 2])
    np.testing.assert_allclose(iou, [4 / 5, 1 / 4, 2 / 3])
    mean, weighted = metrics.cluster_iou(pred, gt)
    assert mean == pytest.approx((4 / 5 + 1 / 4 + 2 / 3) / 3)
    assert weighted == pytest.approx((4 * 4 / 5 + 2 * 1 / 4 + 2 * 2 / 3) / 8)
    # Two annotations: the average of the two scores.
    mean2, weighted2 = metrics.cluster_iou(pred, [gt, np.ones_like(gt)])
    assert mean2 == pytest.approx((mean + (4 / 8 + 2 / 8 + 2 / 8) / 3) / 2)
    assert weighted2 == pytest.approx((weighted + (16 / 8 + 4 / 8 + 4 / 8) / 8) / 2)


def test_cluster_table_ties_take_smallest_segment():
    pred = np.array([[0, 0]])
    gt = np.array([[2, 1]])
    _, best_segment, iou = metrics.cluster_table(pred, gt)
    np.testing.assert_array_equal(best_segment, [1])
    np.testing.assert_allclose(iou, [0.5])


def test_kim_blank_prediction_scores_area_fractions_exactly():
    fine = np.array([[1, 1, 2, 3], [1, 4, 4, 3], [5, 5, 5, 3]])  # 5 segments
    coarse = np.array([[1, 1, 1, 1], [1, 1, 2, 2], [1, 1, 2, 2]])  # 2 segments
    blank = np.zeros(fine.shape, dtype=np.int32)
    stats = metrics.kim_image_stats(blank, [coarse, fine])
    area = fine.size
    assert stats["kim_fine_count"] == 5
    assert stats["kim_fine_sum"] == 3 / area + 1 / area + 3 / area + 2 / area + 3 / area
    assert stats["kim_coarse_count"] == 2
    assert stats["kim_coarse_sum"] == 8 / area + 4 / area
    assert stats["kim_all_count"] == 7
    assert stats["kim_all_sum"] == pytest.approx(2.0, rel=1e-15)
    assert metrics.kim_miou([blank], [[coarse, fine]], "coarse") == (8 / area + 4 / area) / 2


def test_kim_uses_connected_segments_and_pools_over_images():
    # Label 0 appears in two disconnected pieces, which are two segments for Kim's mIoU.
    pred = np.array([[0, 1, 0], [0, 1, 0]])
    gt = np.array([[1, 2, 3], [1, 2, 3]])
    stats = metrics.kim_image_stats(pred, gt)
    assert stats["kim_all_sum"] == 3.0 and stats["kim_all_count"] == 3.0
    # The paper's cluster score sees label 0 as one cluster: IoU 2/4 with gt 1.
    assert metrics.cluster_iou(pred, gt)[0] == pytest.approx((0.5 + 1.0) / 2)
    blank = np.zeros_like(pred)
    pooled = metrics.kim_miou([pred, blank], [[gt], [gt]], "all")
    assert pooled == pytest.approx((3.0 + 3 * (2 / 6)) / 6)
    with pytest.raises(ValueError, match="mode"):
        metrics.kim_miou([pred], [[gt]], "medium")


def test_connected_segments_match_skimage():
    labels = RNG.integers(0, 3, size=(30, 40))
    segments, n = metrics.connected_segments(labels)
    reference = skimage_label(labels, connectivity=1, background=-1)
    assert n == reference.max()
    # Same partition: every segment maps to exactly one reference segment and back.
    table = metrics.contingency_table(segments, reference)
    assert np.count_nonzero(table) == n


def test_region_stats_official_semantics_by_hand():
    # Unlabelled ground truth (0) counts in the IoU marginals but not in the region areas.
    gt = np.array([[1, 1, 0, 2]])
    pred = np.array([[0, 0, 1, 1]])  # official labels 1, 1, 2, 2
    stats = metrics.region_stats(pred, gt)
    # gt 1 vs pred 1: IoU 1; gt 2 vs pred 2 (2 pixels, one unlabelled in gt): 1/2.
    np.testing.assert_allclose(stats.cover, [2 * 1.0, 1 * 0.5])
    assert stats.cover_area == 3
    assert stats.cover_count == pytest.approx(2.5)
    assert stats.precision_count == pytest.approx(2 * 1.0 + 2 * 0.5)
    assert stats.precision_area == 4
    # Rand index and VOI ignore the unlabelled pixel: a perfect match on the other three.
    assert stats.rand_index == 1.0
    assert stats.voi == pytest.approx(0.0)
    same = metrics.region_stats(pred + 1, gt, official_labels=True)
    np.testing.assert_array_equal(same.cover, stats.cover)


def test_region_stats_counts_empty_labels_like_regionprops():
    gt = np.array([[1, 1, 3, 3]])  # label 2 is empty but is a region of area 0
    stats = metrics.region_stats(np.array([[0, 0, 1, 1]]), gt)
    np.testing.assert_allclose(stats.cover, [2.0, 0.0, 2.0])


def test_region_stats_row_round_trip():
    pred, gt = _random_maps()
    stats = metrics.region_stats(pred, [gt, gt[::-1]])
    row = metrics.region_stats_to_row(stats)
    assert all(isinstance(v, float) for k, v in row.items() if k != "cover")
    back = metrics.region_stats_from_row({k: str(v) for k, v in row.items()})
    np.testing.assert_array_equal(back.cover, stats.cover)
    assert back._replace(cover=None) == stats._replace(cover=None)
    with pytest.raises(ValueError, match="lacks"):
        metrics.region_stats_from_row({"voi": 1.0})


def _stats(cover, cover_area, rand_index=0.5, voi=1.0):
    return metrics.RegionStats(
        cover=np.asarray(cover, dtype=np.float64),
        cover_area=cover_area,
        precision_count=1.0,
        precision_area=2.0,
        rand_index=rand_index,
        voi=voi,
    )


def test_aggregation_tie_breaking_and_pooling_by_hand():
    # Image 0 (two ground-truth regions): coverings 0.5, 0.5, 0.25; image 1: 0.2, 0.6, 0.6.
    image0 = [_stats([5, 0], 10, 0.7, 2.0), _stats([2, 3], 10, 0.7, 2.0), _stats([1, 1.5], 10, 0.7)]
    image1 = [_stats([4], 20, 0.1, 0.3), _stats([12], 20, 0.9, 0.3), _stats([12], 20, 0.9, 0.3)]
    result = metrics.aggregate_region_stats([image0, image1], thresholds=[0.1, 0.2, 0.3])
    np.testing.assert_allclose(result.covering, [9 / 30, 17 / 30, 14.5 / 30])
    assert result.ods_covering_threshold == 0.2
    assert result.ods_covering == pytest.approx(17 / 30)
    # Each image's first best threshold.
    np.testing.assert_allclose(result.image_threshold, [0.1, 0.2])
    np.testing.assert_allclose(result.image_covering, [0.5, 0.6])
    np.testing.assert_allclose(result.image_precision, [0.5, 0.5])
    assert result.ois_covering == pytest.approx((5 + 12) / 30)
    # Best possible: each region at its own best threshold: image 0 -> 5 + 3, image 1 -> 12.
    assert result.best_covering == pytest.approx(20 / 30)
    # Mean PRI ties at thresholds 0.2 and 0.3: ODS takes the first.
    np.testing.assert_allclose(result.pri, [0.4, 0.8, 0.8])
    assert (result.ods_pri_threshold, result.ods_pri) == (0.2, pytest.approx(0.8))
    assert result.ois_pri == pytest.approx((0.7 + 0.9) / 2)
    np.testing.assert_allclose(result.voi, [1.15, 1.15, 0.65])
    assert (result.ods_voi_threshold, result.ods_voi) == (0.3, pytest.approx(0.65))
    assert result.ois_voi == pytest.approx((1.0 + 0.3) / 2)
    np.testing.assert_array_equal(
        metrics.aggregate_region_stats([image0, image1]).thresholds, [1, 2, 3]
    )


def test_aggregation_rejects_ragged_input():
    with pytest.raises(ValueError, match="candidates"):
        metrics.aggregate_region_stats([[_stats([1], 2)], [_stats([1], 2), _stats([1], 2)]])
    with pytest.raises(ValueError, match="no images"):
        metrics.aggregate_region_stats([])
    with pytest.raises(ValueError, match="thresholds"):
        metrics.aggregate_region_stats([[_stats([1], 2)]], thresholds=[1, 2])


IMAGE_METRIC_KEYS = {
    "cluster_iou_mean",
    "cluster_iou_weighted",
    "covering",
    "covering_precision",
    "pri",
    "voi",
    *(f"kim_{m}_{s}" for m in metrics.KIM_MODES for s in ("sum", "count")),
    "n_segments",
    "n_connected_segments",
}


def test_image_metrics_agree_with_the_single_metrics():
    pred, gt = _random_maps(k_pred=4)
    gts = [gt, RNG.integers(1, 3, size=gt.shape)]
    scores = metrics.image_metrics(pred, gts)
    assert set(scores) == IMAGE_METRIC_KEYS
    assert all(isinstance(v, float) for v in scores.values())
    stats = metrics.region_stats(pred, gts)
    assert scores["covering"] == pytest.approx(stats.cover_count / stats.cover_area)
    assert scores["covering_precision"] == pytest.approx(
        stats.precision_count / stats.precision_area
    )
    assert scores["pri"] == pytest.approx(np.mean([metrics.rand_index(pred, g) for g in gts]))
    assert scores["voi"] == pytest.approx(
        np.mean([metrics.variation_of_information(pred, g) for g in gts])
    )
    assert (scores["cluster_iou_mean"], scores["cluster_iou_weighted"]) == pytest.approx(
        metrics.cluster_iou(pred, gts)
    )
    kim = metrics.kim_image_stats(pred, gts)
    assert {k: scores[k] for k in kim} == kim
    assert scores["n_segments"] == 4
    assert scores["n_connected_segments"] == metrics.connected_segments(pred)[1]


def test_metrics_are_invariant_to_label_permutation():
    pred, gt = _random_maps(k_pred=7, k_gt=6)
    base = metrics.image_metrics(pred, [gt])
    pred_perm = RNG.permutation(7)[pred]
    gt_perm = (RNG.permutation(6) + 1)[gt - 1]
    permuted = metrics.image_metrics(pred_perm, [gt_perm])
    assert permuted == pytest.approx(base, rel=1e-12)


def test_metric_bounds_and_perfect_score():
    pred, gt = _random_maps()
    scores = metrics.image_metrics(pred, [gt, gt.T.copy().reshape(gt.shape)])
    for key in ("cluster_iou_mean", "cluster_iou_weighted", "covering", "covering_precision"):
        assert 0.0 <= scores[key] <= 1.0
    assert 0.0 <= scores["pri"] <= 1.0
    assert 0.0 <= scores["voi"] <= 2 * math.log2(pred.size)
    for mode in metrics.KIM_MODES:
        assert 0.0 <= scores[f"kim_{mode}_sum"] <= scores[f"kim_{mode}_count"]
    perfect = metrics.image_metrics(gt - 1, gt)
    for key in ("cluster_iou_mean", "cluster_iou_weighted", "covering", "covering_precision"):
        assert perfect[key] == 1.0
    assert perfect["pri"] == 1.0
    assert perfect["voi"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((2, 3), int), np.ones((3, 2), int), "shape"),
        (np.zeros((0, 3), int), np.ones((0, 3), int), "empty"),
        (np.zeros((2, 3)), np.ones((2, 3), int), "integer"),
        (np.zeros((2, 3), int), np.ones((2, 3)), "integer"),
        (-np.ones((2, 3), int), np.ones((2, 3), int), "negative"),
        (np.zeros((2, 3), int), -np.ones((2, 3), int), "negative"),
        (np.zeros(6, int), np.ones(6, int), "2-D"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), "no labelled pixel"),
    ],
)
def test_bad_input_raises(pred, gt, message):
    for metric in (
        metrics.image_metrics,
        metrics.region_stats,
        metrics.cluster_iou,
        metrics.kim_image_stats,
        metrics.cluster_table,
        metrics.rand_index,
        metrics.variation_of_information,
    ):
        with pytest.raises(ValueError, match=message):
            metric(pred, gt)


def test_empty_ground_truth_raises():
    with pytest.raises(ValueError, match="ground_truth is empty"):
        metrics.image_metrics(np.zeros((2, 2), int), [])
    with pytest.raises(ValueError, match="no labelled pixel"):
        metrics.region_stats(np.zeros((1, 2), int), np.array([[1, 1]]), official_labels=True)
