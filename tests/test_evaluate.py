"""`python -m jaxseg.evaluate` writes the official BSDS region-benchmark files, byte for byte."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxseg import evaluate, metrics
from jaxseg.data import read_ground_truth

REGION_FILES = (
    "eval_cover.txt",
    "eval_cover_img.txt",
    "eval_cover_th.txt",
    "eval_RI_VOI.txt",
    "eval_RI_VOI_thr.txt",
)


@pytest.fixture
def bench(test_data):
    return test_data / "bsds-bench"


def _assert_same_files(ours, official):
    for name in REGION_FILES:
        assert (ours / name).read_text() == (official / name).read_text(), name


def test_cli_reproduces_official_ucm2_benchmark(bench, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jaxseg.evaluate", "--input", str(bench / "ucm2")]
    command += ["--gt", str(bench / "groundTruth"), "--out", str(out)]
    command += ["--nthresh", "5", "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "[5/5]" in done.stderr
    assert "OIS 0.7251" in done.stdout
    _assert_same_files(out, bench / "test_1")


@pytest.mark.parametrize("test_name", ["test_4", "test_5"])
def test_main_reproduces_official_segs_benchmark(bench, tmp_path, test_name):
    evaluate.main(
        ["--input", str(bench / "segs"), "--gt", str(bench / "groundTruth")]
        + ["--out", str(tmp_path), "--workers", "1"]
    )
    _assert_same_files(tmp_path, bench / test_name)


def test_full_precision_is_within_1e_4_of_official(bench, tmp_path):
    evaluate.main(
        ["--input", str(bench / "segs"), "--gt", str(bench / "groundTruth")]
        + ["--out", str(tmp_path), "--workers", "1", "--full_precision"]
    )
    for name in REGION_FILES:
        ours = np.loadtxt(tmp_path / name, ndmin=2)
        np.testing.assert_allclose(ours, np.loadtxt(bench / "test_4" / name, ndmin=2), atol=1e-4)


def test_png_label_maps_are_zero_based_single_candidates(bench, tmp_path):
    gt_dir = bench / "groundTruth"
    ids = ["2018", "3063"]
    expected = []
    for image_id in ids:
        seg = scipy.io.loadmat(bench / "segs" / f"{image_id}.mat")["segs"][0, 1]
        Image.fromarray((seg - 1).astype(np.uint8)).save(tmp_path / f"{image_id}.png")
        ground_truth = read_ground_truth(gt_dir / f"{image_id}.mat")
        expected.append([metrics.region_stats(seg - 1, ground_truth)])
    got_ids, result = evaluate.evaluate_folder(
        tmp_path, gt_dir, workers=1, official_rounding=False, progress=False
    )
    assert got_ids == ids
    want = metrics.aggregate_region_stats(expected)
    np.testing.assert_array_equal(result.thresholds, [1.0])
    assert result.ods_covering == want.ods_covering
    assert result.ods_pri == want.ods_pri
    assert result.ods_voi == want.ods_voi


def test_result_files_use_official_order(bench, tmp_path):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    source = bench / "segs" / "2018.mat"
    for image_id in ("2018", "20180", "100"):
        shutil.copy(source, tmp_path / f"{image_id}.mat")
        shutil.copy(bench / "groundTruth" / "2018.mat", gt_dir / f"{image_id}.mat")
    order = [r.stem for r, _ in evaluate.result_files(tmp_path, gt_dir)]
    assert order == ["100", "20180", "2018"]  # as the sorted "<id>_ev2.txt" names


def test_read_candidates_formats(bench, tmp_path):
    thresholds, maps = evaluate.read_candidates(bench / "ucm2" / "2018.mat", nthresh=3)
    np.testing.assert_allclose(thresholds, [0.25, 0.5, 0.75])
    assert len(maps) == 3 and maps[0].shape == (481, 321)
    thresholds, maps = evaluate.read_candidates(bench / "segs" / "2018.mat")
    np.testing.assert_array_equal(thresholds, [1, 2, 3, 4, 5])
    # MATLAB doubles holding integers are labels; fractions are not.
    scipy.io.savemat(tmp_path / "double.mat", {"segs": np.array([[np.ones((2, 2))]], object)})
    assert evaluate.read_candidates(tmp_path / "double.mat")[1][0].dtype == np.int64
    scipy.io.savemat(tmp_path / "frac.mat", {"segs": np.array([[np.full((2, 2), 0.5)]], object)})
    with pytest.raises(ValueError, match="non-integer"):
        evaluate.read_candidates(tmp_path / "frac.mat")


def test_bad_inputs_raise(bench, tmp_path):
    gt_dir = bench / "groundTruth"
    with pytest.raises(FileNotFoundError, match="no .mat or .png"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1)
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate.evaluate_folder(tmp_path / "missing", gt_dir, workers=1)
    with pytest.raises(ValueError, match="workers"):
        evaluate.evaluate_folder(bench / "segs", gt_dir, workers=0)

    scipy.io.savemat(tmp_path / "2018.mat", {"labels": np.ones((2, 2))})
    with pytest.raises(ValueError, match="neither 'segs' nor 'ucm2'"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1, progress=False)

    shutil.copy(bench / "segs" / "2018.mat", tmp_path / "2018.mat")
    shutil.copy(bench / "segs" / "3063.mat", tmp_path / "9999.mat")
    with pytest.raises(FileNotFoundError, match="9999.mat"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1)

    (tmp_path / "9999.mat").unlink()
    segs = scipy.io.loadmat(bench / "segs" / "3063.mat")["segs"][:, :2]
    scipy.io.savemat(tmp_path / "3063.mat", {"segs": segs})
    with pytest.raises(ValueError, match="same thresholds"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1, progress=False)

    Image.fromarray(np.zeros((481, 321, 3), np.uint8)).save(tmp_path / "2018.png")
    with pytest.raises(ValueError, match="both .mat and .png"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1)
    (tmp_path / "2018.mat").unlink()
    with pytest.raises(ValueError, match="single-channel"):
        evaluate.read_candidates(tmp_path / "2018.png")

    wrong_size = tmp_path / "wrong"
    wrong_size.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(wrong_size / "2018.png")
    with pytest.raises(ValueError, match="2018.png.*shape"):
        evaluate.evaluate_folder(wrong_size, gt_dir, workers=1)
