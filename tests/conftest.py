"""Shared fixtures: where the BSDS data lives, and how its absence is treated."""

import os
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


def _shared_data_dir() -> Path:
    return Path(os.environ.get("JAXSEG_DATA_DIR", REPO.parent / "shared" / "data"))


def _require(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    message = f"{what} not found at {path} (set JAXSEG_DATA_DIR to the folder holding BSDS500/)"
    if os.environ.get("CI"):
        pytest.fail(message + "; under CI the shared data must be present")
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding BSDS500/ (and bsds-bench/); fails under CI when absent."""
    root = _shared_data_dir()
    _require(root / "BSDS500", "BSDS500")
    return root


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Small official files copied into tests/data so metric tests run on any clone."""
    return TEST_DATA


@pytest.fixture(scope="module", autouse=True)
def _free_compiled_programs():
    """Drops each module's compiled programs when it ends. XLA's CPU code takes memory maps
    (~550 per compile of `pmi.affinity`, measured), and one process may hold at most
    vm.max_map_count (65530 by default): the whole suite in one process reached it and
    crashed inside the compiler."""
    yield
    jax.clear_caches()
