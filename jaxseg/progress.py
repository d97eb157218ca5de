"""Progress lines of a long run, logged at INFO by the `jaxseg.runner` logger.

`ImageProgress`: after each finished image, images done, images per second and the run's ETA.
`LoopProgress`: inside a device loop (a CNN batch, dataset-mode training), from the loop's host
callback every few iterations (`cnn.segment_batch`'s `progress`, no round-trip per
iteration): the iteration out of the loop's bound, the images, labels and loss per image, and
the time left. The CNN may stop before its bound (convergence), so for a CNN batch the time left
is an upper bound and the line says so.
"""

from __future__ import annotations

import logging
import time

import numpy as np

__all__ = ["ImageProgress", "LoopProgress"]

_log = logging.getLogger("jaxseg.runner")


def _clock(seconds: float) -> str:
    """`m:ss` or `h:mm:ss`; `?` for an unknown (infinite) time."""
    if not np.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ImageProgress:
    """Logs images done, images per second and the estimated time left of `total` images."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int) -> None:
        """`n` more images are done."""
        self.done += n
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        _log.info(
            "%d/%d images  %.3g images/s  elapsed %s  ETA %s",
            self.done,
            self.total,
            rate,
            _clock(elapsed),
            _clock(eta),
        )


class LoopProgress:
    """A `cnn.Progress` callback that logs a device loop's progress with an ETA.

    `start` is called before each call of the compiled function holding the loop (a batch),
    then the loop calls the object every few iterations with (iteration, n_labels, loss). The
    speed is measured from the batch's first report on, so compilation (the first report of a
    call that compiles: no ETA yet) and the work before the loop do not count; the first
    report of a call that does not compile times the loop from `start`.

    The object is a static argument of the jitted loop: it hashes by identity, so one object
    per compiled function keeps one compilation. Its timing state lives here, per object.
    Padding images (no unmasked pixel: 0 labels) are left out of the line; with several local
    devices, each device reports its own shard.

    Args:
      bound: the loop's iterations at most (`cnn.Config.max_iter`, or training's updates).
      may_stop: whether the loop can end before `bound` (the CNN's convergence stop): the time
        left is then an upper bound.
    """

    def __init__(self, bound: int, *, may_stop: bool):
        self.bound, self.may_stop = bound, may_stop
        self.what, self.compiling = "", False
        self.first: tuple[int, float] | None = None
        self.begin = time.perf_counter()

    def start(self, what: str, *, compiling: bool) -> None:
        """A new call begins: its reports are prefixed with `what` (the images it runs)."""
        self.what, self.compiling = what, compiling
        self.first, self.begin = None, time.perf_counter()

    def __call__(self, iteration, n_labels, loss) -> None:
        now, iteration = time.perf_counter(), int(iteration)
        if self.first is None:
            self.first = (iteration, now)
            since, elapsed = (None, None) if self.compiling else (0, now - self.begin)
        else:
            since, elapsed = self.first[0], now - self.first[1]
        if since is None or iteration <= since:
            eta = "ETA at the next line (this call compiled)"
        else:
            left = _clock((self.bound - iteration) * elapsed / (iteration - since))
            eta = f"ETA <= {left} (sooner if it converges)" if self.may_stop else f"ETA {left}"
        n_labels, loss = np.atleast_1d(n_labels), np.atleast_1d(np.asarray(loss, np.float64))
        real = n_labels > 0
        _log.info(
            "  %s: iteration %d/%d, labels %s, loss %s, %s",
            self.what,
            iteration,
            self.bound,
            n_labels[real].tolist(),
            np.round(loss[real], 3).tolist(),
            eta,
        )
