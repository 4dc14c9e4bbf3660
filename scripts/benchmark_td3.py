"""Benchmark (not a test): TD3 and TD3+BC of pixax against the official code, side by side, in one command.

    python scripts/benchmark_td3.py --agents td3,td3bc \
        --td3-dir /work/scratch/td3_official --td3bc-dir /work/scratch/td3bc_official \
        --python /work/scratch/torchenv/bin/python --torch-threads 1

--td3-dir: a checkout of sfujim/TD3 (TD3.py, utils.py); --td3bc-dir: a checkout of sfujim/TD3_BC (TD3_BC.py,
utils.py); both kept OUTSIDE this repository. --python: an interpreter with torch (and numpy, gymnasium with
MuJoCo for the environment loop). Nothing of the official code is in this file: the official side is a small
pixax driver (OFFICIAL_DRIVER below), written to a scratch folder and run there by --python in its own
process, that only IMPORTS the official modules (TD3 / TD3_BC and their utils.ReplayBuffer).

What is timed, at the official sizes (batch 256, 256x256 MLPs, HalfCheetah-v5: state 17, action 6, max
action 1; policy noise 0.2, noise clip 0.5, policy_freq 2, TD3+BC alpha 2.5 and state normalization):

  update     Both sides train on the same random transitions (--data-size rows: states N(0, 1), actions
             U(-1, 1), rewards N(0, 1), 1% terminals), written once to an .npz that both read.
             pixax TD3: agents/td3.update (jitted), one call per update as the online loop makes it, each
               on a batch of 256 rows drawn with numpy from the arrays and copied to the device (the host
               sample + copy the official ReplayBuffer.sample also does).
             pixax TD3+BC: agents/td3bc.update_many (one jitted lax.scan of --chunk device-sampled updates,
               as core/offline.py runs it) on td3bc.dataset_arrays of the same arrays.
             official: `policy.train(replay_buffer, 256)` of TD3.TD3 / TD3_BC.TD3_BC on the official
               utils.ReplayBuffer holding the same rows (TD3: `add` per row; TD3+BC: `convert_D4RL` then
               `normalize_states`, as its main.py), torch.set_num_threads(--torch-threads).
             Each side: --warmup untimed updates, then --updates timed ones (pixax compiles ahead of time).
  env steps  TD3 only (TD3+BC is offline). The full online loop on HalfCheetah-v5: --seed-steps uniform
             random actions with no updates, then act + environment step + store + one update per step.
             Two episodes of 1000 steps; the timed part is the second episode (steps 1000-1999), which
             updates on every step and follows the first compile (pixax) and the first updates.
             pixax: core/offpolicy.OffPolicyTrainer (what experiments/td3.py runs), one seed, synchronous
               environment, one 1-episode evaluation at step 0 (untimed), no video; the rate is the "fps"
               that the trainer writes to metrics.csv at the end of the second episode.
             official: sfujim/TD3 main.py's loop (TD3.select_action + Gaussian noise 0.1, env.step,
               ReplayBuffer.add, policy.train(replay_buffer, 256)), re-stated for gymnasium's 5-tuple
               exactly as /work/scratch/td3_official/run_official.py does, minus its evaluations and with
               start_timesteps = --seed-steps (run_official.py fixes it at 25000).
  per 100k   TD3: 100,000 / (env steps/s of the timed episode) = seconds per 100k frames of the training phase
             (an update every step; the 25k-step seed phase of a full run is faster than this).
             TD3+BC (offline, no frames): 100,000 / (updates/s) = seconds per 100k updates.

Rounds: --rounds rounds, each timing every row once; the order of pixax and official alternates from round to
round, so both sides see the same load of a shared machine. A ratio is pixax / official of the median rates.
XLA's CPU client uses every CPU; torch uses --torch-threads (one official run per value and round).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from agents import td3, td3bc  # noqa: E402
from scripts import tables  # noqa: E402
from scripts.tables import markdown_table  # noqa: E402

AGENTS = ("td3", "td3bc")
ENV_ID = "HalfCheetah-v5"
OBS_DIM, ACTION_DIM = 17, 6  # HalfCheetah-v5
EPISODE_STEPS = 1000  # HalfCheetah-v5's time limit

# The official side, run by --python from a scratch folder. It imports the official modules from the folder in
# its parameters; mode "update" times train() calls, mode "env" runs TD3's main.py loop on the environment.
OFFICIAL_DRIVER = r'''
import json, os, sys, time
import numpy as np

params = json.load(open(sys.argv[1]))
official_dir = os.path.realpath(params["official_dir"])
sys.path.insert(0, official_dir)
import torch

torch.set_num_threads(params["torch_threads"])
import utils
module_name = {"td3": "TD3", "td3bc": "TD3_BC"}[params["agent"]]
official = __import__(module_name)
for module in (utils, official):
    where = os.path.realpath(module.__file__)
    if not where.startswith(official_dir + os.sep):
        raise SystemExit(f"module {module.__name__} came from {where}, not from {official_dir}")

seed = params["seed"]
torch.manual_seed(seed)
np.random.seed(seed)
state_dim, action_dim, max_action = params["obs_dim"], params["action_dim"], 1.0
kwargs = {"state_dim": state_dim, "action_dim": action_dim, "max_action": max_action, "discount": 0.99,
          "tau": 0.005, "policy_noise": 0.2 * max_action, "noise_clip": 0.5 * max_action, "policy_freq": 2}
if params["agent"] == "td3bc":
    kwargs["alpha"] = 2.5
    policy = official.TD3_BC(**kwargs)
else:
    policy = official.TD3(**kwargs)
replay_buffer = utils.ReplayBuffer(state_dim, action_dim)
result = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}

if params["mode"] == "update":
    data = np.load(params["data"])
    if params["agent"] == "td3bc":  # TD3_BC main.py: convert_D4RL, then normalize_states
        replay_buffer.convert_D4RL({name: data[name] for name in
                                    ("observations", "actions", "next_observations", "rewards", "terminals")})
        replay_buffer.normalize_states()
    else:  # TD3 fills its buffer with add() as main.py does
        for row in zip(data["observations"], data["actions"], data["next_observations"], data["rewards"],
                       data["terminals"]):
            replay_buffer.add(*row)
    for _ in range(params["warmup"]):
        policy.train(replay_buffer, params["batch_size"])
    start = time.perf_counter()
    for _ in range(params["updates"]):
        policy.train(replay_buffer, params["batch_size"])
    result.update(updates=params["updates"], seconds=time.perf_counter() - start)
else:  # TD3 main.py's loop, gymnasium API, as run_official.py; no evaluations
    import gymnasium as gym

    env = gym.make(params["env_id"])
    env.action_space.seed(seed)
    state, _ = env.reset(seed=seed)
    episode_ends = []  # (step, perf_counter) at each episode end
    start = time.perf_counter()
    for t in range(params["total_steps"]):
        if t < params["seed_steps"]:
            action = env.action_space.sample()
        else:
            action = (policy.select_action(np.array(state))
                      + np.random.normal(0, max_action * 0.1, size=action_dim)).clip(-max_action, max_action)
        next_state, reward, terminated, truncated, _ = env.step(action)
        replay_buffer.add(state, action, next_state, reward, float(terminated))
        state = next_state
        if t >= params["seed_steps"]:
            policy.train(replay_buffer, params["batch_size"])
        if terminated or truncated:
            episode_ends.append((t + 1, time.perf_counter()))
            state, _ = env.reset()
    result.update(episode_ends=[(step, when - start) for step, when in episode_ends])
json.dump(result, open(params["out"], "w"))
'''


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def random_transitions(size: int, seed: int) -> Dict[str, np.ndarray]:
    """`size` random HalfCheetah-shaped transitions (the module docstring); float32."""
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1.0, 1.0, size=(size, ACTION_DIM)).astype(np.float32),
        "next_observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
        "rewards": rng.normal(size=(size,)).astype(np.float32),
        "terminals": (rng.random(size) < 0.01).astype(np.float32),
    }


# ----------------------------------------------------------------------------------------------
# pixax
# ----------------------------------------------------------------------------------------------


class PixaxTD3Update:
    """agents/td3.update, one call per update on a numpy-sampled batch copied to the device."""

    def __init__(self, data: Dict[str, np.ndarray], batch_size: int, seed: int):
        self.data, self.batch_size = data, batch_size
        self.rng = np.random.default_rng(seed)
        config = td3.config_for_task(ENV_ID, batch_size=batch_size)
        self.discount = config.discount
        self.state = td3.create(jax.random.PRNGKey(seed), (OBS_DIM,), ACTION_DIM, config)
        self.key = jax.random.PRNGKey(seed + 1)
        self.count = 0
        self.run(1)  # compile

    def batch(self) -> Dict[str, jnp.ndarray]:
        rows = self.rng.integers(0, self.data["observations"].shape[0], self.batch_size)
        return {"obs": jnp.asarray(self.data["observations"][rows]), "action": jnp.asarray(self.data["actions"][rows]),
                "reward": jnp.asarray(self.data["rewards"][rows]),
                "discount": jnp.asarray(self.discount * (1.0 - self.data["terminals"][rows])),
                "next_obs": jnp.asarray(self.data["next_observations"][rows])}

    def run(self, updates: int) -> float:
        """Seconds for `updates` updates (the device finished at the end)."""
        start = time.perf_counter()
        for _ in range(updates):
            self.count += 1
            self.state, metrics = td3.update(self.state, self.batch(), self.count, jax.random.fold_in(self.key, self.count))
        jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - start


class PixaxTD3BCUpdate:
    """agents/td3bc.update_many: chunks of `chunk` device-sampled updates in one jitted lax.scan."""

    def __init__(self, data: Dict[str, np.ndarray], chunk: int, batch_size: int, seed: int):
        config = td3bc.Config(batch_size=batch_size)
        self.arrays, mean, std = td3bc.dataset_arrays(data["observations"], data["actions"], data["rewards"],
                                                      data["next_observations"], data["terminals"], config)
        self.state = td3bc.create(jax.random.PRNGKey(seed), OBS_DIM, ACTION_DIM, config, mean, std)
        self.chunk, self.key, self.calls = chunk, jax.random.PRNGKey(seed + 1), 0
        self.step_chunk = td3bc.update_many.lower(self.state, self.arrays, self.key, num_updates=chunk).compile()
        self.run(chunk)

    def run(self, updates: int) -> float:
        """Seconds for `updates` updates, rounded up to whole chunks (the caller reads self.last_updates)."""
        calls = -(-updates // self.chunk)
        start = time.perf_counter()
        for _ in range(calls):
            self.calls += 1
            self.state, metrics = self.step_chunk(self.state, self.arrays, jax.random.fold_in(self.key, self.calls))
        jax.block_until_ready((self.state, metrics))
        self.last_updates = calls * self.chunk
        return time.perf_counter() - start


def pixax_env_rate(seed_steps: int, seed: int, scratch: pathlib.Path) -> Dict[str, float]:
    """env steps/s of the second episode of OffPolicyTrainer running TD3 on HalfCheetah-v5 (module docstring)."""
    from core.offpolicy import LoopConfig, OffPolicyTrainer

    total = 2 * EPISODE_STEPS
    agent_config = td3.config_for_task(ENV_ID, num_seed_frames=seed_steps, num_train_frames=total,
                                       replay_capacity=10 * total, num_eval_episodes=1, eval_every_frames=10 * total)
    loop = LoopConfig(task=ENV_ID, seeds=(seed,), obs_type="states", action_repeat=1, frame_stack=1,
                      num_train_frames=total, num_seed_frames=seed_steps, update_every_steps=1,
                      batch_size=agent_config.batch_size, replay_capacity=agent_config.replay_capacity, nstep=1,
                      discount=agent_config.discount, eval_every_frames=10 * total, num_eval_episodes=1,
                      checkpoint_every_frames=10 * total, save_video=False, progress=False, async_envs=False)
    run_dir = tempfile.mkdtemp(prefix="pixax_td3_env_", dir=scratch)
    trainer = OffPolicyTrainer(td3, agent_config, loop, run_dir)
    try:
        trainer.train()
    finally:
        trainer.close()
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        raise RuntimeError(f"the pixax TD3 run wrote {len(rows)} training episodes to metrics.csv, expected 2")
    return {"env_steps_per_s": float(rows[1]["fps"]), "steps": EPISODE_STEPS}


# ----------------------------------------------------------------------------------------------
# official
# ----------------------------------------------------------------------------------------------


def run_official(params: Dict[str, Any], python: str, scratch: pathlib.Path) -> Dict[str, Any]:
    """OFFICIAL_DRIVER with `params` in its own process (cwd: a fresh scratch folder); its record."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"official_{params['agent']}_", dir=scratch))
    (folder / "driver.py").write_text(OFFICIAL_DRIVER)
    params = {**params, "out": str(folder / "out.json")}
    (folder / "params.json").write_text(json.dumps(params))
    completed = subprocess.run([python, str(folder / "driver.py"), str(folder / "params.json")], cwd=folder,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"the official {params['agent']} driver failed (exit {completed.returncode}):\n"
                         f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads((folder / "out.json").read_text())


def official_dir(args: argparse.Namespace, agent: str) -> str:
    folder, module = (args.td3_dir, "TD3.py") if agent == "td3" else (args.td3bc_dir, "TD3_BC.py")
    path = pathlib.Path(folder or "").resolve()
    if not folder or not (path / module).is_file() or not (path / "utils.py").is_file():
        flag = "--td3-dir" if agent == "td3" else "--td3bc-dir"
        raise SystemExit(f"{flag} {folder!r} has no {module} and utils.py: pass the folder of the official checkout")
    return str(path)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="td3,td3bc", help=f"comma-separated, from {AGENTS}")
    p.add_argument("--td3-dir", help="folder of the official sfujim/TD3 code (TD3.py, utils.py)")
    p.add_argument("--td3bc-dir", help="folder of the official sfujim/TD3_BC code (TD3_BC.py, utils.py)")
    p.add_argument("--python", default=sys.executable, help="interpreter with torch for the official side")
    p.add_argument("--torch-threads", default="1", help="comma-separated torch intra-op thread counts")
    p.add_argument("--rounds", type=int, default=3, help="rounds; pixax / official order alternates")
    p.add_argument("--updates", type=int, default=500, help="timed updates per side and round")
    p.add_argument("--warmup", type=int, default=100, help="untimed official updates before each timed run")
    p.add_argument("--chunk", type=int, default=250, help="TD3+BC updates per update_many call")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--data-size", type=int, default=100_000, help="random transitions both sides train on")
    p.add_argument("--env-rounds", type=int, default=2, help="rounds of the TD3 environment loop (0: skip it)")
    p.add_argument("--seed-steps", type=int, default=500,
                   help="uniform-action steps without updates before the loop's updates start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", default="/work/scratch/benchmark_td3", help="folder for the data and the drivers")
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    args.agents = [name for name in args.agents.split(",") if name]
    unknown = sorted(set(args.agents) - set(AGENTS))
    if unknown or not args.agents:
        p.error(f"unknown --agents {unknown}; valid: {AGENTS}")
    for name in ("rounds", "updates", "chunk", "batch_size", "data_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "env_rounds"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0 <= args.seed_steps < EPISODE_STEPS:
        p.error(f"--seed-steps must be in [0, {EPISODE_STEPS}) so that the timed second episode updates on "
                f"every step, got {args.seed_steps}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    dirs = {agent: official_dir(args, agent) for agent in args.agents}
    scratch = pathlib.Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    data = random_transitions(args.data_size, args.seed)
    data_path = scratch / "data.npz"
    np.savez(data_path, **data)
    print(f"device: jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{len(os.sched_getaffinity(0))} CPUs; {platform.processor() or platform.machine()}; "
          f"load average {os.getloadavg()[0]:.1f}; torch threads {args.torch_threads}", flush=True)

    rates: Dict[str, List[float]] = {}  # row name -> per-round rates

    def record(name: str, rate: float, unit: str) -> None:
        rates.setdefault(name, []).append(rate)
        print(f"  {name}: {rate:.1f} {unit}", flush=True)

    for agent in args.agents:
        pixax = (PixaxTD3Update(data, args.batch_size, args.seed) if agent == "td3"
                 else PixaxTD3BCUpdate(data, args.chunk, args.batch_size, args.seed))
        pixax.run(args.updates)  # pixax warm-up, as the official --warmup
        base = {"agent": agent, "official_dir": dirs[agent], "mode": "update", "data": str(data_path),
                "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "batch_size": args.batch_size, "seed": args.seed,
                "warmup": args.warmup, "updates": args.updates}
        for round_index in range(args.rounds):
            print(f"{agent} update, round {round_index + 1}/{args.rounds}", flush=True)
            sides = ["pixax", "official"] if round_index % 2 == 0 else ["official", "pixax"]
            for side in sides:
                if side == "pixax":
                    seconds = pixax.run(args.updates)
                    updates = getattr(pixax, "last_updates", args.updates)
                    record(f"{agent} update pixax", updates / seconds, "updates/s")
                else:
                    for threads in args.torch_threads:
                        result = run_official({**base, "torch_threads": threads}, args.python, scratch)
                        record(f"{agent} update official torch {threads} thr",
                               result["updates"] / result["seconds"], f"updates/s (torch {result['torch']})")

    if "td3" in args.agents:
        env_params = {"agent": "td3", "official_dir": dirs["td3"], "mode": "env", "env_id": ENV_ID,
                      "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "batch_size": args.batch_size, "seed": args.seed,
                      "seed_steps": args.seed_steps, "total_steps": 2 * EPISODE_STEPS}
        for round_index in range(args.env_rounds):
            print(f"td3 environment loop, round {round_index + 1}/{args.env_rounds}", flush=True)
            sides = ["pixax", "official"] if round_index % 2 == 0 else ["official", "pixax"]
            for side in sides:
                if side == "pixax":
                    record("td3 env pixax", pixax_env_rate(args.seed_steps, args.seed, scratch)["env_steps_per_s"],
                           "env steps/s")
                else:
                    for threads in args.torch_threads:
                        ends = run_official({**env_params, "torch_threads": threads}, args.python, scratch)["episode_ends"]
                        (step1, t1), (step2, t2) = ends[0], ends[1]
                        record(f"td3 env official torch {threads} thr", (step2 - step1) / (t2 - t1), "env steps/s")

    medians = {name: statistics.median(values) for name, values in rates.items()}
    table = [["agent", "what", "pixax", "official (best torch threads)", "pixax / official",
              "pixax s / 100k", "official s / 100k"]]
    report: Dict[str, Any] = {"rates": rates, "medians": medians, "ratios": {}}
    for agent in args.agents:
        kinds = [("update", "updates/s")] + ([("env", "env steps/s (act + step + update)")] if agent == "td3" and args.env_rounds else [])
        for kind, label in kinds:
            ours = medians[f"{agent} {kind} pixax"]
            theirs = max(medians[f"{agent} {kind} official torch {n} thr"] for n in args.torch_threads)
            ratio = ours / theirs
            report["ratios"][f"{agent} {kind}"] = ratio
            table.append([agent, label, f"{ours:.1f}", f"{theirs:.1f}", f"{ratio:.2f}x",
                          f"{1e5 / ours:.0f}", f"{1e5 / theirs:.0f}"])
    print("\nmedians over rounds; s / 100k = 100,000 / rate (TD3 env: seconds per 100k frames; updates: per 100k updates)")
    print(markdown_table(table))
    print("per-round rates: " + json.dumps({name: [round(v, 1) for v in values] for name, values in rates.items()}))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
