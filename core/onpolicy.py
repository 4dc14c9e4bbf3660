"""The on-policy loop (PPO, PROPS): S seeds x E gymnasium environments on the host, `act` and `update`
jitted over the seeds (core/seeds.py), observation and reward normalizers owned by the loop.

    python experiments/ppo.py --config.task=Hopper-v5 --config.seeds=0,1,2
    python experiments/ppo.py --resume=runs/ppo/Hopper-v5/<timestamp>

One environment step, for all seeds at once (spec §7 wrappers, §8.1 step 1):
    act on the normalized observation s_t (one jitted call for all seeds) -> clip the action to the
    action bounds (ClipAction; the buffer keeps the unclipped sample) -> step the S*E environments
    (a gymnasium vector env, autoreset SAME_STEP: on an episode's last step the returned observation is
    already the next episode's reset observation, the terminal one is in info["final_obs"], and the
    done flag ends the episode) -> reward normalization (core/running_stats: fold r into the
    discounted return, update its statistics, scale, clip +-reward_clip) -> observation normalization
    (update the statistics with the stepped observations of all E environments - the terminal ones
    for environments that just finished - then with each reset observation, as a NormalizeObservation
    wrapper on each environment sees them; normalize, clip +-obs_clip) -> store in the seed's ring
    buffer the un-normalized copies of the clipped normalized s_t and r_t (spec §8.1 step 1), a_t and
    done_t = terminated or truncated.
Every `agent.window_steps(config)` steps: the valid buffer contents (the last min(filled,
`agent.buffer_steps(config)`) steps, oldest first) are re-normalized with the current statistics,
frozen and without clip (spec pitfall #30), and handed to `agent.update(state, Rollout, key)`.
Evaluation every `eval_every_updates * num_steps` steps, at step 0 and at the end: `num_eval_episodes`
episodes per seed, run side by side, with the deterministic mean action clipped to the action
bounds, observations normalized (and clipped) with frozen statistics, raw environment returns.

Normalizers: one observation normalizer and one reward normalizer per seed (pytrees stacked over
seeds), shared by the seed's E environments. With E = 1 (PPOROS, the default) they are gymnasium's
NormalizeObservation / NormalizeReward on that environment; with E > 1 one statistic is updated with
the batch of all E environments (gymnasium's vector-wrapper convention, not per-environment wrappers).

Units: `step` counts environment steps per environment (loop iterations); `frame` = step * num_envs is
the environment steps of one seed, the x-axis of every file. A run does K = num_train_frames //
(num_envs * num_steps) target updates' worth of steps (PPOROS num_updates), K * num_steps steps.

Files (core/logging.py): metrics.csv one row per `update` call and seed: the training episodes that
ended since the previous row (their mean `episode_reward` - raw environment rewards - and
`episode_length`, `episodes_ended`; empty when none ended), `episode` (episodes finished so far),
`fps`, and the agent's update metrics; eval.csv one row per evaluation and seed (`episode_reward` =
mean raw return over the evaluation episodes, `episode_length`).

The agent module provides (agents/ppo.py, agents/props.py): `config_for_task(task, **overrides)`
-> Config with the fields of LOOP_FIELDS; `create(key, obs_dim, action_dim, config)`;
`act(state, obs (E, D), key, eval_mode=False)` -> unclipped actions (E, A) (eval_mode: the mean);
`window_steps(config)` (steps per environment between update calls) and `buffer_steps(config)` (ring
buffer length per environment); `Rollout(obs (T, E, D), actions (T, E, A), rewards (T, E), dones (T, E),
last_obs (E, D))`; `update(state, rollout, key)` -> (state, flat dict of scalar metrics), jittable.

Evaluation returns are the raw environment rewards, unclipped (PPOROS's `Evaluate` still passes each
reward through the +-10 clip of its copied training env, spec §8.4; that differs only where a single
step earns more than 10, e.g. HumanoidStandup or a HalfCheetah running faster than 10 m/s).

Devices (`--config.devices`, core/devices.py; plan_devices): the seeds spread over the mesh's "seed"
devices, and each update's minibatches over its "data" devices (the agents pass them through
devices.shard_batch, so losses, gradients and PPO's advantage normalization stay those of the whole
minibatch). The data axis must divide every minibatch size of the agent (`agent.minibatch_sizes`);
anything else stops in `resolve`, before a run directory. One device: no mesh, the plain programs.
Agent states, normalizers, keys and each rollout live on the seed axis (also after a restore).

Randomness is a pure function of (seed, counters): act keys fold_in(key, step), update keys
fold_in(key, update index), the k-th episode of environment e of a seed starts from
reset(seed=episode_seed(seed, TRAIN_EPISODE, k * E + e)), evaluation episodes from their own stream.

Resume (`--resume=<run dir>`) is exact: the resumed run ends with the numbers of an uninterrupted one.
Checkpoints are taken at update boundaries, after the window's steps (and the episodes that ended on
them) and before its update. They hold the agent states, the normalizers, the RNG keys, the ring
buffer, the counters, the current observation (raw and normalized), each environment's episode index,
the return and length of its running episode, the returns of the episodes finished in the window,
and the actions taken so far in each running episode. A MuJoCo state cannot be saved through the
vector env, so on resume every environment replays its running episode: reset with that episode's
seed, then the stored actions (deterministic simulation gives the same state; the loop checks that
the replayed observation equals the saved one and warns if not). The replay updates no statistic.
Checkpoints come every `checkpoint_every_frames` frames rounded up to whole windows, and once more at
the end (after the last update and evaluation; resuming a finished run does nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from typing import Any, NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from ml_collections import config_dict

import envs
from core import devices
from core import launch
from core import logging as runlog
from core import running_stats as rs
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.logging import Logger
from core.offpolicy import EVAL_EPISODE, TRAIN_EPISODE, episode_seed

ACT_STREAM, UPDATE_STREAM = 0, 1  # fold_in streams of a seed's loop key
ASYNC_ENVS = ("auto", "true", "false")


@dataclasses.dataclass(frozen=True)
class OnPolicyConfig:
    """The loop's settings (the launcher copies the agent Config's fields of the same names)."""

    task: str
    seeds: tuple[int, ...]
    num_envs: int = 1  # environments per seed
    num_train_frames: int = 1_000_000  # environment steps per seed (all of its environments)
    num_steps: int = 2048  # n: steps per environment between target updates (evaluation unit)
    eval_every_updates: int = 10  # evaluate every eval_every_updates * num_steps steps
    num_eval_episodes: int = 20  # per seed and evaluation; 0 = no evaluation
    gamma: float = 0.99  # the reward normalizer's discount
    normalize_obs: bool = True
    normalize_reward: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    checkpoint_every_frames: int = 100_000  # rounded up to whole windows (update boundaries)
    seed_strategy: str = "auto"  # how the seeds share one program (core/seeds.py): unroll on the CPU, vmap elsewhere
    devices: str = "auto"  # auto | N | SxD: the (seed, data) device mesh (core/devices.py, plan_devices)
    async_envs: bool = False  # environments in subprocesses (AsyncVectorEnv) instead of in-process
    progress: bool = True

    def __post_init__(self):
        problems = []
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            problems.append(f"seeds={self.seeds!r} (distinct non-negative integers, at least one)")
        if isinstance(self.checkpoint_every_frames, bool) or not isinstance(self.checkpoint_every_frames, int) \
                or self.checkpoint_every_frames < 1:
            problems.append(f"checkpoint_every_frames={self.checkpoint_every_frames!r} (a positive integer)")
        if self.seed_strategy not in seeding.STRATEGIES:
            problems.append(f"seed_strategy={self.seed_strategy!r} (one of {', '.join(seeding.STRATEGIES)})")
        check_loop_settings(self, problems)

    @property
    def total_steps(self) -> int:
        """Steps per environment of the whole run: K whole target periods of num_steps."""
        return self.num_train_frames // (self.num_envs * self.num_steps) * self.num_steps


def check_loop_settings(settings, problems: list) -> None:
    """Checks the LOOP_FIELDS settings (both loops: OnPolicyConfig here, core/onpolicy_jax.py LoopSettings)
    after the caller's own `problems`; raises one ValueError naming every problem."""
    problems = list(problems)
    for name in ("num_envs", "num_steps", "eval_every_updates"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name}={value!r} (a positive integer)")
    episodes = settings.num_eval_episodes
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 0:
        problems.append(f"num_eval_episodes={episodes!r} (a non-negative integer)")
    if not 0.0 <= settings.gamma <= 1.0:
        problems.append(f"gamma={settings.gamma!r} (in [0, 1])")
    for name in ("obs_clip", "reward_clip"):
        if not getattr(settings, name) > 0:
            problems.append(f"{name}={getattr(settings, name)!r} (> 0)")
    if not problems and settings.num_train_frames < settings.num_envs * settings.num_steps:
        problems.append(f"num_train_frames={settings.num_train_frames} (at least num_envs * num_steps = "
                        f"{settings.num_envs * settings.num_steps}, one update's worth of steps)")
    if problems:
        raise ValueError("invalid on-policy loop settings: " + "; ".join(problems))


def check_windows(window: int, buffer: int, num_steps: int) -> None:
    """The agent's window (steps between update calls) and buffer length must fit the loop."""
    for name, value in (("window_steps", window), ("buffer_steps", buffer)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"agent.{name}(config) returned {value!r}; expected a positive integer")
    if num_steps % window:
        raise ValueError(f"num_steps={num_steps} must be a multiple of the agent's window_steps={window} "
                         f"(steps between update calls; PROPS: props_num_steps must divide num_steps)")
    if buffer < window:
        raise ValueError(f"the agent's buffer_steps={buffer} is shorter than its window_steps={window}: steps "
                         f"would leave the buffer before any update saw them")


def update_batch_sizes(agent, agent_config) -> tuple[int, ...]:
    """The batch sizes the agent's update splits over the data devices: `agent.minibatch_sizes(config)`
    (PPO, PROPS: every minibatch size over the buffer's fill levels), or, for an agent without it, the
    samples of a full buffer (buffer_steps * num_envs)."""
    if hasattr(agent, "minibatch_sizes"):
        return tuple(int(size) for size in agent.minibatch_sizes(agent_config))
    return (int(agent.buffer_steps(agent_config)) * int(agent_config.num_envs),)


def plan_devices(agent, agent_config, spec: str, num_seeds: int) -> devices.Layout:
    """The (seed, data) layout of `--config.devices` for this agent (devices.plan): the data axis must
    divide every minibatch the update splits over it (update_batch_sizes), i.e. their greatest common
    divisor. Bad input raises devices.plan's ValueError, with the minibatch sizes named when they are
    what does not fit."""
    sizes = update_batch_sizes(agent, agent_config)
    try:
        return devices.plan(spec, num_seeds, math.gcd(*sizes))
    except ValueError as e:
        available = len(jax.devices())
        try:  # with a batch that every data-axis size divides, is the layout valid? then the batch is the problem
            devices.plan(spec, num_seeds, math.lcm(*range(1, available + 1)), available=available)
        except ValueError:
            raise e from None
        name = getattr(agent, "__name__", type(agent).__name__).rsplit(".", 1)[-1]
        raise ValueError(f"{e} (the data axis splits each minibatch of the update; {name}'s minibatches hold "
                         f"{', '.join(map(str, sizes))} samples over the buffer's fill levels)") from None


class TaskFacts(NamedTuple):
    obs_dim: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    max_episode_steps: int


def preflight(task: str) -> TaskFacts:
    """Checks that `task` is a state-based task with continuous (Box) actions and a time limit."""
    if task not in envs.TASKS:
        raise ValueError(f"--config.task={task!r} is not a known task; valid gymnasium MuJoCo tasks: "
                         f"{', '.join(t for t in envs.TASKS if envs.suite_of(t) == 'gym')} (other suites' "
                         f"continuous tasks from states, e.g. cartpole_swingup, work too)")
    probe = envs.make(task, obs_type="states")
    try:
        obs_space, act_space = probe.observation_space, probe.action_space
        max_steps = getattr(probe, "max_episode_steps", None)
    finally:
        probe.close()
    if not isinstance(act_space, gym.spaces.Box):
        raise ValueError(f"--config.task={task!r} has {act_space} actions; the on-policy agents need continuous "
                         f"(Box) actions, e.g. Hopper-v5 or InvertedPendulum-v5")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"--config.task={task!r} observes {obs_space}; the on-policy agents need a flat state "
                         f"vector")
    if not max_steps:
        raise ValueError(f"--config.task={task!r} has no time limit (max_episode_steps); the loop needs one")
    return TaskFacts(int(obs_space.shape[0]), int(np.prod(act_space.shape)),
                     np.asarray(act_space.low, np.float32), np.asarray(act_space.high, np.float32), int(max_steps))


# ----------------------------------------------------------------------------------------- environments

class SeededEpisodes(gym.Wrapper):
    """Training environment `env_index` of `seed`: its k-th episode starts from
    reset(seed=episode_seed(seed, TRAIN_EPISODE, k * num_envs + env_index)), also when the vector env
    resets it on its own (autoreset), so episodes are a pure function of (seed, k)."""

    def __init__(self, env: gym.Env, seed: int, env_index: int, num_envs: int):
        super().__init__(env)
        self.base_seed, self.env_index, self.num_envs = seed, env_index, num_envs
        self.next_episode = 0
        self.restore_plan = None  # (episode index, actions of that episode so far), set before restore_episode

    def episode_seed(self, episode: int) -> int:
        return episode_seed(self.base_seed, TRAIN_EPISODE, episode * self.num_envs + self.env_index)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            raise ValueError("SeededEpisodes chooses each episode's seed itself; reset it without a seed")
        obs, info = self.env.reset(seed=self.episode_seed(self.next_episode))
        self.next_episode += 1
        return obs, info

    def restore_episode(self) -> np.ndarray:
        """Replays `restore_plan`: resets to the episode's start and takes its actions; returns the
        observation reached."""
        episode, actions = self.restore_plan
        self.next_episode = int(episode)
        obs, _ = self.reset()
        for action in actions:
            obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                raise RuntimeError(f"replaying episode {episode} of environment {self.env_index}: it ended "
                                   f"before its {len(actions)} stored actions were taken")
        self.restore_plan = None
        return obs


def make_training_env(task: str, seed: int, env_index: int, num_envs: int) -> gym.Env:
    """One training environment (module level, so subprocess workers can build it)."""
    return SeededEpisodes(envs.make(task, obs_type="states", seed=seed), seed, env_index, num_envs)


def make_training_envs(cfg: OnPolicyConfig) -> gym.vector.VectorEnv:
    """S * E environments, seed-major (environment e of seed i is number i * E + e), autoreset in the
    same step (gymnasium >= 1.0: a done step returns the reset observation, the final one in info)."""
    fns = [functools.partial(make_training_env, cfg.task, seed, e, cfg.num_envs)
           for seed in cfg.seeds for e in range(cfg.num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if cfg.async_envs:
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


# ----------------------------------------------------------------------------------------- ring buffer

class RingBuffer:
    """The last `capacity` steps of S seeds x E environments on the host, oldest overwritten first.
    The seeds step together, so they share one write position."""

    def __init__(self, num_seeds: int, capacity: int, num_envs: int, obs_dim: int, action_dim: int):
        self.capacity = capacity
        self.obs = np.zeros((num_seeds, capacity, num_envs, obs_dim), np.float32)
        self.actions = np.zeros((num_seeds, capacity, num_envs, action_dim), np.float32)
        self.rewards = np.zeros((num_seeds, capacity, num_envs), np.float32)
        self.dones = np.zeros((num_seeds, capacity, num_envs), np.float32)
        self.pos, self.filled = 0, 0  # next row to write; valid rows

    def add(self, obs, actions, rewards, dones) -> None:
        """One step of every seed: obs (S, E, D), actions (S, E, A), rewards and dones (S, E)."""
        for array, value in ((self.obs, obs), (self.actions, actions), (self.rewards, rewards), (self.dones, dones)):
            array[:, self.pos] = value
        self.pos = (self.pos + 1) % self.capacity
        self.filled = min(self.filled + 1, self.capacity)

    def chronological(self) -> dict:
        """The valid steps, oldest first: obs (S, T, E, D), actions, rewards, dones; T = filled."""
        rows = (self.pos - self.filled + np.arange(self.filled)) % self.capacity
        return {"obs": self.obs[:, rows], "actions": self.actions[:, rows], "rewards": self.rewards[:, rows],
                "dones": self.dones[:, rows]}

    def arrays(self) -> dict:
        return {"obs": self.obs, "actions": self.actions, "rewards": self.rewards, "dones": self.dones}

    def load(self, arrays: dict, pos: int, filled: int) -> None:
        for name, value in arrays.items():
            getattr(self, name)[...] = value
        self.pos, self.filled = int(pos), int(filled)


class Transition(NamedTuple):
    """One loop step of every seed, as the agent saw it (host arrays, leading axes (S, E))."""

    obs: np.ndarray  # normalized (clipped) observation acted on
    action: np.ndarray  # the agent's action (before ClipAction)
    reward: np.ndarray  # normalized (clipped) reward
    raw_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray  # normalized (clipped) observation after the step (a reset one after an episode end)


# ----------------------------------------------------------------------------------------- trainer

class OnPolicyTrainer:
    """Trains one on-policy agent module (create / act / update / window_steps / buffer_steps /
    Rollout: module doc) on S seeds x E environments of one task."""

    def __init__(self, agent, agent_config, cfg: OnPolicyConfig, run_dir: str):
        self.agent, self.agent_config, self.cfg, self.run_dir = agent, agent_config, cfg, run_dir
        self.window, self.buffer_steps = agent.window_steps(agent_config), agent.buffer_steps(agent_config)
        check_windows(self.window, self.buffer_steps, cfg.num_steps)
        facts = preflight(cfg.task)
        self.obs_dim, self.action_dim = facts.obs_dim, facts.action_dim
        self.action_low, self.action_high = facts.action_low, facts.action_high
        self.max_episode_steps = facts.max_episode_steps
        S, E = self.num_seeds, self.num_envs = len(cfg.seeds), cfg.num_envs
        # The device mesh (core/devices.py): seeds over "seed", each update's minibatches over "data".
        # None on one device: the plain programs. Every per-seed array lives on the seed axis.
        self.layout = plan_devices(agent, agent_config, cfg.devices, S)
        self.mesh = devices.make_mesh(self.layout)

        keys = [jax.random.split(jax.random.PRNGKey(seed)) for seed in cfg.seeds]
        self.loop_keys = self._put(jnp.stack([k[1] for k in keys]))
        self.states = self._put(
            seeding.stack([agent.create(k[0], self.obs_dim, self.action_dim, agent_config) for k in keys]))
        self.obs_stats = self._put(seeding.stack([rs.running_stats_init(self.obs_dim)] * S))
        self.reward_norm = self._put(seeding.stack([rs.reward_normalizer_init(E)] * S))
        self.buffer = RingBuffer(S, self.buffer_steps, E, self.obs_dim, self.action_dim)
        self._build_programs()

        self.train_envs = make_training_envs(cfg)
        self.eval_envs = None
        if cfg.num_eval_episodes:  # every seed's evaluation episodes side by side, in this process
            eval_seeds = [seed for seed in cfg.seeds for _ in range(cfg.num_eval_episodes)]
            self.eval_envs = envs.make_vector(cfg.task, eval_seeds, asynchronous=False, obs_type="states")
        self.checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))

        # The environments' side of the loop (host arrays, (S, E, ...))
        self.raw_obs = np.zeros((S, E, self.obs_dim), np.float32)  # the current observation
        self.norm_obs = self._put(jnp.zeros((S, E, self.obs_dim), jnp.float32))  # ... normalized and clipped
        self.obs_copy = np.zeros((S, E, self.obs_dim), np.float32)  # ... un-normalized copy (what is stored)
        self.episode_index = np.zeros((S, E), np.int64)  # which episode each environment is in
        self.episode_return = np.zeros((S, E), np.float64)  # raw rewards of the running episode
        self.episode_length = np.zeros((S, E), np.int64)
        self.episode_actions = np.zeros((S, E, self.max_episode_steps, self.action_dim), np.float32)  # resume
        self.window_episodes: list[list[tuple[float, int]]] = [[] for _ in range(S)]  # ended since last update
        self.episodes_done = np.zeros(S, np.int64)

        self.step = 0  # steps per environment
        self.num_updates = 0  # update calls
        self.eval_count = 0
        self.last_eval = float("nan")
        self.finished = False
        self.start_time = time.time()

    # ----------------------------------------------------------------------------- jitted programs
    def _put(self, tree: Any) -> Any:
        """Per-seed arrays (leading seed axis) onto the mesh's seed axis; as they are without a mesh."""
        return devices.put_seeds(tree, self.mesh)

    def _build_programs(self) -> None:
        cfg, agent, E = self.cfg, self.agent, self.cfg.num_envs
        strategy = seeding.resolve_strategy(cfg.seed_strategy, dense=True)

        def observe_reset(stats, obs):  # the first observations of a run
            return rs.observe_first(stats, obs, cfg.obs_clip, cfg.normalize_obs)

        def observe_step(stats, reward_norm, stepped, obs, done, reward, terminated, truncated):
            """stepped: each environment's observation after the step (the terminal one where done);
            obs: what it shows now (the reset observation where done)."""
            reward_norm, scaled, reward_copy = rs.observe_reward(reward_norm, reward, terminated, truncated, cfg.gamma,
                                                                 cfg.reward_clip, cfg.normalize_reward)
            if not cfg.normalize_obs:
                return stats, reward_norm, obs, obs, scaled, reward_copy
            stats = rs.running_stats_update(stats, stepped)
            for e in range(E):  # then each reset observation, as that environment's own wrapper sees it
                updated = rs.running_stats_update(stats, obs[e:e + 1])
                stats = jax.tree.map(lambda new, old: jnp.where(done[e], new, old), updated, stats)
            norm = rs.normalize(stats, obs, clip=cfg.obs_clip)
            return stats, reward_norm, norm, rs.denormalize(stats, norm), scaled, reward_copy

        def act(state, obs, key, step):
            return agent.act(state, obs, jax.random.fold_in(jax.random.fold_in(key, ACT_STREAM), step))

        def act_eval(state, obs, stats):
            if cfg.normalize_obs:  # frozen statistics, still clipped (the wrapper with updates off)
                obs = rs.normalize(stats, obs, clip=cfg.obs_clip)
            return agent.act(state, obs, jax.random.PRNGKey(0), eval_mode=True)

        def rollout(stats, reward_norm, data, last_obs):
            """The buffer re-normalized with the current statistics, frozen and without clip."""
            obs, rewards = data["obs"], data["rewards"]
            if cfg.normalize_obs:
                obs = rs.normalize(stats, obs)
            if cfg.normalize_reward:
                rewards = rs.scale_reward(reward_norm, rewards)
            return agent.Rollout(obs=obs, actions=data["actions"], rewards=rewards, dones=data["dones"],
                                 last_obs=last_obs)

        def update(state, rollout, key, index):
            state, metrics = agent.update(state, rollout,
                                          jax.random.fold_in(jax.random.fold_in(key, UPDATE_STREAM), index))
            leaves = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)]
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else True
            return state, metrics, finite

        many = functools.partial(seeding.over_seeds, strategy=strategy, mesh=self.mesh)
        self._observe_reset = many(observe_reset)
        self._observe_step = many(observe_step)
        self._act = many(act)
        self._act_eval = many(act_eval)
        self._rollout = many(rollout)
        self._update = jax.jit(seeding.over_seeds(update, strategy, jit=False, mesh=self.mesh), donate_argnums=(0,))

    # ----------------------------------------------------------------------------- environment steps
    def start_episodes(self) -> None:
        """Resets every training environment to its first episode and observes the reset observations."""
        S, E = self.num_seeds, self.num_envs
        self.train_envs.set_attr("next_episode", 0)
        obs, _ = self.train_envs.reset()
        self.raw_obs = np.asarray(obs, np.float32).reshape(S, E, self.obs_dim)
        self.obs_stats, self.norm_obs, obs_copy = self._observe_reset(self.obs_stats,
                                                                      self._put(jnp.asarray(self.raw_obs)))
        self.obs_copy = devices.to_host(obs_copy)
        self.episode_index[:] = 0

    def env_step(self) -> Transition:
        """One step of every environment: act, step, normalize, store (module doc)."""
        S, E, D, A = self.num_seeds, self.num_envs, self.obs_dim, self.action_dim
        acted_on = self.norm_obs
        steps = self._put(np.full((S,), self.step, np.int32))  # host arrays go into the jitted calls as they are
        action = np.asarray(devices.to_host(self._act(self.states, acted_on, self.loop_keys, steps)), np.float32)
        sent = np.clip(action, self.action_low, self.action_high)  # ClipAction
        obs, reward, terminated, truncated, info = self.train_envs.step(sent.reshape(S * E, A))
        obs = np.asarray(obs, np.float32)
        stepped = obs.copy()
        if "_final_obs" in info:  # same-step autoreset: the terminal observations are in info
            for i in np.flatnonzero(info["_final_obs"]):
                stepped[i] = info["final_obs"][i]
        shape = (S, E)
        obs, stepped = obs.reshape(S, E, D), stepped.reshape(S, E, D)
        reward = np.asarray(reward, np.float64).reshape(shape)
        terminated, truncated = np.asarray(terminated, bool).reshape(shape), np.asarray(truncated, bool).reshape(shape)
        done = terminated | truncated
        (self.obs_stats, self.reward_norm, norm_obs, obs_copy, scaled, reward_copy) = self._observe_step(
            self.obs_stats, self.reward_norm,
            *self._put((stepped, obs, done, reward.astype(np.float32), terminated, truncated)))
        obs_copy, scaled, reward_copy = devices.to_host((obs_copy, scaled, reward_copy))
        self.buffer.add(self.obs_copy, action, reward_copy, done.astype(np.float32))

        # Episode bookkeeping (raw returns; the actions of the running episode, for resume)
        s_idx, e_idx = np.indices(shape)
        self.episode_actions[s_idx, e_idx, self.episode_length] = sent
        self.episode_return += reward
        self.episode_length += 1
        for s, e in zip(*np.nonzero(done)):
            self.window_episodes[s].append((float(self.episode_return[s, e]), int(self.episode_length[s, e])))
            self.episodes_done[s] += 1
        self.episode_index += done
        self.episode_return[done], self.episode_length[done] = 0.0, 0

        transition = Transition(devices.to_host(acted_on), action, np.asarray(scaled), reward, terminated, truncated,
                                devices.to_host(norm_obs))
        self.raw_obs, self.norm_obs, self.obs_copy = obs, norm_obs, np.asarray(obs_copy)
        self.step += 1
        return transition

    def rollout(self) -> Any:
        """The agent's Rollout of the buffer's valid steps, re-normalized with the current (frozen)
        statistics, with a leading seed axis."""
        data = self.buffer.chronological()
        # host arrays straight onto the seed axis (each device receives its seeds' rows)
        data = jax.tree.map(jnp.asarray, data) if self.mesh is None else self._put(data)
        return self._rollout(self.obs_stats, self.reward_norm, data, self.norm_obs)

    def update(self) -> list[dict]:
        """One `agent.update` call for every seed; returns each seed's metrics (floats)."""
        S = self.num_seeds
        index = self._put(np.full((S,), self.num_updates, np.int32))
        self.states, metrics, finite = self._update(self.states, self.rollout(), self.loop_keys, index)
        metrics, finite = devices.to_host((metrics, finite))
        self.num_updates += 1
        if not np.all(finite):
            bad = [seed for seed, ok in zip(self.cfg.seeds, finite) if not ok]
            latest = self.checkpointer.latest_step()
            where = f"the last checkpoint (step {latest}) is intact" if latest is not None else "no checkpoint yet"
            raise FloatingPointError(f"the agent state of seed(s) {bad} is not finite after update "
                                     f"{self.num_updates} (step {self.step}); {where}")
        return [{k: float(np.asarray(v)[i]) for k, v in metrics.items()} for i in range(S)]

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self) -> list[dict]:
        """num_eval_episodes episodes per seed, side by side; returns one eval.csv row per seed."""
        cfg, S, K = self.cfg, self.num_seeds, self.cfg.num_eval_episodes
        seeds = [episode_seed(seed, EVAL_EPISODE, self.eval_count * K + k) for seed in cfg.seeds for k in range(K)]
        obs, _ = self.eval_envs.reset(seed=seeds)
        totals, lengths, done = np.zeros(S * K), np.zeros(S * K, np.int64), np.zeros(S * K, bool)
        while not done.all():
            action = self._act_eval(self.states, self._put(jnp.asarray(obs, jnp.float32).reshape(S, K, self.obs_dim)),
                                    self.obs_stats)
            action = np.clip(devices.to_host(action), self.action_low, self.action_high)
            obs, reward, terminated, truncated, _ = self.eval_envs.step(action.reshape(S * K, self.action_dim))
            totals += np.where(done, 0.0, reward)
            lengths += ~done
            ended = terminated | truncated
            done |= ended
            if ended.any() and not done.all():  # a finished environment restarts; its steps are ignored
                obs, _ = self.eval_envs.reset(options={"reset_mask": ended.copy()})
        self.eval_count += 1
        returns, lengths = totals.reshape(S, K).mean(1), lengths.reshape(S, K).mean(1)
        self.last_eval = float(returns.mean())
        return [{"seed": seed, "step": self.step, "frame": self.step * cfg.num_envs,
                 "episode_reward": float(returns[i]), "episode_length": float(lengths[i]),
                 "wall_time": time.time() - self.start_time} for i, seed in enumerate(cfg.seeds)]

    # ----------------------------------------------------------------------------- checkpoints
    def _checkpoint_tree(self) -> dict:
        return {"agent": self.states, "obs_stats": self.obs_stats, "reward_norm": self.reward_norm,
                "keys": self.loop_keys, "buffer": self.buffer.arrays(),
                "env": {"raw_obs": self.raw_obs, "norm_obs": self.norm_obs, "obs_copy": self.obs_copy,
                        "episode_actions": self.episode_actions}}

    def save(self) -> None:
        meta = {"step": self.step, "num_updates": self.num_updates, "eval_count": self.eval_count,
                "last_eval": self.last_eval, "finished": self.finished,
                "buffer_pos": self.buffer.pos, "buffer_filled": self.buffer.filled,
                "episode_index": self.episode_index.tolist(), "episode_return": self.episode_return.tolist(),
                "episode_length": self.episode_length.tolist(), "episodes_done": self.episodes_done.tolist(),
                "window_episodes": self.window_episodes}
        self.checkpointer.save(self.step, self._checkpoint_tree(), meta)

    def restore(self) -> None:
        """Restores the latest checkpoint and replays every running episode (module doc)."""
        tree, meta = self.checkpointer.restore(self._checkpoint_tree())
        # back onto the seed axis of this run's mesh (the checkpoint holds whole arrays)
        self.states, self.obs_stats, self.reward_norm = self._put(
            (tree["agent"], tree["obs_stats"], tree["reward_norm"]))
        self.loop_keys = self._put(tree["keys"])
        self.buffer.load(tree["buffer"], meta["buffer_pos"], meta["buffer_filled"])
        env = tree["env"]
        self.raw_obs, self.norm_obs, self.obs_copy = env["raw_obs"], self._put(env["norm_obs"]), env["obs_copy"]
        self.episode_actions = env["episode_actions"]
        self.step, self.num_updates, self.eval_count = meta["step"], meta["num_updates"], meta["eval_count"]
        self.last_eval, self.finished = meta["last_eval"], meta["finished"]
        self.episode_index = np.asarray(meta["episode_index"], np.int64)
        self.episode_return = np.asarray(meta["episode_return"], np.float64)
        self.episode_length = np.asarray(meta["episode_length"], np.int64)
        self.episodes_done = np.asarray(meta["episodes_done"], np.int64)
        self.window_episodes = [[(float(r), int(n)) for r, n in seed] for seed in meta["window_episodes"]]
        if self.finished:
            return
        plans = [(int(self.episode_index[s, e]), self.episode_actions[s, e, :self.episode_length[s, e]])
                 for s in range(self.num_seeds) for e in range(self.num_envs)]
        self.train_envs.set_attr("restore_plan", plans)
        replayed = np.stack(self.train_envs.call("restore_episode")).reshape(self.raw_obs.shape)
        if not np.array_equal(replayed, self.raw_obs):
            warnings.warn(f"{self.cfg.task}: replaying the running episodes did not reproduce the checkpointed "
                          f"observations (max difference {np.max(np.abs(replayed - self.raw_obs)):.3g}); the "
                          f"environment is not deterministic, so the resumed run will differ from an "
                          f"uninterrupted one", RuntimeWarning)

    # ----------------------------------------------------------------------------- training
    def train(self, resume: bool = False) -> dict:
        """Runs to the end (or continues from the latest checkpoint); returns a summary."""
        cfg, S = self.cfg, self.num_seeds
        total = cfg.total_steps
        eval_every = cfg.eval_every_updates * cfg.num_steps
        ckpt_every = -(-cfg.checkpoint_every_frames // (cfg.num_envs * self.window)) * self.window
        if resume:
            self.restore()
            if self.finished:
                return {"step": self.step, "last_eval": self.last_eval}
        # A checkpoint at step t comes after the steps up to t and before the update at t: rows at t
        # (updates, evaluations) are logged again by the resumed run. TensorBoard purges from frame t.
        logger = Logger(self.run_dir, list(cfg.seeds), resume_step=self.step if resume else None,
                        resume_frame=self.step * cfg.num_envs - 1 if resume else None)
        if resume:
            logger.metrics.truncate(lambda row: int(float(row["step"])) < self.step)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total * cfg.num_envs, initial=self.step * cfg.num_envs, unit="frame", unit_scale=True,
                       dynamic_ncols=True, mininterval=1.0, desc=f"{cfg.task} x{S} seed{'s' if S > 1 else ''}")
        self.start_time = window_start = time.time()
        window_start_step = self.step
        try:
            if not resume:
                self.start_episodes()
                self._evaluate(logger, bar)
            at_boundary = resume  # a checkpoint is taken before its boundary's update
            while True:
                if not at_boundary:
                    if self.step >= total:
                        break
                    for _ in range(self.window):
                        self.env_step()
                        if bar is not None:
                            bar.update(cfg.num_envs)
                    if self.step % ckpt_every == 0 and self.step < total:
                        self.save()
                at_boundary = False
                metrics = self.update()
                now = time.time()
                fps = (self.step - window_start_step) * cfg.num_envs / max(now - window_start, 1e-9)
                window_start, window_start_step = now, self.step
                for i, seed in enumerate(cfg.seeds):
                    ended = self.window_episodes[i]
                    row = {"seed": seed, "step": self.step, "frame": self.step * cfg.num_envs,
                           "update": self.num_updates, "episode": int(self.episodes_done[i]),
                           "episode_reward": float(np.mean([r for r, _ in ended])) if ended else "",
                           "episode_length": float(np.mean([n for _, n in ended])) if ended else "",
                           "episodes_ended": len(ended), "fps": fps, **metrics[i]}
                    logger.log_train(row)
                self.window_episodes = [[] for _ in range(S)]
                if self.step % eval_every == 0 or self.step >= total:
                    self._evaluate(logger, bar)
            self.finished = True
            self.save()
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        return {"step": self.step, "last_eval": self.last_eval}

    def _evaluate(self, logger: Logger, bar) -> None:
        if self.eval_envs is None:
            return
        for row in self.evaluate():
            logger.log_eval(row)
        if bar is not None:
            bar.set_postfix(eval_return=f"{self.last_eval:.1f}", refresh=False)

    def close(self) -> None:
        self.train_envs.close()
        if self.eval_envs is not None:
            self.eval_envs.close()
        self.checkpointer.close()


# ----------------------------------------------------------------------------------------- launcher

# Agent Config fields the loop reads (copied into OnPolicyConfig).
LOOP_FIELDS = ("num_envs", "num_train_frames", "num_steps", "eval_every_updates", "num_eval_episodes", "gamma",
               "normalize_obs", "normalize_reward", "obs_clip", "reward_clip")


def base_config(agent_config_cls, task: str) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.task = task
    c.seeds = "0"  # comma-separated: "0,1,2,3" trains 4 seeds in one process
    c.root = "runs"  # run directories go to <root>/<agent>/<task>/<timestamp>
    c.checkpoint_every_frames = 100_000
    c.seed_strategy = "auto"  # auto | vmap | map | unroll: how the seeds share one jitted program (core/seeds.py)
    c.async_envs = "auto"  # auto | true | false: environments in subprocesses (auto: when cores are plenty)
    c.progress = True
    launch.add_device_flags(c)  # devices (auto | N | SxD), coordinator, num_processes, process_id
    c.agent = launch.unset_agent_fields(agent_config_cls)
    return c


def resolve(agent_module, config: config_dict.ConfigDict):
    """Checks every flag and returns (agent Config, OnPolicyConfig); raises ValueError naming what is wrong."""
    preflight(config.task)
    seeds = launch.parse_seeds(config.seeds)
    if config.seed_strategy not in seeding.STRATEGIES:
        raise ValueError(f"--config.seed_strategy={config.seed_strategy!r} is not valid; choose one of "
                         f"{', '.join(seeding.STRATEGIES)}")
    async_flag = str(config.async_envs).lower()
    if async_flag not in ASYNC_ENVS:
        raise ValueError(f"--config.async_envs={config.async_envs!r} is not valid; choose one of "
                         f"{', '.join(ASYNC_ENVS)}")
    if isinstance(config.checkpoint_every_frames, bool) or not isinstance(config.checkpoint_every_frames, int) \
            or config.checkpoint_every_frames < 1:
        raise ValueError(f"--config.checkpoint_every_frames={config.checkpoint_every_frames!r}: expected a positive "
                         f"integer")
    overrides = {k: v for k, v in config.agent.items() if v is not None}
    a = agent_module.config_for_task(config.task, **overrides)
    missing = [name for name in LOOP_FIELDS if not hasattr(a, name)]
    if missing:
        raise ValueError(f"{type(a).__name__} lacks the field(s) {missing} that the on-policy loop reads")
    num_envs = a.num_envs
    if async_flag == "auto":  # subprocesses pay off only with cores to spare for them
        use_async = len(seeds) * num_envs >= 4 and (os.cpu_count() or 1) > len(seeds) * num_envs
    else:
        use_async = async_flag == "true"
    devices_spec = str(config.get("devices", "auto"))  # runs saved before the flag existed: every device
    loop = OnPolicyConfig(task=config.task, seeds=seeds, **{name: getattr(a, name) for name in LOOP_FIELDS},
                          checkpoint_every_frames=config.checkpoint_every_frames,
                          seed_strategy=config.seed_strategy, devices=devices_spec, async_envs=use_async,
                          progress=bool(config.progress))
    check_windows(agent_module.window_steps(a), agent_module.buffer_steps(a), loop.num_steps)
    plan_devices(agent_module, a, devices_spec, len(seeds))  # a bad --config.devices stops here, before any work
    return a, loop


def run_mjx(agent_module, agent_name: str, config: config_dict.ConfigDict) -> dict:
    """A JAX-native (MJX) task, `mjx_<gymnasium id>`: the whole training iteration is one jitted program
    with the seeds vmapped (core/onpolicy_jax.py). The agent's per-task defaults are the gymnasium
    task's. No checkpoints or --resume on this path yet."""
    from core import onpolicy_jax
    from envs import mjx

    try:
        gym_id = mjx.gym_id_of(config.task)
        seeds = launch.parse_seeds(config.seeds)
        overrides = {k: v for k, v in config.agent.items() if v is not None}
        a = agent_module.config_for_task(gym_id, **overrides)
        layout = plan_devices(agent_module, a, str(config.get("devices", "auto")), len(seeds))
    except ValueError as e:
        sys.exit(f"pixax: {e}")
    run_dir = runlog.new_run_dir(config.root, agent_name, config.task)
    print(f"pixax: {agent_name} on {config.task} (MJX, one jitted iteration, seeds vmapped, devices {layout}), "
          f"seeds {list(seeds)}, {a.num_train_frames:,} frames per seed -> {run_dir}", file=sys.stderr)
    result = onpolicy_jax.train(agent_module, a, config.task, seeds, run_dir=run_dir, devices_spec=str(layout))
    last_eval = float(np.mean(result.eval_returns[-1]))
    print(f"pixax: done; {result.env_steps_per_second:,.0f} environment steps/s over all seeds; last evaluation "
          f"return {last_eval:.1f} (mean over seeds); results in {run_dir}", file=sys.stderr)
    return {"step": int(result.eval_steps[-1]), "last_eval": last_eval, "run_dir": run_dir}


def run(agent_module, agent_name: str, config: config_dict.ConfigDict, resume: str = "") -> dict:
    """Trains (or resumes) one run; bad input stops here, before any run directory, with a message.
    Tasks named mjx_<gymnasium id> run on the JAX-native path (run_mjx)."""
    devices.initialize(config.coordinator, config.num_processes, config.process_id)  # first, for run_mjx too
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint operation at INFO
    if str(config.task).startswith("mjx_") and not resume:
        return run_mjx(agent_module, agent_name, config)
    try:
        if resume:
            run_dir = runlog.check_run_dir(resume)
            saved = runlog.read_config(run_dir)
            if saved.get("agent") != agent_name:
                raise ValueError(f"--resume={resume!r} is a run of agent {saved.get('agent')!r}, not {agent_name!r}; "
                                 f"resume it with experiments/{saved.get('agent')}.py")
            if Checkpointer(os.path.join(run_dir, "checkpoints")).latest_step() is None:
                raise ValueError(f"--resume={resume!r} has no complete checkpoint yet (the first one is written "
                                 f"after --config.checkpoint_every_frames frames); start the run again instead")
            config = config_dict.ConfigDict(saved["launcher"])
        agent_config, loop = resolve(agent_module, config)
        if not resume:
            run_dir = runlog.new_run_dir(config.root, agent_name, config.task)
            runlog.write_config(run_dir, {
                "agent": agent_name, "task": config.task, "launcher": config.to_dict(),
                "agent_config": dataclasses.asdict(agent_config), "loop": dataclasses.asdict(loop),
                "window_steps": agent_module.window_steps(agent_config),
                "buffer_steps": agent_module.buffer_steps(agent_config),
                "versions": launch.versions(), "command": " ".join(sys.argv)})
        trainer = OnPolicyTrainer(agent_module, agent_config, loop, run_dir)
    except (ValueError, ImportError) as e:
        sys.exit(f"pixax: {e}")
    print(f"pixax: {agent_name} on {loop.task}, seeds {list(loop.seeds)}, {loop.total_steps * loop.num_envs:,} frames "
          f"per seed -> {run_dir}", file=sys.stderr)
    try:
        summary = trainer.train(resume=bool(resume))
    finally:
        trainer.close()
    summary["run_dir"] = run_dir
    print(f"pixax: done at {summary['step'] * loop.num_envs:,} frames; last evaluation return "
          f"{summary['last_eval']:.1f} (mean over seeds); results in {run_dir}", file=sys.stderr)
    return summary


def main(agent_module, agent_name: str, **defaults) -> None:
    """The command line of an on-policy launcher: `--config.*` flags and `--resume`.
    defaults: `task` (else the agent module's DEFAULT_TASK, else Hopper-v5)."""
    task = defaults.pop("task", getattr(agent_module, "DEFAULT_TASK", "Hopper-v5"))
    if defaults:
        raise TypeError(f"unknown launcher default(s) {sorted(defaults)}; valid: task")
    launch.command_line(base_config(agent_module.Config, task),
                        lambda config, resume: run(agent_module, agent_name, config, resume=resume))
