"""What every benchmark suite shares: where the BSDS data is."""

import os
from pathlib import Path

from absl import flags

_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    None,
    "Folder holding BSDS500/ (default: $JAXSEG_DATA_DIR, else ../shared/data beside the repo).",
)


def data_dir() -> Path:
    """The folder holding BSDS500/: --data_dir, $JAXSEG_DATA_DIR, else ../shared/data."""
    if _DATA_DIR.value:
        return Path(_DATA_DIR.value)
    return Path(
        os.environ.get("JAXSEG_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data")
    )
