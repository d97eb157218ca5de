"""jaxseg: unsupervised image segmentation in JAX/Flax.

K-means and Gaussian-mixture EM as jit-compiled, vmappable solvers, the differentiable
feature clustering CNN of Kim, Kanezaki & Tanaka (2020), their ensembles, and the
Berkeley Segmentation benchmark's region metrics.
"""

import importlib

from jaxseg import (
    boundary,
    cnn,
    data,
    distributed,
    features,
    gmm,
    kmeans,
    metrics,
    pipeline,
    report,
    runner,
)
from jaxseg.pipeline import segment, segment_batch, segment_images

__version__ = "0.1.0"

__all__ = [
    "boundary",
    "cnn",
    "data",
    "distributed",
    "evaluate",
    "features",
    "gmm",
    "kmeans",
    "metrics",
    "pipeline",
    "report",
    "runner",
    "segment",
    "segment_batch",
    "segment_images",
]


def __getattr__(name: str):
    # `evaluate` is imported on first use: importing it here would make
    # `python -m jaxseg.evaluate` warn that the module was imported before it ran.
    if name == "evaluate":
        return importlib.import_module("jaxseg.evaluate")
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")
