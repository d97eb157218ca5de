"""jaxseg.distributed: sharded == single-device for every solver, and a two-process run.

Several devices and processes need a fresh interpreter (XLA_FLAGS is read when jax starts), so
those tests run this file as a script in subprocesses: `python test_distributed.py <worker> ...`
prints one JSON line that the test checks.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxseg import distributed

REPO = Path(__file__).resolve().parents[1]
N_DEVICES = 4
TIMEOUT_S = 240


def _env(n_devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXSEG_")}
    if "JAXSEG_DATA_DIR" in os.environ:
        env["JAXSEG_DATA_DIR"] = os.environ["JAXSEG_DATA_DIR"]
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _worker(*args: str) -> dict:
    """Runs `_main(args)` of this file in a subprocess with N_DEVICES CPU devices."""
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        env=_env(N_DEVICES),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("n_processes", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n_items", [0, 1, 5, 7, 500])
def test_process_indices_partition_the_dataset(monkeypatch, n_items, n_processes):
    monkeypatch.setattr(jax, "process_count", lambda: n_processes)
    blocks = []
    for index in range(n_processes):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        blocks.append(distributed.process_indices(n_items))
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n_items))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    for block in blocks:  # contiguous
        np.testing.assert_array_equal(np.diff(block), np.ones(max(len(block) - 1, 0)))


def test_process_indices_rejects_negative():
    with pytest.raises(ValueError, match="n_items"):
        distributed.process_indices(-1)


@pytest.fixture
def fake_jax_distributed(monkeypatch):
    """Records the arguments jax.distributed.initialize would get, instead of starting it."""
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    for name in ("JAXSEG_COORDINATOR_ADDRESS", "JAXSEG_NUM_PROCESSES", "JAXSEG_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_initialize_without_settings_starts_nothing(fake_jax_distributed):
    distributed.initialize()
    assert fake_jax_distributed == []


def test_initialize_auto_lets_jax_detect_the_cluster(fake_jax_distributed):
    distributed.initialize(auto=True)
    assert fake_jax_distributed == [
        {"coordinator_address": None, "num_processes": None, "process_id": None}
    ]


def test_initialize_reads_the_environment_and_arguments_override_it(
    fake_jax_distributed, monkeypatch
):
    monkeypatch.setenv("JAXSEG_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAXSEG_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAXSEG_PROCESS_ID", "3")
    distributed.initialize()
    distributed.initialize("10.0.0.2:99", process_id=1)
    assert fake_jax_distributed == [
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
        {"coordinator_address": "10.0.0.2:99", "num_processes": 4, "process_id": 1},
    ]


def test_initialize_rejects_bad_settings(fake_jax_distributed, monkeypatch):
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        distributed.initialize("127.0.0.1:1234", 0, 0)
    monkeypatch.setenv("JAXSEG_PROCESS_ID", "first")
    with pytest.raises(ValueError, match="JAXSEG_PROCESS_ID"):
        distributed.initialize("127.0.0.1:1234", 2)
    assert fake_jax_distributed == []


def test_data_parallel_rejects_bad_batches():
    run = distributed.data_parallel(lambda x, y: x + y)
    with pytest.raises(ValueError, match="disagree on the batch size: \\[2, 3\\]"):
        run(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="batch axis"):
        run(np.zeros(2), np.float32(1.0))
    with pytest.raises(ValueError, match="non-empty"):
        run(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="at least one array"):
        distributed.data_parallel(lambda: 0)()
    with pytest.raises(ValueError, match="at least one device"):
        distributed.data_parallel(lambda x: x, devices=[])


def test_barrier_and_main_process_in_a_single_process_run():
    distributed.barrier("nothing to wait for")
    assert distributed.is_main_process()


# --------------------------------------------------------------------------- 4 devices


def test_padding_and_sharding_return_the_plain_vmap_results():
    out = _worker("toy")
    assert out["devices"] == N_DEVICES
    assert out["mismatches"] == []


# Minimum fraction of equal labels between the sharded batch and (a) the same batch on one
# device, (b) each image compiled alone. K-means and the GMM converge to a fixed point: 1.0 on
# every CPU seen. The CNN's argmax feeds back into its loss, so float differences between
# compilations (batch of 5 vs 1, AMD vs Intel vector code) flip a few pixels: measured
# 0.9978-0.9984 after 6 iterations (AMD EPYC, two sessions); 0.99 leaves a 5x margin.
AGREEMENT = {"kmeans": 0.999, "gmm": 0.999, "cnn": 0.99}


@pytest.mark.parametrize("solver", ["kmeans", "gmm", "cnn"])
def test_sharded_labels_equal_single_device_labels(solver):
    out = _worker("solver", solver)
    assert out["devices"] == N_DEVICES
    assert out["batch"] % N_DEVICES  # the padding path
    assert out["n_labels"] >= 2  # not a degenerate segmentation
    assert out["agree_single_device"] >= AGREEMENT[solver]
    assert out["agree_one_by_one"] >= AGREEMENT[solver]


# --------------------------------------------------------------------------- 2 processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_py(output_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "experiments" / "run.py"),
        "--method=kmeans",
        "--k=3",
        "--dataset=samples",
        "--num_images=3",
        "--batch_size=2",
        f"--output_dir={output_dir}",
        *flags,
    ]


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    try:
        errors = [proc.communicate(timeout=TIMEOUT_S)[1] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return errors


def test_two_processes_run_a_dataset_and_write_one_summary(tmp_path):
    """Process 0 is configured by flags, process 1 by the environment; 2 devices each."""
    address = f"127.0.0.1:{_free_port()}"
    multi, single = tmp_path / "two-processes", tmp_path / "one-process"
    procs = [
        subprocess.Popen(
            _run_py(
                multi, f"--coordinator_address={address}", "--num_processes=2", "--process_id=0"
            ),
            env=_env(2),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            _run_py(multi),
            env=_env(
                2,
                JAXSEG_COORDINATOR_ADDRESS=address,
                JAXSEG_NUM_PROCESSES="2",
                JAXSEG_PROCESS_ID="1",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    logs = _wait(procs)
    # Each process segmented its own block of the sorted dataset: images 0-1, then image 2.
    assert "3 images): 2 images x 1 units" in logs[0]
    assert "3 images): 1 images x 1 units" in logs[1]
    assert "report.md" in logs[0] and "report.md" not in logs[1]
    _wait([subprocess.Popen(_run_py(single), env=_env(1), stderr=subprocess.PIPE, text=True)])

    summary = json.loads((multi / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert summary["device"]["process_count"] == 2
    assert len(summary["device"]["devices"]) == 4
    assert summary["failures"] == []
    [unit] = summary["units"]
    assert unit["n_images"] == unit["n_scored"] == 3
    # Same labels, so the host-side metrics are bit-identical.
    assert unit["mean"] == reference["units"][0]["mean"]
    assert summary["table_7_3"] == reference["table_7_3"]
    for path in sorted((single / "labels" / "kmeans").glob("*.png")):
        assert (multi / "labels" / "kmeans" / path.name).read_bytes() == path.read_bytes()
    lines = (multi / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4 and lines == (single / "metrics.csv").read_text().splitlines()


# --------------------------------------------------------------------------- workers


def _toy_worker() -> dict:
    """data_parallel over 4 devices vs a plain vmap, for batch sizes 1..9 (padding path), numpy
    and jax inputs, typed keys and pytree outputs; per-item while_loops stopping on their own."""
    import jax.numpy as jnp

    def one(x, key):
        def cond(state):
            return (state[0] < 60) & (jnp.abs(state[1]).sum() > 1e-3)

        def body(state):
            return state[0] + 1, state[1] * 0.5 + 1e-6 * jax.random.normal(key, x.shape)

        n_iter, value = jax.lax.while_loop(cond, body, (0, x))
        return {"n_iter": n_iter, "value": value}

    sharded = distributed.data_parallel(jax.vmap(one))
    mismatches = []
    for batch in (1, 3, 4, 6):
        x = np.random.default_rng(batch).normal(size=(batch, 3)).astype(np.float32) * 10**batch
        keys = jax.random.split(jax.random.key(batch), batch)
        expected = jax.vmap(one)(x, keys)
        for name, args in (("numpy", (x, keys)), ("jax", (jnp.asarray(x), keys))):
            got = sharded(*args)
            for field in expected:
                if got[field].shape != expected[field].shape or not np.allclose(
                    got[field], expected[field], rtol=1e-6, atol=0
                ):
                    mismatches.append(f"batch {batch} {name} {field}")
    return {"devices": jax.local_device_count(), "mismatches": mismatches}


def _tiny_images(n: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Three noisy colour regions per image (different layout and colours per image)."""
    images = []
    for i in range(n):
        rng = np.random.default_rng(i)
        rows, cols = np.mgrid[:height, :width]
        region = (rows > rng.integers(4, height - 4)).astype(int) + (
            cols > rng.integers(4, width - 4)
        )
        colours = rng.uniform(0.1, 0.9, size=(3, 3))
        image = colours[region] + rng.normal(0, 0.03, size=(height, width, 3))
        images.append(np.clip(image, 0, 1))
    return np.stack(images).astype(np.float32)


def _solver_worker(solver: str) -> dict:
    """One solver's labels: data_parallel over 4 devices vs 1 device vs each image alone."""
    from jaxseg import cnn, gmm, kmeans

    batch = 5
    images = _tiny_images(batch)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(0), np.arange(batch))
    if solver == "cnn":
        config = cnn.Config(n_channels=8, max_iter=6, min_labels=2)
        fn = lambda x, k: cnn.segment_batch(x, k, config).labels  # noqa: E731
        args = (images, keys)
    else:
        fit = {"kmeans": kmeans.fit, "gmm": gmm.fit}[solver]
        fn = jax.vmap(lambda x, k: fit(x, 3, k).labels)
        args = (images.reshape(batch, -1, 3), keys)
    sharded = np.asarray(distributed.data_parallel(fn)(*args))
    single = np.asarray(distributed.data_parallel(fn, devices=jax.local_devices()[:1])(*args))
    alone = np.concatenate(
        [np.asarray(jax.jit(fn)(*(a[i : i + 1] for a in args))) for i in range(batch)]
    )
    return {
        "devices": jax.local_device_count(),
        "batch": batch,
        "n_labels": int(min(len(np.unique(labels)) for labels in sharded)),
        "agree_single_device": float(np.mean(sharded == single)),
        "agree_one_by_one": float(np.mean(sharded == alone)),
    }


def _main(argv: list[str]) -> None:
    assert jax.local_device_count() == N_DEVICES, "XLA_FLAGS must be set before jax starts"
    result = _toy_worker() if argv[0] == "toy" else _solver_worker(argv[1])
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
