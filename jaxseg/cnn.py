"""Differentiable feature clustering CNN (Kim, Kanezaki & Tanaka 2020), optimised on device.

A small conv net is fitted to each image so that pixels with similar features and spatial
neighbours share a label: conv 3x3 (3->C) -> ReLU -> BatchNorm, (n_conv - 1) x [conv 3x3 (C->C)
-> ReLU -> BatchNorm], conv 1x1 (C->C) -> BatchNorm. Labels are the argmax over the C response
channels; the loss is the cross-entropy of the response against its own (constant) argmax labels
plus ``mu`` times the mean absolute difference between vertical and horizontal neighbours.
BatchNorm always normalises with the statistics of the images being fitted (no eval mode).

The whole optimisation is one ``lax.while_loop``; it stops after ``max_iter`` iterations or as
soon as the number of distinct labels is ``<= min_labels``. ``segment_batch`` fits a batch, each
image with its own parameters, optimiser state and stopping point; ``train_dataset`` / ``apply``
are the authors' reference-image mode (one network for many images).

Convolutions: the forward pass and the input gradient are ``lax.conv_general_dilated`` (NHWC),
the weight gradient is one ``[cin, pixels] @ [pixels, cout]`` matrix product per kernel tap
(XLA's own conv weight gradient is ~4x slower on CPU). With per-image weights under ``vmap``,
CPU runs the images' convolutions one after another (XLA CPU grouped convolutions are ~5x slower);
other backends use a grouped convolution.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

__all__ = [
    "CNNResult",
    "Config",
    "apply",
    "init",
    "loss_and_labels",
    "pad_batch",
    "response",
    "segment",
    "segment_batch",
    "train_dataset",
]

Params = dict[str, Any]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_BN_EPS = 1e-5  # PyTorch BatchNorm2d default.
_OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class Config:
    """Model, loss and optimiser settings; hashable, so usable as a static argument.

    ``Config()`` is the ``paper`` preset. ``optimizer`` is ``"adam"`` (``momentum`` is its
    beta1) or ``"sgd"`` (heavy-ball ``momentum``, as ``torch.optim.SGD``). The learning rate is
    multiplied by ``lr_decay_factor`` every ``lr_decay_every`` iterations (0: constant).
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

    def __post_init__(self):
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("n_channels", "n_conv", "max_iter", "min_labels"):
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
        if self.lr_decay_every < 0 or not 0 < self.lr_decay_factor <= 1:
            raise ValueError(
                f"need lr_decay_every >= 0 and 0 < lr_decay_factor <= 1; got "
                f"{self.lr_decay_every}, {self.lr_decay_factor}"
            )

    @classmethod
    def paper(cls) -> "Config":
        """The reimplemented paper: Adam, lr 0.05 divided by 10 every 50 iterations, mu 0.5."""
        return cls()

    @classmethod
    def kim2020(cls) -> "Config":
        """The authors' code defaults: SGD, lr 0.1, momentum 0.9, mu 1 (``stepsize_con``)."""
        return cls(mu=1.0, optimizer="sgd", learning_rate=0.1, lr_decay_every=0)

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
      forward pass, i.e. the labels the stopping rule saw.
    n_iter: [] int32, iterations run (forward/backward passes and parameter updates).
    n_labels: [] int32, distinct labels in ``labels`` (valid pixels only).
    converged: [] bool, whether ``n_labels <= min_labels`` stopped the loop before ``max_iter``.
    loss_history: [max_iter] float32, loss at each iteration, NaN after ``n_iter``.
    n_labels_history: [max_iter] int32, label count at each iteration, -1 after ``n_iter``.
    """

    labels: jax.Array
    n_iter: jax.Array
    n_labels: jax.Array
    converged: jax.Array
    loss_history: jax.Array
    n_labels_history: jax.Array


class _State(NamedTuple):
    i: jax.Array
    converged: jax.Array
    params: Params
    opt_state: Any
    labels: jax.Array
    n_labels: jax.Array
    loss_history: jax.Array
    n_labels_history: jax.Array


# --- convolution ---------------------------------------------------------------------------


def _conv_unbatched(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSION_NUMBERS)


@jax.custom_batching.custom_vmap
def _conv_op(x, kernel):
    return _conv_unbatched(x, kernel)


@_conv_op.def_vmap
def _conv_op_vmap(axis_size, in_batched, x, kernel):
    x_batched, kernel_batched = in_batched
    if not kernel_batched:  # Shared weights: fold the vmapped axis into the image axis.
        n = x.shape[1]
        y = _conv_op(x.reshape(-1, *x.shape[2:]), kernel)
        return y.reshape(axis_size, n, *y.shape[1:]), True
    if not x_batched:
        x = jnp.broadcast_to(x, (axis_size, *x.shape))
    if jax.default_backend() == "cpu":
        return lax.map(lambda xk: _conv_op(*xk), (x, kernel)), True
    return jax.vmap(_conv_unbatched)(x, kernel), True


@jax.custom_vjp
def _conv(x, kernel):
    """'Same' stride-1 convolution; x [n, h, w, cin], kernel [kh, kw, cin, cout] (odd kh, kw)."""
    return _conv_op(x, kernel)


def _conv_fwd(x, kernel):
    return _conv_op(x, kernel), (x, kernel)


def _conv_bwd(residuals, dy):
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    dx = _conv_op(dy, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    ph, pw = kh // 2, kw // 2
    padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    dy_flat = dy.reshape(n * h * w, cout)
    taps = [
        padded[:, i : i + h, j : j + w].reshape(n * h * w, cin).T @ dy_flat
        for i in range(kh)
        for j in range(kw)
    ]
    return dx, jnp.stack(taps).reshape(kh, kw, cin, cout)


_conv.defvjp(_conv_fwd, _conv_bwd)


# --- model and loss ------------------------------------------------------------------------


def init(key: jax.Array, config: Config | None = None) -> Params:
    """Xavier-uniform conv weights, zero biases, BatchNorm scale 1 and offset 0.

    Returns ``{"convs": [{"kernel": [k, k, cin, C], "bias": [C]}] * (n_conv + 1),
    "norms": [{"scale": [C], "offset": [C]}] * (n_conv + 1)}``; the last conv is the 1x1 one.
    """
    config = Config() if config is None else config
    c = config.n_channels
    shapes = [(3, 3, 3, c)] + [(3, 3, c, c)] * (config.n_conv - 1) + [(1, 1, c, c)]
    glorot = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)
    keys = jax.random.split(key, len(shapes))
    convs = [
        {"kernel": glorot(k, shape, jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
        for k, shape in zip(keys, shapes, strict=True)
    ]
    norms = [{"scale": jnp.ones((c,)), "offset": jnp.zeros((c,))} for _ in shapes]
    return {"convs": convs, "norms": norms}


def _batch_norm(x, norm, mask, count):
    """Training-mode BatchNorm over the valid pixels of x [n, h, w, C] (biased variance)."""
    if mask is None:
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    else:
        weights = mask[..., None].astype(x.dtype)
        mean = jnp.sum(x * weights, axis=(0, 1, 2)) / count
        var = jnp.sum(jnp.square(x - mean) * weights, axis=(0, 1, 2)) / count
    return (x - mean) * (norm["scale"] * lax.rsqrt(var + _BN_EPS)) + norm["offset"]


def response(params: Params, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The net's normalised response [n, h, w, C] for images [n, h, w, 3].

    BatchNorm statistics are taken over all valid pixels of all n images. Pixels where ``mask``
    [n, h, w] is False are zeroed before every convolution and left out of the statistics, so a
    top-left valid rectangle gets exactly the response of the unpadded image there.
    """
    count = None if mask is None else jnp.sum(mask)
    weights = None if mask is None else mask[..., None].astype(images.dtype)
    x = images
    last = len(params["convs"]) - 1
    for layer, (conv, norm) in enumerate(zip(params["convs"], params["norms"], strict=True)):
        if weights is not None and conv["kernel"].shape[0] > 1:
            x = x * weights
        x = _conv(x, conv["kernel"]) + conv["bias"]
        if layer < last:
            x = jax.nn.relu(x)
        x = _batch_norm(x, norm, mask, count)
    return x


def _count_labels(labels, mask, n_channels):
    one_hot = labels[..., None] == jnp.arange(n_channels, dtype=labels.dtype)
    if mask is not None:
        one_hot = one_hot & mask[..., None]
    return jnp.sum(jnp.any(one_hot, axis=(0, 1, 2)), dtype=jnp.int32)


def loss_and_labels(
    params: Params, images: jax.Array, mask: jax.Array | None, mu: float
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Similarity + mu * continuity loss for images [n, h, w, 3]; aux: (labels [n, h, w] int32,
    number of distinct labels over the valid pixels).

    Similarity: mean over valid pixels of the cross-entropy against the response's own argmax
    (no gradient through the argmax). Continuity: mean |r[y+1, x] - r[y, x]| over vertically
    adjacent valid pairs and channels, plus the same horizontally (``torch.nn.L1Loss``).
    """
    r = response(params, images, mask)
    labels = jnp.argmax(r, axis=-1).astype(jnp.int32)
    nll = -jnp.max(jax.nn.log_softmax(r, axis=-1), axis=-1)  # CE against the argmax label.
    dy = jnp.abs(r[:, 1:] - r[:, :-1])
    dx = jnp.abs(r[:, :, 1:] - r[:, :, :-1])
    if mask is None:
        similarity = jnp.mean(nll)
        continuity = jnp.mean(dy) + jnp.mean(dx)
    else:
        c = r.shape[-1]
        pair_y = (mask[:, 1:] & mask[:, :-1])[..., None]
        pair_x = (mask[:, :, 1:] & mask[:, :, :-1])[..., None]
        similarity = jnp.sum(jnp.where(mask, nll, 0)) / jnp.sum(mask)
        continuity = jnp.sum(jnp.where(pair_y, dy, 0)) / (c * jnp.sum(pair_y)) + jnp.sum(
            jnp.where(pair_x, dx, 0)
        ) / (c * jnp.sum(pair_x))
    n_labels = _count_labels(labels, mask, r.shape[-1])
    return similarity + mu * continuity, (labels, n_labels)


# --- per-image optimisation ----------------------------------------------------------------


def _fit(image, key, mask, config):
    """One image [h, w, 3] (mask [h, w] or None) -> CNNResult; traceable and vmappable."""
    images = image[None]
    masks = None if mask is None else mask[None]
    optimizer = config.make_optimizer()
    params = init(key, config)
    grad_fn = jax.value_and_grad(loss_and_labels, has_aux=True)

    def cond(s):
        return (s.i < config.max_iter) & ~s.converged

    def body(s):
        (loss, (labels, n_labels)), grads = grad_fn(s.params, images, masks, config.mu)
        updates, opt_state = optimizer.update(grads, s.opt_state, s.params)
        return _State(
            i=s.i + 1,
            converged=n_labels <= config.min_labels,
            params=optax.apply_updates(s.params, updates),
            opt_state=opt_state,
            labels=labels,
            n_labels=n_labels,
            loss_history=s.loss_history.at[s.i].set(loss),
            n_labels_history=s.n_labels_history.at[s.i].set(n_labels),
        )

    state = _State(
        i=jnp.int32(0),
        converged=jnp.bool_(False),
        params=params,
        opt_state=optimizer.init(params),
        labels=jnp.zeros(images.shape[:3], jnp.int32),
        n_labels=jnp.int32(0),
        loss_history=jnp.full((config.max_iter,), jnp.nan, jnp.float32),
        n_labels_history=jnp.full((config.max_iter,), -1, jnp.int32),
    )
    state = lax.while_loop(cond, body, state)
    return CNNResult(
        labels=state.labels[0],
        n_iter=state.i,
        n_labels=state.n_labels,
        converged=state.converged,
        loss_history=state.loss_history,
        n_labels_history=state.n_labels_history,
    )


@jax.jit(static_argnames=("config",))
def _segment(image, key, config):
    return _fit(image, key, None, config)


@jax.jit(static_argnames=("config",))
def _segment_batch(images, keys, mask, config):
    return jax.vmap(_fit, in_axes=(0, 0, None if mask is None else 0, None))(
        images, keys, mask, config
    )


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_images(images, batch_rank: int, what: str):
    rank = batch_rank + 3
    shape = jnp.shape(images)
    if len(shape) != rank or shape[-1] != 3:
        dims = "[b, h, w, 3]" if batch_rank else "[h, w, 3]"
        raise ValueError(f"{what} must have shape {dims} (RGB), got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise ValueError(
            f"{what} must be floating point in [0, 1], got dtype {jnp.result_type(images)} "
            "(divide uint8 images by 255)"
        )
    if shape[-3] < 3 or shape[-2] < 3:
        raise ValueError(f"{what} must be at least 3x3 pixels, got {shape[-3]}x{shape[-2]}")
    if _is_concrete(images) and not np.all(np.isfinite(np.asarray(images))):
        raise ValueError(f"{what} contains NaN or infinite values")


def segment(image: jax.Array, key: jax.Array, config: Config | None = None) -> CNNResult:
    """Fit the CNN to one image [h, w, 3] float in [0, 1] (h, w >= 3) and return its labels.

    Jitted with ``config`` static: images of one shape and config share one compilation.
    """
    config = Config() if config is None else config
    _check_images(image, 0, "image")
    return _segment(jnp.asarray(image, jnp.float32), key, config)


def segment_batch(
    images: jax.Array,
    keys: jax.Array,
    config: Config | None = None,
    *,
    mask: jax.Array | None = None,
) -> CNNResult:
    """Fit one CNN per image of images [b, h, w, 3]; keys [b] (one per image).

    Each image has its own parameters and optimiser state and stops on its own (a finished
    image stays fixed while others continue). Images of different sizes are padded to a common
    [h, w] (see ``pad_batch``) with ``mask`` [b, h, w] True on real pixels: padded pixels are
    out of the loss, the BatchNorm statistics and the label count, and an image placed top-left
    gets the same result as alone. Portrait and landscape images may instead share a bucket by
    transposing (``image.transpose(1, 0, 2)``, labels transposed back); that is a valid but
    different fit, since the learnt filters are not transpose-symmetric. Returns a CNNResult with
    a leading [b] axis; labels on padded pixels are meaningless.
    """
    config = Config() if config is None else config
    _check_images(images, 1, "images")
    b, h, w, _ = jnp.shape(images)
    if jnp.shape(keys)[:1] != (b,):
        raise ValueError(f"keys must have a leading axis of {b} (one per image), got {keys.shape}")
    if mask is not None:
        if jnp.shape(mask) != (b, h, w) or jnp.result_type(mask) != jnp.bool_:
            raise ValueError(
                f"mask must be bool with shape {(b, h, w)}, got {jnp.result_type(mask)} "
                f"{jnp.shape(mask)}"
            )
        if _is_concrete(mask):
            m = np.asarray(mask)
            rows, cols = m.any(axis=2).sum(axis=1), m.any(axis=1).sum(axis=1)
            if np.any(rows < 3) or np.any(cols < 3):
                raise ValueError("every image's mask must cover at least 3x3 pixels")
    return _segment_batch(jnp.asarray(images, jnp.float32), keys, mask, config)


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


@jax.jit(static_argnames=("config", "batch_size", "updates_per_batch"))
def _train_dataset(images, key, mask, config, batch_size, updates_per_batch):
    optimizer = config.make_optimizer()
    params = init(key, config)
    grad_fn = jax.grad(lambda p, x, m: loss_and_labels(p, x, m, config.mu)[0])

    def step(t, carry):
        params, opt_state = carry
        start = (t // updates_per_batch) * batch_size
        batch = lax.dynamic_slice_in_dim(images, start, batch_size)
        batch_mask = None if mask is None else lax.dynamic_slice_in_dim(mask, start, batch_size)
        grads = grad_fn(params, batch, batch_mask)
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
) -> Params:
    """Train one network on many images [n, h, w, 3] (the authors' reference-image mode).

    As their ``demo_ref.py``: consecutive batches of ``batch_size`` images, the last one holding
    the remaining ``n % batch_size`` images when ``batch_size`` does not divide n (every image
    is used), each batch used for ``updates_per_batch`` (default ``config.max_iter``) updates,
    with BatchNorm statistics and the loss over the whole batch. No early stopping;
    ``min_labels`` is unused. Resize images to one shape first (they used 224x224 and mu 5) or
    pad them with ``pad_batch`` and pass its ``mask``. Apply the result with ``apply``.
    """
    config = Config() if config is None else config
    _check_images(images, 1, "images")
    n = jnp.shape(images)[0]
    updates_per_batch = config.max_iter if updates_per_batch is None else updates_per_batch
    if not 1 <= batch_size <= n or updates_per_batch < 1:
        raise ValueError(
            f"need 1 <= batch_size <= {n} images and updates_per_batch >= 1, got "
            f"batch_size={batch_size}, updates_per_batch={updates_per_batch}"
        )
    if mask is not None and (
        jnp.shape(mask) != jnp.shape(images)[:3] or jnp.result_type(mask) != jnp.bool_
    ):
        raise ValueError(f"mask must be bool with shape {jnp.shape(images)[:3]}")
    images = jnp.asarray(images, jnp.float32)
    n_missing = -n % batch_size
    if n_missing:
        # The last batch is filled up with all-masked images, which the loss and the
        # BatchNorm statistics ignore: the same updates as a batch of the remaining images.
        mask = jnp.ones(images.shape[:3], bool) if mask is None else jnp.asarray(mask)
        images = jnp.pad(images, ((0, n_missing), (0, 0), (0, 0), (0, 0)))
        mask = jnp.pad(mask, ((0, n_missing), (0, 0), (0, 0)))
    return _train_dataset(images, key, mask, config, batch_size, updates_per_batch)


@jax.jit
def _apply(params, image):
    return jnp.argmax(response(params, image[None])[0], axis=-1).astype(jnp.int32)


def apply(params: Params, image: jax.Array) -> jax.Array:
    """Labels [h, w] int32 of a trained network for image [h, w, 3]: one forward pass,
    BatchNorm with the image's own statistics (as the authors' test loop)."""
    _check_images(image, 0, "image")
    return _apply(params, jnp.asarray(image, jnp.float32))
