"""core.seeds: stacking agent states over seeds; each strategy gives every seed exactly the numbers
of a single-seed call with the same inputs and keys (DrQ-v2 update and act, states and pixels)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import drqv2
from core import seeds

NUM_SEEDS, ACTION_DIM, BATCH = 2, 2, 8

AGENTS = {
    "states": (drqv2.Config(obs_type="states", hidden_dim=32, feature_dim=8, state_encoder_dim=16,
                            num_expl_steps=10), (6,)),
    "pixels": (drqv2.Config(hidden_dim=32, feature_dim=8, image_size=32, num_expl_steps=10), (32, 32, 9)),
}


def make_batch(rng, obs_shape):
    def observations():
        if len(obs_shape) == 3:
            return rng.integers(0, 256, size=(BATCH, *obs_shape)).astype(np.uint8)
        return rng.normal(size=(BATCH, *obs_shape)).astype(np.float32)

    return {
        "obs": observations(),
        "action": rng.uniform(-1, 1, size=(BATCH, ACTION_DIM)).astype(np.float32),
        "reward": rng.uniform(0, 1, size=(BATCH,)).astype(np.float32),
        "discount": np.full((BATCH,), 0.97, np.float32),
        "next_obs": observations(),
    }


def assert_trees_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_stack_unstack_roundtrip():
    trees = [{"a": jnp.full((2,), float(i)), "b": (jnp.int32(i),)} for i in range(NUM_SEEDS)]
    stacked = seeds.stack(trees)
    assert stacked["a"].shape == (NUM_SEEDS, 2) and stacked["b"][0].shape == (NUM_SEEDS,)
    assert seeds.num_seeds(stacked) == NUM_SEEDS
    for i in range(NUM_SEEDS):
        np.testing.assert_array_equal(seeds.unstack(stacked, i)["a"], trees[i]["a"])
        assert int(seeds.unstack(stacked, i)["b"][0]) == i
    with pytest.raises(ValueError, match="at least one"):
        seeds.stack([])


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown strategy 'pmap'.*'vmap', 'map', 'unroll'"):
        seeds.over_seeds(lambda x: x, "pmap")


@pytest.mark.parametrize("agent", ["states", "pixels"])
@pytest.mark.parametrize("strategy", ["vmap", "map", "unroll"])
def test_each_seed_gets_its_single_seed_numbers(agent, strategy):
    config, obs_shape = AGENTS[agent]
    rng = np.random.default_rng(0)
    states = [drqv2.create(jax.random.PRNGKey(i), obs_shape, ACTION_DIM, config) for i in range(NUM_SEEDS)]
    batches = [make_batch(rng, obs_shape) for _ in range(NUM_SEEDS)]
    steps = np.array([3, 40], np.int32)  # seed 0 still explores uniformly, seed 1 does not
    update_keys = jax.random.split(jax.random.PRNGKey(100), NUM_SEEDS)
    act_keys = jax.random.split(jax.random.PRNGKey(200), NUM_SEEDS)

    update_all = seeds.over_seeds(drqv2.update, strategy)
    act_all = seeds.over_seeds(functools.partial(drqv2.act, eval_mode=False), strategy)
    stacked_states, stacked_metrics = update_all(seeds.stack(states), seeds.stack(batches), steps, update_keys)
    stacked_obs = seeds.stack([batch["obs"] for batch in batches])
    stacked_actions = act_all(stacked_states, stacked_obs, steps, act_keys)

    assert seeds.num_seeds(stacked_states) == NUM_SEEDS
    for i in range(NUM_SEEDS):
        state, metrics = drqv2.update(states[i], batches[i], steps[i], update_keys[i])
        assert_trees_close(seeds.unstack(stacked_states, i), state)
        assert_trees_close(seeds.unstack(stacked_metrics, i), metrics)
        actions = drqv2.act(state, batches[i]["obs"], steps[i], act_keys[i], eval_mode=False)
        np.testing.assert_allclose(stacked_actions[i], actions, rtol=1e-5, atol=1e-6)
    # the seeds really are different runs
    assert not np.allclose(stacked_metrics["critic_loss"][0], stacked_metrics["critic_loss"][1])


def test_default_strategy_by_backend_and_program_kind():
    assert seeds.default_strategy("cpu") == "unroll" and seeds.default_strategy("cpu", dense=True) == "unroll"
    assert seeds.default_strategy("gpu") == "map"  # convolutions: vmap would make them grouped
    assert seeds.default_strategy("gpu", dense=True) == "vmap"
    assert seeds.resolve_strategy("vmap", dense=False) == "vmap"
    assert seeds.resolve_strategy("auto", dense=True) == seeds.default_strategy(dense=True)
    with pytest.raises(ValueError, match="valid strategies"):
        seeds.resolve_strategy("pmap")
