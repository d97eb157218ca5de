"""`python -m jaxseg.evaluate` writes the official BSDS region-benchmark files byte for byte, and
the boundary-benchmark files within the tolerance of tests/test_boundary.py."""

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_boundary import assert_close_to_official

from jaxseg import evaluate, metrics
from jaxseg.data import read_ground_truth

REPO = Path(__file__).resolve().parents[1]
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


def _read_boundary_files(out):
    """The written eval_bdry* files as a BoundaryBenchmark-like record."""
    summary = np.loadtxt(out / "eval_bdry.txt")
    images = np.loadtxt(out / "eval_bdry_img.txt", ndmin=2)
    curve = np.loadtxt(out / "eval_bdry_thr.txt", ndmin=2)
    return SimpleNamespace(
        thresholds=curve[:, 0],
        recall=curve[:, 1],
        precision=curve[:, 2],
        f=curve[:, 3],
        ods_threshold=summary[0],
        ods_recall=summary[1],
        ods_precision=summary[2],
        ods_f=summary[3],
        ois_recall=summary[4],
        ois_precision=summary[5],
        ois_f=summary[6],
        ap=summary[7],
        image_threshold=images[:, 1],
        image_recall=images[:, 2],
        image_precision=images[:, 3],
        image_f=images[:, 4],
    )


def _main(*args):
    return evaluate.main(["jaxseg-evaluate", *map(str, args)])


def _cli(*args):
    command = [sys.executable, "-m", "jaxseg.evaluate", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def test_cli_reproduces_official_ucm2_benchmark(bench, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jaxseg.evaluate", "--input", str(bench / "ucm2")]
    command += ["--gt", str(bench / "groundTruth"), "--out", str(out)]
    command += ["--nthresh", "5", "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    assert "[5/5]" in done.stderr
    assert "OIS 0.7251" in done.stdout
    _assert_same_files(out, bench / "test_1")
    assert_close_to_official(_read_boundary_files(out), bench / "test_1")


def test_main_reproduces_official_segs_benchmark(bench, tmp_path):
    assert _main("--input", bench / "segs", "--gt", bench / "groundTruth", "--out", tmp_path) == 0
    _assert_same_files(tmp_path, bench / "test_4")
    _assert_same_files(tmp_path, bench / "test_5")
    assert_close_to_official(_read_boundary_files(tmp_path), bench / "test_4")


@pytest.mark.parametrize(("folder", "official"), [("png", "test_2"), ("segs", "test_3")])
def test_boundary_kind_reproduces_official_boundary_benchmark(bench, tmp_path, folder, official):
    _main(
        *("--input", bench / folder, "--gt", bench / "groundTruth", "--out", tmp_path),
        *("--kind", "boundary", "--nthresh", "5", "--workers", "1"),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "eval_bdry.txt",
        "eval_bdry_img.txt",
        "eval_bdry_thr.txt",
    ]
    assert_close_to_official(_read_boundary_files(tmp_path), bench / official)


def test_full_precision_is_within_1e_4_of_official(bench, tmp_path):
    _main(
        *("--input", bench / "segs", "--gt", bench / "groundTruth", "--out", tmp_path),
        *("--workers", "1", "--full_precision", "--noboundary"),
    )
    assert not (tmp_path / "eval_bdry.txt").exists()
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
    evaluation = evaluate.evaluate_folder(
        tmp_path, gt_dir, workers=1, official_rounding=False, progress=False
    )
    assert evaluation.ids == ids
    result = evaluation.region
    want = metrics.aggregate_region_stats(expected)
    np.testing.assert_array_equal(result.thresholds, [1.0])
    assert result.ods_covering == want.ods_covering
    assert result.ods_pri == want.ods_pri
    assert result.ods_voi == want.ods_voi
    # A label map's boundaries are its label changes, scored as one candidate.
    assert evaluation.boundary.thresholds.tolist() == [1.0]
    assert 0.5 < evaluation.boundary.ods_f < 1


def test_result_files_use_official_order(bench, tmp_path):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    source = bench / "segs" / "2018.mat"
    for image_id in ("2018", "20180", "100"):
        shutil.copy(source, tmp_path / f"{image_id}.mat")
        shutil.copy(bench / "groundTruth" / "2018.mat", gt_dir / f"{image_id}.mat")
    order = [r.stem for r, _ in evaluate.result_files(tmp_path, gt_dir)]
    assert order == ["100", "20180", "2018"]  # as the sorted "<id>_ev1.txt" names


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
    with pytest.raises(ValueError, match=r"2018.mat has none of \['segs', 'ucm2'\]"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1, progress=False)

    shutil.copy(bench / "segs" / "2018.mat", tmp_path / "2018.mat")
    shutil.copy(bench / "segs" / "3063.mat", tmp_path / "9999.mat")
    with pytest.raises(FileNotFoundError, match="9999.mat"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1)

    (tmp_path / "9999.mat").unlink()
    segs = scipy.io.loadmat(bench / "segs" / "3063.mat")["segs"][:, :2]
    scipy.io.savemat(tmp_path / "3063.mat", {"segs": segs})
    with pytest.raises(ValueError, match="same thresholds"):
        evaluate.evaluate_folder(tmp_path, gt_dir, workers=1, bdry=False, progress=False)

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


def test_bad_boundary_maps_raise(bench, tmp_path):
    gt_dir = bench / "groundTruth"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "2018.png")
    with pytest.raises(ValueError, match="2018.png.*shape"):
        evaluate.evaluate_folder(tmp_path, gt_dir, kind="boundary", workers=1, progress=False)
    Image.fromarray(np.zeros((481, 321, 3), np.uint8)).save(tmp_path / "2018.png")
    with pytest.raises(ValueError, match="2018.png: image mode RGB"):
        evaluate.evaluate_folder(tmp_path, gt_dir, kind="boundary", workers=1)
    with pytest.raises(ValueError, match="8- or 16-bit greyscale"):
        evaluate.read_boundary_candidates(tmp_path / "2018.png", kind="boundary")
    with pytest.raises(ValueError, match="values must lie in"):
        scipy.io.savemat(tmp_path / "2018.mat", {"ucm2": np.full((963, 643), 2.0)})
        evaluate.read_boundary_candidates(tmp_path / "2018.mat")


def test_ground_truth_boundaries_fall_back_to_segmentations(bench, tmp_path):
    stored = evaluate.read_ground_truth_boundaries(bench / "groundTruth" / "3063.mat")
    cell = scipy.io.loadmat(bench / "groundTruth" / "3063.mat")["groundTruth"]
    segmentations = np.empty(cell.shape, object)
    for i, entry in enumerate(cell.flat):
        segmentations.flat[i] = {"Segmentation": entry["Segmentation"][0, 0]}
    scipy.io.savemat(tmp_path / "3063.mat", {"groundTruth": segmentations})
    rebuilt = evaluate.read_ground_truth_boundaries(tmp_path / "3063.mat")
    assert len(rebuilt) == len(stored) == 6
    for ours, official in zip(rebuilt, stored, strict=True):
        np.testing.assert_array_equal(ours, official)


def test_cli_help_and_errors_are_clean(bench, tmp_path):
    done = _cli("--help")
    assert done.returncode == 0 and "--kind" in done.stdout
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr

    empty = tmp_path / "in"
    empty.mkdir()
    (empty / "2018.mat").touch()
    cases = [
        (["--input", bench / "segs", "--gt", tmp_path / "missing"], "missing not found"),
        (["--input", empty, "--gt", bench / "groundTruth"], "2018.mat is an empty file"),
        (["--input", bench / "segs", "--gt", bench / "groundTruth", "--kind", "x"], "--kind"),
        (["--gt", bench / "groundTruth"], "--input"),
        (["--input", bench / "segs", "--gt", bench / "groundTruth", "--max_dist", "0"], "max_dist"),
    ]
    for args, message in cases:
        done = _cli(*args, "--out", tmp_path / "out")
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert not (tmp_path / "out").exists()  # nothing written before the checks
