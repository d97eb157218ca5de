"""SLIC superpixels (Achanta et al. 2012) as pure jit-compiled, vmappable functions.

Semantics follow scikit-image's `skimage.segmentation.slic` on an RGB image: centres start on
scikit-image's regular grid (`skimage.util.regular_grid`: step S = sqrt(h*w / n_segments),
rounded, offset floor(S / 2)) with the colour of the pixel under them; then up to `max_iter`
rounds of a localised K-means on (L*, a*, b*, row, col) with the distance

    D^2 = |Lab - Lab_c|^2 / compactness^2 + |yx - yx_c|^2 / S^2

(L*, a*, b* in CIE units, L* in [0, 100]: `compactness` has scikit-image's meaning and scale;
`jaxseg.features` divides Lab by 100, so its Lab distances are this one's / 100). Each pixel
compares only the centres of the 3 x 3 grid cells around the cell it starts in: for centres
that stay in their cells that is the 2S x 2S window of the paper (scikit-image searches 4S x 4S).
The loop stops early when no label changes.

Connectivity is then enforced on device, with 4-connectivity (as scikit-image): connected
components of each label are found by label-equivalence rounds (scatter-min hooking, then
pointer jumping, as GPU connected-component labelling); components
smaller than min_size = int(min_size_factor * valid pixels / centres) merge into their largest
adjacent component, repeated until none is left (scikit-image merges into the component met
before it in raster order and also cuts components past max_size_factor; this does neither).
Every final segment is one 4-connected component of at least min_size pixels (unless it is
the whole image), numbered 0..n-1 in raster order of its first pixel.

Batches: `segment_batch` segments images padded top-left to one shape, with `mask` True on real
pixels, in one compiled call. The grid of a masked image spans the mask's bounding box from the
top-left corner, so a padded image gets the grid, and the superpixels, it gets alone; masked
pixels take no part and are labelled 0. `segment` is also vmappable (slower: XLA's batched
scatters); `segment_batch` stacks the images into one set of unbatched arrays instead.

Unlike scikit-image, the image is not stretched to its own [min, max] range before the Lab
conversion, and a centre that loses every pixel is kept (scikit-image's becomes NaN).

Measured on BSDS500 val (481 x 321, compactness 10; see experiments/benchmarks/superpixels.py):
boundary recall and undersegmentation error as good as scikit-image's or better, 4-5% more
segments, and faster per image on CPU.
"""

import functools
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxseg import features, visualize

__all__ = [
    "SLICResult",
    "boundary_recall",
    "grid_shape",
    "segment",
    "segment_batch",
    "undersegmentation_error",
]

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # ascending centre index


class SLICResult(NamedTuple):
    """Result of `segment` for an image [h, w] (`segment_batch` adds a leading [b] axis).

    Attributes:
      labels: [h, w] int32 superpixel of each pixel, consecutive 0..n_segments-1 over the
        unmasked pixels, numbered in raster order of each segment's first pixel; masked pixels
        are 0. Each segment is one 4-connected component.
      n_segments: [] int32 number of superpixels.
      centroids: [m, 5] float32 mean (L*, a*, b*) / 100 (`jaxseg.features` Lab), row and column
        of each superpixel; rows from n_segments on are 0. m is a static bound on the number of
        segments (see `grid_shape`).
      sizes: [m] int32 pixels in each superpixel (0 from n_segments on).
      n_iter: [] int32 K-means iterations run (at most max_iter).
    """

    labels: jax.Array
    n_segments: jax.Array
    centroids: jax.Array
    sizes: jax.Array
    n_iter: jax.Array


class _State(NamedTuple):
    centres: jax.Array  # [b * k, 5] scaled (L*, a*, b*, row, col)
    labels: jax.Array  # [b * n] centre of each pixel (-1 before the first iteration)
    iteration: jax.Array  # [] iterations run
    n_iter: jax.Array  # [b] iterations run before each image converged
    converged: jax.Array  # [b] labels unchanged by the last iteration


def _n_segments(height: int, width: int, size: int) -> int:
    """The `n_segments` that gives superpixels of ~`size` pixels on an image [height, width]."""
    return max(1, round(height * width / size))


def _grid(height, width, n_segments: int, xp=jnp) -> tuple:
    """scikit-image's `regular_grid` for a 2-D image (int arrays, any shape), in float32 so that
    the NumPy bound of `grid_shape` and the traced grid agree. Returns (start, step, count) per
    axis as tuples of (rows, cols) arrays."""
    h = xp.asarray(height).astype(xp.float32)
    w = xp.asarray(width).astype(xp.float32)
    side = xp.sqrt(h * w / xp.float32(n_segments))
    short, long = xp.minimum(h, w), xp.maximum(h, w)
    thin = short < side  # the grid is one line along the long side
    along_long = xp.where(thin, long / xp.float32(n_segments), side)
    along_short = xp.where(thin, short, side)
    tall = h >= w
    step_y = xp.where(tall, along_long, along_short)
    step_x = xp.where(tall, along_short, along_long)
    every_pixel = h * w <= n_segments
    steps, starts, counts = [], [], []
    for step, size in ((step_y, h), (step_x, w)):
        start = xp.where(every_pixel, 0, xp.floor(step / 2)).astype(xp.int32)
        step = xp.where(every_pixel, 1, xp.maximum(xp.round(step), 1)).astype(xp.int32)
        count = (size.astype(xp.int32) - start + step - 1) // step
        steps.append(step)
        starts.append(start)
        counts.append(xp.maximum(count, 1))
    return tuple(starts), tuple(steps), tuple(counts)


@functools.cache
def grid_shape(
    height: int, width: int, n_segments: int, *, masked: bool, min_size_factor: float = 0.5
) -> tuple[int, int]:
    """Static (centres, segments): how many K-means centres SLIC uses on an image [height,
    width] (scikit-image's grid count, e.g. 782 for 481 x 321 and n_segments=800), and the
    bound m on its final segments (the rows of `SLICResult.centroids`). With `masked`, both are
    maxima over every top-left sub-image of that size, as a mask allows."""
    if masked:
        h, w = np.meshgrid(np.arange(1, height + 1), np.arange(1, width + 1), indexing="ij")
    else:
        h, w = np.array([height]), np.array([width])
    _, _, (rows, cols) = _grid(h, w, n_segments, xp=np)
    centres = int(np.max(rows * cols))
    pixels = height * width
    # Every final segment has >= min_size = floor(f * N / k) pixels: at most N / min_size < 2k / f
    # segments when min_size >= 1, and at most N < k / f when it is 0.
    bound = (
        pixels if min_size_factor == 0 else min(pixels, math.ceil(2 * centres / min_size_factor))
    )
    return centres, bound


def _shift(a: jax.Array, dy: int, dx: int, fill) -> jax.Array:
    """b[y, x] = a[y + dy, x + dx], `fill` outside the image (|dy|, |dx| <= 1)."""
    h, w = a.shape
    a = jnp.pad(a, ((1, 1), (1, 1)), constant_values=fill)
    return lax.slice(a, (1 + dy, 1 + dx), (1 + dy + h, 1 + dx + w))


_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # 4-connectivity


def _jump(table: jax.Array) -> jax.Array:
    """Follows pointers table[i] -> table[table[i]] until every entry points at a fixed point."""

    def body(carry):
        table, _ = carry
        jumped = table[table]
        return jumped, jnp.any(jumped != table)

    return lax.while_loop(lambda c: c[1], body, (table, jnp.array(True)))[0]


def _components(labels: jax.Array, valid: jax.Array) -> jax.Array:
    """[h, w] flat index of the first (raster order) pixel of each pixel's 4-connected component
    of equal `labels` among `valid` pixels; masked pixels get h * w.

    Label-equivalence rounds (as connected-component labelling on GPUs): every root hooks to
    the lowest root next to any pixel of its tree (scatter-min), then the trees are flattened by
    pointer jumping. Roots only ever decrease, so no cycle forms. SLIC superpixels of BSDS val
    images take 4-5 rounds, against 34 of min-propagation with one pointer jump per round."""
    h, w = labels.shape
    n = h * w
    ids = jnp.where(valid, jnp.arange(n, dtype=jnp.int32).reshape(h, w), n)
    same = [
        valid & _shift(valid, dy, dx, False) & (labels == _shift(labels, dy, dx, -1))
        for dy, dx in _NEIGHBOURS
    ]

    def body(carry):
        ids, _ = carry
        lowest = ids
        for (dy, dx), joined in zip(_NEIGHBOURS, same, strict=True):
            lowest = jnp.minimum(lowest, jnp.where(joined, _shift(ids, dy, dx, n), n))
        parent = jnp.arange(n + 1, dtype=jnp.int32).at[ids.ravel()].min(lowest.ravel())
        hooked = _jump(parent)[ids]
        return hooked, jnp.any(hooked != ids)

    return lax.while_loop(lambda c: c[1], body, (ids, jnp.array(True)))[0]


def _merge_small(ids: jax.Array, valid: jax.Array, min_size: jax.Array, pixels: int) -> jax.Array:
    """Merges every component (ids from `_components`) of fewer than min_size pixels into its
    adjacent component that is largest (ties: higher id), as long as that one is larger in
    (size, id) order, until no component can merge. Merging into an adjacent component keeps
    every component connected; the strict order rules out cycles within a round. The images of
    a batch are stacked: `pixels` per image, min_size [b] per image, never merged across."""
    h, w = ids.shape
    n = h * w
    image_min = jnp.append(min_size[jnp.arange(n) // pixels], 0)  # [n + 1] per component id

    def body(carry):
        ids, _ = carry
        flat = ids.ravel()
        sizes = jax.ops.segment_sum(valid.ravel().astype(jnp.int32), flat, n + 1)
        neighbours = []
        for dy, dx in _NEIGHBOURS:
            other = _shift(ids, dy, dx, n).ravel()
            joined = (other != flat) & (other < n) & (other // pixels == flat // pixels)
            neighbours.append((other, jnp.where(joined, sizes[other], -1)))
        best_size = jax.ops.segment_max(
            functools.reduce(jnp.maximum, [size for _, size in neighbours]), flat, n + 1
        )
        best_id = jax.ops.segment_max(
            functools.reduce(
                jnp.maximum,
                [jnp.where(size == best_size[flat], other, -1) for other, size in neighbours],
            ),
            flat,
            n + 1,
        )
        index = jnp.arange(n + 1, dtype=jnp.int32)
        larger = (best_size > sizes) | ((best_size == sizes) & (best_id > index))
        merge = (sizes > 0) & (sizes < image_min) & (best_id >= 0) & larger
        target = _jump(jnp.where(merge, best_id, index))
        return target[ids], jnp.any(merge)

    return lax.while_loop(lambda c: c[1], body, (ids, jnp.array(True)))[0]


_FAR = 1e9  # coordinates of the sentinel centre that stands for a cell outside the grid


def _assign(points: jax.Array, centres: jax.Array, candidates: jax.Array) -> jax.Array:
    """Nearest of the 9 candidate centres candidates [9, n] (int32, k for none) of each pixel.

    points [5, n] and centres [5, k] are feature-major and the 5 features unrolled: gathering
    one feature at a time is 6x faster on XLA's CPU backend than gathering [n, 5] rows."""
    table = jnp.concatenate([centres, jnp.full((centres.shape[0], 1), _FAR)], axis=1)
    best = labels = None
    for candidate in candidates:
        d = sum((points[f] - table[f][candidate]) ** 2 for f in range(points.shape[0]))
        if best is None:
            best, labels = d, candidate
        else:
            closer = d < best  # ties go to the lower centre index, as scikit-image
            best = jnp.where(closer, d, best)
            labels = jnp.where(closer, candidate, labels)
    return labels


def _slic(
    rgb, extent, mask, compactness, *, n_segments, max_iter, min_size_factor, n_centres, bound
):
    """Images rgb [b, h, w, 3] float32 in [0, 1] -> SLICResult with a leading [b] axis. The grid
    of each image spans the bounding box of `extent` [b, h, w] bool (the caller's mask); `mask`
    [b, h, w] bool (extent and finite colour) marks the pixels that take part.

    The batch is not vmapped but stacked: pixel i of image j is row j * h * w + i of one set of
    arrays, centre c of image j is row j * n_centres + c, so every gather and scatter stays
    unbatched (XLA's batched scatters and gathers are several times slower on CPU)."""
    b, h, w, _ = rgb.shape
    n, k = h * w, n_centres
    lab = features.colour_features(rgb.reshape(b * n, 3), space="lab")  # Lab / 100
    valid = mask.reshape(b * n)
    image = jnp.arange(b, dtype=jnp.int32)[:, None]  # [b, 1]
    rows = jnp.arange(h, dtype=jnp.int32)
    cols = jnp.arange(w, dtype=jnp.int32)
    height = jnp.max(jnp.where(jnp.any(extent, axis=2), rows + 1, 0), axis=1)
    width = jnp.max(jnp.where(jnp.any(extent, axis=1), cols + 1, 0), axis=1)
    grid = _grid(height, width, n_segments)  # each [b]
    (start_y, start_x), (step_y, step_x), (grid_h, grid_w) = (
        tuple(a[:, None] for a in pair) for pair in grid
    )
    spacing = jnp.maximum(step_y, step_x).astype(jnp.float32)  # [b, 1]

    yy, xx = jnp.meshgrid(rows, cols, indexing="ij")
    positions = jnp.broadcast_to(jnp.stack([yy.ravel(), xx.ravel()], axis=1), (b, n, 2))
    positions = positions.astype(jnp.float32)
    scaled = (positions / spacing[:, :, None]).reshape(b * n, 2)
    points = jnp.concatenate([lab * (100.0 / compactness), scaled], axis=1)

    # Grid cell of each row and column (nearest grid line), and for each pixel the centres of
    # the 3 x 3 cells around its own, b * k (the sentinel) outside the grid.
    cell_y = jnp.clip((2 * (rows - start_y) + step_y) // (2 * step_y), 0, grid_h - 1)  # [b, h]
    cell_x = jnp.clip((2 * (cols - start_x) + step_x) // (2 * step_x), 0, grid_w - 1)  # [b, w]
    candidates = []
    for dy, dx in _OFFSETS:
        cy, cx = cell_y[:, :, None] + dy, cell_x[:, None, :] + dx
        gh, gw = grid_h[:, :, None], grid_w[:, :, None]
        inside = (cy >= 0) & (cy < gh) & (cx >= 0) & (cx < gw)
        index = jnp.minimum(cy * gw + cx, k - 1) + k * image[:, :, None]
        candidates.append(jnp.where(inside, index, b * k).ravel())
    candidates = jnp.stack(candidates)  # [9, b * n]

    c = jnp.arange(k, dtype=jnp.int32)
    seed = (start_y + (c // grid_w) * step_y) * w + start_x + (c % grid_w) * step_x  # [b, k]
    centres = points[(jnp.clip(seed, 0, n - 1) + n * image).ravel()]  # [b * k, 5]
    weighted = jnp.concatenate([points, jnp.ones((b * n, 1), jnp.float32)], axis=1)
    weighted = jnp.where(valid[:, None], weighted, 0.0)
    points_t = points.T

    def cond(state: _State):
        return (state.iteration < max_iter) & ~jnp.all(state.converged)

    def body(state: _State) -> _State:
        labels = _assign(points_t, state.centres.T, candidates)
        totals = jax.ops.segment_sum(weighted, labels, b * k)
        counts = totals[:, -1:]
        centres = jnp.where(counts > 0, totals[:, :-1] / jnp.maximum(counts, 1.0), state.centres)
        # A converged image is at a fixed point: running on leaves its labels unchanged.
        same = jnp.all(((labels == state.labels) | ~valid).reshape(b, n), axis=1)
        return _State(
            centres=centres,
            labels=labels,
            iteration=state.iteration + 1,
            n_iter=state.n_iter + ~state.converged,
            converged=state.converged | same,
        )

    state = lax.while_loop(
        cond,
        body,
        _State(
            centres=centres,
            labels=jnp.full(b * n, -1, jnp.int32),
            iteration=jnp.zeros((), jnp.int32),
            n_iter=jnp.zeros(b, jnp.int32),
            converged=jnp.zeros(b, bool),
        ),
    )

    # Connectivity on the images stacked as one [b * h, w] image: labels of different images
    # differ, so components never cross; then small ones merged, then numbering per image.
    segment_size = jnp.sum(mask, axis=(1, 2)) / (grid_h * grid_w)[:, 0]
    min_size = jnp.floor(min_size_factor * segment_size).astype(jnp.int32)  # [b]
    ids = _components(state.labels.reshape(b * h, w), mask.reshape(b * h, w))
    ids = _merge_small(ids, mask.reshape(b * h, w), min_size, n).ravel()
    present = jnp.zeros(b * n + 1, bool).at[ids].set(True)[:-1].reshape(b, n)
    # associative_scan: XLA's CPU cumsum of 150k elements is 8x slower.
    rank = lax.associative_scan(jnp.add, present.astype(jnp.int32), axis=1) - 1
    labels = jnp.where(valid, jnp.append(rank.ravel(), 0)[ids], 0).reshape(b, n)

    stats = jnp.concatenate([lab, positions.reshape(b * n, 2), jnp.ones((b * n, 1))], axis=1)
    totals = jax.ops.segment_sum(
        jnp.where(valid[:, None], stats, 0.0), (labels + bound * image).ravel(), b * bound
    ).reshape(b, bound, 6)
    sizes = totals[..., -1]
    return SLICResult(
        labels=labels.reshape(b, h, w),
        n_segments=jnp.sum(present, axis=1, dtype=jnp.int32),
        centroids=totals[..., :-1] / jnp.maximum(sizes, 1.0)[..., None],
        sizes=sizes.astype(jnp.int32),
        n_iter=state.n_iter,
    )


@functools.partial(
    jax.jit, static_argnames=("n_segments", "max_iter", "min_size_factor", "masked", "batched")
)
def _segment(images, mask, compactness, *, n_segments, max_iter, min_size_factor, masked, batched):
    """images [(b,) h, w(, 3)] uint8 or float -> SLICResult; mask [(b,) h, w] bool or None."""
    rank = 1 if batched else 0
    if images.ndim == rank + 2:  # grey
        images = jnp.repeat(images[..., None], 3, axis=-1)
    if images.dtype == jnp.uint8:
        rgb = images.astype(jnp.float32) / 255.0
    else:
        rgb = jnp.clip(images.astype(jnp.float32), 0.0, 1.0)  # traced NaN stays NaN: masked out
    h, w = rgb.shape[-3:-1]
    extent = jnp.ones(rgb.shape[:-1], bool) if mask is None else mask
    valid = extent & jnp.all(jnp.isfinite(rgb), axis=-1)
    rgb = jnp.where(valid[..., None], rgb, 0.0)
    n_centres, bound = grid_shape(h, w, n_segments, masked=masked, min_size_factor=min_size_factor)
    if not batched:
        rgb, extent, valid = rgb[None], extent[None], valid[None]
    result = _slic(
        rgb,
        extent,
        valid,
        compactness,
        n_segments=n_segments,
        max_iter=max_iter,
        min_size_factor=min_size_factor,
        n_centres=n_centres,
        bound=bound,
    )
    return result if batched else jax.tree.map(lambda a: a[0], result)


def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check(images, mask, rank: int, n_segments, compactness, max_iter, min_size_factor):
    """Checks the arguments (values only when concrete); returns (images, mask) as arrays."""
    name = "image" if rank == 0 else "images"
    shape = "[h, w, 3] or [h, w]" if rank == 0 else "[b, h, w, 3] or [b, h, w]"
    images = images if isinstance(images, jax.Array) else np.asarray(images)
    grey = images.ndim == rank + 2
    if not (grey or (images.ndim == rank + 3 and images.shape[-1] == 3)):
        raise ValueError(f"{name} must have shape {shape}, got {images.shape}")
    spatial = images.shape[rank : rank + 2]
    if min(spatial) < 1:
        raise ValueError(f"{name} is empty: shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"{name} must be uint8 or float in [0, 1], got {images.dtype}")
        if _is_concrete(images):
            values = np.asarray(images)
            if not np.isfinite(values).all():
                raise ValueError(f"{name} contains NaN or inf")
            if values.min() < 0 or values.max() > 1:
                raise ValueError(
                    f"float {name} values must lie in [0, 1], got [{values.min()}, {values.max()}]"
                )
    if operator.index(n_segments) < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if operator.index(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if _is_concrete(compactness) and not (np.isfinite(compactness) and compactness > 0):
        raise ValueError(f"compactness must be finite and > 0, got {compactness}")
    if not (np.isfinite(min_size_factor) and 0 <= min_size_factor <= 1):
        raise ValueError(f"min_size_factor must be in [0, 1], got {min_size_factor}")
    if mask is not None:
        mask = mask if isinstance(mask, jax.Array) else np.asarray(mask)
        expected = images.shape[: rank + 2]
        if mask.shape != expected or mask.dtype != np.bool_:
            raise ValueError(
                f"mask must be bool with shape {expected}, got {mask.dtype} {mask.shape}"
            )
        if _is_concrete(mask) and not np.asarray(mask).reshape(-1, math.prod(spatial)).any(1).all():
            raise ValueError("mask is False everywhere on an image: nothing to segment")
    return images, mask


def segment(
    image,
    *,
    n_segments: int = 100,
    compactness=10.0,
    max_iter: int = 10,
    min_size_factor: float = 0.5,
    mask=None,
) -> SLICResult:
    """SLIC superpixels of one image, with connectivity enforced (see the module docstring).

    Args:
      image: RGB [h, w, 3] or grey [h, w], uint8 or float in [0, 1].
      n_segments: approximate number of superpixels (static), scikit-image's meaning.
      compactness: weight of position against colour, in scikit-image's units (CIE Lab with
        L* in [0, 100]); higher gives more regular, square superpixels. May be traced.
      max_iter: maximum K-means iterations (static); scikit-image's `max_num_iter`.
      min_size_factor: components smaller than this fraction of the mean segment size
        (valid pixels / centres) are merged into a neighbour (static), as scikit-image.
      mask: optional [h, w] bool, True on real pixels; the grid spans its bounding box from the
        top-left corner, masked pixels are labelled 0.

    Returns:
      SLICResult.

    Raises:
      ValueError: wrong shape or dtype, NaN/inf or out-of-range colours, n_segments < 1,
        compactness <= 0 or not finite, max_iter < 1, min_size_factor outside [0, 1], or an
        all-False mask (values are checked only when concrete).
    """
    image, mask = _check(image, mask, 0, n_segments, compactness, max_iter, min_size_factor)
    return _segment(
        image,
        mask,
        jnp.asarray(compactness, jnp.float32),
        n_segments=operator.index(n_segments),
        max_iter=operator.index(max_iter),
        min_size_factor=float(min_size_factor),
        masked=mask is not None,
        batched=False,
    )


def segment_batch(
    images,
    *,
    n_segments: int = 100,
    compactness=10.0,
    max_iter: int = 10,
    min_size_factor: float = 0.5,
    mask=None,
) -> SLICResult:
    """`segment` of every image of images [b, h, w, 3] (or [b, h, w] grey) in one compiled call.

    Images of different sizes are padded top-left to one [h, w] with `mask` [b, h, w] True on
    real pixels: each then gets the grid, and so the superpixels, it gets alone. Returns an
    SLICResult with a leading [b] axis. The K-means loop runs until every image has converged
    (or max_iter); a converged image sits at a fixed point meanwhile. Same labels as
    `jax.vmap(segment)`, 7x faster on CPU (6 BSDS images, 481 x 321: 0.6 s against 4.3 s of
    CPU time), whose batched gathers and scatters XLA runs slowly.
    """
    images, mask = _check(images, mask, 1, n_segments, compactness, max_iter, min_size_factor)
    return _segment(
        images,
        mask,
        jnp.asarray(compactness, jnp.float32),
        n_segments=operator.index(n_segments),
        max_iter=operator.index(max_iter),
        min_size_factor=float(min_size_factor),
        masked=mask is not None,
        batched=True,
    )


def boundary_recall(labels, ground_truth, *, tolerance: int = 2) -> float:
    """Fraction of ground-truth boundary pixels within `tolerance` pixels (chessboard distance)
    of a superpixel boundary pixel (host-side NumPy/SciPy). Boundary pixels of a label map are
    those whose right or lower neighbour differs. `ground_truth` is one label map [h, w] or a
    sequence of them (BSDS's several annotations): the mean over them."""
    from scipy import ndimage

    labels = np.asarray(labels)
    maps = [ground_truth] if np.ndim(ground_truth) == 2 else list(ground_truth)
    near = ndimage.binary_dilation(
        visualize.boundary_mask(labels), structure=np.ones((2 * tolerance + 1,) * 2, bool)
    )
    recalls = []
    for gt in maps:
        edge = visualize.boundary_mask(np.asarray(gt))
        recalls.append(float(np.sum(edge & near) / max(np.sum(edge), 1)))
    return float(np.mean(recalls))


def undersegmentation_error(labels, ground_truth) -> float:
    """Undersegmentation error of Neubert & Protzel (2012), as in superpixel benchmarks:
    sum over ground-truth segments G and superpixels S meeting G of min(|S & G|, |S - G|),
    divided by the number of pixels (host-side NumPy); 0 is best. Mean over `ground_truth`
    maps when several are given (as in `boundary_recall`)."""
    labels = np.asarray(labels).ravel()
    maps = [ground_truth] if np.ndim(ground_truth) == 2 else list(ground_truth)
    _, s = np.unique(labels, return_inverse=True)
    errors = []
    for gt in maps:
        _, g = np.unique(np.asarray(gt).ravel(), return_inverse=True)
        table = np.zeros((g.max() + 1, s.max() + 1), np.int64)
        np.add.at(table, (g, s), 1)
        outside = table.sum(axis=0, keepdims=True) - table
        errors.append(float(np.minimum(table, outside)[table > 0].sum() / labels.size))
    return float(np.mean(errors))
