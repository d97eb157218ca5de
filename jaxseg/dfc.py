"""The network of Kim, Kanezaki & Tanaka (2020) as a ``flax.linen`` module, with its fast conv.

``DFC(n_channels, n_conv)``: conv 3x3 (3->C) -> ReLU -> BatchNorm, (n_conv - 1) x [conv 3x3
(C->C) -> ReLU -> BatchNorm], conv 1x1 (C->C) -> BatchNorm. Its ``apply(variables, images,
mask)`` returns the response [n, h, w, C]; labels are its argmax. BatchNorm (``MaskedBatchNorm``)
always normalises with the statistics of the images being fitted (no running averages, no eval
mode), over the valid pixels only when a mask is given. The variables are ``{"params": ...}``
only, so they can be optimised with optax and saved with ``flax.serialization``.

Convolutions (``SameConv``): the forward pass and the input gradient are
``lax.conv_general_dilated`` (NHWC), the weight gradient is one ``[cin, pixels] @ [pixels, cout]``
matrix product per kernel tap (XLA's own conv weight gradient is ~4x slower on CPU). With
per-image weights under ``vmap``, CPU runs the images' convolutions one after another (XLA CPU
grouped convolutions are ~5x slower); other backends use a grouped convolution.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import serialization
from jax import lax

__all__ = ["DFC", "MaskedBatchNorm", "SameConv", "conv", "from_bytes", "to_bytes"]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_BN_EPS = 1e-5  # PyTorch BatchNorm2d default.


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
def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
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


conv.defvjp(_conv_fwd, _conv_bwd)


# --- layers --------------------------------------------------------------------------------


class SameConv(nn.Module):
    """'Same' stride-1 convolution with bias through ``conv``; Xavier-uniform kernel, zero bias.

    Params: ``kernel`` [k, k, cin, features], ``bias`` [features].
    """

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        init = nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)
        kernel = self.param("kernel", init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return conv(x, kernel) + bias


class MaskedBatchNorm(nn.Module):
    """Training-mode BatchNorm of x [n, h, w, C] over its valid pixels (biased variance).

    Always the statistics of x itself: no running averages. ``mask`` [n, h, w] bool (None: all
    pixels) leaves pixels out of the statistics. Params: ``scale`` [C] (ones), ``bias`` [C].
    """

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
        if mask is None:
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        else:
            weights = mask[..., None].astype(x.dtype)
            count = jnp.sum(mask)
            mean = jnp.sum(x * weights, axis=(0, 1, 2)) / count
            var = jnp.sum(jnp.square(x - mean) * weights, axis=(0, 1, 2)) / count
        return (x - mean) * (scale * lax.rsqrt(var + _BN_EPS)) + bias


class DFC(nn.Module):
    """The differentiable feature clustering network; ``__call__(images [n, h, w, 3], mask=None)
    -> response [n, h, w, n_channels]``.

    Pixels where ``mask`` [n, h, w] is False are zeroed before every 3x3 convolution and left
    out of the BatchNorm statistics, so a top-left valid rectangle gets exactly the response of
    the unpadded image there. Submodules: ``conv_0`` .. ``conv_{n_conv}`` (the last one 1x1) and
    ``norm_0`` .. ``norm_{n_conv}``.
    """

    n_channels: int = 100
    n_conv: int = 2

    @nn.compact
    def __call__(self, images: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        weights = None if mask is None else mask[..., None].astype(images.dtype)
        x = images
        for layer in range(self.n_conv + 1):
            last = layer == self.n_conv
            if weights is not None and not last:
                x = x * weights
            x = SameConv(self.n_channels, 1 if last else 3, name=f"conv_{layer}")(x)
            if not last:
                x = jax.nn.relu(x)
            x = MaskedBatchNorm(name=f"norm_{layer}")(x, mask)
        return x


def to_bytes(variables) -> bytes:
    """Serialise a ``DFC``'s variables (``flax.serialization.to_bytes``)."""
    return serialization.to_bytes(variables)


def from_bytes(template, data: bytes):
    """Restore variables saved by ``to_bytes`` into the structure of ``template`` (e.g. a fresh
    ``DFC.init``); raises ``ValueError`` when the saved shapes do not match it."""
    restored = serialization.from_bytes(template, data)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(template), strict=True):
        if jnp.shape(got) != jnp.shape(want):
            raise ValueError(
                f"saved parameters have shape {jnp.shape(got)} where the network expects "
                f"{jnp.shape(want)} (different n_channels or n_conv?)"
            )
    return restored
