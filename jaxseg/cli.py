"""`jaxseg-run` (and `python experiments/run.py`): the paper's experiments from the command line.

  jaxseg-run --method=gmm_kmeans                 # the five embedded sample images
  jaxseg-run --method=all --cnn_max_iter=100     # every method and variant
  jaxseg-run --method=kmeans,gmm,gmm_kmeans --dataset=bsds300 --data_dir=../shared/data

Every setting of `jaxseg.config.RunConfig` is a flag of the same name; `--help` lists them by
group with their choices. Writes label maps, pictures, metrics.csv, timings.csv, summary.json,
report.md and summary.png under --output_dir (default runs/<dataset>-<method>); rerunning the
same command resumes. A bad setting prints one `error:` line and exits with status 2 before any
work; a run in which nothing succeeded exits with status 1.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

from absl import app, flags

from jaxseg import config as config_lib

__all__ = ["main", "run"]

# The run's settings: one flag per field of `config.RunConfig` (group -> flag names).
_CONFIG_GROUPS = config_lib.define_flags()
# Where the run goes and how processes meet: (kind, name, default, help, group).
_CLI_FLAGS = (
    ("string", "output_dir", None, "Run directory (default: runs/<dataset>-<method>).", "output"),
    (
        "string",
        "compilation_cache_dir",
        "~/.cache/jaxseg/xla",
        "JAX persistent compilation cache: reruns skip compiling ('' disables it).",
        "output",
    ),
    (
        "string",
        "coordinator_address",
        None,
        "host:port of process 0, for a multi-process run (default: $JAXSEG_COORDINATOR_ADDRESS).",
        "distributed",
    ),
    (
        "integer",
        "num_processes",
        None,
        "Processes in a multi-process run (default: $JAXSEG_NUM_PROCESSES).",
        "distributed",
    ),
    (
        "integer",
        "process_id",
        None,
        "This process's index, 0 to num_processes-1 (default: $JAXSEG_PROCESS_ID).",
        "distributed",
    ),
    (
        "bool",
        "distributed",
        False,
        "Start jax.distributed from the cluster's environment (Cloud TPU pod, SLURM, Open MPI).",
        "distributed",
    ),
)
for _kind, _name, _default, _help, _ in _CLI_FLAGS:
    getattr(flags, f"DEFINE_{_kind}")(_name, _default, _help)


def _group(group: str) -> list[str]:
    return _CONFIG_GROUPS.get(group, []) + [f[1] for f in _CLI_FLAGS if f[4] == group]


def _prog() -> str:
    return Path(sys.argv[0]).name or "jaxseg-run"


def help_text() -> str:
    """The grouped flag list `--help` prints."""
    lines = [f"usage: {_prog()} [--flag=value ...]", "", textwrap.dedent(__doc__).strip(), ""]
    for group in config_lib.GROUPS:
        lines.append(f"{group}:")
        for name in _group(group):
            flag = flags.FLAGS[name]
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            help = textwrap.fill(
                f"{flag.help}{default}",
                width=96,
                initial_indent="      ",
                subsequent_indent="      ",
            )
            lines += [f"  --{name}", help]
        lines.append("")
    lines.append("--helpfull lists absl's own flags too.")
    return "\n".join(lines)


def _error(message) -> int:
    print(f"{_prog()}: error: {message}", file=sys.stderr)
    return 2


def main(argv) -> int:
    """Validates the flags, then runs (`jaxseg.runner.run`)."""
    if len(argv) > 1:
        return _error(f"unexpected arguments {argv[1:]}")
    try:
        config = config_lib.from_flags()
    except ValueError as error:
        return _error(error)
    output_dir = flags.FLAGS.output_dir
    if output_dir is None:
        name = Path(config.dataset).name or "dataset"
        output_dir = Path("runs") / f"{name}-{'+'.join(flags.FLAGS.method)}"
    # Imported here: JAX loads only once the flags are valid (and --help stays fast).
    import jax

    from jaxseg import distributed, runner

    try:
        distributed.initialize(  # multi-process runs: before any other JAX work
            flags.FLAGS.coordinator_address,
            flags.FLAGS.num_processes,
            flags.FLAGS.process_id,
            auto=flags.FLAGS.distributed,
        )
    except ValueError as error:
        return _error(error)
    if flags.FLAGS.compilation_cache_dir:
        cache = Path(flags.FLAGS.compilation_cache_dir).expanduser()
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        summary = runner.run(config, output_dir)
    except (ValueError, FileNotFoundError) as error:
        return _error(error)
    if summary is not None and summary.failures and not summary.units:
        logging.error("every image failed: see %s", Path(output_dir) / "report.md")
        return 1
    return 0


def _parse(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported on one `error:` line (status 2)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.exit(_error(error))


def run() -> None:
    """The `jaxseg-run` console script."""
    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        print(help_text())
        sys.exit(0)
    app.run(main, flags_parser=_parse)
