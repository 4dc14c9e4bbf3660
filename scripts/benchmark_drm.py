"""Benchmark (not a test): DrQ-v2 and DrM updates/s of pixax against the official PyTorch code, side by side in
one command, plus an estimate of the wall-clock time per 100k frames of each.

    python scripts/benchmark_drm.py --drqv2-dir /work/scratch/drqv2_official --drm-dir /work/scratch/drm_official \
        --python /work/scratch/torchenv/bin/python                       # paper size (GPU-sized work)
    python scripts/benchmark_drm.py --drqv2-dir DIR --drm-dir DIR --python PY \
        --batch-size 32 --hidden-dim 256 --iters 3 --rounds 3 --torch-threads 1,2   # CPU-sized
    python scripts/benchmark_drm.py --agents drm --skip-official                   # pixax only
    python scripts/benchmark_drm.py --drqv2-dir DIR --drm-dir DIR --python PY --device cuda   # a GPU machine

--drqv2-dir: a folder holding `drqv2.py` and `utils.py` of facebookresearch/drqv2 (measured at c0c650b);
--drm-dir: a folder holding `agents/drm.py` and `utils.py` of XuGW-Kevin/DrM (measured at 317116a); e.g.
`git -C MIRROR archive HEAD drqv2.py utils.py | tar -x -C DIR`. Both are kept OUTSIDE this repository.
--python: an interpreter with torch and numpy (drqv2's utils.py also imports omegaconf). Nothing of the
official code is in this file: the official side is a small pixax driver (OFFICIAL_DRIVER below), run by
--python in a scratch folder, that loads the official agent file by its path (the official `agents/` folder
is not a package, and pixax's own `agents` package may be importable there) and calls the agent's `update`
and `act` as the official training scripts do. One official process per agent and per --torch-threads value.

Shapes (both sides): the paper's by default: 84x84 pixels, frame stack 3 (9 channels), batch 256, feature 50,
hidden 1024, action dim 6 (cheetah_run); --image-size / --batch-size / --hidden-dim / --feature-dim shrink it
for a CPU. Hyperparameters: pixax's config_for_task(--task) of each agent (whose defaults are the official
values, each commented with its source); the official agents are built from the same values
(official_kwargs below), with use_tb=True as in the official configs.

Identical batches: one random batch (scripts/benchmark_drqv2.random_batch, key 1: uint8 pixels, actions in
[-1, 1], rewards in [0, 1], discount 0.99^3; next_obs = the batch reversed) is written to an .npz and read by
both sides. pixax gets it channel-last (B, H, W, 9), the official agent channel-first (B, 9, H, W) (the same
numbers, transposed), with reward and discount as (B, 1) columns as the official replay gives them. The
driver reports the sum of its pixels and the script stops if it differs from pixax's.

What is timed, at a fixed agent step --step (10000 by default: past the exploration phase, no perturbation):
  pixax     `agents/<agent>.update` jitted with the state donated, the state threaded through, a fresh key per
            call, `jax.block_until_ready` before the clock stops. Two rows: "host batch", a numpy batch passed
            on every call (JAX copies it to the device inside the call, as core/offpolicy.py's loop does with
            its sampled batch), and "device batch", the batch already on the device (what
            scripts/benchmark_drqv2.py times: the update alone). The first call (compile) is untimed and
            reported; --warmup more untimed calls follow.
  official  `agent.update(replay_iter, step)` with `replay_iter` yielding the numpy batch (the official update
            calls next(replay_iter), copies it to the device with utils.to_torch, augments, encodes, updates;
            with use_tb it reads its losses with .item() every update). DrM's update also measures the
            actor's dormant ratio (utils.cal_dormant_ratio, forward hooks), steps its V network and uses
            lambda(beta) in the target; it perturbs only when step % dormant_perturb_interval == 0, which the
            fixed --step avoids (pixax's lax.cond then runs the no-perturbation branch). --warmup untimed
            calls first; torch.cuda.synchronize around the timed block on a GPU; cudnn.benchmark = True on a
            GPU, as the official training scripts set it.
  act       both sides also time `act` on one observation (the training-time action: noise, no eval mode;
            the official one inside torch.no_grad() and utils.eval_mode(agent), as train.py calls it; pixax's
            jitted act with np.asarray of the action), --act-iters per round.
Interleaving: the machine may be shared, so its load drifts; the sides take turns: --rounds rounds, each
timing --iters updates and --act-iters acts of every side (pixax host batch, pixax device batch, each
official process) while the others wait, the order reversed every other round. A side's rate is its updates
over its summed seconds; "x official" is a pixax rate over the fastest official row's; the per-round ratios
are printed too, to show the spread.

Wall-clock per 100k frames (an estimate, stated so): with action repeat R and update_every_steps U of the
config (2 and 2), 100k frames are S = 100k / R agent steps and S / U updates (steady state: the first
num_seed_frames have no updates; ignored), so

    seconds = (S / U) / updates_per_s + S / acts_per_s + S / env_steps_per_s

with each side's measured update and act rates (its "host batch" row for pixax) and ONE environment rate for
both sides: pixax's dm_control environment from pixels in one process (scripts/benchmark_drqv2.time_envs,
--env-task, --env-steps agent steps at --image-size, action repeat 2). It is serial: the official train.py is
serial; pixax's loop overlaps the environment step with the update (core/offpolicy.py), so for pixax it is an
upper bound (the overlapped time is about max(update, env) + act per step). Replay insertion and sampling,
logging and evaluation are left out on both sides. --env-steps 0 skips the environment part (no estimate).

--device: where BOTH sides run: "cpu" (default; JAX on its CPU backend, torch on the CPU) or "cuda" (JAX must
have a GPU, torch a CUDA build; both processes share the GPU, one timed at a time; JAX preallocates 75% of its
memory, the official agents need a few GiB).

Compatibility shims (official side; the official files are not edited): (1) drqv2.py imports `hydra` and uses
none of it: when hydra is not installed the driver puts an empty stand-in module in its place (installing
hydra-core into a shared interpreter would downgrade omegaconf); (2) only when --image-size is not 84: the
official Encoder hard-codes repr_dim = 32 * 35 * 35 (84x84 inputs), so the driver sets repr_dim from the
image size after the official Encoder.__init__ (the conv stack is unchanged). The driver prints the shims used.

Threads: the official side runs once per --torch-threads value (torch.set_num_threads; default 1 and every
CPU this process may use). XLA uses its own thread pool over every CPU; set XLA_FLAGS before the command to
change it (the header prints it and the load average). Numbers on a shared machine are noisy: compare the
ratios of one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import json
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
from scripts.benchmark_drqv2 import AGENTS as AGENT_MODULES, random_batch, time_envs  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

AGENTS = tuple(AGENT_MODULES)
DEVICES = ("cpu", "cuda")
BATCH_KINDS = ("host", "device")
FRAMES = 100_000  # the wall-clock estimate is per this many frames (environment steps)
# The official agent of each pixax agent: which folder flag holds it, the file under it, the class.
OFFICIAL = {
    "drqv2": {"flag": "--drqv2-dir", "file": "drqv2.py", "class": "DrQV2Agent",
              "repo": "facebookresearch/drqv2 c0c650b", "stand_in_modules": ["hydra"]},
    "drm": {"flag": "--drm-dir", "file": "agents/drm.py", "class": "DrMAgent", "repo": "XuGW-Kevin/DrM 317116a",
            "stand_in_modules": []},
}

# The official side: pixax's own driver, run by --python in a scratch folder. It loads the official agent file,
# builds the agent from the parent's values, warms up, then answers the parent's commands one JSON line each on
# its stdout ("update N": N timed updates; "act N": N timed acts; "finish": last facts).
OFFICIAL_DRIVER = r'''
import importlib, importlib.util, itertools, json, os, random, sys, time, types
answers = os.fdopen(os.dup(1), "w")  # the protocol; anything the official code prints goes to stderr
os.dup2(2, 1)
import numpy as np

params = json.load(open(sys.argv[1]))
official_dir = os.path.realpath(params["official_dir"])
sys.path.insert(0, official_dir)  # the official agent files `import utils` (their repository's utils.py)
import torch

torch.set_num_threads(params["torch_threads"])
device = params["device"]
shims = []
if device == "cuda":
    if not torch.cuda.is_available():
        raise SystemExit(f"--device cuda, but torch {torch.__version__} sees no CUDA device")
    torch.backends.cudnn.benchmark = True  # as the official train.py / train_dmc.py

for name in params["stand_in_modules"]:  # imported by the official file, none of it used
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = types.ModuleType(name)
        shims.append(f"empty stand-in {name} module")

path = os.path.join(official_dir, params["agent_file"])
spec = importlib.util.spec_from_file_location("official_agent", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
utils = sys.modules["utils"]
for name, where in (("utils", utils.__file__), ("the agent", module.__file__)):
    if not os.path.realpath(where).startswith(official_dir + os.sep):
        raise SystemExit(f"{name} came from {where}, not from the official folder {official_dir}")

obs_shape = tuple(params["obs_shape"])  # (C, H, W)
if obs_shape[1] != 84:  # the official Encoder hard-codes repr_dim for 84x84 inputs
    official_init = module.Encoder.__init__

    def encoder_init(self, obs_shape):
        official_init(self, obs_shape)
        side = (obs_shape[1] - 3) // 2 + 1 - 6  # one stride-2 and three stride-1 3x3 convolutions
        self.repr_dim = 32 * side * side

    module.Encoder.__init__ = encoder_init
    shims.append(f"Encoder.repr_dim for {obs_shape[1]}x{obs_shape[2]} inputs")

random.seed(params["seed"])  # utils.set_seed_everywhere
np.random.seed(params["seed"])
torch.manual_seed(params["seed"])
agent = getattr(module, params["agent_class"])(obs_shape=obs_shape, action_shape=(params["action_dim"],),
                                               device=device, **params["kwargs"])

arrays = np.load(params["batch"])
# The order and shapes of the official replay's batches: obs, action, reward (B, 1), discount (B, 1), next_obs.
batch = (np.ascontiguousarray(arrays["obs"].transpose(0, 3, 1, 2)), arrays["action"].astype(np.float32),
         arrays["reward"].astype(np.float32)[:, None], arrays["discount"].astype(np.float32)[:, None],
         np.ascontiguousarray(arrays["next_obs"].transpose(0, 3, 1, 2)))
replay_iter = itertools.repeat(batch)
step = params["step"]
one_obs = batch[0][0]


def synchronize():
    if device == "cuda":
        torch.cuda.synchronize()


metrics = {}


def update_round(count):
    synchronize()
    start = time.perf_counter()
    for _ in range(count):
        metrics.update(agent.update(replay_iter, step))
    synchronize()
    return {"seconds": time.perf_counter() - start, "count": count}


def act_round(count):
    synchronize()
    start = time.perf_counter()
    for _ in range(count):
        with torch.no_grad(), utils.eval_mode(agent):  # as train.py
            agent.act(one_obs, step, eval_mode=False)  # returns a numpy array: waits for the device
    return {"seconds": time.perf_counter() - start, "count": count}


def answer(record):
    answers.write(json.dumps(record) + "\n")
    answers.flush()


setup_start = time.perf_counter()
update_round(params["warmup"])
act_round(2)
answer({"setup_seconds": time.perf_counter() - setup_start, "shims": shims, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(next(agent.actor.parameters()).device), "repr_dim": int(agent.encoder.repr_dim),
        "obs_shape": list(batch[0].shape), "obs_sum": int(batch[0].sum(dtype=np.int64)),
        "next_obs_sum": int(batch[4].sum(dtype=np.int64))})

for line in sys.stdin:
    command, *argument = line.split()
    if command == "update":
        answer(update_round(int(argument[0])))
    elif command == "act":
        answer(act_round(int(argument[0])))
    elif command == "finish":
        answer({"last_metrics": {name: float(value) for name, value in metrics.items()}})
        break
    else:
        raise SystemExit(f"unknown command {line!r}")
'''


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def agent_module(name: str):
    """agents.drqv2 or agents.drm."""
    return AGENT_MODULES[name]


def make_config(name: str, args: argparse.Namespace, compute_dtype: str = "float32"):
    """pixax's config of the agent for --task at the benchmark's shapes (and a pixax compute dtype)."""
    return agent_module(name).config_for_task(args.task, batch_size=args.batch_size, image_size=args.image_size,
                                              hidden_dim=args.hidden_dim, feature_dim=args.feature_dim,
                                              compute_dtype=compute_dtype)


def official_kwargs(name: str, config) -> Dict[str, Any]:
    """The official agent's constructor arguments (besides obs_shape, action_shape, device) from pixax's config:
    the same hyperparameters under the official names."""
    common = {"lr": config.lr, "feature_dim": config.feature_dim, "hidden_dim": config.hidden_dim,
              "critic_target_tau": config.critic_target_tau, "num_expl_steps": config.num_expl_steps,
              "stddev_schedule": config.stddev_schedule, "stddev_clip": config.stddev_clip, "use_tb": True}
    if name == "drqv2":
        return {**common, "update_every_steps": config.update_every_steps}
    return {**common, "dormant_threshold": config.dormant_threshold,
            "target_dormant_ratio": config.target_dormant_ratio, "dormant_temp": config.dormant_temp,
            "target_lambda": config.target_lambda, "lambda_temp": config.lambda_temp,
            "dormant_perturb_interval": config.dormant_perturb_interval,
            "min_perturb_factor": config.min_perturb_factor, "max_perturb_factor": config.max_perturb_factor,
            "perturb_rate": config.perturb_rate, "stddev_type": config.stddev_type, "expectile": config.expectile}


def shared_batch(config, action_dim: int) -> Dict[str, np.ndarray]:
    """The one random batch both sides update on (benchmark_drqv2.random_batch, key 1), as numpy arrays."""
    batch = random_batch(jax.random.PRNGKey(1), 1, config, action_dim)
    return {name: np.asarray(value[0]) for name, value in batch.items()}


def checked_official_dir(name: str, folder: Optional[str]) -> pathlib.Path:
    """The official folder of an agent, resolved, once it is seen to hold the agent file and utils.py."""
    flag, agent_file = OFFICIAL[name]["flag"], OFFICIAL[name]["file"]
    if not folder:
        raise SystemExit(f"{flag} is required for --agents {name} (or --skip-official)")
    official_dir = pathlib.Path(folder).resolve()
    if not (official_dir / agent_file).is_file() or not (official_dir / "utils.py").is_file():
        raise SystemExit(f"{flag} {official_dir} has no {agent_file} and utils.py: pass a folder with the files of "
                         f"{OFFICIAL[name]['repo']}")
    return official_dir


# ----------------------------------------------------------------------------------------------
# The two sides
# ----------------------------------------------------------------------------------------------


class PixaxSide:
    """pixax's jitted update and act of one agent on the shared batch, given on the host or on the device."""

    def __init__(self, name: str, config, action_dim: int, batch: Dict[str, np.ndarray], args: argparse.Namespace):
        self.module = agent_module(name)
        self.host_batch = batch
        self.device_batch = jax.device_put(batch)
        self.step = np.int32(args.step)
        self.key = jax.random.PRNGKey(args.seed)
        self.calls = 0
        self.state = self.module.create(self.key, batch["obs"].shape[1:], action_dim, config)
        self.update_fn = jax.jit(self.module.update, donate_argnums=0)
        self.metrics: Dict[str, Any] = {}
        start = time.perf_counter()
        self._updates(1, self.host_batch)  # compiles
        self.compile_seconds = time.perf_counter() - start
        for batch_on in (self.host_batch, self.device_batch):  # each kind at least once before the clock
            self._updates(max(args.warmup, 1), batch_on)
        self.act_round(2)

    def _keys(self, count: int) -> List[jax.Array]:
        self.calls += 1
        keys = jax.random.split(jax.random.fold_in(self.key, self.calls), count)
        return list(jax.block_until_ready(keys))

    def _updates(self, count: int, batch) -> float:
        keys = self._keys(count)
        start = time.perf_counter()
        for key in keys:
            self.state, self.metrics = self.update_fn(self.state, batch, self.step, key)
        jax.block_until_ready((self.state, self.metrics))
        return time.perf_counter() - start

    def update_round(self, count: int, kind: str) -> Dict[str, Any]:
        batch = self.host_batch if kind == "host" else self.device_batch
        return {"seconds": self._updates(count, batch), "count": count}

    def act_round(self, count: int) -> Dict[str, Any]:
        obs = self.host_batch["obs"][:1]  # one observation from the host, as the loop gets it
        keys = self._keys(count)
        start = time.perf_counter()
        for key in keys:
            np.asarray(self.module.act(self.state, obs, self.step, key, eval_mode=False))
        return {"seconds": time.perf_counter() - start, "count": count}

    def last_metrics(self) -> Dict[str, float]:
        return {name: float(value) for name, value in jax.device_get(self.metrics).items()}


class OfficialSide(tables.DriverProcess):
    """The official agent in a --python subprocess (OFFICIAL_DRIVER): it sets up on start and then runs one
    command at a time, so it is idle while another side is timed."""

    def __init__(self, name: str, config, action_dim: int, batch_file: pathlib.Path, args: argparse.Namespace,
                 torch_threads: int):
        official_dir = checked_official_dir(name, getattr(args, f"{name}_dir"))
        self.threads = torch_threads
        channels = 3 * config.frame_stack
        params = {"official_dir": str(official_dir), "agent_file": OFFICIAL[name]["file"],
                  "agent_class": OFFICIAL[name]["class"], "stand_in_modules": OFFICIAL[name]["stand_in_modules"],
                  "kwargs": official_kwargs(name, config),
                  "obs_shape": [channels, config.image_size, config.image_size], "action_dim": action_dim,
                  "batch": str(batch_file), "step": args.step, "seed": args.seed, "device": args.device,
                  "torch_threads": torch_threads, "warmup": args.warmup}
        super().__init__(args.python, OFFICIAL_DRIVER, params, prefix=f"{name}_official_bench_")

    def update_round(self, count: int) -> Dict[str, Any]:
        return self.command(f"update {count}")

    def act_round(self, count: int) -> Dict[str, Any]:
        return self.command(f"act {count}")


# ----------------------------------------------------------------------------------------------
# Measuring one agent
# ----------------------------------------------------------------------------------------------


def pixax_label(dtype: str, kind: str) -> str:
    """A pixax row's name: its batch kind, and its compute dtype when not float32."""
    return f"pixax{'' if dtype == 'float32' else ' ' + dtype} ({kind} batch)"


def rate(records: Sequence[Dict[str, Any]]) -> float:
    """Calls per second over a side's timed rounds."""
    return sum(r["count"] for r in records) / sum(r["seconds"] for r in records)


def rate_per_round(records: Sequence[Dict[str, Any]]) -> List[float]:
    """Calls per second in each of a side's timed rounds."""
    return [r["count"] / r["seconds"] for r in records]


def estimate_100k(updates_per_s: float, acts_per_s: float, env_steps_per_s: Optional[float], config
                  ) -> Optional[Dict[str, float]]:
    """Seconds per 100k frames, serial (module docstring): updates + acts + environment steps."""
    if not env_steps_per_s:
        return None
    agent_steps = FRAMES / config.action_repeat
    parts = {"updates_s": agent_steps / config.update_every_steps / updates_per_s,
             "acts_s": agent_steps / acts_per_s, "env_s": agent_steps / env_steps_per_s}
    return {**parts, "total_s": sum(parts.values())}


def measure_agent(name: str, args: argparse.Namespace, env_steps_per_s: Optional[float]) -> Dict[str, Any]:
    """Both sides of one agent, interleaved round by round; the rows of its table and the facts of the run."""
    config = make_config(name, args)
    batch = shared_batch(config, args.action_dim)
    print(f"\n{name}: batch {config.batch_size}, {config.image_size}x{config.image_size}x{3 * config.frame_stack}, "
          f"feature {config.feature_dim}, hidden {config.hidden_dim}, action dim {args.action_dim}, step {args.step}; "
          f"{args.rounds} rounds of {args.iters} updates + {args.act_iters} acts per side", flush=True)
    pixaxes = {dtype: PixaxSide(name, make_config(name, args, dtype), args.action_dim, batch, args)
               for dtype in args.compute_dtypes}
    for dtype, pixax in pixaxes.items():
        print(f"  pixax {dtype}: first update (compile) {pixax.compile_seconds:.1f} s", flush=True)

    officials: List[OfficialSide] = []
    with tempfile.TemporaryDirectory(prefix=f"{name}_bench_batch_") as folder:
        batch_file = pathlib.Path(folder) / "batch.npz"
        np.savez(batch_file, **batch)
        try:
            if not args.skip_official:
                for threads in args.torch_threads:
                    official = OfficialSide(name, config, args.action_dim, batch_file, args, threads)
                    officials.append(official)
                    setup = official.setup
                    sums = (int(batch["obs"].sum(dtype=np.int64)), int(batch["next_obs"].sum(dtype=np.int64)))
                    if (setup["obs_sum"], setup["next_obs_sum"]) != sums:
                        raise SystemExit(f"the official side's batch differs: pixel sums {setup['obs_sum']}, "
                                         f"{setup['next_obs_sum']} vs pixax {sums}")
                    print(f"  official ({OFFICIAL[name]['repo']}): torch {setup['torch']} on {setup['device']}, "
                          f"intra-op threads {setup['torch_threads']} (inter-op {setup['torch_interop_threads']}), "
                          f"setup + {args.warmup} warm-up updates {setup['setup_seconds']:.1f} s, obs "
                          f"{setup['obs_shape']}, repr_dim {setup['repr_dim']}; shims: "
                          f"{', '.join(setup['shims']) or 'none'}", flush=True)

            sides = [(pixax_label(dtype, kind), (dtype, kind)) for dtype in args.compute_dtypes
                     for kind in args.pixax_batch]
            sides += [(f"official ({o.threads} thr)", o) for o in officials]
            updates: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _ in sides}
            acts: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _ in sides}
            for round_index in range(args.rounds):
                order = sides if round_index % 2 == 0 else sides[::-1]
                for label, side in order:
                    if isinstance(side, tuple):  # a pixax (compute dtype, batch kind)
                        dtype, kind = side
                        updates[label].append(pixaxes[dtype].update_round(args.iters, kind))
                        if kind == args.pixax_batch[0]:  # pixax's act does not depend on the batch kind
                            acts[label].append(pixaxes[dtype].act_round(args.act_iters))
                    else:
                        updates[label].append(side.update_round(args.iters))
                        acts[label].append(side.act_round(args.act_iters))
                print(f"  round {round_index}: " + ", ".join(
                    f"{label} {args.iters / updates[label][-1]['seconds']:.2f}" for label, _ in sides)
                    + " updates/s", flush=True)
            finals = {f"official ({o.threads} thr)": o.finish() for o in officials}
        finally:
            for official in officials:
                official.kill()

    rows = []
    for label, side in sides:
        is_pixax = isinstance(side, tuple)
        act_rate = rate(acts[pixax_label(side[0], args.pixax_batch[0])] if is_pixax else acts[label])
        rows.append({"implementation": label, "updates_per_s": rate(updates[label]), "acts_per_s": act_rate,
                     "round_rates": rate_per_round(updates[label])})
    official_rows = [row for row in rows if row["implementation"].startswith("official")]
    best = max(official_rows, key=lambda row: row["updates_per_s"]) if official_rows else None
    for row in rows:
        row["x_official"] = row["updates_per_s"] / best["updates_per_s"] if best else None
        row["per_100k_frames"] = estimate_100k(row["updates_per_s"], row["acts_per_s"], env_steps_per_s, config)
    if best:  # per round: a row's rate over the same round's rate of the fastest official row (overall)
        best_label = best["implementation"]
        for row in rows:
            row["round_ratios"] = [r / b for r, b in zip(row["round_rates"], rate_per_round(updates[best_label]))]
    return {"agent": name, "config": {"batch_size": config.batch_size, "image_size": config.image_size,
                                      "feature_dim": config.feature_dim, "hidden_dim": config.hidden_dim,
                                      "action_repeat": config.action_repeat,
                                      "update_every_steps": config.update_every_steps},
            "pixax_compile_seconds": pixaxes[args.compute_dtypes[0]].compile_seconds,
            "pixax_compile_seconds_by_dtype": {dtype: side.compile_seconds for dtype, side in pixaxes.items()},
            "rows": rows,
            "official_setup": {f"official ({o.threads} thr)": o.setup for o in officials},
            "last_metrics": {**{f"pixax {dtype}": side.last_metrics() for dtype, side in pixaxes.items()},
                             **{k: v["last_metrics"] for k, v in finals.items()}}}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def format_table(result: Dict[str, Any]) -> str:
    header = ["implementation", "updates/s", "ms/update", "x official", "acts/s",
              "s per 100k frames (updates + acts + env)"]
    table = [header]
    for row in result["rows"]:
        ratio = f"{row['x_official']:.2f}" if row["x_official"] else "-"
        estimate = row["per_100k_frames"]
        wall = (f"{estimate['total_s']:.0f} ({estimate['updates_s']:.0f} + {estimate['acts_s']:.0f} + "
                f"{estimate['env_s']:.0f})" if estimate else "-")
        table.append([row["implementation"], f"{row['updates_per_s']:.2f}", f"{1000 / row['updates_per_s']:.0f}",
                      ratio, f"{row['acts_per_s']:.1f}", wall])
    return markdown_table(table, text_columns=1)


def comma_list(parser: argparse.ArgumentParser, text: str, valid: Sequence[str], flag: str) -> List[str]:
    values = list(dict.fromkeys(value.strip() for value in text.split(",") if value.strip()))
    unknown = [value for value in values if value not in valid]
    if not values or unknown:
        parser.error(f"{flag} must be a comma-separated subset of {list(valid)}, got {text!r}")
    return values


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="drqv2,drm", help="comma-separated: drqv2, drm")
    p.add_argument("--drqv2-dir", help="folder with drqv2.py and utils.py of facebookresearch/drqv2")
    p.add_argument("--drm-dir", help="folder with agents/drm.py and utils.py of XuGW-Kevin/DrM")
    p.add_argument("--python", default=sys.executable, help="interpreter with torch for the official side")
    p.add_argument("--skip-official", action="store_true", help="time pixax only")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where both sides run")
    p.add_argument("--task", default="cheetah_run", help="the task whose config both sides use")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--feature-dim", type=int, default=50)
    p.add_argument("--action-dim", type=int, default=6, help="6 = cheetah_run")
    p.add_argument("--pixax-batch", default="host,device",
                   help="pixax rows: 'host' (numpy batch every call) and/or 'device' (batch on the device)")
    p.add_argument("--compute-dtypes", default="float32",
                   help="pixax rows per compute dtype, comma-separated: float32 (the official), bfloat16")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each side times --iters per round)")
    p.add_argument("--iters", type=int, default=50, help="timed updates per side per round")
    p.add_argument("--act-iters", type=int, default=50, help="timed acts per side per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates per side before the rounds")
    p.add_argument("--step", type=int, default=10_000, help="the agent step every timed update is given")
    p.add_argument("--env-task", default="cheetah_run", help="the environment timed for the 100k-frame estimate")
    p.add_argument("--env-steps", type=int, default=200, help="agent steps of the environment timing; 0 skips it")
    p.add_argument("--torch-threads", default=f"1,{len(os.sched_getaffinity(0))}",
                   help="comma-separated torch intra-op thread counts, one official process each "
                        "(default: 1 and all CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    args.agents = comma_list(p, args.agents, AGENTS, "--agents")
    args.pixax_batch = comma_list(p, args.pixax_batch, BATCH_KINDS, "--pixax-batch")
    args.compute_dtypes = comma_list(p, args.compute_dtypes, tuple(AGENT_MODULES["drqv2"].COMPUTE_DTYPES),
                                     "--compute-dtypes")
    for name in ("batch_size", "hidden_dim", "feature_dim", "action_dim", "rounds", "iters", "act_iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "env_steps", "step"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.image_size < 16:
        p.error(f"--image-size must be >= 16 (the official encoder's four 3x3 convolutions), got {args.image_size}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    return args


def check_step(args: argparse.Namespace) -> None:
    """The fixed step must be one on which DrQ-v2 updates (a multiple of update_every_steps) and DrM does not
    perturb (the timed update is the common one)."""
    for name in args.agents:
        config = make_config(name, args)
        if args.step % config.update_every_steps:
            raise SystemExit(f"--step {args.step} is not a multiple of update_every_steps={config.update_every_steps}: "
                             "the official DrQ-v2 update would return without updating")
        if name == "drm" and args.step % config.dormant_perturb_interval == 0:
            raise SystemExit(f"--step {args.step} is a multiple of dormant_perturb_interval="
                             f"{config.dormant_perturb_interval}: every timed DrM update would perturb")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    tables.select_jax_device(args.device)
    if not args.skip_official:  # fail before any work
        for name in args.agents:
            checked_official_dir(name, getattr(args, f"{name}_dir"))
    check_step(args)
    cpus = len(os.sched_getaffinity(0))
    load_start = os.getloadavg()
    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); {cpus} CPUs "
          f"for this process; {platform.processor() or platform.machine()}; load average "
          f"{', '.join(f'{x:.1f}' for x in load_start)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    report: Dict[str, Any] = {"device": args.device, "cpus": cpus, "load_average_start": load_start,
                              "jax": jax.__version__, "jax_device": str(jax.devices()[0]), "args": vars(args)}

    env_steps_per_s = None
    if args.env_steps:
        env_steps_per_s = time_envs(args.env_task, 1, args.env_steps, args.image_size)
        print(f"environment: {args.env_task} from pixels {args.image_size}x{args.image_size}, action repeat 2, one "
              f"process: {env_steps_per_s:.1f} agent steps/s ({args.env_steps} steps)", flush=True)
    report["env_agent_steps_per_s"] = env_steps_per_s

    results = [measure_agent(name, args, env_steps_per_s) for name in args.agents]
    report["agents"] = results
    report["load_average_end"] = os.getloadavg()
    print(f"\nload average {load_start[0]:.1f} at the start, {report['load_average_end'][0]:.1f} at the end; "
          "x official = updates/s over the fastest official row; s per 100k frames: serial estimate "
          "(module docstring), pixax's act rate in both pixax rows")
    for result in results:
        print(f"\n{result['agent']} (pixax first update / compile {result['pixax_compile_seconds']:.1f} s)")
        print(format_table(result))
        ratios = [f"{row['implementation']} " + ", ".join(f"{r:.2f}" for r in row["round_ratios"])
                  for row in result["rows"] if row.get("round_ratios") and row["implementation"].startswith("pixax")]
        if ratios:
            print("per-round x official: " + "; ".join(ratios))
        print("last metrics: " + "; ".join(
            f"{side} " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items())
                                   if k in ("critic_loss", "dormant_ratio", "actor_dormant_ratio", "actor_loss"))
            for side, metrics in result["last_metrics"].items()))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
