"""jaxseg: unsupervised image segmentation in JAX/Flax.

K-means and Gaussian-mixture EM as jit-compiled, vmappable solvers, the differentiable
feature clustering CNN of Kim, Kanezaki & Tanaka (2020), their ensembles, SLIC superpixels,
and the Berkeley Segmentation benchmark (region and boundary halves).

Submodules load on first use (PEP 562), so `python -m jaxseg.report` and the command-line
entry points start without importing JAX twice or warning.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "boundary",
    "cli",
    "cnn",
    "config",
    "data",
    "dfc",
    "distributed",
    "download",
    "edges",
    "evaluate",
    "features",
    "gmm",
    "hierarchy",
    "kmeans",
    "metrics",
    "networks",
    "panels",
    "pipeline",
    "progress",
    "report",
    "rundir",
    "runner",
    "scoring",
    "scribbles",
    "slic",
    "stages",
    "summary",
    "visualize",
)
_FUNCTIONS = ("segment", "segment_batch", "segment_images")  # from jaxseg.pipeline

__all__ = [*_SUBMODULES, *_FUNCTIONS]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxseg.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module("jaxseg.pipeline"), name)
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
