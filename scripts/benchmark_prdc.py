"""Benchmark (not a test): PRDC updates/s of pixax against the official PRDC, side by side, in one command.

    python scripts/benchmark_prdc.py --official-dir /work/scratch/prdc_official \
        --python /work/scratch/torchenv/bin/python                       # synthetic, 1e5 transitions
    python scripts/benchmark_prdc.py --official-dir DIR --python PY --size 1000000 --data-cache /tmp/hc1e6.npz
    python scripts/benchmark_prdc.py --official-dir DIR --python PY \
        --dataset pixax/hopper/medium-v0 --dataset-root /work/data/minari   # a local Minari dataset

--official-dir: a checkout of LAMDA-RL/PRDC (spec model-offline-onpolicy-agents.md §5; measured at 9f38464),
kept OUTSIDE this repository; --python: an interpreter with torch (and numpy, scipy). Nothing of the official
code is in this file: the official side is a small pixax driver (OFFICIAL_DRIVER below), run by --python in
a subprocess, that only IMPORTS the official modules `prdc` (class PRDC) and `utils.buffer` (ReplayBuffer).

What each side times (same data, batch 256, hidden 256x2, beta, k, policy_freq 2, state normalization):

  pixax     agents/prdc.update_many: `--chunk` updates per call in one jitted lax.scan (batches sampled on
            the device), once with nn_backend "kdtree" (scipy cKDTree on the host through
            jax.pure_callback, the default) and once with "brute_force" (blocked matmul on the device).
            Compiled ahead of time, one warm-up chunk, then whole chunks until --updates (--brute-force-updates
            for brute force, which is slow on a CPU at 1e6 keys), jax.block_until_ready after each chunk.
            Every timed row also stops at the first chunk / actor update past --max-seconds.
  official  the steps of the official main.py before its training loop, in its order: ReplayBuffer(...),
            convert_D4RL(the same arrays, as d4rl.qlearning_dataset would give them), normalize_states(),
            keys = np.hstack([beta * states, actions]), PRDC(keys, **kwargs) with kwargs as utils/config.py
            get_config builds them (policy_noise 0.2 * max_action, noise_clip 0.5 * max_action, max_action 1),
            seeds as get_config sets them (torch.manual_seed, np.random.seed); then `policy.train(buffer, 256)`
            --official-warmup times, then --official-updates timed calls. main.py's per-step tensorboard
            `writer.add_scalar` calls are not part of the update and are left out.

The official modules that the driver imports (prdc.py, net/*.py, utils/buffer.py) import only torch,
numpy and scipy: nothing is stubbed. d4rl and gym are imported only by main.py, utils/config.py and
utils/eval.py, which the driver does not import (it fails loudly if that ever changes).

Official update, as read (prdc.py `PRDC.train`), and what matters for timing:
  * every call: sample 256 indices with np.random.randint, copy 5 float32 numpy slices into torch tensors,
    critic update (target policy smoothing, twin Q, Adam), `critic_loss.item()`;
  * every 2nd call (total_it % policy_freq == 0): actor forward, Q1, lambda = alpha / mean|Q|, then the
    KD-tree query of the whole batch: `torch.cat([beta * state, pi]).detach().cpu().numpy()` ->
    `self.kd_tree.query(key, k=[k], workers=-1)` (scipy.spatial.KDTree, default leafsize 10, built once in
    the constructor over the float32 keys, queried in float64, all CPU workers), target = data[idx][..., -A:],
    F.mse_loss, actor Adam step, soft updates of both targets, five `.item()` reads;
  * so the tree is queried only on actor updates (half of the calls), synchronously, between the actor's
    forward and backward pass; the device is torch's --device (default "cuda" in get_config; here
    --official-device, "cpu" by default since the torch here is a CPU build).
  The driver wraps `policy.kd_tree` in a counter during the timed calls (it forwards `query` unchanged) to
  report how many queries ran and the time spent in them.
pixax differs in the index only by scipy's leafsize (cKDTree leafsize 16 vs KDTree's 10; same exact answers).

Threads: the official side runs once per --torch-threads value (torch.set_num_threads; default 1 and every
CPU this process may use): on a CPU shared with other work, torch's intra-op threads can wait on each other
(on the 2-core development machine, with another job busy, a 256x256 MLP step took ~150 ms with 2 threads
against ~2 ms with 1), so one thread count alone can misrepresent the official code. "x best official" is
pixax's rate over the fastest official row. XLA's CPU client and both KD-trees (workers=-1) use every CPU;
to give XLA one thread, set XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
before the command (the header prints XLA_FLAGS).
Numbers on a shared machine are noisy: compare the rows of one run with each other.

Both sides start from fresh networks, warm up the same number of updates by default (one pixax chunk =
--official-warmup = 200) and then time --updates / --official-updates (1000 each by default), so their
actors, and so the KD-tree queries [beta * s^, pi(s^)], are at a similar stage of training: a query far
from the keys (a young actor) costs the tree more than one close to them.

Synthetic data (the default): HalfCheetah-v5 (obs 17, action 6) rollouts of 1000-step episodes with a fixed
random "policy-like" behaviour, action = clip(tanh(W s) + N(0, 0.1^2), -1, 1), W ~ N(0, 1/17): keys near a
low-dimensional set, like the medium / expert datasets (the stand-in of agents/prdc.py's docstring). About a
minute per 1e6 steps; --data-cache PATH keeps the arrays in an .npz for the next run.

Seen on the 2-core development CPU (2026-11-26, load ~9 from other jobs, so absolute numbers are inflated):
on the synthetic data (alpha 40) the young actor's queries stay far from the keys (BC loss ~1.2-1.5 after
~1000 updates) and the KD-tree is slow there: 0.75 s per query at N=1e5, 3.5 s at 1e6, 92-99% of the
official update time, so both KD-tree rows are bounded by scipy and brute force was the fastest row
(2-3x the official). On pixax/hopper/medium-v0 (alpha 2.5, 14-dim keys) an official query took ~0.1 s.
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
from typing import Any, Dict, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import prdc, td3bc  # noqa: E402
from scripts import tables  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

DATA_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")

# The official side: pixax's own driver, run by --python. It imports the official modules from the folder
# given in its parameters and reproduces the steps of the official main.py up to its training loop.
OFFICIAL_DRIVER = r'''
import json, os, sys, time
import numpy as np

params = json.load(open(sys.argv[1]))
official_dir = os.path.realpath(params["official_dir"])
sys.path.insert(0, official_dir)
import torch

torch.set_num_threads(params["torch_threads"])
from prdc import PRDC
from utils.buffer import ReplayBuffer

for name in ("prdc", "utils.buffer", "net.actor", "net.critic"):
    where = os.path.realpath(sys.modules[name].__file__)
    if not where.startswith(official_dir + os.sep):
        raise SystemExit(f"module {name} came from {where}, not from --official-dir {official_dir}")
for name in ("d4rl", "gym"):
    if name in sys.modules:
        raise SystemExit(f"the official modules imported {name}; the driver expects them not to")

arrays = np.load(params["data"])
dataset = {name: arrays[name] for name in ("observations", "actions", "rewards", "next_observations", "terminals")}
state_dim, action_dim = dataset["observations"].shape[1], dataset["actions"].shape[1]
max_action = 1.0

# utils/config.py get_config: seeds, then the agent's kwargs
torch.manual_seed(params["seed"])
np.random.seed(params["seed"])
kwargs = {
    "state_dim": state_dim, "action_dim": action_dim, "max_action": max_action,
    "discount": 0.99, "tau": 0.005, "device": params["device"],
    "actor_lr": 3e-4, "critic_lr": 3e-4,
    "policy_noise": 0.2 * max_action, "noise_clip": 0.5 * max_action, "policy_freq": 2,
    "alpha": params["alpha"], "beta": params["beta"], "k": params["k"],
}

# main.py, in its order
build_start = time.perf_counter()
replay_buffer = ReplayBuffer(state_dim, action_dim, params["device"], params["env_id"], 1, 0)
replay_buffer.convert_D4RL(dataset)
if params["normalize"]:
    replay_buffer.normalize_states()
data = np.hstack([params["beta"] * replay_buffer.state, replay_buffer.action])
policy = PRDC(data, **kwargs)
build_seconds = time.perf_counter() - build_start


class CountingTree:
    """Forwards query() to the official KD-tree unchanged, counting calls and their time."""

    def __init__(self, tree):
        self.tree, self.calls, self.seconds = tree, 0, 0.0

    def query(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.tree.query(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result


def synchronize():
    if policy.device.type == "cuda":
        torch.cuda.synchronize()


for _ in range(params["warmup"]):
    policy.train(replay_buffer, params["batch_size"])
synchronize()
policy.kd_tree = counter = CountingTree(policy.kd_tree)
first_it = policy.total_it
start = time.perf_counter()
for _ in range(params["updates"]):
    statistics = policy.train(replay_buffer, params["batch_size"])
    if time.perf_counter() - start > params["max_seconds"] and policy.total_it % 2 == 0:
        break  # time budget spent (after an actor update, so the queries stay half of the calls)
synchronize()
seconds = time.perf_counter() - start
policy.kd_tree = counter.tree

json.dump({
    "updates": policy.total_it - first_it, "seconds": seconds, "build_seconds": build_seconds,
    "tree_queries": counter.calls, "tree_query_seconds": counter.seconds,
    "tree_class": type(counter.tree).__module__ + "." + type(counter.tree).__name__,
    "tree_leafsize": int(counter.tree.leafsize),
    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    "torch_interop_threads": torch.get_num_interop_threads(), "device": str(policy.device),
    "last_metrics": {name: float(value) for name, value in statistics.items()},
}, open(params["out"], "w"))
'''


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def synthetic_halfcheetah(size: int, seed: int = 0, noise_std: float = 0.1) -> Dict[str, np.ndarray]:
    """`size` HalfCheetah-v5 transitions of a fixed random tanh-linear behaviour (module docstring)."""
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5").unwrapped  # the time limit is applied here (1000 steps, no terminal)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(action_dim, obs_dim)) / np.sqrt(obs_dim)
    observations = np.empty((size, obs_dim), np.float32)
    next_observations = np.empty((size, obs_dim), np.float32)
    actions = np.empty((size, action_dim), np.float32)
    rewards = np.empty((size,), np.float32)
    terminals = np.zeros((size,), np.float32)
    episode_step, episode = 0, 0
    obs, _ = env.reset(seed=seed)
    for i in range(size):
        action = np.clip(np.tanh(weights @ obs) + noise_std * rng.normal(size=action_dim), -1.0, 1.0)
        next_obs, reward, terminated, _, _ = env.step(action)
        observations[i], actions[i], rewards[i], next_observations[i] = obs, action, reward, next_obs
        terminals[i] = float(terminated)
        episode_step += 1
        if terminated or episode_step == 1000:
            episode, episode_step = episode + 1, 0
            obs, _ = env.reset(seed=seed + episode)
        else:
            obs = next_obs
    env.close()
    return {"observations": observations, "actions": actions, "rewards": rewards,
            "next_observations": next_observations, "terminals": terminals}


def load_data(args: argparse.Namespace) -> tuple[Dict[str, np.ndarray], str]:
    """The transitions both sides train on, and a description of them."""
    if args.dataset:
        from data.datasets import load_dataset

        dataset = load_dataset(args.dataset, args.dataset_root)
        arrays = {name: np.asarray(getattr(dataset, name), np.float32) for name in DATA_KEYS}
        return arrays, f"Minari {args.dataset} ({args.dataset_root})"
    description = f"synthetic HalfCheetah-v5 rollouts, tanh(W s) + N(0, 0.1^2) actions, seed {args.seed}"
    if args.data_cache and pathlib.Path(args.data_cache).is_file():
        cached = np.load(args.data_cache)
        if cached["observations"].shape[0] == args.size:
            return {name: cached[name] for name in DATA_KEYS}, description + f" (cache {args.data_cache})"
        print(f"cache {args.data_cache} holds {cached['observations'].shape[0]} transitions, not {args.size}: regenerating")
    start = time.perf_counter()
    arrays = synthetic_halfcheetah(args.size, seed=args.seed)
    print(f"generated {args.size} transitions in {time.perf_counter() - start:.1f} s", flush=True)
    if args.data_cache:
        np.savez(args.data_cache, **arrays)
    return arrays, description


# ----------------------------------------------------------------------------------------------
# pixax
# ----------------------------------------------------------------------------------------------


def time_pixax(arrays: Dict[str, np.ndarray], config: prdc.Config, updates: int, chunk: int, seed: int,
               max_seconds: float) -> Dict[str, Any]:
    """updates/s of prdc.update_many with `config` (chunks of `chunk` updates; one warm-up chunk; no new
    chunk starts after max_seconds)."""
    chunk = min(chunk, updates)
    num_chunks = -(-updates // chunk)
    batch_arrays, mean, std = td3bc.dataset_arrays(arrays["observations"], arrays["actions"], arrays["rewards"],
                                                   arrays["next_observations"], arrays["terminals"], config)
    start = time.perf_counter()
    constraint = prdc.build_constraint(batch_arrays, config)
    jax.block_until_ready(constraint)
    build_seconds = time.perf_counter() - start
    key = jax.random.PRNGKey(seed)
    state = prdc.create(key, arrays["observations"].shape[1], arrays["actions"].shape[1], config, mean, std)

    start = time.perf_counter()
    step_chunk = prdc.update_many.lower(state, batch_arrays, constraint, key, num_updates=chunk).compile()
    compile_seconds = time.perf_counter() - start

    key, warm_key = jax.random.split(key)
    state, metrics = step_chunk(state, batch_arrays, constraint, warm_key)
    jax.block_until_ready((state, metrics))
    start, timed = time.perf_counter(), 0
    for chunk_key in jax.random.split(key, num_chunks):
        state, metrics = step_chunk(state, batch_arrays, constraint, chunk_key)
        jax.block_until_ready((state, metrics))  # one sync per chunk: negligible, and keeps the budget exact
        timed += chunk
        if time.perf_counter() - start > max_seconds:  # time budget spent
            break
    seconds = time.perf_counter() - start

    query_ms = time_pixax_query(state, batch_arrays, constraint, config, seed)
    return {"updates": timed, "seconds": seconds, "updates_per_s": timed / seconds, "chunk": chunk,
            "build_seconds": build_seconds, "compile_seconds": compile_seconds, "query_ms": query_ms,
            "last_metrics": {name: float(value) for name, value in metrics.items()}}


def time_pixax_query(state, batch_arrays, constraint, config: prdc.Config, seed: int, repeats: int = 5) -> float:
    """ms per batch of nearest_dataset_action alone (policy forward + query), after one warm-up call."""
    find = jax.jit(prdc.nearest_dataset_action)
    rng = np.random.default_rng(seed)
    count = batch_arrays["obs"].shape[0]
    batches = [batch_arrays["obs"][rng.integers(0, count, config.batch_size)] for _ in range(repeats + 1)]
    jax.block_until_ready(find(state, batches[0], constraint))
    start = time.perf_counter()
    for obs in batches[1:]:
        jax.block_until_ready(find(state, obs, constraint))
    return 1000 * (time.perf_counter() - start) / repeats


# ----------------------------------------------------------------------------------------------
# official
# ----------------------------------------------------------------------------------------------


def time_official(arrays: Dict[str, np.ndarray], config: prdc.Config, args: argparse.Namespace, env_id: str,
                  torch_threads: int) -> Dict[str, Any]:
    """Runs OFFICIAL_DRIVER with --python on the same arrays and torch_threads intra-op threads; its timing record."""
    official_dir = pathlib.Path(args.official_dir).resolve()
    if not (official_dir / "prdc.py").is_file() or not (official_dir / "utils" / "buffer.py").is_file():
        raise SystemExit(f"--official-dir {official_dir} has no prdc.py and utils/buffer.py: "
                         "pass the folder of a LAMDA-RL/PRDC checkout")
    with tempfile.TemporaryDirectory(prefix="prdc_official_bench_") as scratch:
        scratch = pathlib.Path(scratch)
        np.savez(scratch / "data.npz", **arrays)
        (scratch / "driver.py").write_text(OFFICIAL_DRIVER)
        params = {"official_dir": str(official_dir), "data": str(scratch / "data.npz"), "out": str(scratch / "out.json"),
                  "seed": args.seed, "device": args.official_device, "env_id": env_id,
                  "normalize": config.normalize_states, "alpha": config.alpha, "beta": config.beta, "k": config.k,
                  "batch_size": config.batch_size, "warmup": args.official_warmup, "updates": args.official_updates,
                  "torch_threads": torch_threads, "max_seconds": args.max_seconds}
        (scratch / "params.json").write_text(json.dumps(params))
        completed = subprocess.run([args.python, str(scratch / "driver.py"), str(scratch / "params.json")],
                                   cwd=scratch, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(f"the official driver failed (exit {completed.returncode}):\n"
                             f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
        result = json.loads((scratch / "out.json").read_text())
    result["updates_per_s"] = result["updates"] / result["seconds"]
    return result


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def format_table(rows: Sequence[Dict[str, Any]], official_rate: Optional[float]) -> str:
    header = ["implementation", "NN backend", "updates", "seconds", "updates/s", "ms/update", "NN ms/query",
              "x best official"]
    table = [header]
    for row in rows:
        ratio = f"{row['updates_per_s'] / official_rate:.2f}" if official_rate else "-"
        table.append([row["implementation"], row["backend"], str(row["updates"]), f"{row['seconds']:.1f}",
                      f"{row['updates_per_s']:.1f}", f"{1000 / row['updates_per_s']:.2f}", f"{row['query_ms']:.2f}",
                      ratio])
    return markdown_table(table)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", help="folder of the official LAMDA-RL/PRDC code (outside this repository)")
    p.add_argument("--python", default=sys.executable, help="interpreter with torch for the official side")
    p.add_argument("--skip-official", action="store_true", help="time pixax only")
    p.add_argument("--dataset", help="a local Minari dataset id (instead of the synthetic data)")
    p.add_argument("--dataset-root", help="folder of the Minari datasets (MINARI_DATASETS_PATH semantics)")
    p.add_argument("--size", type=int, default=100_000, help="synthetic transitions (e.g. 100000 or 1000000)")
    p.add_argument("--data-cache", help="an .npz to reuse the synthetic data from (written when missing)")
    p.add_argument("--backends", default="kdtree,brute_force", help="pixax nn backends, comma-separated")
    p.add_argument("--updates", type=int, default=1000, help="timed pixax updates (kdtree)")
    p.add_argument("--brute-force-updates", type=int, default=400, help="timed pixax updates (brute_force)")
    p.add_argument("--chunk", type=int, default=200, help="pixax updates per update_many call")
    p.add_argument("--official-updates", type=int, default=1000, help="timed official train() calls")
    p.add_argument("--official-warmup", type=int, default=200,
                   help="untimed official train() calls first (default = the default --chunk: pixax warms up one chunk)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="time budget of each timed row: it stops early (and says how many updates ran) past it")
    p.add_argument("--official-device", default="cpu", help="torch device of the official agent")
    p.add_argument("--torch-threads", default=f"1,{len(os.sched_getaffinity(0))}",
                   help="comma-separated torch intra-op thread counts, one official run each (default: 1 and all CPUs)")
    p.add_argument("--beta", type=float, default=2.0)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    if not args.skip_official and not args.official_dir:
        p.error("--official-dir is required (or --skip-official)")
    for name in ("size", "updates", "brute_force_updates", "chunk", "official_updates"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.official_warmup < 0:
        p.error(f"--official-warmup must be >= 0, got {args.official_warmup}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    unknown = sorted(set(args.backends.split(",")) - set(prdc.neighbors.BACKENDS))
    if unknown:
        p.error(f"unknown --backends {unknown}; valid: {prdc.neighbors.BACKENDS}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    arrays, description = load_data(args)
    task = args.dataset or "halfcheetah-synthetic"
    config = prdc.config_for_task(task, beta=args.beta, k=args.k)
    num, obs_dim = arrays["observations"].shape
    action_dim = arrays["actions"].shape[1]
    cpus = len(os.sched_getaffinity(0))

    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{cpus} CPUs for this process; {platform.processor() or platform.machine()}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"data: {description}: N={num}, obs {obs_dim}, action {action_dim}")
    print(f"PRDC: batch {config.batch_size}, hidden {'x'.join(map(str, config.hidden_dims))}, alpha {config.alpha}, "
          f"beta {config.beta}, k {config.k}, policy_freq {config.policy_freq}, normalize {config.normalize_states}",
          flush=True)

    rows, report = [], {"data": description, "size": num, "obs_dim": obs_dim, "action_dim": action_dim,
                        "batch_size": config.batch_size, "beta": config.beta, "k": config.k, "alpha": config.alpha,
                        "cpus": cpus, "jax": jax.__version__, "jax_device": str(jax.devices()[0])}
    for backend in args.backends.split(","):
        updates = args.brute_force_updates if backend == "brute_force" else args.updates
        result = time_pixax(arrays, prdc.config_for_task(task, beta=args.beta, k=args.k, nn_backend=backend),
                            updates, args.chunk, args.seed, args.max_seconds)
        print(f"pixax {backend}: {result['updates_per_s']:.1f} updates/s (index build {result['build_seconds']:.2f} s, "
              f"compile {result['compile_seconds']:.1f} s, chunk {result['chunk']})", flush=True)
        report[f"pixax_{backend}"] = result
        rows.append({"implementation": "pixax", "backend": backend, **result})

    official_rates = []
    if not args.skip_official:
        env_id = args.dataset or "halfcheetah-synthetic"
        for threads in args.torch_threads:
            result = time_official(arrays, config, args, env_id, threads)
            official_rates.append(result["updates_per_s"])
            query_ms = 1000 * result["tree_query_seconds"] / max(result["tree_queries"], 1)
            print(f"official, torch {result['torch']} on {result['device']}, intra-op threads "
                  f"{result['torch_threads']} (inter-op {result['torch_interop_threads']}): "
                  f"{result['updates_per_s']:.1f} updates/s; {result['tree_queries']} KD-tree queries in "
                  f"{result['updates']} train() calls, {100 * result['tree_query_seconds'] / result['seconds']:.0f}% "
                  f"of the time; agent + tree build {result['build_seconds']:.2f} s; {result['tree_class']} "
                  f"leafsize {result['tree_leafsize']}, workers=-1", flush=True)
            report[f"official_torch_threads_{threads}"] = {**result, "query_ms": query_ms}
            rows.append({"implementation": "official", "backend": f"KDTree, torch {threads} thr",
                         **result, "query_ms": query_ms})
    official_rate = max(official_rates) if official_rates else None

    print(f"\nPRDC updates/s, N={num}, batch {config.batch_size} "
          "(NN ms/query: pixax = policy forward + query timed alone; official = KDTree.query inside train())")
    print(format_table(rows, official_rate))
    if official_rate:
        report["ratios_pixax_over_best_official"] = {
            row["backend"]: row["updates_per_s"] / official_rate for row in rows if row["implementation"] == "pixax"}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
