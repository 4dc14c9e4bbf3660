"""Random replay batches shared by the agent tests (same shapes as the loop sends)."""

import jax.numpy as jnp
import numpy as np

STATE_DIM, ACTION_DIM, BATCH = 5, 3, 16


def states_batch(seed, batch_size=BATCH, state_dim=STATE_DIM, action_dim=ACTION_DIM):
    rng = np.random.default_rng(seed)
    return {
        "obs": jnp.asarray(rng.normal(size=(batch_size, state_dim)), jnp.float32),
        "action": jnp.asarray(rng.uniform(-1, 1, size=(batch_size, action_dim)), jnp.float32),
        "reward": jnp.asarray(rng.uniform(0, 1, size=(batch_size,)), jnp.float32),
        "discount": jnp.full((batch_size,), 0.99 ** 3, jnp.float32),
        "next_obs": jnp.asarray(rng.normal(size=(batch_size, state_dim)), jnp.float32),
    }


def pixels_batch(seed, batch_size=8, size=32, action_dim=ACTION_DIM):
    rng = np.random.default_rng(seed)
    return {
        "obs": jnp.asarray(rng.integers(0, 256, size=(batch_size, size, size, 9)), jnp.uint8),
        "action": jnp.asarray(rng.uniform(-1, 1, size=(batch_size, action_dim)), jnp.float32),
        "reward": jnp.asarray(rng.uniform(0, 1, size=(batch_size, 1)), jnp.float32),
        "discount": jnp.full((batch_size, 1), 0.99, jnp.float32),
        "next_obs": jnp.asarray(rng.integers(0, 256, size=(batch_size, size, size, 9)), jnp.uint8),
    }


def offline_episodes(uniform_rewards: bool = False) -> list:
    """A small random-action dataset of whole episodes (145 transitions, 4-d states, 1-d actions) with
    terminations and time-limit truncations; rewards 1, or uniform in [0, 1) with `uniform_rewards`."""
    rng = np.random.default_rng(0)
    episodes = []
    for length, end in ((30, "termination"), (40, "truncation"), (25, "termination"), (50, "truncation")):
        last = np.arange(length) == length - 1
        episodes.append({"observations": rng.normal(0, 0.2, (length + 1, 4)).astype(np.float32),
                         "actions": rng.uniform(-1, 1, (length, 1)).astype(np.float32),
                         "rewards": (rng.uniform(0, 1, length).astype(np.float32) if uniform_rewards
                                     else np.ones(length, np.float32)),
                         "terminations": last & (end == "termination"), "truncations": last & (end == "truncation")})
    return episodes
