"""Benchmarks: jaxseg against its peers, measured side by side in one run.

  python experiments/bench.py --suites=clustering,cnn,metrics,superpixels --out_dir=bench_out

Each suite lives in experiments/benchmarks/<suite>.py and exposes `run(out_dir) -> list[dict]`
(one row per measurement) and prints its own table. This script writes every row, with the
machine and library versions, to `<out_dir>/bench.json`.
"""

import importlib
import json
import os
import platform
from pathlib import Path

import jax
from absl import app, flags

SUITES = ("clustering", "cnn", "metrics", "superpixels", "hierarchy")

_SUITES = flags.DEFINE_list("suites", list(SUITES), f"Which suites to run, from {SUITES}.")
_OUT_DIR = flags.DEFINE_string("out_dir", "bench_out", "Where bench.json and suite files go.")

# Import every suite up front so each can define its own flags.
_MODULES = {name: importlib.import_module(f"benchmarks.{name}") for name in SUITES}


def main(argv):
    del argv
    unknown = sorted(set(_SUITES.value) - set(SUITES))
    if unknown:
        raise app.UsageError(f"unknown suites {unknown}; choose from {SUITES}")
    out_dir = Path(_OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
        },
        "suites": {},
    }
    for name in _SUITES.value:
        print(f"\n=== {name} ===", flush=True)
        report["suites"][name] = _MODULES[name].run(out_dir)
        (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out_dir / 'bench.json'}")


if __name__ == "__main__":
    app.run(main)
