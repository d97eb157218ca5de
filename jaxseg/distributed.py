"""Data-parallel execution over the devices of a host, and over many hosts.

jaxseg's per-image work is embarrassingly parallel: every image has its own key, parameters and
solver state, and no result depends on another image. So:

- Within a process, a batch of images is split along its leading axis over a 1-D
  `jax.sharding.Mesh` of the process's local devices with `jax.shard_map`: every device runs the
  batched function on its own shard, its `lax.while_loop`s stop when *its* images have converged,
  and no collective is compiled in. (Plain `jit` with a batch-sharded input would all-reduce the
  loop predicate of a vmapped `while_loop` across devices on every iteration, running every device
  until the slowest image of the whole batch converges.)
- Across processes (`jax.distributed`, one process per host or per GPU), each process handles its
  own contiguous slice of the dataset (`process_indices`) on its own local mesh, at its own pace.
  Nothing but the end-of-run `barrier` communicates. A global mesh would buy nothing for
  independent images and would force every process into lock-step with equal batch shapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

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

_ENV_COORDINATOR = "JAXSEG_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAXSEG_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXSEG_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> None:
    """Starts `jax.distributed` when a multi-process run is asked for; a no-op otherwise.

    Call it before any other JAX work. Arguments override the environment variables
    `JAXSEG_COORDINATOR_ADDRESS` (`host:port` of process 0), `JAXSEG_NUM_PROCESSES` and
    `JAXSEG_PROCESS_ID`. With none of them set and no arguments, nothing is started unless
    `auto` is True: then JAX detects the cluster from its environment (Cloud TPU VM / pod slice,
    SLURM, Open MPI, `JAX_COORDINATOR_ADDRESS`), filling in whatever was not given. A second
    call once `jax.distributed` is running does nothing.
    """
    coordinator_address = coordinator_address or os.environ.get(_ENV_COORDINATOR)
    if num_processes is None:
        num_processes = _env_int(_ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(_ENV_PROCESS_ID)
    if coordinator_address is None and num_processes is None and process_id is None and not auto:
        return
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if jax.distributed.is_initialized():
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
    """Waits until every process reaches the barrier called `name` (no-op with one process).

    Every process must call the same barriers in the same order.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def process_indices(n_items: int) -> np.ndarray:
    """The indices in `range(n_items)` that this process handles: one contiguous block each.

    Blocks differ in length by at most one; with more processes than items some are empty.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    return np.array_split(np.arange(n_items), jax.process_count())[jax.process_index()]


def data_parallel(fn: Callable, *, devices: Sequence[jax.Device] | None = None) -> Callable:
    """Runs `fn` with the leading (batch) axis of every argument and output split over devices.

    `fn` takes and returns pytrees of arrays that all share the same leading batch size, and must
    treat batch items independently (output item `i` depends only on input item `i`, as for a
    `jax.vmap`-ed function): each device calls it on its own shard of the batch. The returned
    function pads the batch to a multiple of the device count with copies of its first item
    (valid inputs, whose results are dropped), places the shards on `devices` (default: this
    process's local devices), runs the jit-compiled `fn` on every shard, and returns outputs of
    the original batch size `b`. Compiled once per padded input shape.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_parallel needs at least one device")
    foreign = [d for d in devices if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(f"data_parallel devices must belong to this process, got {foreign}")
    mesh = Mesh(np.asarray(devices), (BATCH_AXIS,))
    spec = PartitionSpec(BATCH_AXIS)
    sharding = NamedSharding(mesh, spec)
    # check_vma=False: per-item loops carry values that become device-varying inside the loop
    # body, which the varying-axis type check rejects; fn has no collectives to check.
    compiled = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))

    def run(*args):
        leaves = jax.tree.leaves(args)
        if not leaves:
            raise ValueError("data_parallel needs at least one array argument")
        if any(np.ndim(leaf) == 0 for leaf in leaves):
            raise ValueError("every argument of a data_parallel function needs a batch axis")
        batch = leaves[0].shape[0]
        if any(leaf.shape[0] != batch for leaf in leaves):
            sizes = sorted({leaf.shape[0] for leaf in leaves})
            raise ValueError(f"data_parallel arguments disagree on the batch size: {sizes}")
        if batch == 0:
            raise ValueError("data_parallel needs a non-empty batch")
        pad = -batch % len(devices)

        def place(leaf):
            if pad:
                # Host arrays are padded on the host, device arrays where they live.
                xp = np if isinstance(leaf, np.ndarray) else jnp
                leaf = xp.concatenate([leaf, xp.repeat(leaf[:1], pad, axis=0)])
            return jax.device_put(leaf, sharding)

        outputs = compiled(*jax.tree.map(place, args))
        if not pad:
            return outputs
        return jax.tree.map(lambda out: out[:batch], outputs)

    return run
