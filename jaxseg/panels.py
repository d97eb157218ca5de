"""The pictures of a run directory, drawn from what it holds (`jaxseg.rundir`).

Each (image, unit) has one picture per `visualize.PICTURES` kind (`<kind>/<unit>/<id>.png`,
derived from its label map); each image has a panel (`panels/<id>.png`): the image, then each
finished unit's borders over it, then the first annotation's, captioned with their segment
counts; a hierarchy appears at three cuts. Drawing only reads label maps, records and ucm2
files, so a resumed run redraws whatever is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxseg import data, hierarchy, visualize
from jaxseg.cnn import UNSCRIBBLED
from jaxseg.rundir import RunDir, read_labels, read_ucm

__all__ = ["draw", "missing", "write_pictures"]


def write_pictures(
    run_dir: RunDir,
    unit: str,
    sample: data.Sample,
    labels: np.ndarray,
    kinds: Sequence[str] = visualize.PICTURES,
    *,
    scribbles: np.ndarray | None = None,
) -> None:
    """Writes the `kinds` pictures of `sample`'s label map [h, w] for `unit`, with the
    `scribbles` [h, w] of a guided run drawn over them."""
    drawn = visualize.pictures(sample.image, labels, scribbles=scribbles)
    for kind in kinds:
        run_dir.write_image(run_dir.picture_path(kind, unit, sample.image_id), drawn[kind])


def missing(run_dir: RunDir, units: Sequence[str], image_id: str) -> bool:
    """Whether the image's panel or a picture of one of `units` is missing."""
    return not run_dir.panel_path(image_id).exists() or any(
        not run_dir.picture_path(kind, unit, image_id).exists()
        for unit in units
        for kind in visualize.PICTURES
    )


def draw(
    run_dir: RunDir,
    units: Sequence[str],
    sample: data.Sample,
    *,
    only_missing: bool,
    scribbles: np.ndarray | None = None,
) -> None:
    """Draws the panel of `sample` (unless `only_missing` and it exists) and the missing
    pictures of its finished units, in the order of `units`. A hierarchy's panel tiles are its
    cuts at half its labels' threshold t, t, and halfway from t to 1. A guided run's
    `scribbles` [h, w] are drawn over the first tile and the pictures."""
    image_id = sample.image_id
    tiles = [("image", sample.image)]
    if scribbles is not None:
        n = len(np.unique(scribbles[scribbles != UNSCRIBBLED]))
        tiles = [
            (
                f"image, scribbles of {n} classes",
                visualize.strokes(sample.image, scribbles, width=2),
            )
        ]
    for unit in units:
        path = run_dir.labels_path(unit, image_id)
        if not run_dir.record_path(unit, image_id).exists() or not path.exists():
            continue
        labels = read_labels(path)
        kinds = [
            kind
            for kind in visualize.PICTURES
            if not run_dir.picture_path(kind, unit, image_id).exists()
        ]
        if kinds:
            write_pictures(run_dir, unit, sample, labels, kinds, scribbles=scribbles)
        record = run_dir.read_record(unit, image_id)
        ucm_path = run_dir.ucm_path(unit, image_id)
        if record is None or record.threshold is None or not ucm_path.exists():
            tiles.append(_tile(sample.image, labels, unit))
            continue
        ucm2, t = read_ucm(ucm_path), record.threshold
        for level, name in ((t / 2, "fine"), (t, "labels"), ((1 + t) / 2, "coarse")):
            cut = labels if level == t else hierarchy.labels_at(ucm2, level)
            tiles.append(_tile(sample.image, cut, f"{unit} {name} (t={level:.2f})"))
    if sample.ground_truth:
        caption = f"annotation 1 of {len(sample.ground_truth)}"
        tiles.append(_tile(sample.image, sample.ground_truth[0], caption))
    if len(tiles) > 1 and not (only_missing and run_dir.panel_path(image_id).exists()):
        panel = visualize.grid(tiles, title=f"image {image_id}: segment borders")
        run_dir.write_image(run_dir.panel_path(image_id), panel)


def _tile(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[str, np.ndarray]:
    # Borders 2 px wide: panels shrink images to 240 px, which would blur 1 px lines away.
    n = len(np.unique(labels))
    return f"{name}: {n} labels", visualize.overlay(image, labels, width=2)
