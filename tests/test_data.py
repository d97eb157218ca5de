"""jaxseg.data: embedded samples, BSDS500/BSDS300 on the shared data, plain folders,
readers and their bad-input errors, the .seg parser, the download helper."""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from jaxseg import data

REPO = Path(__file__).resolve().parents[1]

BSDS_SIZES = {(321, 481), (481, 321)}
SPLITS500 = ("train", "val", "test")


def _write_ground_truth(path: Path, *label_maps) -> None:
    """Writes label maps as an official-style `groundTruth` cell of structs."""
    cell = np.empty((1, len(label_maps)), dtype=object)
    for i, label_map in enumerate(label_maps):
        cell[0, i] = {"Segmentation": label_map, "Boundaries": np.zeros_like(label_map, np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": cell})


def _write_jpeg(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return pixels


def _fake_bsds(root: Path, *, with_test_truth: bool = False) -> Path:
    """A tiny BSDS500 tree: ids 1 and 10 in train, 2 in val, 3 in test; images 6x4."""
    bsds = root / "BSDS500"
    truth = np.arange(24, dtype=np.uint16).reshape(6, 4) % 3 + 1
    for split, ids in {"train": ("1", "10"), "val": ("2",), "test": ("3",)}.items():
        for image_id in ids:
            _write_jpeg(bsds / "images" / split / f"{image_id}.jpg", 6, 4)
            if split != "test" or with_test_truth:
                _write_ground_truth(bsds / "groundTruth" / split / f"{image_id}.mat", truth, truth)
    return root


# Embedded samples.


def test_samples_load_without_data_dir(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    dataset = data.load_dataset("samples")
    assert dataset.name == "samples" and dataset.split is None
    assert dataset.ids == tuple(sorted(data.SAMPLE_IDS)) and len(dataset) == 5
    samples = list(dataset)
    assert [s.image_id for s in samples] == list(dataset.ids)
    for sample in samples:
        assert sample.image.dtype == np.uint8 and sample.image.ndim == 3
        assert sample.image.shape[:2] in BSDS_SIZES and sample.image.shape[2] == 3
        assert len(sample.ground_truth) >= 5  # every sample image has 5+ annotations
        for label_map in sample.ground_truth:
            assert label_map.dtype == np.int32 and label_map.shape == sample.image.shape[:2]
            assert label_map.min() == 1  # official labels are 1-based


def test_samples_are_byte_copies_of_bsds500(data_dir):
    samples = data.load_dataset("samples")
    bsds500 = data.load_dataset("bsds500", data_dir=data_dir)
    paths = zip(bsds500.image_paths, bsds500.ground_truth_paths, strict=True)
    where = dict(zip(bsds500.ids, paths, strict=True))
    for image_id, image, truth in zip(
        samples.ids, samples.image_paths, samples.ground_truth_paths, strict=True
    ):
        assert image.read_bytes() == where[image_id][0].read_bytes()
        assert truth.read_bytes() == where[image_id][1].read_bytes()


# BSDS500 and BSDS300 on the shared data.


def test_bsds500_splits(data_dir):
    splits = {s: data.load_dataset("bsds500", split=s, data_dir=data_dir) for s in SPLITS500}
    assert {s: len(d) for s, d in splits.items()} == {"train": 200, "val": 100, "test": 200}
    everything = data.load_dataset("bsds500", data_dir=data_dir)
    assert len(everything) == 500 and everything.split is None
    assert everything.ids == tuple(sorted(sum((d.ids for d in splits.values()), ())))
    assert all(truth is None for truth in splits["test"].ground_truth_paths)
    # Plain string order of file names, as the official benchmark; not numeric order.
    ids = list(everything.ids)
    assert ids == sorted(ids) and ids != sorted(ids, key=int)


def test_bsds500_loads_all_500_images(data_dir):
    dataset = data.load_dataset("bsds500", data_dir=data_dir)
    test_ids = set(data.load_dataset("bsds500", split="test", data_dir=data_dir).ids)
    n_loaded = 0
    for image_id, sample in zip(dataset.ids, dataset, strict=True):
        n_loaded += 1
        assert sample.image_id == image_id
        assert sample.image.dtype == np.uint8 and sample.image.shape[:2] in BSDS_SIZES
        assert sample.image.shape[2] == 3
        if image_id in test_ids:
            assert sample.ground_truth == ()
        else:
            assert len(sample.ground_truth) >= 1
            for label_map in sample.ground_truth:
                assert label_map.dtype == np.int32 and label_map.shape == sample.image.shape[:2]
                assert label_map.min() >= 1
    assert n_loaded == 500


def test_bsds300_is_bsds500_train_and_val(data_dir):
    bsds300 = data.load_dataset("bsds300", data_dir=data_dir)
    train = data.load_dataset("bsds300", split="train", data_dir=data_dir)
    test = data.load_dataset("bsds300", split="test", data_dir=data_dir)
    assert (len(bsds300), len(train), len(test)) == (300, 200, 100)
    assert bsds300.name == "bsds300" and test.split == "test"
    assert train.ids == data.load_dataset("bsds500", split="train", data_dir=data_dir).ids
    assert test.ids == data.load_dataset("bsds500", split="val", data_dir=data_dir).ids
    assert bsds300.ids == tuple(sorted(train.ids + test.ids))
    assert all(truth is not None for truth in bsds300.ground_truth_paths)
    with pytest.raises(ValueError, match="'train', 'test', None"):
        data.load_dataset("bsds300", split="val", data_dir=data_dir)


def test_fake_tree_layout_and_ground_truth(tmp_path):
    root = _fake_bsds(tmp_path)
    dataset = data.load_dataset("bsds500", data_dir=root)
    assert dataset.ids == ("1", "10", "2", "3")  # file-name order
    sample = dataset[0]
    assert sample.image.shape == (6, 4, 3) and len(sample.ground_truth) == 2
    np.testing.assert_array_equal(sample.ground_truth[1], np.arange(24).reshape(6, 4) % 3 + 1)
    assert dataset[-1].ground_truth == ()  # test split without groundTruth/test/
    with_truth = data.load_dataset(
        "bsds500", split="test", data_dir=_fake_bsds(tmp_path / "b", with_test_truth=True)
    )
    assert len(with_truth[0].ground_truth) == 2


# Dataset behaviour.


def test_dataset_is_a_lazy_sequence(tmp_path):
    root = _fake_bsds(tmp_path)
    (root / "BSDS500" / "images" / "val" / "2.jpg").write_bytes(b"not a jpeg")
    dataset = data.load_dataset("bsds500", data_dir=root)  # lists files only: no error yet
    assert len(dataset) == 4 and "4 images" in repr(dataset)
    assert dataset[np.int64(1)].image_id == "10"
    assert dataset[-4].image_id == "1"
    subset = dataset[:2]
    assert isinstance(subset, data.Dataset) and subset.ids == ("1", "10")
    assert [s.image_id for s in subset] == ["1", "10"]
    with pytest.raises(IndexError):
        dataset[4]
    with pytest.raises(ValueError, match="2.jpg"):
        dataset[2]


# Plain folders of images.


def test_folder_dataset_converts_grayscale_and_rgba(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgba = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "9.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "10.png")
    palette = Image.fromarray(gray, mode="L").convert("P")
    palette.save(tmp_path / "b.gif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    dataset = data.load_dataset(tmp_path)
    assert dataset.name == tmp_path.name and dataset.ids == ("10", "9", "b")
    by_id = {s.image_id: s for s in dataset}
    assert all(s.ground_truth == () for s in by_id.values())
    np.testing.assert_array_equal(by_id["9"].image, np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(by_id["10"].image, rgba[:, :, :3])
    np.testing.assert_array_equal(by_id["b"].image, np.asarray(palette.convert("RGB")))
    for sample in by_id.values():
        assert sample.image.dtype == np.uint8 and sample.image.shape == (3, 4, 3)


def test_read_image_scales_16_bit_grayscale(tmp_path):
    gray16 = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g.png")
    expected = np.array([[0, 1, 255], [128, 4, 254]], dtype=np.uint8)
    np.testing.assert_array_equal(data.read_image(tmp_path / "g.png")[:, :, 1], expected)


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        data.load_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        data.load_dataset(tmp_path)
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"same id: \['a'\]"):
        data.load_dataset(tmp_path)
    with pytest.raises(ValueError, match="no splits"):
        data.load_dataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="not a folder"):
        data.load_dataset(tmp_path / "a.png")


# Names, splits and the data directory.


def test_unknown_name_or_split_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="bsds500, bsds300, samples"):
        data.load_dataset("bsds600")
    with pytest.raises(ValueError, match="'train', 'val', 'test', None"):
        data.load_dataset("bsds500", split="validation", data_dir=_fake_bsds(tmp_path))
    with pytest.raises(ValueError, match="choose from None"):
        data.load_dataset("samples", split="train")


def test_resolve_data_dir(tmp_path, monkeypatch):
    root = _fake_bsds(tmp_path / "a")
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=data.DATA_DIR_ENV):
        data.resolve_data_dir()
    with pytest.raises(FileNotFoundError, match=data.DATA_DIR_ENV):
        data.load_dataset("bsds300")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    assert data.resolve_data_dir() == root
    assert len(data.load_dataset("bsds300")) == 3
    # The argument wins over the environment.
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.resolve_data_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds BSDS500"):
        data.resolve_data_dir(tmp_path)


def test_missing_ground_truth_is_an_error_outside_the_test_split(tmp_path):
    root = _fake_bsds(tmp_path)
    (root / "BSDS500" / "groundTruth" / "train" / "10.mat").unlink()
    with pytest.raises(FileNotFoundError, match="10.mat"):
        data.load_dataset("bsds500", split="train", data_dir=root)
    for path in (root / "BSDS500" / "groundTruth" / "val").iterdir():
        path.unlink()
    (root / "BSDS500" / "groundTruth" / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="groundTruth/val"):
        data.load_dataset("bsds300", split="test", data_dir=root)
    with pytest.raises(FileNotFoundError, match="images/val"):
        (root / "BSDS500" / "images" / "val" / "2.jpg").unlink()
        (root / "BSDS500" / "images" / "val").rmdir()
        data.load_dataset("bsds500", split="val", data_dir=root)


def test_mismatched_image_and_ground_truth_sizes(tmp_path):
    root = _fake_bsds(tmp_path)
    truth = root / "BSDS500" / "groundTruth" / "train" / "10.mat"
    _write_ground_truth(truth, np.ones((4, 6), np.uint16))
    dataset = data.load_dataset("bsds500", split="train", data_dir=root)
    with pytest.raises(ValueError, match=r"10\.mat is 4x6 but image .*10\.jpg is 6x4"):
        dataset[1]


# Readers: bad input.


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        data.read_image(tmp_path / "nope.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg"):
        data.read_image(tmp_path / "corrupt.jpg")
    _write_jpeg(tmp_path / "full.jpg", 64, 64)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    with pytest.raises(ValueError, match="cut.jpg"):
        data.read_image(tmp_path / "cut.jpg")
    Image.fromarray(np.zeros((2, 2), np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match="wide.tif.*32-bit"):
        data.read_image(tmp_path / "wide.tif")


def test_read_ground_truth_round_trip(tmp_path):
    maps = [np.array([[1, 2], [3, 0]], np.uint16), np.array([[5, 5], [5, 5]], np.float64)]
    _write_ground_truth(tmp_path / "gt.mat", *maps)
    read = data.read_ground_truth(tmp_path / "gt.mat")
    assert len(read) == 2 and all(m.dtype == np.int32 for m in read)
    for got, want in zip(read, maps, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.int32))


@pytest.mark.parametrize(
    "contents, message",
    [
        ({"segs": np.ones((2, 2))}, "no 'groundTruth'"),
        ({"groundTruth": np.ones((2, 2))}, "not a non-empty cell"),
        ({"groundTruth": np.array([[{"Boundaries": np.ones((2, 2))}]], object)}, "Segmentation"),
        ({"groundTruth": np.array([[{"Segmentation": -np.ones((2, 2))}]], object)}, "outside"),
        ({"groundTruth": np.array([[{"Segmentation": np.full((2, 2), 1.5)}]], object)}, "non-int"),
        ({"groundTruth": np.array([[{"Segmentation": np.ones((2, 2, 2))}]], object)}, "2-D"),
    ],
)
def test_read_ground_truth_rejects_bad_files(tmp_path, contents, message):
    scipy.io.savemat(tmp_path / "bad.mat", contents)
    with pytest.raises(ValueError, match=f"bad.mat.*{message}"):
        data.read_ground_truth(tmp_path / "bad.mat")


def test_read_ground_truth_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.mat"):
        data.read_ground_truth(tmp_path / "none.mat")
    (tmp_path / "junk.mat").write_bytes(b"MATLAB? no, just junk bytes" * 8)
    with pytest.raises(ValueError, match="junk.mat"):
        data.read_ground_truth(tmp_path / "junk.mat")
    _write_ground_truth(
        tmp_path / "sizes.mat", np.ones((2, 3), np.uint16), np.ones((3, 2), np.uint16)
    )
    with pytest.raises(ValueError, match="sizes.mat.*different sizes"):
        data.read_ground_truth(tmp_path / "sizes.mat")


# BSDS300 .seg files.

SEG_HEADER = """format ascii cr
date Thu Aug 15 11:35:51 2002
image 9
user 1130
width 4
height 3
segments 3
gray 0
invert 0
flipflop 0
data
"""


def test_read_seg_file(tmp_path):
    runs = "0 0 0 1\n1 0 2 3\n0 1 0 0\n2 1 1 3\n2 2 0 3\n"
    (tmp_path / "9.seg").write_text(SEG_HEADER + runs)
    expected = np.array([[1, 1, 2, 2], [1, 3, 3, 3], [3, 3, 3, 3]])  # segment + 1
    labels = data.read_seg_file(tmp_path / "9.seg")
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    "text, message",
    [
        (SEG_HEADER.replace("data\n", ""), "no 'data' line"),
        (SEG_HEADER.replace("width 4\n", ""), "positive 'width'"),
        (SEG_HEADER.replace("height 3", "height x"), "'x' is not an integer"),
        (SEG_HEADER, "no pixel runs"),
        (SEG_HEADER + "0 0 0\n", "line 12: expected"),
        (SEG_HEADER + "0 0 0 4\n0 1 0 3\n0 2 0 3\n", "line 12: columns outside"),
        (SEG_HEADER + "0 0 2 1\n0 1 0 3\n0 2 0 3\n", "end before start"),
        (SEG_HEADER + "0 0 0 3\n0 1 0 3\n0 3 0 3\n", "line 14: row outside"),
        (SEG_HEADER + "0 0 0 3\n3 1 0 3\n0 2 0 3\n", r"line 13: segment >= segments \(3\)"),
        (SEG_HEADER + "0 0 0 3\n0 1 0 3\n", "runs cover 8 pixels"),
        (SEG_HEADER + "0 0 0 3\n0 1 0 3\n0 1 0 3\n", "overlap"),
    ],
)
def test_read_seg_file_rejects_bad_files(tmp_path, text, message):
    (tmp_path / "bad.seg").write_text(text)
    with pytest.raises(ValueError, match=f"bad.seg.*{message}"):
        data.read_seg_file(tmp_path / "bad.seg")


def test_read_seg_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.seg"):
        data.read_seg_file(tmp_path / "gone.seg")


# Download helper.


def _add(tar: tarfile.TarFile, name: str, payload: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(payload))


def _official_style_tarball(path: Path, source: Path, *extra) -> Path:
    """A BSR_bsds500.tgz look-alike made from the fake tree in `source`."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / "BSDS500", arcname="BSR/BSDS500/data")
        _add(tar, "BSR/BSDS500/data/images/train/Thumbs.db", b"windows thumbnails")
        _add(tar, "BSR/BSDS500/ucm2/1.mat", b"ignored")
        _add(tar, "BSR/bench/README", b"ignored")
        for name, payload, fields in extra:
            _add(tar, name, payload, **fields)
    return path


def test_download_bsds500_from_a_local_tarball(tmp_path):
    source = _fake_bsds(tmp_path / "source")
    tarball = _official_style_tarball(tmp_path / "BSR_bsds500.tgz", source)
    dest = tmp_path / "dest" / "data"
    assert data.download_bsds500(tarball.as_uri(), dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["BSDS500"]  # no temporary left over
    assert sorted(p.name for p in (dest / "BSDS500").iterdir()) == ["groundTruth", "images"]
    downloaded = data.load_dataset("bsds500", data_dir=dest)
    original = data.load_dataset("bsds500", data_dir=source)
    assert downloaded.ids == original.ids == ("1", "10", "2", "3")
    for got, want in zip(
        downloaded.image_paths + downloaded.ground_truth_paths[:3],
        original.image_paths + original.ground_truth_paths[:3],
        strict=True,
    ):
        assert got.read_bytes() == want.read_bytes()
    with pytest.raises(FileExistsError, match="BSDS500"):
        data.download_bsds500(tarball.as_uri(), dest)


@pytest.mark.parametrize(
    "member, message",
    [
        (("BSR/BSDS500/data/images/../../../../escaped.txt", b"x", {}), "unsafe path"),
        (("/tmp/absolute-escape.txt", b"x", {}), "unsafe path"),
        (
            (
                "BSR/BSDS500/data/images/train/4.jpg",
                b"",
                {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
            ),
            "link or special file",
        ),
    ],
)
def test_download_bsds500_refuses_unsafe_members(tmp_path, member, message):
    source = _fake_bsds(tmp_path / "source")
    tarball = _official_style_tarball(tmp_path / "evil.tgz", source, member)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=message):
        data.download_bsds500(tarball.as_uri(), dest)
    assert list(dest.iterdir()) == []  # nothing extracted, nothing left behind
    assert not (tmp_path / "escaped.txt").exists()


def test_download_bsds500_rejects_other_archives(tmp_path):
    (tmp_path / "plain.txt").write_text("not a tarball")
    with pytest.raises(ValueError, match="not a tar archive"):
        data.download_bsds500((tmp_path / "plain.txt").as_uri(), tmp_path / "a")
    with tarfile.open(tmp_path / "other.tgz", "w:gz") as tar:
        _add(tar, "images/train/1.jpg", b"x")
    with pytest.raises(ValueError, match="no BSR/BSDS500/data/images/"):
        data.download_bsds500((tmp_path / "other.tgz").as_uri(), tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def _download_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxseg.download", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def test_download_command_from_a_local_archive(tmp_path):
    source = _fake_bsds(tmp_path / "source")
    tarball = _official_style_tarball(tmp_path / "BSR_bsds500.tgz", source)
    proc = _download_cli(f"--url={tarball}", "--data_dir=got", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--data_dir=got" in proc.stdout
    assert data.load_dataset("bsds500", data_dir=tmp_path / "got").ids == ("1", "10", "2", "3")
    again = _download_cli(f"--url={tarball}", "--data_dir=got", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr


def test_download_command_bad_archive_is_one_error_line(tmp_path):
    proc = _download_cli("--url=missing.tgz", "--data_dir=d", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_missing_data_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="jaxseg-download"):
        data.load_dataset("bsds500", data_dir=tmp_path)
