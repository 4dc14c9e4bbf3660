"""agents.drqv2 and its networks: shapes and init (§1.4), sampling (§1.5), losses and one update
(§1.6) against hand values and an independent reference, act (§1.5/§1.7), per-task configs
(§1.8), and a learning probe. Tiny networks throughout (hidden 32, features 8, images 32x32)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import batches
from batches import ACTION_DIM, BATCH, STATE_DIM

from agents import drqv2
from networks import actor_critic, encoders



STATES_CONFIG = drqv2.Config(
    obs_type="states", hidden_dim=32, feature_dim=8, state_encoder_dim=16,
    num_expl_steps=100, stddev_schedule="linear(0.5,0.1,1000)",
)
PIXELS_CONFIG = drqv2.Config(hidden_dim=32, feature_dim=8, image_size=32)


def schedule_by_hand(step):
    """linear(0.5, 0.1, 1000) of STATES_CONFIG, written out."""
    return 0.5 + (0.1 - 0.5) * min(max(step / 1000, 0.0), 1.0)


states_batch = batches.states_batch
pixels_batch = batches.pixels_batch


@pytest.fixture(scope="module")
def states_agent():
    return drqv2.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, STATES_CONFIG)


@pytest.fixture(scope="module")
def pixels_agent():
    return drqv2.create(jax.random.PRNGKey(1), (32, 32, 9), ACTION_DIM, PIXELS_CONFIG)


def tree_allclose(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---------------------------------------------------------------- networks: shapes, init


def test_paper_size_shapes_and_parameter_counts():
    """84x84x9 -> 39200 features; parameter counts of §1.4 (F=50, A=6, hidden 1024), shapes only."""
    state = jax.eval_shape(lambda key: drqv2.create(key, (84, 84, 9), 6, drqv2.Config()), jax.random.PRNGKey(0))
    features = jax.eval_shape(encoders.PixelEncoder().apply, state.encoder_params,
                              jax.ShapeDtypeStruct((2, 84, 84, 9), jnp.uint8))
    assert features.shape == (2, 39200)  # 84 -> 41 (3x3 s2) -> 39 -> 37 -> 35; 35 * 35 * 32
    assert features.dtype == jnp.float32
    features16 = jax.eval_shape(encoders.PixelEncoder(dtype=jnp.bfloat16).apply, state.encoder_params,
                                jax.ShapeDtypeStruct((2, 84, 84, 9), jnp.uint8))
    assert features16.shape == (2, 39200) and features16.dtype == jnp.bfloat16

    def count(params):
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))

    # conv 3*3*9*32+32 = 2624, then 3 x (3*3*32*32+32 = 9248) -> 30368
    assert count(state.encoder_params) == 2624 + 3 * 9248 == 30368
    trunk = 39200 * 50 + 50 + 2 * 50  # Dense + LayerNorm scale/bias = 1960150
    hidden = 1024 * 1024 + 1024  # 1049600
    # actor: trunk, 50->1024, 1024->1024, 1024->6
    assert count(state.actor_params) == trunk + (50 * 1024 + 1024) + hidden + (1024 * 6 + 6) == 3068124
    # critic: trunk, twice [56->1024, 1024->1024, 1024->1]
    q_head = (56 * 1024 + 1024) + hidden + (1024 + 1)
    assert count(state.critic_params) == trunk + 2 * q_head == 4178136
    assert jax.tree.map(lambda x: x.shape, state.critic_target_params) == \
        jax.tree.map(lambda x: x.shape, state.critic_params)


def test_initialization_orthogonal_zero_bias(pixels_agent):
    params = {"encoder": pixels_agent.encoder_params, "actor": pixels_agent.actor_params,
              "critic": pixels_agent.critic_params}
    seen = {"conv": 0, "dense": 0, "layer_norm": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [p.key for p in path]
        module, kind = names[-2], names[-1]
        leaf = np.asarray(leaf)
        assert leaf.dtype == np.float32
        if module == "layer_norm":
            np.testing.assert_array_equal(leaf, 1.0 if kind == "scale" else 0.0)
            seen["layer_norm"] += 1
        elif kind == "bias":
            np.testing.assert_array_equal(leaf, 0.0)
        elif module.startswith("conv"):
            matrix = leaf.reshape(-1, leaf.shape[-1])  # (3*3*in, out): orthogonal columns, gain sqrt(2)
            np.testing.assert_allclose(matrix.T @ matrix, 2.0 * np.eye(matrix.shape[1]), atol=1e-5)
            seen["conv"] += 1
        else:
            assert module.startswith("dense"), names
            gram = leaf.T @ leaf if leaf.shape[0] >= leaf.shape[1] else leaf @ leaf.T
            np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)
            seen["dense"] += 1
    # 4 convs; actor 1 + 3 dense, critic 1 + 2 x 3 dense; 2 LayerNorms x (scale, bias)
    assert seen == {"conv": 4, "dense": 11, "layer_norm": 4}


def test_layer_norm_epsilon_is_pytorch_1e5():
    trunk = actor_critic.Trunk(feature_dim=4)
    params = trunk.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    # zero kernel: the Dense output is its bias, a vector of variance 1.25e-5 (comparable to eps)
    bias = jnp.array([0.0, 0.005, 0.0, -0.005]) + 0.3
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: (bias if path[-2].key == "dense" and path[-1].key == "bias"
                         else jnp.zeros_like(x) if path[-2].key == "dense" else x), params)
    out, projected = trunk.apply(params, jnp.ones((1, 3)))
    centered = np.asarray(bias) - np.mean(np.asarray(bias))
    expected = np.tanh(centered / np.sqrt(np.var(centered) + 1e-5))
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    np.testing.assert_allclose(projected[0], bias, rtol=1e-6)
    assert not np.allclose(out[0], np.tanh(centered / np.sqrt(np.var(centered) + 1e-6)), rtol=1e-3)


def test_actor_returns_every_dense_output(states_agent):
    nets = drqv2.networks(STATES_CONFIG, ACTION_DIM)
    features = drqv2.encode(states_agent, states_batch(0)["obs"])
    mu, activations = nets.actor.apply(states_agent.actor_params, features, return_activations=True)
    assert {k: v.shape for k, v in activations.items()} == {
        "trunk": (BATCH, 8), "hidden_0": (BATCH, 32), "hidden_1": (BATCH, 32), "output": (BATCH, ACTION_DIM)}
    np.testing.assert_array_equal(mu, nets.actor.apply(states_agent.actor_params, features))
    np.testing.assert_allclose(mu, np.tanh(activations["output"]), rtol=1e-6)
    # raw (pre-activation) outputs: the output layer is Dense(ReLU(hidden_1)), hidden_0 has negatives
    last = states_agent.actor_params["params"]["policy"]["dense_2"]
    np.testing.assert_allclose(activations["output"], jax.nn.relu(activations["hidden_1"]) @ last["kernel"]
                               + last["bias"], rtol=1e-5, atol=1e-6)
    assert (activations["hidden_0"] < 0).any() and (activations["trunk"] < 0).any()


def test_bfloat16_compute_keeps_float32_params_and_outputs(states_agent):
    # the same float32 params, computed in bfloat16
    state = states_agent.replace(config=dataclasses.replace(STATES_CONFIG, compute_dtype="bfloat16"))
    new_state, metrics = drqv2.update(state, states_batch(0), 500, jax.random.PRNGKey(1))
    floats = [leaf for leaf in jax.tree.leaves(new_state) if leaf.dtype != jnp.int32]  # Adam counts are int32
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
    assert all(m.dtype == jnp.float32 and np.isfinite(m) for m in metrics.values())
    assert drqv2.encode(state, states_batch(0)["obs"]).dtype == jnp.bfloat16  # really computed in bfloat16
    # same numbers as float32 compute up to bfloat16 rounding
    state32 = states_agent
    _, metrics32 = drqv2.update(state32, states_batch(0), 500, jax.random.PRNGKey(1))
    np.testing.assert_allclose(metrics["critic_loss"], metrics32["critic_loss"], rtol=0.05)
    obs = states_batch(0)["obs"]
    mu16 = drqv2.act(state, obs, 0, jax.random.PRNGKey(0), eval_mode=True)
    assert mu16.dtype == jnp.float32
    np.testing.assert_allclose(mu16, drqv2.act(state32, obs, 0, jax.random.PRNGKey(0), eval_mode=True), atol=0.03)


# ---------------------------------------------------------------- losses and sampling (hand values)


WITH_AND_WITHOUT_JIT = pytest.mark.parametrize("maybe_jit", [lambda f: f, jax.jit], ids=["eager", "jit"])


@WITH_AND_WITHOUT_JIT
def test_critic_target_by_hand(maybe_jit):
    reward, discount = jnp.array([1.0, 0.5]), jnp.array([0.99, 0.0])
    y = maybe_jit(drqv2.critic_target)(reward, discount, jnp.array([2.0, 3.0]), jnp.array([1.0, 4.0]))
    np.testing.assert_allclose(y, [1.0 + 0.99 * 1.0, 0.5], rtol=1e-7)
    # replay may hand (B, 1) columns
    y_column = maybe_jit(drqv2.critic_target)(reward[:, None], discount[:, None], jnp.array([2.0, 3.0]),
                                              jnp.array([1.0, 4.0]))
    np.testing.assert_allclose(y_column, y)


@WITH_AND_WITHOUT_JIT
def test_critic_and_actor_losses_by_hand(maybe_jit):
    # Q1 errors (0, 1) -> 0.5; Q2 errors (-1, 2) -> 2.5
    loss = maybe_jit(drqv2.critic_loss)(jnp.array([1.0, 2.0]), jnp.array([0.0, 3.0]), jnp.array([1.0, 1.0]))
    assert float(loss) == pytest.approx(3.0)
    # min = (1, -2, 0) -> -mean = 1/3
    loss = maybe_jit(drqv2.actor_loss)(jnp.array([1.0, -2.0, 3.0]), jnp.array([2.0, -1.0, 0.0]))
    assert float(loss) == pytest.approx(1.0 / 3.0)


@WITH_AND_WITHOUT_JIT
def test_soft_update_by_hand(maybe_jit):
    new = maybe_jit(drqv2.soft_update)({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 2.0])}, 0.01)
    np.testing.assert_allclose(new["w"], [1.0 * 0.99 + 3.0 * 0.01, -2.0 * 0.99 + 2.0 * 0.01], rtol=1e-6)


@WITH_AND_WITHOUT_JIT
def test_sample_action_formula_clip_and_clamp(maybe_jit):
    key = jax.random.PRNGKey(0)
    mu = jnp.tile(jnp.array([0.9, 0.0, -0.95]), (500, 1))
    eps = np.asarray(jax.random.normal(key, mu.shape))
    action = np.asarray(maybe_jit(lambda m, k: drqv2.sample_action(m, 0.5, 0.3, k))(mu, key))
    expected = np.clip(np.asarray(mu) + np.clip(0.5 * eps, -0.3, 0.3), -1 + 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(action, expected, atol=1e-7)
    # the noise clip: |a - mu| <= 0.3 where no clamp, and it is reached
    np.testing.assert_allclose(np.abs(action[:, 1]).max(), 0.3, rtol=1e-6)
    # the clamp: exactly float32(1 - 1e-6) and float32(-1 + 1e-6)
    assert action[:, 0].max() == np.float32(1 - 1e-6) and action[:, 2].min() == np.float32(-1 + 1e-6)
    # no clip: noise beyond 0.3 occurs
    unclipped = np.asarray(drqv2.sample_action(mu, 0.5, None, key))
    assert np.abs(unclipped[:, 1]).max() > 0.6


def test_sample_action_straight_through_gradient():
    mu = jnp.tile(jnp.array([0.95, 0.0, -0.99]), (200, 1))
    action = drqv2.sample_action(mu, 0.5, 0.3, jax.random.PRNGKey(1))
    assert (np.abs(np.asarray(action)) >= 1 - 1e-6 - 1e-9).sum() > 50  # many samples were clamped
    grad = jax.grad(lambda m: drqv2.sample_action(m, 0.5, 0.3, jax.random.PRNGKey(1)).sum())(mu)
    np.testing.assert_array_equal(grad, np.ones(mu.shape))


# ---------------------------------------------------------------- one update


def reference_update(state, batch, step, key):
    """§1.6 written out independently for the states agent (no augmentation), plain jax.grad + optax."""
    nets = drqv2.networks(STATES_CONFIG, ACTION_DIM)
    _, key_target, key_actor = jax.random.split(key, 3)
    sigma = schedule_by_hand(step)
    adam = optax.adam(1e-4)

    def encode(params, obs):
        return nets.encoder.apply(params, obs)

    def policy_sample(actor_params, features, noise_key):
        mu = nets.actor.apply(actor_params, features)
        raw = mu + jnp.clip(sigma * jax.random.normal(noise_key, mu.shape), -0.3, 0.3)
        return raw + jax.lax.stop_gradient(jnp.clip(raw, -1 + 1e-6, 1 - 1e-6) - raw)

    next_h = encode(state.encoder_params, batch["next_obs"])
    next_action = policy_sample(state.actor_params, next_h, key_target)
    tq1, tq2 = nets.critic.apply(state.critic_target_params, next_h, next_action)
    y = batch["reward"] + batch["discount"] * jnp.minimum(tq1, tq2)

    def critic_objective(encoder_params, critic_params):
        q1, q2 = nets.critic.apply(critic_params, encode(encoder_params, batch["obs"]), batch["action"])
        return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)

    encoder_grads, critic_grads = jax.grad(critic_objective, argnums=(0, 1))(state.encoder_params, state.critic_params)
    updates, _ = adam.update(encoder_grads, state.encoder_opt_state)
    encoder_params = optax.apply_updates(state.encoder_params, updates)
    updates, _ = adam.update(critic_grads, state.critic_opt_state)
    critic_params = optax.apply_updates(state.critic_params, updates)

    h = encode(state.encoder_params, batch["obs"])  # pre-update encoder

    def actor_objective(actor_params):
        q1, q2 = nets.critic.apply(critic_params, h, policy_sample(actor_params, h, key_actor))  # post-update critic
        return -jnp.mean(jnp.minimum(q1, q2))

    updates, _ = adam.update(jax.grad(actor_objective)(state.actor_params), state.actor_opt_state)
    actor_params = optax.apply_updates(state.actor_params, updates)
    target = jax.tree.map(lambda t, c: 0.99 * t + 0.01 * c, state.critic_target_params, critic_params)
    return encoder_params, actor_params, critic_params, target, sigma


def test_update_matches_an_independent_reference(states_agent):
    # one update first so that the target differs from the critic and Adam has history
    state, _ = drqv2.update(states_agent, states_batch(1), 300, jax.random.PRNGKey(10))
    batch, step, key = states_batch(2), 400, jax.random.PRNGKey(11)
    new_state, metrics = drqv2.update(state, batch, step, key)
    encoder_params, actor_params, critic_params, target, sigma = jax.jit(reference_update, static_argnums=2)(
        state, batch, step, key)
    tree_allclose(new_state.encoder_params, encoder_params)
    tree_allclose(new_state.critic_params, critic_params)
    tree_allclose(new_state.actor_params, actor_params)
    tree_allclose(new_state.critic_target_params, target)
    np.testing.assert_allclose(metrics["actor_stddev"], sigma, rtol=1e-6)
    np.testing.assert_allclose(metrics["batch_reward"], np.mean(batch["reward"]), rtol=1e-6)
    expected_names = {"batch_reward", "critic_loss", "critic_q1", "critic_q2", "critic_target_q",
                      "actor_loss", "actor_logprob", "actor_ent", "actor_stddev"}
    assert set(metrics) == expected_names
    assert all(m.dtype == jnp.float32 and m.shape == () for m in metrics.values())


def test_update_moves_the_right_parameters(pixels_agent):
    state = pixels_agent
    new_state, _ = drqv2.update(state, pixels_batch(0), 3000, jax.random.PRNGKey(2))
    for name in ("encoder_params", "actor_params", "critic_params"):
        assert not tree_equal(getattr(state, name), getattr(new_state, name)), name
    # the target moves exactly tau toward the NEW critic
    expected = jax.tree.map(lambda t, c: 0.99 * t + 0.01 * c, state.critic_target_params, new_state.critic_params)
    tree_allclose(new_state.critic_target_params, expected, rtol=1e-6, atol=1e-7)


def test_actor_step_changes_only_the_actor(pixels_agent):
    obs = drqv2.augment_batch(PIXELS_CONFIG, pixels_batch(0)["obs"], pixels_batch(0)["next_obs"],
                              jax.random.PRNGKey(0))[0]
    features = drqv2.encode(pixels_agent, obs)
    new_state, metrics = jax.jit(drqv2.update_actor)(pixels_agent, features, 0.3, jax.random.PRNGKey(3))
    assert not tree_equal(pixels_agent.actor_params, new_state.actor_params)
    for name in ("encoder_params", "critic_params", "critic_target_params", "encoder_opt_state", "critic_opt_state"):
        assert tree_equal(getattr(pixels_agent, name), getattr(new_state, name)), name
    # the actor loss sends no gradient to the encoder even when features are not detached by the caller
    nets = drqv2.networks(PIXELS_CONFIG, ACTION_DIM)

    def through_encoder(encoder_params):
        h = nets.encoder.apply(encoder_params, obs)
        state = pixels_agent.replace(encoder_params=encoder_params)
        return drqv2.update_actor(state, h, 0.3, jax.random.PRNGKey(3))[1]["actor_loss"]

    grads = jax.jit(jax.grad(through_encoder))(pixels_agent.encoder_params)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(grads))


def test_augment_batch_shifts_obs_and_next_obs_independently():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 9)), jnp.uint8)
    obs, next_obs = drqv2.augment_batch(PIXELS_CONFIG, images, images, jax.random.PRNGKey(4))
    assert obs.dtype == jnp.float32 and obs.shape == images.shape
    differs = [not np.array_equal(obs[b], next_obs[b]) for b in range(16)]
    assert sum(differs) >= 12  # same image, independent offsets (1/81 chance of a tie per sample)
    states = jnp.ones((4, STATE_DIM))
    assert drqv2.augment_batch(STATES_CONFIG, states, states, jax.random.PRNGKey(4))[0] is states


def test_jit_and_no_jit_agree(states_agent):
    batch, key = states_batch(1), jax.random.PRNGKey(5)
    jitted_state, jitted_metrics = drqv2.update(states_agent, batch, 3000, key)
    with jax.disable_jit():
        eager_state, eager_metrics = drqv2.update(states_agent, batch, 3000, key)
    # Losses agree tightly. Params after one Adam step: the first step is ~lr * sign(g), so an element
    # whose gradient is ~1e-8 (Adam's eps) can move differently under different float orderings;
    # allow at most 0.1% of elements to differ, by less than lr.
    tree_allclose(jitted_metrics, eager_metrics, rtol=1e-5, atol=1e-6)
    for jitted, eager in zip(jax.tree.leaves(jitted_state), jax.tree.leaves(eager_state), strict=True):
        difference = np.abs(np.asarray(jitted, np.float64) - np.asarray(eager, np.float64))
        assert difference.max() < STATES_CONFIG.lr
        assert np.mean(difference > 1e-6 + 1e-5 * np.abs(np.asarray(eager))) < 1e-3


# ---------------------------------------------------------------- act


def test_eval_action_is_the_actor_mean(states_agent):
    obs = states_batch(0)["obs"]
    nets = drqv2.networks(STATES_CONFIG, ACTION_DIM)
    mu = nets.actor.apply(states_agent.actor_params, nets.encoder.apply(states_agent.encoder_params, obs))
    actions = [drqv2.act(states_agent, obs, step, jax.random.PRNGKey(step), eval_mode=True) for step in (0, 5000)]
    np.testing.assert_array_equal(actions[0], actions[1])  # no noise, no uniform phase, no key dependence
    np.testing.assert_allclose(actions[0], mu, rtol=1e-5, atol=1e-7)  # eager vs jitted float ordering


def test_uniform_actions_before_num_expl_steps(states_agent):
    obs_a = jnp.asarray(np.random.default_rng(0).normal(size=(4000, STATE_DIM)), jnp.float32)
    key = jax.random.PRNGKey(6)
    for step in (0, STATES_CONFIG.num_expl_steps - 1):
        action = np.asarray(drqv2.act(states_agent, obs_a, step, key, eval_mode=False))
        assert np.all(np.abs(action) <= 1.0)
        assert action.min() < -0.99 and action.max() > 0.99
        np.testing.assert_allclose(action.mean(), 0.0, atol=0.02)
        np.testing.assert_allclose(action.std(), 1 / math.sqrt(3), rtol=0.02)  # U(-1, 1)
    # independent of the observation
    other = np.asarray(drqv2.act(states_agent, obs_a * 3.0 + 1.0, 0, key, eval_mode=False))
    np.testing.assert_array_equal(other, np.asarray(drqv2.act(states_agent, obs_a, 0, key, eval_mode=False)))


@pytest.mark.parametrize("step", [STATES_CONFIG.num_expl_steps, 2000])
def test_noisy_actions_follow_the_schedule_unclipped(states_agent, step):
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(4000, STATE_DIM)), jnp.float32)
    mu = np.asarray(drqv2.act(states_agent, obs, step, jax.random.PRNGKey(0), eval_mode=True))
    action = np.asarray(drqv2.act(states_agent, obs, step, jax.random.PRNGKey(7), eval_mode=False))
    assert np.all(np.abs(action) <= 1.0)
    sigma = schedule_by_hand(step)  # 0.46 at step 100, 0.1 after 1000
    np.testing.assert_allclose((action - mu).std(), sigma, rtol=0.04)
    np.testing.assert_allclose(drqv2.stddev(STATES_CONFIG, step), sigma, rtol=1e-6)
    np.testing.assert_allclose(drqv2.stddev(STATES_CONFIG, jnp.int32(step)), sigma, rtol=1e-6)
    if sigma > 0.3:
        assert np.abs(action - mu).max() > 0.5  # no noise clip when acting (drqv2 issue #13)


def test_clip_when_acting_option(states_agent):
    state = states_agent.replace(config=dataclasses.replace(STATES_CONFIG, clip_when_acting=True))
    obs = states_batch(0, 1000)["obs"]
    mu = np.asarray(drqv2.act(state, obs, 200, jax.random.PRNGKey(0), eval_mode=True))
    action = np.asarray(drqv2.act(state, obs, 200, jax.random.PRNGKey(8), eval_mode=False))
    assert np.abs(action - mu).max() <= 0.3 + 1e-6


# ---------------------------------------------------------------- per-task configs


def test_config_for_task_tiers_and_overrides():
    walker = drqv2.config_for_task("walker_walk")
    assert (walker.nstep, walker.batch_size, walker.stddev_schedule, walker.num_train_frames, walker.lr) == \
        (1, 512, "linear(1.0,0.1,100000)", 1_100_000, 1e-4)
    humanoid = drqv2.config_for_task("humanoid_run")
    assert (humanoid.lr, humanoid.feature_dim, humanoid.stddev_schedule, humanoid.num_train_frames) == \
        (8e-5, 100, "linear(1.0,0.1,2000000)", 30_100_000)
    quadruped = drqv2.config_for_task("quadruped_run")
    assert (quadruped.replay_capacity, quadruped.stddev_schedule, quadruped.nstep) == \
        (100_000, "linear(1.0,0.1,500000)", 3)
    assert drqv2.config_for_task("walker_run").batch_size == 512
    cheetah = drqv2.config_for_task("cheetah_run")
    assert cheetah == drqv2.Config()  # the defaults are the medium tier with no overrides
    # user values win over task overrides
    assert drqv2.config_for_task("walker_walk", batch_size=64, lr=3e-4).batch_size == 64
    for tier in drqv2.TIERS.values():
        for task in tier["tasks"]:
            assert drqv2.config_for_task(task).num_train_frames == tier["num_train_frames"]


def test_config_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown Config field\(s\) \['learning_rate'\].*valid fields.*'lr'"):
        drqv2.config_for_task("walker_walk", learning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown task 'walker_fly'.*valid tasks.*'walker_walk'"):
        drqv2.config_for_task("walker_fly")
    with pytest.raises(ValueError, match="lr=-1.0"):
        drqv2.config_for_task("walker_walk", lr=-1)
    with pytest.raises(ValueError, match="stddev_schedule.*valid forms"):
        drqv2.Config(stddev_schedule="cosine(1,0,10)")
    with pytest.raises(ValueError, match="obs_type='rgb'.*one of"):
        drqv2.Config(obs_type="rgb")
    with pytest.raises(ValueError, match="compute_dtype"):
        drqv2.Config(compute_dtype="float16")
    with pytest.raises(ValueError, match="lr must be a float, got str"):
        drqv2.Config(lr="1e-4")
    with pytest.raises(ValueError, match="batch_size must be a int, got float"):
        drqv2.Config(batch_size=256.0)
    assert drqv2.Config(lr=1).lr == 1.0 and isinstance(drqv2.Config(lr=1).lr, float)


def test_state_is_a_pytree_of_arrays_only(states_agent):
    leaves = jax.tree.leaves(states_agent)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), states_agent, states_agent)
    assert stacked.config == STATES_CONFIG and stacked.action_dim == ACTION_DIM
    assert stacked.obs_shape == (STATE_DIM,)
    with pytest.raises(ValueError, match="obs_shape"):
        drqv2.create(jax.random.PRNGKey(0), (32, 32), 2, PIXELS_CONFIG)
    with pytest.raises(ValueError, match="action_dim"):
        drqv2.create(jax.random.PRNGKey(0), (STATE_DIM,), 0, STATES_CONFIG)


# ---------------------------------------------------------------- learning probe


def test_learning_probe_one_step_bandit():
    """reward = -||a - a*||^2, discount 0: Q(s, a) = -||a - a*||^2 and the best action is a* for every s.
    The initial mean action is ~0 (||a*|| = 0.5 away); a learning agent ends within 0.1 of a* for every
    observation (measured: <= 0.06 over 3 seeds); an agent whose actor does not learn, or climbs the
    wrong way, cannot. (a* is inside the box: early on the critic is nearly linear in a and drives mu to
    the tanh saturation, from which DDPG-style actors recover slowly.)"""
    best_action = np.array([0.4, -0.3], np.float32)
    num_updates, batch_size = 500, 256
    config = drqv2.Config(obs_type="states", hidden_dim=64, feature_dim=16, state_encoder_dim=32, lr=1e-3,
                          stddev_schedule="0.2", num_expl_steps=0)
    state = drqv2.create(jax.random.PRNGKey(0), (4,), 2, config)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(num_updates, batch_size, 2)).astype(np.float32)
    batches = {
        "obs": rng.normal(size=(num_updates, batch_size, 4)).astype(np.float32),
        "action": actions,
        "reward": -np.sum((actions - best_action) ** 2, axis=-1),
        "discount": np.zeros((num_updates, batch_size), np.float32),
        "next_obs": rng.normal(size=(num_updates, batch_size, 4)).astype(np.float32),
    }

    @jax.jit
    def train(state, batches, key):
        def one_update(state, inputs):
            batch, step, update_key = inputs
            state, metrics = drqv2.update(state, batch, step, update_key)
            return state, metrics["critic_loss"]

        steps, keys = jnp.arange(num_updates), jax.random.split(key, num_updates)
        return jax.lax.scan(one_update, state, (batches, steps, keys))

    state, critic_losses = train(state, batches, jax.random.PRNGKey(1))
    test_obs = rng.normal(size=(256, 4)).astype(np.float32)
    mu = np.asarray(drqv2.act(state, test_obs, 0, jax.random.PRNGKey(2), eval_mode=True))
    distance = np.linalg.norm(mu - best_action, axis=1)
    assert distance.max() < 0.1, (distance.mean(), distance.max(), mu.mean(0))
    assert critic_losses[-1] < 0.02 < critic_losses[0]
