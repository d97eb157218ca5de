"""Differentiable feature clustering CNN (Kim, Kanezaki & Tanaka 2020), optimised on device.

A small conv net (``jaxseg.dfc.DFC``, a flax module) is fitted to each image so that pixels
with similar features and spatial neighbours share a label. Labels are the argmax over the C
response channels; the loss is the cross-entropy of the response against its own (constant)
argmax labels plus a continuity weight times the mean absolute difference between vertical and
horizontal neighbours. Options:

- superpixel refinement (Kanezaki, ICASSP 2018): with ``segments``, each pixel's cross-entropy
  target is the majority label of its superpixel (``refine_labels``);
- scribbles (Kim et al. 2020's interactive mode): with ``scribbles``, scribbled pixels are
  pulled toward their class (class c is channel c), ``scribble_weight`` x their cross-entropy;
- the continuity weight is ``mu`` (``mu_schedule="constant"``), or DynaSeg's (Guermazi et al.
  2024) ``mu / q`` (``"scf"``, spatial continuity focus) or ``q / mu`` (``"fsf"``, feature
  similarity focus), q the current number of labels;
- stopping after ``max_iter`` iterations, as soon as an image has ``<= min_labels`` labels, or
  (``stop_change > 0``) once fewer than that fraction of its pixels changed label in each of the
  last ``stop_window`` iterations;
- a ``progress`` callback every ``progress_every`` iterations (a host callback compiled in only
  when given).

The whole optimisation of a batch is one ``lax.while_loop``; each image has its own parameters,
optimiser state and stopping point. ``train_dataset`` / ``apply`` are the authors'
reference-image mode (one network for many images).
"""

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxseg.dfc import DFC, from_bytes, to_bytes

__all__ = [
    "STOP_REASONS",
    "UNSCRIBBLED",
    "CNNResult",
    "Config",
    "DFC",
    "apply",
    "combine_fits",
    "init",
    "load_params",
    "loss_and_labels",
    "network",
    "pad_batch",
    "refine_labels",
    "response",
    "save_params",
    "segment",
    "segment_batch",
    "train_dataset",
]

Params = dict[str, Any]
Progress = Callable[[int, np.ndarray, np.ndarray], None]

_OPTIMIZERS = ("adam", "sgd")
_MU_SCHEDULES = ("constant", "scf", "fsf")
# CNNResult.stop_reason indexes this tuple.
STOP_REASONS = ("max_iter", "min_labels", "stable")
UNSCRIBBLED = 255  # scribble map value of a pixel without a scribble
_RUNNING, _MAX_ITER, _MIN_LABELS, _STABLE = -1, 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Config:
    """Model, loss, optimiser and stopping settings; hashable, so usable as a static argument.

    ``Config()`` is the ``paper`` preset. ``optimizer`` is ``"adam"`` (``momentum`` is its
    beta1) or ``"sgd"`` (heavy-ball ``momentum``, as ``torch.optim.SGD``). The learning rate is
    multiplied by ``lr_decay_factor`` every ``lr_decay_every`` iterations (0: constant).
    ``mu_schedule``: the continuity weight is ``mu`` ("constant"), ``mu / q`` ("scf") or
    ``q / mu`` ("fsf"), q the number of labels of the current iteration (DynaSeg's SCF and FSF
    variants). ``stop_change`` > 0 stops an image once fewer than that fraction of its pixels
    changed label in each of the last ``stop_window`` iterations (0: off, as published).
    ``scribble_weight``: weight of the scribbled pixels' cross-entropy (the authors'
    ``stepsize_scr``), used only when scribbles are given.
    """

    n_channels: int = 100
    n_conv: int = 2
    max_iter: int = 1000
    min_labels: int = 3
    mu: float = 0.5
    optimizer: str = "adam"
    learning_rate: float = 0.05
    momentum: float = 0.9
    lr_decay_every: int = 50
    lr_decay_factor: float = 0.1
    mu_schedule: str = "constant"
    stop_change: float = 0.0
    stop_window: int = 5
    scribble_weight: float = 0.5

    def __post_init__(self):
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.mu_schedule not in _MU_SCHEDULES:
            raise ValueError(
                f"mu_schedule must be one of {_MU_SCHEDULES}, got {self.mu_schedule!r}"
            )
        for name in ("n_channels", "n_conv", "max_iter", "min_labels", "stop_window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_channels < self.min_labels:
            raise ValueError(
                f"n_channels ({self.n_channels}) must be >= min_labels ({self.min_labels}): "
                "the stopping rule could never be met otherwise"
            )
        if not (self.mu >= 0 and self.learning_rate > 0 and 0 <= self.momentum < 1):
            raise ValueError(
                f"need mu >= 0, learning_rate > 0, 0 <= momentum < 1; got mu={self.mu}, "
                f"learning_rate={self.learning_rate}, momentum={self.momentum}"
            )
        if self.mu_schedule == "fsf" and self.mu <= 0:
            raise ValueError(f"mu_schedule 'fsf' divides by mu: need mu > 0, got {self.mu}")
        if self.lr_decay_every < 0 or not 0 < self.lr_decay_factor <= 1:
            raise ValueError(
                f"need lr_decay_every >= 0 and 0 < lr_decay_factor <= 1; got "
                f"{self.lr_decay_every}, {self.lr_decay_factor}"
            )
        if self.scribble_weight < 0:
            raise ValueError(f"scribble_weight must be >= 0, got {self.scribble_weight}")
        if not 0 <= self.stop_change < 1:
            raise ValueError(f"stop_change must be in [0, 1), got {self.stop_change}")

    @classmethod
    def paper(cls) -> "Config":
        """The reimplemented paper: Adam, lr 0.05 divided by 10 every 50 iterations, mu 0.5."""
        return cls()

    @classmethod
    def kim2020(cls) -> "Config":
        """The authors' code defaults: SGD, lr 0.1, momentum 0.9, mu 1 (``stepsize_con``)."""
        return cls(mu=1.0, optimizer="sgd", learning_rate=0.1, lr_decay_every=0)

    @classmethod
    def kanezaki2018(cls) -> "Config":
        """Kanezaki (ICASSP 2018) demo defaults: SGD, lr 0.1, momentum 0.9, no continuity term;
        pass superpixel ``segments`` to ``segment`` / ``segment_batch`` for its refinement."""
        return cls(mu=0.0, optimizer="sgd", learning_rate=0.1, lr_decay_every=0)

    @classmethod
    def refined(cls) -> "Config":
        """jaxseg's recommended CNN (the `cnn_refined` method, with superpixel ``segments``): 64
        channels, SGD 0.1 / 0.9, DynaSeg's SCF continuity (mu / labels, mu = 0.25), a convergence
        stop (< 0.2 % of pixels changed in each of 5 iterations) and at most 60 iterations. 60
        against 30 (BSDS500 val, 100 images, with `cnn_refined`'s 2x output and split; one run each
        on an H100, README): covering 0.438 -> 0.465, PRI 0.764 -> 0.773, VOI 2.97 -> 2.79, Kim mIoU
        0.345 -> 0.344; with the fit at 0.75 instead of half size (`pipeline.Options.refined_scale`,
        the default since), on this CPU: 0.465 / 0.773 / 2.79, Kim mIoU 0.348 against 0.347 for the
        earlier defaults. mu = 0.25 against 1 (40 train images, full-size output, README): Kim mIoU
        0.306 -> 0.324 and 0.320 -> 0.343 on two subsets at equal covering (0.1: 0.304); on val
        0.314 -> 0.315, covering 0.409 -> 0.416 (RGB input; `cnn_refined` now fits on Lab,
        `pipeline.Options.refined_space`, where mu 0.1 / 0.5 were no better on train). On BSDS500
        train at half size (README), against the earlier 32 channels and <= 200 iterations: the same
        quality within image-set noise (first 16 images, run.py: covering 0.439 vs 0.457, Kim mIoU
        0.251 vs 0.253, PRI 0.699 vs 0.681; every 25th, 8 images: 0.485 vs 0.469, 0.291 vs 0.270),
        with a bounded time: the labels hardly change after iteration ~25, but some images never
        meet the stop, and the runner's batches of 4 run until their slowest image stops (22.6
        against 40.8 s per image there; alone, an image takes ~1.6x longer than with 32 channels'
        ~90 iterations). Scribbles weigh 2 (the authors' 0.5 is for their fixed mu = 5): on the five
        samples with scribbles from one annotation (README; mu = 1, the earlier output), mean
        covering 0.393 unguided, 0.395 / 0.518 / 0.492 guided at weight 0.5 / 2 / 5."""
        return cls(
            n_channels=64,
            mu=0.25,
            mu_schedule="scf",
            optimizer="sgd",
            learning_rate=0.1,
            lr_decay_every=0,
            max_iter=60,
            stop_change=0.002,
            stop_window=5,
            scribble_weight=2.0,
        )

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.lr_decay_every:
            lr = optax.exponential_decay(
                self.learning_rate, self.lr_decay_every, self.lr_decay_factor, staircase=True
            )
        else:
            lr = self.learning_rate
        if self.optimizer == "adam":
            return optax.adam(lr, b1=self.momentum)
        return optax.sgd(lr, momentum=self.momentum)


class CNNResult(NamedTuple):
    """Result of ``segment`` (shapes below) or ``segment_batch`` (each with a leading ``[b]``).

    labels: [h, w] int32 in 0..n_channels-1 (not relabelled): the argmax of the last iteration's
      forward pass, i.e. the labels the stopping rules saw (not the superpixel-refined targets).
    n_iter: [] int32, iterations run (forward/backward passes and parameter updates).
    n_labels: [] int32, distinct labels in ``labels`` (valid pixels only).
    converged: [] bool, whether ``n_labels <= min_labels`` stopped the loop.
    loss_history: [max_iter] float32, loss at each iteration, NaN after ``n_iter``.
    n_labels_history: [max_iter] int32, label count at each iteration, -1 after ``n_iter``.
    stop_reason: [] int32, why the loop stopped: an index into ``STOP_REASONS`` ("max_iter",
      "min_labels", "stable": the ``stop_change`` rule).
    params: the fitted network's parameters after its last update (``response`` applies them
      to any image, e.g. at another size).
    """

    labels: jax.Array
    n_iter: jax.Array
    n_labels: jax.Array
    converged: jax.Array
    loss_history: jax.Array
    n_labels_history: jax.Array
    stop_reason: jax.Array
    params: Params


class _State(NamedTuple):
    t: jax.Array  # [] loop iterations (the longest-running image's n_iter)
    i: jax.Array  # [b] each image's n_iter
    stop: jax.Array  # [b] stop reason, _RUNNING while running
    params: Params
    opt_state: Any
    labels: jax.Array
    n_labels: jax.Array
    loss: jax.Array
    n_stable: jax.Array  # [b] consecutive iterations with few label changes
    loss_history: jax.Array
    n_labels_history: jax.Array


# --- model and loss ------------------------------------------------------------------------


def network(config: Config | None = None) -> DFC:
    """The flax module of ``config`` (``DFC(n_channels, n_conv)``)."""
    config = Config() if config is None else config
    return DFC(n_channels=config.n_channels, n_conv=config.n_conv)


def _network_of(params: Params) -> DFC:
    layers = params["params"]
    return DFC(n_channels=layers["conv_0"]["kernel"].shape[-1], n_conv=len(layers) // 2 - 1)


def init(key: jax.Array, config: Config | None = None) -> Params:
    """Variables of ``network(config)``: Xavier-uniform conv kernels, zero biases, BatchNorm
    scale 1 and bias 0, ``{"params": {"conv_i": {"kernel": [k, k, cin, C], "bias": [C]},
    "norm_i": {"scale": [C], "bias": [C]}}}`` for i in 0..n_conv (conv_{n_conv} is the 1x1).

    The same distribution as ``network(config).init``, but layer i's kernel is drawn from
    ``jax.random.split(key, n_conv + 1)[i]``, as in jaxseg before the flax module: a key gives
    the same parameters, hence the same labels, as before.
    """
    config = Config() if config is None else config
    c = config.n_channels
    shapes = [(3, 3, 3, c)] + [(3, 3, c, c)] * (config.n_conv - 1) + [(1, 1, c, c)]
    glorot = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)
    params = {}
    for i, (k, shape) in enumerate(zip(jax.random.split(key, len(shapes)), shapes, strict=True)):
        params[f"conv_{i}"] = {"kernel": glorot(k, shape, jnp.float32), "bias": jnp.zeros((c,))}
        params[f"norm_{i}"] = {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}
    return {"params": params}


def response(params: Params, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The net's normalised response [n, h, w, C] for images [n, h, w, 3] (``DFC.apply``).

    BatchNorm statistics are taken over all valid pixels of all n images. Pixels where ``mask``
    [n, h, w] is False are zeroed before every 3x3 convolution and left out of the statistics,
    so a top-left valid rectangle gets exactly the response of the unpadded image there.
    """
    return _network_of(params).apply(params, images, mask)


def save_params(path: str | Path, params: Params) -> None:
    """Write ``params`` (e.g. from ``train_dataset``) with ``flax.serialization``."""
    Path(path).write_bytes(to_bytes(params))


def load_params(path: str | Path, config: Config | None = None) -> Params:
    """Read parameters written by ``save_params`` for a network of ``config``'s shape."""
    return from_bytes(init(jax.random.key(0), config), Path(path).read_bytes())


def _count_labels(labels, mask, n_channels):
    one_hot = labels[..., None] == jnp.arange(n_channels, dtype=labels.dtype)
    if mask is not None:
        one_hot = one_hot & mask[..., None]
    return jnp.sum(jnp.any(one_hot, axis=tuple(range(labels.ndim))), dtype=jnp.int32)


def refine_labels(
    labels: jax.Array,
    segments: jax.Array,
    n_segments: int,
    n_channels: int,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Each pixel's label replaced by the majority label of its superpixel (Kanezaki 2018).

    labels, segments: int arrays of one shape (segments in 0..n_segments-1; one id space over
    the whole array), labels in 0..n_channels-1; ``mask`` (same shape, bool) leaves pixels out
    of the vote. Ties go to the lowest label, as the authors' ``np.argmax`` of the histogram.
    Returns int32 labels of the same shape, constant on every superpixel. One ``segment_sum``
    over (segment, label) pairs: memory n_segments x n_channels.
    """
    segments = jnp.clip(segments.astype(jnp.int32), 0, n_segments - 1)  # masked: any id
    votes = jnp.ones(labels.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
    pair = segments * n_channels + labels.astype(jnp.int32)
    counts = jax.ops.segment_sum(
        votes.ravel(), pair.ravel(), num_segments=n_segments * n_channels
    ).reshape(n_segments, n_channels)
    return jnp.argmax(counts, axis=1).astype(jnp.int32)[segments]


def combine_fits(responses: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The labels of several networks fitted to one image: their softmaxes summed after each
    network's channels are matched to the first network's.

    Each fit numbers its labels freely, so channel b of network j > 0 is first mapped to the
    channel of network 0 whose argmax label overlaps its own argmax label most (over the pixels
    of ``mask``); channels mapped to one channel add up, and a channel that is nowhere network
    j's argmax is left out. With one network, or networks whose labellings agree up to a
    renumbering, the result is network 0's argmax.

    Args:
      responses: [n, h, w, C] the networks' responses (``response``) on one image.
      mask: optional [h, w] bool, the pixels that count in the matching.

    Returns:
      [h, w] int32 labels in network 0's channel numbering.

    Raises:
      ValueError: responses not [n, h, w, C] with n >= 1, or mask not [h, w].
    """
    if responses.ndim != 4 or not responses.shape[0]:
        raise ValueError(f"responses must be [n >= 1, h, w, C], got {responses.shape}")
    if mask is not None and mask.shape != responses.shape[1:3]:
        raise ValueError(f"mask must be {responses.shape[1:3]}, got {mask.shape}")
    c = responses.shape[-1]
    probabilities = jax.nn.softmax(responses.astype(jnp.float32), axis=-1)
    winners = responses.argmax(-1).reshape(responses.shape[0], -1)  # [n, h * w]
    votes = jnp.ones(winners.shape[1]) if mask is None else mask.ravel().astype(jnp.float32)
    # overlap[j, a, b]: pixels where network 0 says a and network j says b (one segment_sum
    # over label pairs per network: memory C x C, not a one-hot of the pixels).
    overlap = jax.vmap(
        lambda other: jax.ops.segment_sum(votes, winners[0] * c + other, num_segments=c * c)
    )(winners).reshape(-1, c, c)
    used = overlap.sum(1, keepdims=True) > 0  # [n, 1, C]: channels some pixel is labelled by
    matched = jax.nn.one_hot(overlap.argmax(1), c) * jnp.swapaxes(used, 1, 2)
    matched = matched.at[0].set(jnp.eye(c))  # [n, C (network j's), C (network 0's)]
    total = jnp.einsum("nhwb,nba->hwa", probabilities, matched)
    return total.argmax(-1).astype(jnp.int32)


def _continuity_weight(mu, schedule, n_labels):
    q = n_labels.astype(jnp.float32)
    if schedule == "scf":
        return mu / q
    if schedule == "fsf":
        return q / mu
    return mu


def loss_and_labels(
    params: Params,
    images: jax.Array,
    mask: jax.Array | None,
    mu: float,
    *,
    segments: jax.Array | None = None,
    n_segments: int | None = None,
    mu_schedule: str = "constant",
    scribbles: jax.Array | None = None,
    scribble_weight: float = 0.5,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Similarity + weight * continuity loss for images [n, h, w, 3]; aux: (labels [n, h, w]
    int32, number of distinct labels over the valid pixels).

    Similarity: mean over valid pixels of the cross-entropy against the response's own argmax
    (no gradient through the argmax), or with ``segments`` [n, h, w] (ids < ``n_segments``,
    one id space over the n images) against its superpixel-majority (``refine_labels``).
    With ``scribbles`` [n, h, w] int (class c < C, or ``UNSCRIBBLED`` = 255), as the authors'
    ``demo.py``: that mean over the unscribbled pixels plus ``scribble_weight`` times the mean
    cross-entropy of the scribbled pixels against their class (channel c); 0 without any.
    Continuity: mean |r[y+1, x] - r[y, x]| over vertically adjacent valid pairs and channels,
    plus the same horizontally (``torch.nn.L1Loss``); weight: ``mu``, or per ``mu_schedule``
    (see ``Config``) from the number of labels.
    """
    r = response(params, images, mask)
    c = r.shape[-1]
    labels = jnp.argmax(r, axis=-1).astype(jnp.int32)
    n_labels = _count_labels(labels, mask, c)
    log_p = jax.nn.log_softmax(r, axis=-1)
    if segments is None:
        nll = -jnp.max(log_p, axis=-1)  # CE against the argmax label.
    else:
        targets = refine_labels(labels, segments, n_segments, c, mask)
        nll = -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    dy = jnp.abs(r[:, 1:] - r[:, :-1])
    dx = jnp.abs(r[:, :, 1:] - r[:, :, :-1])
    if scribbles is not None:
        valid = jnp.ones(labels.shape, bool) if mask is None else mask
        scribbled = valid & (scribbles != UNSCRIBBLED)
        free = valid & ~scribbled
        target = jnp.where(scribbled, scribbles, 0).astype(jnp.int32)
        nll_scribbled = -jnp.take_along_axis(log_p, target[..., None], axis=-1)[..., 0]
        similarity = jnp.sum(jnp.where(free, nll, 0)) / jnp.maximum(jnp.sum(free), 1)
        similarity += scribble_weight * (
            jnp.sum(jnp.where(scribbled, nll_scribbled, 0)) / jnp.maximum(jnp.sum(scribbled), 1)
        )
    elif mask is None:
        similarity = jnp.mean(nll)
    else:
        similarity = jnp.sum(jnp.where(mask, nll, 0)) / jnp.sum(mask)
    if mask is None:
        continuity = jnp.mean(dy) + jnp.mean(dx)
    else:
        pair_y = (mask[:, 1:] & mask[:, :-1])[..., None]
        pair_x = (mask[:, :, 1:] & mask[:, :, :-1])[..., None]
        continuity = jnp.sum(jnp.where(pair_y, dy, 0)) / (c * jnp.sum(pair_y)) + jnp.sum(
            jnp.where(pair_x, dx, 0)
        ) / (c * jnp.sum(pair_x))
    weight = _continuity_weight(mu, mu_schedule, n_labels)
    return similarity + weight * continuity, (labels, n_labels)


# --- per-image optimisation ----------------------------------------------------------------


def _every(t, progress_every, callback, *args):
    """Host callback ``callback(t, *args)`` when t is a multiple of progress_every."""

    def report(t, *values):
        callback(int(t), *(np.asarray(v) for v in values))

    lax.cond(
        t % progress_every == 0,
        lambda: jax.debug.callback(report, t, *args),
        lambda: None,
    )


def _fit_batch(
    images, keys, mask, segments, scribbles, config, n_segments, progress, progress_every
):
    """Images [b, h, w, 3] (mask, segments, scribbles [b, h, w] or None) -> CNNResult, [b]
    leading.

    One while_loop over the batch; an image that has stopped keeps its state (selected, not
    updated) while the others continue, as ``vmap`` of a per-image loop would.
    """
    b, h, w, _ = images.shape
    optimizer = config.make_optimizer()

    def batched(f):
        """vmap over the batch; a batch of one runs f unbatched (on the 2-core CPU, vmap of one
        image ran ~1.4x slower per iteration than the unbatched loop before it)."""
        if b > 1:
            return jax.vmap(f)
        return lambda *args: jax.tree.map(lambda y: y[None], f(*jax.tree.map(lambda x: x[0], args)))

    params = batched(lambda key: init(key, config))(keys)
    loss_fn = jax.value_and_grad(loss_and_labels, has_aux=True)

    def loss_and_grad(p, image, m, seg, scr):
        return loss_fn(
            p,
            image[None],
            None if m is None else m[None],
            config.mu,
            segments=None if seg is None else seg[None],
            n_segments=n_segments,
            mu_schedule=config.mu_schedule,
            scribbles=None if scr is None else scr[None],
            scribble_weight=config.scribble_weight,
        )

    count = jnp.full((b,), h * w, jnp.float32) if mask is None else jnp.sum(mask, axis=(1, 2))

    def cond(s):
        return jnp.any(s.stop == _RUNNING)

    def body(s):
        (loss, (labels, n_labels)), grads = batched(loss_and_grad)(
            s.params, images, mask, segments, scribbles
        )
        labels = labels[:, 0]
        updates, opt_state = batched(optimizer.update)(grads, s.opt_state, s.params)
        changed = labels != s.labels
        if mask is not None:
            changed = changed & mask
        change = jnp.where(s.i == 0, 1.0, jnp.sum(changed, axis=(1, 2)) / count)
        n_stable = jnp.where(change < config.stop_change, s.n_stable + 1, 0)
        i = s.i + 1
        stop = jnp.select(
            [n_labels <= config.min_labels, n_stable >= config.stop_window, i >= config.max_iter],
            [_MIN_LABELS, _STABLE, _MAX_ITER],
            _RUNNING,
        )
        new = _State(
            t=s.t + 1,
            i=i,
            stop=stop,
            params=batched(optax.apply_updates)(s.params, updates),
            opt_state=opt_state,
            labels=labels,
            n_labels=n_labels,
            loss=loss,
            n_stable=n_stable,
            loss_history=jax.vmap(lambda x, k, v: x.at[k].set(v))(s.loss_history, s.i, loss),
            n_labels_history=jax.vmap(lambda x, k, v: x.at[k].set(v))(
                s.n_labels_history, s.i, n_labels
            ),
        )
        running = s.stop == _RUNNING

        def keep(new_x, old_x):
            return jnp.where(running.reshape((b,) + (1,) * (new_x.ndim - 1)), new_x, old_x)

        state = _State(new.t, *jax.tree.map(keep, tuple(new[1:]), tuple(s[1:])))
        if progress is not None:
            _every(state.t, progress_every, progress, state.n_labels, state.loss)
        return state

    state = _State(
        t=jnp.int32(0),
        i=jnp.zeros((b,), jnp.int32),
        stop=jnp.full((b,), _RUNNING, jnp.int32),
        params=params,
        opt_state=batched(optimizer.init)(params),
        labels=jnp.zeros((b, h, w), jnp.int32),
        n_labels=jnp.zeros((b,), jnp.int32),
        loss=jnp.full((b,), jnp.nan, jnp.float32),
        n_stable=jnp.zeros((b,), jnp.int32),
        loss_history=jnp.full((b, config.max_iter), jnp.nan, jnp.float32),
        n_labels_history=jnp.full((b, config.max_iter), -1, jnp.int32),
    )
    state = lax.while_loop(cond, body, state)
    return CNNResult(
        labels=state.labels,
        n_iter=state.i,
        n_labels=state.n_labels,
        converged=state.stop == _MIN_LABELS,
        loss_history=state.loss_history,
        n_labels_history=state.n_labels_history,
        stop_reason=state.stop,
        params=state.params,
    )


_segment_batch = jax.jit(
    _fit_batch, static_argnames=("config", "n_segments", "progress", "progress_every")
)


# --- input checks --------------------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_images(images, batch_rank: int, what: str) -> jax.Array:
    """RGB float32 images in [0, 1] from float [0, 1] or uint8 (/255) input, [..., h, w] grey
    (repeated to RGB) or [..., h, w, 4] RGBA (alpha dropped)."""
    if images is None:
        raise ValueError(f"{what} is None")
    shape = jnp.shape(images)
    dims = "[b, h, w, 3]" if batch_rank else "[h, w, 3]"
    if len(shape) == batch_rank + 2:
        images = jnp.repeat(jnp.asarray(images)[..., None], 3, axis=-1)
    elif len(shape) != batch_rank + 3 or shape[-1] not in (3, 4):
        raise ValueError(
            f"{what} must have shape {dims} (RGB; grey {dims[:-4]}] and RGBA also accepted), "
            f"got shape {shape}"
        )
    elif shape[-1] == 4:
        images = jnp.asarray(images)[..., :3]
    shape = jnp.shape(images)
    if shape[-3] == 0 or shape[-2] == 0:
        raise ValueError(f"{what} is empty ({shape[-3]}x{shape[-2]} pixels)")
    if shape[-3] < 3 or shape[-2] < 3:
        raise ValueError(f"{what} must be at least 3x3 pixels, got {shape[-3]}x{shape[-2]}")
    dtype = jnp.result_type(images)
    if dtype == jnp.uint8:
        return jnp.asarray(images, jnp.float32) / 255.0
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{what} must be float in [0, 1] or uint8, got dtype {dtype}")
    if _is_concrete(images):
        values = np.asarray(images)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{what} contains NaN or infinite values")
        if values.min() < 0 or values.max() > 1:
            raise ValueError(
                f"float {what} must be in [0, 1], got values in [{values.min()}, "
                f"{values.max()}] (divide 0..255 images by 255, or pass uint8)"
            )
    return jnp.asarray(images, jnp.float32)


def _check_key(key, what: str):
    if key is None:
        raise ValueError(f"{what} is None: pass a jax.random.key (e.g. jax.random.key(0))")


def _check_mask(mask, shape):
    if jnp.shape(mask) != shape or jnp.result_type(mask) != jnp.bool_:
        raise ValueError(
            f"mask must be bool with shape {shape}, got {jnp.result_type(mask)} {jnp.shape(mask)}"
        )
    if _is_concrete(mask):
        m = np.asarray(mask)
        rows, cols = m.any(axis=2).sum(axis=1), m.any(axis=1).sum(axis=1)
        if np.any(rows < 3) or np.any(cols < 3):
            raise ValueError("every image's mask must cover at least 3x3 pixels")


def _segment_bound(segments, shape, mask, n_segments) -> int:
    """Check superpixel labels [b, h, w] and return the static bound on their ids."""
    if jnp.shape(segments) != shape or not jnp.issubdtype(jnp.result_type(segments), jnp.integer):
        raise ValueError(
            f"segments must be integer superpixel labels of shape {shape}, got "
            f"{jnp.result_type(segments)} {jnp.shape(segments)}"
        )
    if not _is_concrete(segments):
        if n_segments is None:
            raise ValueError("traced segments need a static n_segments (> every id)")
        return int(n_segments)
    values = np.asarray(segments)
    if mask is not None:
        values = np.where(np.asarray(mask), values, 0)
    low, high = int(values.min()), int(values.max())
    if low < 0 or (n_segments is not None and high >= n_segments):
        raise ValueError(
            f"segment ids must be in [0, n_segments={n_segments}) on valid pixels, got "
            f"[{low}, {high}]"
        )
    # A power of two: batches with similar superpixel counts share a compilation.
    return int(n_segments) if n_segments is not None else 1 << math.ceil(math.log2(high + 1))


def _check_scribbles(scribbles, shape, mask, n_channels) -> jax.Array:
    if jnp.shape(scribbles) != shape or not jnp.issubdtype(jnp.result_type(scribbles), jnp.integer):
        raise ValueError(
            f"scribbles must be an integer map of shape {shape} (class ids, {UNSCRIBBLED} for "
            f"none), got {jnp.result_type(scribbles)} {jnp.shape(scribbles)}"
        )
    if _is_concrete(scribbles):
        values = np.asarray(scribbles)
        if mask is not None:
            values = np.where(np.asarray(mask), values, UNSCRIBBLED)
        classes = np.unique(values[values != UNSCRIBBLED])
        if classes.size == 0:
            raise ValueError(
                "scribbles has no scribbled pixel: pass scribbles=None to run unguided"
            )
        if classes[0] < 0 or classes[-1] >= n_channels:
            raise ValueError(
                f"scribble classes must be in [0, {n_channels}) (the CNN's channels) or "
                f"{UNSCRIBBLED} for none, got {classes[0]}..{classes[-1]}"
            )
    return jnp.asarray(scribbles, jnp.int32)


def _check_progress(progress, progress_every):
    if progress is not None and (not callable(progress) or progress_every < 1):
        raise ValueError(
            f"progress must be callable and progress_every >= 1, got {progress!r}, {progress_every}"
        )


# --- public entry points -------------------------------------------------------------------


def segment(
    image: jax.Array,
    key: jax.Array,
    config: Config | None = None,
    *,
    segments: jax.Array | None = None,
    n_segments: int | None = None,
    scribbles: jax.Array | None = None,
    progress: Progress | None = None,
    progress_every: int = 10,
) -> CNNResult:
    """Fit the CNN to one image and return its labels: ``segment_batch`` of a batch of one.

    image: [h, w, 3] float in [0, 1] or uint8 (h, w >= 3); [h, w] grey and [h, w, 4] RGBA
    (alpha dropped) are accepted. segments: optional [h, w] int superpixel labels (refinement).
    scribbles: optional [h, w] scribble map (see ``segment_batch``).
    progress: as ``segment_batch`` (arrays of one element). Jitted with ``config`` static:
    images of one shape and config share one compilation.
    """
    _check_key(key, "key")
    image = _as_images(image, 0, "image")
    batch_segments = None if segments is None else jnp.asarray(segments)[None]
    result = segment_batch(
        image[None],
        jnp.asarray(key)[None],
        config,
        segments=batch_segments,
        n_segments=n_segments,
        scribbles=None if scribbles is None else jnp.asarray(scribbles)[None],
        progress=progress,
        progress_every=progress_every,
    )
    return jax.tree.map(lambda x: x[0], result)


def segment_batch(
    images: jax.Array,
    keys: jax.Array,
    config: Config | None = None,
    *,
    mask: jax.Array | None = None,
    segments: jax.Array | None = None,
    n_segments: int | None = None,
    scribbles: jax.Array | None = None,
    progress: Progress | None = None,
    progress_every: int = 10,
) -> CNNResult:
    """Fit one CNN per image of images [b, h, w, 3]; keys [b] (one per image).

    Each image has its own parameters and optimiser state and stops on its own (a finished
    image stays fixed while others continue). Images of different sizes are padded to a common
    [h, w] (see ``pad_batch``) with ``mask`` [b, h, w] True on real pixels: padded pixels are
    out of the loss, the BatchNorm statistics and the label count, and an image placed top-left
    gets the same fit as alone up to float rounding (see README: the argmax feedback amplifies
    it). Portrait and landscape images may instead share a bucket by transposing; that is a
    valid but different fit, since the learnt filters are not transpose-symmetric.

    segments: optional [b, h, w] int superpixel labels (e.g. SLIC), >= 0 on valid pixels: each
    pixel's cross-entropy target becomes its superpixel's majority label (Kanezaki 2018).
    ``n_segments`` (static) bounds the ids; None: the next power of two above the largest id.

    scribbles: optional [b, h, w] int scribble map (Kim et al. 2020's interactive mode): class
    c in 0..n_channels-1 on scribbled pixels, ``UNSCRIBBLED`` (255) elsewhere; scribbled pixels
    are pulled toward channel c (``Config.scribble_weight``), so a region grown from class c's
    scribble gets label c. An image without scribbles is fitted unguided.

    progress: optional ``progress(iteration, n_labels [b], loss [b])`` called from the device
    loop (``jax.debug.callback``) every ``progress_every`` iterations while any image runs;
    stopped images report their final values. None compiles no callback. The callable is a
    static argument: reuse one object to reuse the compilation.

    Images: float in [0, 1] or uint8; [b, h, w] grey and [b, h, w, 4] RGBA are accepted.
    Returns a CNNResult with a leading [b] axis; labels on padded pixels are meaningless.
    """
    config = Config() if config is None else config
    _check_key(keys, "keys")
    images = _as_images(images, 1, "images")
    b, h, w, _ = images.shape
    if jnp.shape(keys)[:1] != (b,):
        raise ValueError(f"keys must have a leading axis of {b} (one per image), got {keys.shape}")
    if mask is not None:
        _check_mask(mask, (b, h, w))
    if segments is not None:
        n_segments = _segment_bound(segments, (b, h, w), mask, n_segments)
        segments = jnp.asarray(segments, jnp.int32)
    if scribbles is not None:
        scribbles = _check_scribbles(scribbles, (b, h, w), mask, config.n_channels)
    _check_progress(progress, progress_every)
    return _segment_batch(
        images,
        keys,
        mask,
        segments,
        scribbles,
        config,
        n_segments,
        progress,
        int(progress_every),
    )


def pad_batch(images, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack images of different sizes [h_i, w_i, 3], each top-left in a zero canvas.

    Returns (images [b, H, W, 3] float32, mask [b, H, W] bool), with (H, W) = ``shape`` or the
    largest height and width; feed both to ``segment_batch`` or ``train_dataset``.
    """
    if not images:
        raise ValueError("pad_batch needs at least one image")
    for i, image in enumerate(images):
        if np.ndim(image) != 3 or np.shape(image)[-1] != 3:
            raise ValueError(f"image {i} must have shape [h, w, 3], got {np.shape(image)}")
    if shape is None:
        shape = (max(np.shape(x)[0] for x in images), max(np.shape(x)[1] for x in images))
    out = np.zeros((len(images), *shape, 3), np.float32)
    mask = np.zeros((len(images), *shape), bool)
    for i, image in enumerate(images):
        h, w, _ = np.shape(image)
        if h > shape[0] or w > shape[1]:
            raise ValueError(f"image {i} ({h}x{w}) does not fit in {shape[0]}x{shape[1]}")
        out[i, :h, :w] = image
        mask[i, :h, :w] = True
    return out, mask


# --- dataset (reference-image) mode --------------------------------------------------------


@jax.jit(static_argnames=("config", "batch_size", "updates_per_batch", "progress", "every"))
def _train_dataset(images, key, mask, config, batch_size, updates_per_batch, progress, every):
    optimizer = config.make_optimizer()
    params = init(key, config)
    loss_fn = jax.value_and_grad(
        lambda p, x, m: loss_and_labels(p, x, m, config.mu, mu_schedule=config.mu_schedule),
        has_aux=True,
    )

    def step(t, carry):
        params, opt_state = carry
        start = (t // updates_per_batch) * batch_size
        batch = lax.dynamic_slice_in_dim(images, start, batch_size)
        batch_mask = None if mask is None else lax.dynamic_slice_in_dim(mask, start, batch_size)
        (loss, (_, n_labels)), grads = loss_fn(params, batch, batch_mask)
        if progress is not None:
            _every(t + 1, every, progress, n_labels, loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    n_steps = (images.shape[0] // batch_size) * updates_per_batch  # n: a multiple of batch_size
    params, _ = lax.fori_loop(0, n_steps, step, (params, optimizer.init(params)))
    return params


def train_dataset(
    images: jax.Array,
    key: jax.Array,
    config: Config | None = None,
    *,
    batch_size: int = 1,
    updates_per_batch: int | None = None,
    mask: jax.Array | None = None,
    progress: Progress | None = None,
    progress_every: int = 10,
) -> Params:
    """Train one network on many images [n, h, w, 3] (the authors' reference-image mode).

    As their ``demo_ref.py``: consecutive batches of ``batch_size`` images, the last one holding
    the remaining ``n % batch_size`` images when ``batch_size`` does not divide n (every image
    is used), each batch used for ``updates_per_batch`` (default ``config.max_iter``) updates,
    with BatchNorm statistics and the loss over the whole batch. No early stopping;
    ``min_labels`` and the ``stop_change`` rule are unused. Resize images to one shape first
    (they used 224x224 and mu 5) or pad them with ``pad_batch`` and pass its ``mask``. Apply the
    result with ``apply``; keep it with ``save_params``. ``progress(update, n_labels [], loss [])``
    is called every ``progress_every`` updates (the current batch's label count and loss).
    """
    config = Config() if config is None else config
    _check_key(key, "key")
    images = _as_images(images, 1, "images")
    n = images.shape[0]
    updates_per_batch = config.max_iter if updates_per_batch is None else updates_per_batch
    if not 1 <= batch_size <= n or updates_per_batch < 1:
        raise ValueError(
            f"need 1 <= batch_size <= {n} images and updates_per_batch >= 1, got "
            f"batch_size={batch_size}, updates_per_batch={updates_per_batch}"
        )
    if mask is not None and (
        jnp.shape(mask) != images.shape[:3] or jnp.result_type(mask) != jnp.bool_
    ):
        raise ValueError(f"mask must be bool with shape {images.shape[:3]}")
    _check_progress(progress, progress_every)
    n_missing = -n % batch_size
    if n_missing:
        # The last batch is filled up with all-masked images, which the loss and the
        # BatchNorm statistics ignore: the same updates as a batch of the remaining images.
        mask = jnp.ones(images.shape[:3], bool) if mask is None else jnp.asarray(mask)
        images = jnp.pad(images, ((0, n_missing), (0, 0), (0, 0), (0, 0)))
        mask = jnp.pad(mask, ((0, n_missing), (0, 0), (0, 0)))
    return _train_dataset(
        images, key, mask, config, batch_size, updates_per_batch, progress, int(progress_every)
    )


@jax.jit
def _apply(params, image):
    return jnp.argmax(response(params, image[None])[0], axis=-1).astype(jnp.int32)


def apply(params: Params, image: jax.Array) -> jax.Array:
    """Labels [h, w] int32 of a trained network for image [h, w, 3] (float in [0, 1] or uint8;
    grey and RGBA accepted): one forward pass, BatchNorm with the image's own statistics (as the
    authors' test loop)."""
    return _apply(params, _as_images(image, 0, "image"))
