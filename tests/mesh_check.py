"""Run in a subprocess with several (forced) CPU devices by tests/test_devices*.py: an agent's update on a
(seed, data) mesh against the same update on one device, for the layouts given. Prints one JSON line per
(agent, layout): the largest absolute and relative difference over every output leaf (agent state and
metrics, per-row priorities included), and whether the compiled program holds cross-device reductions (a
data axis that XLA really split).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/mesh_check.py td3 1x2 1x4 2x1 2x2
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/mesh_check.py td3=1x2,2x2 dqn=2x2 tdmpc=2x2

The reference is each seed's update alone, jitted on one device ("seeds sharded over devices give each
seed's single-device numbers"; data parallel "equals the 1-device update on the same global batch").
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
HORIZON = 2  # TD-MPC / MoDem sequences (official 5; shorter compiles faster, the same partitioning)


def stacked_batches(make, n):
    return seeding.stack([make(seed) for seed in range(n)])


def seed_keys(n=NUM_SEEDS):
    return jax.random.split(jax.random.PRNGKey(0), n)


def update_args(batch):
    """(batch, steps, keys) with a leading seed axis: the arguments after the state of agent.update."""
    steps = jnp.full((NUM_SEEDS,), 10_000, jnp.int32)
    return batch, steps, jax.random.split(jax.random.PRNGKey(1), NUM_SEEDS)


def offpolicy_case(name):
    """(update_one, states, args, batch_args): agent.update(state, batch, step, key) of an off-policy agent."""
    import importlib

    import batches  # tests/batches.py (this script runs from tests/)
    agent = importlib.import_module(f"agents.{name}")
    if name in ("drqv2", "drm"):
        # DrM's two settings without an official default: its tests' values
        extra = dict(max_perturb_factor=0.9, target_lambda=0.6) if name == "drm" else {}
        config = agent.Config(hidden_dim=32, feature_dim=8, image_size=32, batch_size=BATCH, **extra)
        obs_shape, make = (32, 32, 9), lambda s: batches.pixels_batch(s, batch_size=BATCH)
    else:
        config = agent.Config(hidden_dim=32, batch_size=BATCH)
        obs_shape, make = (batches.STATE_DIM,), lambda s: batches.states_batch(s, batch_size=BATCH)
    states = seeding.stack([agent.create(k, obs_shape, batches.ACTION_DIM, config) for k in seed_keys()])
    return agent.update, states, update_args(stacked_batches(make, NUM_SEEDS)), (0,)


ATARI_OBS, ATARI_ACTIONS = (20, 20, 4), 3  # tests/test_dqn.py's tiny frames


def atari_case(name):
    """DQN / Rainbow (C51, noisy, prioritized: a "probabilities" column in, per-row "priorities" out)."""
    from agents import dqn, rainbow
    tiny = dict(encoder="nature", hidden_dim=16, expert_hidden=8, num_experts=2, embed_dim=8, batch_size=BATCH)
    agent, config = (dqn, dqn.Config(**tiny)) if name == "dqn" else (rainbow, rainbow.Config(num_atoms=11, **tiny))

    def make(seed):
        rng = np.random.default_rng(seed)
        batch = {
            "obs": jnp.asarray(rng.integers(0, 256, size=(BATCH, *ATARI_OBS)), jnp.uint8),
            "action": jnp.asarray(rng.integers(0, ATARI_ACTIONS, size=(BATCH,)), jnp.float32),
            "reward": jnp.asarray(rng.choice([-1.0, 0.0, 1.0], size=(BATCH,)), jnp.float32),
            "discount": jnp.asarray(np.where(rng.uniform(size=BATCH) < 0.25, 0.0, 0.99), jnp.float32),
            "next_obs": jnp.asarray(rng.integers(0, 256, size=(BATCH, *ATARI_OBS)), jnp.uint8),
        }
        if name == "rainbow":
            batch["probabilities"] = jnp.asarray(rng.uniform(0.01, 0.2, size=(BATCH,)), jnp.float32)
        return batch
    states = seeding.stack([agent.create(k, ATARI_OBS, ATARI_ACTIONS, config) for k in seed_keys()])
    return agent.update, states, update_args(stacked_batches(make, NUM_SEEDS)), (0,)


def sequences(seed, obs, action_dim=2):
    """A sequence replay's batch (batch axis first): obs (B, H+1, ...), action (B, H, A), reward, weights."""
    rng = np.random.default_rng(seed)
    return {"obs": obs(rng),
            "action": jnp.asarray(rng.uniform(-1, 1, (BATCH, HORIZON, action_dim)), jnp.float32),
            "reward": jnp.asarray(rng.uniform(0, 1, (BATCH, HORIZON)), jnp.float32),
            "weights": jnp.asarray(rng.uniform(0.2, 1, BATCH), jnp.float32)}


def tdmpc_case(name):
    """TD-MPC from states: the update on a batch of sequences (per-row "priorities" out)."""
    from agents import tdmpc
    config = tdmpc.Config(latent_dim=8, enc_dim=16, mlp_dim=16, num_samples=16, num_elites=4, iterations=1,
                          batch_size=BATCH, horizon=HORIZON)
    state_dim = 5
    states = seeding.stack([tdmpc.create(k, (state_dim,), 2, config) for k in seed_keys()])
    make = lambda s: sequences(s, lambda rng: jnp.asarray(rng.normal(size=(BATCH, HORIZON + 1, state_dim)),
                                                          jnp.float32))
    return tdmpc.update, states, update_args(stacked_batches(make, NUM_SEEDS)), (0,)


def modem_case(name):
    """MoDem: the update on interaction + demo rows (pixels 16x16 + state), its is_demo mask a batch column."""
    from agents import modem
    config = modem.Config(image_size=16, num_convs=2, latent_dim=8, enc_dim=16, mlp_dim=16, num_channels=4,
                          num_samples=16, num_elites=4, iterations=1, batch_size=BATCH, horizon=HORIZON)
    pixel_shape, state_dim = (16, 16, 3 * config.frame_stack), 5
    states = seeding.stack([modem.create(k, {"pixels": pixel_shape, "state": (state_dim,)}, 2, config)
                            for k in seed_keys()])
    make = lambda s: sequences(s, lambda rng: {
        "pixels": jnp.asarray(rng.integers(0, 256, (BATCH, HORIZON + 1, *pixel_shape)), jnp.uint8),
        "state": jnp.asarray(rng.normal(size=(BATCH, HORIZON + 1, state_dim)), jnp.float32)})
    batch, steps, keys = update_args(stacked_batches(make, NUM_SEEDS))
    is_demo = jnp.stack([modem.demo_rows(BATCH, 3)] * NUM_SEEDS)  # the last 3 rows of each seed's batch
    return modem.update, states, (batch, is_demo, steps, keys), (0, 1)


CASES = {"td3": offpolicy_case, "drqv2": offpolicy_case, "drm": offpolicy_case, "dqn": atari_case,
         "rainbow": atari_case, "tdmpc": tdmpc_case, "modem": modem_case}


def max_differences(a, b):
    abs_diff, rel_diff = 0.0, 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d = np.abs(x - y)
        abs_diff = max(abs_diff, float(d.max(initial=0.0)))
        rel_diff = max(rel_diff, float((d / (np.abs(y) + 1e-6)).max(initial=0.0)))
    return abs_diff, rel_diff


def single_device_reference(fn, states, args):
    """Each seed's update alone, one jitted program on one device; stacked over the seeds."""
    one = jax.jit(fn)
    return seeding.stack([one(*seeding.unstack((states, *args), i)) for i in range(NUM_SEEDS)])


def main(name, layouts):
    fn, states, args, batch_args = CASES[name](name)
    reference = single_device_reference(fn, states, args)
    for spec in layouts:
        layout = devices.plan(spec, NUM_SEEDS, BATCH)
        mesh = devices.make_mesh(layout)
        program = seeding.over_seeds(fn, "unroll", mesh=mesh)
        placed = [devices.put_batch(a, mesh) if i in batch_args else devices.put_seeds(a, mesh)
                  for i, a in enumerate(args)]
        placed_states = devices.put_seeds(states, mesh)
        out = program(placed_states, *placed)
        text = program.lower(placed_states, *placed).compile().as_text()  # the call's compiled program (cached)
        abs_diff, rel_diff = max_differences(out, reference)
        print(json.dumps({"agent": name, "layout": spec, "abs": abs_diff, "rel": rel_diff,
                          "all_reduce": "all-reduce" in text}), flush=True)


def parse(argv):
    """[(agent, [layout, ...])]: "td3 1x2 2x2" (one agent) or "td3=1x2,2x2 dqn=2x2" (several)."""
    if any("=" in arg for arg in argv):
        return [(name, layouts.split(",")) for name, layouts in (arg.split("=", 1) for arg in argv)]
    return [(argv[0], argv[1:])]


if __name__ == "__main__":
    for agent_name, agent_layouts in parse(sys.argv[1:]):
        try:
            main(agent_name, agent_layouts)
        except Exception as error:  # one agent's failure is reported; the others still run
            first_line = (str(error).strip().splitlines() or [""])[0]
            print(json.dumps({"agent": agent_name, "error": f"{type(error).__name__}: {first_line}"}), flush=True)
