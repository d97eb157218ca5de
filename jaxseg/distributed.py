"""Data-parallel execution over the devices of a host, and over many hosts.

jaxseg's per-image work is embarrassingly parallel: every image has its own key, parameters and
solver state. So a batch of images is sharded along its leading axis over a `jax.sharding.Mesh`
of this process's devices, and in a multi-host run (`jax.distributed`) each process handles its
own contiguous slice of the dataset. No collectives are needed inside the computation.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "barrier",
    "data_parallel",
    "initialize",
    "is_main_process",
    "process_indices",
]

BATCH_AXIS = "batch"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts `jax.distributed` when a multi-process run is asked for; a no-op otherwise.

    Arguments override the environment variables `JAXSEG_COORDINATOR_ADDRESS`,
    `JAXSEG_NUM_PROCESSES` and `JAXSEG_PROCESS_ID`. With none of them set and no arguments,
    nothing is started (on a Cloud TPU pod or a SLURM cluster call `jax.distributed.initialize()`
    yourself, or pass `--distributed` to the runner, and JAX reads the cluster's environment).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAXSEG_COORDINATOR_ADDRESS")
    if num_processes is None and "JAXSEG_NUM_PROCESSES" in env:
        num_processes = int(env["JAXSEG_NUM_PROCESSES"])
    if process_id is None and "JAXSEG_PROCESS_ID" in env:
        process_id = int(env["JAXSEG_PROCESS_ID"])
    if coordinator_address is None and num_processes is None and process_id is None:
        return
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def is_main_process() -> bool:
    """True in process 0, which assembles the run's summary."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier called `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def process_indices(n_items: int) -> np.ndarray:
    """The indices in `range(n_items)` that this process handles: one contiguous block each."""
    return np.array_split(np.arange(n_items), jax.process_count())[jax.process_index()]


def data_parallel(fn: Callable, *, devices=None) -> Callable:
    """Runs `fn` with the leading (batch) axis of every argument and output sharded over devices.

    `fn` takes and returns pytrees of arrays that all share the same leading batch size `b`. The
    returned function pads the batch to a multiple of the device count with copies of its first
    item (whose results are dropped), places the shards on `devices` (default: this process's
    local devices), calls the jit-compiled `fn`, and returns outputs of batch size `b` again.
    Compiled once per padded input shape.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = Mesh(np.asarray(devices), (BATCH_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    compiled = jax.jit(fn, out_shardings=sharding)

    def run(*args):
        leaves = jax.tree.leaves(args)
        if not leaves:
            raise ValueError("data_parallel needs at least one array argument")
        batch = leaves[0].shape[0]
        if any(np.ndim(leaf) == 0 or leaf.shape[0] != batch for leaf in leaves):
            raise ValueError("every argument of a data_parallel function needs the same batch axis")
        pad = -batch % len(devices)

        def place(leaf):
            if pad:
                leaf = jnp.concatenate([leaf, jnp.repeat(leaf[:1], pad, axis=0)])
            return jax.device_put(leaf, sharding)

        outputs = compiled(*jax.tree.map(place, args))
        return jax.tree.map(lambda out: out[:batch], outputs)

    return run
