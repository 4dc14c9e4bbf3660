"""Benchmark (not a test): environment steps/s of pixax's PPO and PROPS training against the official
PROPS code (PPOROS), on the same task with the same settings, side by side in one command.

    python scripts/benchmark_onpolicy.py --official-dir /work/scratch/ppoors_official \
        --python /work/scratch/torchenv/bin/python                        # Hopper-v5, 8192 timed steps
    python scripts/benchmark_onpolicy.py --official-dir DIR --python PY \
        --task InvertedPendulum-v5 --steps 4096 --seeds-many 0             # quick mode
    python scripts/benchmark_onpolicy.py --skip-official --arms props     # pixax only

--official-dir: the root of a NicholasCorrado/PPOROS checkout (spec model-offline-onpolicy-agents.md §0; measured
at a0c8708), kept OUTSIDE this repository; its `PROPS/ppo_props_continuous.py` is what runs. --python: an
interpreter with torch, gymnasium (1.x), mujoco and PyYAML. Nothing of the official code is in this file: the
official side is a small pixax driver (OFFICIAL_DRIVER below), run by --python in a scratch folder, that imports
the official script as a module, sets sys.argv to the flags below and calls its `main()` unchanged.

What runs (both sides: the whole training loop, collection + updates, one environment, --seed):
  arm "ppo"    PPO as the PROPS paper ran it (spec §8.4 PPO column; Hopper: n 2048, lr 1e-3, 10 epochs,
               32 minibatches of 64, target_kl 0.03 checked before each step, ent 0.01, lr annealing):
               pixax agents/ppo.py in core/onpolicy.py; official `--props 0 -b 1 --props-num-steps n`
               (on-policy sampling, b = 1, one loop iteration per n steps, as the shipped PPO configs set
               ros_num_steps = num_steps).
  arm "props"  PROPS (spec §8.4 PROPS column; Hopper: n 2048, m 256, b 2, behaviour lr 1e-3, eps_P 0.3,
               delta_P 0.05, lambda_P 0.3, 16 epochs x 16 minibatches): pixax agents/props.py with
               stale_props_reference=True (PPOROS HEAD's order, so both sides do the same work; pixax's
               default recomputes the references after the PPO update, one extra forward pass) against
               official `--props 1 -b 2 --props-num-steps m ...`.
  Every official flag is written from the pixax Config (so the settings cannot drift apart): num_steps, b,
  lr, anneal, gamma, gae_lambda, minibatches, epochs, norm_adv, clip_coef, clip_vloss, ent/vf coefs,
  max_grad_norm, target_kl, and for PROPS m, props lr / clip / max_grad_norm / minibatches / epochs /
  target_kl / lambda. Sampling error off on both sides (--se 0; pixax se_every_updates 0).
  Evaluation: none on either side (pixax num_eval_episodes 0; official --eval-freq 10**9 --eval-episodes 0:
  its unconditional evaluation at step 0 then runs no episode, before the timed window). No checkpoint
  falls inside the timed window (pixax checkpoint_every_frames > the run; the final save comes after it).
  pixax also writes its metrics.csv / TensorBoard rows per update (part of its loop, in a temporary folder).

Timing: each run does W warm-up steps, W = b * n (the buffer length: n for PPO, 2n for PROPS), then --steps
timed steps (a multiple of n; the run's total, W + --steps, is also what both sides anneal the lr over).
The timed window starts at the end of the update at step W (so pixax has compiled every program: PROPS
traces one update per buffer fill level, b * n / m of them, all before the buffer is full) and ends at the end
of the update at step W + --steps; both sides are then at the same phase (full buffer). Markers are taken
by wrapping pixax's OnPolicyTrainer.update and the official module's update_ppo / update_props (the last
update of each official loop iteration). "end-to-end" = (W + --steps) / wall time from the start of the
training loop (pixax: includes compilation; official: includes the step-0 evaluation's env copy).
pixax compile time (in brackets after the warm-up seconds) = tracing + lowering + XLA backend compile seconds
reported by jax.monitoring during the warm-up (the trainer's construction compiles a little too: "setup" in
--json); the same sum over the timed window is printed and should be 0 (else something recompiled).
Breakdown columns: "env" = time inside the vector env's step (MuJoCo + wrappers; pixax's normalization is in
its jitted observe step, counted in "other"), "update" = time inside the update calls (pixax: update incl.
re-normalization and GAE, one jitted call; official: update_ppo + update_props), "other" = the rest of the loop
(policy forward per step, normalization, buffer bookkeeping; official: also re-normalizing the buffer,
recomputing log-probs / values and the Python GAE loop before every update).
Gradient steps per update: PPO steps per target update and PROPS steps per behaviour update, means over the
timed window (the KL early stops make them data dependent; compare them before comparing rates).

Seeds: pixax runs 1 seed, and --seeds-many S seeds in one process (core/onpolicy.py steps the S environments
and calls the jitted programs once for all seeds; "seed-env-steps/s" = S * steps / seconds). The official code
trains one seed per process; its row is one process.

Threads: the official side runs once per --torch-threads value (torch.set_num_threads; default 1 and every
CPU of this process). On a CPU shared with other jobs torch's intra-op threads can wait on each other (on the
2-core development machine under load, 2 threads made the official loop 4-30x slower than 1), so the ratios
use the FASTEST official row of the same arm. XLA uses its own thread pool (all CPUs); set XLA_FLAGS
before the command to change it (the header prints it and the load average: numbers on a shared machine are
noisy, compare the rows of one run with each other).
A row stops at the first update past --max-seconds of timed window and says how many steps it timed.

Compatibility shims (official side, in OFFICIAL_DRIVER; the official files are not edited). The official code
was written for gymnasium 0.28/0.29; on gymnasium 1.x it needs, and gets, exactly these:
  1. module `gymnasium.wrappers.normalize` (gone in 1.0) = an alias exposing gymnasium.wrappers.utils.RunningMeanStd
     (same class: mean/var/count, update()) for `from gymnasium.wrappers.normalize import RunningMeanStd`;
  2. gymnasium.wrappers.TransformObservation: `observation_space` defaults to None (keep the inner space), as
     in 0.29 (1.x made it a required argument; make_env passes only the function);
  3. gymnasium.vector.SyncVectorEnv: `autoreset_mode` defaults to SAME_STEP, 0.29's behaviour (the step that
     ends an episode returns the next episode's reset observation); 1.x defaults to NEXT_STEP, which would
     insert one reset "step" per episode into the official loop. The subclass also times step() (breakdown);
  4. gymnasium.Wrapper.__getattr__ forwards public attribute names to the wrapped env, as 0.29 did (with a
     deprecation warning): the official Evaluate calls `envs.envs[0].set_update(False)` on the outer
     TransformReward, which 0.29 forwarded to its NormalizeReward;
  5. only if `distutils` is missing (Python >= 3.12): a `distutils.util.strtobool` stand-in (the header says
     whether it was used).
wandb / tensorboard are imported by the official script only with --track (off): nothing is stubbed for them.

Where the official loop's time goes (read in ppo_props_continuous.py / utils.py, and a cProfile of Hopper PROPS
with 1 thread): every step calls get_action_and_value on one observation (actor AND critic forward and a Normal
log-prob / entropy; the value is thrown away), un-normalizes the observation (torch x numpy) and steps the
env through five Python wrappers whose two normalizers update a numpy RunningMeanStd with a batch of one
(mj_step is ~1/6 of env.step). Every m steps (PROPS Hopper: 256) it re-normalizes the whole buffer (up to
b * n = 4096 steps), recomputes log-probs and values, and redoes GAE as a Python loop over the whole buffer
with per-element tensor indexing (16 loop iterations per environment step, ~10% of the time), then runs
update_props (up to 16 x 16 minibatch Adam steps, about one gradient step per environment step: the largest
share, ~40-45%); update_ppo (10 x 32 steps of 64) every n steps. pixax's loop, by contrast, is bound by its
per-step host work (two jitted calls and a device_get per step, "other"); its updates are a few % of the time.

Seen on the 2-core development CPU (2026-11-26, load 2-6 from other jobs; default command, 18.6 min in all):
Hopper-v5 PPO pixax 1238 env steps/s vs official 1007 (1 thread; 33 with 2) = 1.23x, 4 seeds 2830
seed-env-steps/s = 2.81x; PROPS pixax 948 vs official 330 (77 with 2 threads) = 2.87x, 4 seeds 4.42x.
pixax PROPS compiles one update per buffer fill level (16 for m = 256, b * n = 4096): 78 s of warm-up
(142 s with 4 seeds), so end to end the official is faster below ~40k environment steps.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import ppo, props  # noqa: E402
from core import onpolicy  # noqa: E402
from scripts import tables  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

OFFICIAL_SCRIPT = pathlib.Path("PROPS") / "ppo_props_continuous.py"
ARMS = ("ppo", "props")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")

# The official side: pixax's own driver, run by --python in a scratch folder. It installs the gymnasium 1.x
# compatibility shims (module docstring), imports the official script as a module, wraps its update functions
# and the vector env's step with timers, and calls its main() with the flags in params["argv"].
OFFICIAL_DRIVER = r'''
import copy, json, os, sys, time, types

params = json.load(open(sys.argv[1]))
script_dir = os.path.realpath(params["script_dir"])
shims = []

import gymnasium as gym
import gymnasium.wrappers.utils

# 1. gymnasium.wrappers.normalize (removed in gymnasium 1.0): RunningMeanStd lives in gymnasium.wrappers.utils
if "gymnasium.wrappers.normalize" not in sys.modules:
    try:
        import gymnasium.wrappers.normalize  # noqa: F401  (present: gymnasium < 1.0, no shim)
    except ImportError:
        alias = types.ModuleType("gymnasium.wrappers.normalize")
        alias.RunningMeanStd = gymnasium.wrappers.utils.RunningMeanStd
        sys.modules["gymnasium.wrappers.normalize"] = alias
        shims.append("gymnasium.wrappers.normalize alias")

# 2. TransformObservation: observation_space optional, as in 0.29
_TransformObservation = gym.wrappers.TransformObservation


class TransformObservation(_TransformObservation):
    def __init__(self, env, func, observation_space=None):
        super().__init__(env, func, observation_space)


gym.wrappers.TransformObservation = TransformObservation
shims.append("TransformObservation(observation_space=None)")

# 3. SyncVectorEnv: same-step autoreset by default (0.29's behaviour); also times step()
timers = {"env_step": 0.0, "env_steps": 0, "ppo": 0.0, "props": 0.0}
_SyncVectorEnv = gym.vector.SyncVectorEnv


class SyncVectorEnv(_SyncVectorEnv):
    def __init__(self, env_fns, copy=True, observation_mode="same", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP):
        super().__init__(env_fns, copy=copy, observation_mode=observation_mode, autoreset_mode=autoreset_mode)

    def step(self, actions):
        start = time.perf_counter()
        out = super().step(actions)
        timers["env_step"] += time.perf_counter() - start
        timers["env_steps"] += 1
        return out


gym.vector.SyncVectorEnv = SyncVectorEnv
shims.append("SyncVectorEnv(autoreset_mode=SAME_STEP)")

# 4. Wrapper attribute forwarding, as 0.29 did
if not hasattr(gym.Wrapper, "__getattr__"):
    def _forward(self, name):
        if name.startswith("_") or name == "env":
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return getattr(self.env, name)

    gym.Wrapper.__getattr__ = _forward
    shims.append("Wrapper.__getattr__ forwarding")

# 5. distutils.util.strtobool, only where distutils is gone (Python >= 3.12)
try:
    from distutils.util import strtobool  # noqa: F401
except ImportError:
    def strtobool(value):
        value = value.lower()
        if value in ("y", "yes", "t", "true", "on", "1"):
            return 1
        if value in ("n", "no", "f", "false", "off", "0"):
            return 0
        raise ValueError(f"invalid truth value {value!r}")

    distutils = types.ModuleType("distutils")
    distutils.util = types.ModuleType("distutils.util")
    distutils.util.strtobool = strtobool
    sys.modules["distutils"], sys.modules["distutils.util"] = distutils, distutils.util
    shims.append("distutils.util.strtobool stand-in")

import torch

torch.set_num_threads(params["torch_threads"])
sys.path.insert(0, script_dir)
import ppo_props_continuous as official

where = os.path.realpath(official.__file__)
if not where.startswith(script_dir + os.sep):
    raise SystemExit(f"ppo_props_continuous came from {where}, not from {script_dir}")


class Stop(Exception):
    """Raised after the update that ends the timed window (or passes the time budget)."""


markers = []  # one per official loop iteration that ends in the marked update
gradient_steps = {"ppo": [], "props": []}
marked = "update_props" if params["arm"] == "props" else "update_ppo"
state = {"timed_start": None}


def timed(name, function, steps_key):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        stats = function(*args, **kwargs)
        end = time.perf_counter()
        timers[name] += end - start
        global_step = args[10] if name == "ppo" else args[7]
        if global_step > params["warmup"]:
            gradient_steps[name].append(float(stats.get(steps_key, 0)))
        if function.__name__ == marked:
            markers.append({"step": int(global_step), "time": end, "env_step": timers["env_step"],
                            "ppo": timers["ppo"], "props": timers["props"]})
            if global_step == params["warmup"]:
                state["timed_start"] = end
            if global_step >= params["warmup"] + params["steps"] or (
                    state["timed_start"] is not None and end - state["timed_start"] > params["max_seconds"]):
                raise Stop()
        return stats
    return wrapper


official.update_ppo = timed("ppo", official.update_ppo, "ppo_num_update_minibatches")
official.update_props = timed("props", official.update_props, "props_num_update_minibatches")

sys.argv = [where] + params["argv"]
main_start = time.perf_counter()
try:
    official.main()
    stopped = False
except Stop:
    stopped = True
main_end = time.perf_counter()

json.dump({
    "markers": markers, "main_start": main_start, "main_end": main_end, "stopped_by_driver": stopped,
    "gradient_steps": gradient_steps, "env_steps_taken": timers["env_steps"], "shims": shims,
    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    "torch_interop_threads": torch.get_num_interop_threads(), "gymnasium": gym.__version__,
    "python": sys.version.split()[0],
}, open(params["out"], "w"))
'''


# ----------------------------------------------------------------------------------------------
# Settings shared by both sides
# ----------------------------------------------------------------------------------------------


def pixax_config(arm: str, task: str, total_steps: int):
    """(agent module, Config) of `arm` on `task` with the paper's per-task values, total_steps environment
    steps, no evaluation and no sampling error."""
    common = {"num_train_frames": total_steps, "num_eval_episodes": 0, "se_every_updates": 0}
    if arm == "ppo":
        return ppo, ppo.config_for_task(task, **common)
    return props, props.config_for_task(task, stale_props_reference=True, **common)


def warmup_steps(agent, config) -> int:
    """Steps before the timed window: the buffer length b * n (every pixax program compiled by then)."""
    return agent.buffer_steps(config)


def official_argv(arm: str, config, task: str, total_steps: int, seed: int, results_dir: str) -> List[str]:
    """The official script's flags for the same run as the pixax Config (module docstring)."""
    flag = lambda value: str(bool(value))  # the official strtobool flags read "True"/"False"
    kl = lambda value: str(value if value > 0 else 1e9)  # pixax: <= 0 disables the early stop
    argv = ["--env-id", task, "--num-envs", str(config.num_envs), "--total-timesteps", str(total_steps),
            "--seed", str(seed), "--cuda", "False", "--track", "False",
            "--num-steps", str(config.num_steps), "--buffer-batches", str(config.buffer_batches),
            "--learning-rate", str(config.lr), "--anneal-lr", flag(config.anneal_lr),
            "--gamma", str(config.gamma), "--gae-lambda", str(config.gae_lambda),
            "--num-minibatches", str(config.num_minibatches), "--update-epochs", str(config.update_epochs),
            "--norm-adv", flag(config.norm_adv), "--clip-coef", str(config.clip_coef),
            "--clip-vloss", flag(config.clip_vloss), "--ent-coef", str(config.ent_coef),
            "--vf-coef", str(config.vf_coef), "--max-grad-norm", str(config.max_grad_norm),
            "--target-kl", kl(config.target_kl),
            "--se", "0", "--eval-freq", str(10 ** 9), "--eval-episodes", "0", "--log-stats", "0",
            "--results-dir", results_dir, "--run-id", "0"]
    if arm == "ppo":
        return argv + ["--props", "0", "--ros", "0", "--props-num-steps", str(config.num_steps)]
    return argv + ["--props", "1", "--ros", "0", "--props-num-steps", str(config.props_num_steps),
                   "--props-learning-rate", str(config.props_lr), "--props-clip-coef", str(config.props_clip),
                   "--props-max-grad-norm", str(config.props_max_grad_norm),
                   "--props-num-minibatches", str(config.props_num_minibatches),
                   "--props-update-epochs", str(config.props_epochs),
                   "--props-target-kl", kl(config.props_target_kl), "--props-lambda", str(config.props_lambda),
                   "--props-adv", str(int(config.props_adv))]


def window_rates(markers: Sequence[Dict[str, Any]], warmup: int, parts: Sequence[str]) -> Dict[str, Any]:
    """Steps, seconds and the time in each of `parts` (cumulative counters in the markers) between the
    marker at step `warmup` and the last marker."""
    first = next((m for m in markers if m["step"] == warmup), None)
    last = markers[-1] if markers else None
    if first is None or last is None or last["step"] <= warmup:
        raise RuntimeError(f"the run ended before its timed window (markers at steps "
                           f"{[m['step'] for m in markers]}, warm-up {warmup})")
    seconds = last["time"] - first["time"]
    out = {"steps": last["step"] - warmup, "seconds": seconds}
    for part in parts:
        out[f"{part}_seconds"] = last[part] - first[part]
    return out


# ----------------------------------------------------------------------------------------------
# pixax
# ----------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the update wrapper when the timed window is over (or past the time budget)."""


def time_pixax(arm: str, task: str, seeds: Sequence[int], steps: int, max_seconds: float) -> Dict[str, Any]:
    """Runs core/onpolicy.OnPolicyTrainer.train for warm-up + `steps` steps per seed; its timing record."""
    import dataclasses

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    probe_agent, probe_config = pixax_config(arm, task, 10 ** 9)
    warmup = warmup_steps(probe_agent, probe_config)
    agent, config = pixax_config(arm, task, warmup + steps)

    compile_seconds = {"total": 0.0}

    def on_duration(event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            compile_seconds["total"] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        with tempfile.TemporaryDirectory(prefix="pixax_onpolicy_bench_") as run_dir:
            launcher = onpolicy.base_config(agent.Config, task)
            launcher.seeds = ",".join(str(s) for s in seeds)
            launcher.progress = False
            launcher.checkpoint_every_frames = 10 * (warmup + steps)  # none inside the run
            for field in dataclasses.fields(config):
                if field.name in launcher.agent:
                    setattr(launcher.agent, field.name, getattr(config, field.name))
            agent_config, loop = onpolicy.resolve(agent, launcher)
            setup_start = time.perf_counter()
            trainer = onpolicy.OnPolicyTrainer(agent, agent_config, loop, run_dir)
            setup_seconds = time.perf_counter() - setup_start

            counters = {"env_step": 0.0, "update": 0.0}
            markers: List[Dict[str, Any]] = []
            gradient_steps = {"ppo": [], "props": []}
            timed_start = [None]
            env_step, update = trainer.train_envs.step, trainer.update

            def timed_env_step(actions):
                start = time.perf_counter()
                out = env_step(actions)
                counters["env_step"] += time.perf_counter() - start
                return out

            def timed_update():
                start = time.perf_counter()
                metrics = update()
                end = time.perf_counter()
                counters["update"] += end - start
                step = trainer.step
                markers.append({"step": step, "time": end, "compile": compile_seconds["total"], **counters})
                if step > warmup:
                    for row in metrics:
                        if "gradient_steps" in row and np.isfinite(row["gradient_steps"]):
                            gradient_steps["ppo"].append(row["gradient_steps"])
                        if "props_gradient_steps" in row:
                            gradient_steps["props"].append(row["props_gradient_steps"])
                if step == warmup:
                    timed_start[0] = end
                if step >= warmup + steps or (timed_start[0] is not None and end - timed_start[0] > max_seconds):
                    raise _Stop()
                return metrics

            trainer.train_envs.step = timed_env_step  # instance attributes shadow the methods
            trainer.update = timed_update
            train_start = time.perf_counter()
            compile_before_train = compile_seconds["total"]
            try:
                trainer.train()
            except _Stop:
                pass
            finally:
                trainer.close()
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)

    window = window_rates(markers, warmup, ("env_step", "update", "compile"))
    warm = next(m for m in markers if m["step"] == warmup)
    num_seeds = len(seeds)
    return {
        **window, "warmup": warmup, "num_seeds": num_seeds, "seed_strategy": onpolicy.seeding.resolve_strategy(
            loop.seed_strategy, dense=True), "async_envs": loop.async_envs,
        "env_steps_per_s": window["steps"] / window["seconds"],
        "seed_env_steps_per_s": num_seeds * window["steps"] / window["seconds"],
        "end_to_end_steps_per_s": markers[-1]["step"] / (markers[-1]["time"] - train_start),
        "warmup_seconds": warm["time"] - train_start, "compile_seconds": warm["compile"] - compile_before_train,
        "compile_seconds_in_window": window["compile_seconds"], "setup_seconds": setup_seconds,
        "setup_compile_seconds": compile_before_train,
        "gradient_steps_ppo": float(np.mean(gradient_steps["ppo"])) if gradient_steps["ppo"] else None,
        "gradient_steps_props": float(np.mean(gradient_steps["props"])) if gradient_steps["props"] else None,
        "config": {k: v for k, v in dataclasses.asdict(agent_config).items()},
    }


# ----------------------------------------------------------------------------------------------
# official
# ----------------------------------------------------------------------------------------------


def time_official(arm: str, task: str, steps: int, args: argparse.Namespace, torch_threads: int) -> Dict[str, Any]:
    """Runs OFFICIAL_DRIVER with --python in a scratch folder; the official run's timing record."""
    script = pathlib.Path(args.official_dir).resolve() / OFFICIAL_SCRIPT
    if not script.is_file():
        raise SystemExit(f"--official-dir {args.official_dir} has no {OFFICIAL_SCRIPT}: pass the root of a "
                         f"NicholasCorrado/PPOROS checkout")
    probe_agent, probe_config = pixax_config(arm, task, 10 ** 9)
    warmup = warmup_steps(probe_agent, probe_config)
    _, config = pixax_config(arm, task, warmup + steps)
    with tempfile.TemporaryDirectory(prefix="ppoors_official_bench_") as scratch:
        scratch = pathlib.Path(scratch)
        (scratch / "driver.py").write_text(OFFICIAL_DRIVER)
        params = {"script_dir": str(script.parent), "arm": arm, "warmup": warmup, "steps": steps,
                  "max_seconds": args.max_seconds, "torch_threads": torch_threads, "out": str(scratch / "out.json"),
                  "argv": official_argv(arm, config, task, warmup + steps, args.seed, str(scratch / "results"))}
        (scratch / "params.json").write_text(json.dumps(params))
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        completed = subprocess.run([args.python, str(scratch / "driver.py"), str(scratch / "params.json")],
                                   cwd=scratch, capture_output=True, text=True, env=env)
        if completed.returncode != 0 or not (scratch / "out.json").is_file():
            raise SystemExit(f"the official driver failed (exit {completed.returncode}):\n"
                             f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
        result = json.loads((scratch / "out.json").read_text())
    markers = result.pop("markers")
    window = window_rates(markers, warmup, ("env_step", "ppo", "props"))
    warm = next(m for m in markers if m["step"] == warmup)
    steps_grad = result.pop("gradient_steps")
    return {
        **window, **result, "warmup": warmup, "num_seeds": 1, "torch_threads": torch_threads,
        "update_seconds": window["ppo_seconds"] + window["props_seconds"],
        "env_steps_per_s": window["steps"] / window["seconds"],
        "seed_env_steps_per_s": window["steps"] / window["seconds"],
        "end_to_end_steps_per_s": markers[-1]["step"] / (markers[-1]["time"] - result["main_start"]),
        "warmup_seconds": warm["time"] - result["main_start"],
        "gradient_steps_ppo": float(np.mean(steps_grad["ppo"])) if steps_grad["ppo"] else None,
        "gradient_steps_props": float(np.mean(steps_grad["props"])) if steps_grad["props"] else None,
        "argv": params["argv"],
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def format_table(rows: Sequence[Dict[str, Any]], best_official: Dict[str, float]) -> str:
    header = ["arm", "implementation", "seeds", "timed steps", "seconds", "env steps/s", "seed-env-steps/s",
              "env %", "update %", "other %", "grad steps PPO", "grad steps PROPS", "end-to-end steps/s",
              "warm-up s (compile s)", "x best official"]
    table = [header]
    fmt = lambda value: "-" if value is None else f"{value:.1f}"
    for row in rows:
        seconds = row["seconds"]
        env_share = 100 * row["env_step_seconds"] / seconds
        update_share = 100 * row["update_seconds"] / seconds
        warm = f"{row['warmup_seconds']:.1f}"
        if "compile_seconds" in row:
            warm += f" ({row['compile_seconds']:.1f})"
        best = best_official.get(row["arm"])
        ratio = f"{row['seed_env_steps_per_s'] / best:.2f}" if best else "-"
        table.append([row["arm"], row["implementation"], str(row["num_seeds"]), str(row["steps"]),
                      f"{seconds:.1f}", f"{row['env_steps_per_s']:.0f}", f"{row['seed_env_steps_per_s']:.0f}",
                      f"{env_share:.0f}", f"{update_share:.0f}", f"{100 - env_share - update_share:.0f}",
                      fmt(row["gradient_steps_ppo"]), fmt(row["gradient_steps_props"]),
                      f"{row['end_to_end_steps_per_s']:.0f}", warm, ratio])
    return markdown_table(table)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", help="root of a NicholasCorrado/PPOROS checkout (outside this repository)")
    p.add_argument("--python", default=sys.executable, help="interpreter with torch for the official side")
    p.add_argument("--skip-official", action="store_true", help="time pixax only")
    p.add_argument("--task", default="Hopper-v5", help="a gymnasium MuJoCo v5 task both sides can run")
    p.add_argument("--arms", default="ppo,props", help=f"comma-separated, of {ARMS}")
    p.add_argument("--steps", type=int, default=8192,
                   help="timed environment steps per seed after the warm-up (a multiple of the task's n)")
    p.add_argument("--seeds-many", type=int, default=4,
                   help="also time pixax with this many seeds in one process (0 or 1: skip)")
    p.add_argument("--torch-threads", default=f"1,{len(os.sched_getaffinity(0))}",
                   help="comma-separated torch intra-op thread counts, one official run each (default: 1 and all CPUs)")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="time budget of each row's timed window: it stops at the first update past it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    if not args.skip_official and not args.official_dir:
        p.error("--official-dir is required (or --skip-official)")
    args.arms = list(dict.fromkeys(args.arms.split(",")))
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        p.error(f"unknown --arms {unknown}; valid: {ARMS}")
    try:
        onpolicy.preflight(args.task)
    except ValueError as e:
        p.error(f"--task: {e}")
    for arm in args.arms:
        _, config = pixax_config(arm, args.task, 10 ** 9)
        if args.steps < config.num_steps or args.steps % config.num_steps:
            p.error(f"--steps must be a positive multiple of n = {config.num_steps} ({arm} on {args.task}), "
                    f"got {args.steps}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    if args.seeds_many < 0:
        p.error(f"--seeds-many must be >= 0, got {args.seeds_many}")
    if args.max_seconds <= 0:
        p.error(f"--max-seconds must be > 0, got {args.max_seconds}")
    return args


def describe(arm: str, task: str, steps: int) -> str:
    agent, config = pixax_config(arm, task, 10 ** 9)
    text = (f"{arm}: n {config.num_steps}, b {config.buffer_batches}, lr {config.lr} (annealed: {config.anneal_lr}), "
            f"{config.update_epochs} epochs x {config.num_minibatches} minibatches, target_kl {config.target_kl}, "
            f"ent {config.ent_coef}")
    if arm == "props":
        text += (f"; m {config.props_num_steps}, props lr {config.props_lr}, eps_P {config.props_clip}, "
                 f"delta_P {config.props_target_kl}, lambda_P {config.props_lambda}, {config.props_epochs} epochs x "
                 f"{config.props_num_minibatches} minibatches")
    return text + f"; warm-up {warmup_steps(agent, config)} steps, then {steps} timed"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); {cpus} CPUs "
          f"for this process; {platform.processor() or platform.machine()}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"task {args.task}, one environment per seed, no evaluation, seed {args.seed}")
    for arm in args.arms:
        print("  " + describe(arm, args.task, args.steps))
    sys.stdout.flush()

    rows: List[Dict[str, Any]] = []
    report: Dict[str, Any] = {"task": args.task, "steps": args.steps, "cpus": cpus, "jax": jax.__version__,
                              "load_average_start": os.getloadavg(), "rows": rows}
    best_official: Dict[str, float] = {}
    for arm in args.arms:
        seed_sets = [[args.seed]]
        if args.seeds_many > 1:
            seed_sets.append([args.seed + i for i in range(args.seeds_many)])
        for seeds in seed_sets:
            result = time_pixax(arm, args.task, seeds, args.steps, args.max_seconds)
            result.update(arm=arm, implementation=f"pixax ({result['seed_strategy']})")
            print(f"pixax {arm} x{len(seeds)} seeds: {result['env_steps_per_s']:.0f} env steps/s "
                  f"({result['seed_env_steps_per_s']:.0f} seed-env-steps/s) over {result['steps']} steps; warm-up "
                  f"{result['warmup_seconds']:.1f} s, compile {result['compile_seconds']:.1f} s (in the timed window "
                  f"{result['compile_seconds_in_window']:.2f} s); async envs {result['async_envs']}", flush=True)
            rows.append(result)
        if args.skip_official:
            continue
        for threads in args.torch_threads:
            result = time_official(arm, args.task, args.steps, args, threads)
            result.update(arm=arm, implementation=f"official, torch {threads} thr")
            best_official[arm] = max(best_official.get(arm, 0.0), result["env_steps_per_s"])
            print(f"official {arm}, torch {result['torch']} ({result['torch_threads']} intra-op / "
                  f"{result['torch_interop_threads']} inter-op threads), gymnasium {result['gymnasium']}: "
                  f"{result['env_steps_per_s']:.0f} env steps/s over {result['steps']} steps; shims: "
                  f"{', '.join(result['shims'])}", flush=True)
            rows.append(result)

    print(f"\nenvironment steps/s of the whole training loop, {args.task}, timed after a warm-up of b*n steps "
          f"(x best official = pixax seed-env-steps/s over the fastest official row of the same arm)")
    print(format_table(rows, best_official))
    report["best_official"] = best_official
    report["ratios_pixax_over_best_official"] = {
        f"{row['arm']} x{row['num_seeds']} seeds": row["seed_env_steps_per_s"] / best_official[row["arm"]]
        for row in rows if row["implementation"].startswith("pixax") and row["arm"] in best_official}
    report["load_average_end"] = os.getloadavg()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
