"""The on-policy loop (core/onpolicy.py) with a FAKE agent written here (the loop's agent contract,
core/onpolicy.py module doc: create / act / update / window_steps / buffer_steps / Rollout), on
InvertedPendulum-v5 (4 states, 1 action in [-1, 1], short episodes under a random policy).

References are independent of the code under test: gymnasium's own NormalizeObservation /
NormalizeReward / ClipAction wrappers, numpy re-computations of the statistics and of the
re-normalization, episodes replayed by hand from their seeds, and an uninterrupted run for resume.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import types
from typing import NamedTuple

import flax.struct as struct
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from core import onpolicy
from core.checkpoint import Checkpointer
from core.offpolicy import EVAL_EPISODE, TRAIN_EPISODE, episode_seed

TASK = "InvertedPendulum-v5"
EPS = 1e-8  # gymnasium's normalizer epsilon


# ----------------------------------------------------------------------------------------- fake agent

@dataclasses.dataclass(frozen=True)
class FakeConfig:
    window: int = 4  # steps between update calls
    buffer_batches: int = 2  # buffer = buffer_batches * window
    mean_bias: float = 0.0  # the policy mean is mean_bias + tanh(obs @ w)
    log_std: float = 0.0
    num_envs: int = 1
    num_train_frames: int = 48
    num_steps: int = 8
    eval_every_updates: int = 2
    num_eval_episodes: int = 2
    gamma: float = 0.99
    normalize_obs: bool = True
    normalize_reward: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0


class FakeState(struct.PyTreeNode):
    w: jnp.ndarray  # (obs_dim, A)
    bias: jnp.ndarray  # (A,)
    log_std: jnp.ndarray  # (A,)
    num_updates: jnp.ndarray


class FakeRollout(NamedTuple):
    obs: jnp.ndarray
    actions: jnp.ndarray
    rewards: jnp.ndarray
    dones: jnp.ndarray
    last_obs: jnp.ndarray


def _create(key, obs_dim, action_dim, config):
    return FakeState(w=0.1 * jax.random.normal(key, (obs_dim, action_dim)),
                     bias=jnp.full((action_dim,), config.mean_bias, jnp.float32),
                     log_std=jnp.full((action_dim,), config.log_std, jnp.float32), num_updates=jnp.zeros((), jnp.int32))


def _act(state, obs, key, eval_mode=False):
    mean = state.bias + jnp.tanh(obs @ state.w)
    if eval_mode:
        return mean
    return mean + jnp.exp(state.log_std) * jax.random.normal(key, mean.shape)


def _update(state, rollout, key):
    """A deterministic change that depends on every rollout value and on the key."""
    T = rollout.obs.shape[0]
    weights = rollout.rewards * (1 - rollout.dones)
    signal = jnp.einsum("ted,tea->da", rollout.obs, rollout.actions * weights[..., None])
    w = state.w + 1e-3 * signal / T + 1e-4 * jax.random.normal(key, state.w.shape)
    metrics = {"rollout_steps": jnp.asarray(T, jnp.float32), "obs_sum": rollout.obs.sum(),
               "reward_sum": rollout.rewards.sum(), "dones_sum": rollout.dones.sum(),
               "last_obs_sum": rollout.last_obs.sum(), "key_noise": jax.random.uniform(key)}
    return state.replace(w=w, num_updates=state.num_updates + 1), metrics


def _config_for_task(task, **overrides):
    valid = {f.name for f in dataclasses.fields(FakeConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown Config field(s) {unknown}")
    return FakeConfig(**overrides)


fake = types.SimpleNamespace(
    Config=FakeConfig, config_for_task=_config_for_task, create=_create, act=_act, update=jax.jit(_update),
    Rollout=FakeRollout, window_steps=lambda c: c.window, buffer_steps=lambda c: c.buffer_batches * c.window)


def loop_config(agent_config: FakeConfig, seeds=(0, 1), **kw) -> onpolicy.OnPolicyConfig:
    fields = {name: getattr(agent_config, name) for name in onpolicy.LOOP_FIELDS}
    return onpolicy.OnPolicyConfig(task=TASK, seeds=tuple(seeds), **{**fields, "progress": False, **kw})


@pytest.fixture
def make_trainer(tmp_path):
    made = []

    def make(seeds=(0, 1), **agent_kw):
        agent_config = FakeConfig(**agent_kw)
        trainer = onpolicy.OnPolicyTrainer(fake, agent_config, loop_config(agent_config, seeds), str(tmp_path / "run"))
        made.append(trainer)
        return trainer

    yield make
    for trainer in made:
        trainer.close()


def stats_of(trainer):
    """Host copies (float64) of the observation mean/var and the return variance, per seed."""
    obs, rew = jax.device_get((trainer.obs_stats, trainer.reward_norm))
    return (np.asarray(obs.mean, np.float64), np.asarray(obs.var, np.float64),
            np.asarray(rew.return_stats.var, np.float64))


# ----------------------------------------------------------------------------------------- ring buffer

@pytest.mark.parametrize("b", [1, 2, 4])
def test_ring_buffer_returns_the_last_b_windows_oldest_first(b):
    window, S, E = 3, 2, 2
    buffer = onpolicy.RingBuffer(S, b * window, E, obs_dim=1, action_dim=1)
    for t in range(5 * window + 2):
        tag = np.full((S, E), t, np.float32) + np.array([[0.0, 0.25]]) + np.array([[0.0], [0.5]])
        buffer.add(tag[..., None], tag[..., None], tag, np.full((S, E), t % 2, np.float32))
        data = buffer.chronological()
        expected_t = np.arange(max(0, t + 1 - b * window), t + 1)  # exactly the steps that remain
        assert data["obs"].shape == (S, len(expected_t), E, 1)
        np.testing.assert_array_equal(data["rewards"][0, :, 0], expected_t)
        np.testing.assert_array_equal(data["rewards"][1, :, 1], expected_t + 0.75)
        np.testing.assert_array_equal(data["actions"][..., 0], data["rewards"])
        np.testing.assert_array_equal(data["dones"][0, :, 0], expected_t % 2)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_updates_see_exactly_the_last_buffer_steps_renormalized_with_frozen_stats(make_trainer, b):
    """Through the loop: at each update boundary the rollout holds the last min(t, b * window) steps in
    order, their obs/rewards = the stored un-normalized copies re-normalized with the CURRENT stats,
    without clip; building it changes no statistic."""
    window = 4
    trainer = make_trainer(window=window, buffer_batches=b, num_steps=window)
    trainer.start_episodes()
    steps = []  # (transition, obs stats before the step = those s_t was normalized with, return var after it)
    for t in range(1, (b + 2) * window + 1):
        mean, var, _ = stats_of(trainer)
        transition = trainer.env_step()
        steps.append((transition, mean, var, stats_of(trainer)[2]))
        if t % window:
            continue
        before = stats_of(trainer)
        rollout = jax.device_get(trainer.rollout())
        after = stats_of(trainer)
        for x, y in zip(before, after):
            np.testing.assert_array_equal(x, y)
        mean_now, var_now, ret_var_now = after
        kept = steps[-min(t, b * window):]
        assert rollout.obs.shape == (2, len(kept), 1, 4)
        np.testing.assert_array_equal(rollout.actions, np.stack([s[0].action for s in kept], 1))
        np.testing.assert_array_equal(rollout.dones, np.stack([s[0].terminated | s[0].truncated for s in kept], 1))
        # stored copy = denormalize(stats then, clipped normalized obs); re-normalized with the stats now
        copies = np.stack([s[0].obs * np.sqrt(s[2][:, None] + EPS) + s[1][:, None] for s in kept], 1)
        expected_obs = (copies - mean_now[:, None, None]) / np.sqrt(var_now[:, None, None] + EPS)
        np.testing.assert_allclose(rollout.obs, expected_obs, rtol=1e-4, atol=1e-5)
        reward_copies = np.stack([s[0].reward * np.sqrt(s[3][:, None] + EPS) for s in kept], 1)
        np.testing.assert_allclose(rollout.rewards, reward_copies / np.sqrt(ret_var_now[:, None, None] + EPS),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rollout.last_obs, transition.next_obs, rtol=1e-6)
        if t > window:  # the statistics moved since the oldest step was normalized: re-normalization matters
            assert not np.allclose(rollout.obs[:, 0], kept[0][0].obs, atol=1e-4)
        trainer.update()


def test_normalization_matches_gymnasium_wrappers(make_trainer):
    """E = 1: the obs the agent sees and the rewards it is trained on equal those of gymnasium's
    ClipAction + NormalizeObservation + clip + NormalizeReward + clip on the same environment, episode
    seeds and actions (the loop's vector env resets on its own; the reference is reset by hand)."""
    trainer = make_trainer(seeds=(3,), log_std=1.0)  # wide actions: some get clipped
    trainer.start_episodes()

    env = envs.make(TASK, obs_type="states")
    env = gym.wrappers.ClipAction(env)
    env = gym.wrappers.NormalizeObservation(env)
    env = gym.wrappers.TransformObservation(env, lambda o: np.clip(o, -10, 10), env.observation_space)
    env = gym.wrappers.NormalizeReward(env, gamma=0.99)
    env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -10, 10))
    episode = 0
    ref_obs, _ = env.reset(seed=episode_seed(3, TRAIN_EPISODE, episode))
    clipped_any, episodes = False, 0
    for _ in range(300):
        transition = trainer.env_step()
        np.testing.assert_allclose(transition.obs[0, 0], ref_obs, rtol=1e-4, atol=1e-5)
        action = transition.action[0, 0]
        clipped_any |= bool(np.any(np.abs(action) > 1))
        ref_obs, ref_reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(transition.reward[0, 0], ref_reward, rtol=1e-4, atol=1e-6)
        assert transition.terminated[0, 0] == terminated and transition.truncated[0, 0] == truncated
        if terminated or truncated:
            episode, episodes = episode + 1, episodes + 1
            ref_obs, _ = env.reset(seed=episode_seed(3, TRAIN_EPISODE, episode))
        np.testing.assert_allclose(transition.next_obs[0, 0], ref_obs, rtol=1e-4, atol=1e-5)
    env.close()
    assert clipped_any and episodes >= 5
    assert np.abs(transition.obs).max() <= 10.0


def test_two_envs_per_seed_share_one_normalizer(make_trainer):
    """E = 2: one statistic per seed over every observation its environments showed: the first reset
    observations, every stepped one (the terminal one where an episode ended) and every reset one
    (numpy moments of exactly those values, replayed from the episode seeds and the clipped actions)."""
    E = 2
    trainer = make_trainer(seeds=(5,), num_envs=E, log_std=1.0)
    trainer.start_episodes()
    transitions = [trainer.env_step() for _ in range(40)]
    values, episodes = [], 0
    for e in range(E):  # environment e's k-th episode starts from episode_seed(seed, TRAIN, k * E + e)
        env, k = envs.make(TASK, obs_type="states"), 0
        values.append(env.reset(seed=episode_seed(5, TRAIN_EPISODE, e))[0])
        for transition in transitions:
            obs, _, terminated, truncated, _ = env.step(np.clip(transition.action[0, e], -1, 1))
            assert (terminated, truncated) == (transition.terminated[0, e], transition.truncated[0, e])
            values.append(obs)
            if terminated or truncated:
                k, episodes = k + 1, episodes + 1
                values.append(env.reset(seed=episode_seed(5, TRAIN_EPISODE, k * E + e))[0])
        env.close()
    assert episodes >= 4
    x = np.asarray(values, np.float64)
    n, prior = len(x), 1e-4  # gymnasium's prior: mean 0, var 1, count 1e-4, merged with the data
    expected_mean = x.sum(0) / (n + prior)
    expected_var = (prior + n * x.var(0) + x.mean(0) ** 2 * prior * n / (n + prior)) / (n + prior)
    mean, var, _ = stats_of(trainer)
    np.testing.assert_allclose(mean[0], expected_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var[0], expected_var, rtol=1e-3)
    assert float(jax.device_get(trainer.obs_stats.count)[0]) == pytest.approx(n + prior)


def test_update_cadence_and_run_directory(tmp_path):
    """One update call every window steps (frames = steps * num_envs), evaluation every
    eval_every_updates * num_steps steps plus at 0 and at the end, files of a run directory."""
    c = onpolicy.base_config(FakeConfig, TASK)
    c.root, c.seeds, c.progress = str(tmp_path), "0,1", False
    c.agent.window, c.agent.num_steps, c.agent.num_envs, c.agent.num_train_frames = 4, 8, 2, 100
    c.agent.eval_every_updates, c.agent.num_eval_episodes, c.agent.buffer_batches = 2, 1, 2
    summary = onpolicy.run(fake, "fake", c)
    run_dir = summary["run_dir"]
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "eval.csv", "metrics.csv", "tb"]
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["window_steps"] == 4 and saved["buffer_steps"] == 8 and saved["loop"]["num_envs"] == 2
    # 100 frames / (2 envs * 8 steps) = 6 target periods = 48 steps per env; updates every 4 steps
    metrics = read_rows(os.path.join(run_dir, "metrics.csv"))
    for seed in (0, 1):
        rows = [r for r in metrics if r["seed"] == seed]
        assert [r["step"] for r in rows] == list(range(4, 49, 4))
        assert [r["frame"] for r in rows] == [2 * s for s in range(4, 49, 4)]
        assert [r["update"] for r in rows] == list(range(1, 13))
        assert [r["rollout_steps"] for r in rows] == [4] + [8] * 11
        assert sum(r["episodes_ended"] for r in rows) == rows[-1]["episode"] > 0
    evals = read_rows(os.path.join(run_dir, "eval.csv"))
    assert [r["step"] for r in evals if r["seed"] == 0] == [0, 16, 32, 48]
    assert summary["step"] == 48


@pytest.mark.parametrize("bias", [0.3, 5.0])
def test_evaluation_plays_the_clipped_mean_with_frozen_stats_and_logs_raw_returns(make_trainer, bias):
    """Evaluation plays clip(mean action, -1, 1) on observations normalized with the frozen statistics
    (clipped +-10), and logs raw returns: a numpy re-play of that policy on the same episode seeds gives
    the same returns (a sampled action, a missing clip, updated statistics or normalized rewards would not).
    With bias 5 the mean is out of bounds, so every action sent must be exactly +1."""
    trainer = make_trainer(seeds=(0, 1), mean_bias=bias, log_std=1.0, num_eval_episodes=3)
    trainer.start_episodes()
    for _ in range(30):
        trainer.env_step()
    mean, var, _ = stats_of(trainer)
    w = np.asarray(jax.device_get(trainer.states.w), np.float32)
    sent, step = [], trainer.eval_envs.step

    def spy(action):
        sent.append(np.array(action))
        return step(action)

    trainer.eval_envs.step = spy
    rows = trainer.evaluate()
    for before, after in zip((mean, var), stats_of(trainer)):
        np.testing.assert_array_equal(before, after)
    sent = np.concatenate(sent)
    assert np.all(np.abs(sent) <= 1.0)
    if bias > 1:
        np.testing.assert_array_equal(sent, 1.0)
    for i, (seed, row) in enumerate(zip((0, 1), rows)):
        returns, lengths = [], []
        for k in range(3):
            env = envs.make(TASK, obs_type="states")
            obs, _ = env.reset(seed=episode_seed(seed, EVAL_EPISODE, k))
            total, length, done = 0.0, 0, False
            while not done:
                normalized = np.clip((obs - mean[i]) / np.sqrt(var[i] + EPS), -10, 10).astype(np.float32)
                action = np.clip(bias + np.tanh(normalized @ w[i]), -1, 1).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, length, done = total + reward, length + 1, terminated or truncated
            env.close()
            returns.append(total)
            lengths.append(length)
        assert row["episode_reward"] == pytest.approx(np.mean(returns))
        assert row["episode_length"] == pytest.approx(np.mean(lengths))
        assert row["step"] == 30 and row["frame"] == 30


def read_rows(path, drop=("fps", "wall_time")):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if k not in drop and v != ""} for r in csv.DictReader(f)]


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    def config(root):
        c = onpolicy.base_config(FakeConfig, TASK)
        c.root, c.seeds, c.progress, c.checkpoint_every_frames = str(root), "0,1", False, 16
        c.agent.window, c.agent.num_steps, c.agent.num_train_frames, c.agent.buffer_batches = 4, 8, 64, 3
        c.agent.eval_every_updates, c.agent.num_eval_episodes = 2, 1
        return c

    straight = onpolicy.run(fake, "fake", config(tmp_path / "a"))["run_dir"]

    original = onpolicy.OnPolicyTrainer.update

    def crash_at_update_11(self):
        if self.num_updates == 10:  # update 11 comes at step 44; the last checkpoint is at step 32
            raise KeyboardInterrupt("simulated crash")
        return original(self)

    monkeypatch.setattr(onpolicy.OnPolicyTrainer, "update", crash_at_update_11)
    with pytest.raises(KeyboardInterrupt):
        onpolicy.run(fake, "fake", config(tmp_path / "b"))
    monkeypatch.setattr(onpolicy.OnPolicyTrainer, "update", original)
    (crashed,) = (tmp_path / "b" / "fake" / TASK).iterdir()
    checkpoints = Checkpointer(f"{crashed}/checkpoints")
    assert checkpoints.latest_step() == 32
    meta_lengths = checkpoint_meta(crashed)["episode_length"]
    assert np.max(meta_lengths) > 0  # environments were mid-episode: resume replays them
    assert max(r["step"] for r in read_rows(f"{crashed}/metrics.csv")) == 40  # rows past the checkpoint exist...

    summary = onpolicy.run(fake, "fake", config(tmp_path / "b"), resume=str(crashed))
    assert summary["step"] == 64
    for name in ("metrics.csv", "eval.csv"):  # ...and are rewritten, once, with the same numbers
        assert read_rows(f"{crashed}/{name}") == read_rows(f"{straight}/{name}"), name
    resumed, uninterrupted = final_tree(crashed), final_tree(straight)
    assert jax.tree.structure(resumed) == jax.tree.structure(uninterrupted)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    # resuming a finished run does nothing
    assert onpolicy.run(fake, "fake", config(tmp_path / "b"), resume=str(crashed))["step"] == 64
    assert read_rows(f"{crashed}/metrics.csv") == read_rows(f"{straight}/metrics.csv")


def checkpoint_meta(run_dir) -> dict:
    (step,) = [d for d in os.listdir(f"{run_dir}/checkpoints") if d.isdigit()]
    with open(f"{run_dir}/checkpoints/{step}/meta/metadata") as f:
        return json.load(f)


def final_tree(run_dir):
    saved = json.load(open(f"{run_dir}/config.json"))
    agent_config = FakeConfig(**saved["agent_config"])
    loop = onpolicy.OnPolicyConfig(**{**saved["loop"], "seeds": tuple(saved["loop"]["seeds"])})
    trainer = onpolicy.OnPolicyTrainer(fake, agent_config, loop, str(run_dir))
    try:
        tree, meta = trainer.checkpointer.restore(trainer._checkpoint_tree())
    finally:
        trainer.close()
    assert meta["finished"]
    return jax.device_get(tree)


# ----------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("change, message", [
    (dict(task="Hopper-v9"), "not a known task"),
    (dict(task="toy_catch"), "continuous (Box) actions"),
    (dict(seeds="0,0"), "distinct non-negative integers"),
    (dict(window=3), "must be a multiple of the agent's window_steps=3"),
    (dict(buffer_batches=0), "buffer_steps(config) returned 0"),
    (dict(num_train_frames=7), "at least num_envs * num_steps = 8"),
    (dict(unknown_field=1), "unknown_field"),
])
def test_bad_input_stops_before_a_run_directory(tmp_path, capsys, change, message):
    c = onpolicy.base_config(FakeConfig, TASK)
    c.root, c.progress = str(tmp_path / "runs"), False
    c.agent.window, c.agent.num_steps = 4, 8
    for name, value in change.items():
        (c if name in ("task", "seeds") else c.agent)[name] = value
    with pytest.raises(SystemExit) as error:
        onpolicy.run(fake, "fake", c)
    assert message in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_resume_needs_a_run_directory_with_a_checkpoint(tmp_path):
    c = onpolicy.base_config(FakeConfig, TASK)
    with pytest.raises(SystemExit, match="no such directory"):
        onpolicy.run(fake, "fake", c, resume=str(tmp_path / "nowhere"))
