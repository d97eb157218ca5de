"""jaxseg: unsupervised image segmentation in JAX/Flax.

K-means and Gaussian-mixture EM as jit-compiled, vmappable solvers, the differentiable
feature clustering CNN of Kim, Kanezaki & Tanaka (2020), their ensembles, and the
Berkeley Segmentation benchmark's region metrics.
"""

from jaxseg import (
    cnn,
    data,
    distributed,
    evaluate,
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
