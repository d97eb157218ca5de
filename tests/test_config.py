"""jaxseg.config: one tree of settings, the flags derived from it, and the lazy package."""

import dataclasses
import subprocess
import sys

import pytest
from absl import flags

from jaxseg import cnn, config, pipeline


@pytest.fixture()
def flag_values():
    values = flags.FlagValues()
    groups = config.define_flags(values)
    return values, groups


def test_every_leaf_of_the_tree_is_a_flag(flag_values):
    values, groups = flag_values
    names = [name for name, *_ in config.flag_fields(config.RunConfig)]
    assert set(names) | {"cnn_preset"} == set(values)
    assert [f"cnn_{f.name}" for f in dataclasses.fields(cnn.Config)] == [
        n for n in names if n.startswith("cnn_") and n not in ("cnn_mode", "cnn_params")
    ]
    assert [f"refined_{f.name}" for f in dataclasses.fields(cnn.Config)] == [
        n for n in names if n.startswith("refined_") and n not in ("refined_scale", "refined_space")
    ]
    cnn_refined = {
        "superpixel_size",
        "compactness",
        "refined_scale",
        "refined_space",
        "output_superpixel_size",
        "full_size_output",
        "split_threshold",
        "split_size_scale",
        "split_oversegmentation",
        "n_fits",
    }
    assert cnn_refined <= set(groups["cnn_refined"])
    assert {"space", "k_min", "k_max", "covariance_type", "xy_weight"} <= set(groups["methods"])
    assert set(groups) <= set(config.GROUPS)
    assert values["covariance_type"].parser.enum_values == list(pipeline.COVARIANCE_TYPES)


def test_flags_fill_the_tree(flag_values):
    values, _ = flag_values
    values(
        [
            "prog",
            "--method=paper,cnn_ce",
            "--k=elbow,4",
            "--covariance_type=diag",
            "--k_max=6",
            "--cnn_preset=kim2020",
            "--cnn_max_iter=7",
            "--refined_max_iter=9",
            "--pad_multiple=8",
        ]
    )
    run = config.from_flags(values)
    # cnn_refined's CNN starts from its own preset, not --cnn_preset.
    assert run.options.refined == dataclasses.replace(cnn.Config.refined(), max_iter=9)
    assert run.method == pipeline.METHODS + ("cnn_ce",)
    assert run.k == ("elbow", 4)
    assert run.options.covariance_type == "diag" and run.options.k_max == 6
    assert run.options.cnn == dataclasses.replace(cnn.Config.kim2020(), max_iter=7)
    assert run.pad_multiple == 8
    settings = config.label_settings(run)
    assert settings["covariance_type"] == "diag" and settings["cnn_max_iter"] == 7
    assert "method" not in settings and "batch_size" not in settings  # labels do not depend


def test_defaults_are_the_library_defaults(flag_values):
    values, _ = flag_values
    values(["prog"])
    assert config.from_flags(values) == config.RunConfig()
    assert config.RunConfig().options == pipeline.Options()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pad_multiple=0"], "pad_multiple must be >= 1"),
        (["--k=elbow,elbow"], "K candidates repeat"),
        (["--k_min=5", "--k_max=3"], "k_min <= k_max"),
        (["--cnn_n_channels=2"], "n_channels"),
        (["--xy_weight=-1"], "xy_weight"),
    ],
)
def test_bad_settings_raise_once(flag_values, argv, message):
    values, _ = flag_values
    values(["prog", *argv])
    with pytest.raises(ValueError, match=message):
        config.from_flags(values)


def test_package_is_lazy():
    code = (
        "import sys, jaxseg; assert 'jax' not in sys.modules and 'jaxseg.report' not in "
        "sys.modules; jaxseg.segment; jaxseg.metrics; jaxseg.data; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
