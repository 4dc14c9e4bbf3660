"""Many seeds in one process: agent states (any pytrees) stacked on a leading seed axis.

    states = seeds.stack([agent.create(k, ...) for k in keys])
    update_all = seeds.over_seeds(agent.update, "map")
    states, metrics = update_all(states, batches, steps, update_keys)   # every argument has a seed axis

Strategies ("auto": "unroll" on the CPU; on an accelerator "map", or "vmap" for dense-only programs):
  "vmap": jax.vmap. One batched program; fine for dense networks, but vmapped convolutions over
          per-seed weights become grouped convolutions, which are slow on GPUs.
  "map":  jax.lax.map, the seeds one after another inside one jitted program. Measured on an H100 for
          DrQ-v2's pixel update over 8 seeds: 276 seed-updates/s with "map" vs 130 with "vmap"
          (355 vs 51 with bfloat16 compute) - see shared/ARCHITECTURE.md.
  "unroll": the seeds' programs side by side in one jitted program (a Python loop at trace time):
          no batched convolutions and no while loop; compile time grows with the number of seeds.
A single seed always runs the plain program, whatever the strategy.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

STRATEGIES = ("auto", "vmap", "map", "unroll")


def stack(trees: Sequence[Any]) -> Any:
    """Stack pytrees of identical structure into one pytree with a leading seed axis."""
    if len(trees) == 0:
        raise ValueError("stack needs at least one pytree")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, i: int) -> Any:
    """Seed i's pytree out of a stacked one."""
    return jax.tree.map(lambda leaf: leaf[i], tree)


def num_seeds(tree: Any) -> int:
    """Size of the leading seed axis of a stacked pytree."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("the pytree has no array leaves")
    return leaves[0].shape[0]


def over_seeds(fn: Callable, strategy: str = "map", jit: bool = True, mesh=None) -> Callable:
    """Map `fn` over a leading seed axis of every positional argument (and of every output).

    `fn` must be pure; fix static or shared arguments with functools.partial first, e.g.
    `over_seeds(functools.partial(agent.act, eval_mode=True), "vmap")`. Both strategies give each
    seed the numbers of a single-seed call. With jit=True the result is one jitted program.
    `mesh` (core/devices.py): the seed axis is split over the mesh's "seed" devices, each running its own
    seeds with `strategy`; batches laid over "data" are split there (XLA's automatic partitioning).
    """
    if strategy == "auto":
        strategy = default_strategy()
    if strategy == "vmap":
        many = jax.vmap(fn)
    elif strategy == "map":
        def many(*args):
            return jax.lax.map(lambda seed_args: fn(*seed_args), args)
    elif strategy == "unroll":
        def many(*args):
            outs = [fn(*unstack(args, i)) for i in range(num_seeds(args))]
            return stack(outs)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {STRATEGIES}")

    def mapped(*args):
        if num_seeds(args) == 1:  # one seed: the plain program (a 1-step lax.map ran 5x slower on a CPU)
            out = fn(*jax.tree.map(lambda leaf: leaf[0], args))
            return jax.tree.map(lambda leaf: leaf[None], out)
        return many(*args)

    if mesh is not None:  # manual over "seed" (each device its seeds), automatic over "data"
        from core.devices import SEED
        # check_vma=False: jax's type check of manual axes rejects plain single-device code whose lax.cond
        # branches or scan carries mix per-seed values with constants (TD3+BC's critic-only updates, PRDC's
        # neighbour scan, PPO's early stop); the agents write no collectives, so it has nothing to protect.
        mapped = jax.shard_map(mapped, mesh=mesh, in_specs=P(SEED), out_specs=P(SEED), axis_names={SEED},
                               check_vma=False)
    return jax.jit(mapped) if jit else mapped


def default_strategy(backend: str | None = None, dense: bool = False) -> str:
    """"unroll" on the CPU (where lax.map ran 10x and vmap 2x slower per seed for DrQ-v2, and vmap 2.3x
    slower for TD3+BC's MLP update over 3 seeds; docs/multi_seed.md). On accelerators: "map" for
    programs with convolutions (measured on an H100: vmapped convolutions become slow grouped ones),
    "vmap" for dense-only programs (`dense=True`: MLP agents, one batched matmul per layer; unmeasured)."""
    if (backend or jax.default_backend()) == "cpu":
        return "unroll"
    return "vmap" if dense else "map"


def resolve_strategy(strategy: str, dense: bool = False) -> str:
    """`strategy`, with "auto" replaced by `default_strategy(dense=dense)`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {STRATEGIES}")
    return default_strategy(dense=dense) if strategy == "auto" else strategy
