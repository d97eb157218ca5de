"""jaxseg.progress: the log lines that follow a long run (no wall-clock asserts)."""

import dataclasses
import logging
import re

import jax
import numpy as np

from jaxseg import cnn, progress

# Noise images and min_labels 1: the loops run to max_iter (no convergence stop).
TINY = cnn.Config(n_channels=8, max_iter=6, min_labels=1)
LOGGER = "jaxseg.runner"


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 12, 14, 3), np.float32)


def _lines(caplog) -> list[str]:
    jax.effects_barrier()
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_cnn_batch_lines_give_iteration_images_labels_and_an_upper_bound(caplog):
    images, keys = _images(2), jax.random.split(jax.random.key(0), 2)
    loop = progress.LoopProgress(TINY.max_iter, may_stop=True)
    sizes = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for compiling in (True, False):
            caplog.clear()
            loop.start("cnn on images a, b", compiling=compiling)
            cnn.segment_batch(images, keys, TINY, progress=loop, progress_every=2)
            sizes.append(cnn._segment_batch._cache_size())
            lines = _lines(caplog)
            assert [re.search(r"iteration (\d+)/6", s)[1] for s in lines] == ["2", "4", "6"]
            head = r"  cnn on images a, b: iteration \d/6, labels \[\d+, \d+\], loss \[\S+, \S+\], "
            assert all(re.match(head, s) for s in lines)
            bound = r"ETA <= \d+:\d\d \(sooner if it converges\)$"
            # A call that compiles has no ETA at its first report (compilation is not the loop's
            # speed); every later report, and a call that does not compile, has one.
            first = r"ETA at the next line \(this call compiled\)$" if compiling else bound
            assert re.search(first, lines[0])
            assert all(re.search(bound, s) for s in lines[1:])
    # The object is a static argument of the jitted loop (hashed by identity): the second
    # batch reused the first's compilation.
    assert sizes[0] == sizes[1]


def test_padding_slots_are_left_out(caplog):
    # The runner pads a partial batch with images under an all-False mask: 0 labels.
    loop = progress.LoopProgress(10, may_stop=True)
    loop.start("cnn on images a", compiling=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        loop(5, np.array([7, 0]), np.array([0.5, np.nan], np.float32))
    (line,) = _lines(caplog)
    assert re.fullmatch(
        r"  cnn on images a: iteration 5/10, labels \[7\], loss \[0.5\], ETA <= .*", line
    )


def test_training_lines_give_an_eta_without_bound(caplog):
    images = _images(2)
    config = dataclasses.replace(TINY, max_iter=3)
    loop = progress.LoopProgress(6, may_stop=False)  # 2 batches of 1 image x 3 updates
    loop.start("dataset-mode CNN, 2 images in batches of 1", compiling=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cnn.train_dataset(images, jax.random.key(1), config, progress=loop, progress_every=2)
        lines = _lines(caplog)
    assert [re.search(r"iteration (\d+)/6", s)[1] for s in lines] == ["2", "4", "6"]
    assert all(re.search(r"labels \[\d+\], .*, ETA \d+:\d\d$", s) for s in lines)
    assert lines[0].startswith("  dataset-mode CNN, 2 images in batches of 1: iteration 2/6")


def test_image_progress_line(caplog):
    counter = progress.ImageProgress(4)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        counter.update(1)
    (line,) = _lines(caplog)
    assert re.fullmatch(r"1/4 images  \S+ images/s  elapsed \d+:\d\d  ETA (\d+:\d\d|\?)", line)
