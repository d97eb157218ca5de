"""Scribble-guided segmentation: scribble files, the pipeline's guided CNNs, the runner's
--scribbles and the script that makes scribbles from an annotation."""

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import cnn, config, data, pipeline, runner, scribbles, visualize

REPO = Path(__file__).resolve().parents[1]
UNSCRIBBLED = scribbles.UNSCRIBBLED
H, W = 16, 22


def _save(path: Path, array, mode: str | None = None) -> Path:
    image = Image.fromarray(np.asarray(array, np.uint8))
    (image.convert(mode) if mode else image).save(path)
    return path


def _strokes() -> np.ndarray:
    """Class 0 down the left half, class 1 down the right half of an H x W image."""
    out = np.full((H, W), UNSCRIBBLED, np.uint8)
    out[4:12, 3] = 0
    out[4:12, W - 4] = 1
    return out


# --- files ---------------------------------------------------------------------------------


def test_find_and_read(tmp_path):
    good = _strokes()
    assert scribbles.find(tmp_path, "a") is None
    _save(tmp_path / "a_scribble.png", good)  # the authors' name
    assert scribbles.find(tmp_path, "a") == tmp_path / "a_scribble.png"
    _save(tmp_path / "a.png", good)
    assert scribbles.find(tmp_path, "a") == tmp_path / "a.png"
    np.testing.assert_array_equal(scribbles.read(tmp_path / "a.png", (H, W)), good)
    # A palette image whose indices are the classes reads as its indices.
    palette = _save(tmp_path / "p.png", good, "P")
    assert Image.open(palette).mode == "P"
    np.testing.assert_array_equal(scribbles.read(palette, (H, W)), good)


@pytest.mark.parametrize(
    ("array", "mode", "message"),
    [
        (np.stack([_strokes()] * 3, -1), None, "RGB or non-label image"),
        (np.full((H, W), 255), "LA", "RGB or non-label image"),
        (_strokes()[:-1], None, f"15x{W} pixels, its image is {H}x{W}"),
        (np.zeros((H, W)), "P", "palette image whose indices are not labels"),
        (np.zeros((H, W)), None, "not a scribble map"),
    ],
)
def test_bad_files_name_themselves(tmp_path, array, mode, message):
    path = _save(tmp_path / "bad.png", array, mode)
    with pytest.raises(ValueError, match=message) as error:
        scribbles.read(path, (H, W))
    assert str(path) in str(error.value)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png: cannot read"):
        scribbles.read(tmp_path / "junk.png", (H, W))


@pytest.mark.parametrize("shape", [(8, 11), (5, 7), (3, 3)])
def test_shrink_keeps_thin_strokes(shape):
    big = np.full((2, H, W), UNSCRIBBLED, np.int32)
    big[0, :, 5] = 3  # a one-pixel vertical stroke
    big[1, 7, :] = 0  # a one-pixel horizontal stroke
    big[1, 2, 2] = 1
    small = np.asarray(scribbles.shrink(big, shape))
    assert small.shape == (2, *shape)
    assert np.all(np.any(small[0] == 3, axis=1))  # every row of the stroke survives
    assert np.all(np.any(small[1] == 0, axis=0))
    assert np.sum(small[1] == 1) == 1 and set(np.unique(small)) <= {0, 1, 3, UNSCRIBBLED}


def test_from_annotation():
    seg = np.ones((60, 80), np.int32)
    seg[:, 40:] = 2  # 2400 pixels each
    seg[:30, 60:] = 3  # 600 pixels
    seg[:5, :5] = 4  # 25 pixels: below min_size
    key = jax.random.key(0)
    out = scribbles.from_annotation(seg, key=key, min_size=100, margin=2)
    assert out.dtype == np.uint8 and out.shape == seg.shape
    np.testing.assert_array_equal(
        out, scribbles.from_annotation(seg, key=key, min_size=100, margin=2)
    )
    # Classes by size (ties: lower id), strokes inside their segment, away from its border.
    assert set(np.unique(out)) == {0, 1, 2, UNSCRIBBLED}
    for c, segment_id in enumerate((1, 2, 3)):
        inside = seg == segment_id
        assert np.any(out == c) and np.all(inside[out == c])
    assert not np.any(out[:, [39, 40]] != UNSCRIBBLED)
    assert set(np.unique(scribbles.from_annotation(seg, key=key, max_classes=1))) == {0, 255}


def test_strokes_are_drawn():
    image = np.zeros((H, W, 3), np.uint8)
    drawn = visualize.strokes(image, _strokes(), width=2)
    assert np.all(drawn[4:12, 3] == visualize.palette(2)[0])
    assert np.all(drawn[4:12, 4] == visualize.palette(2)[0])  # widened
    assert np.all(drawn[4:12, W - 4] == visualize.palette(2)[1])
    assert not drawn[0].any()
    overlay = visualize.pictures(image, np.zeros((H, W), int), scribbles=_strokes())["overlays"]
    np.testing.assert_array_equal(overlay, visualize.strokes(image, _strokes()))


# --- the pipeline --------------------------------------------------------------------------

SMALL = cnn.Config(n_channels=8, max_iter=5)


def test_methods_without_a_cnn_refuse_scribbles():
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(ValueError, match="'kmeans' has no CNN for scribbles"):
        pipeline.segment(image, "kmeans", key=jax.random.key(0), scribbles=_strokes())
    with pytest.raises(ValueError, match="no scribbled pixel"):
        pipeline.segment(
            image, "cnn", key=jax.random.key(0), cnn=SMALL, scribbles=np.full((H, W), 255)
        )
    with pytest.raises(ValueError, match=r"classes must be in \[0, 8\)"):
        pipeline.segment(
            image,
            "cnn",
            key=jax.random.key(0),
            cnn=SMALL,
            scribbles=np.where(_strokes() == 1, 8, 255),
        )
    with pytest.raises(ValueError, match="image's shape"):
        pipeline.segment(image, "cnn", key=jax.random.key(0), cnn=SMALL, scribbles=_strokes().T)


def test_scribble_classes_get_stable_labels():
    # Classes 2 and 5 (not 0..k-1): labels 0 and 1 in order of class, the other segments after;
    # scribbled pixels keep their class even after only 5 iterations. Portrait image.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (W, H, 3), dtype=np.uint8)
    strokes = np.where(_strokes() == 0, 5, np.where(_strokes() == 1, 2, 255)).T
    labels = np.asarray(
        pipeline.segment(image, "cnn", key=jax.random.key(0), cnn=SMALL, scribbles=strokes)
    )
    assert np.all(labels[strokes == 2] == 0) and np.all(labels[strokes == 5] == 1)


@pytest.mark.parametrize(("full_size_output", "least"), [(False, 0.85), (True, 0.7)])
def test_refined_cnn_follows_the_scribbles(full_size_output, least):
    # Two halves of nearly the same red (cnn_refined splits them unguided too, along the colour
    # step): the classes name the halves, and every scribbled pixel keeps its class after the
    # shrunk fit. Scribbled this way round, weight 0.5 lost the right half to class 1 (0.02
    # labelled 0); 2 and 5 gave 1.0 and 0.93. The full-size argmax sees the pixel noise the
    # shrunk fit averaged away (step 0.03, noise 0.05): with the fit at 0.75 and at most 60
    # iterations, 0.78-0.89 of either half over keys 1-5, against 0.96-0.98 for the fit's
    # labels scaled up.
    rng = np.random.default_rng(110)
    n = 64
    image = np.full((n, n, 3), [0.8, 0.2, 0.2])
    image[:, n // 2 :] += [-0.03, 0.03, 0]
    image = np.clip(image + rng.normal(0, 0.05, (n, n, 3)), 0, 1).astype(np.float32)
    strokes = np.full((n, n), UNSCRIBBLED, np.int32)
    strokes[16:48, 12] = 1
    strokes[16:48, 51] = 0
    refined = dataclasses.replace(cnn.Config.refined(), min_labels=1, scribble_weight=2.0)
    labels = np.asarray(
        pipeline.segment(
            image,
            "cnn_refined",
            key=jax.random.key(3),
            refined=refined,
            scribbles=strokes,
            full_size_output=full_size_output,
        )
    )
    assert np.mean(labels[:, : n // 2] == 1) >= least
    assert np.mean(labels[:, n // 2 :] == 0) >= least
    assert np.all(labels[strokes == 1] == 1) and np.all(labels[strokes == 0] == 0)


# --- the runner ----------------------------------------------------------------------------


def _image(seed: int, portrait: bool = False) -> np.ndarray:
    x = np.full((H, W, 3), [200.0, 60, 50])
    x[:, W // 2 :] += [-10, 10, 0]
    x = np.clip(x + np.random.default_rng(seed).normal(0, 8, x.shape), 0, 255).astype(np.uint8)
    return x.transpose(1, 0, 2) if portrait else x


def test_runner_scribbles(tmp_path, caplog):
    images, folder = tmp_path / "images", tmp_path / "scribbles"
    images.mkdir()
    folder.mkdir()
    names = ("good", "portrait", "big", "rgb", "many", "palette", "empty", "none")
    for seed, name in enumerate(names):
        _save(images / f"{name}.png", _image(seed, portrait=name == "portrait"))
    good = _strokes()
    _save(folder / "good.png", good)
    _save(folder / "portrait_scribble.png", good.T)  # the authors' file name
    _save(folder / "big.png", np.full((H + 1, W), 255))
    _save(folder / "rgb.png", np.stack([good] * 3, -1))
    _save(folder / "many.png", np.where(good == 1, 8, good))  # the CNN has 8 channels
    _save(folder / "palette.png", np.zeros((H, W)), "P")
    _save(folder / "empty.png", np.full((H, W), 255))
    cfg = config.RunConfig(
        dataset=str(images),
        method=("cnn",),
        scribbles=str(folder),
        options=pipeline.Options(cnn=SMALL),
    )
    with caplog.at_level(logging.WARNING, logger="jaxseg.runner"):
        summary = runner.run(cfg, tmp_path / "run")
    failed = {f.image_id: f.error for f in summary.failures}
    assert sorted(failed) == ["big", "many", "palette", "rgb"]
    for name, message in [
        ("big", "17x22 pixels"),
        ("rgb", "RGB or non-label image"),
        ("many", "class 8 needs more than the 8 channels"),
        ("palette", "palette image whose indices are not labels"),
    ]:
        assert message in failed[name] and str(folder / f"{name}.png") in failed[name]
    assert f"{folder / 'empty.png'} has no scribbled pixel: empty runs unguided" in caplog.text
    run = tmp_path / "run"
    for name, strokes in (("good", good), ("portrait", good.T)):
        labels = np.asarray(Image.open(run / "labels" / "cnn" / f"{name}.png"))
        assert np.all(labels[strokes == 0] == 0) and np.all(labels[strokes == 1] == 1)
        overlay = np.asarray(Image.open(run / "overlays" / "cnn" / f"{name}.png"))
        assert np.all(overlay[strokes == 1] == visualize.palette(2)[1])
    assert sorted(p.stem for p in (run / "labels" / "cnn").glob("*.png")) == [
        "empty",
        "good",
        "none",
        "portrait",
    ]
    assert (run / "panels" / "good.png").exists()
    assert f"guided by the scribbles in {folder}" in (run / "report.md").read_text()
    # The scribbles are a label setting: an unguided rerun into the folder is refused.
    with pytest.raises(ValueError, match="scribbles"):
        runner.run(dataclasses.replace(cfg, scribbles=None), run)


def test_config_checks_scribbles(tmp_path):
    with pytest.raises(ValueError, match="no folder"):
        config.RunConfig(method=("cnn",), scribbles=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="kmeans has none"):
        config.RunConfig(method=("cnn", "kmeans"), scribbles=str(tmp_path))
    with pytest.raises(ValueError, match="cnn has none"):
        config.RunConfig(method=("cnn",), cnn_mode="dataset", scribbles=str(tmp_path))
    assert config.label_settings(config.RunConfig(method=("cnn",), scribbles=str(tmp_path)))[
        "scribbles"
    ] == str(tmp_path)


def test_make_scribbles_script(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    script = REPO / "experiments" / "make_scribbles.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--dataset=samples", f"--out_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dataset = data.load_dataset("samples")
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(dataset.ids)
    for sample in dataset:
        values = scribbles.read(tmp_path / f"{sample.image_id}.png", sample.image.shape[:2])
        classes = np.unique(values[values != UNSCRIBBLED])
        assert 1 <= len(classes) <= 32 and classes.max() == len(classes) - 1
        assert np.mean(values != UNSCRIBBLED) < 0.02  # thin strokes
