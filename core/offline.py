"""The offline loop (TD3+BC, PRDC, and either with HUBL): the dataset on the device, updates in jitted
chunks, evaluation on the host.

    python experiments/td3bc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.seeds=0,1,2
    python experiments/prdc.py --config.task=Hopper-v5 --config.dataset=pixax/hopper/medium-v0 --config.hubl=rank

One run:
    Minari dataset (data/datasets.py: checked for missing / corrupt files, NaNs, shapes that do not fit
    the task) -> state normalization statistics (when the agent normalizes) -> HUBL relabeling of
    rewards and per-sample discounts (data/hubl.py, `--config.hubl`) -> device arrays
    -> repeat: `agent.update_many` (a lax.scan of sampled updates, all seeds in one jitted program)
       for `updates_per_call` updates -> every `eval_every_updates`, evaluate every seed on the task's
       environment and log the normalized score (the dataset's own random / expert reference returns)
       -> checkpoint.

Devices (core/devices.py, `--config.devices`): seeds spread over the mesh's "seed" devices, each seed's
sampled minibatch split over its "data" devices (td3bc.sample_batch lays it out; XLA averages the
gradients), the dataset and PRDC's index replicated on every device. Several processes
(`--config.coordinator`, or a SLURM job step): one run, one mesh over every process's devices; every
process trains and evaluates, process 0 writes the logs, orbax writes the checkpoints together.

The agent module provides `Config` (with `discount`, `num_updates`, `eval_every_updates`,
`num_eval_episodes`), `config_for_task(dataset, **overrides)` (per dataset family),
`dataset_arrays(...)` (state normalization, reward transform), `create(key, obs_dim, action_dim,
config, obs_mean, obs_std)`, `act(state, obs)` and `update_many(state, data, key, num_updates)`
(PRDC: also `build_constraint(data, config)`, passed as `update_many(state, data, constraint, key, n)`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from ml_collections import config_dict

import envs
from core import devices, launch
from core import logging as runlog
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.logging import Logger
from core.offpolicy import EVAL_EPISODE, episode_seed
from data import datasets, hubl

HUBL_DESIGNS = ("none", "constant", "rank")


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    task: str  # the environment evaluated on, e.g. "Hopper-v5"
    dataset: str  # a Minari dataset id (under dataset_root) or a dataset folder
    seeds: tuple[int, ...]
    num_updates: int
    updates_per_call: int  # updates per jitted call (a lax.scan); evaluations fall on call boundaries
    eval_every_updates: int
    num_eval_episodes: int
    checkpoint_every_updates: int
    discount: float
    hubl: str = "none"  # none | constant | rank: HUBL's blending factor design (spec §6.2)
    hubl_alpha: float = 0.1
    dataset_root: str | None = None  # where local Minari datasets live (default: MINARI_DATASETS_PATH)
    seed_strategy: str = "auto"  # unroll on the CPU, vmap on accelerators (dense-only agents; core/seeds.py)
    progress: bool = True
    devices: str = "auto"  # auto | N | SxD: the (seed, data) device mesh (core/devices.py)


def task_shapes(task: str) -> tuple[tuple, int]:
    """(observation shape, action dimension) of a state-based task."""
    probe = envs.make(task, obs_type="states")
    shapes = tuple(probe.observation_space.shape), int(np.prod(probe.action_space.shape))
    probe.close()
    return shapes


def prepare_data(agent, agent_config, cfg: OfflineConfig, obs_shape: tuple, action_dim: int, dataset=None):
    """Loads and checks the dataset, relabels it with HUBL if asked, and returns (device arrays in the
    agent's batch layout, obs_mean, obs_std, dataset). The agent normalizes states and transforms
    rewards (`agent.dataset_arrays`), so its act and its updates use the same statistics."""
    if dataset is None:
        dataset = datasets.load_dataset(cfg.dataset, root=cfg.dataset_root)
    datasets.check_shapes(dataset, obs_shape, action_dim)
    rewards, discounts = dataset.rewards, None
    if cfg.hubl != "none":
        rewards, discounts, _ = hubl.relabel_dataset(dataset, gamma=cfg.discount, design=cfg.hubl,
                                                     alpha=cfg.hubl_alpha)
    arrays, mean, std = agent.dataset_arrays(dataset.observations, dataset.actions, rewards,
                                             dataset.next_observations, dataset.terminals, agent_config, discounts)
    return jax.device_put(arrays), mean, std, dataset


def plan_devices(spec: str, num_seeds: int, agent_config) -> devices.Layout:
    """The (seed, data) layout of `--config.devices` for this agent (devices.plan's errors, with the numbers).
    PRDC's KD-tree runs on the host through a callback, which a mesh with an automatic data axis cannot run."""
    layout = devices.plan(spec, num_seeds, agent_config.batch_size)
    if layout.size > 1 and getattr(agent_config, "nn_backend", None) == "kdtree":
        raise ValueError(f"--config.agent.nn_backend='kdtree' (a host callback) cannot run on a device mesh "
                         f"(--config.devices={spec!r} gives {layout}); use nn_backend='brute_force' or "
                         f"--config.devices=1")
    return layout


class OfflineTrainer:
    """Trains one offline agent module on S seeds of one dataset."""

    def __init__(self, agent, agent_config, cfg: OfflineConfig, run_dir: str, dataset=None):
        self.agent, self.agent_config, self.cfg, self.run_dir = agent, agent_config, cfg, run_dir
        self.layout = plan_devices(cfg.devices, len(cfg.seeds), agent_config)  # bad values stop here
        self.mesh = devices.make_mesh(self.layout)  # None on one device: the plain programs
        obs_shape, action_dim = task_shapes(cfg.task)
        self.data, mean, std, dataset = prepare_data(agent, agent_config, cfg, obs_shape, action_dim, dataset)
        # PRDC: the nearest-neighbour index over the dataset's (beta * state, action) keys, built once
        self.constraint = agent.build_constraint(self.data, agent_config) if hasattr(agent, "build_constraint") else None
        # Every device holds the whole dataset (and index): each samples its seed's batch rows from it.
        self.data, self.constraint = devices.put_replicated((self.data, self.constraint), self.mesh)
        self.random_return, self.expert_return = datasets.reference_returns(dataset)
        keys = [jax.random.split(jax.random.PRNGKey(seed)) for seed in cfg.seeds]
        self.loop_keys = devices.put_seeds(jnp.stack([k[1] for k in keys]), self.mesh)
        self.states = devices.put_seeds(seeding.stack([
            agent.create(k[0], int(obs_shape[0]), action_dim, agent_config, mean, std) for k in keys]), self.mesh)
        chunk = cfg.updates_per_call
        strategy = seeding.resolve_strategy(cfg.seed_strategy, dense=True)
        mesh = self.mesh

        def update_chunk(states, keys, data, constraint):
            # The dataset (and index) are shared by the seeds: jit arguments, closed over by the per-seed
            # function (not mapped over seeds, not constants folded into the program).
            def one_seed(state, key):
                shared_data, shared_constraint = devices.replicated_in_program((data, constraint))
                if constraint is None:
                    return agent.update_many(state, shared_data, key, chunk)
                return agent.update_many(state, shared_data, shared_constraint, key, chunk)
            return seeding.over_seeds(one_seed, strategy, jit=False, mesh=mesh)(states, keys)

        self._update = jax.jit(update_chunk, donate_argnums=(0,))
        # Evaluation runs all of a seed's episodes at once: (S, E) observations, one act call per step, and
        # S * E environments stepped in this process (a MuJoCo state step is ~50 us, less than a round
        # trip to a subprocess).
        self._act = jax.jit(seeding.over_seeds(agent.act, strategy, jit=False, mesh=mesh))
        self.eval_envs = envs.make_vector(cfg.task, [s for s in cfg.seeds for _ in range(cfg.num_eval_episodes)],
                                          obs_type="states", asynchronous=False)
        self.checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
        self.step, self.eval_count = 0, 0  # updates done; evaluations done
        self.last_score = float("nan")

    # ------------------------------------------------------------------------------------- evaluation
    def evaluate(self, logger: Logger) -> None:
        cfg, n, episodes = self.cfg, len(self.cfg.seeds), self.cfg.num_eval_episodes
        # Environment i * E + e plays episode e of seed i, with the seed it had when episodes ran one by one.
        first = self.eval_count * episodes
        obs, _ = self.eval_envs.reset(seed=[episode_seed(s, EVAL_EPISODE, first + e) for s in cfg.seeds
                                            for e in range(episodes)])
        totals, done = np.zeros(n * episodes), np.zeros(n * episodes, bool)
        while not done.all():
            obs = devices.put_seeds(np.asarray(obs, np.float32).reshape(n, episodes, -1), self.mesh)
            action = devices.to_host(self._act(self.states, obs)).reshape(n * episodes, -1)
            obs, reward, terminated, truncated, _ = self.eval_envs.step(action)
            totals += np.where(done, 0.0, reward)
            done |= terminated | truncated
            ended = terminated | truncated  # also those already done, whose steps are ignored
            if ended.any() and not done.all():  # an ended environment must not be stepped again
                obs, _ = self.eval_envs.reset(options={"reset_mask": ended.copy()})
        returns = totals.reshape(n, episodes).mean(axis=1)
        scores = datasets.normalized_score(returns, self.random_return, self.expert_return)
        for seed, ret, score in zip(cfg.seeds, returns, scores):
            logger.log_eval({"seed": seed, "step": self.step, "frame": self.step, "episode_reward": float(ret),
                             "normalized_score": float(score), "wall_time": time.time() - self.start_time})
        self.eval_count += 1
        self.last_score = float(np.mean(scores))

    # ------------------------------------------------------------------------------------- training
    def save(self) -> None:
        if self.checkpointer.latest_step() == self.step:  # a resumed run starts at its checkpoint's step
            return
        self.checkpointer.save(self.step, {"agent": self.states, "keys": self.loop_keys},
                               {"step": self.step, "eval_count": self.eval_count, "last_score": self.last_score})

    def restore(self) -> None:
        tree, meta = self.checkpointer.restore({"agent": self.states, "keys": self.loop_keys})
        if self.mesh is not None:  # through the host: put_seeds takes whole values on every process
            tree = devices.put_seeds(devices.to_host(tree), self.mesh)
        self.states, self.loop_keys = tree["agent"], tree["keys"]
        self.step, self.eval_count, self.last_score = meta["step"], meta["eval_count"], meta["last_score"]

    def train(self, resume: bool = False) -> dict:
        cfg = self.cfg
        if resume:
            self.restore()
        logger = Logger(self.run_dir, list(cfg.seeds), resume_step=self.step if resume else None,
                        resume_frame=self.step if resume else None)
        bar = None
        if cfg.progress and runlog.is_main_process():
            from tqdm import tqdm

            bar = tqdm(total=cfg.num_updates, initial=self.step, unit="update", unit_scale=True, dynamic_ncols=True,
                       desc=f"{cfg.task} x{len(cfg.seeds)}")
        self.start_time = time.time()
        try:
            while True:
                # A checkpoint at update t is taken before the evaluation at t (the Logger's resume rule).
                if self.step > 0 and (self.step % cfg.checkpoint_every_updates == 0 or self.step >= cfg.num_updates):
                    self.save()
                if self.step % cfg.eval_every_updates == 0 and (self.step // cfg.eval_every_updates) >= self.eval_count:
                    self.evaluate(logger)
                    if bar is not None:
                        bar.set_postfix(normalized_score=f"{self.last_score:.1f}", refresh=False)
                if self.step >= cfg.num_updates:
                    break
                start = time.time()
                # fold_in(key, step): a resumed run draws exactly the keys of an uninterrupted one
                keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.loop_keys, self.step)
                self.states, metrics = self._update(self.states, keys, self.data, self.constraint)
                metrics = devices.to_host(metrics)
                self.step += cfg.updates_per_call
                check_finite(metrics, cfg.seeds, self.step, self.checkpointer.latest_step())
                rate = cfg.updates_per_call / max(time.time() - start, 1e-9)
                for i, seed in enumerate(cfg.seeds):
                    logger.log_train({"seed": seed, "step": self.step, "frame": self.step, "updates_per_s": rate,
                                      **{k: float(v[i]) for k, v in metrics.items()}})
                if bar is not None:
                    bar.update(cfg.updates_per_call)
        finally:
            if bar is not None:
                bar.close()
            logger.close()
        return {"step": self.step, "last_score": self.last_score}

    def close(self) -> None:
        self.eval_envs.close()
        self.checkpointer.close()


def check_finite(metrics: dict, seeds, step: int, checkpoint_step) -> None:
    for name, values in metrics.items():
        values = np.asarray(values)
        if not np.all(np.isfinite(values)):
            resume = (f"the last checkpoint (update {checkpoint_step}) is intact" if checkpoint_step is not None
                      else "no checkpoint was written yet")
            bad = [s for s, v in zip(seeds, values) if not np.isfinite(v)]
            raise FloatingPointError(f"{name} is not finite for seed(s) {bad} in the updates before update {step}; "
                                     f"{resume}")


# ----------------------------------------------------------------------------------------- launcher

def base_config(agent_config_cls, task: str, dataset: str) -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.task = task  # the environment evaluated on
    c.dataset = dataset  # Minari dataset id (under --config.dataset_root) or a dataset folder
    c.dataset_root = ""  # "" = MINARI_DATASETS_PATH (or minari's default)
    c.seeds = "0"
    c.hubl = "none"  # none | constant | rank (HUBL relabeling, data/hubl.py)
    c.hubl_alpha = 0.1
    c.root = "runs"
    c.updates_per_call = 1000
    c.checkpoint_every_updates = 100_000
    c.seed_strategy = "auto"  # auto | vmap | map | unroll (core/seeds.py); auto: unroll on the CPU, vmap elsewhere
    c.progress = True
    launch.add_device_flags(c)  # devices, coordinator, num_processes, process_id
    c.agent = launch.unset_agent_fields(agent_config_cls)
    return c


def resolve(agent_module, config: config_dict.ConfigDict):
    if config.task not in envs.TASKS:
        raise ValueError(f"--config.task={config.task!r} is not a known task; valid state-based tasks include "
                         f"{', '.join(t for t in envs.TASKS if t.endswith('-v5'))}")
    seeds = launch.parse_seeds(config.seeds)
    if config.hubl not in HUBL_DESIGNS:
        raise ValueError(f"--config.hubl={config.hubl!r} is not valid; choose one of {', '.join(HUBL_DESIGNS)}")
    if not 0.0 <= config.hubl_alpha <= 1.0:
        raise ValueError(f"--config.hubl_alpha={config.hubl_alpha!r}: expected a number in [0, 1]")
    if config.seed_strategy not in seeding.STRATEGIES:
        raise ValueError(f"--config.seed_strategy={config.seed_strategy!r} is not valid; choose one of "
                         f"{', '.join(seeding.STRATEGIES)}")
    for name in ("updates_per_call", "checkpoint_every_updates"):
        if not isinstance(config[name], int) or config[name] < 1:
            raise ValueError(f"--config.{name}={config[name]!r}: expected a positive integer")
    overrides = {k: v for k, v in config.agent.items() if v is not None}
    a = agent_module.config_for_task(config.dataset, **overrides)
    chunk = config.updates_per_call
    for name in ("num_updates", "eval_every_updates"):
        if getattr(a, name) % chunk:
            raise ValueError(f"--config.agent.{name}={getattr(a, name)} must be a multiple of "
                             f"--config.updates_per_call={chunk} (evaluations fall between jitted chunks)")
    plan_devices(str(config.get("devices", "auto")), len(seeds), a)  # stops a bad layout before a run directory
    loop = OfflineConfig(task=config.task, dataset=config.dataset, seeds=seeds, num_updates=a.num_updates,
                         updates_per_call=chunk, eval_every_updates=a.eval_every_updates,
                         num_eval_episodes=a.num_eval_episodes,
                         checkpoint_every_updates=config.checkpoint_every_updates, discount=a.discount,
                         hubl=config.hubl, hubl_alpha=config.hubl_alpha,
                         dataset_root=config.dataset_root or None, seed_strategy=config.seed_strategy,
                         progress=bool(config.progress), devices=str(config.get("devices", "auto")))
    return a, loop


def run(agent_module, agent_name: str, config: config_dict.ConfigDict, resume: str = "") -> dict:
    """Trains (or resumes) one offline run; bad input stops here, before any work, with a message."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:  # first: jax.distributed must join before any JAX computation
        devices.initialize(config.coordinator, config.num_processes, config.process_id)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"pixax: {e}")
    try:
        if resume:
            run_dir = runlog.check_run_dir(resume)
            saved = runlog.read_config(run_dir)
            if saved.get("agent") != agent_name:
                raise ValueError(f"--resume={resume!r} is a run of agent {saved.get('agent')!r}, not {agent_name!r}")
            config = config_dict.ConfigDict(saved["launcher"])
        agent_config, loop = resolve(agent_module, config)
        dataset = datasets.load_dataset(loop.dataset, root=loop.dataset_root)  # a bad dataset stops here,
        datasets.check_shapes(dataset, *task_shapes(loop.task))  # and so does one that does not fit the task
        if not resume:
            run_dir = runlog.new_run_dir(config.root, agent_name, config.task)
        trainer = OfflineTrainer(agent_module, agent_config, loop, run_dir, dataset)
        if not resume:
            runlog.write_config(run_dir, {
                "agent": agent_name, "task": config.task, "dataset": config.dataset, "launcher": config.to_dict(),
                "agent_config": dataclasses.asdict(agent_config), "loop": dataclasses.asdict(loop),
                "versions": launch.versions(), "command": " ".join(sys.argv)})
    except (ValueError, FileNotFoundError) as e:  # datasets.DatasetError is a ValueError
        sys.exit(f"pixax: {e}")
    main_process = runlog.is_main_process()
    if main_process:
        print(f"pixax: {agent_name} on {loop.dataset} ({loop.task}), seeds {list(loop.seeds)}, {loop.num_updates:,} "
              f"updates on devices {trainer.layout} (seed x data) -> {run_dir}", file=sys.stderr)
    try:
        summary = trainer.train(resume=bool(resume))
    finally:
        trainer.close()
    summary["run_dir"] = run_dir
    if main_process:
        print(f"pixax: done at {summary['step']:,} updates; last normalized score {summary['last_score']:.1f} "
              f"(mean over seeds); results in {run_dir}", file=sys.stderr)
    return summary


def main(agent_module, agent_name: str, task: str, dataset: str) -> None:
    """The command line of an offline launcher: `--config.*` flags and `--resume`."""
    launch.command_line(base_config(agent_module.Config, task, dataset),
                        lambda config, resume: run(agent_module, agent_name, config, resume=resume))
