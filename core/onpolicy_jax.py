"""The on-policy loop (PPO, PROPS) for JAX-native environments (envs/mjx.py): the whole training iteration
- collect `window_steps` steps from E environments, then `agent.update` - is one jitted function,
vmapped over a leading seed axis.

    from agents import ppo
    from core import onpolicy_jax
    result = onpolicy_jax.train(ppo, ppo.config_for_task("Hopper-v5"), "mjx_Hopper-v5", seeds=[0, 1, 2])
    result.eval_returns  # (evaluations, seeds): mean raw return of num_eval_episodes episodes

It does what core/onpolicy.py (the host loop over gymnasium environments) does, step for step
(spec §7 wrappers, §8.1 step 1), with the environments inside the program:

    act on the normalized observation (agent.act, key fold_in(fold_in(loop key, ACT), step)) ->
    env.step (ClipAction and same-step auto-reset inside; the buffer keeps the unclipped sample) ->
    reward normalization (core/running_stats: discounted return, its statistics, scale, clip
    +-reward_clip) -> observation normalization (statistics updated with the E stepped observations -
    the terminal ones where an episode ended - then with the reset observations of the environments
    that ended; normalize, clip +-obs_clip) -> the window's step: un-normalized copies of the clipped
    normalized s_t and r_t, a_t, done_t = terminated or truncated.
After `window_steps` steps the window enters the ring buffer (`buffer_steps` rows per environment,
oldest evicted first); the buffer's valid rows (the last min(filled, buffer_steps), oldest first)
are re-normalized with the current statistics, frozen and without clip (spec pitfall #30), and
handed to agent.update(state, Rollout, key fold_in(fold_in(loop key, UPDATE), update index)).

Any agent module with the on-policy contract works (/work/notes/onpolicy_api.md): create, act,
update (jittable), window_steps, buffer_steps, Rollout; PPO now, PROPS (window m < buffer b * n).

Programs and compilation: the update's batch has T = min(filled, buffer_steps) rows, a static shape,
so each fill level is its own program. While the buffer fills (PPO-BUFFER, PROPS), an iteration is
two jitted calls, `collect` (the environments: compiled once) then `learn` (the update, one small
program per fill level); once the buffer is full - from the first iteration for PPO, whose buffer is
one window - each iteration is ONE jitted program (`make_iteration`), compiled once. MJX programs
compile slowly, so the environment code is compiled at most twice per run (collect and the fused
iteration), plus the evaluation program.

Devices (`devices_spec`, core/devices.py, as core/onpolicy.py): the programs vmap the seeds inside a
shard_map over the mesh's "seed" devices (over_seeds below), and the learn step's minibatches are split
over its "data" devices (the agents' devices.shard_batch). One device: the plain vmapped programs.

Differences from core/onpolicy.py, by design:
  * Reset observations of several environments ending in the same step are folded into the
    observation statistics as one batch (a masked parallel-variance update) instead of one after the
    other; equal in exact arithmetic, ~1e-7 relative in float32. With one environment per seed
    (PPOROS, the default) the numbers are the same operations.
  * Randomness: the environments' initial states come from JAX keys (each environment's state
    carries its own), not from gymnasium seeds.
  * Episode returns are summed in float32 on the device (the host loop sums float64).

Evaluation (every eval_every_updates * num_steps steps, at step 0 and at the end, as the host
loop): num_eval_episodes episodes per seed side by side in the MJX environment, the deterministic
policy (agent.act eval_mode, clipped by the environment), observations normalized with the frozen
statistics and clipped, raw environment returns until each episode's first end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Dict, NamedTuple, Optional, Sequence

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from core import devices
from core import logging as runlog
from core import running_stats as rs
from core import seeds as seeding
from core.onpolicy import LOOP_FIELDS, check_loop_settings, check_windows, plan_devices  # one rule for both loops

# fold_in streams of a seed's loop key: ACT and UPDATE as core/onpolicy.py; the environments' and the
# evaluation episodes' initial states have streams of their own.
ACT_STREAM, UPDATE_STREAM, ENV_STREAM, EVAL_STREAM = 0, 1, 2, 3



# ----------------------------------------------------------------------------------------------
# 1. Settings and state
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The loop's settings: the agent Config's fields of the same names (from_agent_config)."""

    num_envs: int = 1  # environments per seed
    num_train_frames: int = 1_000_000  # environment steps per seed (all of its environments)
    num_steps: int = 2048  # n: steps per environment between target updates (the evaluation unit)
    eval_every_updates: int = 10  # evaluate every eval_every_updates * num_steps steps
    num_eval_episodes: int = 20  # per seed and evaluation; 0 = no evaluation
    gamma: float = 0.99  # the reward normalizer's discount
    normalize_obs: bool = True
    normalize_reward: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0

    def __post_init__(self):
        check_loop_settings(self, [])

    @classmethod
    def from_agent_config(cls, config: Any) -> "LoopSettings":
        missing = [name for name in LOOP_FIELDS if not hasattr(config, name)]
        if missing:
            raise ValueError(f"{type(config).__name__} lacks the field(s) {missing} that the on-policy loop reads")
        return cls(**{name: getattr(config, name) for name in LOOP_FIELDS})

    @property
    def total_steps(self) -> int:
        """Steps per environment of a whole run: K whole target periods of num_steps (as core/onpolicy.py)."""
        return self.num_train_frames // (self.num_envs * self.num_steps) * self.num_steps


class Buffer(struct.PyTreeNode):
    """The ring buffer of one seed, chronological: row -1 is the newest step; the valid rows are the
    last `filled` (a count the driver keeps, static per program)."""

    obs: jax.Array  # (B, E, obs_dim): un-normalized copies of the clipped normalized observations
    actions: jax.Array  # (B, E, A): the agent's samples (before ClipAction)
    rewards: jax.Array  # (B, E): un-normalized copies of the clipped normalized rewards
    dones: jax.Array  # (B, E) float32: the episode ended after this step


class LoopState(struct.PyTreeNode):
    """Everything one seed's loop carries from iteration to iteration (stack it over seeds)."""

    agent: Any  # the agent's state
    env: Any  # the E environments' states (envs.mjx.MJXState with a leading (E,) axis)
    obs_stats: rs.RunningMeanStd
    reward_norm: rs.RewardNormalizer
    norm_obs: jax.Array  # (E, obs_dim): the current observation, normalized and clipped (acted on)
    obs_copy: jax.Array  # (E, obs_dim): its un-normalized copy (what the buffer stores)
    buffer: Buffer
    key: jax.Array  # the seed's loop key
    step: jax.Array  # int32: steps per environment so far
    num_updates: jax.Array  # int32: update calls so far
    episode_return: jax.Array  # (E,) float32: raw return of each running episode
    episode_length: jax.Array  # (E,) int32
    episodes_done: jax.Array  # int32: training episodes finished so far (all E environments)


class Window(NamedTuple):
    """What one collection window leaves for the driver: episode statistics and, per step, the raw
    environment outputs (for tests and diagnostics)."""

    episodes_ended: jax.Array  # int32: episodes that ended in the window
    return_sum: jax.Array  # sum of their raw returns
    length_sum: jax.Array  # sum of their lengths
    raw_obs: jax.Array  # (W, E, obs_dim): the observation after each step (a reset one where done)
    final_obs: jax.Array  # (W, E, obs_dim): the observation each step reached (terminal where done)
    raw_rewards: jax.Array  # (W, E)
    terminated: jax.Array  # (W, E) bool
    truncated: jax.Array  # (W, E) bool
    actions: jax.Array  # (W, E, A)


# ----------------------------------------------------------------------------------------------
# 2. Normalization (what the wrappers do), pure functions
# ----------------------------------------------------------------------------------------------


def fold_in_masked(stats: rs.RunningMeanStd, batch: jax.Array, mask: jax.Array) -> rs.RunningMeanStd:
    """running_stats_update with only the rows of `batch` where `mask` is true (none: unchanged).
    The same parallel-variance combination, with the batch's moments over the selected rows."""
    weights = mask.astype(jnp.float32)
    n = jnp.sum(weights)
    safe_n = jnp.maximum(n, 1.0)
    batch_mean = jnp.sum(weights[:, None] * batch, axis=0) / safe_n
    batch_var = jnp.sum(weights[:, None] * jnp.square(batch - batch_mean), axis=0) / safe_n
    delta = batch_mean - stats.mean
    total = stats.count + n
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / total
    updated = rs.RunningMeanStd(mean=mean, var=m2 / total, count=total)
    return jax.tree.map(lambda new, old: jnp.where(n > 0, new, old), updated, stats)


def observe_step(settings: LoopSettings, stats: rs.RunningMeanStd, reward_norm: rs.RewardNormalizer,
                 stepped: jax.Array, obs: jax.Array, reward: jax.Array, terminated: jax.Array,
                 truncated: jax.Array):
    """One step's normalization for E environments (module doc). stepped: each environment's
    observation after the step (terminal where it ended); obs: what it shows now (reset where it ended).
    Returns (stats, reward_norm, normalized clipped obs, its copy, normalized clipped reward, its copy)."""
    reward_norm, scaled, reward_copy = rs.observe_reward(reward_norm, reward, terminated, truncated, settings.gamma,
                                                         settings.reward_clip, settings.normalize_reward)
    if not settings.normalize_obs:
        return stats, reward_norm, obs, obs, scaled, reward_copy
    stats = rs.running_stats_update(stats, stepped)
    stats = fold_in_masked(stats, obs, terminated | truncated)  # the reset observations
    norm = rs.normalize(stats, obs, clip=settings.obs_clip)
    return stats, reward_norm, norm, rs.denormalize(stats, norm), scaled, reward_copy


def push_window(buffer: Buffer, window: Buffer) -> Buffer:
    """The buffer after a window of W steps: the oldest W rows evicted, the window appended (newest last)."""
    W = window.rewards.shape[0]
    return jax.tree.map(lambda old, new: jnp.concatenate([old[W:], new], axis=0), buffer, window)


def valid_rows(buffer: Buffer, filled: int) -> Buffer:
    """The last `filled` rows, oldest first (filled is static: the update's batch shape)."""
    return jax.tree.map(lambda x: x[x.shape[0] - filled:], buffer)


# ----------------------------------------------------------------------------------------------
# 3. One seed's loop: init, collect, learn (pure); the programs over seeds (jitted, cached)
# ----------------------------------------------------------------------------------------------


def init(agent, agent_config, env, seed: int) -> LoopState:
    """Seed `seed`'s loop at step 0: a fresh agent (key split(PRNGKey(seed))[0], as core/onpolicy.py),
    E environments reset, the normalizers at their priors folded with the first observations, an
    empty buffer."""
    settings = LoopSettings.from_agent_config(agent_config)
    agent_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
    agent_state = agent.create(agent_key, env.obs_dim, env.action_dim, agent_config)
    capacity = agent.buffer_steps(agent_config)
    return _init_env_side(env, settings, capacity, agent_state, loop_key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_env_side(env, settings: LoopSettings, capacity: int, agent_state, loop_key) -> LoopState:
    E = settings.num_envs
    env_state = jax.vmap(env.reset)(jax.random.split(jax.random.fold_in(loop_key, ENV_STREAM), E))
    obs_stats, norm_obs, obs_copy = rs.observe_first(rs.running_stats_init(env.obs_dim), env_state.obs,
                                                     settings.obs_clip, settings.normalize_obs)
    buffer = Buffer(obs=jnp.zeros((capacity, E, env.obs_dim), jnp.float32),
                    actions=jnp.zeros((capacity, E, env.action_dim), jnp.float32),
                    rewards=jnp.zeros((capacity, E), jnp.float32), dones=jnp.zeros((capacity, E), jnp.float32))
    return LoopState(agent=agent_state, env=env_state, obs_stats=obs_stats,
                     reward_norm=rs.reward_normalizer_init(E), norm_obs=norm_obs, obs_copy=obs_copy,
                     buffer=buffer, key=loop_key, step=jnp.zeros((), jnp.int32),
                     num_updates=jnp.zeros((), jnp.int32), episode_return=jnp.zeros((E,), jnp.float32),
                     episode_length=jnp.zeros((E,), jnp.int32), episodes_done=jnp.zeros((), jnp.int32))


def init_seeds(agent, agent_config, env, seeds: Sequence[int]) -> LoopState:
    """init for every seed, stacked on a leading seed axis."""
    return seeding.stack([init(agent, agent_config, env, int(seed)) for seed in seeds])


def collect(agent, env, settings: LoopSettings, window: int, state: LoopState):
    """`window` steps of the E environments of one seed (module doc), the window pushed into the
    buffer. Returns (state, Window)."""

    def one_step(carry, _):
        s, episodes, return_sum, length_sum = carry
        act_key = jax.random.fold_in(jax.random.fold_in(s.key, ACT_STREAM), s.step)
        action = agent.act(s.agent, s.norm_obs, act_key)
        env_state, obs, reward, terminated, truncated = jax.vmap(env.step)(s.env, action)
        done = terminated | truncated
        obs_stats, reward_norm, norm_obs, obs_copy, _, reward_copy = observe_step(
            settings, s.obs_stats, s.reward_norm, env_state.final_obs, obs, reward, terminated, truncated)
        stored = Buffer(obs=s.obs_copy, actions=action, rewards=reward_copy, dones=done.astype(jnp.float32))

        episode_return, episode_length = s.episode_return + reward, s.episode_length + 1
        episodes = episodes + jnp.sum(done, dtype=jnp.int32)
        return_sum = return_sum + jnp.sum(jnp.where(done, episode_return, 0.0))
        length_sum = length_sum + jnp.sum(jnp.where(done, episode_length, 0))
        s = s.replace(env=env_state, obs_stats=obs_stats, reward_norm=reward_norm, norm_obs=norm_obs,
                      obs_copy=obs_copy, step=s.step + 1, episode_return=jnp.where(done, 0.0, episode_return),
                      episode_length=jnp.where(done, 0, episode_length))
        raw = (obs, env_state.final_obs, reward, terminated, truncated, action)
        return (s, episodes, return_sum, length_sum), (stored, raw)

    zero_i, zero_f = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
    buffer = state.buffer  # not carried through the steps: the window enters it once, at the end
    (state, episodes, return_sum, length_sum), (stored, raw) = jax.lax.scan(
        one_step, (state.replace(buffer=None), zero_i, zero_f, zero_i), None, length=window)
    state = state.replace(buffer=push_window(buffer, stored), episodes_done=state.episodes_done + episodes)
    return state, Window(episodes, return_sum, length_sum, *raw)


def learn(agent, settings: LoopSettings, filled: int, state: LoopState):
    """agent.update on the buffer's last `filled` rows, re-normalized with the frozen statistics.
    Returns (state, metrics with a `finite` flag, the Rollout the update saw)."""
    data = valid_rows(state.buffer, filled)
    obs = rs.normalize(state.obs_stats, data.obs) if settings.normalize_obs else data.obs
    rewards = rs.scale_reward(state.reward_norm, data.rewards) if settings.normalize_reward else data.rewards
    rollout = agent.Rollout(obs=obs, actions=data.actions, rewards=rewards, dones=data.dones,
                            last_obs=state.norm_obs)
    update_key = jax.random.fold_in(jax.random.fold_in(state.key, UPDATE_STREAM), state.num_updates)
    agent_state, metrics = agent.update(state.agent, rollout, update_key)
    leaves = [leaf for leaf in jax.tree.leaves(agent_state) if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.asarray(True)
    metrics = {**metrics, "finite": finite}
    return state.replace(agent=agent_state, num_updates=state.num_updates + 1), metrics, rollout


def iteration(agent, env, settings: LoopSettings, window: int, filled: int, state: LoopState):
    """One whole training iteration of one seed: collect then learn. Returns (state, metrics, Window, Rollout)."""
    state, collected = collect(agent, env, settings, window, state)
    state, metrics, rollout = learn(agent, settings, filled, state)
    return state, metrics, collected, rollout


def over_seeds(fn, mesh=None):
    """`fn` vmapped over a leading seed axis (core/seeds.py "vmap"); with a device mesh (core/devices.py)
    the seed axis is split over the mesh's "seed" devices, each vmapping its own seeds, and the update's
    minibatches over its "data" devices (the agents' devices.shard_batch)."""
    return seeding.over_seeds(fn, "vmap", jit=False, mesh=mesh)


@functools.lru_cache(maxsize=None)
def make_iteration(agent, env, settings: LoopSettings, window: int, filled: int, mesh=None):
    """The jitted iteration over a leading seed axis: states -> (states, metrics, Window, Rollout),
    every output with the seed axis. Cached per (agent, env, settings, window, filled, mesh)."""
    return jax.jit(over_seeds(functools.partial(iteration, agent, env, settings, window, filled), mesh),
                   donate_argnums=0)


@functools.lru_cache(maxsize=None)
def make_collect(agent, env, settings: LoopSettings, window: int, mesh=None):
    """collect alone, jitted over a leading seed axis (the iterations while the buffer fills)."""
    return jax.jit(over_seeds(functools.partial(collect, agent, env, settings, window), mesh), donate_argnums=0)


@functools.lru_cache(maxsize=None)
def make_learn(agent, settings: LoopSettings, filled: int, mesh=None):
    """learn alone, jitted over a leading seed axis (the iterations while the buffer fills)."""
    return jax.jit(over_seeds(functools.partial(learn, agent, settings, filled), mesh), donate_argnums=0)


# ----------------------------------------------------------------------------------------------
# 4. Evaluation
# ----------------------------------------------------------------------------------------------


def evaluate(agent, env, settings: LoopSettings, num_episodes: int, state: LoopState, eval_index: jax.Array):
    """num_episodes episodes of one seed side by side (module doc). Returns (mean raw return, mean length)."""
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, EVAL_STREAM), eval_index), num_episodes)
    env_state = jax.vmap(env.reset)(keys)

    def running(carry):
        _, done, _, _, t = carry
        return ~jnp.all(done) & (t < env.max_episode_steps)

    def one_step(carry):
        env_state, done, returns, lengths, t = carry
        obs = env_state.obs
        if settings.normalize_obs:  # frozen statistics, still clipped (the wrapper with updates off)
            obs = rs.normalize(state.obs_stats, obs, clip=settings.obs_clip)
        action = agent.act(state.agent, obs, jax.random.PRNGKey(0), eval_mode=True)
        env_state, _, reward, terminated, truncated = jax.vmap(env.step)(env_state, action)
        returns = returns + jnp.where(done, 0.0, reward)
        lengths = lengths + (~done).astype(jnp.int32)
        return env_state, done | terminated | truncated, returns, lengths, t + 1

    init_carry = (env_state, jnp.zeros((num_episodes,), bool), jnp.zeros((num_episodes,), jnp.float32),
                  jnp.zeros((num_episodes,), jnp.int32), jnp.zeros((), jnp.int32))
    _, _, returns, lengths, _ = jax.lax.while_loop(running, one_step, init_carry)
    return jnp.mean(returns), jnp.mean(lengths.astype(jnp.float32))


@functools.lru_cache(maxsize=None)
def make_evaluate(agent, env, settings: LoopSettings, num_episodes: int, mesh=None):
    """evaluate jitted over a leading seed axis: (states, eval_index) -> (returns (S,), lengths (S,))."""
    per_seed = over_seeds(functools.partial(evaluate, agent, env, settings, num_episodes), mesh)

    def evaluate_all(states, eval_index):  # every seed gets the same index (over_seeds maps every argument)
        return per_seed(states, jnp.broadcast_to(eval_index, (seeding.num_seeds(states),)))
    return jax.jit(evaluate_all)


# ----------------------------------------------------------------------------------------------
# 5. The driver
# ----------------------------------------------------------------------------------------------


def run_iterations(agent, env, settings: LoopSettings, window: int, capacity: int, states: LoopState,
                   num_iterations: int, first: int = 0, mesh=None):
    """Runs iterations first, first + 1, ... of the loop on stacked `states` (module doc: the fused
    program once the buffer is full, collect + learn while it fills). Yields, after each iteration,
    (index k, states, metrics, Window, Rollout, program) - device arrays with a leading seed axis; the
    Rollout is what the update saw; program is "iteration" or "collect+learn" and the fill level.
    mesh: the device mesh (core/devices.py) of the programs; states should be on it (devices.put_seeds)."""
    for k in range(first, first + num_iterations):
        filled = min((k + 1) * window, capacity)
        if filled == capacity:
            program = ("iteration", filled)
            states, metrics, collected, rollout = make_iteration(agent, env, settings, window, filled, mesh)(states)
        else:
            program = ("collect+learn", filled)
            states, collected = make_collect(agent, env, settings, window, mesh)(states)
            states, metrics, rollout = make_learn(agent, settings, filled, mesh)(states)
        yield k, states, metrics, collected, rollout, program


class TrainResult(NamedTuple):
    states: LoopState  # the final loop states, stacked over seeds
    eval_steps: np.ndarray  # (N,) steps per environment at each evaluation
    eval_returns: np.ndarray  # (N, S) mean raw return over the evaluation episodes
    eval_lengths: np.ndarray  # (N, S)
    metrics: Dict[str, np.ndarray]  # per iteration and seed (I, S): the update's metrics and episode stats
    env_steps_per_second: float  # all seeds' environment steps per second of training (compiling excluded)
    run_dir: Optional[str]


def train(agent, agent_config, task: Any, seeds: Sequence[int], num_iterations: Optional[int] = None, *,
          run_dir: Optional[str] = None, eval_every_updates: Optional[int] = None,
          num_eval_episodes: Optional[int] = None, devices_spec: str = "auto") -> TrainResult:
    """Trains `agent` (a module with the on-policy contract) on `task` for every seed at once (module doc).

    task: an MJX task name (envs/mjx.py TASKS, e.g. 'mjx_Hopper-v5'), or an environment object with
    the same interface (obs_dim, action_dim, max_episode_steps, reset(key), step(state, action) with
    same-step auto-reset and state.obs / state.final_obs).
    num_iterations: update calls (windows of agent.window_steps steps); default the whole run of
    agent_config.num_train_frames (K target periods of num_steps, as core/onpolicy.py).
    eval_every_updates / num_eval_episodes override the config's. With run_dir (an existing
    directory), writes config.json, metrics.csv (one row per iteration and seed) and eval.csv there.
    devices_spec: `--config.devices` (auto | N | SxD): seeds over the mesh's "seed" devices, each
    update's minibatches over its "data" devices (core/onpolicy.py plan_devices checks it).
    """
    if isinstance(task, str):
        from envs.mjx import make_mjx  # envs/ is imported by the driver only

        env, task_name = make_mjx(task), task
    else:
        env, task_name = task, getattr(task, "task", type(task).__name__)
    settings = LoopSettings.from_agent_config(agent_config)
    overrides = {name: value for name, value in (("eval_every_updates", eval_every_updates),
                                                 ("num_eval_episodes", num_eval_episodes)) if value is not None}
    settings = dataclasses.replace(settings, **overrides)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds={seeds!r}: expected distinct non-negative integers, at least one")
    window, capacity = agent.window_steps(agent_config), agent.buffer_steps(agent_config)
    check_windows(window, capacity, settings.num_steps)
    if num_iterations is None:
        num_iterations = settings.total_steps // window
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"num_iterations={num_iterations!r}: expected a positive integer")
    eval_every = settings.eval_every_updates * settings.num_steps  # steps per environment
    E, S = settings.num_envs, len(seeds)
    layout = plan_devices(agent, agent_config, devices_spec, S)
    mesh = devices.make_mesh(layout)  # None on one device: the plain vmapped programs

    logger = None
    if run_dir is not None:
        runlog.write_config(run_dir, {
            "agent": agent.__name__, "task": task_name, "seeds": seeds, "loop": "core/onpolicy_jax.py",
            "agent_config": dataclasses.asdict(agent_config), "settings": dataclasses.asdict(settings),
            "window_steps": window, "buffer_steps": capacity, "num_iterations": num_iterations,
            "devices": str(layout)})
        logger = runlog.Logger(run_dir, seeds, tensorboard=False)

    states = devices.put_seeds(init_seeds(agent, agent_config, env, seeds), mesh)
    evaluate_all = (make_evaluate(agent, env, settings, settings.num_eval_episodes, mesh)
                    if settings.num_eval_episodes else None)
    eval_steps, eval_returns, eval_lengths = [], [], []
    history: Dict[str, list] = {}
    start = time.time()
    programs_run: set = set()
    timed_steps, timed_seconds = 0, 0.0

    def run_evaluation(states: LoopState, step: int) -> None:
        if evaluate_all is None:
            return
        returns, lengths = devices.to_host(evaluate_all(states, jnp.asarray(len(eval_steps), jnp.int32)))
        eval_steps.append(step)
        eval_returns.append(np.asarray(returns))
        eval_lengths.append(np.asarray(lengths))
        if logger is not None:
            for i, seed in enumerate(seeds):
                logger.log_eval({"seed": seed, "step": step, "frame": step * E, "episode_reward": float(returns[i]),
                                 "episode_length": float(lengths[i]), "wall_time": time.time() - start})

    try:
        run_evaluation(states, 0)
        began = time.time()
        for k, states, metrics, collected, _, program in run_iterations(
                agent, env, settings, window, capacity, states, num_iterations, mesh=mesh):
            metrics, collected = devices.to_host((metrics, (collected.episodes_ended, collected.return_sum,
                                                            collected.length_sum)))
            seconds = time.time() - began
            if program in programs_run:  # the first run of a program includes its compilation
                timed_steps, timed_seconds = timed_steps + window * E * S, timed_seconds + seconds
            programs_run.add(program)

            if not np.all(metrics["finite"]):
                bad = [seed for seed, ok in zip(seeds, metrics["finite"]) if not ok]
                raise FloatingPointError(f"the agent state of seed(s) {bad} is not finite after update {k + 1}")
            ended, return_sum, length_sum = (np.asarray(x) for x in collected)
            with np.errstate(invalid="ignore", divide="ignore"):
                episode_stats = {"episodes_ended": ended,
                                 "episode_reward": np.where(ended > 0, return_sum / np.maximum(ended, 1), np.nan),
                                 "episode_length": np.where(ended > 0, length_sum / np.maximum(ended, 1), np.nan)}
            rows = {**{name: np.asarray(v) for name, v in metrics.items() if name != "finite"}, **episode_stats}
            for name, values in rows.items():
                history.setdefault(name, []).append(values)
            step = (k + 1) * window
            if logger is not None:
                fps = window * E / max(seconds, 1e-9)
                episodes_done = np.asarray(devices.to_host(states.episodes_done))
                for i, seed in enumerate(seeds):
                    row = {"seed": seed, "step": step, "frame": step * E, "update": k + 1,
                           "episode": int(episodes_done[i]), "fps": fps}
                    row.update({name: "" if np.isnan(v[i]) else float(v[i]) for name, v in rows.items()})
                    logger.log_train(row)
            if step % eval_every == 0 or k == num_iterations - 1:
                run_evaluation(states, step)
            began = time.time()
    finally:
        if logger is not None:
            logger.close()

    return TrainResult(
        states=states, eval_steps=np.asarray(eval_steps, np.int64),
        eval_returns=np.asarray(eval_returns, np.float32).reshape(len(eval_steps), S),
        eval_lengths=np.asarray(eval_lengths, np.float32).reshape(len(eval_steps), S),
        metrics={name: np.stack(values) for name, values in history.items()},
        env_steps_per_second=timed_steps / timed_seconds if timed_seconds > 0 else math.nan,
        run_dir=run_dir)
