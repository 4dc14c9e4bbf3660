"""agents.tdmpc and networks.world_model (spec model-offline-onpolicy-agents.md §2).

References are values computed by hand, numpy re-computations of the spec's formulas on hand-made
linear models, or known optima (a quadratic for MPPI, a latent model whose best first action is known
for `plan`), never the code under test. Tiny networks and few compiled programs keep the file fast.
"""

import itertools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import tdmpc
from networks import world_model

STATE_DIM, ACTION_DIM, BATCH = 5, 2, 4
HORIZON = 5
# Tiny networks; momentum 1 keeps the planner's mean at its warm start (the shift is then visible).
STATES = tdmpc.Config(latent_dim=8, enc_dim=16, mlp_dim=16, num_samples=32, num_elites=4, iterations=2,
                      momentum=1.0, batch_size=BATCH, num_seed_frames=400)  # seed_steps = 400 / 4 = 100
PIXELS = tdmpc.Config(obs_type="pixels", image_size=40, frame_stack=2, latent_dim=8, mlp_dim=16, num_channels=4,
                      num_samples=32, num_elites=4, iterations=1, batch_size=2)
PIXEL_SHAPE = (40, 40, 6)  # channel-last: 3 channels x frame_stack 2
RHO = 0.5
RHO_SUM = sum(RHO ** t for t in range(HORIZON))  # 1.9375


def states_batch(seed, reward=None):
    rng = np.random.default_rng(seed)
    reward = rng.uniform(0, 1, size=(BATCH, HORIZON)) if reward is None else reward
    return {
        "obs": jnp.asarray(rng.normal(size=(BATCH, HORIZON + 1, STATE_DIM)), jnp.float32),
        "action": jnp.asarray(rng.uniform(-1, 1, size=(BATCH, HORIZON, ACTION_DIM)), jnp.float32),
        "reward": jnp.asarray(reward, jnp.float32),
        "weights": jnp.asarray(rng.uniform(0.2, 1, size=(BATCH,)), jnp.float32),
    }


@pytest.fixture(scope="module")
def states_agent():
    return tdmpc.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, STATES)


@pytest.fixture(scope="module")
def pixels_agent():
    return tdmpc.create(jax.random.PRNGKey(0), PIXEL_SHAPE, ACTION_DIM, PIXELS)


# ================================================================ config


def test_official_defaults_and_domain_overrides():
    c = tdmpc.config_for_task("cheetah_run")
    assert (c.action_repeat, c.iterations, c.latent_dim, c.lr, c.batch_size) == (4, 6, 50, 1e-3, 512)
    assert (c.num_samples, c.num_elites, tdmpc.num_policy_trajectories(c)) == (512, 64, 25)
    assert (c.temperature, c.momentum, c.min_std, c.max_std, c.horizon, c.rho) == (0.5, 0.1, 0.05, 2.0, 5, 0.5)
    assert (c.consistency_coef, c.reward_coef, c.value_coef, c.tau, c.update_freq) == (2.0, 0.5, 0.1, 0.01, 2)
    assert c.num_seed_frames == 20_000 and tdmpc.seed_steps(c) == 5000
    assert c.num_train_frames == 500_000 and c.replay_capacity == 125_000  # min(500k / 4, 1e6)
    assert tdmpc.config_for_task("cartpole_swingup").action_repeat == 8
    assert tdmpc.config_for_task("cartpole_swingup").num_seed_frames == 40_000
    for task in ("walker_walk", "finger_spin"):
        assert tdmpc.config_for_task(task).action_repeat == 2
    h = tdmpc.config_for_task("humanoid_walk")
    assert (h.action_repeat, h.iterations, h.latent_dim, h.num_train_frames, h.replay_capacity) == (
        2, 12, 100, 3_000_000, 1_000_000)
    d = tdmpc.config_for_task("dog_run")
    assert (d.iterations, d.latent_dim, d.batch_size, d.lr, d.num_train_frames) == (8, 100, 2048, 3e-4, 5_000_000)


def test_pixel_overrides_and_precedence():
    p = tdmpc.config_for_task("walker_walk", obs_type="pixels")
    assert (p.lr, p.batch_size, p.frame_stack, p.image_size, p.num_train_frames) == (3e-4, 256, 3, 84, 3_000_000)
    assert p.replay_capacity == 1_000_000 and tdmpc.augment_pad(p) == 4
    assert tdmpc.config_for_task("cheetah_run", obs_type="pixels").replay_capacity == 750_000
    # The domain's yaml is merged after pixels.yaml: dog keeps batch 2048 with pixels.
    assert tdmpc.config_for_task("dog_run", obs_type="pixels").batch_size == 2048
    # The user's values win, and derived values follow them.
    u = tdmpc.config_for_task("walker_walk", action_repeat=4, iterations=3)
    assert (u.action_repeat, u.iterations, u.num_seed_frames) == (4, 3, 20_000)


def test_bad_task_field_or_value_is_refused():
    with pytest.raises(ValueError, match="walker_walk"):
        tdmpc.config_for_task("Hopper-v5")
    with pytest.raises(ValueError, match="unknown Config field"):
        tdmpc.config_for_task("walker_walk", horizen=3)
    with pytest.raises(ValueError, match="num_elites"):
        tdmpc.Config(num_elites=600)  # more than the 512 + 25 candidates
    with pytest.raises(ValueError, match="std_schedule"):
        tdmpc.Config(std_schedule="exp(0.5)")
    with pytest.raises(ValueError, match="image_size"):
        tdmpc.Config(obs_type="pixels", image_size=32)
    with pytest.raises(ValueError, match="lr"):
        tdmpc.Config(lr="fast")


def test_schedules_in_agent_steps():
    c = tdmpc.Config()
    assert [tdmpc.planning_horizon(c, s) for s in (0, 6249, 6250, 12_500, 25_000, 10 ** 6)] == [1, 1, 2, 3, 5, 5]
    np.testing.assert_allclose(float(tdmpc.std_floor(c, 12_500)), 0.5 + (0.05 - 0.5) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(tdmpc.std_floor(c, 10 ** 6)), 0.05, rtol=1e-6)


# ================================================================ networks


def test_told_shapes_and_init(states_agent):
    p = states_agent.params
    assert set(p) == {"encoder", "dynamics", "reward", "q", "pi"}
    told = tdmpc.model(STATES, ACTION_DIM)
    z = told.encode(p, jnp.ones((3, STATE_DIM)))
    chex.assert_shape(z, (3, STATES.latent_dim))
    next_z, reward = told.next(p, z, jnp.ones((3, ACTION_DIM)))
    q1, q2 = told.q(p, z, jnp.ones((3, ACTION_DIM)))
    chex.assert_shape([next_z, reward, q1, q2, told.pi(p, z)], [(3, 8), (3,), (3,), (3,), (3, ACTION_DIM)])
    # Zero-initialized last layers: R == 0 and Q == 0 at init; the other layers are orthogonal (gain 1).
    np.testing.assert_array_equal(np.asarray(reward), 0.0)
    np.testing.assert_array_equal(np.asarray(q1), 0.0)
    kernel = np.asarray(p["dynamics"]["params"]["dense_1"]["kernel"])
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(16), atol=1e-5)
    assert np.all(np.asarray(p["encoder"]["params"]["dense_0"]["bias"]) == 0)
    # The target model is a copy of the whole model.
    chex.assert_trees_all_equal(states_agent.target_params, p)


def test_pixel_encoder_valid_convs(pixels_agent):
    encoder = world_model.PixelEncoder(num_channels=32, latent_dim=50)
    shapes = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.zeros((1, 84, 84, 9), jnp.uint8))
    assert shapes["params"]["dense_0"]["kernel"].shape == (288, 50)  # 84 -> 39 -> 18 -> 8 -> 3; 32*3*3
    assert shapes["params"]["conv_0"]["kernel"].shape == (7, 7, 9, 32)
    conv = np.asarray(pixels_agent.params["encoder"]["params"]["conv_0"]["kernel"]).reshape(-1, 4)
    np.testing.assert_allclose(conv.T @ conv, 2.0 * np.eye(4), atol=1e-4)  # orthogonal, gain sqrt(2)
    z = world_model.make_told("pixels", ACTION_DIM, 8, mlp_dim=16, num_channels=4).encode(
        pixels_agent.params, jnp.full((3, 40, 40, 6), 255, jnp.uint8))
    chex.assert_shape(z, (3, 8))


# ================================================================ pieces of an update


def test_truncated_noise_clamps_and_passes_gradient_straight_through():
    mu = jnp.array([0.0, 0.9, -0.95, 0.2])
    eps = jnp.array([0.1, 1.0, -1.0, -2.0])
    action = tdmpc.truncated_noise_action(mu, 1.0, eps, clip=0.3)
    high, low = np.float32(1 - 1e-6), np.float32(-1 + 1e-6)
    np.testing.assert_allclose(np.asarray(action), [0.1, high, low, -0.1], rtol=1e-6)
    assert np.asarray(action)[1] == high and np.asarray(action)[2] == low  # exactly the clamped value
    grad_mu = jax.grad(lambda m: jnp.sum(tdmpc.truncated_noise_action(m, 1.0, eps, clip=0.3)))(mu)
    np.testing.assert_array_equal(np.asarray(grad_mu), 1.0)  # also where the value was clamped
    grad_std = jax.grad(lambda s: jnp.sum(tdmpc.truncated_noise_action(mu, s, eps, clip=0.3)))(1.0)
    np.testing.assert_allclose(float(grad_std), 0.1, rtol=1e-6)  # only the unclipped noise depends on std


def test_sequence_losses_by_hand():
    config = tdmpc.Config()
    # Sample 0: small errors (hand values below); sample 1: errors that the 1e4 clamp cuts.
    z_target = jnp.zeros((2, 2, 2))
    z_pred = jnp.array([[[1.0, 1.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]])  # (H, B, L)
    reward = jnp.zeros((2, 2))
    reward_pred = jnp.array([[2.0, 1000.0], [2.0, 1000.0]])
    td_target = jnp.zeros((2, 2))
    q1 = jnp.array([[1.0, 1e5], [2.0, 0.0]])
    q2 = jnp.array([[-1.0, 0.0], [0.0, 0.0]])
    weights = jnp.array([1.0, 0.5])
    out = tdmpc.sequence_losses(z_pred, z_target, reward_pred, reward, q1, q2, td_target, weights, config)
    chex.assert_shape([out.consistency, out.reward, out.value, out.priorities, out.total], (2,))
    # consistency: 1 + 0.5 * mean([4, 0]) = 2; reward: 4 + 0.5 * 4 = 6; value: (1 + 1) + 0.5 * 4 = 4.
    np.testing.assert_allclose(np.asarray(out.consistency), [2.0, 0.0])
    np.testing.assert_allclose(np.asarray(out.reward), [6.0, 1.5e6])
    np.testing.assert_allclose(np.asarray(out.value), [4.0, 1e10], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.priorities), [3.0, 1e4])  # 2 + 0.5 * 2; 1e5 clamped
    # total = 2 * 2 + 0.5 * 6 + 0.1 * 4 = 7.4; sample 1: 0.5 * 1e4 + 0.1 * 1e4 (both clamped) = 6000.
    np.testing.assert_allclose(np.asarray(out.total), [7.4, 6000.0], rtol=1e-6)
    np.testing.assert_allclose(float(out.weighted), (7.4 * 1.0 + 6000.0 * 0.5) / 2, rtol=1e-6)
    # The (B, 1) x (B,) broadcast of §10 #10 is refused by the shape checks.
    with pytest.raises(AssertionError):
        tdmpc.sequence_losses(z_pred, z_target, reward_pred, reward, q1, q2, td_target, weights[:, None], config)


class LinearModel(NamedTuple):
    """A hand-made TOLD with scalar params: latent = 2-d obs, 2-d actions (numpy twin below)."""

    def encode(self, p, obs):
        return p["encoder"] * obs

    def next(self, p, z, a):
        return p["dynamics"] * z + a, p["reward"] * jnp.sum(z * a, -1)

    def q(self, p, z, a):
        return p["q"][0] * jnp.sum(z + a, -1), p["q"][1] * jnp.sum(z * z - a, -1)

    def pi(self, p, z):
        return jnp.tanh(p["pi"] * z)


ONLINE = {"encoder": 2.0, "dynamics": 0.9, "reward": 0.7, "q": np.array([1.0, -0.5]), "pi": 0.5}
TARGET = {"encoder": 3.0, "dynamics": -1.0, "reward": 5.0, "q": np.array([0.8, 0.3]), "pi": -1.0}


def np_q(p, z, a):
    return p["q"][0] * np.sum(z + a, -1), p["q"][1] * np.sum(z * z - a, -1)


def np_policy(p, z, eps, min_std=0.05):
    return np.clip(np.tanh(p["pi"] * z) + np.clip(min_std * eps, -0.3, 0.3), -1 + 1e-6, 1 - 1e-6)


def np_td_target(next_obs, reward, eps, gamma=0.99):
    """The spec's y: ONLINE encoder and policy, TARGET Q heads, min over the two."""
    z = ONLINE["encoder"] * next_obs
    return reward + gamma * np.minimum(*np_q(TARGET, z, np_policy(ONLINE, z, eps)))


def test_td_target_uses_online_encoder_and_min_of_target_qs():
    next_obs = np.array([[0.1, 0.2], [-0.4, 0.3], [0.5, -0.6]])
    reward = np.array([1.0, -0.5, 0.25])
    eps = np.array([[0.3, -0.2], [10.0, 0.0], [-1.0, 2.0]])
    y = tdmpc.td_targets(LinearModel(), ONLINE, TARGET, jnp.asarray(next_obs), jnp.asarray(reward),
                         jnp.asarray(eps), tdmpc.Config())
    np.testing.assert_allclose(np.asarray(y), np_td_target(next_obs, reward, eps), rtol=1e-5)
    # The hand values differ from every wrong choice (target encoder, online Q, max instead of min).
    z_target_encoder = TARGET["encoder"] * next_obs
    wrong = reward + 0.99 * np.minimum(*np_q(TARGET, z_target_encoder, np_policy(ONLINE, z_target_encoder, eps)))
    assert np.abs(np.asarray(y) - wrong).max() > 0.1
    z = ONLINE["encoder"] * next_obs
    q1, q2 = np_q(TARGET, z, np_policy(ONLINE, z, eps))
    assert np.any(q1 < q2) and np.any(q2 < q1)  # the min picks each head somewhere


def test_model_loss_against_a_numpy_rollout():
    horizon, batch = 2, 3
    config = tdmpc.Config(horizon=horizon)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(batch, 2))
    next_obs = rng.normal(size=(horizon, batch, 2))
    action = rng.uniform(-1, 1, size=(horizon, batch, 2))
    reward = rng.normal(size=(horizon, batch))
    weights = np.array([1.0, 0.5, 0.25])
    eps = rng.normal(size=(horizon, batch, 2))
    loss, (out, latents) = tdmpc.model_loss(LinearModel(), ONLINE, TARGET, *map(jnp.asarray, (
        obs, next_obs, action, reward, weights, eps)), config)

    # numpy, step by step as spec §2.2 writes it.
    z = ONLINE["encoder"] * obs
    zs = [z]
    cons, rew, val, pri = (np.zeros(batch) for _ in range(4))
    for t in range(horizon):
        q1, q2 = np_q(ONLINE, z, action[t])
        z_next = ONLINE["dynamics"] * z + action[t]
        reward_pred = ONLINE["reward"] * np.sum(z * action[t], -1)
        y = np_td_target(next_obs[t], reward[t], eps[t])
        z_hat = TARGET["encoder"] * next_obs[t]  # EMA encoder of o_{t+1}
        cons += RHO ** t * np.mean((z_next - z_hat) ** 2, -1)
        rew += RHO ** t * (reward_pred - reward[t]) ** 2
        val += RHO ** t * ((q1 - y) ** 2 + (q2 - y) ** 2)
        pri += RHO ** t * (np.abs(q1 - y) + np.abs(q2 - y))
        z = z_next
        zs.append(z)
    total = 2.0 * cons + 0.5 * rew + 0.1 * val
    np.testing.assert_allclose(np.asarray(out.consistency), cons, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.reward), rew, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.value), val, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.priorities), pri, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.total), total, rtol=1e-5)
    np.testing.assert_allclose(float(out.weighted), np.mean(total * weights), rtol=1e-5)
    np.testing.assert_allclose(float(loss), np.mean(total * weights) / horizon, rtol=1e-5)  # 1/H scale
    np.testing.assert_allclose(np.asarray(latents), np.stack(zs), rtol=1e-5)


def test_policy_loss_by_hand():
    latents = np.random.default_rng(1).normal(size=(3, 2, 2))  # (T, B, L)
    eps = np.random.default_rng(2).normal(size=(3, 2, 2))
    loss = tdmpc.policy_loss(LinearModel(), ONLINE, jnp.asarray(latents), jnp.asarray(eps), tdmpc.Config())
    expected = sum(RHO ** t * -np.mean(np.minimum(*np_q(ONLINE, latents[t], np_policy(ONLINE, latents[t], eps[t]))))
                   for t in range(3))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_policy_loss_gradient_flows_only_into_pi():
    latents = jnp.asarray(np.random.default_rng(1).normal(size=(3, 2, 2)))
    eps = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2, 2)))
    params = {name: jnp.asarray(value, jnp.float32) for name, value in ONLINE.items()}
    grads, latent_grads = jax.grad(lambda p, z: tdmpc.policy_loss(LinearModel(), p, z, eps, tdmpc.Config()),
                                   argnums=(0, 1))(params, latents)
    # Q (which the loss reads) and the latents are held fixed; only the policy prior moves.
    for name in ("encoder", "dynamics", "reward", "q"):
        np.testing.assert_array_equal(np.asarray(grads[name]), 0.0)
    np.testing.assert_array_equal(np.asarray(latent_grads), 0.0)
    assert abs(float(grads["pi"])) > 1e-3


def test_augmentation_shifts_each_pixel_frame_and_leaves_states():
    obs = np.random.default_rng(0).integers(0, 256, size=(4, 6, 8, 8, 3)).astype(np.uint8)
    out = np.asarray(tdmpc.augment_observations(PIXELS, jnp.asarray(obs), jax.random.PRNGKey(0)))
    assert out.shape == obs.shape and out.dtype == np.float32
    pad = tdmpc.augment_pad(PIXELS)
    assert pad == 1  # int(40 / 21)
    padded = np.pad(obs, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = []
    for b, t in itertools.product(range(4), range(6)):
        found = [(dy, dx) for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)
                 if np.array_equal(padded[b, t, dy:dy + 8, dx:dx + 8], out[b, t])]
        assert found, (b, t)
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # frames are shifted independently
    states = jnp.ones((2, 3, 5))
    np.testing.assert_array_equal(np.asarray(tdmpc.augment_observations(STATES, states, jax.random.PRNGKey(0))),
                                  np.asarray(states))


# ================================================================ update


def test_update_by_hand_at_init_and_ema_every_second_step(states_agent):
    # At init R == 0 and Q == 0 (zero last layers, target too), so y_t = r_t and the reward and value
    # terms and priorities are known: sum_t rho^t r^2, sum_t rho^t 2 r^2, sum_t rho^t 2|r|.
    reward = np.array([[1.0] * 5, [2.0] * 5, [-1.0] * 5, [5000.0] * 5])
    batch = states_batch(0, reward)
    s1, m1 = tdmpc.update(states_agent, batch, 1, jax.random.PRNGKey(1))
    chex.assert_shape(m1["priorities"], (BATCH,))
    np.testing.assert_allclose(np.asarray(m1["priorities"]), [2 * RHO_SUM, 4 * RHO_SUM, 2 * RHO_SUM, 1e4],
                               rtol=1e-5)
    np.testing.assert_allclose(float(m1["reward_loss"]), np.mean(RHO_SUM * reward[:, 0] ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(m1["value_loss"]), np.mean(2 * RHO_SUM * reward[:, 0] ** 2), rtol=1e-5)
    for name in ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "total_loss", "weighted_loss",
                 "grad_norm"):
        assert m1[name].shape == () and m1[name].dtype == jnp.float32 and np.isfinite(float(m1[name])), name
    np.testing.assert_allclose(float(s1.std_floor), 0.5 - 0.45 / 25_000, rtol=1e-6)  # std_schedule(1)
    for name in ("encoder", "dynamics", "reward", "q"):  # every module of the model step moved
        chex.assert_trees_all_equal_structs(s1.params[name], states_agent.params[name])
        assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(
            jax.tree.leaves(s1.params[name]), jax.tree.leaves(states_agent.params[name]))), name

    # step 1 (odd): no EMA. The policy prior moved (its own step) only after the model step.
    chex.assert_trees_all_equal(s1.target_params, states_agent.target_params)
    assert not np.allclose(np.asarray(s1.params["pi"]["params"]["dense_2"]["kernel"]),
                           np.asarray(states_agent.params["pi"]["params"]["dense_2"]["kernel"]))
    # step 2 (even): target <- 0.99 target + 0.01 online (after both steps), the whole model.
    s2, _ = tdmpc.update(s1, states_batch(1), 2, jax.random.PRNGKey(2))
    expected = jax.tree.map(lambda t, p: 0.99 * t + 0.01 * p, s1.target_params, s2.params)
    chex.assert_trees_all_close(s2.target_params, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(s2.target_params["pi"]["params"]["dense_2"]["kernel"]),
                           np.asarray(s1.target_params["pi"]["params"]["dense_2"]["kernel"]))
    # step 3 (odd) again: no EMA.
    s3, _ = tdmpc.update(s2, states_batch(2), 3, jax.random.PRNGKey(3))
    chex.assert_trees_all_equal(s3.target_params, s2.target_params)


def test_pixel_update_and_shapes(pixels_agent):
    state = pixels_agent
    with pytest.raises(ValueError, match="channel-last"):
        tdmpc.create(jax.random.PRNGKey(0), (6, 40, 40), ACTION_DIM, PIXELS)
    rng = np.random.default_rng(0)
    batch = {
        "obs": jnp.asarray(rng.integers(0, 256, size=(2, HORIZON + 1, *PIXEL_SHAPE)), jnp.uint8),
        "action": jnp.asarray(rng.uniform(-1, 1, size=(2, HORIZON, ACTION_DIM)), jnp.float32),
        "reward": jnp.ones((2, HORIZON), jnp.float32),
        "weights": jnp.ones((2,), jnp.float32),
    }
    new_state, metrics = tdmpc.update(state, batch, 0, jax.random.PRNGKey(1))
    chex.assert_shape(metrics["priorities"], (2,))
    np.testing.assert_allclose(np.asarray(metrics["priorities"]), 2 * RHO_SUM, rtol=1e-5)  # Q == 0, r == 1
    assert all(np.isfinite(float(v)) for k, v in metrics.items() if k != "priorities")
    conv = lambda s: np.asarray(s.params["encoder"]["params"]["conv_0"]["kernel"])
    assert not np.allclose(conv(new_state), conv(state))  # the model loss trains the conv encoder
    with pytest.raises(ValueError, match="H=4"):
        tdmpc.update(state, {k: v[:, :-1] if k != "weights" else v for k, v in batch.items()}, 0,
                     jax.random.PRNGKey(1))


# ================================================================ planner


def test_mppi_finds_the_optimum_of_a_quadratic():
    target = jnp.array([[0.3, -0.5], [0.7, 0.1], [-0.2, 0.4]])

    def value_fn(actions, key):
        return -jnp.sum(jnp.square(actions - target), axis=(1, 2))

    run = jax.jit(lambda key: tdmpc.mppi(value_fn, key, jnp.zeros((3, 2)), 0.05))
    for seed in range(3):
        result = run(jax.random.PRNGKey(seed))
        chex.assert_shape([result.mean, result.std, result.elite_actions, result.elite_logits],
                          [(3, 2), (3, 2), (64, 3, 2), (64,)])
        np.testing.assert_allclose(np.asarray(result.mean), np.asarray(target), atol=0.03)
        np.testing.assert_allclose(np.asarray(result.std), 0.05)  # converged: clamped at the floor
        assert float(jnp.max(result.elite_logits)) == 0.0  # logits = temperature * (G - max G)


def test_mppi_uses_policy_sequences_and_clamps_std_from_below():
    best = jnp.full((1, 2, 1), 0.8)  # only a policy sequence reaches it in one iteration

    def value_fn(actions, key):
        return -1000.0 * jnp.sum(jnp.square(actions - best[0]), axis=(1, 2))

    result = tdmpc.mppi(value_fn, jax.random.PRNGKey(0), jnp.full((2, 1), -0.8), 0.0, policy_actions=best,
                        num_samples=64, num_elites=8, iterations=1, temperature=10.0, momentum=0.0)
    np.testing.assert_allclose(np.asarray(result.mean), 0.8, atol=1e-3)
    flat = tdmpc.mppi(lambda a, k: jnp.zeros(a.shape[0]), jax.random.PRNGKey(0), jnp.zeros((2, 1)), 1.5,
                      num_samples=64, num_elites=8, iterations=2)
    np.testing.assert_array_equal(np.asarray(flat.std), 1.5)  # elites in [-1, 1] have std < 1.5


def test_trajectory_values_by_hand():
    # G = sum_t gamma^t R(z_t, a_t) + gamma^h min(Q1, Q2)(z_h, pi(z_h)); min_std 0: no policy noise.
    config = tdmpc.Config(min_std=0.0)
    actions = np.random.default_rng(3).uniform(-1, 1, size=(4, 3, 2))
    z0 = np.array([0.5, -0.2])
    values = tdmpc.trajectory_values(LinearModel(), ONLINE, jnp.asarray(z0), jnp.asarray(actions),
                                     jax.random.PRNGKey(0), config)
    expected = []
    for sequence in actions:
        z, g = z0, 0.0
        for t, a in enumerate(sequence):
            g += 0.99 ** t * ONLINE["reward"] * np.sum(z * a)
            z = ONLINE["dynamics"] * z + a
        q1, q2 = np_q(ONLINE, z, np.tanh(ONLINE["pi"] * z))
        expected.append(g + 0.99 ** 3 * min(q1, q2))
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5)


def test_warm_start_mean():
    prev = jnp.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(np.asarray(tdmpc.warm_start_mean(prev, 3, jnp.array(False))),
                                  [[2, 3], [4, 5], [0, 0]])
    np.testing.assert_array_equal(np.asarray(tdmpc.warm_start_mean(prev, 3, jnp.array(True))), np.zeros((3, 2)))


def test_plan_seed_phase_warm_start_and_clamp(states_agent):
    prev = jnp.arange(1.0, 11.0).reshape(HORIZON, ACTION_DIM) / 10
    obs = jnp.ones((STATE_DIM,))

    def plan(key, step, first_step=False, state=states_agent):
        return tdmpc.plan(state, obs, jax.random.PRNGKey(key), prev, step=step, horizon=3,
                          first_step=jnp.array(first_step), eval_mode=False)

    # Seed phase (step < seed_steps = 100): Uniform(-1, 1), the previous mean returned unchanged.
    actions = []
    for key in range(150):
        action, mean = plan(key, 99)
        np.testing.assert_array_equal(np.asarray(mean), np.asarray(prev))
        actions.append(np.asarray(action))
    actions = np.stack(actions)
    assert actions.shape == (150, ACTION_DIM) and np.all(np.abs(actions) <= 1)
    assert abs(actions.mean()) < 0.1 and abs(actions.var() - 1 / 3) < 0.06 and actions.min() < -0.9
    # Planning (momentum 1 keeps the mean at its warm start): prev shifted one step, zero padded.
    _, mean = plan(0, 100)
    np.testing.assert_allclose(np.asarray(mean), [[0.3, 0.4], [0.5, 0.6], [0, 0], [0, 0], [0, 0]], rtol=1e-6)
    _, mean = plan(0, 100, first_step=True)
    np.testing.assert_array_equal(np.asarray(mean), 0.0)
    # Training noise sigma'_0 (>= the floor, here set to 2) is added, then the action clamped to [-1, 1].
    wide = states_agent.replace(std_floor=jnp.float32(2.0))
    actions = np.stack([np.asarray(plan(key, 100, state=wide)[0]) for key in range(30)])
    assert np.all(np.abs(actions) <= 1) and np.sum(np.abs(actions) == 1) > 10
    with pytest.raises(ValueError, match="no batch axis"):
        tdmpc.plan(states_agent, jnp.ones((1, STATE_DIM)), jax.random.PRNGKey(0), prev, step=100, horizon=3,
                   first_step=jnp.array(True), eval_mode=False)


class QuadraticLatentModel(NamedTuple):
    """z = obs, z' = 0.5 z + 0.2 a, R(z, a) = -|z + a|^2, Q == 0, pi == 0. Every reward can be 0: the
    best sequence is a_t = -z_t, i.e. a_0 = -z_0, a_1 = -0.3 z_0, a_2 = -0.09 z_0 (z_1 = 0.3 z_0, ...)."""

    def encode(self, p, obs):
        return obs

    def next(self, p, z, a):
        return 0.5 * z + 0.2 * a, -jnp.sum(jnp.square(z + a), -1)

    def q(self, p, z, a):
        return jnp.zeros(z.shape[0]), jnp.zeros(z.shape[0])

    def pi(self, p, z):
        return jnp.zeros_like(z)


def test_plan_finds_the_best_actions_of_a_known_latent_model(monkeypatch):
    # A config used by no other test, so `plan` is traced with the hand-made model.
    config = tdmpc.Config(latent_dim=2, mlp_dim=3, num_seed_frames=0)
    monkeypatch.setattr(tdmpc, "model", lambda config, action_dim: QuadraticLatentModel())
    state = tdmpc.TDMPCState(params={}, target_params={}, model_opt_state=None, pi_opt_state=None,
                             std_floor=jnp.float32(0.02), config=config, action_dim=2, obs_shape=(2,))
    z0 = np.array([0.4, -0.3])
    best = np.stack([-z0, -0.3 * z0, -0.09 * z0])
    for key in range(2):
        action, mean = tdmpc.plan(state, jnp.asarray(z0), jax.random.PRNGKey(key), jnp.zeros((5, 2)), step=0,
                                  horizon=3, first_step=jnp.array(True), eval_mode=True)
        np.testing.assert_allclose(np.asarray(mean[:3]), best, atol=0.02)
        np.testing.assert_array_equal(np.asarray(mean[3:]), 0.0)
        np.testing.assert_allclose(np.asarray(action), best[0], atol=0.1)  # an elite's first action
