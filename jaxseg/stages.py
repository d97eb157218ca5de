"""The stages of `jaxseg.pipeline`'s plans: hashable specs, each a function of a batch.

A stage is called as `stage(images, mask, keys, labels, *, n_colours, params, ...)` on a batch
(images [b, h, w, 3], mask [b, h, w], keys [b], the previous stage's labels [b, h, w] or None)
and returns a `Segmentation`. The device stages (`Cluster`, `FitCNN`, `ApplyCNN`,
`RefinedCNN`, `Recluster`) are pure and work under `jax.jit` and `jax.vmap`; a host stage
(NumPy, one image at a time, `is_host`), called as `stage(image, key, labels, scribbles)`,
ends a plan: `Hierarchize` gives a hierarchy (`ucm2`, `gives_hierarchy`), `Split` labels.
The stages that fit a CNN per image (`FitCNN`, `RefinedCNN`: `cnn_iterations`,
`takes_scribbles`) take a `progress` callback, called every `PROGRESS_EVERY` iterations from
the device loop, and scribbles.

Images travel as uint8 (or float in [0, 1]) with a mask; each stage converts to float itself.
K-means and the GMM of a uint8 image cluster its distinct colours weighted by their pixel
counts (`n_colours`, `pipeline.colour_size`): the same objective as over all pixels, on fewer
points.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import cnn, edges, features, gmm, hierarchy, kmeans, slic
from jaxseg import scribbles as scribble_maps

if TYPE_CHECKING:
    from jaxseg.pipeline import Options

__all__ = [
    "AUTO_FRAGMENTATION",
    "PROGRESS_EVERY",
    "SPLIT_OVERSEGMENTATIONS",
    "ApplyCNN",
    "Cluster",
    "FitCNN",
    "Hierarchize",
    "Recluster",
    "RefinedCNN",
    "Segmentation",
    "Split",
    "cnn_iterations",
    "device_stages",
    "gives_hierarchy",
    "is_host",
    "log_cnn_progress",
    "scribble_channels",
    "takes_scribbles",
]

_log = logging.getLogger("jaxseg.stages")


class Segmentation(NamedTuple):
    """Label maps of a batch.

    Attributes:
      labels: [b, h, w] int32, consecutive labels 0..n_clusters-1 over the unmasked pixels
        (masked pixels are 0).
      n_clusters: [b] int32, the number of distinct labels.
    """

    labels: jax.Array
    n_clusters: jax.Array


def _float(images: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1]; float images as float32."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255
    return images.astype(jnp.float32)


def log_cnn_progress(iteration, n_labels, loss) -> None:
    """The CNN stages' progress in `pipeline.segment_batch` (a `cnn.Progress`), logged at INFO
    by the `jaxseg.stages` logger (the runner logs its own lines, with an ETA:
    `jaxseg.progress.LoopProgress`)."""
    n_labels, loss = np.atleast_1d(n_labels), np.atleast_1d(np.asarray(loss, np.float64))
    real = n_labels > 0  # padding slots of a partial batch have no pixels
    _log.info(
        "  CNN iteration %d: labels per image %s, loss %s",
        int(iteration),
        n_labels[real].tolist(),
        np.round(loss[real], 3).tolist(),
    )


# The CNN stages call their `progress` every 25 iterations: one host callback per 25 device
# iterations (~1 s of CPU work each).
PROGRESS_EVERY = 25


def _consecutive(
    labels: jax.Array, mask: jax.Array, size: int, first: jax.Array | None = None
) -> Segmentation:
    """Renumbers labels [b, h, w] in [0, size) to 0..n-1 (in order of value) over the unmasked
    pixels; masked pixels get 0. With `first` [b, size] bool, those labels come first (in
    order of value), the others after them."""
    if first is None:
        first = jnp.zeros(labels.shape[:1] + (size,), bool)

    def one(labels, mask, first):
        present = jnp.zeros(size, bool).at[labels].max(mask)
        first = first & present
        rank = jnp.where(
            first, jnp.cumsum(first) - 1, first.sum() + jnp.cumsum(present & ~first) - 1
        )
        return jnp.where(mask, rank[labels], 0).astype(jnp.int32), present.sum(dtype=jnp.int32)

    return Segmentation(*jax.vmap(one)(labels, mask, first))


def _guided(labels: jax.Array, mask: jax.Array, size: int, scribbles) -> Segmentation:
    """A CNN stage's labels [b, h, w] in [0, size), consecutive (`_consecutive`); with
    `scribbles` [b, h, w] the scribbled pixels are set to their class and the classes come
    first: class c gets the number of the image's scribble classes below c (c itself for
    classes 0..k-1)."""
    if scribbles is None:
        return _consecutive(labels, mask, size)
    scribbled = mask & (scribbles != cnn.UNSCRIBBLED)
    classes = jnp.where(scribbled, scribbles, 0).astype(jnp.int32)
    labels = jnp.where(scribbled, classes, labels)
    first = jax.vmap(lambda c, s: jnp.zeros(size, bool).at[c].max(s))(classes, scribbled)
    return _consecutive(labels, mask, size, first)


def _elbow(x, w, key, options: Options):
    """(labels [n] of the K the elbow method chooses, that K) for one image's points."""
    result = kmeans.elbow(x, key, k_min=options.k_min, k_max=options.k_max, sample_weight=w)
    return result.labels[result.n_clusters - options.k_min], result.n_clusters


def _kmeans_labels(x, weight, keys, n_clusters, options: Options):
    """K-means labels [b, n] (K fixed, or by the elbow method)."""
    if n_clusters == "elbow":
        return jax.vmap(functools.partial(_elbow, options=options))(x, weight, keys)[0]
    fit = jax.vmap(lambda x, w, key: kmeans.fit(x, n_clusters, key, sample_weight=w))
    return fit(x, weight, keys).labels


def _gmm_labels(x, weight, keys, n_clusters, options: Options):
    """GMM MAP labels [b, n].

    With a fixed K, `gmm.fit` (K-means initialisation) under vmap. With K by the elbow method,
    EM starts from the elbow's K-means partition of the chosen K (the paper's "prior from
    K-means, K by the elbow method"): `gmm.fit_from_labels` with arrays for k_max components of
    which the first K (traced, per image) are fitted, so one compilation covers every K.
    """
    covariance_type = options.covariance_type
    if n_clusters != "elbow":
        fit = jax.vmap(
            lambda x, w, key: gmm.fit(
                x, n_clusters, key, covariance_type=covariance_type, sample_weight=w
            )
        )
        return fit(x, weight, keys).labels
    labels, chosen = jax.vmap(functools.partial(_elbow, options=options))(x, weight, keys)
    fit = jax.vmap(
        lambda x, w, labels, k: gmm.fit_from_labels(
            x, labels, options.k_max, n_active=k, covariance_type=covariance_type, sample_weight=w
        )
    )
    return fit(x, weight, labels, chosen).labels


@dataclasses.dataclass(frozen=True)
class Cluster:
    """K-means or the GMM of each pixel's features (`pipeline.Options.space`, `xy_weight`).

    With `n_colours` (a static size >= every image's number of distinct colours and >= K) and
    uint8 images without position features, the images' distinct colours are clustered,
    weighted by their unmasked pixel counts: exactly the objective over all pixels.
    """

    algorithm: str  # "kmeans" or "gmm"
    n_clusters: int | str
    options: Options

    @property
    def bound(self) -> int:
        return self.options.k_max if self.n_clusters == "elbow" else self.n_clusters

    def colours(self, n_colours: int | None) -> int | None:
        """The `n_colours` this stage uses (None: it clusters every pixel)."""
        usable = n_colours is not None and n_colours >= self.bound
        return n_colours if usable and self.options.xy_weight == 0 else None

    def __call__(self, images, mask, keys, labels=None, *, n_colours=None, params=None):
        del labels, params
        b, h, w = mask.shape
        fit = _kmeans_labels if self.algorithm == "kmeans" else _gmm_labels
        options = self.options
        n_colours = self.colours(n_colours)
        if n_colours is not None and images.dtype == jnp.uint8:
            found = jax.vmap(functools.partial(features.distinct_colours, size=n_colours))(
                images.reshape(b, -1, 3)
            )
            weight = jax.vmap(functools.partial(jax.ops.segment_sum, num_segments=n_colours))(
                mask.reshape(b, -1).astype(jnp.float32), found.inverse
            )
            colour_features = functools.partial(features.colour_features, space=options.space)
            x = jax.vmap(colour_features)(found.colours)
            colour_labels = fit(x, weight, keys, self.n_clusters, options)
            pixel_labels = jnp.take_along_axis(colour_labels, found.inverse, axis=1)
        else:
            pixel_features = functools.partial(
                features.pixel_features, space=options.space, xy_weight=options.xy_weight
            )
            x = jax.vmap(pixel_features)(_float(images))
            weight = mask.reshape(b, -1).astype(jnp.float32)
            pixel_labels = fit(x, weight, keys, self.n_clusters, options)
        return _consecutive(pixel_labels.reshape(b, h, w), mask, self.bound)


@dataclasses.dataclass(frozen=True)
class _CNNStage:
    """A stage whose labels are the argmax over `config.n_channels` channels."""

    config: cnn.Config

    @property
    def bound(self) -> int:
        return self.config.n_channels

    def colours(self, n_colours: int | None) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class FitCNN(_CNNStage):
    """The CNN fitted to each image from scratch (`cnn.segment_batch`), guided by optional
    `scribbles` [b, h, w] (`cnn.UNSCRIBBLED` where none; see `_guided` for the labels);
    `progress` (a `cnn.Progress` or None) is called every `PROGRESS_EVERY` iterations of its
    loop."""

    def __call__(
        self,
        images,
        mask,
        keys,
        labels=None,
        *,
        n_colours=None,
        params=None,
        progress=None,
        scribbles=None,
    ):
        del labels, n_colours, params
        result = cnn.segment_batch(
            _float(images),
            keys,
            self.config,
            mask=mask,
            scribbles=scribbles,
            progress=progress,
            progress_every=PROGRESS_EVERY,
        )
        return _guided(result.labels, mask, self.bound, scribbles)


@dataclasses.dataclass(frozen=True)
class ApplyCNN(_CNNStage):
    """Dataset mode: one forward pass of a trained network per image (`params`, from
    `cnn.train_dataset`), BatchNorm with the image's own unmasked statistics."""

    def __call__(self, images, mask, keys, labels=None, *, n_colours=None, params=None):
        del keys, labels, n_colours
        if params is None:
            raise ValueError("ApplyCNN needs the trained network's params (cnn.train_dataset)")

        def one(image, mask):
            return cnn.response(params, image[None], mask[None])[0].argmax(-1)

        labels = jax.vmap(one)(_float(images), mask).astype(jnp.int32)
        return _consecutive(labels, mask, self.bound)


def _superpixels(images, mask, size: int, compactness: float) -> tuple[jax.Array, int]:
    """SLIC labels [b, h, w] of float images [b, h, w, 3], ~`size` pixels each, and the static
    bound on their ids."""
    _, h, w = mask.shape
    n_superpixels = slic._n_segments(h, w, size)
    labels = slic.segment_batch(
        jnp.clip(images, 0, 1), n_segments=n_superpixels, compactness=compactness, mask=mask
    ).labels
    return labels, slic.grid_shape(h, w, n_superpixels, masked=True)[1]


def _first_fits(progress: cnn.Progress, b: int, iteration, n_labels, loss) -> None:
    """`progress` for the first b of a batch's fits (`RefinedCNN` with `n_fits` > 1)."""
    progress(iteration, n_labels[:b], loss[:b])


def _nearest(n: int, size: int) -> jax.Array:
    """Indices [n] into an axis of `size` that sample it at n points (nearest-neighbour)."""
    return ((jnp.arange(n) + 0.5) * size / n).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class RefinedCNN:
    """The recommended CNN (`cnn_refined`): SLIC superpixels (`jaxseg.slic`) and the CNN fitted
    with each pixel's target the majority label of its superpixel (Kanezaki 2018), on the image
    shrunk by `options.refined_scale`, seeing its colours in `options.refined_space`. The final
    labels (`options.full_size_output`, default) are the fitted network's argmax on the image
    scaled by `options.output_scale` (pixel refining), sampled back to full size, or else the
    fit's labels scaled back up (nearest); with
    `options.output_superpixel_size` > 0 they are then refined the same way on SLIC superpixels
    of the full-size image of that size (0: the full-size argmax as it is, or the fit's labels
    refined on the fit's superpixels, borders at the shrunk image's resolution). With
    `options.n_fits` = n > 1, n networks are fitted per image (keys: the image's, then
    folded with 1..n-1) and the full-size labels are `cnn.combine_fits` of their responses.
    Settings:
    `options.refined` (a `cnn.Config`, `Config.refined()` by default),
    `options.superpixel_size`, `options.compactness`. Optional `scribbles` [b, h, w] are shrunk
    keeping every stroke (`scribbles.shrink`) to guide the fit; the full-size labels are then
    `_guided` by them. `progress` as `FitCNN`'s."""

    options: Options

    @property
    def bound(self) -> int:
        return self.options.refined.n_channels

    def colours(self, n_colours: int | None) -> None:
        return None

    def __call__(
        self,
        images,
        mask,
        keys,
        labels=None,
        *,
        n_colours=None,
        params=None,
        progress=None,
        scribbles=None,
    ):
        del labels, n_colours, params
        return self.fit(images, mask, keys, progress=progress, scribbles=scribbles)[0]

    def fit(
        self, images, mask, keys, *, progress=None, scribbles=None
    ) -> tuple[Segmentation, cnn.CNNResult]:
        """The stage's labels [b, h, w] and the CNN fit behind them (`n_iter`, `stop_reason`;
        its `labels` at the shrunk size, before the final refinement; with
        `options.n_fits` > 1, the first network's)."""
        options = self.options
        config, scale = options.refined, options.refined_scale
        b, h, w = mask.shape
        full_images = _float(images)

        def rescaled(factor: float) -> tuple[jax.Array, jax.Array]:
            """The images and mask scaled by `factor` (at least 3 x 3)."""
            hn, wn = max(3, round(h * factor)), max(3, round(w * factor))
            if (hn, wn) == (h, w):
                return full_images, mask
            resized = jax.image.resize(full_images, (b, hn, wn, 3), "linear", antialias=True)
            # The antialiasing kernel may overshoot [0, 1] by a rounding error.
            return jnp.clip(resized, 0, 1), mask[:, _nearest(hn, h)][:, :, _nearest(wn, w)]

        small, small_mask = rescaled(scale)
        hs, ws = small_mask.shape[1:]
        superpixels, n_segments = _superpixels(
            small, small_mask, options.superpixel_size, options.compactness
        )

        def seen(x):
            """What the CNN sees of RGB images x: `options.refined_space`."""
            return features.unit_lab(x) if options.refined_space == "lab" else x

        n_fits = options.n_fits

        def fits(x):
            """x [b, ...] repeated for every fit: [n_fits * b, ...], fit j's images j*b..."""
            return jnp.concatenate([x] * n_fits)

        # Fit 0 has the image's key (so one fit is the plain method), fit j > 0 the key folded
        # with j.
        fit_keys = jnp.concatenate(
            [keys] + [jax.vmap(jax.random.fold_in, (0, None))(keys, j) for j in range(1, n_fits)]
        )
        if progress is not None and n_fits > 1:  # report each image's first fit
            progress = functools.partial(_first_fits, progress, b)
        fit = cnn.segment_batch(
            seen(fits(small)),
            fit_keys,
            config,
            mask=fits(small_mask),
            segments=fits(superpixels),
            n_segments=n_segments,
            scribbles=None
            if scribbles is None
            else fits(scribble_maps.shrink(scribbles, (hs, ws))),
            progress=progress,
            progress_every=PROGRESS_EVERY,
        )
        up_rows = jnp.minimum((jnp.arange(h) * hs) // h, hs - 1)
        up_cols = jnp.minimum((jnp.arange(w) * ws) // w, ws - 1)

        def up(x):
            return x[:, up_rows][:, :, up_cols]

        def refine(labels, superpixels, mask, n_segments):
            return jax.vmap(
                lambda lab, seg, m: cnn.refine_labels(lab, seg, n_segments, config.n_channels, m)
            )(labels, superpixels, mask)

        if options.full_size_output:
            # The argmax on the image scaled by output_scale, sampled back to full size.
            out_images, out_mask = rescaled(options.output_scale)

            if n_fits == 1:
                labels = jax.vmap(
                    lambda p, image, m: cnn.response(p, image[None], m[None])[0].argmax(-1)
                )(fit.params, seen(out_images), out_mask)
            else:

                def combined(p, image, m):
                    """One image's labels from its networks' params p (leading [n_fits])."""
                    responses = jax.vmap(lambda q: cnn.response(q, image[None], m[None])[0])(p)
                    return cnn.combine_fits(responses, m)

                params = jax.tree.map(lambda a: a.reshape(n_fits, b, *a.shape[1:]), fit.params)
                labels = jax.vmap(combined, (1, 0, 0))(params, seen(out_images), out_mask)
            labels = labels.astype(jnp.int32)
            if out_mask.shape != mask.shape:
                labels = jax.image.resize(labels, (b, h, w), "nearest")
        elif options.output_superpixel_size:
            labels = up(fit.labels)
        else:
            labels = up(refine(fit.labels, superpixels, small_mask, n_segments))
        if options.output_superpixel_size:
            full, n_full = _superpixels(
                full_images, mask, options.output_superpixel_size, options.compactness
            )
            labels = refine(labels, full, mask, n_full)
        return _guided(labels, mask, self.bound, scribbles), jax.tree.map(lambda a: a[:b], fit)


@dataclasses.dataclass(frozen=True)
class Recluster:
    """The ensembles' second stage: K-means of the previous stage's mean-colour image.

    Every pixel of a segment holds the segment's mean colour, so K-means of that image's pixels
    is K-means of the segments' mean colours weighted by their pixel counts: the same objective
    over `n_segments` (the previous stage's label bound) points. Position features are not used:
    the paper re-clusters the segmented image's colours.
    """

    n_segments: int
    n_clusters: int | str
    options: Options

    @property
    def bound(self) -> int:
        return self.options.k_max if self.n_clusters == "elbow" else self.n_clusters

    def colours(self, n_colours: int | None) -> None:
        return None

    def __call__(self, images, mask, keys, labels=None, *, n_colours=None, params=None):
        del n_colours, params
        b, h, w = mask.shape
        n_points = max(self.n_segments, self.bound)
        space = self.options.space

        def segment_colours(image, labels, mask):
            weight = mask.reshape(-1).astype(jnp.float32)
            flat = labels.reshape(-1)
            sums = jax.ops.segment_sum(image.reshape(-1, 3) * weight[:, None], flat, n_points)
            counts = jax.ops.segment_sum(weight, flat, n_points)
            means = sums / jnp.maximum(counts, 1)[:, None]
            return features.colour_features(means, space=space), counts

        x, counts = jax.vmap(segment_colours)(_float(images), labels, mask)
        segment_labels = _kmeans_labels(x, counts, keys, self.n_clusters, self.options)
        new_labels = jnp.take_along_axis(segment_labels, labels.reshape(b, -1), axis=1)
        return _consecutive(new_labels.reshape(b, h, w), mask, self.bound)


# The merging options of `hierarchy.hierarchical_segmentation`, with its defaults, so that
# `Hierarchize(from_labels=True)` merges by the `ucm` method's rule (on `edges`' local strength,
# as its val scores in README were measured; `ucm` itself cuts and merges by `pmi`'s).
_MERGE_OPTIONS = (
    "feature_weight",
    "size_scale",
    "size_power",
    "level_scale",
    "count_weight",
    "spectral_weight",
    "n_eigenvectors",
    "spectral_scale",
    "contrast_weight",
    "contrast_size",
)
_HIERARCHY_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(hierarchy.hierarchical_segmentation).parameters.items()
    if p.default is not inspect.Parameter.empty
}


@dataclasses.dataclass(frozen=True)
class Hierarchize:
    """Host stage: one image's `ucm2` `[2h + 1, 2w + 1]` float64 in [0, 1) (NumPy heap merging,
    so it runs outside jit, after the device stages, on the image in its own orientation).

    `from_labels=False`: `hierarchy.hierarchical_segmentation` of the image. `from_labels=True`:
    the previous stage's labels, split into 4-connected segments, merged by the same cost
    (`hierarchy.hierarchy_from_labels` on the oriented boundary strength of `edges.boundary_cues`,
    with the pixels' Lab / 100 and one-hot textons times `texton_weight` (a chi-squared
    histogram) as region features, and
    `hierarchical_segmentation`'s merging defaults). `key` seeds the texton K-means.
    """

    from_labels: bool

    def __call__(self, image: np.ndarray, key: jax.Array, labels=None, scribbles=None):
        del scribbles  # a hierarchy's levels are not classes
        if not self.from_labels:
            return hierarchy.hierarchical_segmentation(image, key).ucm2
        if labels is None:
            raise ValueError("Hierarchize(from_labels=True) needs the previous stage's labels")
        cues = edges.boundary_cues(image, key)
        rgb = np.asarray(features._check_rgb(image, rank=3))
        h, w, _ = rgb.shape
        lab = np.asarray(features.colour_features(rgb.reshape(-1, 3), space="lab"))
        textons = np.asarray(cues.textons)
        one_hot = np.eye(int(textons.max()) + 1)[textons] * _HIERARCHY_DEFAULTS["texton_weight"]
        return hierarchy.hierarchy_from_labels(
            np.asarray(labels),
            np.asarray(cues.oriented),
            np.concatenate([lab.reshape(h, w, 3), one_hot], axis=-1),
            histogram_dims=one_hot.shape[-1],
            **{name: _HIERARCHY_DEFAULTS[name] for name in _MERGE_OPTIONS},
        )


# SLIC's hierarchy adheres to weak edges but in noise its superpixels straddle true borders and
# its cut fragments flat regions. Measured on the region counts of the two cuts at 0.75 (SLIC /
# watershed): issue 11's nine noisy piecewise-constant images 1.67-2.67; BSDS500 photographs
# 0.57-1.83 (train, 28 images), 0.79-1.36 (val, 41). Above 1.5 the split falls back to the
# watershed.
AUTO_FRAGMENTATION = 1.5
SPLIT_OVERSEGMENTATIONS = (*hierarchy.OVERSEGMENTATIONS, "auto")


@dataclasses.dataclass(frozen=True)
class Split:
    """Host stage: the previous stage's labels split along the regions of the image's own
    hierarchy (`hierarchy.hierarchical_segmentation` with `size_scale` and
    `oversegmentation`, or "auto": see `ucm2`) cut at `threshold` (`hierarchy.split_labels`):
    edges where the labels have none split a label into pieces. `key` seeds the texton
    K-means; a piece holding a scribbled pixel keeps its label."""

    threshold: float
    size_scale: float
    oversegmentation: str

    def __call__(self, image: np.ndarray, key: jax.Array, labels=None, scribbles=None):
        if labels is None:
            raise ValueError("Split needs the previous stage's labels")
        ucm2 = self.ucm2(image, key)
        keep = None if scribbles is None else np.asarray(scribbles) != cnn.UNSCRIBBLED
        return hierarchy.split_labels(labels, ucm2, self.threshold, keep=keep)

    def ucm2(self, image: np.ndarray, key: jax.Array) -> np.ndarray:
        """The `ucm2` the labels are split along. "auto" takes the SLIC hierarchy unless its
        cut at `threshold` has more than `AUTO_FRAGMENTATION` times the watershed cut's regions,
        then the watershed's."""

        cues = edges.boundary_cues(image, key)  # shared by both hierarchies of "auto"

        def build(oversegmentation):
            return hierarchy.hierarchical_segmentation(
                image,
                key,
                boundary="local",  # the split and its threshold were measured on it (issue 11)
                size_scale=self.size_scale,
                oversegmentation=oversegmentation,
                cues=cues,
            ).ucm2

        if self.oversegmentation != "auto":
            return build(self.oversegmentation)
        by_slic, by_watershed = build("slic"), build("watershed")
        n_slic, n_watershed = (
            int(hierarchy.labels_at(u, self.threshold).max()) + 1 for u in (by_slic, by_watershed)
        )
        return by_slic if n_slic <= AUTO_FRAGMENTATION * n_watershed else by_watershed


Stage = Cluster | FitCNN | ApplyCNN | Recluster | Hierarchize | Split


def is_host(stage) -> bool:
    """Whether `stage` runs on host, one image at a time, after the device stages."""
    return isinstance(stage, Hierarchize | Split)


def gives_hierarchy(stage) -> bool:
    """Whether `stage` (a host stage) returns a `ucm2` rather than labels."""
    return isinstance(stage, Hierarchize)


def cnn_iterations(stage) -> int | None:
    """The most iterations of `stage`'s CNN fit (it may stop sooner), for the stages that fit
    a CNN and take a `progress` callback (`FitCNN`, `RefinedCNN`); None for the others."""
    if isinstance(stage, FitCNN):
        return stage.config.max_iter
    if isinstance(stage, RefinedCNN):
        return stage.options.refined.max_iter
    return None


def takes_scribbles(stage) -> bool:
    """Whether `stage` fits a CNN per image that scribbles can guide (`FitCNN`, `RefinedCNN`)."""
    return cnn_iterations(stage) is not None


def scribble_channels(stages: Sequence[Stage]) -> int | None:
    """The channels of a plan's guided CNN (scribble classes must be below), or None when no
    stage `takes_scribbles`."""
    return next((s.bound for s in stages if takes_scribbles(s)), None)


def device_stages(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """The stages of a plan that run on the device (all but the final host stage)."""
    return tuple(s for s in stages if not is_host(s))
