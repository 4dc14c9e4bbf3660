"""Tests of PPO (agents/ppo.py) and the running statistics / normalizers (core/running_stats.py).

References are numbers worked out by hand (written next to each test), scipy, numpy, and gymnasium's
own RunningMeanStd / NormalizeReward driven on a scripted environment, never the code under test.
The update tests share one small Config (and batch shapes) so the file compiles few programs.
"""

import dataclasses
import math

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.wrappers.utils import RunningMeanStd as GymRunningMeanStd
from scipy import stats as scipy_stats

from agents import ppo
from core import running_stats as rs

OBS_DIM, ACTION_DIM = 3, 2
# A full buffer of b * n = 16 steps x 2 envs = 32 samples, minibatches of 32 / 4 = 8; K = 160 // 16 = 10.
BASE = ppo.Config(hidden_dim=16, num_steps=8, buffer_batches=2, num_envs=2, num_minibatches=4, update_epochs=3,
                  num_train_frames=160, lr=1e-2, target_kl=0.0)
HALF_LOG_2PI_E = 0.5 + 0.5 * math.log(2 * math.pi)  # entropy of N(0, 1) = 1.4189385...


def random_rollout(key, T, E, obs_dim=OBS_DIM, action_dim=ACTION_DIM, done_every=5) -> ppo.Rollout:
    k_obs, k_act, k_rew, k_last = jax.random.split(key, 4)
    dones = (np.arange(T * E).reshape(T, E) % done_every == done_every - 1).astype(np.float32)
    return ppo.Rollout(obs=jax.random.normal(k_obs, (T, E, obs_dim)),
                       actions=jax.random.normal(k_act, (T, E, action_dim)),
                       rewards=jax.random.normal(k_rew, (T, E)), dones=jnp.asarray(dones),
                       last_obs=jax.random.normal(k_last, (E, obs_dim)))


def numpy_mlp(layers, x):
    """Reference forward pass: tanh after every layer but the last."""
    n = len(layers)
    for i in range(n):
        x = x @ np.asarray(layers[f"layer_{i}"]["kernel"], np.float64) + np.asarray(layers[f"layer_{i}"]["bias"])
        if i < n - 1:
            x = np.tanh(x)
    return x


@pytest.fixture(scope="module")
def full_setup():
    """A fresh agent and its prepared batch of a full buffer (T = 16, E = 2)."""
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)
    rollout = random_rollout(jax.random.PRNGKey(1), 16, 2)
    return state, ppo.prepare(state, rollout, BASE)


# ================================================================ running statistics


def test_running_stats_match_numpy_and_gymnasium_over_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, size=(n, 3)) for n in (3, 7, 1, 12)]
    stats = rs.running_stats_init(3)
    gym_stats = GymRunningMeanStd(shape=(3,))
    update = jax.jit(rs.running_stats_update)
    for batch in batches:
        stats = update(stats, batch)
        gym_stats.update(batch)
    data = np.concatenate(batches)
    # gymnasium's float64 statistics, same prior (mean 0, var 1, count 1e-4): equal up to float32.
    np.testing.assert_allclose(stats.mean, gym_stats.mean, rtol=1e-5)
    np.testing.assert_allclose(stats.var, gym_stats.var, rtol=1e-5)
    np.testing.assert_allclose(float(stats.count), 23 + 1e-4, rtol=1e-7)
    # Plain numpy over all the data: the 1e-4 prior shifts mean/var by ~1e-5 relative only.
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=2e-4)
    np.testing.assert_allclose(stats.var, data.var(axis=0), rtol=2e-4)


def test_normalize_clip_and_denormalize():
    stats = rs.RunningMeanStd(mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 0.25]), count=jnp.asarray(10.0))
    x = jnp.array([[5.0, -2.0], [1.0, 10.0]])
    expected = np.array([[4 / 2, 0.0], [0.0, 12 / 0.5]])  # (x - mean) / sqrt(var), eps negligible
    np.testing.assert_allclose(rs.normalize(stats, x), expected, rtol=1e-6)
    np.testing.assert_allclose(rs.normalize(stats, x, clip=10.0), np.clip(expected, -10, 10), rtol=1e-6)
    np.testing.assert_allclose(rs.denormalize(stats, rs.normalize(stats, x)), x, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        rs.running_stats_update(stats, jnp.zeros((4, 3)))


class ScriptedEnv(gym.Env):
    """Emits a fixed sequence of (reward, terminated, truncated); observations are unused."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, script):
        self.script, self.t = script, 0

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward, terminated, truncated = self.script[self.t]
        self.t += 1
        return np.zeros(1, np.float32), reward, terminated, truncated, {}


# Rewards with a truncation after step 2 and a termination after step 5 (episodes continue unreset,
# as in an autoresetting vector environment).
SCRIPT = [(1.0, False, False), (2.0, False, False), (-3.0, False, True), (0.5, False, False),
          (4.0, False, False), (1.5, True, False), (-1.0, False, False), (2.5, False, False)]


def test_reward_normalizer_matches_gymnasium_normalize_reward():
    gamma = 0.9
    wrapped = gym.wrappers.NormalizeReward(ScriptedEnv(SCRIPT), gamma=gamma, epsilon=1e-8)
    wrapped.reset()
    norm = rs.reward_normalizer_init(1)
    step = jax.jit(rs.reward_normalizer_step, static_argnames="gamma")
    returns = []
    for reward, terminated, truncated in SCRIPT:
        expected = wrapped.step(np.zeros(1, np.float32))[1]
        norm, scaled = step(norm, jnp.array([reward]), jnp.array([terminated]), jnp.array([truncated]), gamma=gamma)
        np.testing.assert_allclose(scaled, [expected], rtol=1e-5)
        returns.append(float(norm.discounted_return[0]))
    # By hand, which flag resets G: the truncation after step 2 does not (G_2 = 2.9 * .9 - 3 = -0.39,
    # G_3 = -0.39 * .9 + .5 = 0.149); the termination after step 5 does, in that step (G_5 = 1.5), so
    # the terminal reward starts the next G: G_6 = 1.5 * .9 - 1 = 0.35, G_7 = 0.35 * .9 + 2.5 = 2.815.
    np.testing.assert_allclose(returns, [1.0, 2.9, -0.39, 0.149, 4.1341, 1.5, 0.35, 2.815], rtol=1e-5)
    np.testing.assert_allclose(float(norm.return_stats.count), 8 + 1e-4, rtol=1e-7)


def test_reward_normalizer_two_envs_share_one_return_statistic():
    gamma = 0.99
    rewards = np.array([[1.0, -1.0], [2.0, 0.5], [0.0, 3.0], [1.0, 1.0]])
    terminated = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], bool)
    truncated = np.array([[0, 1], [0, 0], [0, 0], [0, 0]], bool)
    # Hand-run of the wrapper's rule with gymnasium's own RunningMeanStd, updated with both G's per step.
    gym_stats, g = GymRunningMeanStd(shape=()), np.zeros(2)
    norm = rs.reward_normalizer_init(2)
    for t in range(4):
        g = g * gamma * (1 - terminated[t]) + rewards[t]
        gym_stats.update(g)
        norm, scaled = rs.reward_normalizer_step(norm, rewards[t], terminated[t], truncated[t], gamma)
        np.testing.assert_allclose(scaled, rewards[t] / np.sqrt(gym_stats.var + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(norm.discounted_return, g, rtol=1e-6)
    np.testing.assert_allclose(rs.scale_reward(norm, rewards[0], clip=0.5), np.clip(
        rewards[0] / np.sqrt(gym_stats.var + 1e-8), -0.5, 0.5), rtol=1e-5)
    np.testing.assert_allclose(rs.unscale_reward(norm, rs.scale_reward(norm, rewards[0])), rewards[0], rtol=1e-6)


# ================================================================ config


def test_config_for_task_uses_the_props_ppo_column():
    for task in ("Hopper-v4", "Hopper-v5"):
        c = ppo.config_for_task(task)
        assert (c.num_steps, c.lr, c.num_train_frames) == (2048, 1e-3, 1_000_000)
    c = ppo.config_for_task("Humanoid-v5")
    assert (c.num_steps, c.lr, c.num_train_frames) == (8192, 1e-4, 6_000_000)
    c = ppo.config_for_task("HalfCheetah-v5", lr=3e-4)
    assert (c.num_steps, c.lr, c.num_train_frames) == (1024, 3e-4, 2_000_000)
    c = ppo.config_for_task("Reacher-v5")  # not in the table: defaults
    assert (c.num_steps, c.lr, c.buffer_batches, c.kl_check, c.ent_coef) == (2048, 1e-4, 1, "before_step", 0.01)
    with pytest.raises(ValueError, match="valid fields"):
        ppo.config_for_task("Hopper-v5", learning_rate=1e-3)
    with pytest.raises(ValueError, match="kl_check"):
        ppo.Config(kl_check="after_minibatch")
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo.Config(num_steps=100, num_minibatches=32)  # 100 samples do not split into 32 equal parts
    with pytest.raises(ValueError, match="must be a int"):
        ppo.Config(num_steps="2048")


# ================================================================ networks and distribution


def test_network_init():
    assert (ppo.Config().hidden_dim, ppo.Config().tanh_mean) == (64, True)
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)  # hidden 16
    actor, critic = state.params["actor"], state.params["critic"]
    np.testing.assert_array_equal(state.params["log_std"], np.zeros(ACTION_DIM))
    for layers in (actor, critic):
        for layer in layers.values():
            np.testing.assert_array_equal(layer["bias"], 0.0)
        w0, w1 = np.asarray(layers["layer_0"]["kernel"]), np.asarray(layers["layer_1"]["kernel"])
        assert w0.shape == (OBS_DIM, 16) and w1.shape == (16, 16)
        np.testing.assert_allclose(w0 @ w0.T, 2 * np.eye(OBS_DIM), atol=1e-5)  # orthogonal, gain sqrt(2)
        np.testing.assert_allclose(w1.T @ w1, 2 * np.eye(16), atol=1e-5)
    out = np.asarray(actor["layer_2"]["kernel"])
    np.testing.assert_allclose(out.T @ out, 1e-4 * np.eye(ACTION_DIM), atol=1e-9)  # gain 0.01: a near-zero mean
    w_v = np.asarray(critic["layer_2"]["kernel"])
    np.testing.assert_allclose(w_v.T @ w_v, [[1.0]], rtol=1e-5)  # gain 1
    mean, log_std = ppo.policy(state.params, jax.random.normal(jax.random.PRNGKey(4), (16, OBS_DIM)), True)
    assert mean.shape == (16, ACTION_DIM) and log_std.shape == (16, ACTION_DIM)
    assert float(jnp.max(jnp.abs(mean))) < 0.1
    assert int(state.num_updates) == 0


def test_policy_and_value_match_a_numpy_forward_pass():
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)
    params = jax.tree.map(lambda x: x + 0.3, state.params)  # move off the init so tanh_mean matters
    obs = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (7, OBS_DIM)))
    raw = numpy_mlp(params["actor"], obs)
    for tanh_mean, expected in ((True, np.tanh(raw)), (False, raw)):
        mean, log_std = ppo.policy(params, obs, tanh_mean)
        np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(log_std, np.broadcast_to(np.asarray(params["log_std"]), (7, ACTION_DIM)))
    np.testing.assert_allclose(ppo.value(params, obs), numpy_mlp(params["critic"], obs)[:, 0], rtol=1e-5, atol=1e-6)


def test_log_prob_and_entropy_match_scipy():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(6, 3))
    log_std = rng.normal(scale=0.5, size=(6, 3))
    action = rng.normal(size=(6, 3)) * 2
    expected = scipy_stats.norm.logpdf(action, loc=mean, scale=np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(ppo.log_prob(mean, log_std, action), expected, rtol=1e-5)
    np.testing.assert_allclose(ppo.entropy(log_std), scipy_stats.norm.entropy(scale=np.exp(log_std)).sum(-1),
                               rtol=1e-5)
    np.testing.assert_allclose(ppo.entropy(jnp.zeros(3)), 3 * HALF_LOG_2PI_E, rtol=1e-6)


def test_act_samples_unclipped_gaussian_and_eval_mean():
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)
    obs = jnp.tile(jax.random.normal(jax.random.PRNGKey(8), (1, OBS_DIM)), (4000, 1))
    mean, _ = ppo.policy(state.params, obs, True)
    # the jitted act and the policy are separate programs: equal up to float rounding
    np.testing.assert_allclose(ppo.act(state, obs, jax.random.PRNGKey(9), eval_mode=True), mean, rtol=1e-5, atol=1e-7)
    actions = np.asarray(ppo.act(state, obs, jax.random.PRNGKey(9)))
    np.testing.assert_allclose(actions.mean(0), mean[0], atol=0.06)  # std 1: 4000 samples, se 0.016
    np.testing.assert_allclose(actions.std(0), [1.0, 1.0], atol=0.05)
    assert np.abs(actions).max() > 2.0  # not clipped to the action bounds: the environment clips


# ================================================================ GAE and prepare


def test_gae_hand_trajectory_two_envs():
    # gamma = lam = 0.5 (gamma * lam = 0.25). Env 0 is truncated after step 1, env 1 terminated after
    # step 2; both end the episode (CleanRL convention): no bootstrap and no recursion through them.
    terminated = np.array([[0, 0], [0, 0], [0, 1], [0, 0]], bool)
    truncated = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
    dones = np.logical_or(terminated, truncated).astype(np.float32)
    rewards = np.array([[1, 0], [2, 0], [3, 1], [4, 0]], np.float32)
    values = np.array([[1, 0], [1, 2], [1, 0], [1, 4]], np.float32)
    next_values = np.array([[1, 2], [1, 0], [1, 4], [2, 8]], np.float32)  # values shifted, then V(last obs)
    # Env 0: deltas (0.5, 1, 2.5, 4) -> A3 = 4, A2 = 2.5 + .25 * 4 = 3.5, A1 = 1 (cut), A0 = .5 + .25 * 1.
    # Env 1: deltas (1, -2, 1, 0)    -> A3 = 0, A2 = 1 (cut), A1 = -2 + .25 * 1 = -1.75, A0 = 1 - .25 * 1.75.
    expected_adv = np.array([[0.75, 0.5625], [1.0, -1.75], [3.5, 1.0], [4.0, 0.0]])
    for fn in (ppo.gae, jax.jit(ppo.gae, static_argnums=(4, 5))):
        adv, ret = fn(rewards, values, next_values, dones, 0.5, 0.5)
        np.testing.assert_allclose(adv, expected_adv, rtol=1e-6)
        np.testing.assert_allclose(ret, expected_adv + values, rtol=1e-6)


def test_prepare_matches_a_cleanrl_style_reference(full_setup):
    state, batch = full_setup
    rollout = random_rollout(jax.random.PRNGKey(1), 16, 2)
    params, T, E = state.params, 16, 2
    obs = np.asarray(rollout.obs, np.float64)
    values = numpy_mlp(params["critic"], obs)[..., 0]
    next_value = numpy_mlp(params["critic"], np.asarray(rollout.last_obs))[..., 0]
    mean = np.tanh(numpy_mlp(params["actor"], obs))
    log_probs = scipy_stats.norm.logpdf(np.asarray(rollout.actions), mean, 1.0).sum(-1)  # log_std = 0 at init
    # CleanRL's loop: dones_before[t] = "obs[t] starts a new episode" = our dones[t - 1]; next_done = dones[T - 1].
    dones = np.asarray(rollout.dones)
    dones_before = np.concatenate([np.zeros((1, E)), dones[:-1]])
    rewards, g, lam = np.asarray(rollout.rewards), BASE.gamma, BASE.gae_lambda
    advantages, last = np.zeros((T, E)), 0.0
    for t in reversed(range(T)):
        if t == T - 1:
            nonterminal, next_values = 1.0 - dones[T - 1], next_value
        else:
            nonterminal, next_values = 1.0 - dones_before[t + 1], values[t + 1]
        delta = rewards[t] + g * next_values * nonterminal - values[t]
        advantages[t] = last = delta + g * lam * nonterminal * last
    expected = {"obs": obs.reshape(T * E, -1), "actions": np.asarray(rollout.actions).reshape(T * E, -1),
                "log_probs": log_probs.reshape(-1), "values": values.reshape(-1),
                "advantages": advantages.reshape(-1), "returns": (advantages + values).reshape(-1)}
    assert set(batch) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(batch[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


# ================================================================ PPO loss


def controlled_minibatch(state, ratios, advantages, value_shift, return_gap):
    """A minibatch whose ratio r and value offsets are exactly the given numbers at state.params:
    old log-prob = new - log r; old value = V - d; return = V - e."""
    n = len(ratios)
    obs = jax.random.normal(jax.random.PRNGKey(11), (n, OBS_DIM))
    actions = jax.random.normal(jax.random.PRNGKey(12), (n, ACTION_DIM))
    mean, log_std = ppo.policy(state.params, obs, True)
    new_log_probs = ppo.log_prob(mean, log_std, actions)
    v = ppo.value(state.params, obs)
    return {"obs": obs, "actions": actions, "log_probs": new_log_probs - jnp.log(jnp.asarray(ratios)),
            "values": v - jnp.asarray(value_shift), "returns": v - jnp.asarray(return_gap),
            "advantages": jnp.asarray(advantages, jnp.float32)}


def test_ppo_loss_on_hand_numbers():
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5]
    advantages = [2.0, 1.0, 1.0, -1.0, -1.0]
    mb = controlled_minibatch(state, ratios, advantages, value_shift=[0.1, 0.5, -0.5, 0.3, 0.0],
                              return_gap=[1.0, 1.0, 1.0, -0.1, 2.0])
    # Surrogate terms max(-A r, -A clip(r, .8, 1.2)): -2.2 (inside), -1.2 (clipped), -0.5 (A > 0, r < .8:
    # unclipped is the max), 0.8 (A < 0, r < .8: clipped), 1.5 (A < 0, r > 1.2: unclipped) -> mean -0.32.
    # Value terms max(e^2, (e - d + clip(d, +-.2))^2): 1, max(1, .49) = 1, max(1, 1.69) = 1.69,
    # max(.01, .04) = .04, 4 -> 0.5 * 7.73 / 5 = 0.773; unclipped 0.5 * 7.01 / 5 = 0.701.
    entropy = 2 * HALF_LOG_2PI_E  # log_std = 0, two action dims
    approx_kl = np.mean([(r - 1) - math.log(r) for r in ratios])
    config = dataclasses.replace(BASE, norm_adv=False)
    for loss_fn in (ppo.ppo_loss, jax.jit(ppo.ppo_loss, static_argnums=2)):
        loss, m = loss_fn(state.params, mb, config)
        np.testing.assert_allclose(m["policy_loss"], -0.32, rtol=1e-5)
        np.testing.assert_allclose(m["value_loss"], 0.773, rtol=1e-5)
        np.testing.assert_allclose(m["entropy"], entropy, rtol=1e-6)
        np.testing.assert_allclose(m["clip_fraction"], 0.8)  # |r - 1| > 0.2 for all but r = 1.1
        np.testing.assert_allclose(m["approx_kl"], approx_kl, rtol=1e-5)
        np.testing.assert_allclose(loss, -0.32 - 0.01 * entropy + 0.5 * 0.773, rtol=1e-5)
    _, m = ppo.ppo_loss(state.params, mb, dataclasses.replace(BASE, norm_adv=False, clip_vloss=False))
    np.testing.assert_allclose(m["value_loss"], 0.701, rtol=1e-5)
    # Per-minibatch advantage normalization with the sample std (ddof 1, PyTorch's): mean 0.4, std sqrt(1.8).
    a = (np.array(advantages) - 0.4) / (math.sqrt(1.8) + 1e-8)
    r = np.array(ratios)
    _, m = ppo.ppo_loss(state.params, mb, BASE)
    np.testing.assert_allclose(m["policy_loss"], np.mean(np.maximum(-a * r, -a * np.clip(r, 0.8, 1.2))), rtol=1e-5)


# ================================================================ ppo_update: minibatches, KL early stop, lr


def perturbed(batch, shift=0.5):
    """Old log-probs 0.5 below the current policy's: every ratio is e^0.5, so the first minibatch's
    approx-KL is (e^0.5 - 1) - 0.5 = 0.1487 whatever the minibatch."""
    return {**batch, "log_probs": batch["log_probs"] - shift}


def run_update(state, batch, **overrides):
    config = dataclasses.replace(BASE, **overrides)
    return ppo.ppo_update(state.replace(config=config), batch, jax.random.PRNGKey(2), config)


def params_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_kl_early_stop_before_step(full_setup):
    state, batch = full_setup
    tiny = dict(target_kl=1e-9, kl_check="before_step")
    # Fresh batch: the first minibatch is measured at the params that computed the old log-probs, so
    # its KL is 0 (not > 1e-9) and it steps; after that step (lr 1e-2) the next KL is > 1e-9: 1 step.
    new_state, m = run_update(state, batch, **tiny)
    assert (float(m["gradient_steps"]), float(m["early_stopped"])) == (1.0, 1.0)
    assert not params_equal(new_state.params, state.params)
    # Perturbed batch: the very first minibatch's KL (0.1487) exceeds the target: no step at all.
    new_state, m = run_update(state, perturbed(batch), **tiny)
    assert (float(m["gradient_steps"]), float(m["early_stopped"])) == (0.0, 1.0)
    np.testing.assert_allclose(m["approx_kl"], math.exp(0.5) - 1.5, rtol=1e-4)
    assert params_equal(new_state.params, state.params)
    assert params_equal(new_state.opt_state, state.opt_state)
    assert int(new_state.num_updates) == 1


def test_kl_early_stop_after_epoch_and_after_step(full_setup):
    state, batch = full_setup
    # CleanRL: the KL is looked at after each epoch only: exactly one epoch (4 minibatches) of steps.
    for b in (batch, perturbed(batch)):
        _, m = run_update(state, b, target_kl=1e-9, kl_check="after_epoch")
        assert (float(m["gradient_steps"]), float(m["early_stopped"])) == (4.0, 1.0)
    # PROPS-2025: the minibatch whose KL exceeds the target still steps. Fresh: KL 0 then > 1e-9 -> 2 steps;
    # perturbed: the first minibatch exceeds -> 1 step.
    _, m = run_update(state, batch, target_kl=1e-9, kl_check="after_step")
    assert float(m["gradient_steps"]) == 2.0
    _, m = run_update(state, perturbed(batch), target_kl=1e-9, kl_check="after_step")
    assert float(m["gradient_steps"]) == 1.0


def test_full_and_partial_buffer_minibatches(full_setup):
    state, batch = full_setup
    # KL stop disabled (target_kl = 0): every slot steps, even on the perturbed batch.
    _, m = run_update(state, perturbed(batch))
    assert (float(m["gradient_steps"]), float(m["early_stopped"])) == (12.0, 0.0)  # 3 epochs x 32 / 8
    # Half a buffer (T = 8 of 16): the minibatch size stays 8, so 2 minibatches per epoch.
    half = jax.tree.map(lambda x: x[:16], batch)
    _, m = run_update(state, half)
    assert float(m["gradient_steps"]) == 6.0
    assert ppo.minibatch_layout(32, BASE) == (4, 8)
    assert ppo.minibatch_layout(16, BASE) == (2, 8)
    assert ppo.minibatch_layout(6, BASE) == (1, 6)  # smaller than one minibatch: one minibatch (PPOROS)
    with pytest.raises(ValueError, match="minibatch"):
        ppo.minibatch_layout(20, BASE)
    with pytest.raises(ValueError, match="minibatch"):
        run_update(state, jax.tree.map(lambda x: x[:20], batch))


def test_ppo_update_improves_the_surrogate_and_value_loss(full_setup):
    state, batch = full_setup
    new_state, m = run_update(state, batch)
    _, before = ppo.ppo_loss(state.params, batch, BASE)
    _, after = ppo.ppo_loss(new_state.params, batch, BASE)
    # At the old params every ratio is 1 and the normalized advantages average 0: policy loss 0.
    assert abs(float(before["policy_loss"])) < 1e-6
    assert float(after["policy_loss"]) < -0.01  # the surrogate objective went up
    assert float(after["value_loss"]) < float(before["value_loss"])
    assert float(m["gradient_steps"]) == 12.0 and int(new_state.num_updates) == 1


def test_learning_rate_annealing_sets_the_step_size(full_setup):
    state, batch = full_setup
    # K = 160 // (8 * 2) = 10 updates; after k = 3 the lr is 1e-2 * (1 - 3 / 10) = 7e-3.
    assert ppo.num_target_updates(BASE) == 10
    np.testing.assert_allclose(ppo.learning_rate(BASE, 3), 7e-3, rtol=1e-6)
    np.testing.assert_allclose(ppo.learning_rate(BASE, 0), 1e-2, rtol=1e-6)
    np.testing.assert_allclose(ppo.learning_rate(BASE, 12), 0.0)  # past K: floored, never negative
    no_anneal = dataclasses.replace(BASE, anneal_lr=False)
    np.testing.assert_allclose(ppo.learning_rate(no_anneal, 3), 1e-2, rtol=1e-6)
    # One step from a fresh Adam state (kl_check "before_step" with a tiny target runs exactly one, see
    # test_kl_early_stop_before_step) moves each parameter by lr * g / (|g| + 1e-5): the log-std entries
    # (|g| >> 1e-5) by 7e-3 to within 0.1%, no parameter by more.
    start = state.replace(num_updates=jnp.asarray(3, jnp.int32))
    new_state, m = run_update(start, batch, target_kl=1e-9, kl_check="before_step")
    assert float(m["gradient_steps"]) == 1.0
    np.testing.assert_allclose(m["lr"], 7e-3, rtol=1e-6)
    step = np.abs(np.asarray(new_state.params["log_std"] - state.params["log_std"]))
    np.testing.assert_allclose(step, 7e-3, rtol=1e-3)
    largest = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                  zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)))
    assert largest <= 7e-3 * 1.0001
    assert int(new_state.num_updates) == 4


def test_update_end_to_end_and_buffer_lengths():
    state = ppo.create(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, BASE)
    assert (ppo.window_steps(BASE), ppo.buffer_steps(BASE)) == (8, 16)
    rollout = random_rollout(jax.random.PRNGKey(1), 16, 2)
    state, m = ppo.update(state, rollout, jax.random.PRNGKey(2))
    state, m = ppo.update(state, rollout, jax.random.PRNGKey(3))
    assert int(state.num_updates) == 2
    np.testing.assert_allclose(m["lr"], 1e-2 * 0.9, rtol=1e-6)  # the second update: k = 1
    expected = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance",
                "gradient_steps", "early_stopped", "lr", "loss", "grad_norm", "sampling_error"}
    assert expected <= set(m)
    assert np.isnan(float(m["sampling_error"]))  # se_every_updates = 0: always present, NaN (not computed)
    assert all(m[name].shape == () for name in m)
    assert float(m["gradient_steps"]) == 12.0
    with pytest.raises(ValueError):
        ppo.update(state, rollout._replace(last_obs=jnp.zeros((3, OBS_DIM))), jax.random.PRNGKey(4))
