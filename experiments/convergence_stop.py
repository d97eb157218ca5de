"""What the convergence stop saves: `cnn_refined` with and without it on the same images.

  python experiments/convergence_stop.py --data_dir=../shared/data --split=val --every=10

Runs `cnn_refined` (its default settings, `pipeline.Options()`; `--max_iter` overrides its
iteration cap) on every `--every`-th image of a BSDS500 split, once as is and once with
`stop_change=0` (the convergence stop off: the fit runs to `max_iter` unless `min_labels`
fires), with the runner's keys (`--seed`). Prints, per image and pooled, the CNN iterations,
seconds, covering, PRI, VOI and Kim et al.'s mIoU (all), and writes them to `--out` (JSON).
"""

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from jaxseg import cnn, data, metrics, pipeline, stages

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding BSDS500/.")
_SPLIT = flags.DEFINE_enum("split", "val", ["train", "val"], "BSDS500 split.")
_EVERY = flags.DEFINE_integer("every", 10, "Take every N-th image of the split (from the 1st).")
_NUM = flags.DEFINE_integer("num_images", 10, "Images taken.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the per-image keys (as the runner's --seed).")
_MAX_ITER = flags.DEFINE_integer("max_iter", 0, "max_iter of both runs (0: cnn_refined's).")
_OUT = flags.DEFINE_string("out", "convergence_stop.json", "Where the results go (JSON).")


def _fit(options: pipeline.Options, image: np.ndarray, key: jax.Array):
    """(labels [h, w], CNN iterations, stop reason, seconds) of `cnn_refined` on one image."""
    prepared = pipeline.prepare(image, colours=False)
    stage = stages.RefinedCNN(options)
    start = time.perf_counter()
    labels, fit = _jit_fit(stage, prepared.image[None], prepared.mask[None], key[None])
    labels = np.asarray(labels.labels[0])
    seconds = time.perf_counter() - start
    reason = cnn.STOP_REASONS[int(fit.stop_reason[0])]
    return prepared.restore(labels), int(fit.n_iter[0]), reason, seconds


@jax.jit(static_argnums=0)
def _jit_fit(stage, images, mask, keys):
    return stage.fit(images, mask, pipeline.stage_keys(keys, 0))


def main(argv):
    del argv
    dataset = data.load_dataset("bsds500", split=_SPLIT.value, data_dir=_DATA_DIR.value)
    indices = list(range(0, len(dataset), _EVERY.value))[: _NUM.value]
    stop = pipeline.Options()
    if _MAX_ITER.value:
        stop = dataclasses.replace(
            stop, refined=dataclasses.replace(stop.refined, max_iter=_MAX_ITER.value)
        )
    runs = {
        "stop": stop,
        "no_stop": dataclasses.replace(
            stop, refined=dataclasses.replace(stop.refined, stop_change=0.0)
        ),
    }
    root = jax.random.PRNGKey(_SEED.value)
    rows = []
    for index in indices:
        sample = dataset[index]
        key = jax.random.fold_in(root, index)  # the runner's key of dataset image `index`
        for name, options in runs.items():
            labels, n_iter, reason, seconds = _fit(options, sample.image, key)
            scores = metrics.image_metrics(labels, sample.ground_truth)
            rows.append(
                {
                    "image_id": sample.image_id,
                    "run": name,
                    "n_iter": n_iter,
                    "stop_reason": reason,
                    "seconds": seconds,
                    **scores,
                }
            )
            kim = scores["kim_all_sum"] / scores["kim_all_count"]
            print(
                f"{sample.image_id:>8} {name:<8} {n_iter:>4} it ({reason}) {seconds:6.1f} s  "
                f"covering {scores['covering']:.3f}  kim {kim:.3f}",
                flush=True,
            )
    pooled = {}
    for name in runs:
        mine = [r for r in rows if r["run"] == name]
        pooled[name] = {
            "images": len(mine),
            "mean_n_iter": float(np.mean([r["n_iter"] for r in mine])),
            # the first image's time includes compiling
            "mean_seconds_after_first": float(np.mean([r["seconds"] for r in mine[1:]] or [0])),
            "covering": float(np.mean([r["covering"] for r in mine])),
            "pri": float(np.mean([r["pri"] for r in mine])),
            "voi": float(np.mean([r["voi"] for r in mine])),
            "kim_all": sum(r["kim_all_sum"] for r in mine) / sum(r["kim_all_count"] for r in mine),
            "labels_per_image": float(np.mean([r["n_segments"] for r in mine])),
        }
    print(f"\n{'run':<8}{'iters':>8}{'s/img':>8}{'covering':>10}{'PRI':>7}{'VOI':>7}{'Kim':>7}")
    for name, p in pooled.items():
        print(
            f"{name:<8}{p['mean_n_iter']:>8.1f}{p['mean_seconds_after_first']:>8.1f}"
            f"{p['covering']:>10.3f}{p['pri']:>7.3f}{p['voi']:>7.3f}{p['kim_all']:>7.3f}"
        )
    out = {
        "split": _SPLIT.value,
        "indices": indices,
        "settings": {name: repr(options) for name, options in runs.items()},
        "pooled": pooled,
        "images": rows,
    }
    Path(_OUT.value).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
