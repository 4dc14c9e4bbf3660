"""The off-policy host loop (DrQ-v2, DrM, ...): environments on the CPU, `act`/`update` jitted.

S seeds train in one process: their environments step in parallel (subprocesses), their agent
states are stacked on a leading axis and run through one jitted program (core/seeds.py).
`--config.devices` lays that program over a (seed, data) device mesh (core/devices.py): the seeds
split over the "seed" devices, and each host batch's rows over the "data" devices, where XLA averages
the gradients; `act` runs with the seeds split only. One device (the default on a CPU): no mesh, the
plain programs.

One agent step, in the official DrQ-v2 order:
    (episode end -> log, reset) -> evaluate if due -> act -> update (past the seed phase, every
    `update_every_steps`) -> environment step -> store.
The environment step is started before the update and collected after it, so the CPU simulates
while the accelerator updates; the update only sees data stored before this step, as in the
official loop, so the overlap changes no numbers.

What the environment says shapes what is stored and logged, with no task-name special cases:
  * `env.stack_padding` ("repeat" when absent, "zeros" for Meta-World): how the replay pads the
    frame stacks of an episode's first observations, as the environment's own stack does;
  * `env.proprio_space` (Adroit): the proprioceptive vector of info["proprio"] is stored with every
    replay entry, sampled as batch["proprio"] / batch["next_proprio"] and passed to
    `agent.act(..., proprio=)`;
  * info["episode_success"] (Meta-World, Adroit): logged as `episode_success` in metrics.csv and,
    averaged over the evaluation episodes, as `success_rate` in eval.csv.
Meta-World also gets DrM's trainer quirk `mw_double_reset` (spec §2.7): from the second episode on,
every training episode starts with two resets, both stored, the second as a zero-action step whose
frame restarts the stack (one spurious transition per episode, as the official replay holds).

Randomness is a pure function of (seed, counters): the agent's keys are `fold_in(key, step)`, each
episode's environment seed is derived from (seed, episode index), and the replay samplers are
numpy generators saved with each checkpoint. Checkpoints are taken when every environment is at an
episode boundary, so `--resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import psutil

import envs
from core import devices
from core import frame_store
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.logging import Logger
from core.video import check_writer, write_mp4
from data.prioritized import PrioritizedFrameReplay
from data.replay import FrameReplay, merge_frames

TRAIN_EPISODE, EVAL_EPISODE = 0, 1  # streams of per-episode environment seeds


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    task: str
    seeds: tuple[int, ...]
    obs_type: str = "pixels"
    action_repeat: int = 2
    frame_stack: int = 3
    image_size: int = 84
    num_train_frames: int = 1_100_000
    num_seed_frames: int = 4000
    update_every_steps: int = 2
    batch_size: int = 256
    replay_capacity: int = 1_000_000
    nstep: int = 3
    discount: float = 0.99
    eval_every_frames: int = 10_000
    num_eval_episodes: int = 10
    checkpoint_every_frames: int = 100_000
    save_video: bool = True
    video_size: int = 128
    seed_strategy: str = "auto"  # how seeds share one program: "map" (lax.map), "vmap", "auto" (core/seeds.py)
    devices: str = "auto"  # auto | N | SxD: the (seed, data) device mesh (core/devices.py)
    async_envs: bool | None = None  # None: subprocesses when there are several seeds
    # Pixels: a copy of the replay's frames on the accelerator, gathered there by the update
    # (core/frame_store.py). None: where it fits in half the device memory, one device, not the CPU.
    frames_on_device: bool | None = None
    # Evaluation episodes played at once per seed, each in its own environment (subprocesses). 0: all of
    # them where there are CPU cores for it and the agent is on an accelerator, else one at a time.
    parallel_eval: int = 0
    progress: bool = True
    # DrM's train_mw.py resets Meta-World twice at every episode end and stores both resets (spec §2.7);
    # official default. No effect on other suites.
    mw_double_reset: bool = True
    reward_clip: Optional[float] = None  # store clip(r, -c, c) per step (Dopamine's Atari agents: 1.0)
    prioritized_replay: bool = False  # sample by priority (data/prioritized.py); the agent returns priorities
    # Extra environment settings, (name, value) pairs, e.g. (("sticky_actions", True),); the training
    # environments get all of them, the evaluation ones all but terminal_on_life_loss (whole games).
    env_options: tuple = ()


def episode_seed(seed: int, stream: int, index: int) -> int:
    """The environment seed of one episode: a pure function, so a resumed run replays it exactly."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def newest_frame(obs: np.ndarray, obs_type: str, channels: int = 3) -> np.ndarray:
    """What the replay stores of an observation: its newest frame (pixels: the last `channels`
    channels, 3 for RGB, 1 for Atari's grayscale) or all of it (states)."""
    return obs[..., -channels:] if obs_type == "pixels" else obs


def env_kwargs(cfg: LoopConfig, evaluation: bool = False) -> dict:
    options = dict(cfg.env_options)
    if evaluation:  # evaluation plays whole games (Dopamine's life-loss terminals are a training device)
        options.pop("terminal_on_life_loss", None)
    return dict(obs_type=cfg.obs_type, action_repeat=cfg.action_repeat, frame_stack=cfg.frame_stack,
                image_size=cfg.image_size, **options)


def action_size(act_space) -> int:
    """The agent's action_dim: the number of actions of a discrete space, the flat size of a box."""
    return int(act_space.n) if hasattr(act_space, "n") else int(np.prod(act_space.shape))


class EnvFacts(NamedTuple):
    """What the loop needs to know of a task's environment (read from one probe instance)."""

    obs_space: Any
    act_space: Any
    frame_shape: tuple  # what the replay stores of one observation
    episode_steps: int
    stack_padding: str  # "repeat" | "zeros": how the env fills its frame stack at reset
    proprio_shape: Optional[tuple]  # info["proprio"]'s shape, None when the env has none
    frame_channels: int  # channels of one frame of a pixel observation (env.frame_channels, default 3)


def preflight(cfg: LoopConfig) -> EnvFacts:
    """Checks the task and the replay's memory need before any work; returns what the loop needs to know."""
    probe = envs.make(cfg.task, seed=cfg.seeds[0], **env_kwargs(cfg))
    obs_space, act_space, episode_steps = probe.observation_space, probe.action_space, probe.max_episode_steps
    stack_padding = getattr(probe, "stack_padding", "repeat")
    proprio_space = getattr(probe, "proprio_space", None)
    frame_channels = int(getattr(probe, "frame_channels", 3))
    probe.close()
    proprio_shape = None if proprio_space is None else tuple(proprio_space.shape)
    frame_shape = newest_frame(np.zeros(obs_space.shape, obs_space.dtype), cfg.obs_type, frame_channels).shape
    per_seed = FrameReplay.memory_bytes(cfg.replay_capacity, frame_shape, obs_space.dtype, act_space.shape,
                                        proprio_shape)
    need, free = per_seed * len(cfg.seeds), psutil.virtual_memory().available
    if need > free:
        fits = max(int(cfg.replay_capacity * free / need), 0)
        raise MemoryError(
            f"replay: {len(cfg.seeds)} seed(s) x {cfg.replay_capacity:,} transitions need "
            f"{need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB of RAM is free; use a capacity of at "
            f"most ~{fits:,} (--config.agent.replay_capacity) or fewer seeds")
    return EnvFacts(obs_space, act_space, frame_shape, episode_steps, stack_padding, proprio_shape, frame_channels)


def _merge(mask: np.ndarray, new: np.ndarray, old: Optional[np.ndarray]) -> np.ndarray:
    """Per environment: `new` where mask, else `old` (all of `new` when there is no old value)."""
    if old is None:
        return new
    return np.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)


def check_finite(metric_means: dict, seeds, step: int, checkpoint_step) -> None:
    """Stops a run whose losses became NaN/inf, naming the metric and seed; the last checkpoint is intact."""
    for name, values in metric_means.items():
        bad = ~np.isfinite(values)
        if bad.any():
            resume = (f"the last checkpoint (step {checkpoint_step}) is intact: fix the cause (e.g. a lower "
                      f"--config.agent.lr) and start again, or --resume it" if checkpoint_step is not None
                      else "no checkpoint was written yet")
            raise FloatingPointError(
                f"{name} is {values[bad][0]} for seed(s) {[s for s, b in zip(seeds, bad) if b]} in the updates "
                f"before agent step {step}; {resume}")


def eval_width(parallel_eval: int, num_eval_episodes: int, num_seeds: int) -> int:
    """Evaluation episodes played at once per seed (LoopConfig.parallel_eval; 0 = auto: one per free CPU
    core on an accelerator machine, one at a time on the CPU, where the cores run the agent)."""
    if parallel_eval < 0:
        raise ValueError(f"parallel_eval must be >= 0 (0 = auto), got {parallel_eval}")
    if parallel_eval == 0:
        cores = len(os.sched_getaffinity(0))
        parallel_eval = 1 if jax.default_backend() == "cpu" else max(cores // num_seeds - 1, 1)
    return max(min(parallel_eval, num_eval_episodes), 1)


def use_device_frames(wanted: bool | None, obs_type: str, num_devices: int, need_bytes: int,
                      device_bytes: int | None) -> bool:
    """Whether the loop mirrors the replay's frames on the device (LoopConfig.frames_on_device): pixels
    only, one device only; unset (None): where the copy takes at most half the device's memory
    (device_bytes is None on the CPU, where the host already is the device)."""
    if obs_type != "pixels" or wanted is False:
        return False
    if num_devices > 1:
        if wanted:
            raise ValueError(f"frames_on_device=True needs a single device, but the run's mesh has {num_devices}; "
                             "leave it unset (or False) there: the frames stay on the host")
        return False
    return True if wanted else device_bytes is not None and need_bytes <= device_bytes // 2


class OffPolicyTrainer:
    """Trains one agent module (create / act / update) on S seeds of one task."""

    def __init__(self, agent, agent_config, cfg: LoopConfig, run_dir: str):
        self.agent, self.agent_config, self.cfg, self.run_dir = agent, agent_config, cfg, run_dir
        self.num_seeds = len(cfg.seeds)
        # The device mesh first: a layout that does not fit the seeds or the batch stops before any work.
        self.layout = devices.plan(cfg.devices, self.num_seeds, cfg.batch_size)
        self.mesh = devices.make_mesh(self.layout)
        if cfg.save_video:
            check_writer()
        facts = preflight(cfg)
        obs_space, act_space, self.episode_steps = facts.obs_space, facts.act_space, facts.episode_steps
        self.obs_shape, self.action_dim = obs_space.shape, action_size(act_space)
        self.proprio_shape, self.frame_channels = facts.proprio_shape, facts.frame_channels
        # Metrics written for every update (updates.csv): names or "prefix" for "prefix/..." names.
        self.trace_prefixes = tuple(getattr(agent, "TRACE_METRICS", ()))
        self.double_reset = cfg.mw_double_reset and envs.suite_of(cfg.task) == "metaworld"
        replay_stack = cfg.frame_stack if cfg.obs_type == "pixels" else 1
        replay_type = PrioritizedFrameReplay if cfg.prioritized_replay else FrameReplay
        self.replays = [replay_type(cfg.replay_capacity, facts.frame_shape, obs_space.dtype, act_space.shape,
                                    frame_stack=replay_stack, nstep=cfg.nstep, discount=cfg.discount,
                                    pad_first_frame=facts.stack_padding, proprio_shape=facts.proprio_shape,
                                    check_memory=False) for _ in cfg.seeds]
        self.samplers = [np.random.default_rng([seed, 1]) for seed in cfg.seeds]
        self.frames = None  # a FrameStore when the replay's frames are mirrored on the device
        if self._frames_on_device(facts.frame_shape, obs_space.dtype):
            self.frames = frame_store.FrameStore(self.num_seeds, cfg.replay_capacity, facts.frame_shape,
                                                 obs_space.dtype)

        keys = [jax.random.split(jax.random.PRNGKey(seed)) for seed in cfg.seeds]
        self.loop_keys = devices.put_seeds(jnp.stack([k[1] for k in keys]), self.mesh)
        self.states = devices.put_seeds(seeding.stack([agent.create(k[0], self.obs_shape, self.action_dim,
                                                                    agent_config) for k in keys]), self.mesh)
        self._build_steps()

        asynchronous = cfg.async_envs if cfg.async_envs is not None else self.num_seeds > 1
        self.train_envs = envs.make_vector(cfg.task, list(cfg.seeds), asynchronous=asynchronous, **env_kwargs(cfg))
        self.eval_width = eval_width(cfg.parallel_eval, cfg.num_eval_episodes, self.num_seeds)
        self.eval_envs = envs.make_vector(cfg.task, [s for s in cfg.seeds for _ in range(self.eval_width)],
                                          asynchronous=asynchronous or (self.eval_width > 1 and
                                                                        cfg.async_envs is not False),
                                          **env_kwargs(cfg, evaluation=True))
        self.checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
        self.trace: list = []  # (step, {metric: (S,) device array}) of the updates not yet written

        self.step = 0  # agent steps (frames = step * action_repeat)
        self.episode = np.zeros(self.num_seeds, np.int64)  # completed training episodes per seed
        self.eval_count = 0
        self.last_eval = float("nan")

    def _frames_on_device(self, frame_shape: tuple, dtype) -> bool:
        cfg = self.cfg
        need = frame_store.store_bytes(self.num_seeds, cfg.replay_capacity, frame_shape, dtype)
        return use_device_frames(cfg.frames_on_device, cfg.obs_type, 1 if self.mesh is None else self.mesh.size,
                                 need, frame_store.device_memory_bytes())

    # ----------------------------------------------------------------------------- jitted steps
    def _build_steps(self):
        agent, strategy, mesh = self.agent, self.cfg.seed_strategy, self.mesh

        def act_one(state, obs, step, key, proprio, eval_mode):
            extra = {} if proprio is None else {"proprio": proprio[None]}  # only envs with proprio send it
            action = agent.act(state, obs[None], step, jax.random.fold_in(key, 2 * step), eval_mode=eval_mode,
                               **extra)
            return action[0]

        pixels = self.cfg.obs_type == "pixels"
        traced = self.trace_prefixes

        def update_one(state, batch, step, key, totals):
            if pixels:  # the replay sends frames unstacked (a faster host gather); stack them here
                batch = {**batch, "obs": merge_frames(batch["obs"]), "next_obs": merge_frames(batch["next_obs"])}
            state, metrics = agent.update(state, batch, step, jax.random.fold_in(key, 2 * step + 1))
            # Prioritized replay: the agent returns each sampled transition's new priority (not a scalar).
            priorities = metrics.pop("priorities", jnp.zeros(()))
            totals = {k: totals.get(k, 0.0) + v for k, v in metrics.items()}
            trace = {k: v for k, v in metrics.items() if any(k == p or k.startswith(p + "/") for p in traced)}
            return state, totals, trace, priorities

        def act_eval(state, obs, step, key, proprio, tick):
            # obs: the seed's parallel evaluation episodes; a fresh key per evaluation step (tick)
            extra = {} if proprio is None else {"proprio": proprio}
            key = jax.random.fold_in(jax.random.fold_in(key, 2 * step), tick)
            return agent.act(state, obs, step, key, eval_mode=True, **extra)

        # Acting has one observation per seed: seeds split over the mesh, nothing on "data".
        self._act = {mode: jax.jit(seeding.over_seeds(
            lambda s, o, t, k, p, mode=mode: act_one(s, o, t, k, p, mode), strategy, jit=False, mesh=mesh))
            for mode in (False, True)}
        self._act_eval = jax.jit(seeding.over_seeds(act_eval, strategy, jit=False, mesh=mesh))
        update_seeds = seeding.over_seeds(update_one, strategy, jit=False, mesh=mesh)

        def update_all(states, batch, steps, keys, totals, frames):
            if frames is not None:  # the batch holds frame slots: gather the frames from the device copy
                batch = {**{k: v for k, v in batch.items() if not k.endswith("_slots")},
                         "obs": frame_store.gather(frames, batch["obs_slots"]),
                         "next_obs": frame_store.gather(frames, batch["next_obs_slots"])}
            return update_seeds(states, batch, steps, keys, totals)

        self._update = jax.jit(update_all, donate_argnums=(0, 4))

    def act(self, obs: np.ndarray, eval_mode: bool, proprio: Optional[np.ndarray] = None) -> np.ndarray:
        """Actions (S, ...) of every seed for observations (S, ...), as a numpy array."""
        # numpy in, copied by the jitted call itself: an eager jnp.asarray per step cost ~5% of DrM's loop
        steps = np.full((self.num_seeds,), self.step, np.int32)
        proprio = None if proprio is None else np.asarray(proprio, np.float32)
        obs, steps, proprio = devices.put_seeds((np.asarray(obs), steps, proprio), self.mesh)
        return devices.to_host(self._act[eval_mode](self.states, obs, steps, self.loop_keys, proprio))

    def act_evaluation(self, obs: np.ndarray, proprio: Optional[np.ndarray], tick: int) -> np.ndarray:
        """Evaluation actions (S * E, ...) for the observations (S * E, ...) of E parallel episodes per seed."""
        n, width = self.num_seeds, self.eval_width
        steps = np.full((n,), self.step, np.int32)
        ticks = np.full((n,), tick, np.int32)
        obs = np.asarray(obs).reshape(n, width, *obs.shape[1:])
        proprio = None if proprio is None else np.asarray(proprio, np.float32).reshape(n, width, -1)
        obs, steps, proprio, ticks = devices.put_seeds((obs, steps, proprio, ticks), self.mesh)
        actions = devices.to_host(self._act_eval(self.states, obs, steps, self.loop_keys, proprio, ticks))
        return actions.reshape(n * width, *actions.shape[2:])

    def _proprio(self, info: dict) -> Optional[np.ndarray]:
        """info["proprio"] of every environment, (S, *proprio_shape), or None for envs without it."""
        if self.proprio_shape is None:
            return None
        if "proprio" not in info:
            raise RuntimeError(f"{self.cfg.task}: the environment has a proprio_space but its info has no "
                               f"'proprio' entry")
        return np.asarray(info["proprio"], np.float32)

    def store(self, seed_index: int, frame: np.ndarray, *args, first: bool = False, **kwargs) -> None:
        """Adds one step (or with first=True, an episode's first frame) to seed i's replay, and its frame
        to the device copy when there is one."""
        replay = self.replays[seed_index]
        if first:
            replay.add_first(frame, **kwargs)
        else:
            replay.add(frame, *args, **kwargs)
        if self.frames is not None:
            self.frames.record(seed_index, replay.newest_slot, frame)

    def update(self, totals):
        stacked = self.cfg.obs_type != "pixels"
        on_device = self.frames is not None
        if on_device:
            self.frames.flush()
        batch = [r.sample(g, self.cfg.batch_size, stacked=stacked, frame_slots=on_device)
                 for r, g in zip(self.replays, self.samplers)]
        batch = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
        indices = batch.pop("indices", None)  # prioritized replay: where the new priorities go
        batch = devices.put_batch(batch, self.mesh)  # (S, B, ...): seeds over "seed", rows over "data"
        steps = devices.put_seeds(np.full((self.num_seeds,), self.step, np.int32), self.mesh)
        frames = self.frames.array if on_device else None
        if totals is None:  # the metric names are known only after the first update
            shapes = jax.eval_shape(lambda: self._update(self.states, batch, steps, self.loop_keys, {}, frames)[1])
            totals = devices.put_seeds(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), self.mesh)
        self.states, totals, trace, priorities = self._update(self.states, batch, steps, self.loop_keys, totals,
                                                              frames)
        if trace:  # kept on the device until the next flush, so the update loop never waits for it
            self.trace.append((self.step, trace))
        if indices is not None:  # the next sample must see them: this waits for the update
            # (S, B), its rows spread over the "data" devices on a mesh: to_host gathers them in row order,
            # so row b is still the priority of indices[:, b]
            priorities = devices.to_host(priorities)
            if priorities.shape != indices.shape:
                raise RuntimeError(f"prioritized replay: the agent's update returned priorities of shape "
                                   f"{priorities.shape[1:]} per seed, expected one per transition {indices.shape[1:]}; "
                                   f"its metrics need a 'priorities' entry of shape (batch_size,)")
            for replay, idx, prio in zip(self.replays, indices, priorities):
                replay.update_priorities(idx, prio)
        return totals

    def flush_trace(self, logger: Logger) -> None:
        """Writes the traced metrics of the updates since the last flush to updates.csv (a row per update
        and seed) and the agent's events among them (agent.trace_events) to events.csv."""
        if not self.trace:
            return
        steps, traces = zip(*self.trace)
        self.trace = []
        traces = list(traces)  # one batched transfer in one process; gathered over processes otherwise
        traces = jax.device_get(traces) if jax.process_count() == 1 else devices.to_host(traces)
        events = getattr(self.agent, "trace_events", None)
        rows, event_rows = [], []
        for step, trace in zip(steps, traces):
            for i, seed in enumerate(self.cfg.seeds):
                row = {"seed": seed, "step": step, "frame": step * self.cfg.action_repeat,
                       **{k: float(v[i]) for k, v in trace.items()}}
                rows.append(row)
                if events is not None:
                    event_rows += [{"seed": seed, "step": step, "frame": row["frame"], **event} for event in events(row)]
        logger.updates.write_rows(rows)
        logger.events.write_rows(event_rows)

    # ----------------------------------------------------------------------------- checkpoints
    def _checkpoint_tree(self):
        replay_arrays = [{k: v for k, v in r.state_dict().items() if isinstance(v, np.ndarray)}
                         for r in self.replays]
        return {"agent": self.states, "replay": replay_arrays}

    def save(self) -> None:
        replay_scalars = [{k: v for k, v in r.state_dict().items() if not isinstance(v, np.ndarray)}
                          for r in self.replays]
        meta = {"step": self.step, "episode": self.episode.tolist(), "eval_count": self.eval_count,
                "last_eval": self.last_eval, "samplers": [g.bit_generator.state for g in self.samplers],
                "replay": replay_scalars}
        self.checkpointer.save(self.step, self._checkpoint_tree(), meta)

    def restore(self) -> int:
        tree, meta = self.checkpointer.restore(self._checkpoint_tree())
        self.states = devices.put_seeds(tree["agent"], self.mesh)
        for i, (replay, arrays, scalars) in enumerate(zip(self.replays, tree["replay"], meta["replay"])):
            replay.load_state_dict({**arrays, **scalars})
            if self.frames is not None:
                self.frames.upload(i, replay.state_dict()["frames"])
        for g, state in zip(self.samplers, meta["samplers"]):
            g.bit_generator.state = state
        self.step, self.eval_count, self.last_eval = meta["step"], meta["eval_count"], meta["last_eval"]
        self.episode = np.asarray(meta["episode"], np.int64)
        return self.step

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, logger: Logger) -> None:
        cfg, n = self.cfg, self.num_seeds
        if cfg.num_eval_episodes == 0:  # evaluation switched off (e.g. a throughput run): no NaN rows
            return
        width = self.eval_width  # episodes at once per seed: environment i * width + k plays seed i's

        def per_seed(values):  # (n * width,) per environment -> (n,) summed per seed
            return np.asarray(values, np.float64).reshape(n, width).sum(axis=1)

        totals, lengths, successes = np.zeros(n), np.zeros(n), np.zeros(n)
        has_success = False  # whether the env reports info["episode_success"]
        frames = [[] for _ in range(n)]
        tick = 0  # evaluation steps so far: each gets its own key
        for first in range(0, cfg.num_eval_episodes, width):
            playing = min(width, cfg.num_eval_episodes - first)  # the last round may use fewer environments
            ep_seeds = [episode_seed(s, EVAL_EPISODE, self.eval_count * cfg.num_eval_episodes + first + k)
                        for s in cfg.seeds for k in range(width)]
            obs, info = self.eval_envs.reset(seed=ep_seeds)
            proprio = self._proprio(info)
            done = np.tile(np.arange(width) >= playing, n)  # environments left out of this round: done
            record = cfg.save_video and first == 0
            while not done.all():
                if record:  # episode 0 of each seed
                    rendered = self.eval_envs.call("render", cfg.video_size)
                    for i in range(n):
                        frames[i].append(rendered[i * width])
                action = self.act_evaluation(obs, proprio, tick)
                tick += 1
                obs, reward, terminated, truncated, info = self.eval_envs.step(action)
                proprio = self._proprio(info)
                totals += per_seed(np.where(done, 0.0, reward))
                lengths += per_seed(~done)
                finished = (terminated | truncated) & ~done
                if "episode_success" in info:  # the official metric of the episode so far
                    has_success = True
                    successes += per_seed(np.where(finished, np.asarray(info["episode_success"], np.float64), 0.0))
                done |= finished
                ended = terminated | truncated  # also environments already done (their steps are ignored)
                if ended.any() and not done.all():
                    # The others go on; an ended environment must not be stepped again, so it restarts
                    # (its steps are ignored until the next evaluation round resets it with its seed).
                    obs, info = self.eval_envs.reset(options={"reset_mask": ended.copy()})
                    if proprio is not None:
                        proprio = _merge(ended, self._proprio(info), proprio)
        frame = self.step * cfg.action_repeat
        returns = totals / cfg.num_eval_episodes
        for i, seed in enumerate(cfg.seeds):
            row = {"seed": seed, "step": self.step, "frame": frame, "episode_reward": returns[i],
                   "episode_length": lengths[i] / cfg.num_eval_episodes}
            if has_success:
                row["success_rate"] = successes[i] / cfg.num_eval_episodes
            logger.log_eval({**row, "wall_time": time.time() - self.start_time})
            if frames[i]:
                write_mp4(os.path.join(self.run_dir, "videos", f"frame{frame:09d}_seed{seed}.mp4"), frames[i])
        self.eval_count += 1
        self.last_eval = float(returns.mean())

    # ----------------------------------------------------------------------------- training
    def train(self, resume: bool = False) -> dict:
        cfg, n = self.cfg, self.num_seeds
        if resume:
            self.restore()
        logger = Logger(self.run_dir, list(cfg.seeds), resume_step=self.step if resume else None,
                        resume_frame=self.step * cfg.action_repeat if resume else None)
        total_steps = cfg.num_train_frames // cfg.action_repeat
        seed_steps = cfg.num_seed_frames // cfg.action_repeat
        eval_every = max(cfg.eval_every_frames // cfg.action_repeat, 1)
        ckpt_every = max(cfg.checkpoint_every_frames // cfg.action_repeat, 1)
        next_ckpt = (self.step // ckpt_every + 1) * ckpt_every
        overlap = hasattr(self.train_envs, "step_async")

        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.num_train_frames, initial=self.step * cfg.action_repeat, unit="frame",
                       unit_scale=True, dynamic_ncols=True, mininterval=1.0,
                       desc=f"{cfg.task} x{n} seed{'s' if n > 1 else ''}")

        need_reset = np.ones(n, bool)
        obs = proprio = None
        ep_reward, ep_length = np.zeros(n), np.zeros(n, np.int64)
        totals, num_updates = None, 0
        self.start_time = episode_start = time.time()
        episode_start_step = self.step
        try:
            while self.step < total_steps:
                if need_reset.any():
                    if need_reset.all() and self.step >= next_ckpt:
                        self.save()
                        next_ckpt += ckpt_every
                    ep_seeds = [episode_seed(s, TRAIN_EPISODE, int(e)) for s, e in zip(cfg.seeds, self.episode)]
                    new_obs, info = self.train_envs.reset(seed=ep_seeds, options={"reset_mask": need_reset.copy()})
                    obs, proprio = _merge(need_reset, new_obs, obs), self._merged_proprio(need_reset, info, proprio)
                    for i in np.flatnonzero(need_reset):
                        self.store(i, newest_frame(obs[i], cfg.obs_type, self.frame_channels), first=True,
                                   proprio=None if proprio is None else proprio[i])
                    if self.double_reset:
                        obs, proprio = self._second_reset(need_reset & (self.episode > 0), obs, proprio)
                    need_reset[:] = False

                if self.step % eval_every == 0:
                    self.evaluate(logger)
                    if bar is not None:
                        bar.set_postfix(eval_return=f"{self.last_eval:.1f}", refresh=False)

                action = np.asarray(self.act(obs, eval_mode=False, proprio=proprio))
                if overlap:  # the subprocesses simulate while the update runs
                    self.train_envs.step_async(action)
                if self.step >= seed_steps and self.step % cfg.update_every_steps == 0:
                    totals = self.update(totals)
                    num_updates += 1
                if overlap:
                    obs, reward, terminated, truncated, info = self.train_envs.step_wait()
                else:
                    obs, reward, terminated, truncated, info = self.train_envs.step(action)
                discount = np.asarray(info.get("discount", 1.0 - terminated.astype(np.float64)))
                discount = np.broadcast_to(discount, (n,))
                proprio = self._proprio(info)
                stored_reward = reward if cfg.reward_clip is None else np.clip(reward, -cfg.reward_clip, cfg.reward_clip)
                for i in range(n):
                    self.store(i, newest_frame(obs[i], cfg.obs_type, self.frame_channels), action[i],
                               stored_reward[i], discount[i], bool(terminated[i]), bool(truncated[i]),
                               proprio=None if proprio is None else proprio[i])
                ep_reward += reward
                ep_length += 1
                self.step += 1
                if bar is not None:
                    bar.update(cfg.action_repeat)

                need_reset = np.asarray(terminated | truncated, bool)
                if need_reset.any():
                    now = time.time()
                    fps = (self.step - episode_start_step) * cfg.action_repeat / max(now - episode_start, 1e-9)
                    means = {}
                    if totals is not None and num_updates:
                        means = jax.tree.map(lambda x: x / num_updates, devices.to_host(totals))
                        totals, num_updates = devices.put_seeds(jax.tree.map(jnp.zeros_like, totals), self.mesh), 0
                        check_finite(means, cfg.seeds, self.step, self.checkpointer.latest_step())
                    self.flush_trace(logger)
                    for i in np.flatnonzero(need_reset):
                        self.episode[i] += 1
                        row = {"seed": cfg.seeds[i], "step": self.step, "frame": self.step * cfg.action_repeat,
                               "episode": int(self.episode[i]), "episode_reward": ep_reward[i],
                               "episode_length": int(ep_length[i]), "fps": fps,
                               "buffer_size": len(self.replays[i])}
                        if "episode_success" in info:  # the official metric of the episode that ended
                            row["episode_success"] = float(info["episode_success"][i])
                        if "game_return" in info and info.get("_game_return", np.ones(n, bool))[i]:
                            # Atari with life-loss terminals: an episode is a life; the game's score
                            row["game_return"] = float(info["game_return"][i])
                        row.update({k: float(v[i]) for k, v in means.items()})
                        logger.log_train(row)
                    ep_reward[need_reset], ep_length[need_reset] = 0.0, 0
                    episode_start, episode_start_step = now, self.step
            if need_reset.all():
                self.save()
        finally:
            self.flush_trace(logger)
            if bar is not None:
                bar.close()
            logger.close()
        return {"step": self.step, "last_eval": self.last_eval}

    def _merged_proprio(self, mask: np.ndarray, info: dict, old: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """After a masked reset: the reset environments' info["proprio"], the others' `old` value."""
        new = self._proprio(info)
        return None if new is None else _merge(mask, new, old)

    def _second_reset(self, mask: np.ndarray, obs: np.ndarray, proprio):
        """DrM's Meta-World double reset (spec §2.7): the environments in `mask`, just reset, are reset
        again (no seed: the goal comes from the generator the first reset seeded, so it is reproducible);
        the replay stores it as a step with a zero action, reward 0 and discount 1 whose frame restarts
        the stack, as the official replay stores its second reset time step. Returns (obs, proprio)."""
        if not mask.any():
            return obs, proprio
        new_obs, info = self.train_envs.reset(options={"reset_mask": mask.copy()})
        obs, proprio = _merge(mask, new_obs, obs), self._merged_proprio(mask, info, proprio)
        zero_action = np.zeros(self.replays[0].action_shape, np.float32)
        for i in np.flatnonzero(mask):
            self.store(i, newest_frame(obs[i], self.cfg.obs_type, self.frame_channels), zero_action,
                       0.0, 1.0, False, False, proprio=None if proprio is None else proprio[i], restart_stack=True)
        return obs, proprio

    def close(self) -> None:
        for env in (self.train_envs, self.eval_envs):
            env.close()
        self.checkpointer.close()
