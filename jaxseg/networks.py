"""The dataset-mode CNNs of a run (`cnn_mode="dataset"`): one network per CNN setting.

A network is loaded from `RunConfig.cnn_params`, or from the run directory's
`networks/cnn-<hash>.msgpack` when a rerun finds it; otherwise it is trained on every image of
the dataset (`cnn.train_dataset`, one bucket shape) and saved there. Training logs its
progress with the time left (`progress.LoopProgress`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxseg import cnn, data, pipeline, stages
from jaxseg import config as config_lib
from jaxseg.progress import LoopProgress
from jaxseg.rundir import RunDir

__all__ = ["load_or_train"]

_log = logging.getLogger("jaxseg.runner")


def load_or_train(
    dataset: data.Dataset,
    configs: Iterable[cnn.Config],
    config: config_lib.RunConfig,
    run_dir: RunDir,
) -> dict[cnn.Config, Any]:
    """The trained parameters of each CNN setting in `configs` (see the module doc).

    Raises ValueError for a network file that does not fit its setting, or for a dataset
    whose images do not share one shape after bucketing (set `pad_multiple`).
    """
    params: dict[cnn.Config, Any] = {}
    pending = []
    for cnn_config in configs:
        path = config.cnn_params or run_dir.network_path(cnn_config)
        if Path(path).is_file():
            _log.info("dataset-mode CNN: loading %s", path)
            try:
                params[cnn_config] = cnn.load_params(path, cnn_config)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from error
        else:
            pending.append(cnn_config)
    if not pending:
        return params
    prepared = [
        pipeline.prepare(s.image, pad_multiple=config.pad_multiple, colours=False) for s in dataset
    ]
    shapes = sorted({p.image.shape for p in prepared})
    if len(shapes) != 1:
        raise ValueError(
            f"cnn_mode=dataset trains on images of one shape (after turning portrait images "
            f"to landscape), got {shapes}: set pad_multiple to pad them to one shape"
        )
    images = np.stack([p.image for p in prepared]).astype(np.float32) / 255
    mask = np.stack([p.mask for p in prepared])
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), np.uint32(2**32 - 1))
    batch_size = min(config.batch_size, len(prepared))
    for cnn_config in pending:
        _log.info("training the dataset-mode CNN on %d images", len(prepared))
        # cnn.train_dataset: max_iter updates on each of the ceil(n / batch_size) batches.
        updates = -(-len(prepared) // batch_size) * cnn_config.max_iter
        progress = LoopProgress(updates, may_stop=False)
        progress.start(
            f"dataset-mode CNN, {len(prepared)} images in batches of {batch_size}",
            compiling=True,
        )
        trained = cnn.train_dataset(
            images,
            key,
            cnn_config,
            batch_size=batch_size,
            mask=mask,
            progress=progress,
            progress_every=stages.PROGRESS_EVERY,
        )
        params[cnn_config] = trained
        path = run_dir.network_path(cnn_config)
        run_dir.write(path, lambda tmp, trained=trained: cnn.save_params(tmp, trained))
        _log.info("saved the trained network as %s (reuse: --cnn_params=%s)", path, path)
    return params
