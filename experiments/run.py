"""Runs the paper's experiments: segment a dataset, score it, write the report.

  python experiments/run.py --method=gmm_kmeans                # the five sample images
  python experiments/run.py --method=all --cnn_max_iter=100    # every method and variant
  python experiments/run.py --method=kmeans,gmm,gmm_kmeans --dataset=bsds300 \
      --data_dir=../shared/data --output_dir=runs/bsds300

Writes label maps, renderings, panels, metrics.csv, timings.csv, summary.json, report.md and
summary.png under --output_dir (default runs/<dataset>-<method>). Rerunning the same command
resumes: finished images are skipped. See `jaxseg.runner`.
"""

import re
import sys
from pathlib import Path

import jax
from absl import app, flags

from jaxseg import distributed, pipeline, runner

_ALIASES = {"all": pipeline.METHODS + pipeline.VARIANTS, "paper": pipeline.METHODS}

_METHOD = flags.DEFINE_list(
    "method",
    ["gmm_kmeans"],
    f"Comma list from {', '.join(pipeline.METHODS + pipeline.VARIANTS)}; 'paper' is the "
    "paper's five methods, 'all' adds the variants (cnn_ce, kmeans_xy, gmm_xy).",
)
_DATASET = flags.DEFINE_string(
    "dataset", "samples", "samples (embedded), bsds300, bsds500, or a folder of images."
)
_SPLIT = flags.DEFINE_string("split", None, "The dataset's split (default: all of it).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder holding BSDS500/ (default: $JAXSEG_DATA_DIR)."
)
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", None, "Only the first N images of the sorted dataset."
)
_K = flags.DEFINE_list(
    "k", ["elbow"], "K for K-means/GMM: 'elbow', an integer, or a comma list (ODS/OIS over it)."
)
_ELBOW_K_MIN = flags.DEFINE_integer("elbow_k_min", 2, "Smallest K the elbow method tries.")
_ELBOW_K_MAX = flags.DEFINE_integer("elbow_k_max", 10, "Largest K the elbow method tries.")
_FEATURES = flags.DEFINE_enum("features", "rgb", ["rgb", "lab"], "Pixel colour features.")
_XY_WEIGHT = flags.DEFINE_float(
    "xy_weight", 0.0, "Weight of (row, col) pixel features for K-means/GMM."
)
_CNN_PRESET = flags.DEFINE_string("cnn_preset", "paper", "CNN preset: paper or kim2020.")
_CNN_MAX_ITER = flags.DEFINE_integer("cnn_max_iter", None, "CNN iterations (default: preset).")
_CNN_MU = flags.DEFINE_float("cnn_mu", None, "CNN continuity weight mu (default: preset).")
_CNN_MODE = flags.DEFINE_string(
    "cnn_mode", "per-image", "per-image (the paper) or dataset (one network for all images)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Images per compiled batch.")
_PAD_MULTIPLE = flags.DEFINE_integer(
    "pad_multiple", 1, "Pad image sides to a multiple of this, to batch different sizes."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the per-image keys.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache_dir",
    "~/.cache/jaxseg/xla",
    "JAX persistent compilation cache: reruns skip compiling ('' disables it).",
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Run directory (default: runs/<dataset>-<method>)."
)
# Multi-process runs (jaxseg.distributed): every process runs the same command.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for a multi-process run (default: $JAXSEG_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in a multi-process run (default: $JAXSEG_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index, 0 to num_processes-1 (default: $JAXSEG_PROCESS_ID)."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Start jax.distributed from the cluster's environment (Cloud TPU pod, SLURM, Open MPI).",
)


def _methods(names: list[str]) -> tuple[str, ...]:
    methods: list[str] = []
    for name in names:
        for method in _ALIASES.get(name, (name,)):
            if method not in methods:
                methods.append(method)
    return tuple(methods)


def _k(values: list[str]) -> tuple:
    out = []
    for value in values:
        if value == "elbow":
            out.append(value)
        elif re.fullmatch(r"[+-]?\d+", value):
            out.append(int(value))
        else:
            raise ValueError(f"--k: {value!r} is neither an integer nor 'elbow'")
    return tuple(out)


def _config() -> tuple[runner.RunConfig, Path]:
    """The run's settings and directory, validated (raises ValueError / FileNotFoundError)."""
    config = runner.RunConfig(
        methods=_methods(_METHOD.value),
        dataset=_DATASET.value,
        split=_SPLIT.value,
        data_dir=_DATA_DIR.value,
        num_images=_NUM_IMAGES.value,
        k=_k(_K.value),
        elbow_k_min=_ELBOW_K_MIN.value,
        elbow_k_max=_ELBOW_K_MAX.value,
        features=_FEATURES.value,
        xy_weight=_XY_WEIGHT.value,
        cnn_preset=_CNN_PRESET.value,
        cnn_max_iter=_CNN_MAX_ITER.value,
        cnn_mu=_CNN_MU.value,
        cnn_mode=_CNN_MODE.value,
        batch_size=_BATCH_SIZE.value,
        pad_multiple=_PAD_MULTIPLE.value,
        seed=_SEED.value,
    )
    runner.open_dataset(config)  # a missing data folder or unknown split fails here
    output_dir = _OUTPUT_DIR.value
    if output_dir is None:
        name = Path(config.dataset).name or "dataset"
        output_dir = Path("runs") / f"{name}-{'+'.join(_METHOD.value)}"
    output_dir = Path(output_dir)
    conflict = runner.settings_conflict(output_dir, config)
    if conflict:
        raise ValueError(conflict)
    return config, output_dir


def main(argv):
    if len(argv) > 1:
        print(f"run.py: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    try:
        config, output_dir = _config()
        distributed.initialize(  # multi-process runs: before any other JAX work
            _COORDINATOR_ADDRESS.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            auto=_DISTRIBUTED.value,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    if _COMPILATION_CACHE.value:
        cache = Path(_COMPILATION_CACHE.value).expanduser()
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    runner.run(config, output_dir)
    return 0


if __name__ == "__main__":
    app.run(main)
