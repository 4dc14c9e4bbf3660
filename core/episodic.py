"""The episodic host loop of the planning agents (TD-MPC; MoDem builds on it).

The official TD-MPC loop (nicklashansen/tdmpc src/train.py), for S seeds at once:

    for each episode (agent step `step` at its start, a multiple of the episode length L):
        collect a whole episode, planning every action with the agent step of the episode's start
        add it to the replay
        if step >= seed_steps: run seed_steps updates (the first time) or L updates, with the update
            step counter at step + i
        log the episode; evaluate if step * action_repeat is a multiple of eval_every_frames

Episodes have a fixed length (DeepMind Control: 1000 simulator steps): the replay stores whole
episodes, and an environment that ends an episode early is an error, not a silent gap.

What runs where. The environments step on the host (subprocesses when there are several seeds);
planning is one jitted call per step for all seeds (the planner's warm-start mean is carried between
steps); the replay lives on the device (data/sequence_replay.py), so the episode's updates — sample,
update, write the new priorities back — run as one jitted `lax.scan` per episode, with no host round
trip between updates (on the CPU, a pixel agent's updates are one jitted call each: updates_per_call).

Devices (`--config.devices`, core/devices.py): every per-seed program runs over the (seed, data) mesh,
the seeds split over the "seed" devices. The replays are per-seed pytrees, held by their seed's devices;
inside the update scan each sampled batch (batch axis first: obs (B, H+1, ...)) is laid over the "data"
devices (devices.shard_batch), so XLA splits the update's rows and averages its gradients, and the new
priorities go back to the sampled slots of the seed's replay. Planning has no batch of that kind: it runs
with the seeds split only. One device (the default on a CPU): no mesh, the plain programs.

Step accounting (spec §1, §3.3): metrics.csv and eval.csv log both `step` (agent steps, the
schedules' argument) and `frame` (simulator steps = step x action_repeat).

Randomness is a pure function of (seed, counters): planning keys fold in the agent step, update keys
the update step, each episode's environment seed comes from (seed, episode index). Checkpoints are
taken between episodes (agent states, replay, counters), so `--resume` continues exactly.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import envs
from core import devices
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.logging import Logger
from core.offpolicy import (EVAL_EPISODE, TRAIN_EPISODE, LoopConfig, action_size, check_finite, env_kwargs,
                            episode_seed, newest_frame)
from core.video import check_writer, write_mp4
from data import sequence_replay

PLAN_STREAM, UPDATE_STREAM = 0, 1  # fold_in streams of a seed's loop key


def updates_per_call(num_updates: int, convolutional: bool) -> int:
    """How many updates one jitted call runs: all of them in one lax.scan, except for an agent with a
    convolutional encoder on the CPU, one per call. XLA:CPU runs a convolution's gradient far slower inside a
    while loop (a scan) than in a program without one (jax-ml/jax#12868). Measured here (2 CPU cores): the
    weight gradient of one 3x3 convolution (64 x 84 x 84 x 32) 0.27 s alone, 45 s in a scan; a 4-conv
    encoder's Adam step 0.83 s alone, 7.9 s per step in a scan; MoDem's update (135 px, batch 16) 1.4 s
    alone, 2.2 s per update in a scan. Update i's keys and step depend on i only, so the results are those
    of one scan (to float rounding: the programs differ)."""
    return 1 if convolutional and jax.default_backend() == "cpu" else num_updates


def scan_updates(body, carry, num_updates: int):
    """lax.scan(body, carry, arange(num_updates)), with a single update called as it is: no while loop
    around it (see updates_per_call)."""
    if num_updates == 1:
        carry, out = body(carry, jnp.int32(0))
        return carry, jax.tree.map(lambda x: x[None], out)
    return jax.lax.scan(body, carry, jnp.arange(num_updates))


def mean_of_chunks(chunk_means: list):
    """The mean over all updates from each call's metric means (the calls are of equal size)."""
    if len(chunk_means) == 1:
        return chunk_means[0]
    # pairwise adds: the same small programs for any number of calls
    return jax.tree.map(lambda *means: sum(means) / len(means), *chunk_means)


class EpisodicTrainer:
    """Trains one planning agent module (create / plan / update / planning_horizon) on S seeds of one task."""

    def __init__(self, agent, agent_config, cfg: LoopConfig, run_dir: str):
        self.agent, self.agent_config, self.cfg, self.run_dir = agent, agent_config, cfg, run_dir
        self.num_seeds = len(cfg.seeds)
        self.strategy = seeding.resolve_strategy(cfg.seed_strategy, dense=cfg.obs_type == "states")
        # The device mesh first: a layout that does not fit the seeds or the batch stops before any work.
        self.layout = devices.plan(cfg.devices, self.num_seeds, cfg.batch_size)
        self.mesh = devices.make_mesh(self.layout)
        if cfg.save_video:
            check_writer()
        if cfg.parallel_eval > 1 or cfg.frames_on_device:
            raise ValueError(f"--config.parallel_eval={cfg.parallel_eval} / --config.frames_on_device="
                             f"{cfg.frames_on_device}: each is an option of the off-policy loop (DrQ-v2, DrM, DQN, "
                             f"Rainbow, TD3); the planner's loop evaluates one episode at a time and keeps its replay "
                             f"on the device already: leave them unset")
        probe = envs.make(cfg.task, seed=cfg.seeds[0], **env_kwargs(cfg))
        obs_space, act_space, self.episode_steps = probe.observation_space, probe.action_space, probe.max_episode_steps
        self.frame_channels = int(getattr(probe, "frame_channels", 3))
        probe.close()
        self.obs_shape, self.action_dim = tuple(obs_space.shape), action_size(act_space)
        self.frame_shape = newest_frame(np.zeros(self.obs_shape, obs_space.dtype), cfg.obs_type,
                                        self.frame_channels).shape
        # The agent's plan reads its own seed phase and action repeat; the loop's must be the same ones.
        for name in ("num_seed_frames", "action_repeat"):
            if getattr(agent_config, name) != getattr(cfg, name):
                raise ValueError(f"{name}: the agent's config has {getattr(agent_config, name)} but the loop's "
                                 f"{getattr(cfg, name)}; they must agree (the launcher copies the agent's)")
        self.horizon = int(agent_config.horizon)
        if self.episode_steps <= self.horizon:
            raise ValueError(f"{cfg.task}: episodes of {self.episode_steps} agent steps are too short for sequences "
                             f"of horizon {self.horizon}")

        keys = [jax.random.split(jax.random.PRNGKey(seed)) for seed in cfg.seeds]
        self.loop_keys = devices.put_seeds(jnp.stack([k[1] for k in keys]), self.mesh)
        self.states = devices.put_seeds(
            seeding.stack([agent.create(k[0], self.obs_shape, self.action_dim, agent_config) for k in keys]), self.mesh)
        # Each seed has its own buffer on the device; together they must fit (a clear MemoryError if not).
        replay = sequence_replay.init(cfg.replay_capacity, self.episode_steps, self.frame_shape, obs_space.dtype,
                                      self.action_dim, cfg.frame_stack if cfg.obs_type == "pixels" else 1,
                                      horizon=self.horizon,
                                      max_bytes=sequence_replay.available_bytes() // self.num_seeds)
        self.replay_episodes = sequence_replay.capacity_episodes(replay)
        self.replays = devices.put_seeds(seeding.stack([replay] * self.num_seeds), self.mesh)
        self._plan, self._updates = {}, {}
        self._add = jax.jit(seeding.over_seeds(sequence_replay.add_episode, self.strategy, jit=False, mesh=self.mesh),
                            donate_argnums=(0,))

        asynchronous = cfg.async_envs if cfg.async_envs is not None else self.num_seeds > 1
        self.train_envs = envs.make_vector(cfg.task, list(cfg.seeds), asynchronous=asynchronous, **env_kwargs(cfg))
        self.eval_envs = envs.make_vector(cfg.task, list(cfg.seeds), asynchronous=asynchronous,
                                          **env_kwargs(cfg, evaluation=True))
        self.checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
        self.step = 0  # agent steps (frames = step * action_repeat)
        self.episode = 0  # completed training episodes (every seed is at the same one)
        self.eval_count = 0
        self.last_eval = float("nan")

    # ----------------------------------------------------------------------------- jitted programs
    def plan(self, obs: np.ndarray, mean: jnp.ndarray, *, step: int, t: int, eval_mode: bool):
        """Actions (S, A) and the planners' new warm-start means for one environment step of every seed.
        `step` is the agent step the schedules read (the episode's start in training), `t` the step
        within the episode (0: no warm start)."""
        horizon = int(self.agent.planning_horizon(self.agent_config, step))
        fn = self._plan.get((horizon, eval_mode))
        if fn is None:
            def plan_one(state, obs, loop_key, mean, step, first, counter, eval_counter):
                # keys inside the compiled program: a host-side vmap of fold_in cost ~2 ms a step
                key = jax.random.fold_in(jax.random.fold_in(loop_key, PLAN_STREAM), counter)
                if eval_mode:  # evaluation keys: their own stream, so evaluating never shifts training's
                    key = jax.random.fold_in(key, eval_counter)
                return self.agent.plan(state, obs, key, mean, step=step, horizon=horizon, first_step=first,
                                       eval_mode=eval_mode)
            fn = self._plan[(horizon, eval_mode)] = jax.jit(
                seeding.over_seeds(plan_one, self.strategy, jit=False, mesh=self.mesh))
        n = self.num_seeds
        counter = self.step + t if not eval_mode else self.step
        per_seed = devices.put_seeds((jnp.asarray(obs), np.full(n, step, np.int32), np.full(n, t == 0),
                                      np.full(n, counter, np.int32),
                                      np.full(n, self.eval_count * self.episode_steps + t, np.int32)), self.mesh)
        obs, steps, first, counters, eval_counters = per_seed
        return fn(self.states, obs, self.loop_keys, mean, steps, first, counters, eval_counters)

    def run_updates(self, num_updates: int):
        """`num_updates` updates of every seed as one jitted scan (one call per update for a pixel agent on the
        CPU: updates_per_call); returns the mean of each metric (S,)."""
        # official: with replacement until the buffer is full, without afterwards (a static choice)
        replace = int(devices.to_host(self.replays.num_episodes)[0]) < self.replay_episodes
        chunk = updates_per_call(num_updates, self.cfg.obs_type == "pixels")
        fn = self._updates.get((chunk, replace))
        if fn is None:
            cfg, agent_config, horizon = self.cfg, self.agent_config, self.horizon

            def updates_one(state, replay, key, first_step):
                def body(carry, i):
                    state, replay = carry
                    step = first_step + i
                    k_sample, k_update = jax.random.split(jax.random.fold_in(key, step))
                    batch, indices = sequence_replay.sample(
                        replay, k_sample, cfg.batch_size, horizon, alpha=agent_config.per_alpha,
                        beta=agent_config.per_beta, replace=replace)
                    batch = devices.shard_batch(batch, axis=0)  # its rows over "data" (a no-op without a mesh)
                    state, metrics = self.agent.update(state, batch, step, k_update)
                    replay = sequence_replay.update_priorities(replay, indices, metrics.pop("priorities"))
                    return (state, replay), metrics
                (state, replay), metrics = scan_updates(body, (state, replay), chunk)
                return state, replay, jax.tree.map(jnp.mean, metrics)

            fn = self._updates[(chunk, replace)] = jax.jit(
                seeding.over_seeds(updates_one, self.strategy, jit=False, mesh=self.mesh), donate_argnums=(0, 1))
        keys = jax.vmap(lambda k: jax.random.fold_in(k, UPDATE_STREAM))(self.loop_keys)
        chunk_means = []
        for first in self.first_steps_of_calls(self.step, num_updates, chunk):
            self.states, self.replays, metrics = fn(self.states, self.replays, keys, first)
            chunk_means.append(metrics)
        return mean_of_chunks(chunk_means)

    def first_steps_of_calls(self, first_step: int, num_updates: int, chunk: int):
        """The first update step of each jitted call of `chunk` updates (first_step, first_step + chunk, ...),
        per seed on the seeds' devices."""
        for offset in range(0, num_updates, chunk):
            yield devices.put_seeds(np.full((self.num_seeds,), first_step + offset, np.int32), self.mesh)

    # ----------------------------------------------------------------------------- episodes
    def collect(self, envs_, seeds, *, step: int, eval_mode: bool, record: bool = False):
        """One whole episode of every seed. Returns (frames (S, L+1, ...), actions (S, L, A),
        rewards (S, L), video frames per seed)."""
        cfg, n, length = self.cfg, self.num_seeds, self.episode_steps
        obs, _ = envs_.reset(seed=seeds)
        frames = np.zeros((n, length + 1, *self.frame_shape), obs.dtype)
        actions = np.zeros((n, length, self.action_dim), np.float32)
        rewards = np.zeros((n, length), np.float32)
        video = [[] for _ in range(n)]
        frames[:, 0] = newest_frame(obs, cfg.obs_type, self.frame_channels)
        mean = devices.put_seeds(jnp.zeros((n, self.horizon, self.action_dim), jnp.float32), self.mesh)
        for t in range(length):
            if record:
                for i, image in enumerate(envs_.call("render", cfg.video_size)):
                    video[i].append(image)
            action, mean = self.plan(obs, mean, step=step, t=t, eval_mode=eval_mode)
            action = devices.to_host(action)
            obs, reward, terminated, truncated, _ = envs_.step(action)
            ended = terminated | truncated
            if terminated.any() or (ended.any() and t < length - 1) or (t == length - 1 and not ended.all()):
                raise RuntimeError(
                    f"{cfg.task}: {self.agent.__name__.split('.')[-1]} stores fixed-length episodes of {length} "
                    f"agent steps, but an environment {'terminated' if terminated.any() else 'ended'} at step "
                    f"{t + 1}; use a task whose episodes have a fixed length (e.g. DeepMind Control)")
            frames[:, t + 1] = newest_frame(obs, cfg.obs_type, self.frame_channels)
            actions[:, t], rewards[:, t] = action, reward
        return frames, actions, rewards, video

    def eval_episode_extras(self) -> dict:
        """Hook: per-seed values of the evaluation episode just collected, averaged into eval.csv columns
        (MoDem: the latched success)."""
        return {}

    def evaluate(self, logger: Logger) -> None:
        """cfg.num_eval_episodes episodes of the planner in eval mode per seed; eval.csv gets their mean
        return and the mean of each `eval_episode_extras` column."""
        cfg = self.cfg
        returns, extras = np.zeros(self.num_seeds), {}
        frame = self.step * cfg.action_repeat
        for ep in range(cfg.num_eval_episodes):
            seeds = [episode_seed(s, EVAL_EPISODE, self.eval_count * cfg.num_eval_episodes + ep) for s in cfg.seeds]
            _, _, rewards, video = self.collect(self.eval_envs, seeds, step=self.step, eval_mode=True,
                                                record=cfg.save_video and ep == 0)
            returns += rewards.sum(axis=1)
            for name, values in self.eval_episode_extras().items():
                extras[name] = extras.get(name, 0.0) + np.asarray(values, np.float64)
            for i, seed in enumerate(cfg.seeds):
                if video[i]:
                    write_mp4(os.path.join(self.run_dir, "videos", f"frame{frame:09d}_seed{seed}.mp4"), video[i])
        episodes = max(cfg.num_eval_episodes, 1)
        returns /= episodes
        for i, seed in enumerate(cfg.seeds):
            logger.log_eval({"seed": seed, "step": self.step, "frame": frame, "episode_reward": returns[i],
                             **{name: total[i] / episodes for name, total in extras.items()},
                             "episode_length": self.episode_steps, "wall_time": time.time() - self.start_time})
        self.eval_count += 1
        self.last_eval = float(returns.mean())

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        meta = {"step": self.step, "episode": self.episode, "eval_count": self.eval_count,
                "last_eval": self.last_eval}
        self.checkpointer.save(self.step, {"agent": self.states, "replay": self.replays}, meta)

    def restore(self) -> None:
        tree, meta = self.checkpointer.restore({"agent": self.states, "replay": self.replays})
        self.states, self.replays = devices.put_seeds((tree["agent"], tree["replay"]), self.mesh)
        self.step, self.episode = meta["step"], meta["episode"]
        self.eval_count, self.last_eval = meta["eval_count"], meta["last_eval"]

    # ----------------------------------------------------------------------------- what a subclass changes
    def before_episodes(self) -> None:
        """Runs after a resume's restore and before the first episode (MoDem: its BC phase)."""

    def store_episode(self, observations, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Adds one collected episode of every seed to the replays."""
        episode = devices.put_seeds((jnp.asarray(observations), jnp.asarray(actions), jnp.asarray(rewards)), self.mesh)
        self.replays = self._add(self.replays, *episode)

    def row_extras(self, seed_index: int, seed_steps: int) -> dict:
        """Extra metrics.csv columns of this episode's row for one seed (before the update means)."""
        return {}

    # ----------------------------------------------------------------------------- training
    def train(self, resume: bool = False) -> dict:
        cfg, length = self.cfg, self.episode_steps
        if resume:
            self.restore()
        self.before_episodes()
        logger = Logger(self.run_dir, list(cfg.seeds), resume_step=self.step if resume else None,
                        resume_frame=self.step * cfg.action_repeat if resume else None,
                        metrics_row_before_checkpoint=False)
        total_steps = cfg.num_train_frames // cfg.action_repeat
        seed_steps = cfg.num_seed_frames // cfg.action_repeat
        ckpt_every = max(cfg.checkpoint_every_frames // cfg.action_repeat, 1)
        next_ckpt = (self.step // ckpt_every + 1) * ckpt_every
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.num_train_frames, initial=self.step * cfg.action_repeat, unit="frame",
                       unit_scale=True, dynamic_ncols=True, mininterval=1.0,
                       desc=f"{cfg.task} x{self.num_seeds} seed{'s' if self.num_seeds > 1 else ''}")
        self.start_time = time.time()
        try:
            # official: `for step in range(0, train_steps + episode_length, episode_length)`
            while self.step <= total_steps:
                if self.step >= next_ckpt:
                    self.save()
                    next_ckpt += ckpt_every
                start = time.time()
                seeds = [episode_seed(s, TRAIN_EPISODE, self.episode) for s in cfg.seeds]
                observations, actions, rewards, _ = self.collect(self.train_envs, seeds, step=self.step,
                                                                 eval_mode=False)
                self.store_episode(observations, actions, rewards)
                collect_time = time.time() - start
                means = {}
                if self.step >= seed_steps:
                    num_updates = seed_steps if self.step == seed_steps else length
                    if num_updates:
                        means = devices.to_host(self.run_updates(num_updates))
                        check_finite(means, cfg.seeds, self.step, self.checkpointer.latest_step())
                now = time.time()
                self.episode += 1
                for i, seed in enumerate(cfg.seeds):
                    logger.log_train({"seed": seed, "step": self.step, "frame": self.step * cfg.action_repeat,
                                      "episode": self.episode, "episode_reward": float(rewards[i].sum()),
                                      "episode_length": length, "fps": length * cfg.action_repeat / max(now - start, 1e-9),
                                      "collect_time": collect_time, "update_time": now - start - collect_time,
                                      **self.row_extras(i, seed_steps),
                                      **{k: float(v[i]) for k, v in means.items()}})
                if (self.step * cfg.action_repeat) % cfg.eval_every_frames == 0:
                    self.evaluate(logger)
                    if bar is not None:
                        bar.set_postfix(eval_return=f"{self.last_eval:.1f}", refresh=False)
                self.step += length
                if bar is not None:
                    bar.update(length * cfg.action_repeat)
            if self.checkpointer.latest_step() != self.step:  # a finished run resumed saves nothing new
                self.save()
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        return {"step": self.step, "last_eval": self.last_eval}

    def close(self) -> None:
        for env in (self.train_envs, self.eval_envs):
            env.close()
        self.checkpointer.close()
