"""Benchmark (not a test): TD-MPC training speed (environment steps/s INCLUDING planning and updates) of
pixax against the official TD-MPC code, on the same task with the same settings, side by side in one command.

    python scripts/benchmark_tdmpc.py --official-dir /work/scratch/tdmpc_official \
        --python /work/scratch/torchenv/bin/python                       # cartpole_swingup, 1 timed episode
    python scripts/benchmark_tdmpc.py --official-dir DIR --python PY --task walker_walk --episodes 2
    python scripts/benchmark_tdmpc.py --skip-official                   # pixax only
    python scripts/benchmark_tdmpc.py --official-dir DIR --python PY --device cuda   # a GPU machine

--official-dir: a folder holding `src/` and `cfgs/` of nicklashansen/tdmpc (spec
model-offline-onpolicy-agents.md §2; measured at f4d85ec; e.g. `git -C MIRROR archive HEAD src cfgs | tar -x
-C DIR`), kept OUTSIDE this repository. --python: an interpreter with torch, omegaconf, numpy, gymnasium,
dm_control and dm_env. Nothing of the official code is in this file: the official side is a small pixax
driver (OFFICIAL_DRIVER below), run by --python in a scratch folder, that imports the official modules `cfg`
(parse_cfg), `env` (make_env), `algorithm.tdmpc` (TDMPC) and `algorithm.helper` (Episode, ReplayBuffer) and
runs the body of the official train.py loop with them. train.py itself is not imported (it needs pandas and
termcolor for its logger, asserts CUDA, and evaluates 10 episodes at step 0).

Settings (both sides): the official state defaults of the task, read on the official side by its own
parse_cfg (`task=<domain>-<task> modality=state seed=<seed>`) and on the pixax side by
agents/tdmpc.config_for_task; the script compares the two (planner: 6 iterations, 512 samples + 25 policy
trajectories, 64 elites, H 5; learner: batch 512, lr 1e-3, PER; model: mlp 512, enc 256, latent 50; action
repeat from the domain: cartpole 8, walker 2, default 4; episode length, replay capacity, seed steps) and
stops if any differs. pixax clamps the executed action to [-1, 1] (clip_final_action=True, spec §10 #8);
the official code does not (a clamp of A numbers per step).

What runs on each side (one seed, one environment):
  1. seed phase (untimed): --seed-episodes episodes of uniform random actions (planned at step 0 <
     seed_steps), each added to the replay (capacity min(train_steps, 1e6) agent steps on both sides, never
     full here, so both sample with replacement);
  2. warm-up (untimed): pixax compiles its L-update program (EpisodicTrainer.run_updates(L)'s jitted scan,
     compiled ahead of time without running it, see precompile_updates) and its horizon-H planner (two plan
     calls); the official side makes two plan calls and WARMUP_UPDATES update calls (torch's first calls);
  3. timed: --episodes episodes of the loop body at agent steps S, S + L, ... (L = episode length in agent
     steps, 125 for cartpole), where S is the first multiple of L at which horizon_schedule gives the full
     horizon H (25000: the schedule is linear(1, 5, 25000)), so both plan with H = 5 and std floor 0.05, as
     in most of a run. One episode = collect (plan every step -> env.step), add it to the replay, then L
     updates with update step counter S + i.
     pixax: core/episodic.EpisodicTrainer's own collect (its plan: one jitted call per step), its jitted
     add, run_updates(L) (sample -> update -> priority write-back, one lax.scan) and jax.device_get of the
     metrics, as EpisodicTrainer.train does. Official: train.py's loop body (Episode, agent.plan,
     env.step(action.cpu().numpy()), `episode += ...`, `buffer += episode`, agent.update(buffer, step + i)
     L times). Logging, evaluation and checkpoints are left out on both sides.
Interleaving: the machine is shared, so its load drifts between minutes; the two sides' phases alternate
(pixax collects an episode, the official process collects one, pixax runs its update round, the official
one runs its own, next episode), each timed alone while the other side waits, so a load change hits both.
Split: "plan" = time inside plan (pixax: until the action is ready; official: plan returns a tensor,
synchronized on CUDA), "update" = the update round per update (pixax: run_updates + device_get; official:
the L update() calls, each of which reads its losses with .item()), "env" = inside the environment's step,
"other" = the rest of a collected episode (episode bookkeeping, adding it to the replay). Rates are per
agent step (one decision, one plan, one update) and per frame (simulator step = agent step x action repeat).
pixax's compile time inside the timed window is measured with jax.monitoring and printed (it should be 0).

--device: where BOTH sides run. "cpu" (default): torch on the CPU, with the shims below, and JAX on its
CPU backend. "cuda": the official code as it is written (no device shims), and JAX must have a GPU.

Compatibility shims (official side, in OFFICIAL_DRIVER; the official files are not edited):
  1. `gym` (env.py imports it; the pinned gym 0.21 does not install on Python 3.11): a stand-in module
     with exactly what env.py uses: gym.spaces (= gymnasium.spaces: Box), gym.Wrapper (keeps `env`,
     forwards reset and attribute reads, as gym 0.21's Wrapper did for these calls) and gym.logger;
  2. only with --device cpu: nn.Module.cuda and Tensor.cuda return the object unchanged (the official
     code calls TOLD(cfg).cuda() and, in ReplayBuffer.sample, .cuda() on CPU tensors), cfg.device = "cpu"
     (parse_cfg sets "cuda" for states: where Episode and ReplayBuffer keep their tensors), and
     agent.device = torch.device("cpu") after TDMPC(cfg) (its constructor hard-codes torch.device("cuda"),
     where plan creates its tensors).

Threads: the official side runs once per --torch-threads value (torch.set_num_threads; default 1). On the
2-core development machine under load (~7) torch with 2 threads was ~13x SLOWER than with 1 (plan 4.7 s vs
0.37 s, update 7.1 s vs 0.52 s), so 2 would make a default run take half an hour. XLA uses its own thread
pool (all CPUs); set XLA_FLAGS before the command to change it (the header prints it and the load).
Numbers on a shared machine are noisy: compare the ratio of one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from scripts import tables  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

DEVICES = ("cpu", "cuda")
WARMUP_UPDATES = 2  # untimed official update() calls before the timed window (first-call allocations)
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
# Official cfg keys -> pixax Config fields that must agree (compare_configs also checks episode length,
# replay capacity and seed steps).
SAME_SETTINGS = {
    "iterations": "iterations", "num_samples": "num_samples", "num_elites": "num_elites",
    "mixture_coef": "mixture_coef", "min_std": "min_std", "temperature": "temperature", "momentum": "momentum",
    "horizon": "horizon", "batch_size": "batch_size", "lr": "lr", "discount": "discount", "rho": "rho",
    "tau": "tau", "update_freq": "update_freq", "per_alpha": "per_alpha", "per_beta": "per_beta",
    "grad_clip_norm": "grad_clip_norm", "consistency_coef": "consistency_coef", "reward_coef": "reward_coef",
    "value_coef": "value_coef", "enc_dim": "enc_dim", "mlp_dim": "mlp_dim", "latent_dim": "latent_dim",
    "action_repeat": "action_repeat", "std_schedule": "std_schedule", "horizon_schedule": "horizon_schedule",
}

# The official side: pixax's own driver, run by --python in a scratch folder. It installs the shims of the
# module docstring, builds the official config, environment, agent and replay, runs the seed phase and the
# warm-up, then answers the parent's commands one JSON line each on its stdout ("collect STEP": one episode
# of the train.py loop body, added to the buffer; "update STEP": its L updates; "finish": last facts).
# DRIVER_START and DRIVER_COMMANDS are shared with scripts/benchmark_modem.py (MoDem is built on this code):
# DRIVER_START reads params (official_dir, code_folder: where the official modules are under it, device,
# torch_threads), installs the shims and defines check_official, synchronize, time_env_steps, answer and
# torch_facts; DRIVER_COMMANDS answers the commands with the driver's collect, update_round(step, n) and
# timed_updates (the updates of one "update" command).
DRIVER_START = r'''
import json, os, pathlib, random, sys, time, types
os.environ["MKL_SERVICE_FORCE_INTEL"] = "1"  # as train.py
os.environ.setdefault("MUJOCO_GL", "egl")
answers = os.fdopen(os.dup(1), "w")  # the protocol; anything the official code prints goes to stderr
os.dup2(2, 1)
import numpy as np

params = json.load(open(sys.argv[1]))
official_dir = os.path.realpath(params["official_dir"])
sys.path.insert(0, os.path.join(official_dir, params["code_folder"]))
import torch

torch.set_num_threads(params["torch_threads"])
device = params["device"]
shims = []

# 1. gym stand-in: what env.py uses of gym (spaces.Box, Wrapper, logger)
import gymnasium

gym = types.ModuleType("gym")
gym.spaces = gymnasium.spaces


class Wrapper:
    def __init__(self, env):
        self.env = env

    def reset(self, **kwargs):
        return self.env.reset(**kwargs)

    def __getattr__(self, name):
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


gym.Wrapper = Wrapper
gym.logger = types.SimpleNamespace(set_level=lambda level: None)
sys.modules["gym"] = gym
shims.append("gym stand-in (spaces, Wrapper, logger)")

# 2. CPU: the official code's .cuda() calls become no-ops
if device == "cpu":
    torch.nn.Module.cuda = lambda self, device=None: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    shims.append("Module.cuda / Tensor.cuda no-ops")
elif not torch.cuda.is_available():
    raise SystemExit(f"--device cuda, but torch {torch.__version__} sees no CUDA device")


def check_official(names):
    for name in names:
        where = os.path.realpath(sys.modules[name].__file__)
        if not where.startswith(official_dir + os.sep):
            raise SystemExit(f"module {name} came from {where}, not from --official-dir {official_dir}")


def synchronize():
    if device == "cuda":
        torch.cuda.synchronize()


timers = {"plan": 0.0, "env": 0.0}


def time_env_steps(env):
    env_step = env.step

    def timed_env_step(action):
        start = time.perf_counter()
        out = env_step(action)
        timers["env"] += time.perf_counter() - start
        return out

    env.step = timed_env_step  # an instance attribute shadows the method


def answer(record):
    answers.write(json.dumps(record) + "\n")
    answers.flush()


def torch_facts(agent):
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "device": str(agent.device),
            "model_device": str(next(agent.model.parameters()).device)}
'''

DRIVER_COMMANDS = r'''
for line in sys.stdin:
    command, *argument = line.split()
    if command == "collect":
        answer(collect(int(argument[0])))
    elif command == "update":
        answer(update_round(int(argument[0]), timed_updates))
    elif command == "finish":
        answer({"last_metrics": metrics, "std_floor": float(agent.std)})
        break
    else:
        raise SystemExit(f"unknown command {line!r}")
'''

OFFICIAL_DRIVER = DRIVER_START + r'''
from cfg import parse_cfg
from env import make_env
from algorithm.tdmpc import TDMPC
import algorithm.helper as h
from algorithm.helper import Episode, ReplayBuffer

check_official(("cfg", "env", "algorithm.tdmpc", "algorithm.helper"))

sys.argv = ["train.py", f"task={params['task']}", "modality=state", f"seed={params['seed']}"]
cfg = parse_cfg(pathlib.Path(official_dir) / "cfgs")
if device == "cpu":
    cfg.device = "cpu"
    shims.append("cfg.device = cpu")

# train.py set_seed
random.seed(cfg.seed)
np.random.seed(cfg.seed)
torch.manual_seed(cfg.seed)
if device == "cuda":
    torch.cuda.manual_seed_all(cfg.seed)

env, agent, buffer = make_env(cfg), TDMPC(cfg), ReplayBuffer(cfg)
if device == "cpu":
    agent.device = torch.device("cpu")
    shims.append("agent.device = cpu")
time_env_steps(env)


def collect(step):
    """train.py: collect one trajectory, planning with the agent step of the episode's start; add it."""
    global buffer
    timers["plan"] = timers["env"] = 0.0
    start = time.perf_counter()
    obs = env.reset()
    episode = Episode(cfg, obs)
    while not episode.done:
        plan_start = time.perf_counter()
        action = agent.plan(obs, step=step, t0=episode.first)
        synchronize()
        timers["plan"] += time.perf_counter() - plan_start
        obs, reward, done, _ = env.step(action.cpu().numpy())
        episode += (obs, action, reward, done)
    assert len(episode) == cfg.episode_length
    buffer += episode
    synchronize()
    return {"seconds": time.perf_counter() - start, "plan_seconds": timers["plan"], "env_seconds": timers["env"],
            "agent_steps": len(episode), "episode_reward": float(episode.cumulative_reward)}


metrics = {}


def update_round(step, num_updates):
    start = time.perf_counter()
    for i in range(num_updates):
        metrics.update(agent.update(buffer, step + i))
    synchronize()
    return {"seconds": time.perf_counter() - start, "updates": num_updates}


L = cfg.episode_length
timed_updates = L
setup_start = time.perf_counter()
for e in range(params["seed_episodes"]):
    collect(e * L)  # step < seed_steps: uniform random actions
start_step = params["start_step"]
update_round(start_step - L, params["warmup_updates"])  # untimed: torch's first calls
obs = env.reset()
for i in range(2):
    agent.plan(obs, step=start_step, t0=i == 0)
synchronize()
config = {key: (cfg[key] if isinstance(cfg[key], (int, float, str, bool)) else str(cfg[key]))
          for key in params["config_keys"]}
config.update(episode_length=int(cfg.episode_length), seed_steps=int(cfg.seed_steps),
              capacity=int(buffer.capacity), obs_shape=list(cfg.obs_shape), action_dim=int(cfg.action_dim))
answer({"setup_seconds": time.perf_counter() - setup_start, "config": config, "shims": shims,
        "planning_horizon": int(min(cfg.horizon, h.linear_schedule(cfg.horizon_schedule, start_step))),
        **torch_facts(agent)})
''' + DRIVER_COMMANDS


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def official_task_name(task: str) -> str:
    """The official cfg name of a pixax DMC task: '<domain>-<task>' ('cartpole_swingup' -> 'cartpole-swingup')."""
    from agents import tdmpc

    domain = tdmpc.domain_of(task)
    rest = task[len(domain) + 1:]
    domain = {"ball_in_cup": "cup"}.get(domain, domain)  # the official make_env maps 'cup' back
    if "_" in domain:
        raise SystemExit(f"--task {task}: the official code names tasks '<domain>-<task>' with a domain without "
                         f"underscores, so it cannot run domain {domain!r}")
    return f"{domain}-{rest}"


def timed_start_step(config, episode_length: int) -> int:
    """The first multiple of the episode length at which the planner uses the full horizon H and the
    seed phase is over: the agent step of the first timed episode on both sides."""
    from agents import tdmpc

    step = 0
    while tdmpc.planning_horizon(config, step) < config.horizon or step < tdmpc.seed_steps(config):
        step += episode_length
    return step


def compare_settings(pixax_config, official: Dict[str, Any], settings: Dict[str, str]) -> List[str]:
    """'field: pixax X vs official Y' for each official cfg key -> pixax Config field of `settings` whose
    values differ (strings compared without spaces, numbers with a relative tolerance of 1e-9)."""
    differences = []
    for official_key, field in settings.items():
        mine, theirs = getattr(pixax_config, field), official[official_key]
        if isinstance(mine, str):
            same = mine.replace(" ", "") == str(theirs).replace(" ", "")
        else:
            same = math.isclose(float(mine), float(theirs), rel_tol=1e-9)
        if not same:
            differences.append(f"{field}: pixax {mine!r} vs official {theirs!r}")
    return differences


def compare_configs(pixax_config, pixax_loop, episode_length: int, official: Dict[str, Any]) -> List[str]:
    """The settings on which the two sides differ, as 'name: pixax X vs official Y' lines."""
    differences = compare_settings(pixax_config, official, SAME_SETTINGS)
    pairs = {"episode_length": (episode_length, official["episode_length"]),
             "replay capacity (agent steps)": (pixax_loop.replay_capacity, official["capacity"]),
             "seed_steps": (pixax_config.num_seed_frames // pixax_config.action_repeat, official["seed_steps"])}
    return differences + differing_pairs(pairs)


def differing_pairs(pairs: Dict[str, Any]) -> List[str]:
    """'name: pixax X vs official Y' for each name -> (pixax value, official value) whose ints differ."""
    return [f"{name}: pixax {mine} vs official {theirs}" for name, (mine, theirs) in pairs.items()
            if int(mine) != int(theirs)]


# ----------------------------------------------------------------------------------------------
# pixax
# ----------------------------------------------------------------------------------------------


class _Built(Exception):
    """Carries run_updates' freshly built jitted program out of run_updates before it runs."""

    def __init__(self, program):
        super().__init__("built")
        self.program = program


class _CatchProgram(dict):
    """Stands in for EpisodicTrainer._updates (its cache of update programs) for one call: storing a
    program raises _Built, so run_updates stops after building the program and before calling it."""

    def __setitem__(self, key, program):
        super().__setitem__(key, program)
        raise _Built(program)


def precompile_updates(trainer, num_updates: int) -> str:
    """Compiles the program of trainer.run_updates(num_updates) without running it (the timed round then
    finds it in JAX's cache), or, if run_updates no longer builds its program the way this expects, runs one
    round (a warm-up round of updates). Returns which of the two happened."""
    import jax.numpy as jnp

    cache = trainer._updates
    trainer._updates = _CatchProgram(cache)
    try:
        jax.device_get(trainer.run_updates(num_updates))
        outcome = "ran one warm-up round"
    except _Built as built:
        if any(leaf.is_deleted() for leaf in jax.tree.leaves((trainer.states, trainer.replays))):
            raise RuntimeError("run_updates consumed the agent state before storing its program: "
                               "precompile_updates no longer matches core/episodic.py") from None
        first = jnp.zeros((trainer.num_seeds,), jnp.int32)
        built.program.lower(trainer.states, trainer.replays, trainer.loop_keys, first).compile()
        outcome = "compiled ahead of time"
    finally:
        trainer._updates = {**cache, **trainer._updates}
    return outcome


class PixaxSide:
    """pixax's TD-MPC through core/episodic.EpisodicTrainer: setup (seed phase + warm-up), then
    collect(step) and update(step), each timed, as EpisodicTrainer.train's loop body.
    scripts/benchmark_modem.py's MoDem side is a subclass: it replaces the class attributes and the hooks
    `configure`, `build_trainer`, `timed_updates`, `precompile` and `plan_input`."""

    name = "pixax"
    agent_name = "tdmpc"  # agents/<agent_name>.py
    obs_type = "states"

    def __init__(self, task: str, args: argparse.Namespace):
        import importlib

        import jax.numpy as jnp
        from absl import logging as absl_logging

        from agents import tdmpc
        from core import launch
        from core.offpolicy import TRAIN_EPISODE, episode_seed

        absl_logging.set_verbosity(absl_logging.WARNING)
        self.jnp, self.tdmpc, self.episode_seed, self.train_stream = jnp, tdmpc, episode_seed, TRAIN_EPISODE
        self.agent = importlib.import_module(f"agents.{self.agent_name}")
        launcher = launch.base_config(self.agent.Config, task=task, obs=self.obs_type)
        launcher.seeds = str(args.seed)
        launcher.progress = False
        launcher.save_video = False
        launcher.async_envs = "false"  # one seed: its environment in this process, as the official code
        self.configure(launcher, args)
        self.agent_config, self.loop = launch.resolve(self.agent, launcher)

        self.compile_seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        self.run_dir = tempfile.TemporaryDirectory(prefix=f"pixax_{self.agent_name}_bench_")
        setup_start = time.perf_counter()
        self.trainer = trainer = self.build_trainer(args)
        self.episode_length = trainer.episode_steps
        self.num_updates = self.timed_updates(args)
        self.start_step = timed_start_step(self.agent_config, self.episode_length)
        self.timers = {"plan": 0.0, "env": 0.0}
        self._plan, self._env_step = trainer.plan, trainer.train_envs.step
        trainer.plan = self._timed_plan  # instance attributes shadow the methods
        trainer.train_envs.step = self._timed_env_step

        for e in range(args.seed_episodes):
            self.collect(e * self.episode_length)  # step < seed_steps: the seed phase's actions
        trainer.step = self.start_step
        self.update_warmup = self.precompile(trainer, self.num_updates)
        seeds = [episode_seed(s, TRAIN_EPISODE, 10**6) for s in self.loop.seeds]
        obs = self.plan_input(*trainer.train_envs.reset(seed=seeds))
        mean = jnp.zeros((len(self.loop.seeds), self.agent_config.horizon, trainer.action_dim), jnp.float32)
        for t in range(2):  # compiles the horizon-H planner
            _, mean = self._plan(obs, mean, step=self.start_step, t=t, eval_mode=False)
        jax.block_until_ready(mean)
        self.setup = {"setup_seconds": time.perf_counter() - setup_start, "setup_compile_seconds": self.compile_seconds,
                      "planning_horizon": tdmpc.planning_horizon(self.agent_config, self.start_step),
                      "seed_strategy": trainer.strategy, "update_warmup": self.update_warmup}
        self.metrics = {}

    # hooks of the subclasses
    def configure(self, launcher, args: argparse.Namespace) -> None:
        """Sets launcher flags before launch.resolve (TD-MPC: the official state defaults, none)."""

    def build_trainer(self, args: argparse.Namespace):
        from core.episodic import EpisodicTrainer

        return EpisodicTrainer(self.agent, self.agent_config, self.loop, self.run_dir.name)

    def timed_updates(self, args: argparse.Namespace) -> int:
        """Updates per timed round: the episode length (the official schedule)."""
        return self.episode_length

    def precompile(self, trainer, num_updates: int) -> str:
        return precompile_updates(trainer, num_updates)

    def plan_input(self, obs, info):
        """What trainer.plan takes for a reset's (obs, info)."""
        return obs

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.compile_seconds += duration

    def _timed_plan(self, *args, **kwargs):
        start = time.perf_counter()
        out = jax.block_until_ready(self._plan(*args, **kwargs))  # collect reads the action right after
        self.timers["plan"] += time.perf_counter() - start
        return out

    def _timed_env_step(self, action):
        start = time.perf_counter()
        out = self._env_step(action)
        self.timers["env"] += time.perf_counter() - start
        return out

    def collect(self, step: int) -> Dict[str, Any]:
        """One episode planned at agent step `step`, added to the replay (EpisodicTrainer.train's body)."""
        trainer = self.trainer
        trainer.step = step
        self.timers["plan"] = self.timers["env"] = 0.0
        compile_before = self.compile_seconds
        start = time.perf_counter()
        seeds = [self.episode_seed(s, self.train_stream, trainer.episode) for s in self.loop.seeds]
        observations, actions, rewards, _ = trainer.collect(trainer.train_envs, seeds, step=step, eval_mode=False)
        trainer.store_episode(observations, actions, rewards)
        jax.block_until_ready(trainer.replays)  # (train() lets the next update round wait for it instead)
        trainer.episode += 1
        return {"seconds": time.perf_counter() - start, "plan_seconds": self.timers["plan"],
                "env_seconds": self.timers["env"], "agent_steps": self.episode_length,
                "episode_reward": float(rewards.sum()), "compile_seconds": self.compile_seconds - compile_before}

    def update(self, step: int) -> Dict[str, Any]:
        """The round's updates (TD-MPC: the episode's L), update step counter step + i."""
        self.trainer.step = step
        compile_before = self.compile_seconds
        start = time.perf_counter()
        metrics = jax.device_get(self.trainer.run_updates(self.num_updates))
        seconds = time.perf_counter() - start
        self.metrics = {name: float(np.mean(value)) for name, value in metrics.items()}
        return {"seconds": seconds, "updates": self.num_updates,
                "compile_seconds": self.compile_seconds - compile_before}

    def finish(self) -> Dict[str, Any]:
        self.trainer.close()
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        self.run_dir.cleanup()
        return {"last_metrics": self.metrics}


# ----------------------------------------------------------------------------------------------
# official
# ----------------------------------------------------------------------------------------------


def checked_official_dir(folder: str) -> pathlib.Path:
    """--official-dir, resolved, once it is seen to hold the official src/ and cfgs/."""
    official_dir = pathlib.Path(folder).resolve()
    needed = [official_dir / "src" / "algorithm" / "tdmpc.py", official_dir / "cfgs" / "default.yaml"]
    if not all(path.is_file() for path in needed):
        raise SystemExit(f"--official-dir {official_dir} has no src/algorithm/tdmpc.py and cfgs/default.yaml: pass a "
                         "folder with the official src/ and cfgs/ (git archive HEAD src cfgs of nicklashansen/tdmpc)")
    return official_dir


class OfficialSide(tables.DriverProcess):
    """The official code in a --python subprocess (OFFICIAL_DRIVER): it sets up on start and then runs
    one command at a time, so it is idle while pixax is timed."""

    def __init__(self, task: str, start_step: int, args: argparse.Namespace, torch_threads: int):
        official_dir = checked_official_dir(args.official_dir)
        self.name = f"official ({torch_threads} thr)"
        params = {"official_dir": str(official_dir), "code_folder": "src", "task": official_task_name(task),
                  "seed": args.seed,
                  "device": args.device, "torch_threads": torch_threads, "seed_episodes": args.seed_episodes,
                  "start_step": start_step, "warmup_updates": WARMUP_UPDATES, "config_keys": sorted(SAME_SETTINGS)}
        super().__init__(args.python, OFFICIAL_DRIVER, params, prefix="tdmpc_official_bench_")

    def collect(self, step: int) -> Dict[str, Any]:
        return self.command(f"collect {step}")

    def update(self, step: int) -> Dict[str, Any]:
        return self.command(f"update {step}")


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def summarize(collects: Sequence[Dict[str, Any]], updates: Sequence[Dict[str, Any]],
              action_repeat: int) -> Dict[str, Any]:
    """Rates and the per-step split over the timed episodes of one side. The loop runs one update per agent
    step; where fewer updates than agent steps were timed (benchmark_modem.py's --updates), `seconds` counts
    the timed updates' mean time for every agent step (TD-MPC times one update per step: the measured sum)."""
    steps = sum(c["agent_steps"] for c in collects)
    num_updates = sum(u["updates"] for u in updates)
    collect_seconds = sum(c["seconds"] for c in collects)
    plan_seconds = sum(c["plan_seconds"] for c in collects)
    env_seconds = sum(c["env_seconds"] for c in collects)
    update_seconds = sum(u["seconds"] for u in updates)
    seconds = collect_seconds + (update_seconds if num_updates == steps else update_seconds * steps / num_updates)
    return {"agent_steps": steps, "updates": num_updates, "seconds": seconds, "plan_seconds": plan_seconds,
            "env_seconds": env_seconds, "update_seconds": update_seconds,
            "agent_steps_per_s": steps / seconds, "frames_per_s": steps * action_repeat / seconds,
            "plan_ms_per_step": 1000 * plan_seconds / steps,
            "update_ms_per_update": 1000 * update_seconds / num_updates,
            "env_ms_per_step": 1000 * env_seconds / steps,
            "other_ms_per_step": 1000 * (collect_seconds - plan_seconds - env_seconds) / steps,
            "episode_rewards": [round(c["episode_reward"], 2) for c in collects],
            "compile_seconds": sum(r.get("compile_seconds", 0.0) for r in [*collects, *updates])}


def format_table(rows: Sequence[Dict[str, Any]], official: Optional[Dict[str, Any]]) -> str:
    header = ["implementation", "device", "agent steps/s", "frames/s", "plan ms/step", "update ms/update",
              "env ms/step", "other ms/step", "x official"]
    table = [header]
    for row in rows:
        ratio = f"{row['agent_steps_per_s'] / official['agent_steps_per_s']:.2f}" if official else "-"
        table.append([row["implementation"], row["device"], f"{row['agent_steps_per_s']:.3f}",
                      f"{row['frames_per_s']:.2f}", f"{row['plan_ms_per_step']:.1f}",
                      f"{row['update_ms_per_update']:.1f}", f"{row['env_ms_per_step']:.2f}",
                      f"{row['other_ms_per_step']:.2f}", ratio])
    return markdown_table(table)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", help="folder with src/ and cfgs/ of nicklashansen/tdmpc (outside this repository)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with torch and omegaconf for the official side")
    p.add_argument("--skip-official", action="store_true", help="time pixax only")
    p.add_argument("--task", default="cartpole_swingup", help="a dm_control task, pixax name (e.g. walker_walk)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where both sides run")
    p.add_argument("--episodes", type=int, default=1, help="timed episodes per side (each: L plans + L updates)")
    p.add_argument("--seed-episodes", type=int, default=2, help="random episodes that fill the replay first")
    p.add_argument("--torch-threads", default="1",
                   help="comma-separated torch intra-op thread counts, one official process each (default 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of both sides (official default 1)")
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    if not args.skip_official and not args.official_dir:
        p.error("--official-dir is required (or --skip-official)")
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.seed_episodes < 1:
        p.error(f"--seed-episodes must be >= 1 (the updates sample from them), got {args.seed_episodes}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    tables.select_jax_device(args.device)
    from agents import tdmpc

    if not args.skip_official:  # fail before any work
        checked_official_dir(args.official_dir)
        official_task_name(args.task)
    config = tdmpc.config_for_task(args.task, obs_type="states")
    report = machine_report(args.task, args.device)
    load_start = report["load_average_start"]
    print(f"TD-MPC {args.task} from states: {config.iterations} iterations x {config.num_samples} samples "
          f"(+{tdmpc.num_policy_trajectories(config)} policy), {config.num_elites} elites, H {config.horizon}, batch "
          f"{config.batch_size}, mlp {config.mlp_dim}, latent {config.latent_dim}, action repeat "
          f"{config.action_repeat}; {args.seed_episodes} seed episodes, then {args.episodes} timed episode(s) "
          f"per side, the sides' phases interleaved", flush=True)

    pixax = PixaxSide(args.task, args)
    sides: List[Any] = [pixax]
    print_pixax_setup(pixax)
    try:
        if not args.skip_official:
            start_official_sides(
                sides, args.torch_threads, lambda threads: OfficialSide(args.task, pixax.start_step, args, threads),
                lambda official: compare_configs(pixax.agent_config, pixax.loop, pixax.episode_length, official))
        results = time_sides(sides, pixax, args.episodes)
    finally:
        for side in sides[1:]:
            side.kill()
    report["load_average_end"] = os.getloadavg()
    print(f"\nTD-MPC {args.task} (states), {args.episodes} timed episode(s) of {pixax.episode_length} planned steps + "
          f"{pixax.episode_length} updates per side; x official = agent steps/s over the fastest official row; load "
          f"average {load_start[0]:.1f} at the start, {report['load_average_end'][0]:.1f} at the end")
    return print_results(sides, results, report, args.json)


def print_pixax_setup(pixax: PixaxSide) -> None:
    print(f"pixax setup: {pixax.setup['setup_seconds']:.1f} s (compile {pixax.setup['setup_compile_seconds']:.1f} s; "
          f"update program {pixax.update_warmup}); timed episodes start at agent step {pixax.start_step} "
          f"(episode length {pixax.episode_length}, planning horizon {pixax.setup['planning_horizon']})", flush=True)


def machine_report(task: str, device: str) -> Dict[str, Any]:
    """Prints the machine line (JAX's device, CPUs, load, XLA_FLAGS); the report's first entries."""
    cpus = len(os.sched_getaffinity(0))
    load_start = os.getloadavg()
    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); {cpus} CPUs "
          f"for this process; {platform.processor() or platform.machine()}; load average "
          f"{', '.join(f'{x:.1f}' for x in load_start)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    return {"task": task, "device": device, "cpus": cpus, "load_average_start": load_start,
            "jax": jax.__version__, "jax_device": str(jax.devices()[0])}


def start_official_sides(sides: List[Any], torch_threads: Sequence[int], make_side, differences_of) -> None:
    """One official side per torch thread count (make_side(threads)), appended to `sides` (sides[0] is pixax);
    stops if differences_of(the official setup's config) lists any or the planning horizons differ."""
    pixax = sides[0]
    for threads in torch_threads:
        official = make_side(threads)
        sides.append(official)
        setup = official.setup
        differences = differences_of(setup["config"])
        if differences:
            raise SystemExit("the two sides' settings differ:\n  " + "\n  ".join(differences))
        if setup["planning_horizon"] != pixax.setup["planning_horizon"]:
            raise SystemExit(f"planning horizons differ: pixax {pixax.setup['planning_horizon']}, official "
                             f"{setup['planning_horizon']}")
        print(f"official setup: torch {setup['torch']} on {setup['device']} (model on "
              f"{setup['model_device']}), intra-op threads {setup['torch_threads']} (inter-op "
              f"{setup['torch_interop_threads']}), {setup['setup_seconds']:.1f} s; planning horizon "
              f"{setup['planning_horizon']}; shims: {', '.join(setup['shims'])}", flush=True)


def time_sides(sides: Sequence[Any], pixax: PixaxSide, episodes: int) -> Dict[str, Dict[str, Any]]:
    """The timed rounds, the sides' phases interleaved: for episode k (agent step start_step + k L) every side
    collects, then every side runs its update round. Returns per side its collects, updates and finish()."""
    collects: Dict[str, List[Dict[str, Any]]] = {side.name: [] for side in sides}
    updates: Dict[str, List[Dict[str, Any]]] = {side.name: [] for side in sides}
    for k in range(episodes):
        step = pixax.start_step + k * pixax.episode_length
        for side in sides:
            collects[side.name].append(side.collect(step))
            c = collects[side.name][-1]
            print(f"  episode {k} {side.name}: collect {c['seconds']:.1f} s (plan {c['plan_seconds']:.1f} s)",
                  flush=True)
        for side in sides:
            updates[side.name].append(side.update(step))
            print(f"  episode {k} {side.name}: {updates[side.name][-1]['updates']} updates "
                  f"{updates[side.name][-1]['seconds']:.1f} s", flush=True)
    return {side.name: {"collects": collects[side.name], "updates": updates[side.name], "final": side.finish()}
            for side in sides}


def print_results(sides: Sequence[Any], results: Dict[str, Dict[str, Any]], report: Dict[str, Any],
                  json_path: Optional[str]) -> Dict[str, Any]:
    """The table (sides[0] is pixax, the others official rows), the compile time, the speed-ups; `report`
    gets every side's numbers and is written to json_path if given."""
    pixax = sides[0]
    action_repeat = pixax.agent_config.action_repeat
    rows = []
    for side in sides:
        summary = summarize(results[side.name]["collects"], results[side.name]["updates"], action_repeat)
        report[side.name] = {**summary, **side.setup, **results[side.name]["final"]}
        device = (f"jax {jax.default_backend()}" if side is pixax else
                  f"torch {side.setup['device']}, {side.setup['torch_threads']} thr")
        rows.append({"implementation": side.name.split(" ")[0], "device": device, **summary})
    official_rows = rows[1:]
    best = max(official_rows, key=lambda row: row["agent_steps_per_s"]) if official_rows else None
    print(format_table(rows, best))
    print(f"pixax compile time inside the timed window: {rows[0]['compile_seconds']:.1f} s; episode returns: "
          + "; ".join(f"{side.name} {row['episode_rewards']}" for side, row in zip(sides, rows)))
    if best:
        ratios = {"total": rows[0]["agent_steps_per_s"] / best["agent_steps_per_s"],
                  "planning": best["plan_ms_per_step"] / rows[0]["plan_ms_per_step"],
                  "updates": best["update_ms_per_update"] / rows[0]["update_ms_per_update"]}
        report["speedup_pixax_over_best_official"] = ratios
        print("pixax speed-up over the official code: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
