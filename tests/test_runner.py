"""jaxseg.runner, the run directory, the summary and the command lines, on a tiny BSDS-style
dataset written by the tests."""

import concurrent.futures
import csv
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.io
from jax.experimental.compilation_cache import compilation_cache as jax_cache
from PIL import Image

from jaxseg import (
    boundary,
    cnn,
    config,
    metrics,
    pipeline,
    report,
    rundir,
    runner,
    stages,
    visualize,
)
from jaxseg.summary import Summary

REPO = Path(__file__).resolve().parents[1]

# id -> (split, height, width): 3096 makes the report's Tables 7.1-7.3 appear; 22090 is portrait.
IMAGES = {
    "100": ("train", 16, 22),
    "22090": ("train", 22, 16),
    "3096": ("train", 16, 22),
    "5000": ("test", 16, 22),
}


def _image(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy three-region image and its 1-based ground truth."""
    truth = np.ones((height, width), np.uint16)
    truth[height // 2 :] = 2
    truth[:, : width // 3] = 3
    colours = np.array([[0, 0, 0], [210, 50, 40], [40, 60, 200], [50, 180, 60]])
    noise = np.random.default_rng(seed).integers(-10, 11, (height, width, 3))
    return np.clip(colours[truth] + noise, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def bsds(tmp_path_factory) -> Path:
    """data_dir with BSDS500/{images,groundTruth}/{split}/ (no ground truth for test)."""
    root = tmp_path_factory.mktemp("data")
    for seed, (image_id, (split, height, width)) in enumerate(IMAGES.items()):
        image, truth = _image(height, width, seed)
        path = root / "BSDS500" / "images" / split / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=98)
        if split == "test":
            continue
        coarse = np.where(truth == 3, 1, truth).astype(np.uint16)
        cell = np.empty((1, 2), dtype=object)
        for i, seg in enumerate((truth, coarse)):
            edges = boundary.thin(boundary.seg_boundaries(seg)).astype(np.uint8)
            cell[0, i] = {"Segmentation": seg, "Boundaries": edges}
        path = root / "BSDS500" / "groundTruth" / split / f"{image_id}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"groundTruth": cell})
    return root


def _config(bsds: Path, **overrides) -> config.RunConfig:
    options = overrides.pop("options", {})
    settings = dict(
        method=("kmeans", "gmm_kmeans"),
        dataset="bsds500",
        split="train",
        data_dir=str(bsds),
        # Small and shared by every run: runs in one process hit the compilation cache.
        options=pipeline.Options(
            k_max=options.pop("k_max", 4),
            cnn=dataclasses.replace(cnn.Config.paper(), max_iter=3),
            **options,
        ),
        batch_size=3,
    )
    return config.RunConfig(**{**settings, **overrides})


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Runs in this module share JAX's persistent cache, as reruns of the CLI do; the modules
    after it compile without one again (the cache is set up once per process unless reset)."""
    previous = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
    jax_cache.reset_cache()


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _labels(workdir: Path, unit: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "labels" / unit).glob("*.png"))}


def _cli(*args, cwd, module=None, timeout=300):
    command = ["-m", module] if module else [str(REPO / "experiments" / "run.py")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def full_run(bsds, tmp_path_factory):
    """Every paper method plus the CE-only CNN on the train split, a tiny CNN budget."""
    workdir = tmp_path_factory.mktemp("full")
    cfg = _config(bsds, method=("kmeans", "gmm", "cnn", "cnn_kmeans", "gmm_kmeans", "cnn_ce"))
    return cfg, workdir, runner.run(cfg, workdir)


def test_outputs(full_run):
    cfg, workdir, summary = full_run
    rows = _csv(workdir / "metrics.csv")
    header = (workdir / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("image_id,method,k,n_clusters,")
    assert {"kim_all_sum", "kim_coarse_count", "covering", "pri", "voi"} <= set(rows[0])
    assert "seconds" not in header
    assert len(rows) == 3 * 6
    assert [r["image_id"] for r in rows[::6]] == ["100", "22090", "3096"]
    assert len(_csv(workdir / "timings.csv")) == 3 * 6
    for unit in cfg.method:
        for image_id in ("100", "22090", "3096"):
            labels = rundir.read_labels(workdir / "labels" / unit / f"{image_id}.png")
            assert labels.shape == IMAGES[image_id][1:]
            with Image.open(workdir / "labels" / unit / f"{image_id}.png") as png:
                assert png.mode in ("L", "I;16")  # single-channel integer labels
            for kind in ("color", "segments", "overlays"):
                with Image.open(workdir / kind / unit / f"{image_id}.png") as picture:
                    assert picture.mode == "RGB" and picture.size == (png.width, png.height)
        overlay = np.asarray(Image.open(workdir / "overlays" / unit / "3096.png"))
        borders = (overlay == np.asarray(visualize.BOUNDARY_COLOUR, np.uint8)).all(-1)
        assert borders.any() and not borders.all()  # three regions: borders, not everywhere
    assert Image.open(workdir / "panels" / "22090.png").width > 7 * 16
    assert summary == Summary.from_json((workdir / "summary.json").read_text())
    assert summary.failures == [] and summary.metrics_skipped is None
    unit = summary.units[0]
    kim_sum = sum(float(r["kim_all_sum"]) for r in rows if r["method"] == "kmeans")
    kim_count = sum(float(r["kim_all_count"]) for r in rows if r["method"] == "kmeans")
    assert unit.kim_miou["all"] == pytest.approx(kim_sum / kim_count)
    assert set(summary.cluster_tables) == {"cnn", "gmm"}
    assert summary.cluster_tables["gmm"].n_gt_segments == 2  # the coarsest annotation
    assert not list(workdir.rglob(".*.tmp"))


def test_report(full_run):
    _, workdir, summary = full_run
    report = (workdir / "report.md").read_text()
    for title in ("Table 7.1", "Table 7.2", "Table 7.3", "Table 7.4", "research questions"):
        assert title in report
    assert "0.67" in report and "0.3050" in report  # the paper's and Kim et al.'s numbers
    gmm = next(u for u in summary.units if u.method == "gmm")
    assert f"{gmm.mean['cluster_iou_mean']:.3f}" in report
    assert "`cnn` vs `cnn_ce`: paper score" in report  # continuity question answered
    assert "kmeans_xy" not in report  # not run: left out, not "not measured"
    # Each method's settings with their values: cnn_ce ran with mu 0 whatever --cnn_mu says.
    assert re.search(r"- `cnn_ce`: CNN \(per-image\): [^\n]*mu 0\.0,", report)
    assert re.search(r"- `cnn`: CNN \(per-image\): [^\n]*mu 0\.5,", report)
    assert Image.open(workdir / "summary.png").size[0] >= 480


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels on which two label maps agree, up to a renaming of labels."""
    table = metrics.contingency_table(a, b)
    return min(table.max(axis=1).sum(), table.max(axis=0).sum()) / a.size


def test_runner_executes_the_library_plans(full_run):
    # The runner's units are pipeline.plan's plans (cnn_kmeans extends cnn's, computed once),
    # and its image i uses fold_in(PRNGKey(seed), i), as pipeline.segment does: for the
    # GMM's fixed point the labels agree on every pixel (batch of 3 vs batch of 1).
    cfg, workdir, _ = full_run
    by_name = {u.name: u for u in runner.units(cfg)}
    for unit in by_name.values():
        assert unit.plan == pipeline.plan(unit.method, unit.k or "elbow", cfg.options)
    assert by_name["cnn_kmeans"].plan[:1] == by_name["cnn"].plan
    dataset = runner.open_dataset(cfg)
    index = 1  # 22090, portrait: turned to landscape and back
    sample = dataset[index]
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), index)
    fields = {f.name: getattr(cfg.options, f.name) for f in dataclasses.fields(cfg.options)}
    expected = np.asarray(pipeline.segment(sample.image, "gmm_kmeans", key=key, **fields))
    saved = rundir.read_labels(workdir / "labels" / "gmm_kmeans" / f"{sample.image_id}.png")
    assert _agreement(saved, expected) >= 0.999


def test_labels_do_not_depend_on_batch_size(bsds, tmp_path):
    for batch_size in (1, 3):
        runner.run(_config(bsds, batch_size=batch_size), tmp_path / str(batch_size))
    for unit in ("kmeans", "gmm_kmeans"):
        assert _labels(tmp_path / "1", unit) == _labels(tmp_path / "3", unit)


def test_partial_batches_of_cnn_fits_pad_to_a_power_of_two():
    options = pipeline.Options()
    fits = [stages.FitCNN(cnn.Config.paper()), stages.RefinedCNN(options)]
    for stage in fits:
        sizes = [runner._padded_size(stage, n, 16) for n in (1, 2, 3, 5, 16, 20)]
        assert sizes == [1, 2, 4, 8, 16, 20]
    assert runner._padded_size(stages.Cluster("kmeans", 4, options), 3, 16) == 16


def _records(workdir: Path) -> dict[str, dict]:
    """Every record of a run, without its timings."""
    timing = ("seconds", "batch_size", "compiled")
    return {
        str(path.relative_to(workdir)): {
            k: v for k, v in json.loads(path.read_text()).items() if k not in timing
        }
        for path in sorted((workdir / "records").rglob("*.json"))
    }


def test_writer_processes_write_what_one_process_writes(bsds, tmp_path):
    # The same function saves and scores in either case: identical records, labels and ucm2.
    for workers in (1, 2):
        runner.run(
            _config(bsds, method=("kmeans", "ucm"), workers=workers), tmp_path / str(workers)
        )
    one, two = tmp_path / "1", tmp_path / "2"
    assert _records(one) == _records(two) and len(_records(one)) == 6
    for unit in ("kmeans", "ucm"):
        assert _labels(one, unit) == _labels(two, unit)
    ucm = sorted((two / "ucm2" / "ucm").glob("*.mat"))
    assert len(ucm) == 3
    for path in ucm:
        np.testing.assert_array_equal(
            rundir.read_ucm(path), rundir.read_ucm(one / "ucm2" / "ucm" / path.name)
        )
    assert sorted(p.name for p in (two / "panels").glob("*.png")) == [
        "100.png",
        "22090.png",
        "3096.png",
    ]


def test_writer_records_a_failure_and_draws_the_rest(bsds, tmp_path):
    cfg = _config(bsds, method=("kmeans",))
    dataset = runner.open_dataset(cfg)
    sample = dataset[0]
    unit = runner.units(cfg)[0]
    item = runner._Item(0, sample, None, ())
    wrong = np.zeros((3, 3), np.int32)  # not the image's size: saving raises
    result = runner._Result(unit, wrong, 1, 0.0, False, 1, None)
    run_dir = rundir.RunDir(tmp_path)
    runner._write_item(run_dir, cfg, item, [result], [unit.name])
    failure = run_dir.failure_path(unit.name, sample.image_id)
    assert failure.exists() and "(3, 3)" in failure.read_text()
    assert not run_dir.record_path(unit.name, sample.image_id).exists()
    assert run_dir.panel_path(sample.image_id).exists()


class _KillsItsUnpickler:
    """Unpickled in a writer process, it ends that process at once."""

    def __reduce__(self):
        return os._exit, (1,)


def test_writer_stops_when_a_worker_dies(bsds, tmp_path):
    cfg = _config(bsds, method=("kmeans",), workers=2)
    item = runner._Item(0, runner.open_dataset(cfg)[0], None, ())
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):  # not a hang
        with runner._Writer(rundir.RunDir(tmp_path), cfg, ["kmeans"], None) as writer:
            writer.submit(item, [_KillsItsUnpickler()])


def test_resume_repairs_and_cleans(bsds, tmp_path):
    cfg = _config(bsds, method=("kmeans",))
    first = runner.run(cfg, tmp_path)
    records = sorted((tmp_path / "records" / "kmeans").glob("*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in records}
    # An interrupted run: a record lost (its label map already written), a stray temporary
    # file, a kill after an image's record but before its picture and panel.
    records[1].unlink()
    stray = tmp_path / "labels" / "kmeans" / ".3096.png.999.tmp"
    stray.write_bytes(b"partial")
    (tmp_path / "panels" / "100.png").unlink()
    (tmp_path / "color" / "kmeans" / "100.png").unlink()
    (tmp_path / "overlays" / "kmeans" / "100.png").unlink()
    second = runner.run(cfg, tmp_path)
    assert records[1].exists() and not stray.exists()
    assert (tmp_path / "panels" / "100.png").exists()
    assert (tmp_path / "color" / "kmeans" / "100.png").exists()
    assert (tmp_path / "overlays" / "kmeans" / "100.png").exists()
    for path in (records[0], records[2]):
        assert path.stat().st_mtime_ns == mtimes[path]
    assert [u.mean for u in first.units] == [u.mean for u in second.units]


def test_locked_directory_is_refused(bsds, tmp_path):
    with rundir.RunDir(tmp_path).lock():
        with pytest.raises(ValueError, match="another run is writing into"):
            runner.run(_config(bsds, method=("kmeans",), num_images=1), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_subset_rerun_keeps_the_summary(bsds, tmp_path):
    runner.run(_config(bsds, method=("kmeans", "gmm")), tmp_path)
    summary = runner.run(_config(bsds, method=("kmeans",), num_images=1), tmp_path)
    assert [(u.name, u.n_images) for u in summary.units] == [("kmeans", 3), ("gmm", 3)]
    assert len(_csv(tmp_path / "metrics.csv")) == 6
    assert "`gmm`" in (tmp_path / "report.md").read_text()


def test_rerun_with_other_settings_is_refused(bsds, tmp_path):
    runner.run(_config(bsds, method=("kmeans",), num_images=1), tmp_path)
    with pytest.raises(ValueError, match="other settings.*seed 0 -> 1"):
        runner.run(_config(bsds, method=("kmeans",), num_images=1, seed=1), tmp_path)
    with pytest.raises(ValueError, match="covariance_type 'full' -> 'diag'"):
        options = {"covariance_type": "diag"}
        runner.run(_config(bsds, method=("gmm",), num_images=1, options=options), tmp_path)


def test_k_candidates_give_ods_ois(bsds, tmp_path):
    summary = runner.run(_config(bsds, method=("kmeans",), k=("elbow", 2, 3)), tmp_path)
    assert [u.name for u in summary.units] == ["kmeans-elbow", "kmeans-k2", "kmeans-k3"]
    bench = summary.region_benchmark["kmeans"]
    assert bench.k == ["elbow", 2, 3] and bench.n_images == 3
    assert 0 < bench.ods_covering <= bench.ois_covering <= bench.best_covering <= 1
    assert bench.ods_covering_k in ("elbow", 2, 3)
    assert {r["k"] for r in _csv(tmp_path / "metrics.csv")} == {"elbow", "2", "3"}
    assert "ODS / OIS" in (tmp_path / "report.md").read_text()


def test_split_without_ground_truth(bsds, tmp_path):
    summary = runner.run(_config(bsds, split="test"), tmp_path)
    assert "1 images have no ground truth" in summary.metrics_skipped
    rows = _csv(tmp_path / "metrics.csv")
    assert [(r["image_id"], r["method"]) for r in rows] == [
        ("5000", "kmeans"),
        ("5000", "gmm_kmeans"),
    ]
    assert list(rows[0]) == ["image_id", "method", "k", "n_clusters"]
    assert "Metrics skipped" in (tmp_path / "report.md").read_text()
    # No scores to chart: summary.png is the contact sheet of the overlays instead.
    sheet = np.asarray(report.contact_sheet(rundir.RunDir(tmp_path), summary))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "summary.png")), sheet)
    assert len(summary.units) == 2 and (tmp_path / "overlays" / "kmeans" / "5000.png").exists()


def test_failing_image_is_logged_and_skipped(bsds, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for image_id in ("100", "22090"):
        src = bsds / "BSDS500" / "images" / "train" / f"{image_id}.jpg"
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = _config(bsds, method=("kmeans",), dataset=str(folder), split=None, data_dir=None)
    summary = runner.run(cfg, tmp_path / "run")
    assert [(f.image_id, f.unit) for f in summary.failures] == [("broken", "kmeans")]
    assert "cannot read image" in summary.failures[0].error
    assert sorted(_labels(tmp_path / "run", "kmeans")) == ["100.png", "22090.png"]
    assert "broken" in (tmp_path / "run" / "report.md").read_text()


def test_failures_are_per_image_and_method(tmp_path):
    # K-means (K up to 10) cannot split a 3x3 image, the CNN needs 3x3 pixels: each failure is
    # its own, the other method's labels are kept.
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("line", (1, 50, 3)), ("tiny", (3, 3, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{name}.png")
    cfg = config.RunConfig(
        dataset=str(folder),
        method=("kmeans", "cnn"),
        options=pipeline.Options(cnn=dataclasses.replace(cnn.Config.paper(), max_iter=2)),
    )
    summary = runner.run(cfg, tmp_path / "run")
    failed = {(f.image_id, f.unit): f.error for f in summary.failures}
    assert sorted(failed) == [("line", "cnn"), ("tiny", "kmeans")]
    assert "3x3" in failed[("line", "cnn")]
    assert "k_max" in failed[("tiny", "kmeans")] or "n_clusters" in failed[("tiny", "kmeans")]
    assert sorted(_labels(tmp_path / "run", "kmeans")) == ["line.png"]
    assert sorted(_labels(tmp_path / "run", "cnn")) == ["tiny.png"]


def _log_lines(caplog, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def test_cnn_batches_log_iterations_and_an_upper_bound_of_the_time_left(
    tmp_path, caplog, monkeypatch
):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    cnn_config = dataclasses.replace(cnn.Config.paper(), max_iter=2, min_labels=1)
    cfg = config.RunConfig(
        dataset=str(folder), method=("cnn",), options=pipeline.Options(cnn=cnn_config)
    )
    monkeypatch.setattr(stages, "PROGRESS_EVERY", 1)
    with caplog.at_level(logging.INFO, logger="jaxseg.runner"):
        runner.run(cfg, tmp_path / "run")
    first, second = _log_lines(caplog, "  cnn on images a, b: iteration ")
    labels = r"labels \[\d+, \d+\], loss \[\S+, \S+\]"
    assert re.fullmatch(
        rf".*iteration 1/2, {labels}, ETA at the next line \(this call compiled\)", first
    )
    assert re.fullmatch(
        rf".*iteration 2/2, {labels}, ETA <= 0:00 \(sooner if it converges\)", second
    )


def test_dataset_mode_cnn(bsds, tmp_path, caplog, monkeypatch):
    cfg = _config(bsds, method=("cnn",), cnn_mode="dataset", num_images=2)
    monkeypatch.setattr(stages, "PROGRESS_EVERY", 1)
    with caplog.at_level(logging.INFO, logger="jaxseg.runner"):
        summary = runner.run(cfg, tmp_path / "a")
    assert summary.units[0].n_scored == 2
    # Training (on the whole split: 3 images, one batch, max_iter 3 updates) logs every
    # PROGRESS_EVERY updates; it cannot stop early, so its ETA is no bound.
    lines = _log_lines(caplog, "  dataset-mode CNN, 3 images in batches of 3: iteration ")
    assert [re.search(r"iteration (\d/3), ", s)[1] for s in lines] == ["1/3", "2/3", "3/3"]
    assert re.search(r", ETA \d+:\d\d$", lines[-1])
    assert all(1 <= int(r["n_clusters"]) <= 100 for r in _csv(tmp_path / "a" / "metrics.csv"))
    # The trained network is saved; another run applies it without training: same labels.
    (network,) = (tmp_path / "a" / "networks").glob("cnn-*.msgpack")
    reuse = dataclasses.replace(cfg, cnn_params=str(network))
    runner.run(reuse, tmp_path / "b")
    assert _labels(tmp_path / "a", "cnn") == _labels(tmp_path / "b", "cnn")
    assert not (tmp_path / "b" / "networks").exists()
    with pytest.raises(ValueError, match="cnn_params needs cnn_mode=dataset"):
        dataclasses.replace(reuse, cnn_mode="per-image")
    with pytest.raises(ValueError, match="no file"):
        dataclasses.replace(cfg, cnn_params=str(tmp_path / "missing.msgpack"))


def test_summary_json_round_trip_and_errors(full_run):
    _, workdir, summary = full_run
    text = (workdir / "summary.json").read_text()
    assert Summary.from_json(summary.to_json()) == summary
    with pytest.raises(ValueError, match="not valid JSON"):
        Summary.from_json(text[: len(text) // 2])
    with pytest.raises(ValueError, match="expected the fields"):
        Summary.from_json('{"units": []}')


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method=kmeans,watershed"], "unknown method 'watershed'"),
        (["--k=1"], "k must be an integer >= 2"),
        (["--k=four"], "neither an integer nor 'elbow'"),
        (["--dataset=bsds300", "--data_dir=/nonexistent/jaxseg"], "does not exist"),
        (["--batch_size=0"], "batch_size must be >= 1"),
        (["--pad_multiple=0"], "pad_multiple must be >= 1"),
        (["--space=hsv"], "rgb|lab"),
        (["--covariance_type=tied"], "full|diag|spherical"),
        (["--cnn_optimizer=rmsprop"], "optimizer must be one of"),
        (["--num_images=many"], "num_images"),
    ],
)
def test_cli_bad_flags_exit_with_one_line(flags, message, tmp_path):
    result = _cli(*flags, f"--output_dir={tmp_path}/out", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_unwritable_output_dir(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = _cli("--method=kmeans", f"--output_dir={tmp_path}/file/out", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("run.py: error: cannot write to") and "Traceback" not in result.stderr
    )


def test_cli_help_is_grouped(tmp_path):
    result = _cli("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    for group in ("data:", "methods:", "cnn:", "execution:", "output:", "distributed:"):
        assert f"\n{group}\n" in result.stdout
    for flag in ("--covariance_type", "--cnn_max_iter", "--cnn_preset", "--output_dir", "--k"):
        assert f"  {flag}\n" in result.stdout
    assert "<full|diag|spherical>" in result.stdout and "<paper|kim2020>" in result.stdout
    report = _cli("--help", cwd=tmp_path, module="jaxseg.report", timeout=120)
    assert report.returncode == 0 and "Warning" not in report.stderr + report.stdout


def test_report_cli(full_run, tmp_path):
    _, workdir, _ = full_run
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "summary.json").write_text((workdir / "summary.json").read_text())
    result = _cli(str(copy), cwd=tmp_path, module="jaxseg.report", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (copy / "report.md").read_text() == (workdir / "report.md").read_text()
    (copy / "summary.json").write_text((workdir / "summary.json").read_text()[:100])
    result = _cli(str(copy), cwd=tmp_path, module="jaxseg.report", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "error:" in lines[0]


def test_cli_runs_a_folder(bsds, tmp_path):
    folder = bsds / "BSDS500" / "images" / "train"
    flags = ["--method=kmeans", f"--dataset={folder}", "--num_images=2", "--k_max=4"]
    result = _cli(*flags, "--compilation_cache_dir=", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stderr and "ETA" in result.stderr
    workdir = tmp_path / "runs" / "train-kmeans"
    assert sorted(_labels(workdir, "kmeans")) == ["100.png", "22090.png"]
    assert (workdir / "report.md").exists()


def test_cli_every_image_failed_exits_nonzero(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = _cli("--method=kmeans", f"--dataset={folder}", "--output_dir=out", cwd=tmp_path)
    assert result.returncode == 1
    assert "every image failed" in result.stderr


def test_cnn_refined_ends_in_its_split(bsds, tmp_path):
    # cnn_refined's host stage (stages.Split) runs in the runner as in pipeline.segment for the
    # image's key: the same partition, up to pixels where XLA's programs for the runner's and
    # segment's batches round differently (the fit is chaotic).
    refined = dataclasses.replace(cnn.Config.refined(), max_iter=3)
    cfg = _config(
        bsds, method=("cnn_refined",), num_images=1, batch_size=1, options={"refined": refined}
    )
    assert isinstance(runner.units(cfg)[0].host, stages.Split)
    summary = runner.run(cfg, tmp_path)
    assert summary.failures == []
    assert (
        "the CNN's argmax on the image scaled by 2.0, split along the image's hierarchy "
        "(auto, size_scale 0.01) cut at 0.75" in (tmp_path / "report.md").read_text()
    )
    labels = rundir.read_labels(tmp_path / "labels" / "cnn_refined" / "100.png")
    image = np.asarray(Image.open(bsds / "BSDS500" / "images" / "train" / "100.jpg"))
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0)
    alone = np.asarray(pipeline.segment(image, "cnn_refined", key=key, refined=refined))
    assert labels.shape == alone.shape == IMAGES["100"][1:]
    pairs, counts = np.unique(np.stack([labels.ravel(), alone.ravel()]), axis=1, return_counts=True)
    agree = sum(counts[pairs[0] == lab].max() for lab in np.unique(labels))
    assert agree >= 0.9 * labels.size
