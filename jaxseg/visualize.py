"""Pictures of segmentations that a person can read: distinct colours, boundary overlays, grids.

Host-side numpy and Pillow, uint8 RGB out:

  mean_colour(image, labels)     each segment painted in its mean colour (the paper's figures)
  label_colours(labels)          each label its own colour (not its mean colour, so two
                                 neighbouring segments of similar colour stay apart)
  boundary_mask(labels)          pixels on a segment border (4-neighbourhood)
  overlay(image, labels)         segment borders drawn over the image
  strokes(image, scribbles)      scribbled pixels painted in their class's colour
  grid(tiles, columns=...)       captioned thumbnails in rows: panels and contact sheets
  pictures(image, labels)        all three renderings by folder name (`PICTURES`), as the runner
                                 writes them (the overlay with the run's scribbles drawn)

Label maps are 0-based integers `[h, w]` as jaxseg returns them (or official 1-based labels;
only equality matters). Bad input raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BOUNDARY_COLOUR",
    "PICTURES",
    "boundary_mask",
    "grid",
    "label_colours",
    "mean_colour",
    "overlay",
    "palette",
    "pictures",
    "strokes",
]

# Pure red-magenta: rare in natural images, visible on both dark and bright regions.
BOUNDARY_COLOUR = (255, 0, 200)

# Scribble maps' value of a pixel without a scribble (`jaxseg.cnn.UNSCRIBBLED`; no JAX here).
_UNSCRIBBLED = 255

# The runner's picture folders, one rendering each (labels/ holds the integer maps themselves).
PICTURES = ("color", "segments", "overlays")

_GOLDEN = 0.618033988749895  # hue step: consecutive labels land far apart on the colour wheel


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty [h, w] map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


def palette(n: int) -> np.ndarray:
    """`[n, 3]` uint8 colours: hues by golden-ratio steps, alternating saturation and value, so
    labels i and i+1 (and most small differences) get clearly different colours."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    i = np.arange(n)
    hue = (i * _GOLDEN) % 1.0
    sat = np.where(i % 2 == 0, 0.85, 0.55)
    val = np.where(i % 3 == 0, 0.95, np.where(i % 3 == 1, 0.75, 0.55))
    # HSV -> RGB, vectorised.
    h6 = hue * 6
    sector = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    table = np.stack(
        [
            np.stack([val, t, p], -1),
            np.stack([q, val, p], -1),
            np.stack([p, val, t], -1),
            np.stack([p, q, val], -1),
            np.stack([t, p, val], -1),
            np.stack([val, p, q], -1),
        ]
    )
    rgb = table[sector, i]
    return np.round(rgb * 255).astype(np.uint8)


def mean_colour(image, labels) -> np.ndarray:
    """Every segment of `labels` painted in its mean colour: uint8 `[h, w, 3]` (image uint8)."""
    labels = _check_labels(labels)
    image = np.asarray(image)
    if image.shape != (*labels.shape, 3):
        raise ValueError(
            f"image must be [h, w, 3] of labels' size {labels.shape}, got {image.shape}"
        )
    _, flat = np.unique(labels, return_inverse=True)
    flat = flat.reshape(-1)
    counts = np.bincount(flat)
    sums = np.stack([np.bincount(flat, image.reshape(-1, 3)[:, c]) for c in range(3)], axis=1)
    return np.round(sums / counts[:, None])[flat].astype(np.uint8).reshape(image.shape)


def pictures(image, labels, *, scribbles=None) -> dict[str, np.ndarray]:
    """`{folder: uint8 [h, w, 3]}` for every folder of `PICTURES`: mean colours, distinct
    colours, and borders over the image (with `scribbles`' strokes drawn over them)."""
    borders = overlay(image, labels)
    return {
        "color": mean_colour(image, labels),
        "segments": label_colours(labels),
        "overlays": borders if scribbles is None else strokes(borders, scribbles),
    }


def label_colours(labels) -> np.ndarray:
    """`[h, w, 3]` uint8: label l painted `palette(...)[l]` (labels renumbered by value first,
    so sparse label values still get the well-separated first colours)."""
    labels = _check_labels(labels)
    values, inverse = np.unique(labels, return_inverse=True)
    return palette(len(values))[inverse.reshape(labels.shape)]


def boundary_mask(labels) -> np.ndarray:
    """`[h, w]` bool: True where the right or lower neighbour has another label (one-pixel
    borders, on the upper-left side of each label change)."""
    labels = _check_labels(labels)
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def overlay(
    image, labels, *, colour: Sequence[int] = BOUNDARY_COLOUR, width: int = 1
) -> np.ndarray:
    """The image `[h, w, 3]` (uint8, or float in [0, 1]) with segment borders of `labels` drawn
    in `colour`, `width` pixels thick (the border dilated by width - 1). Returns uint8."""
    labels = _check_labels(labels)
    image = np.asarray(image)
    if image.shape != (*labels.shape, 3):
        raise ValueError(
            f"image must be [h, w, 3] of labels' size {labels.shape}, got {image.shape}"
        )
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating) or not np.all((image >= 0) & (image <= 1)):
            raise ValueError("image must be uint8, or float with values in [0, 1]")
        image = np.round(image * 255).astype(np.uint8)
    edge = boundary_mask(labels)
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out = image.copy()
    out[edge] = np.asarray(colour, np.uint8)
    return out


# (source, destination) slices that move a map by one pixel down, up, right, left.
_NEIGHBOURS = (
    (np.s_[:-1, :], np.s_[1:, :]),
    (np.s_[1:, :], np.s_[:-1, :]),
    (np.s_[:, :-1], np.s_[:, 1:]),
    (np.s_[:, 1:], np.s_[:, :-1]),
)


def strokes(image, scribbles, *, width: int = 1) -> np.ndarray:
    """The image `[h, w, 3]` uint8 with the scribbled pixels of `scribbles` `[h, w]` (class c,
    255 = none) painted `palette(c + 1)[c]`, `width` pixels thick: class c has one colour in
    every picture. Returns uint8."""
    scribbles = _check_labels(scribbles)
    image = np.asarray(image)
    if image.shape != (*scribbles.shape, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 [h, w, 3] of the scribbles' size {scribbles.shape}, got "
            f"{image.dtype} {image.shape}"
        )
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    marked = scribbles != _UNSCRIBBLED
    out = image.copy()
    if not marked.any():
        return out
    classes = np.where(marked, scribbles, 0)
    for _ in range(width - 1):  # grow each stroke by one pixel (a higher class wins overlaps)
        for src, dst in _NEIGHBOURS:
            take = marked[src] & (~marked[dst] | (classes[src] > classes[dst]))
            classes[dst] = np.where(take, classes[src], classes[dst])
            marked[dst] |= take
    out[marked] = palette(int(classes.max()) + 1)[classes[marked]]
    return out


def grid(
    tiles: Sequence[tuple[str, np.ndarray]],
    *,
    columns: int | None = None,
    size: int = 240,
    title: str | None = None,
) -> Image.Image:
    """Captioned thumbnails in rows of `columns` (None: one row), each scaled to at most `size`
    pixels a side, with an optional title line above: the runner's panels and contact sheets.

    Args:
      tiles: (caption, image) pairs; an image is uint8 `[h, w, 3]` or `[h, w]`.
    """
    if not tiles:
        raise ValueError("grid needs at least one tile")
    columns = len(tiles) if columns is None else columns
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    scaled = []
    for caption, array in tiles:
        tile = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
        tile.thumbnail((size, size))
        scaled.append((caption, tile))
    caption_h, gap = 16, 4
    slot_w = [
        max(max(t.width, int(measure.textlength(c, font=font)) + 4) for c, t in scaled[j::columns])
        for j in range(min(columns, len(scaled)))
    ]
    rows = [scaled[i : i + columns] for i in range(0, len(scaled), columns)]
    row_h = [caption_h + max(t.height for _, t in row) for row in rows]
    title_h = caption_h + 4 if title else 0
    width = sum(slot_w) + gap * (len(slot_w) - 1)
    if title:
        width = max(width, int(measure.textlength(title, font=font)) + 8)
    out = Image.new("RGB", (width, title_h + sum(row_h) + gap * (len(rows) - 1)), "white")
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    y = title_h
    for row, height in zip(rows, row_h, strict=True):
        x = 0
        for (caption, tile), slot in zip(row, slot_w, strict=False):
            draw.text((x + 2, y + 2), caption, fill="black", font=font)
            out.paste(tile, (x, y + caption_h))
            x += slot + gap
        y += height + gap
    return out
