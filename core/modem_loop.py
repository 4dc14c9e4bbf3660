"""MoDem's host loop (spec §3.1) for S seeds of one DeepMind Control, Meta-World or Adroit task, from pixels + state.

MoDem = TD-MPC (core/episodic.py's loop) with demonstrations, in three phases:

  1. policy pretraining: bc_iterations(config, L) = 2 x demos x L behaviour-cloning steps
     (agents/modem.py bc_update) on sequences drawn from the demo replay, as one jitted scan;
  2. seeding: while step < seed_steps, every episode is acted by modem.plan (the BC policy + min_std
     noise, no planning); at step == seed_steps, seed_steps updates at once;
  3. interactive learning: TD-MPC's schedule (plan a whole episode, then L updates).

Every update of phases 2-3 trains on n_interaction sequences of the interaction replay and n_demo of the
demo replay, (n_interaction, n_demo) = batch_split(config, step) at that update's own agent step, as S2.
n_demo is computed inside the update scan (modem.traced_demo_batch_size), so one compiled program serves
every split: each update samples a full batch_size from BOTH buffers, keeps the interaction rows of the
first and the demo rows (the last n_demo, modem.demo_rows) of the second (modem.combine_batches), and
writes the new priorities of the used rows only back into the buffer each came from (the `valid` mask of
data/demos.py update_replay_priorities). The price is sampling both buffers fully at every update.

Both replays live on the device (data/demos.py PixelStateReplay: pixel frames + the state of every
step); the demo replay holds exactly the demos (spec §10 #5), one copy per seed so each seed's demo
priorities are its own; it is sampled with replacement, as S2's (allocated at the run's capacity, never
full, spec §10 #5). Observations are {"pixels": frame-stacked RGB, "state": MoDem's proprioceptive state}
(spec §3.2): DMControl's flattened task observation (envs/dmc.py proprio=True, info["proprio"], dense
reward); Meta-World's 8-d hand + gripper slice and Adroit's per-task slice (info["modem_state"], envs/metaworld.py
and envs/adroit.py modem_state=True) with the sparse reward success - 1 and MoDem's episode lengths (100
agent steps; Adroit door / hammer / pen 100 / 125 / 50), all from agents/modem.py env_options_for_task. Demos come from data/demos.py read_demos; they must
have the environment's episode length, frame size, state size and action size.

Step accounting (spec §3.3, §10 #1): metrics.csv and eval.csv log `step` (agent steps, what the
schedules read and what the paper plots) and `frame` (environment steps = step x action_repeat, what
S2 logs as env_step); metrics.csv also logs `phase` (2 seeding, 3 interactive; phase 1 has no episodes:
its last BC loss and iteration count are on the first row), and `demo_batch_size`: the mean n_demo of the
updates that followed the episode.

Devices (`--config.devices`): as core/episodic.py. Both replays (and the agent states) are per-seed pytrees on
their seed's devices; every sampled batch of the BC and update scans is laid over the "data" devices
(devices.shard_batch), each seed's planning runs with the seeds split only.

Checkpoints hold the agent states, both replays, the counters and whether BC is done; one is taken right
after BC (step 0), so an interrupted run never repeats BC, and `--resume` continues exactly.

Evaluation is EpisodicTrainer's (the planner in eval mode) and eval.csv also logs `episode_success`: the mean over
the evaluation episodes of the environment's latched success at the episode's end (info["episode_success"];
DMControl reports none: 0).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

import envs
from core import devices
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.episodic import (PLAN_STREAM, UPDATE_STREAM, EpisodicTrainer, mean_of_chunks, scan_updates,
                           updates_per_call)
from core.offpolicy import LoopConfig, action_size, check_finite, env_kwargs
from data import demos as demo_data
from data import sequence_replay
from data.datasets import datasets_root

BC_STREAM = 2  # fold_in stream of a seed's loop key for the behaviour-cloning samples (0: plan, 1: update)
SEEDING, INTERACTIVE = 2, 3  # the `phase` column of metrics.csv


class MoDemTrainer(EpisodicTrainer):
    """Trains agents.modem on S seeds of one DMC, Meta-World or Adroit task: BC on the demos, seeding,
    interactive learning.

    demos: the demos' dataset id under `demos_root` (default data/demos.dataset_id_for(task)), or a path
    when demos_root is None and the path exists. Evaluation is EpisodicTrainer's (the planner in eval mode).
    """

    def __init__(self, agent, agent_config, cfg: LoopConfig, run_dir: str, *, demos: Optional[str] = None,
                 demos_root: Optional[str] = None):
        needed = ("bc_update", "bc_iterations", "batch_split", "traced_demo_batch_size", "demo_rows",
                  "combine_batches", "env_options_for_task", "state_key")
        if not all(hasattr(agent, name) for name in needed):
            raise ValueError(f"MoDemTrainer trains agents.modem ({', '.join(needed)}); "
                             f"got {getattr(agent, '__name__', agent)}")
        if envs.suite_of(cfg.task) not in ("dmc", "metaworld", "adroit"):
            raise ValueError(f"{cfg.task}: the MoDem loop runs DeepMind Control, Meta-World or Adroit tasks; "
                             f"{envs.suite_of(cfg.task)} tasks are not MoDem's")
        if cfg.obs_type != "pixels":
            raise ValueError(f"MoDem learns from pixels + state; the loop's obs_type must be 'pixels', got "
                             f"{cfg.obs_type!r}")
        for name in ("num_seed_frames", "action_repeat", "frame_stack", "image_size"):
            if getattr(agent_config, name) != getattr(cfg, name):
                raise ValueError(f"{name}: the agent's config has {getattr(agent_config, name)} but the loop's "
                                 f"{getattr(cfg, name)}; they must agree (the launcher copies the agent's)")
        if agent_config.demos < 1:
            raise ValueError(f"demos={agent_config.demos}: MoDem needs at least one demonstration")
        # The environments also give MoDem's proprioceptive state (info[state_key]) and, for Meta-World and
        # Adroit, the sparse reward and MoDem's episode length; the run's own env_options come last.
        options = {**agent.env_options_for_task(cfg.task), **dict(cfg.env_options)}
        self.state_key = agent.state_key(cfg.task)
        cfg = dataclasses.replace(cfg, env_options=tuple(options.items()))
        self.agent, self.agent_config, self.cfg, self.run_dir = agent, agent_config, cfg, run_dir
        self.num_seeds = len(cfg.seeds)
        self.strategy = seeding.resolve_strategy(cfg.seed_strategy, dense=False)
        # The device mesh first (both buffers give full batches of the agent's batch_size to every update).
        self.layout = devices.plan(cfg.devices, self.num_seeds, agent_config.batch_size)
        self.mesh = devices.make_mesh(self.layout)
        self.horizon = int(agent_config.horizon)

        probe = envs.make(cfg.task, seed=cfg.seeds[0], **env_kwargs(cfg))
        self.obs_shape = tuple(probe.observation_space.shape)  # (h, w, frame_stack * 3)
        state_space = probe.proprio_space if self.state_key == "proprio" else probe.modem_state_space
        self.state_dim = int(state_space.shape[0])
        self.action_dim = action_size(probe.action_space)
        self.episode_steps = probe.max_episode_steps
        probe.close()
        self.frame_shape = (*self.obs_shape[:2], 3)
        if self.episode_steps <= self.horizon:
            raise ValueError(f"{cfg.task}: episodes of {self.episode_steps} agent steps are too short for sequences "
                             f"of horizon {self.horizon}")

        self.demos = load_demos(cfg.task, demos, demos_root, episode_length=self.episode_steps,
                                num_demos=agent_config.demos)
        expected = {"frame shape": (self.frame_shape, self.demos.frame_shape),
                    "state size": (self.state_dim, self.demos.state_dim),
                    "action size": (self.action_dim, self.demos.action_dim)}
        for what, (env_value, demo_value) in expected.items():
            if env_value != demo_value:
                raise ValueError(f"demos {self.demos.name!r}: {what} {demo_value} but {cfg.task}'s environment has "
                                 f"{env_value}; record the demos with this run's settings (image_size "
                                 f"{cfg.image_size}, action_repeat {cfg.action_repeat})")
        keys = [jax.random.split(jax.random.PRNGKey(seed)) for seed in cfg.seeds]
        self.loop_keys = devices.put_seeds(jnp.stack([k[1] for k in keys]), self.mesh)
        obs_shapes = {"pixels": self.obs_shape, "state": (self.state_dim,)}
        self.states = devices.put_seeds(
            seeding.stack([agent.create(k[0], obs_shapes, self.action_dim, agent_config) for k in keys]), self.mesh)
        demo_replay = demo_data.demo_replay(self.demos, frame_stack=cfg.frame_stack, horizon=self.horizon)
        demo_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(demo_replay))
        replay = demo_data.init_replay(
            cfg.replay_capacity, self.episode_steps, self.frame_shape, self.state_dim, self.action_dim,
            cfg.frame_stack, horizon=self.horizon,
            max_bytes=sequence_replay.available_bytes() // self.num_seeds - demo_bytes)
        self.replay_episodes = sequence_replay.capacity_episodes(replay.sequences)
        self.replays = devices.put_seeds(seeding.stack([replay] * self.num_seeds), self.mesh)
        self.demo_replays = devices.put_seeds(seeding.stack([demo_replay] * self.num_seeds), self.mesh)
        self._add = _add_program(self.strategy, self.mesh)

        asynchronous = cfg.async_envs if cfg.async_envs is not None else self.num_seeds > 1
        self.train_envs = envs.make_vector(cfg.task, list(cfg.seeds), asynchronous=asynchronous, **env_kwargs(cfg))
        self.eval_envs = envs.make_vector(cfg.task, list(cfg.seeds), asynchronous=asynchronous,
                                          **env_kwargs(cfg, evaluation=True))
        self.checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
        self.step = 0  # agent steps (env steps = step * action_repeat)
        self.episode = 0
        self.eval_count = 0
        self.last_eval = float("nan")
        self.bc_done = False
        self.bc_metrics: Dict[str, list] = {}  # the BC scan's metrics per seed, logged on the first row
        self.last_episode_success = np.zeros(self.num_seeds)  # latched success at the end of collect's episode

    # ----------------------------------------------------------------------------- jitted programs
    def plan(self, obs: Dict[str, np.ndarray], mean: jnp.ndarray, *, step: int, t: int, eval_mode: bool):
        """EpisodicTrainer.plan for dict observations {"pixels": (S, h, w, C), "state": (S, D)}."""
        horizon = int(self.agent.planning_horizon(self.agent_config, step))
        fn = _plan_program(self.agent, self.agent_config, self.strategy, horizon, eval_mode, self.mesh)
        n = self.num_seeds
        counter = self.step + t if not eval_mode else self.step
        per_seed = devices.put_seeds((jax.tree.map(jnp.asarray, obs), np.full(n, step, np.int32), np.full(n, t == 0),
                                      np.full(n, counter, np.int32),
                                      np.full(n, self.eval_count * self.episode_steps + t, np.int32)), self.mesh)
        obs, steps, first, counters, eval_counters = per_seed
        return fn(self.states, obs, self.loop_keys, mean, steps, first, counters, eval_counters)

    def run_bc(self) -> Dict[str, np.ndarray]:
        """Phase 1: bc_iterations(config, L) BC steps of every seed as one jitted scan over demo-replay
        samples (batch_size sequences; PER weights ignored, as S2), one call per step on the CPU
        (updates_per_call). Returns the last step's metrics (S,)."""
        config, horizon = self.agent_config, self.horizon
        iterations = self.agent.bc_iterations(config, self.episode_steps)
        chunk = updates_per_call(iterations, convolutional=True)
        fn = _bc_program(self.agent, config, self.strategy, horizon, chunk, self.mesh)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, BC_STREAM))(self.loop_keys)
        for first in self.first_steps_of_calls(0, iterations, chunk):
            self.states, metrics = fn(self.states, self.demo_replays, keys, first)
        return devices.to_host(metrics)

    def check_demo_split(self, first_step: int, num_updates: int) -> None:
        """ValueError unless every update of a scan starting at agent step `first_step` keeps at least one
        interaction sequence (batch_split on the host, the values the scan computes on the device)."""
        for step in range(first_step, first_step + num_updates):
            if self.agent.batch_split(self.agent_config, step)[0] < 1:
                raise ValueError(f"demo_schedule {self.agent_config.demo_schedule!r} leaves no interaction "
                                 f"sequences at step {step} (batch_size {self.agent_config.batch_size}); keep its "
                                 f"ratio below 1")

    def run_updates(self, num_updates: int):
        """`num_updates` MoDem updates of every seed in jitted scans; update i (agent step self.step + i)
        trains on batch_split(config, self.step + i), computed inside the scan, so the program does not depend
        on the split. Each used row's priority goes back to the buffer it came from. Returns the metric means
        (S,), "demo_batch_size" among them.

        A multiple of the episode length (the seed_steps updates) runs as episode-length scans, the program of
        every later episode: one program per sampling mode for the whole run. The keys depend on the update's
        step only, so the result is the one of a single scan."""
        self.check_demo_split(self.step, num_updates)
        replace = int(devices.to_host(self.replays.sequences.num_episodes)[0]) < self.replay_episodes
        chunk = self.episode_steps if num_updates % self.episode_steps == 0 else num_updates
        chunk = updates_per_call(chunk, convolutional=True)
        fn = _updates_program(self.agent, self.agent_config, self.strategy, self.horizon, chunk, replace, self.mesh)
        keys = jax.vmap(lambda k: jax.random.fold_in(k, UPDATE_STREAM))(self.loop_keys)
        chunk_means = []
        for first in self.first_steps_of_calls(self.step, num_updates, chunk):
            self.states, self.replays, self.demo_replays, metrics = fn(self.states, self.replays,
                                                                       self.demo_replays, keys, first)
            chunk_means.append(metrics)
        return mean_of_chunks(chunk_means)

    # ----------------------------------------------------------------------------- episodes
    def collect(self, envs_, seeds, *, step: int, eval_mode: bool, record: bool = False):
        """One whole episode of every seed. Returns ({"pixels": newest frames (S, L+1, h, w, 3), "state":
        (S, L+1, D)}, actions (S, L, A), rewards (S, L), video frames per seed)."""
        cfg, n, length = self.cfg, self.num_seeds, self.episode_steps
        obs, info = envs_.reset(seed=seeds)
        frames = np.zeros((n, length + 1, *self.frame_shape), np.uint8)
        states = np.zeros((n, length + 1, self.state_dim), np.float32)
        actions = np.zeros((n, length, self.action_dim), np.float32)
        rewards = np.zeros((n, length), np.float32)
        video = [[] for _ in range(n)]
        key = self.state_key
        frames[:, 0], states[:, 0] = obs[..., -3:], info[key]
        mean = devices.put_seeds(jnp.zeros((n, self.horizon, self.action_dim), jnp.float32), self.mesh)
        for t in range(length):
            if record:
                for i, image in enumerate(envs_.call("render", cfg.video_size)):
                    video[i].append(image)
            action, mean = self.plan({"pixels": obs, "state": info[key]}, mean, step=step, t=t,
                                     eval_mode=eval_mode)
            action = devices.to_host(action)
            obs, reward, terminated, truncated, info = envs_.step(action)
            ended = terminated | truncated
            if terminated.any() or (ended.any() and t < length - 1) or (t == length - 1 and not ended.all()):
                raise RuntimeError(f"{cfg.task}: MoDem stores fixed-length episodes of {length} agent steps, but an "
                                   f"environment {'terminated' if terminated.any() else 'ended'} at step {t + 1}")
            frames[:, t + 1], states[:, t + 1] = obs[..., -3:], info[key]
            actions[:, t], rewards[:, t] = action, reward
        # the latched success at the episode's end (spec §3.2); DMControl reports none
        self.last_episode_success = np.asarray(info.get("episode_success", np.zeros(n)), np.float64).reshape(n)
        return {"pixels": frames, "state": states}, actions, rewards, video

    def eval_episode_extras(self) -> dict:
        """eval.csv's `episode_success`: the latched success of each evaluation episode (0 on DMC)."""
        return {"episode_success": self.last_episode_success}

    # ----------------------------------------------------------------------------- checkpoints
    def _tree(self) -> Dict[str, Any]:
        return {"agent": self.states, "replay": self.replays, "demo_replay": self.demo_replays}

    def save(self) -> None:
        meta = {"step": self.step, "episode": self.episode, "eval_count": self.eval_count,
                "last_eval": self.last_eval, "bc_done": self.bc_done, "bc_metrics": self.bc_metrics}
        self.checkpointer.save(self.step, self._tree(), meta)

    def restore(self) -> None:
        tree, meta = self.checkpointer.restore(self._tree())
        self.states, self.replays, self.demo_replays = devices.put_seeds(
            (tree["agent"], tree["replay"], tree["demo_replay"]), self.mesh)
        self.step, self.episode = meta["step"], meta["episode"]
        self.eval_count, self.last_eval = meta["eval_count"], meta["last_eval"]
        self.bc_done, self.bc_metrics = meta["bc_done"], meta["bc_metrics"]

    # ----------------------------------------------------------------------------- EpisodicTrainer's hooks
    # The episode loop is EpisodicTrainer.train (the official TD-MPC schedule); MoDem adds phase 1 before it,
    # stores pixels and state, and logs the phase and the BC summary.
    def before_episodes(self) -> None:
        """Phase 1 (BC), once; then a checkpoint, so that an interrupted run never repeats it."""
        if self.bc_done:
            return
        metrics = self.run_bc()
        check_finite(metrics, self.cfg.seeds, self.step, self.checkpointer.latest_step())
        self.bc_metrics = {name: [float(v) for v in values] for name, values in metrics.items()}
        self.bc_done = True
        self.save()

    def store_episode(self, observations, actions: np.ndarray, rewards: np.ndarray) -> None:
        episode = devices.put_seeds((jnp.asarray(observations["pixels"]), jnp.asarray(observations["state"]),
                                     jnp.asarray(actions), jnp.asarray(rewards)), self.mesh)
        self.replays = self._add(self.replays, *episode)

    def row_extras(self, seed_index: int, seed_steps: int) -> dict:
        # demo_batch_size: NaN before any update; the updates' mean n_demo overrides it when they ran
        row = {"phase": SEEDING if self.step < seed_steps else INTERACTIVE, "demo_batch_size": float("nan")}
        if self.episode == 1:  # the first episode's row carries the BC summary
            row["bc_iterations"] = self.agent.bc_iterations(self.agent_config, self.episode_steps)
            row.update({k: v[seed_index] for k, v in self.bc_metrics.items()})
        return row


# ------------------------------------------------------------------------------------------------- programs
# The jitted programs depend only on static settings, not on a trainer: built once per setting and
# shared by every trainer of the process (a resumed trainer, the tests' several runs), so nothing is
# compiled twice. The update program does not depend on the demo split (a traced value): one per
# sampling mode (with replacement until the interaction buffer is full, without afterwards).
# `mesh`: the trainer's device mesh (None for one device); sampled batches go over its "data" axis.


@functools.lru_cache(maxsize=4)
def _add_program(strategy: str, mesh):
    return jax.jit(seeding.over_seeds(demo_data.add_replay_episode, strategy, jit=False, mesh=mesh),
                   donate_argnums=(0,))


@functools.lru_cache(maxsize=8)
def _plan_program(agent, agent_config, strategy: str, horizon: int, eval_mode: bool, mesh):
    def plan_one(state, obs, loop_key, mean, step, first, counter, eval_counter):
        # keys inside the compiled program, as EpisodicTrainer.plan
        key = jax.random.fold_in(jax.random.fold_in(loop_key, PLAN_STREAM), counter)
        if eval_mode:  # evaluation keys: their own stream, so evaluating never shifts training's
            key = jax.random.fold_in(key, eval_counter)
        return agent.plan(state, obs, key, mean, step=step, horizon=horizon, first_step=first, eval_mode=eval_mode)
    return jax.jit(seeding.over_seeds(plan_one, strategy, jit=False, mesh=mesh))  # seeds split only


@functools.lru_cache(maxsize=4)
def _bc_program(agent, config, strategy: str, horizon: int, iterations: int, mesh):
    def bc_one(state, demo_replay, key, first):
        def body(state, i):
            k_sample, k_update = jax.random.split(jax.random.fold_in(key, first + i))
            # with replacement, as S2's never-full demo buffer (ours is sized to the demos); weights unused
            batch, _ = demo_data.sample_replay(demo_replay, k_sample, config.batch_size, horizon,
                                               alpha=config.per_alpha, beta=config.per_beta, replace=True)
            return agent.bc_update(state, devices.shard_batch(batch, axis=0), k_update)  # rows over "data"
        state, metrics = scan_updates(body, state, iterations)
        return state, jax.tree.map(lambda m: m[-1], metrics)
    return jax.jit(seeding.over_seeds(bc_one, strategy, jit=False, mesh=mesh), donate_argnums=(0,))


@functools.lru_cache(maxsize=4)
def _updates_program(agent, config, strategy: str, horizon: int, num_updates: int, replace: bool, mesh):
    batch_size = config.batch_size

    def updates_one(state, replay, demo_replay, key, first_step):
        def body(carry, i):
            state, replay, demo_replay = carry
            step = first_step + i
            k_sample, k_demo, k_update = jax.random.split(jax.random.fold_in(key, step), 3)
            # A full batch from each buffer: which rows are used is a traced mask of this update's split.
            is_demo = agent.demo_rows(batch_size, agent.traced_demo_batch_size(config, step))
            batch, indices = demo_data.sample_replay(replay, k_sample, batch_size, horizon, alpha=config.per_alpha,
                                                     beta=config.per_beta, replace=replace)
            demo_batch, demo_indices = demo_data.sample_replay(demo_replay, k_demo, batch_size, horizon,
                                                               alpha=config.per_alpha, beta=config.per_beta,
                                                               replace=True)
            # rows over "data" (a no-op without a mesh); the indices stay whole, the write-back scatters by them
            batch, demo_batch, is_demo = devices.shard_batch((batch, demo_batch, is_demo), axis=0)
            state, metrics = agent.update(state, agent.combine_batches(batch, demo_batch, is_demo), is_demo, step,
                                          k_update)
            priorities = metrics.pop("priorities")
            replay = demo_data.update_replay_priorities(replay, indices, priorities, valid=~is_demo)
            demo_replay = demo_data.update_replay_priorities(demo_replay, demo_indices, priorities, valid=is_demo)
            return (state, replay, demo_replay), metrics
        (state, replay, demo_replay), metrics = scan_updates(body, (state, replay, demo_replay), num_updates)
        return state, replay, demo_replay, jax.tree.map(jnp.mean, metrics)
    return jax.jit(seeding.over_seeds(updates_one, strategy, jit=False, mesh=mesh), donate_argnums=(0, 1, 2))


def load_demos(task: str, demos: Optional[str], root: Optional[str], *, episode_length: int,
               num_demos: int) -> demo_data.Demos:
    """read_demos of `demos` (default: dataset_id_for(task) under `root`); a missing dataset is a
    FileNotFoundError that names the path looked at and how to record the demos."""
    dataset = demos or demo_data.dataset_id_for(task)
    try:
        return demo_data.read_demos(dataset, root, episode_length=episode_length, num_demos=num_demos)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"MoDem demos {dataset!r} not found: {error} Record them first, e.g. python scripts/collect_demos.py "
            f"--run <a trained run of {task}> --episodes {num_demos} --root {datasets_root(root)}") from None
