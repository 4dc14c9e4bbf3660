"""Devices: one mesh with axes ("seed", "data"): seeds spread across devices first, then data parallel
within a seed.

    layout = devices.plan(config.devices, num_seeds=3, batch_size=256)   # "auto" | "N" | "SxD"
    mesh = devices.make_mesh(layout)                 # None when the layout is one device
    update_all = seeds.over_seeds(update, strategy, mesh=mesh)
    states = devices.put_seeds(states, mesh)         # seed axis split over "seed"
    batch = devices.put_batch(host_batch, mesh)      # (S, B, ...): S over "seed", B over "data"

How it runs. `seeds.over_seeds` wraps the per-device program in `jax.shard_map`, manual over "seed"
only: each device runs its own seeds with the chosen seed strategy (map / vmap / unroll). "data" stays
an automatic (GSPMD) axis inside it: a batch laid out over "data" is split over those devices and XLA
inserts the all-reduces, so every batch statistic (a mean loss, its gradient, TD3+BC's mean |Q|, PPO's
advantage normalization) is that of the whole global batch - the program means exactly what the
one-device program means, and agents need no collective of their own. A batch sampled inside a jitted
program is put on "data" by `shard_batch` at the sampler (a no-op without a mesh).

Several processes (`jax.distributed`, `initialize`): the mesh spans every process's devices; host data
that every process holds in full enters through `jax.make_array_from_callback`, each process giving its
devices' slices; results replicated over the mesh read back on every process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

SEED, DATA = "seed", "data"


@dataclasses.dataclass(frozen=True)
class Layout:
    seed: int  # devices along the seed axis (each holds num_seeds / seed seeds)
    data: int  # devices along the data axis (each holds batch_size / data rows of a seed's batch)

    @property
    def size(self) -> int:
        return self.seed * self.data

    def __str__(self) -> str:
        return f"{self.seed}x{self.data}"


def plan(spec: str, num_seeds: int, batch_size: int, available: Optional[int] = None) -> Layout:
    """The (seed, data) layout of `--config.devices`:
      "auto": every device there is; seeds first (the largest divisor of the seed count that divides the
              device count), then the data axis (the largest divisor of the rest that divides the batch);
              devices that fit neither are left idle;
      "N":    N devices, seeds first, the rest on data; N must split into seed x data that divide the
              seed count and the batch size;
      "SxD":  exactly S devices on the seed axis and D on the data axis.
    Bad input stops here, before any work, with the numbers involved."""
    available = len(jax.devices()) if available is None else available
    spec = str(spec).strip().lower()
    if num_seeds < 1 or batch_size < 1:
        raise ValueError(f"devices: need at least one seed and a batch of at least 1, got {num_seeds} seeds, "
                         f"batch {batch_size}")
    if spec == "auto":
        seed = math.gcd(num_seeds, available)
        rest = available // seed
        data = max(d for d in range(1, rest + 1) if rest % d == 0 and batch_size % d == 0)
        return Layout(seed, data)
    try:
        if "x" in spec:
            seed, data = (int(part) for part in spec.split("x"))
        else:
            total = int(spec)
            seed = math.gcd(num_seeds, total)
            data = total // seed if total > 0 else 0
    except ValueError:
        raise ValueError(f"--config.devices={spec!r} is not valid; use 'auto', a device count such as '4', "
                         f"or seed x data devices such as '2x4'") from None
    if seed < 1 or data < 1:
        raise ValueError(f"--config.devices={spec!r}: device counts must be >= 1")
    if seed * data > available:
        raise ValueError(f"--config.devices={spec!r} asks for {seed * data} devices ({seed} seed x {data} data); "
                         f"{available} are available ({jax.default_backend()})")
    if num_seeds % seed:
        raise ValueError(f"--config.devices={spec!r}: {seed} devices on the seed axis do not divide the "
                         f"{num_seeds} seeds; use a seed count that is a multiple of {seed}, or 'auto'")
    if batch_size % data:
        raise ValueError(f"--config.devices={spec!r}: {data} devices on the data axis do not divide the batch "
                         f"of {batch_size}; valid data-axis sizes: "
                         f"{[d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= available]}")
    return Layout(seed, data)


def make_mesh(layout: Layout, devices: Optional[Sequence] = None) -> Optional[Mesh]:
    """The ("seed", "data") mesh of `layout` over the first layout.size devices (jax.devices() order,
    which keeps a process's devices together), or None for a one-device layout (the plain programs)."""
    if layout.size == 1:
        return None
    devices = list(jax.devices() if devices is None else devices)[:layout.size]
    return Mesh(np.array(devices).reshape(layout.seed, layout.data), (SEED, DATA))


# ------------------------------------------------------------------------------------ placing arrays

def _put(tree: Any, sharding) -> Any:
    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.is_fully_addressable and jax.process_count() == 1:
            return jax.device_put(leaf, sharding)
        value = np.asarray(leaf)  # every process holds the whole value: each gives its devices' slices
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.tree.map(put, tree)


def put_seeds(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Leading seed axis over "seed", replicated over "data" (agent states, keys, per-seed inputs)."""
    return tree if mesh is None else _put(tree, NamedSharding(mesh, P(SEED)))


def put_batch(tree: Any, mesh: Optional[Mesh]) -> Any:
    """(S, B, ...) batches: S over "seed", B over "data" (leaves of rank 1, per-seed values, over "seed" only)."""
    if mesh is None:
        return tree
    by_seed, by_seed_and_row = NamedSharding(mesh, P(SEED)), NamedSharding(mesh, P(SEED, DATA))
    return jax.tree.map(lambda leaf: _put(leaf, by_seed_and_row if np.ndim(leaf) >= 2 else by_seed), tree)


def put_replicated(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Shared by every seed and device (an offline dataset, a nearest-neighbour index)."""
    return tree if mesh is None else _put(tree, NamedSharding(mesh, P()))


def shard_batch(tree: Any, axis: int = 0) -> Any:
    """Inside a program run by `seeds.over_seeds` on a mesh: lay `axis` (the batch axis of one seed's
    batch) over "data". Without a mesh, or with one data device, it returns `tree` as it is."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA not in mesh.axis_names or mesh.shape[DATA] == 1:
        return tree

    def constrain(leaf):
        if leaf.ndim <= axis:
            return leaf
        return jax.lax.with_sharding_constraint(leaf, P(*([None] * axis), DATA))
    return jax.tree.map(constrain, tree)


def replicated_in_program(tree: Any) -> Any:
    """Arrays closed over by a per-seed program (an offline dataset, a neighbour index), marked replicated
    on the mesh of the program that reads them. Inside `over_seeds`' shard_map a closed-over jit argument
    keeps the outer mesh in its type, and jax 0.10 refuses to index it ("Context mesh ... should match the
    mesh of sharding"). Without a mesh it returns `tree` as it is."""
    if jax.sharding.get_abstract_mesh().empty:
        return tree
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, P()), tree)


def to_host(tree: Any) -> Any:
    """numpy copies of (possibly multi-process) arrays: replicated ones read locally, others gathered."""
    def get(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated:
            return np.asarray(leaf)
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return jax.tree.map(get, tree)


# ------------------------------------------------------------------------------------ several processes

def _wait_for_coordinator(coordinator: str, process_id: int, num_processes: int, timeout_s: float) -> None:
    """jax's distributed client aborts the whole process (LOG(FATAL), no Python exception) when it cannot
    reach the coordinator, so reachability is checked here first: process 0 must be able to serve the port,
    the others wait until something accepts connections there."""
    host, _, port = coordinator.rpartition(":")
    host = host.strip("[]")
    if process_id == 0:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, int(port)))
        except OSError as e:
            raise RuntimeError(f"process 0 of {num_processes} cannot serve --config.coordinator={coordinator}: {e} "
                               f"(process 0 must run on that host, on a free port)") from None
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"jax.distributed could not join {coordinator} as process {process_id} of "
                                   f"{num_processes} within {timeout_s} s: nothing accepts connections there ({e}); "
                                   f"start process 0 (--config.process_id=0) on that host, or check "
                                   f"--config.coordinator") from None
            time.sleep(0.2)


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1, timeout_s: int = 60) -> bool:
    """`jax.distributed.initialize` when the run spans several processes: with explicit coordinator
    flags, or under a SLURM job step of several tasks (JAX reads SLURM's variables itself). Returns
    whether it joined. Must run before any JAX computation. An unreachable coordinator stops with the
    address and the numbers involved."""
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1")) or 1)
    if not coordinator and not (os.environ.get("SLURM_JOB_ID") and slurm_tasks > 1):
        if num_processes > 1 or process_id >= 0:
            raise ValueError("--config.num_processes / --config.process_id need --config.coordinator "
                             "(host:port of process 0)")
        return False
    kwargs = {"initialization_timeout": int(timeout_s)}
    if coordinator:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--config.coordinator={coordinator!r} needs --config.num_processes >= 1 and "
                             f"0 <= --config.process_id < num_processes; got {num_processes} and {process_id}")
        if ":" not in coordinator or not coordinator.rpartition(":")[2].isdigit():
            raise ValueError(f"--config.coordinator={coordinator!r}: expected host:port, e.g. 10.0.0.1:1234")
        _wait_for_coordinator(coordinator, process_id, num_processes, timeout_s)
        kwargs.update(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # the client's errors are RuntimeError / XlaRuntimeError with a long trace
        where = coordinator or "the SLURM job's coordinator"
        raise RuntimeError(f"jax.distributed could not join {where} as process {process_id} of {num_processes} "
                           f"within {timeout_s} s: {str(e).splitlines()[0][:300]}") from None
    return True
