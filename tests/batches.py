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
