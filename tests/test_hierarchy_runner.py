"""Hierarchies (ucm2) and boundary F in jaxseg.runner, on the tiny BSDS-style dataset of
tests/test_runner.py, checked against `python -m jaxseg.evaluate` on the saved files."""

import numpy as np
import pytest
import scipy.io
import test_runner
from test_runner import _cli, _config

from jaxseg import hierarchy, pipeline, report, rundir, runner
from jaxseg.summary import Summary

# The tiny dataset and the shared compilation cache of test_runner (fixtures).
bsds = test_runner.bsds
compilation_cache = test_runner.compilation_cache

METHODS = ("kmeans", "ucm", "kmeans_ucm")
HIERARCHIES = ("ucm", "kmeans_ucm")
TRAIN = ("100", "22090", "3096")


@pytest.fixture(scope="module")
def hier_run(bsds, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hier")
    cfg = _config(bsds, method=METHODS)
    return cfg, workdir, runner.run(cfg, workdir)


def _floats(path) -> list[float]:
    return [float(x) for x in path.read_text().split()]


def test_ucm2_files_are_valid_and_labels_are_their_ods_cut(hier_run):
    _, workdir, summary = hier_run
    run_dir = rundir.RunDir(workdir)
    for unit in HIERARCHIES:
        ods = summary.hierarchies[unit].ods_covering_threshold
        for image_id in TRAIN:
            contents = scipy.io.loadmat(run_dir.ucm_path(unit, image_id))
            ucm2 = contents["ucm2"]
            labels = rundir.read_labels(run_dir.labels_path(unit, image_id))
            h, w = labels.shape
            assert ucm2.dtype == np.float64 and ucm2.shape == (2 * h + 1, 2 * w + 1)
            assert 0 <= ucm2.min() and ucm2.max() <= 1
            assert not ucm2[1::2, 1::2].any()  # pixels at odd indices, boundaries between
            assert ucm2.max() > 0
            record = run_dir.read_record(unit, image_id)
            assert record.threshold == ods
            np.testing.assert_array_equal(labels, hierarchy.labels_at(ucm2, ods))
            assert record.n_clusters == labels.max() + 1
            assert len(record.ucm_region_stats["index"]) == 99
            assert len(record.boundary_stats["thresholds"]) == 99
    assert all((workdir / "panels" / f"{image_id}.png").is_file() for image_id in TRAIN)
    # The image's labels were split into segments and merged: the finest cut refines them.
    flat = rundir.read_labels(run_dir.labels_path("kmeans", "3096"))
    fine = hierarchy.labels_at(rundir.read_ucm(run_dir.ucm_path("kmeans_ucm", "3096")), 0.0)
    pairs = np.unique(np.stack([fine.ravel(), flat.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # each fine region inside one label


def test_summary_agrees_with_the_evaluate_command(hier_run, bsds, tmp_path):
    _, workdir, summary = hier_run
    gt = bsds / "BSDS500" / "groundTruth" / "train"
    for unit in HIERARCHIES:
        out = tmp_path / unit
        result = _cli(
            "--input",
            str(workdir / "ucm2" / unit),
            "--gt",
            str(gt),
            "--out",
            str(out),
            "--nthresh",
            "99",
            "--workers",
            "1",
            cwd=tmp_path,
            module="jaxseg.evaluate",
        )
        assert result.returncode == 0, result.stderr
        h = summary.hierarchies[unit]
        assert h.n_images == 3
        cover = [h.ods_covering_threshold, h.ods_covering, h.ois_covering, h.best_covering]
        ri_voi = [h.ods_pri_threshold, h.ods_pri, h.ois_pri, h.ods_voi_threshold, h.ods_voi]
        ri_voi.append(h.ois_voi)
        # The command prints %10g (6 significant digits) of the same statistics, rounded to 6
        # digits per image first as the official code does.
        np.testing.assert_allclose(_floats(out / "eval_cover.txt"), cover, rtol=1e-5)
        np.testing.assert_allclose(_floats(out / "eval_RI_VOI.txt"), ri_voi, rtol=1e-5)
        b = summary.boundary[unit]
        expected = [b.ods_threshold, b.ods_recall, b.ods_precision, b.ods_f]
        expected += [b.ois_recall, b.ois_precision, b.ois_f, b.ap]
        np.testing.assert_allclose(_floats(out / "eval_bdry.txt"), expected, rtol=1e-5, atol=1e-6)


def test_boundary_f_of_a_flat_method_agrees_with_the_evaluate_command(hier_run, bsds, tmp_path):
    _, workdir, summary = hier_run
    b = summary.boundary["kmeans"]
    assert b.n_images == 3 and b.thresholds == [1.0]
    assert b.ods_f == pytest.approx(b.ois_f) and 0 < b.ods_f <= 1
    result = _cli(
        "--input",
        str(workdir / "labels" / "kmeans"),
        "--gt",
        str(bsds / "BSDS500" / "groundTruth" / "train"),
        "--out",
        str(tmp_path),
        "--workers",
        "1",
        cwd=tmp_path,
        module="jaxseg.evaluate",
    )
    assert result.returncode == 0, result.stderr
    official = _floats(tmp_path / "eval_bdry.txt")
    np.testing.assert_allclose(official[3], b.ods_f, rtol=1e-5)
    np.testing.assert_allclose(official[6], b.ois_f, rtol=1e-5)


def test_report_shows_hierarchies_and_boundaries(hier_run):
    _, workdir, summary = hier_run
    text = (workdir / "report.md").read_text()
    assert "## Hierarchies" in text and "gPb-owt-ucm" in text
    assert "## Boundary F" in text and "`ucm`" in text
    assert (workdir / "pr.png").is_file()
    assert Summary.from_json((workdir / "summary.json").read_text()) == summary
    assert report.render(summary) == text


def test_resume_reads_the_records_back(hier_run):
    cfg, workdir, summary = hier_run
    run_dir = rundir.RunDir(workdir)
    ucm_files = sorted((workdir / "ucm2").rglob("*.mat"))
    stamps = [p.stat().st_mtime_ns for p in ucm_files]
    records = run_dir.records()
    again = runner.run(cfg, workdir)
    assert [p.stat().st_mtime_ns for p in ucm_files] == stamps  # nothing recomputed
    assert run_dir.records() == records  # already cut at ODS: not rewritten
    assert again.hierarchies == summary.hierarchies and again.boundary == summary.boundary


def test_hierarchy_failure_is_pinned_on_its_image_and_unit_and_nthresh_is_a_setting(
    bsds, tmp_path, monkeypatch
):
    original = hierarchy.hierarchical_segmentation

    def portrait_fails(image, key, **options):
        if image.shape[0] > image.shape[1]:
            raise RuntimeError("boom")
        return original(image, key, **options)

    monkeypatch.setattr(hierarchy, "hierarchical_segmentation", portrait_fails)
    summary = runner.run(_config(bsds, method=("kmeans", "ucm"), nthresh=9), tmp_path)
    assert [(f.image_id, f.unit) for f in summary.failures] == [("22090", "ucm")]
    assert "RuntimeError: boom" in summary.failures[0].error
    assert summary.hierarchies["ucm"].n_images == 2
    assert summary.hierarchies["ucm"].thresholds == pytest.approx(np.arange(1, 10) / 10)
    assert len(summary.boundary["ucm"].thresholds) == 9
    assert summary.boundary["kmeans"].n_images == 3


def test_segment_refuses_a_hierarchy():
    with pytest.raises(ValueError, match="hierarchy"):
        pipeline.segment(np.zeros((8, 8, 3), np.uint8), "ucm", key=np.zeros(2, np.uint32))
