"""Makes scribble files from one human annotation per image, for `jaxseg-run --scribbles`.

  python experiments/make_scribbles.py --dataset=samples --out_dir=scribbles/samples
  jaxseg-run --dataset=samples --method=cnn_refined --scribbles=scribbles/samples

For every image with ground truth: the `--max_classes` largest segments of annotation
`--annotation` (at least `--min_size` pixels) get classes 0, 1, ... by size, each a few thin
strokes along the skeleton of the segment eroded by `--margin` (`jaxseg.scribbles
.from_annotation`); `<id>.png` is single-channel 8-bit, 255 where unscribbled. Deterministic:
image i's strokes come from `fold_in(key(seed), i)`.
"""

from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from jaxseg import data, scribbles

_DATASET = flags.DEFINE_string("dataset", "samples", "samples, bsds300, bsds500 (with --split).")
_SPLIT = flags.DEFINE_string("split", None, "The dataset's split (train/val: ground truth).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding BSDS500/.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where <id>.png go.", required=True)
_ANNOTATION = flags.DEFINE_integer("annotation", 0, "Which human annotation (0-based).")
_MAX_CLASSES = flags.DEFINE_integer(
    "max_classes", 32, "Classes 0..max_classes-1: at most the CNN's channels (cnn_refined: 64)."
)
_MIN_SIZE = flags.DEFINE_integer("min_size", 500, "Smallest segment (pixels) that is scribbled.")
_MARGIN = flags.DEFINE_integer("margin", 3, "Strokes keep this many pixels from the border.")
_STROKES = flags.DEFINE_integer("strokes", 2, "Strokes per segment.")
_LENGTH = flags.DEFINE_integer("stroke_length", 40, "Extent of a stroke (pixels).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the stroke positions.")


def main(argv):
    del argv
    dataset = data.load_dataset(_DATASET.value, split=_SPLIT.value, data_dir=_DATA_DIR.value)
    out = Path(_OUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    root = jax.random.key(_SEED.value)
    written = 0
    for i, sample in enumerate(dataset):
        if len(sample.ground_truth) <= _ANNOTATION.value:
            print(f"{sample.image_id}: no annotation {_ANNOTATION.value}, skipped")
            continue
        strokes = scribbles.from_annotation(
            sample.ground_truth[_ANNOTATION.value],
            key=jax.random.fold_in(root, i),
            max_classes=_MAX_CLASSES.value,
            min_size=_MIN_SIZE.value,
            margin=_MARGIN.value,
            strokes=_STROKES.value,
            stroke_length=_LENGTH.value,
        )
        Image.fromarray(strokes).save(out / f"{sample.image_id}.png")
        marked = strokes != scribbles.UNSCRIBBLED
        n_classes = len(np.unique(strokes[marked]))
        print(f"{sample.image_id}: {n_classes} classes, {marked.mean():.2%} of pixels scribbled")
        written += 1
    print(f"wrote {written} scribble files to {out}")


if __name__ == "__main__":
    app.run(main)
