"""MJX environments (envs/mjx.py) against gymnasium, and the jitted on-policy loop (core/onpolicy_jax.py).

References are independent of the code under test: gymnasium's own MuJoCo environments (through
envs.gym_mujoco, float64 MuJoCo) started from the same state and driven by the same actions; a numpy
re-computation of the loop's normalizers, ring buffer and re-normalization from the raw environment
outputs; the toy environment below stepped by hand, one call at a time; a one-seed run for the
many-seed program.

Compile time rules this file: an MJX program takes 6-16 s of CPU time to compile here (tens of
seconds of wall clock on the shared 2-core machine), so the fast tests compile only two MJX programs
(one step of InvertedPendulum-v5 and one of Hopper-v5) and test the loop's logic with a tiny pure-JAX
environment (ToyEnv) and a small PPO. The MJX loop end to end - PPO learning InvertedPendulum in MJX -
and HalfCheetah are `slow` tests.
"""

from __future__ import annotations

import csv
import functools
import os

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ppo
from core import onpolicy_jax as oj
from envs import mjx as mjx_envs
from envs.gym_mujoco import GymMujocoEnv

# Extended checks: run locally, skipped on CI (CI=true) to keep CI within its time budget. The fast tests
# cover the same code (gymnasium equivalence on two tasks; the iteration against a numpy reference).
EXTENDED = pytest.mark.skipif(os.environ.get("CI") == "true", reason="extended check; run locally (CI time budget)")

EPS = 1e-8  # gymnasium's normalizer epsilon


# ----------------------------------------------------------------------------------------- MJX vs gymnasium

@pytest.fixture(scope="module")
def jitted_steps():
    """One jitted step per task for the whole file (an MJX compile is expensive)."""
    cache = {}

    def get(task):
        if task not in cache:
            cache[task] = jax.jit(mjx_envs.make_mjx(task).step)
        return cache[task]
    return get


def start_both(gym_id: str, seed: int):
    """gymnasium's env (pixax wrapper, [-1, 1] actions) reset with `seed`, its state rounded to float32
    and set back, and the MJX state at the same qpos/qvel."""
    env = mjx_envs.make_mjx("mjx_" + gym_id)
    ref = GymMujocoEnv(gym_id, seed=seed)
    ref.reset()
    qpos = ref._env.data.qpos.astype(np.float32)
    qvel = ref._env.data.qvel.astype(np.float32)
    ref._env.set_state(qpos.astype(np.float64), qvel.astype(np.float64))
    return env, ref, env.state_at(qpos, qvel, jax.random.PRNGKey(seed))


def inverted_pendulum_actions(obs, t, rng):
    """A balancing feedback (found by trying gains in gymnasium) for 20 steps, some beyond [-1, 1],
    then a constant push that topples the pole."""
    if t < 20:
        return np.array([0.1 * obs[0] + 3.0 * obs[1] + 0.3 * obs[2] + 0.5 * obs[3] + rng.normal(0, 0.3)], np.float32)
    return np.array([1.4], np.float32)


def random_actions(obs, t, rng, size):
    return rng.uniform(-1.5, 1.5, size).astype(np.float32)  # a third of them clipped


# Measured (max over the steps, float32 MJX vs float64 MuJoCo): InvertedPendulum obs 3e-7, reward 0;
# Hopper obs 1.4e-6, reward 2e-7 over 12-30 steps with contacts; HalfCheetah (velocities ~10, many
# contacts, chaotic: a 1e-6 perturbation of MuJoCo's own float64 state reaches 1e-3 in 10 steps and
# 0.4 in 40) obs 1e-4 - 4e-4 and reward 1.5e-5 over 8 steps on 3 seeds. A wrong formula - frame_skip,
# control cost weight (e.g. 1e-2 for 1e-3), healthy reward, the velocity clip, action scaling - is
# off by >= 1e-3 in the reward or by far more in the observation.
CASES = {
    "InvertedPendulum-v5": dict(steps=40, policy=inverted_pendulum_actions, obs_atol=1e-4, reward_atol=1e-4),
    "Hopper-v5": dict(steps=40, policy=lambda obs, t, rng: random_actions(obs, t, rng, 3), obs_atol=1e-4,
                      reward_atol=1e-4),
    "HalfCheetah-v5": dict(steps=8, policy=lambda obs, t, rng: random_actions(obs, t, rng, 6), obs_atol=2e-3,
                           reward_atol=2e-4),
}


@pytest.mark.parametrize("gym_id", [
    "InvertedPendulum-v5", "Hopper-v5",
    pytest.param("HalfCheetah-v5", marks=[pytest.mark.slow, EXTENDED]),  # a third MJX compile (~15 s of CPU)
])
def test_matches_gymnasium_step_for_step(gym_id, jitted_steps):
    env, ref, state = start_both(gym_id, seed=3)
    step = jitted_steps(env.task)
    assert (env.obs_dim, env.action_dim) == (ref.observation_space.shape[0], ref.action_space.shape[0])
    np.testing.assert_allclose(np.asarray(state.obs), ref._env._get_obs(), atol=1e-6)

    rng = np.random.default_rng(0)
    obs = ref._env._get_obs()
    case = CASES[gym_id]
    ended_at = None
    for t in range(case["steps"]):
        action = case["policy"](obs, t, rng)
        obs, reward, terminated, truncated, _ = ref.step(np.clip(action, -1.0, 1.0))  # ClipAction on the host
        state, mjx_obs, mjx_reward, mjx_terminated, mjx_truncated = step(state, jnp.asarray(action))
        np.testing.assert_allclose(np.asarray(state.final_obs), obs, atol=case["obs_atol"], err_msg=f"step {t}")
        np.testing.assert_allclose(float(mjx_reward), reward, atol=case["reward_atol"], err_msg=f"step {t}")
        assert bool(mjx_terminated) == terminated, t
        assert not truncated and not bool(mjx_truncated)  # 40 steps, far from the time limit
        if terminated:
            ended_at = t
            break
        np.testing.assert_array_equal(np.asarray(mjx_obs), np.asarray(state.final_obs))
    if gym_id == "HalfCheetah-v5":
        assert ended_at is None  # never terminates
    else:
        assert ended_at is not None and ended_at >= 10, ended_at  # the comparison covered an episode end


def test_episode_end_auto_resets_in_the_same_step(jitted_steps):
    """InvertedPendulum: a push topples the pole; the terminating step reports reward 0 and the terminal
    observation in final_obs, and already returns the next episode's start (reset noise +-0.01)."""
    env = mjx_envs.make_mjx("mjx_InvertedPendulum-v5")
    step = jitted_steps(env.task)
    state = env.reset(jax.random.PRNGKey(7))
    assert np.all(np.abs(np.asarray(state.obs)) <= 0.01) and int(state.steps) == 0
    for t in range(100):
        previous = state
        state, obs, reward, terminated, truncated = step(state, jnp.ones(1))
        if terminated:
            break
        assert float(reward) == 1.0 and int(state.steps) == t + 1
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(state.final_obs))
    assert bool(terminated) and not bool(truncated) and t >= 2  # a full push topples it in 3 steps
    assert float(reward) == 0.0
    assert abs(float(state.final_obs[1])) > 0.2  # the terminal angle
    assert int(state.steps) == 0 and np.all(np.abs(np.asarray(obs)) <= 0.01)  # a fresh episode
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(state.obs))
    assert not np.array_equal(np.asarray(state.key), np.asarray(previous.key))  # the next reset's noise differs

    # Time limit: the step that reaches max_episode_steps is truncated (and resets); the one before is not.
    start = env.reset(jax.random.PRNGKey(1))
    _, _, _, terminated, truncated = step(start.replace(steps=jnp.int32(env.max_episode_steps - 2)), jnp.zeros(1))
    assert not bool(truncated) and not bool(terminated)
    state, obs, reward, terminated, truncated = step(start.replace(steps=jnp.int32(env.max_episode_steps - 1)),
                                                     jnp.zeros(1))
    assert bool(truncated) and not bool(terminated) and float(reward) == 1.0 and int(state.steps) == 0
    assert not np.array_equal(np.asarray(obs), np.asarray(state.final_obs))


def test_task_names_shapes_and_reset_noise():
    assert mjx_envs.TASKS == ("mjx_InvertedPendulum-v5", "mjx_Hopper-v5", "mjx_HalfCheetah-v5")
    with pytest.raises(ValueError, match="mjx_Hopper-v5"):
        mjx_envs.make_mjx("Hopper-v5")
    assert mjx_envs.domain_of("mjx_HalfCheetah-v5") == "halfcheetah"
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    for task, dims, scale in (("mjx_Hopper-v5", (11, 3), 5e-3), ("mjx_HalfCheetah-v5", (17, 6), 0.1)):
        env = mjx_envs.make_mjx(task)
        assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (*dims, 1000)
        qpos, qvel = jax.jit(jax.vmap(env.initial_qpos_qvel))(keys)
        qpos_noise, qvel = np.asarray(qpos) - env.init_qpos, np.asarray(qvel)
        assert np.abs(qpos_noise).max() <= scale and np.abs(qpos_noise).max() > 0.99 * scale  # U(-s, s)
        np.testing.assert_allclose(qpos_noise.std(), scale / np.sqrt(3), rtol=0.05)
        if task == "mjx_HalfCheetah-v5":  # s * N(0, 1)
            np.testing.assert_allclose(qvel.std(), scale, rtol=0.05)
            assert np.abs(qvel).max() > 3 * scale
        else:
            assert np.abs(qvel).max() <= scale
    # InvertedPendulum's actions are rescaled to its +-3 bounds after ClipAction.
    env = mjx_envs.make_mjx("mjx_InvertedPendulum-v5")
    np.testing.assert_allclose(np.asarray(env.task_action(jnp.array([-2.0]))), [-3.0])
    np.testing.assert_allclose(np.asarray(env.task_action(jnp.array([0.25]))), [0.75])


# ----------------------------------------------------------------------------------------- ring buffer

@pytest.mark.parametrize("buffer_batches", [1, 2, 4])
def test_push_window_keeps_the_last_steps_oldest_first(buffer_batches):
    """push_window / valid_rows against a numpy ring buffer with a write position (core/onpolicy.py's
    layout): after each window the update sees exactly the steps still stored, in order."""
    W, E, D = 3, 2, 1
    capacity = buffer_batches * W
    ring = np.zeros((capacity, E, D))
    pos = filled = 0
    buffer = oj.Buffer(obs=jnp.zeros((capacity, E, D)), actions=jnp.zeros((capacity, E, 1)),
                       rewards=jnp.zeros((capacity, E)), dones=jnp.zeros((capacity, E)))
    for k in range(2 * buffer_batches + 1):
        steps = np.arange(k * W, (k + 1) * W, dtype=np.float32)  # the global step index as the payload
        window_obs = np.broadcast_to(steps[:, None, None], (W, E, D)) + np.array([0, 0.5])[None, :, None]
        for row in window_obs:
            ring[pos] = row
            pos, filled = (pos + 1) % capacity, min(filled + 1, capacity)
        expected = ring[(pos - filled + np.arange(filled)) % capacity]
        window = oj.Buffer(obs=jnp.asarray(window_obs), actions=jnp.zeros((W, E, 1)), rewards=jnp.zeros((W, E)),
                           dones=jnp.zeros((W, E)))
        buffer = oj.push_window(buffer, window)
        got = oj.valid_rows(buffer, min((k + 1) * W, capacity)).obs
        np.testing.assert_array_equal(np.asarray(got), expected)
        assert got[0, 0, 0] == max(0, (k + 1) * W - capacity)  # the oldest step still stored


# ----------------------------------------------------------------------------------------- the loop, on a toy env

class ToyState(struct.PyTreeNode):
    data: jax.Array  # (2,) position
    obs: jax.Array
    final_obs: jax.Array
    steps: jax.Array
    key: jax.Array


class ToyEnv:
    """A point in the plane with the MJX environments' interface: x += 0.5 * clip(a, -1, 1);
    obs (x0, x1, x0 * x1); reward 1 - x0^2 + 0.5 * clip(a1); terminated when |x0| > 0.7; time limit 5
    steps; reset x ~ U(-0.5, 0.5)^2; same-step auto-reset. Pure JAX, compiles in no time."""

    task = "toy"
    obs_dim, action_dim, max_episode_steps = 3, 2, 5

    def _observe(self, x):
        return jnp.stack([x[0], x[1], x[0] * x[1]])

    def reset(self, key):
        key, noise_key = jax.random.split(key)
        x = jax.random.uniform(noise_key, (2,), jnp.float32, -0.5, 0.5)
        obs = self._observe(x)
        return ToyState(data=x, obs=obs, final_obs=obs, steps=jnp.zeros((), jnp.int32), key=key)

    def step(self, state, action):
        a = jnp.clip(action, -1.0, 1.0)
        x = state.data + 0.5 * a
        obs = self._observe(x)
        reward = 1.0 - x[0] ** 2 + 0.5 * a[1]
        terminated = jnp.abs(x[0]) > 0.7
        steps = state.steps + 1
        truncated = steps >= self.max_episode_steps
        stepped = ToyState(data=x, obs=obs, final_obs=obs, steps=steps, key=state.key)
        restarted = self.reset(state.key).replace(final_obs=obs)
        state = jax.tree.map(lambda new, old: jnp.where(terminated | truncated, new, old), restarted, stepped)
        return state, state.obs, reward, terminated, truncated


TOY = ToyEnv()
# PPO-BUFFER shape: window n = 4 steps x 2 envs, buffer b = 2 windows (16 samples, minibatches of 8).
TOY_CONFIG = ppo.Config(hidden_dim=8, num_steps=4, buffer_batches=2, num_envs=2, num_minibatches=2, update_epochs=2,
                        lr=1e-2, target_kl=0.0, num_train_frames=24, eval_every_updates=1, num_eval_episodes=3)
TOY_SETTINGS = oj.LoopSettings.from_agent_config(TOY_CONFIG)


@functools.lru_cache(maxsize=None)
def run_toy(seeds: tuple, num_iterations: int = 3):
    """Iterations of the loop on ToyEnv (cached: tests share runs); (initial states, per iteration the
    host copies of (states, metrics, Window, Rollout, program))."""
    states = oj.init_seeds(ppo, TOY_CONFIG, TOY, seeds)
    initial = jax.device_get(states)
    out = []
    for _, states, metrics, window, rollout, program in oj.run_iterations(
            ppo, TOY, TOY_SETTINGS, ppo.window_steps(TOY_CONFIG), ppo.buffer_steps(TOY_CONFIG), states,
            num_iterations):
        out.append(jax.device_get((states, metrics, window, rollout, program)))
    return initial, out


class NumpyStats:
    """gymnasium's RunningMeanStd in float64."""

    def __init__(self, shape):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, batch):
        batch = np.asarray(batch, np.float64)
        n, batch_mean, batch_var = batch.shape[0], batch.mean(0), batch.var(0)
        delta, total = batch_mean - self.mean, self.count + batch.shape[0]
        m2 = self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total


def test_iteration_matches_numpy_reference():
    """Three iterations (buffer filling, full, evicting) of one seed: the actions reproduce the raw
    observations in the environment, and every Rollout handed to the update equals a numpy
    re-computation (spec §8.1 step 1: un-normalized copies of the clipped normalized values in a ring
    buffer of b * n steps, re-normalized with the frozen statistics, no second clip)."""
    initial, out = run_toy((3,))
    E, W, capacity, gamma = 2, 4, 8, TOY_CONFIG.gamma
    assert [o[4] for o in out] == [("collect+learn", 4), ("iteration", 8), ("iteration", 8)]

    # The environments: replaying the recorded actions from the initial states gives the recorded outputs.
    env_states = [jax.tree.map(lambda x, e=e: x[0, e], initial.env) for e in range(E)]
    toy_step = jax.jit(TOY.step)
    for (_, _, window, _, _) in out:
        for t in range(W):
            for e in range(E):
                env_states[e], obs, reward, terminated, truncated = toy_step(env_states[e], window.actions[0, t, e])
                np.testing.assert_allclose(np.asarray(obs), window.raw_obs[0, t, e], atol=1e-6)
                np.testing.assert_allclose(np.asarray(env_states[e].final_obs), window.final_obs[0, t, e], atol=1e-6)
                np.testing.assert_allclose(float(reward), window.raw_rewards[0, t, e], atol=1e-6)
                assert bool(terminated) == window.terminated[0, t, e] and bool(truncated) == window.truncated[0, t, e]
    dones = np.concatenate([w.terminated[0] | w.truncated[0] for (_, _, w, _, _) in out])
    assert dones.any() and np.concatenate([w.terminated[0] for (_, _, w, _, _) in out]).any()
    assert np.concatenate([w.truncated[0] for (_, _, w, _, _) in out]).any()

    # The normalizers and the buffer, in numpy (float64), from the raw outputs.
    obs_stats, return_stats = NumpyStats(3), NumpyStats(())
    discounted = np.zeros(E)
    obs0 = initial.env.obs[0]
    obs_stats.update(obs0)
    norm = np.clip((obs0 - obs_stats.mean) / np.sqrt(obs_stats.var + EPS), -10, 10)
    obs_copy = norm * np.sqrt(obs_stats.var + EPS) + obs_stats.mean
    rows = []  # (obs copy, action, reward copy, done) of every step
    for k, (state, _, window, rollout, _) in enumerate(out):
        for t in range(W):
            reward = window.raw_rewards[0, t].astype(np.float64)
            terminated, truncated = window.terminated[0, t], window.truncated[0, t]
            discounted = discounted * gamma * (1 - terminated) + reward  # truncation keeps G
            return_stats.update(discounted)
            scaled = np.clip(reward / np.sqrt(return_stats.var + EPS), -10, 10)
            reward_copy = scaled * np.sqrt(return_stats.var + EPS)
            obs_stats.update(window.final_obs[0, t])
            for e in range(E):  # then each reset observation, one after the other (per-env wrappers)
                if terminated[e] or truncated[e]:
                    obs_stats.update(window.raw_obs[0, t, e:e + 1])
            rows.append((obs_copy, window.actions[0, t], reward_copy, (terminated | truncated).astype(np.float64)))
            norm = np.clip((window.raw_obs[0, t] - obs_stats.mean) / np.sqrt(obs_stats.var + EPS), -10, 10)
            obs_copy = norm * np.sqrt(obs_stats.var + EPS) + obs_stats.mean
        valid = rows[-min(len(rows), capacity):]
        expected_obs = (np.stack([r[0] for r in valid]) - obs_stats.mean) / np.sqrt(obs_stats.var + EPS)
        expected_rewards = np.stack([r[2] for r in valid]) / np.sqrt(return_stats.var + EPS)
        np.testing.assert_allclose(rollout.obs[0], expected_obs, rtol=1e-5, atol=1e-5, err_msg=f"iteration {k}")
        np.testing.assert_allclose(rollout.rewards[0], expected_rewards, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(rollout.actions[0], np.stack([r[1] for r in valid]))  # unclipped samples
        np.testing.assert_array_equal(rollout.dones[0], np.stack([r[3] for r in valid]))
        np.testing.assert_allclose(rollout.last_obs[0], norm, rtol=1e-5, atol=1e-5)  # clipped, as acted on
        np.testing.assert_allclose(state.obs_stats.mean[0], obs_stats.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.obs_stats.var[0], obs_stats.var, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.reward_norm.return_stats.var[0], return_stats.var, rtol=1e-5)
        assert int(state.step[0]) == (k + 1) * W and int(state.num_updates[0]) == k + 1
    assert np.abs(np.concatenate([w.actions[0] for (_, _, w, _, _) in out])).max() > 1  # clipping exercised
    assert len(rows) == 12 and out[-1][3].obs.shape[1] == capacity  # the oldest window was evicted


def test_many_seeds_give_each_seed_its_single_seed_numbers():
    """Seed 3 alone and as the second of two seeds in one vmapped program: the same states, metrics,
    environment outputs and rollouts, up to float rounding (batched matmuls round differently; ~1e-7
    relative measured). One iteration (collect + learn), to keep this file's compile time down: the
    fused program is the same two functions in one jit."""
    _, alone = run_toy((3,))
    _, together = run_toy((9, 3), num_iterations=1)
    assert len(together) == 1
    for (s1, m1, w1, r1, _), (s2, m2, w2, r2, _) in zip(alone, together):
        second = lambda tree: jax.tree.map(lambda x: x[1], tree)  # noqa: E731
        first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
        for a, b in ((s1, s2), (m1, m2), (w1, w2), (r1, r2)):
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), first(a), second(b))
    # ... and the other seed's numbers are its own.
    assert not np.allclose(together[-1][2].raw_obs[0], together[-1][2].raw_obs[1])


def test_train_evaluates_and_logs(tmp_path):
    """train() on ToyEnv, 2 seeds, 2 updates: evaluations at step 0 and after every update
    (eval_every_updates 1), the CSV files, and the last evaluation re-run by hand (deterministic policy
    on frozen, clipped normalized observations; raw rewards until each episode's first end)."""
    result = oj.train(ppo, TOY_CONFIG, TOY, seeds=[0, 4], num_iterations=2, run_dir=str(tmp_path))
    assert list(result.eval_steps) == [0, 4, 8]
    assert result.eval_returns.shape == result.eval_lengths.shape == (3, 2)
    assert result.metrics["loss"].shape == (2, 2) and np.all(np.isfinite(result.metrics["loss"]))
    assert np.all(result.eval_lengths >= 1) and np.all(result.eval_lengths <= TOY.max_episode_steps)

    with open(os.path.join(tmp_path, "metrics.csv")) as f:
        metrics_rows = list(csv.DictReader(f))
    with open(os.path.join(tmp_path, "eval.csv")) as f:
        eval_rows = list(csv.DictReader(f))
    assert [(int(r["seed"]), int(r["step"]), int(r["frame"])) for r in metrics_rows] == [
        (seed, step, 2 * step) for step in (4, 8) for seed in (0, 4)]
    assert [float(r["episode_reward"]) for r in eval_rows[-2:]] == pytest.approx(list(result.eval_returns[-1]))
    assert os.path.exists(os.path.join(tmp_path, "config.json"))

    # The last evaluation (index 2) of seed 4, by hand.
    state = jax.tree.map(lambda x: x[1], result.states)
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, oj.EVAL_STREAM), 2), 3)
    returns, lengths = [], []
    toy_step, policy = jax.jit(TOY.step), jax.jit(ppo.policy, static_argnums=2)
    mean_obs, std_obs = state.obs_stats.mean, np.sqrt(state.obs_stats.var + EPS)
    for key in keys:
        env_state, total, length = TOY.reset(key), 0.0, 0
        while True:
            obs = np.clip((np.asarray(env_state.obs) - mean_obs) / std_obs, -10, 10)
            mean, _ = policy(state.agent.params, jnp.asarray(obs, jnp.float32), TOY_CONFIG.tanh_mean)
            env_state, _, reward, terminated, truncated = toy_step(env_state, mean)
            total, length = total + float(reward), length + 1
            if terminated or truncated:
                break
        returns.append(total)
        lengths.append(length)
    assert result.eval_returns[-1, 1] == pytest.approx(np.mean(returns), rel=1e-5)
    assert result.eval_lengths[-1, 1] == pytest.approx(np.mean(lengths))


def test_settings_come_from_the_agent_config():
    settings = oj.LoopSettings.from_agent_config(ppo.config_for_task("Hopper-v5"))
    assert (settings.num_steps, settings.num_envs, settings.eval_every_updates) == (2048, 1, 10)
    assert settings.total_steps == 1_000_000 // 2048 * 2048
    with pytest.raises(ValueError, match="lacks the field"):
        oj.LoopSettings.from_agent_config(object())
    with pytest.raises(ValueError, match="multiple of the agent's window_steps"):
        oj.check_windows(3, 8, num_steps=8)
    with pytest.raises(ValueError, match="shorter than its window_steps"):
        oj.check_windows(8, 4, num_steps=8)


# ----------------------------------------------------------------------------------------- learning, in MJX

@pytest.mark.slow
@EXTENDED
def test_ppo_learns_inverted_pendulum_in_mjx():
    """PPO (agents/ppo.py PPOROS defaults, with 4 environments, n = 256, lr 1e-3) on
    mjx_InvertedPendulum-v5, 2 seeds in one program, 30 updates (30,720 frames per seed).

    Measured here: seed 0 went from 21 to 1000 at 30,720 frames (E = 4, n = 256); the whole test
    ~50 s of CPU time (compiling the MJX iteration and evaluation ~35 s of it), 2-3x that in wall
    clock on the shared 2-core machine. Pass: mean > 500 and each seed > 200 at the end, out of reach
    of a policy that does not learn (untrained 20-45)."""
    config = ppo.config_for_task("InvertedPendulum-v5", num_envs=4, num_steps=256, lr=1e-3,
                                 num_train_frames=30_720, num_eval_episodes=5, eval_every_updates=1000)
    result = oj.train(ppo, config, "mjx_InvertedPendulum-v5", seeds=[0, 1])
    print("evaluation returns", result.eval_steps, result.eval_returns.T, "env steps/s", result.env_steps_per_second)
    assert list(result.eval_steps) == [0, 7680]
    assert result.eval_returns[0].max() < 100
    assert result.eval_returns[-1].mean() > 500 and result.eval_returns[-1].min() > 200
