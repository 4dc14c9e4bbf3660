"""Run in a subprocess with several (forced) CPU devices by tests/test_devices*.py: an agent's update on a
(seed, data) mesh against the same update on one device, for the layouts given. Prints one JSON line per
(agent, layout): the largest absolute and relative difference over every output leaf, and whether the
compiled program holds cross-device reductions (a data axis that XLA really split).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/mesh_check.py td3 1x2 1x4 2x1 2x2
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from core import devices
from core import seeds as seeding

NUM_SEEDS = 2
BATCH = 8


def stacked_batches(make, n):
    return seeding.stack([make(seed) for seed in range(n)])


def offpolicy_case(name):
    """(update_one, states, args): agent.update(state, batch, step, key) of an off-policy agent."""
    import importlib

    import batches  # tests/batches.py (this script runs from tests/)
    agent = importlib.import_module(f"agents.{name}")
    if name in ("drqv2", "drm"):
        config = agent.Config(hidden_dim=32, feature_dim=8, image_size=32, batch_size=BATCH)
        obs_shape, make = (32, 32, 9), lambda s: batches.pixels_batch(s, batch_size=BATCH)
    else:
        config = agent.Config(hidden_dim=32, batch_size=BATCH)
        obs_shape, make = (batches.STATE_DIM,), lambda s: batches.states_batch(s, batch_size=BATCH)
    keys = jax.random.split(jax.random.PRNGKey(0), NUM_SEEDS)
    states = seeding.stack([agent.create(k, obs_shape, batches.ACTION_DIM, config) for k in keys])
    batch = stacked_batches(make, NUM_SEEDS)
    steps = jnp.full((NUM_SEEDS,), 10_000, jnp.int32)
    return agent.update, states, (batch, steps, jax.random.split(jax.random.PRNGKey(1), NUM_SEEDS)), (0,)


CASES = {"td3": offpolicy_case, "drqv2": offpolicy_case, "drm": offpolicy_case}


def max_differences(a, b):
    abs_diff, rel_diff = 0.0, 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d = np.abs(x - y)
        abs_diff = max(abs_diff, float(d.max(initial=0.0)))
        rel_diff = max(rel_diff, float((d / (np.abs(y) + 1e-6)).max(initial=0.0)))
    return abs_diff, rel_diff


def main(name, layouts):
    fn, states, args, batch_args = CASES[name](name)
    reference = seeding.over_seeds(fn, "unroll")(states, *args)
    for spec in layouts:
        layout = devices.plan(spec, NUM_SEEDS, BATCH)
        mesh = devices.make_mesh(layout)
        program = seeding.over_seeds(fn, "unroll", mesh=mesh)
        placed = [devices.put_batch(a, mesh) if i in batch_args else devices.put_seeds(a, mesh)
                  for i, a in enumerate(args)]
        placed_states = devices.put_seeds(states, mesh)
        out = program(placed_states, *placed)
        text = program.lower(placed_states, *placed).compile().as_text()
        abs_diff, rel_diff = max_differences(out, reference)
        print(json.dumps({"agent": name, "layout": spec, "abs": abs_diff, "rel": rel_diff,
                          "all_reduce": "all-reduce" in text}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
