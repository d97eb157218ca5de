"""Scribble maps: reading the authors' files, shrinking them on device, making them from an
annotation.

A scribble map is `[h, w]` integers in the convention of Kim, Kanezaki & Tanaka's `demo.py`:
class c (0..254) on scribbled pixels, `UNSCRIBBLED` (255) elsewhere. On disk it is a
single-channel 8-bit PNG (mode L, or P whose indices are the classes), the size of its image.

  find(folder, image_id)        `<id>.png`, else the authors' `<id>_scribble.png`, or None
  for_image(folder, sample)     the checked map of a sample's file, or None: unguided
  to_draw(folder, sample)       the strokes to draw over a sample's pictures, or None
  read(path, shape)             the checked map of one file (`ValueError` naming the file)
  shrink(scribbles, shape)      nearest downscaling that keeps every stroke (pure JAX)
  from_annotation(segmentation, key=...)   a few thin strokes inside each large segment
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from jaxseg.boundary import thin
from jaxseg.cnn import UNSCRIBBLED

_log = logging.getLogger("jaxseg.runner")

__all__ = ["UNSCRIBBLED", "find", "from_annotation", "read", "for_image", "shrink", "to_draw"]


def find(folder: str | os.PathLike, image_id: str) -> Path | None:
    """The scribble file of `image_id` in `folder`: `<id>.png`, else `<id>_scribble.png` (the
    authors' name for `<id>.jpg`'s scribbles); None when there is neither."""
    for name in (f"{image_id}.png", f"{image_id}_scribble.png"):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """The scribble map `[h, w]` uint8 of a PNG for an image of `shape` (h, w).

    A map without any scribbled pixel is returned as it is (the caller runs unguided).

    Raises:
      ValueError, naming the file: unreadable; not single-channel 8-bit (RGB, grey+alpha,
        16-bit, 1-bit: mode other than L and P); a palette image whose indices are not
        labels (no pixel at index 255, the unscribbled value); another size than the image;
        no unscribbled pixel at all (not a scribble map).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"scribble file {path}: cannot read it: {error}") from error
    if image.mode not in ("L", "P"):
        raise ValueError(
            f"scribble file {path}: an RGB or non-label image (mode {image.mode}): save a "
            f"single-channel 8-bit PNG of class ids, {UNSCRIBBLED} = unscribbled"
        )
    values = np.asarray(image)  # a palette image: its indices
    if values.shape != tuple(shape):
        raise ValueError(
            f"scribble file {path}: {values.shape[0]}x{values.shape[1]} pixels, its image is "
            f"{shape[0]}x{shape[1]}"
        )
    if not np.any(values == UNSCRIBBLED):
        what = "a palette image whose indices are not labels"
        raise ValueError(
            f"scribble file {path}: {what if image.mode == 'P' else 'not a scribble map'}: "
            f"no pixel is {UNSCRIBBLED} (unscribbled)"
        )
    return values.astype(np.uint8)


def shrink(scribbles: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """A scribble map `[..., h, w]` shrunk to `[..., hs, ws]` = `shape`: pixel (y, x) falls in
    small pixel (y * hs // h, x * ws // w) (the blocks of nearest upscaling back), which takes
    the smallest class scribbled in its block, so a one-pixel stroke survives any scale.
    Pure: jit and vmap it."""
    h, w = scribbles.shape[-2:]
    hs, ws = shape
    rows, cols = (jnp.arange(h) * hs) // h, (jnp.arange(w) * ws) // w

    def one(scribbles):
        small = jnp.full((hs, ws), UNSCRIBBLED, jnp.int32)
        return small.at[rows[:, None], cols[None, :]].min(scribbles.astype(jnp.int32))

    flat = scribbles.reshape(-1, h, w)
    return jax.vmap(one)(flat).reshape(*scribbles.shape[:-2], hs, ws)


def from_annotation(
    segmentation,
    *,
    key: jax.Array,
    max_classes: int = 32,
    min_size: int = 500,
    margin: int = 3,
    strokes: int = 2,
    stroke_length: int = 40,
) -> np.ndarray:
    """Scribbles `[h, w]` uint8 made from a human segmentation `[h, w]` (any integer ids).

    The `max_classes` largest segments of at least `min_size` pixels get classes 0, 1, ... in
    order of size (ties: lower id first); the others stay unscribbled. Each such segment is
    eroded by a disk of radius `margin` (less if nothing would be left) and thinned to a
    skeleton (`boundary.thin`, MATLAB's `bwmorph(·, 'thin', inf)`);
    `strokes` times a skeleton pixel is drawn and the skeleton within `stroke_length / 2`
    of it becomes a stroke: thin lines inside the segment, away from its border. `key` makes
    the choice deterministic.
    """
    seg = np.asarray(segmentation)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segmentation must be an integer [h, w] map, got {seg.dtype} {seg.shape}")
    if not 1 <= max_classes <= UNSCRIBBLED or min_size < 1 or margin < 0 or strokes < 1:
        raise ValueError(
            f"need 1 <= max_classes <= {UNSCRIBBLED}, min_size >= 1, margin >= 0, strokes >= 1; "
            f"got {max_classes}, {min_size}, {margin}, {strokes}"
        )
    ids, sizes = np.unique(seg, return_counts=True)
    order = np.lexsort((ids, -sizes))
    chosen = [ids[i] for i in order if sizes[i] >= min_size][:max_classes]
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    out = np.full(seg.shape, UNSCRIBBLED, np.uint8)
    yy, xx = np.indices(seg.shape)
    for c, segment_id in enumerate(chosen):
        region = seg == segment_id
        for radius in range(margin, -1, -1):
            disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
            inner = ndimage.binary_erosion(region, disk) if radius else region
            if inner.any():
                break
        skeleton = thin(inner)
        points = np.argwhere(skeleton)
        for y, x in points[rng.choice(len(points), min(strokes, len(points)), replace=False)]:
            near = (yy - y) ** 2 + (xx - x) ** 2 <= (stroke_length / 2) ** 2
            out[skeleton & near] = c
    return out


def for_image(folder: str | os.PathLike, sample) -> np.ndarray | None:
    """The checked scribble map [h, w] of `sample` (a `data.Sample`) in `folder`, or None (run
    unguided) when there is no file or its file has no scribbled pixel (logged as a warning
    naming the file). A bad file raises `read`'s `ValueError`."""
    path = find(folder, sample.image_id)
    if path is None:
        return None
    scribbles = read(path, sample.image.shape[:2])
    if scribbles.min() == UNSCRIBBLED:
        _log.warning(
            "scribble file %s has no scribbled pixel: %s runs unguided", path, sample.image_id
        )
        return None
    return scribbles


def to_draw(folder: str | os.PathLike | None, sample) -> np.ndarray | None:
    """The scribbles drawn over a (re)drawn picture of `sample`: `for_image`'s map, or None
    for no folder or a bad file."""
    if folder is None:
        return None
    try:
        return for_image(folder, sample)
    except ValueError:
        return None
