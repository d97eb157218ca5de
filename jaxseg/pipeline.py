"""Every method of the paper as a plan of stages: `segment` one image, `segment_batch` many.

Methods (`METHODS`, the paper's five, and `VARIANTS`, the ablations of its research question 2):

  kmeans       K-means on pixel features (paper 5.1).
  gmm          Gaussian mixture fitted by EM, initialised by K-means, MAP labels (paper 5.3).
  cnn          the differentiable feature clustering CNN of Kim, Kanezaki & Tanaka (paper 5.2).
  cnn_kmeans   ensemble: the CNN, then K-means on its mean-colour image (see below).
  gmm_kmeans   ensemble: the GMM, then K-means on its mean-colour image.
  cnn_ce       the CNN with the similarity (cross-entropy) loss only: mu = 0 (paper Figure 1).
  kmeans_xy, gmm_xy   K-means / GMM with each pixel's (row, col), scaled to [0, 1], appended to
               its colour at weight `XY_WEIGHT` (does spatial position help the clusterings?).
  cnn_refined  jaxseg's recommended CNN: SLIC superpixels refine the CNN's targets (Kanezaki
               2018), DynaSeg's dynamic continuity weight, a convergence stop (`RefinedCNN`);
               then, on host, its labels split along the image's own hierarchy (`Split`: its
               regions at `Options.split_threshold`).
  cnn_refined_kmeans   cnn_refined's CNN, then K-means on its mean-colour image (as the
               ensembles; no split).

Hierarchies (`HIERARCHIES`: a second, merging stage; does it improve the first?) end in the
host stage `Hierarchize`, which turns an image (and the labels before it) into a `ucm2`:

  ucm          the whole pipeline of `hierarchy.hierarchical_segmentation` (boundary cues,
               watershed regions, greedy merging).
  kmeans_ucm, gmm_ucm, cnn_ucm, cnn_refined_ucm   the method's labels, split into
               4-connected segments, merged by the same rule (`hierarchy.hierarchy_from_labels`,
               same strength and features; cnn_refined_ucm merges its CNN's labels, unsplit).

A method resolves to a plan (`plan`): a tuple of the hashable stage specs of `jaxseg.stages`
(`Cluster`, `FitCNN`, `ApplyCNN`, `RefinedCNN`, `Recluster`), each a pure function of the batch
and the previous stage's labels, and at most one final host stage (`Hierarchize` or `Split`,
NumPy, one image at a time). `segment_batch` executes a plan of device stages; `segment`,
`segment_images` and the runner run the host stage too, the runner executing the plans stage by
stage (sharing the output of a common prefix, e.g. between `cnn` and `cnn_kmeans`). Adding a
method is one entry in `_PLANS`.

The ensembles, as we read the paper's section 7: "we first got the segmented image from the CNN,
and then used that image into a less intensive K Means approach". The first method segments the
image; every pixel is replaced by the mean RGB colour of its segment; K-means, with K by the
elbow method, clusters that mean-colour image's pixels (colour only). Pixels of one segment share
one colour, so the second stage can only merge first-stage segments, never split them, and it
runs on the segments' mean colours weighted by their sizes: the same objective.

Images travel as uint8 (or float in [0, 1]) with a mask (see `jaxseg.stages`).

Keys: stage i of a plan uses `stage_keys(keys, i)`: `split(key)[0]` for the first stage,
`split(key)[1]` for the second (later stages fold their index into it), so `cnn_kmeans`
refines exactly the labels `cnn` returns for the same key.

Host side: `segment` and `segment_images` check and convert their input (grey and RGBA images
become RGB), bucket images of any shapes (`prepare`: a portrait image is transposed to
landscape, then padded with zeros at the bottom and right up to a multiple of `pad_multiple`,
with a mask that keeps the padding out of every fit) and call `segment_batch` on each bucket.
The bucket depends only on the image's own shape, so its labels never depend on its batch.

Scribbles (Kim et al. 2020's interactive mode): `segment(..., scribbles=map)` guides the
stages that fit a CNN per image (`stages.takes_scribbles`: `FitCNN`, `RefinedCNN`); scribbled pixels
keep their class, which gets a stable label (see `segment`). Methods without one refuse them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import cnn, features
from jaxseg.stages import (
    SPLIT_OVERSEGMENTATIONS,
    ApplyCNN,
    Cluster,
    FitCNN,
    Hierarchize,
    Recluster,
    RefinedCNN,
    Segmentation,
    Split,
    Stage,
    cnn_iterations,
    device_stages,
    gives_hierarchy,
    is_host,
    log_cnn_progress,
    scribble_channels,
)

__all__ = [
    "CNN_MODES",
    "COVARIANCE_TYPES",
    "HIERARCHIES",
    "METHODS",
    "SPACES",
    "VARIANTS",
    "XY_WEIGHT",
    "Options",
    "Prepared",
    "colour_size",
    "execute",
    "plan",
    "prepare",
    "segment",
    "segment_batch",
    "segment_images",
    "stage_keys",
    "takes_k",
]

METHODS = ("kmeans", "gmm", "cnn", "cnn_kmeans", "gmm_kmeans")
VARIANTS = ("cnn_ce", "kmeans_xy", "gmm_xy", "cnn_refined", "cnn_refined_kmeans")
HIERARCHIES = ("ucm", "kmeans_ucm", "gmm_ucm", "cnn_ucm", "cnn_refined_ucm")

# Weight of the (row, col) features of the `kmeans_xy` / `gmm_xy` variants, relative to colour
# in [0, 1]: of 0.25, 0.5, 1 and 2, the best mean covering and PRI of K-means on 10 BSDS500
# train images (every 20th).
XY_WEIGHT = 0.5

SPACES = ("rgb", "lab")
COVARIANCE_TYPES = ("full", "diag", "spherical")
CNN_MODES = ("per-image", "dataset")


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of the methods (hashable: a static argument of the compiled stages).

    Field metadata gives each setting's help and choices: `jaxseg.config` turns every field
    into a command-line flag of the same name (`cnn`'s fields into `--cnn_<field>`).
    """

    space: str = dataclasses.field(
        default="rgb",
        metadata={
            "help": "Pixel colour features: rgb in [0, 1] (the paper) or CIE Lab / 100; also "
            "the ensembles' K-means stage.",
            "choices": SPACES,
        },
    )
    xy_weight: float = dataclasses.field(
        default=0.0,
        metadata={"help": "Weight of (row, col) in [0, 1] appended to colour (0: colour only)."},
    )
    k_min: int = dataclasses.field(
        default=2, metadata={"help": "Smallest K the elbow method tries."}
    )
    k_max: int = dataclasses.field(
        default=10, metadata={"help": "Largest K the elbow method tries."}
    )
    covariance_type: str = dataclasses.field(
        default="full",
        metadata={"help": "The GMM's covariance type.", "choices": COVARIANCE_TYPES},
    )
    cnn: cnn.Config = dataclasses.field(
        default_factory=cnn.Config.paper, metadata={"help": "The CNN's settings.", "group": "cnn"}
    )
    refined: cnn.Config = dataclasses.field(
        default_factory=lambda: cnn.Config.refined(),  # `cnn` is a field here
        metadata={"help": "cnn_refined's CNN settings.", "group": "cnn_refined"},
    )
    superpixel_size: int = dataclasses.field(
        default=32,
        metadata={
            "help": "cnn_refined: mean pixels per SLIC superpixel of the image scaled by "
            "refined_scale (32: ~2700 superpixels on a BSDS image at 0.75).",
            "group": "cnn_refined",
        },
    )
    # 10: on 20 train images (every 10th from the 2nd) at the fit's size and superpixel size,
    # SLIC's undersegmentation error against the annotations is lowest at 10-20 of 2.5-40
    # (0.050 / 0.049, against 0.059 at 2.5 and 0.053 at 40), boundary recall 0.99-0.997 at all
    # (throwaway script, 2026-11-27).
    compactness: float = dataclasses.field(
        default=10.0,
        metadata={
            "help": "cnn_refined: SLIC compactness (scikit-image's units).",
            "group": "cnn_refined",
        },
    )
    # 0.75 with at most 60 iterations against 0.5 with 30: the scores in `cnn.Config.refined`'s
    # docstring (BSDS500 val, README), ~3x the CPU time (24.8 against 8.1 s per image); 1 scored
    # no better on val and fragments a noisy synthetic image (README).
    refined_scale: float = dataclasses.field(
        default=0.75,
        metadata={
            "help": "cnn_refined works on the image scaled by this (labels scaled back up).",
            "group": "cnn_refined",
        },
    )
    refined_space: str = dataclasses.field(
        default="lab",
        metadata={
            "help": "cnn_refined: the colours its CNN sees, rgb in [0, 1] or CIE Lab "
            "(features.unit_lab: (L*, a*, b*) / 216 + (0, 1/2, 1/2)).",
            "choices": SPACES,
            "group": "cnn_refined",
        },
    )
    output_superpixel_size: int = dataclasses.field(
        default=0,
        metadata={
            "help": "cnn_refined: the CNN's labels, scaled back up, are refined on SLIC "
            "superpixels of this many pixels of the full-size image (0: on the fit's own "
            "superpixels, scaled up).",
            "group": "cnn_refined",
        },
    )
    full_size_output: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "cnn_refined: the final labels are the fitted CNN's argmax on the full-size "
            "image (pixel refining; voted on output_superpixel_size superpixels when that is "
            "> 0); false: its labels at the fit's size, scaled back up.",
            "group": "cnn_refined",
        },
    )
    output_scale: float = dataclasses.field(
        default=2.0,
        metadata={
            "help": "cnn_refined with full_size_output: the argmax is taken on the image "
            "scaled by this, its labels sampled back to full size (nearest).",
            "group": "cnn_refined",
        },
    )
    n_fits: int = dataclasses.field(
        default=1,
        metadata={
            "help": "cnn_refined with full_size_output: networks fitted per image, each with "
            "its own key; the labels are their softmaxes summed with the channels matched "
            "(cnn.combine_fits). n times the fitting time.",
            "group": "cnn_refined",
        },
    )
    split_threshold: float = dataclasses.field(
        default=0.75,
        metadata={
            "help": "cnn_refined: its labels are split along the regions of the image's "
            "hierarchy cut at this level (hierarchy.split_labels; 0: not split).",
            "group": "cnn_refined",
        },
    )
    split_size_scale: float = dataclasses.field(
        default=0.01,
        metadata={
            "help": "cnn_refined: size_scale of the hierarchy its labels are split along "
            "(hierarchy.hierarchical_segmentation; ucm's own: 0.04). Smaller: small regions "
            "merge later.",
            "group": "cnn_refined",
        },
    )
    split_oversegmentation: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "cnn_refined: the finest regions of the hierarchy its labels are split "
            "along (hierarchy.hierarchical_segmentation's oversegmentation; ucm's own: "
            "watershed), or auto: SLIC's unless its cut fragments the image (stages.Split).",
            "choices": SPLIT_OVERSEGMENTATIONS,
            "group": "cnn_refined",
        },
    )

    def __post_init__(self):
        for name in ("space", "refined_space"):
            if getattr(self, name) not in SPACES:
                raise ValueError(f"{name} must be 'rgb' or 'lab', got {getattr(self, name)!r}")
        if not (np.isfinite(self.xy_weight) and self.xy_weight >= 0):
            raise ValueError(f"xy_weight must be finite and >= 0, got {self.xy_weight}")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}, {self.k_max}")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        for name in ("cnn", "refined"):
            if not isinstance(getattr(self, name), cnn.Config):
                kind = type(getattr(self, name)).__name__
                raise ValueError(f"{name} must be a jaxseg.cnn.Config, got {kind}")
        if self.superpixel_size < 1:
            raise ValueError(f"superpixel_size must be >= 1, got {self.superpixel_size}")
        if not (np.isfinite(self.compactness) and self.compactness > 0):
            raise ValueError(f"compactness must be finite and > 0, got {self.compactness}")
        if not 0 < self.refined_scale <= 1:
            raise ValueError(f"refined_scale must be in (0, 1], got {self.refined_scale}")
        if self.output_superpixel_size < 0:
            raise ValueError(
                f"output_superpixel_size must be >= 0, got {self.output_superpixel_size}"
            )
        if not isinstance(self.full_size_output, bool):
            raise ValueError(f"full_size_output must be a bool, got {self.full_size_output!r}")
        if not (np.isfinite(self.output_scale) and 1 <= self.output_scale <= 4):
            raise ValueError(f"output_scale must be in [1, 4], got {self.output_scale}")
        if isinstance(self.n_fits, bool) or not (isinstance(self.n_fits, int) and self.n_fits >= 1):
            raise ValueError(f"n_fits must be an integer >= 1, got {self.n_fits!r}")
        if self.n_fits > 1 and not self.full_size_output:
            raise ValueError(
                "n_fits > 1 combines the networks' outputs, so it needs full_size_output"
            )
        if not (np.isfinite(self.split_threshold) and 0 <= self.split_threshold <= 1):
            raise ValueError(f"split_threshold must be in [0, 1], got {self.split_threshold}")
        if not (np.isfinite(self.split_size_scale) and self.split_size_scale > 0):
            raise ValueError(f"split_size_scale must be > 0, got {self.split_size_scale}")
        if self.split_oversegmentation not in SPLIT_OVERSEGMENTATIONS:
            raise ValueError(
                f"split_oversegmentation must be one of {SPLIT_OVERSEGMENTATIONS}, "
                f"got {self.split_oversegmentation!r}"
            )


def _then_kmeans(first: Stage, n_clusters, options: Options) -> tuple[Stage, ...]:
    return first, Recluster(first.bound, n_clusters, options)


def _refined(options: Options) -> tuple[Stage, ...]:
    first = RefinedCNN(options)
    if not options.split_threshold:
        return (first,)
    return first, Split(
        options.split_threshold, options.split_size_scale, options.split_oversegmentation
    )


def _cnn(config: cnn.Config, cnn_mode: str) -> Stage:
    return FitCNN(config) if cnn_mode == "per-image" else ApplyCNN(config)


def _xy(options: Options) -> Options:
    return dataclasses.replace(options, xy_weight=XY_WEIGHT)


# method -> (n_clusters, options, cnn_mode) -> plan. An ensemble's first stage takes K by the
# elbow method; n_clusters is its K-means stage's.
_PLANS = {
    "kmeans": lambda k, o, m: (Cluster("kmeans", k, o),),
    "gmm": lambda k, o, m: (Cluster("gmm", k, o),),
    "cnn": lambda k, o, m: (_cnn(o.cnn, m),),
    "cnn_kmeans": lambda k, o, m: _then_kmeans(_cnn(o.cnn, m), k, o),
    "gmm_kmeans": lambda k, o, m: _then_kmeans(Cluster("gmm", "elbow", o), k, o),
    "cnn_ce": lambda k, o, m: (_cnn(dataclasses.replace(o.cnn, mu=0.0), m),),
    "kmeans_xy": lambda k, o, m: (Cluster("kmeans", k, _xy(o)),),
    "gmm_xy": lambda k, o, m: (Cluster("gmm", k, _xy(o)),),
    "cnn_refined": lambda k, o, m: _refined(o),
    "cnn_refined_kmeans": lambda k, o, m: _then_kmeans(RefinedCNN(o), k, o),
    "ucm": lambda k, o, m: (Hierarchize(from_labels=False),),
    "kmeans_ucm": lambda k, o, m: (Cluster("kmeans", k, o), Hierarchize(from_labels=True)),
    "gmm_ucm": lambda k, o, m: (Cluster("gmm", k, o), Hierarchize(from_labels=True)),
    "cnn_ucm": lambda k, o, m: (_cnn(o.cnn, m), Hierarchize(from_labels=True)),
    "cnn_refined_ucm": lambda k, o, m: (RefinedCNN(o), Hierarchize(from_labels=True)),
}


def plan(
    method: str,
    n_clusters: int | str = "elbow",
    options: Options | None = None,
    *,
    cnn_mode: str = "per-image",
) -> tuple[Stage, ...]:
    """The stages `method` runs, in order (hashable).

    Args:
      method: one of `METHODS + VARIANTS + HIERARCHIES`.
      n_clusters: K of K-means / GMM (of the K-means stage for the ensembles), or "elbow".
      options: `Options`; None: the defaults.
      cnn_mode: "per-image" (`FitCNN`) or "dataset" (`ApplyCNN`, which needs trained params).
    """
    if method not in _PLANS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(_PLANS)}")
    _check_n_clusters(n_clusters)
    if cnn_mode not in CNN_MODES:
        raise ValueError(f"cnn_mode must be one of {CNN_MODES}, got {cnn_mode!r}")
    return _PLANS[method](n_clusters, Options() if options is None else options, cnn_mode)


def takes_k(method: str) -> bool:
    """Whether `method`'s labels depend on `n_clusters` (the plain CNNs choose their own)."""
    return plan(method, 2) != plan(method, 3)


def stage_keys(keys: jax.Array, i: int) -> jax.Array:
    """The keys [b] of stage i of a plan, from the images' keys [b] (see the module doc)."""
    pairs = jax.vmap(jax.random.split)(keys)
    if i < 2:
        return pairs[:, i]
    return jax.vmap(jax.random.fold_in, (0, None))(pairs[:, 1], i)


def execute(
    stages: Sequence[Stage],
    images: jax.Array,
    keys: jax.Array,
    mask: jax.Array,
    *,
    n_colours: int | None = None,
    params: Any = None,
    progress: cnn.Progress | None = log_cnn_progress,
    scribbles: jax.Array | None = None,
) -> Segmentation:
    """Runs a plan's device stages on a batch (pure: jit it with `stages`, `n_colours` and
    `progress` static); the CNN stages report to `progress` (None: no callback compiled), and
    `scribbles` [b, h, w] go to the stages that `takes_scribbles`."""
    if any(is_host(s) for s in stages):
        raise ValueError(
            "execute runs device stages only (device_stages(plan)); the host stage (a "
            "hierarchy, or cnn_refined's split) runs in segment, segment_images and the runner "
            "(cnn_refined's device part alone: split_threshold=0)"
        )
    if scribbles is not None and scribble_channels(stages) is None:
        raise ValueError("scribbles given, but no stage of the plan fits a CNN to guide")
    result = None
    for i, stage in enumerate(stages):
        loop = {}
        if cnn_iterations(stage) is not None:
            loop["progress"] = progress
            if scribbles is not None:
                loop["scribbles"] = scribbles
        result = stage(
            images,
            mask,
            stage_keys(keys, i),
            None if result is None else result.labels,
            n_colours=n_colours,
            params=params,
            **loop,
        )
    return result


def segment_batch(
    images: jax.Array,
    keys: jax.Array,
    mask: jax.Array | None = None,
    *,
    method: str = "gmm_kmeans",
    n_clusters: int | str = "elbow",
    options: Options | None = None,
    n_colours: int | None = None,
    scribbles: jax.Array | None = None,
) -> Segmentation:
    """Segments a batch of same-shape images with `method`: pure, works under `jax.jit` (with
    `method`, `n_clusters`, `options` and `n_colours` static) and `jax.vmap`.

    Args:
      images: [b, h, w, 3] uint8, or float in [0, 1].
      keys: [b] PRNG keys, one per image (the runner uses `fold_in(PRNGKey(seed), index)`).
      mask: [b, h, w] bool, False on padded pixels; None: every pixel counts.
      method: one of `METHODS + VARIANTS`.
      n_clusters: K of K-means / GMM (of the K-means stage for the ensembles), or "elbow".
      options: `Options`; None: the defaults.
      n_colours: for uint8 images, cluster the distinct colours (see `Cluster`): a static size
        >= every image's number of distinct colours (`colour_size`). None: every pixel.
      scribbles: [b, h, w] int scribble maps (`cnn.UNSCRIBBLED` = 255 where none, classes
        below the CNN's channels) guiding the plan's per-image CNN (`takes_scribbles`).

    Returns:
      A `Segmentation` with labels [b, h, w]. Image i's labels depend only on images[i],
      keys[i], mask[i] and n_colours. Nothing is checked here (values may be traced): the host
      functions `segment` and `segment_images` check their input.
    """
    if mask is None:
        mask = jnp.ones(images.shape[:3], bool)
    stages = plan(method, n_clusters, options)
    return execute(
        stages,
        jnp.asarray(images),
        keys,
        jnp.asarray(mask),
        n_colours=n_colours,
        scribbles=None if scribbles is None else jnp.asarray(scribbles),
    )


_execute = jax.jit(execute, static_argnums=0, static_argnames=("n_colours", "progress"))


# --------------------------------------------------------------------------- host side


class Prepared(NamedTuple):
    """One image in its bucket (host side, NumPy).

    Attributes:
      image: [H, W, 3] uint8 (or float32 in [0, 1]), transposed to landscape and zero-padded.
      mask: [H, W] bool, True on the image's pixels.
      shape: (h, w) of the original image.
      n_colours: `colour_size` of a uint8 bucket (None for float images or when asked not to).
      scribbles: [H, W] int32 scribble map, turned and padded (with `cnn.UNSCRIBBLED`) as the
        image, or None.
    """

    image: np.ndarray
    mask: np.ndarray
    shape: tuple[int, int]
    n_colours: int | None
    scribbles: np.ndarray | None = None

    @property
    def bucket(self) -> tuple:
        """Images with equal buckets batch together."""
        return self.image.shape, self.image.dtype.str, self.n_colours

    def restore(self, labels: np.ndarray) -> np.ndarray:
        """Bucketed labels [H, W] back to the original image's [h, w]."""
        height, width = self.shape
        if height > width:
            return np.ascontiguousarray(labels[:width, :height].T)
        return labels[:height, :width]


def _as_rgb(image) -> np.ndarray:
    """A checked RGB image [h, w, 3], uint8 or float32 in [0, 1], from uint8 or float in [0, 1]
    grey [h, w], RGB or RGBA (alpha dropped) input (host side)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [h, w], [h, w, 3] or [h, w, 4], got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError("a float image must hold finite values in [0, 1]")
    return image.astype(np.float32)


def colour_size(image: np.ndarray) -> int | None:
    """Static size of the distinct-colour compression of a bucketed uint8 image [h, w, 3]: half
    its pixel count when it has at most that many distinct colours (BSDS images have 5k to 90k
    of 154k), else None (every pixel a point). One size per image shape keeps one compilation
    per shape, and depends only on the image, so its labels do not depend on its batch."""
    size = image.shape[0] * image.shape[1] // 2
    count = features.count_distinct_colours(image)
    return size if 0 < count <= size else None


def prepare(image, *, pad_multiple: int = 1, colours: bool = True, scribbles=None) -> Prepared:
    """Checks and buckets one image (host side; see the module doc), with its `scribbles` map
    [h, w] (checked by the caller) if given.

    `colours=False` skips counting distinct colours (work for the CNN only).
    """
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, (int, np.integer)):
        raise ValueError(f"pad_multiple must be an integer >= 1, got {pad_multiple!r}")
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    image = _as_rgb(image)
    shape = image.shape[:2]
    if shape[0] > shape[1]:
        image = image.transpose(1, 0, 2)
    height, width = (-(-side // pad_multiple) * pad_multiple for side in image.shape[:2])
    pad = ((0, height - image.shape[0]), (0, width - image.shape[1]))
    mask = np.pad(np.ones(image.shape[:2], dtype=bool), pad)
    image = np.pad(image, (*pad, (0, 0)))
    n_colours = colour_size(image) if colours and image.dtype == np.uint8 else None
    if scribbles is not None:
        scribbles = np.asarray(scribbles, np.int32)
        scribbles = scribbles.T if shape[0] > shape[1] else scribbles
        scribbles = np.pad(scribbles, pad, constant_values=cnn.UNSCRIBBLED)
    return Prepared(image, mask, shape, n_colours, scribbles)


def segment(
    image,
    method: str = "gmm_kmeans",
    *,
    key: jax.Array,
    n_clusters: int | str = "elbow",
    scribbles=None,
    **options,
) -> jax.Array:
    """Segments one image with `method` (host function: checks its input, then
    `segment_images`).

    Args:
      image: [h, w, 3] RGB, [h, w, 4] RGBA (alpha dropped) or [h, w] grey; uint8 or float in
        [0, 1].
      method: one of `METHODS + VARIANTS` (see the module doc).
      key: PRNG key.
      n_clusters: K of K-means / GMM (of the K-means stage for the ensembles), or "elbow".
      scribbles: optional [h, w] integer scribble map for the methods with a per-image CNN
        (`takes_scribbles`: cnn, cnn_ce, cnn_kmeans, cnn_refined, cnn_refined_kmeans): class
        c in 0..n_channels-1 on scribbled pixels, `cnn.UNSCRIBBLED` (255) elsewhere, as Kim et
        al.'s `demo.py`. The CNN is pulled toward class c there (`cnn.Config.scribble_weight`)
        and its scribbled pixels are set to their class. Stable labels (cnn, cnn_ce,
        cnn_refined): class c gets label c when the classes are 0..k-1 (in general the number
        of the map's classes below c), the other segments k, k+1, ...; the ensembles' K-means
        may merge classes. Other methods raise ValueError.
      **options: fields of `Options` (space, xy_weight, k_min, k_max, covariance_type, cnn).

    Returns:
      The label map [h, w] int32, labels 0..n-1: the labels the runner and `segment_images`
      give this image with this key, whatever the batch.
    """
    return segment_images(
        [image],
        method,
        keys=key[None],
        n_clusters=n_clusters,
        scribbles=None if scribbles is None else [scribbles],
        **options,
    )[0]


def segment_images(
    images: Sequence,
    method: str = "gmm_kmeans",
    *,
    keys: jax.Array,
    n_clusters: int | str = "elbow",
    pad_multiple: int = 1,
    scribbles: Sequence | None = None,
    **options,
) -> list[jax.Array]:
    """Segments images of any shapes (host function), batching those that share a bucket
    (`Prepared.bucket`). Returns one label map [h_i, w_i] int32 per image, in order.
    `scribbles`: None, or one scribble map (see `segment`) or None per image."""
    opts = _options(options)
    # Checks method and n_clusters before any work.
    stages = plan(method, n_clusters, opts)
    if any(gives_hierarchy(s) for s in stages):
        raise ValueError(
            f"method {method!r} gives a hierarchy (ucm2), not labels: run it with jaxseg.runner"
        )
    if len(keys) != len(images):
        raise ValueError(f"need one key per image: {len(keys)} keys, {len(images)} images")
    if scribbles is not None:
        if len(scribbles) != len(images):
            raise ValueError(f"need one scribble map (or None) per image, got {len(scribbles)}")
        images = [_as_rgb(image) for image in images]
        scribbles = [
            _check_scribbles(s, image.shape[:2], method, stages)
            for s, image in zip(scribbles, images, strict=True)
        ]
    prepared = [
        prepare(image, pad_multiple=pad_multiple, scribbles=None if scribbles is None else s)
        for image, s in zip(images, scribbles or [None] * len(images), strict=True)
    ]
    buckets: dict[tuple, list[int]] = {}
    for i, item in enumerate(prepared):
        buckets.setdefault(item.bucket, []).append(i)
    out: list = [None] * len(images)
    for members in buckets.values():
        first = prepared[members[0]]
        result = _execute(
            device_stages(stages),
            jnp.asarray(np.stack([prepared[i].image for i in members])),
            keys[np.asarray(members)],
            jnp.asarray(np.stack([prepared[i].mask for i in members])),
            n_colours=first.n_colours,
            scribbles=None
            if scribbles is None
            else jnp.asarray(np.stack([prepared[i].scribbles for i in members])),
        )
        labels = np.asarray(result.labels)
        for j, i in enumerate(members):
            out[i] = prepared[i].restore(labels[j])
            if is_host(stages[-1]):
                key = stage_keys(keys[i : i + 1], len(stages) - 1)[0]
                out[i] = stages[-1](
                    _as_rgb(images[i]), key, out[i], None if scribbles is None else scribbles[i]
                )
            out[i] = jnp.asarray(out[i])
    return out


def _check_scribbles(scribbles, shape, method: str, stages) -> np.ndarray:
    """One image's scribble map as int32 [h, w] (None: all `cnn.UNSCRIBBLED`), checked."""
    channels = scribble_channels(stages)
    if channels is None:
        guided = [m for m in _PLANS if scribble_channels(plan(m)) is not None]
        raise ValueError(
            f"method {method!r} has no CNN for scribbles to guide; use one of {', '.join(guided)}"
        )
    if scribbles is None:
        return np.full(shape, cnn.UNSCRIBBLED, np.int32)
    values = np.asarray(scribbles)
    if values.shape != tuple(shape) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"scribbles must be an integer map of the image's shape {tuple(shape)}, got "
            f"{values.dtype} {values.shape}"
        )
    cnn._check_scribbles(values, values.shape, None, channels)  # a scribble; classes < C
    return values.astype(np.int32)


def _options(options: dict) -> Options:
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(Options)})
    if unknown:
        fields = ", ".join(f.name for f in dataclasses.fields(Options))
        raise ValueError(f"unknown options {unknown}; choose from {fields}")
    return Options(**options)


def _check_n_clusters(n_clusters) -> None:
    if isinstance(n_clusters, str) and n_clusters == "elbow":
        return
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise ValueError(f"n_clusters must be an integer >= 2 or 'elbow', got {n_clusters!r}")
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2 or 'elbow', got {n_clusters}")
