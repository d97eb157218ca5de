"""`jaxseg-download` (or `python -m jaxseg.download`): fetch BSDS500 into a data folder.

    jaxseg-download --data_dir=data                       # the official tarball (~70 MB)
    jaxseg-download --data_dir=data --url=BSR_bsds500.tgz # a copy on disk (path or URL)

Unpacks `BSR/BSDS500/data/{images,groundTruth}` to `<data_dir>/BSDS500/` (see
`jaxseg.data.download_bsds500`) and prints the `--data_dir` to pass to `jaxseg-run`.
"""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

from absl import app, flags

from jaxseg import data

__all__ = ["main", "run"]

_URL = flags.DEFINE_string(
    "url", data.BSDS500_URL, "Where the BSR_bsds500.tgz tarball is: a URL, or a local file path."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "data", "Folder to unpack into: it receives BSDS500/ (must not hold one yet)."
)


def _as_url(location: str) -> str:
    """A local path (existing file) becomes a file:// URL; anything else is taken as a URL."""
    path = Path(location).expanduser()
    return path.resolve().as_uri() if path.is_file() else location


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    url = _as_url(_URL.value)
    if "://" not in url:
        sys.exit(f"error: {_URL.value} is neither an existing file nor a URL")
    try:
        dest = data.download_bsds500(url, _DATA_DIR.value)
    except (OSError, ValueError, urllib.error.URLError) as error:
        sys.exit(f"error: could not get BSDS500 from {_URL.value}: {error}")
    print(f"BSDS500 is in {dest / 'BSDS500'}; use --data_dir={dest} (or JAXSEG_DATA_DIR={dest})")


def run() -> None:
    """Console-script entry point."""
    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        # A console script's __main__ defines no flags: list this module's own.
        module = sys.argv[0] if __name__ == "__main__" else __name__  # absl's name for it
        print(f"{__doc__.strip()}\n\nflags:\n{flags.FLAGS.module_help(module)}")
        sys.exit(0)
    app.run(main)


if __name__ == "__main__":
    run()
