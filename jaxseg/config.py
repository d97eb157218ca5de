"""One configuration tree for a run, and the command-line flags derived from it.

`RunConfig` nests the methods' `pipeline.Options`, which nests the CNN's `cnn.Config`. Every
leaf field is a flag of the same name (`RunConfig.k` is `--k`, `Options.covariance_type` is
`--covariance_type`, `cnn.Config.max_iter` is `--cnn_max_iter`): `define_flags` reads each
field's type and its metadata (`help`, `choices`, `group`, `parse`), so adding a field to the
tree adds its flag. `--cnn_preset` picks the `cnn.Config` preset; the `--cnn_*` flags default to
None (the preset's value) and override its fields. Validation happens
once, in the dataclasses' `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from absl import flags

from jaxseg import pipeline, stages

__all__ = ["GROUPS", "RunConfig", "define_flags", "flag_fields", "from_flags", "label_settings"]

# --help shows the flags in these groups, in this order.
GROUPS = ("data", "methods", "cnn", "cnn_refined", "execution", "output", "distributed")

_ALIASES = {
    "all": pipeline.METHODS + pipeline.VARIANTS,
    "paper": pipeline.METHODS,
    "hierarchies": pipeline.HIERARCHIES,
}
_CHOICES = pipeline.METHODS + pipeline.VARIANTS + pipeline.HIERARCHIES


def _methods(names: list[str]) -> tuple[str, ...]:
    methods: list[str] = []
    for name in names:
        for method in _ALIASES.get(name, (name,)):
            if method not in methods:
                methods.append(method)
    return tuple(methods)


def _k(values: list[str]) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for value in values:
        if value == "elbow":
            out.append(value)
        elif re.fullmatch(r"[+-]?\d+", value):
            out.append(int(value))
        else:
            raise ValueError(f"k: {value!r} is neither an integer nor 'elbow'")
    return tuple(out)


def _field(default, help: str, group: str, **metadata) -> Any:
    metadata = {"help": help, "group": group, **metadata}
    if isinstance(default, Callable):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a run computes (`jaxseg.runner.run`); every field is a flag of the same name.

    Fields with `label=False` in their metadata (which methods, where the data lives, how many
    images, the batch size) do not change an image's labels; the others are the run
    directory's label settings (config.json), which a rerun into it must keep.
    """

    dataset: str = _field(
        "samples", "samples (embedded), bsds300, bsds500, or a folder of images.", "data"
    )
    split: str | None = _field(None, "The dataset's split (default: all of it).", "data")
    data_dir: str | None = _field(
        None, "Folder holding BSDS500/ (default: $JAXSEG_DATA_DIR).", "data", label=False
    )
    num_images: int | None = _field(
        None, "Only the first N images of the sorted dataset.", "data", label=False
    )
    scribbles: str | None = _field(
        None,
        "Folder of scribbles guiding the per-image CNN methods: <id>.png (or the authors' "
        "<id>_scribble.png), single-channel 8-bit, class ids 0..254, 255 = unscribbled, the "
        "image's size; images without a file run unguided.",
        "data",
    )
    method: tuple[str, ...] = _field(
        ("gmm_kmeans",),
        "Comma list of methods; 'paper' is the paper's five, 'all' adds the variants, "
        "'hierarchies' is the methods that give a ucm2 (ucm and <method>_ucm).",
        "methods",
        choices=_CHOICES + tuple(_ALIASES),
        parse=_methods,
        label=False,
    )
    k: tuple[int | str, ...] = _field(
        ("elbow",),
        "K of K-means/GMM (of the ensembles' K-means): 'elbow', an integer, or a comma list "
        "(one unit per K, ODS/OIS over them).",
        "methods",
        parse=_k,
    )
    options: pipeline.Options = _field(pipeline.Options, "The methods' options.", "methods")
    seed: int = _field(0, "Seed of the per-image keys.", "methods")
    cnn_mode: str = _field(
        "per-image",
        "per-image: one CNN fitted per image (the paper); dataset: one network trained on all "
        "the run's images, then one forward pass each.",
        "cnn",
        choices=pipeline.CNN_MODES,
    )
    cnn_params: str | None = _field(
        None,
        "cnn_mode=dataset: load this trained network (a networks/*.msgpack file that an earlier "
        "run saved) instead of training one; each image then costs one forward pass.",
        "cnn",
    )
    batch_size: int = _field(4, "Images per compiled batch.", "execution", label=False)
    workers: int = _field(
        1,
        "Processes that save, score and draw finished images while the next batches compute "
        "(1: this process). Scoring is most of a hierarchy's time: use every core for the "
        "*ucm methods, and on a GPU.",
        "execution",
        label=False,
    )
    pad_multiple: int = _field(
        1, "Pad image sides to a multiple of this, to batch different sizes.", "execution"
    )
    nthresh: int = _field(
        99,
        "Thresholds at which hierarchies (ucm2) are scored (the official 99). Scoring a "
        "321x481 hierarchy took 8-10 CPU-s at 99 (3-3.6 at 33), mostly boundary matching.",
        "output",
    )

    def __post_init__(self):
        choices = _CHOICES
        if not self.method:
            raise ValueError("no method given")
        for method in self.method:
            if method not in choices:
                raise ValueError(f"unknown method {method!r}; choose from {', '.join(choices)}")
        if len(set(self.method)) != len(self.method):
            raise ValueError(f"methods repeat: {list(self.method)}")
        if not self.k:
            raise ValueError("no K candidate given")
        for k in self.k:
            if k != "elbow" and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
                raise ValueError(f"k must be an integer >= 2 or 'elbow', got {k!r}")
        if len(set(self.k)) != len(self.k):
            raise ValueError(f"K candidates repeat: {list(self.k)}")
        for name in ("num_images", "batch_size", "workers", "pad_multiple", "nthresh"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.cnn_mode not in pipeline.CNN_MODES:
            raise ValueError(f"cnn_mode must be one of {pipeline.CNN_MODES}, got {self.cnn_mode!r}")
        if self.scribbles is not None:
            if not Path(self.scribbles).is_dir():
                raise ValueError(f"scribbles: no folder {self.scribbles}")
            blind = [
                m
                for m in self.method
                if stages.scribble_channels(
                    pipeline.plan(m, "elbow", self.options, cnn_mode=self.cnn_mode)
                )
                is None
            ]
            if blind:
                raise ValueError(
                    f"scribbles guide the CNN fitted per image; {', '.join(blind)} has none "
                    f"(cnn_mode={self.cnn_mode}): run it without --scribbles"
                )
        if self.cnn_params is not None:
            if self.cnn_mode != "dataset":
                raise ValueError("cnn_params needs cnn_mode=dataset (a trained network to apply)")
            if not Path(self.cnn_params).is_file():
                raise ValueError(f"cnn_params: no file {self.cnn_params}")


def label_settings(config: RunConfig) -> dict[str, Any]:
    """The settings `config`'s labels depend on, flat by flag name (JSON types)."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, field, value, _ in flag_fields(RunConfig, config)
        if field.metadata.get("label", True)
    }


# --------------------------------------------------------------------------- flags


def _optional(tp) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `T` or `T | None`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def flag_fields(
    cls, instance=None, *, prefix: str = "", group: str | None = None
) -> Iterator[tuple[str, dataclasses.Field, Any, str]]:
    """(flag name, field, value in `instance` (or the default), group) of every leaf of the
    tree `cls`, depth first: `options` is flattened, other nested trees prefix their name."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp, _ = _optional(hints[field.name])
        value = getattr(instance, field.name) if instance is not None else _default(field)
        field_group = field.metadata.get("group", group)
        if dataclasses.is_dataclass(tp):
            nested_prefix = prefix if field.name == "options" else f"{prefix}{field.name}_"
            yield from flag_fields(tp, value, prefix=nested_prefix, group=field_group)
        else:
            yield prefix + field.name, field, value, field_group


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


_PRESETS = {"paper": pipeline.cnn.Config.paper, "kim2020": pipeline.cnn.Config.kim2020}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, list[str]]:
    """Defines a flag for every leaf of `RunConfig` (plus `--cnn_preset`).

    Returns:
      group -> the names of its flags, in definition order.
    """
    groups: dict[str, list[str]] = {}

    def define(kind, name, default, help, group, **kwargs):
        getattr(flags, f"DEFINE_{kind}")(
            name, default, help=help, flag_values=flag_values, **kwargs
        )
        groups.setdefault(group, []).append(name)

    define(
        "enum",
        "cnn_preset",
        "paper",
        "The CNN's preset (jaxseg.cnn.Config.<preset>()); --cnn_* flags override its fields.",
        "cnn",
        enum_values=list(_PRESETS),
    )
    hints_cache: dict = {}
    for name, field, value, group in flag_fields(RunConfig):
        owner = _owner(field, hints_cache)
        tp, _ = _optional(owner[field.name])
        config_leaf = field in dataclasses.fields(pipeline.cnn.Config)
        help = field.metadata.get("help") or f"jaxseg.cnn.Config.{field.name}."
        default = None if config_leaf else value
        if config_leaf and name.startswith("cnn_"):
            help += f" (default: the preset's; paper: {value})"
        elif config_leaf:
            help += f" (default: {value})"
        choices = field.metadata.get("choices")
        if "parse" in field.metadata:
            help += f" Choices: {', '.join(choices)}." if choices else ""
            define("list", name, list(map(str, value)), help, group)
        elif choices:
            define("enum", name, default, help, group, enum_values=list(choices))
        elif tp is bool:
            define("bool", name, default, help, group)
        elif tp is int:
            define("integer", name, default, help, group)
        elif tp is float:
            define("float", name, default, help, group)
        else:
            define("string", name, default, help, group)
    return groups


def _owner(field: dataclasses.Field, cache: dict) -> dict:
    """The type hints of the dataclass that declares `field`."""
    for cls in (RunConfig, pipeline.Options, pipeline.cnn.Config):
        if field in dataclasses.fields(cls):
            if cls not in cache:
                cache[cls] = typing.get_type_hints(cls)
            return cache[cls]
    raise KeyError(field.name)


def from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> RunConfig:
    """The `RunConfig` the parsed flags describe (raises ValueError for bad settings)."""
    values = {name: flag_values[name].value for name, *_ in flag_fields(RunConfig)}

    def build(cls, prefix: str):
        kwargs = {}
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            tp, _ = _optional(hints[field.name])
            if dataclasses.is_dataclass(tp):
                nested_prefix = prefix if field.name == "options" else f"{prefix}{field.name}_"
                kwargs[field.name] = build(tp, nested_prefix)
                continue
            value = values[prefix + field.name]
            if "parse" in field.metadata:
                value = field.metadata["parse"](value)
            if value is not None or cls is not pipeline.cnn.Config:
                kwargs[field.name] = value
        if cls is pipeline.cnn.Config:
            # `cnn` starts from --cnn_preset, any other CNN tree (`refined`) from its default.
            base = (
                _PRESETS[flag_values["cnn_preset"].value]()
                if prefix == "cnn_"
                else _default(
                    next(f for f in dataclasses.fields(pipeline.Options) if f.name == prefix[:-1])
                )
            )
            return dataclasses.replace(base, **kwargs)
        return cls(**kwargs)

    try:
        return build(RunConfig, "")
    except TypeError as error:  # a value of the wrong type reaching a dataclass
        raise ValueError(str(error)) from error
