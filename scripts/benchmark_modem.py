"""Benchmark (not a test): MoDem training speed in its interactive phase (environment steps/s INCLUDING planning
and updates, and the update rate) of pixax against the official MoDem code, on the same DMControl task with the
same settings, side by side in one command.

    python scripts/benchmark_modem.py --official-dir /work/scratch/modem_official \
        --python /work/scratch/torchenv/bin/python                 # cartpole_swingup, 1 episode + its 500 updates
    python scripts/benchmark_modem.py --official-dir DIR --python PY \
        --batch-size 64 --episode-length 50 --updates 3                 # a 2-core, 23 GB machine
    python scripts/benchmark_modem.py --skip-official                                 # pixax only
    python scripts/benchmark_modem.py --official-dir DIR --python PY --device cuda      # a GPU machine

--official-dir: a folder holding facebookresearch/modem (measured at 6cee94d: algorithm/, cfgs/, cfg_parse.py,
env.py, tasks/dmcontrol.py; e.g. `git -C MIRROR archive HEAD algorithm cfgs cfg_parse.py env.py tasks/__init__.py
tasks/dmcontrol.py | tar -x -C DIR`), kept OUTSIDE this repository. --python: an interpreter with torch, omegaconf,
numpy, gymnasium, dm_control, dm_env, Pillow and tqdm. Nothing of the official code is in this file: the official
side is a small pixax driver (MODEM_DRIVER below; its start and command loop are scripts/benchmark_tdmpc.py's, as
MoDem is built on TD-MPC's code), run by --python in a scratch folder, that imports the official modules
`cfg_parse` (parse_cfg), `env` (make_env, set_seed), `algorithm.tdmpc` (TDMPC) and `algorithm.helper` (Episode,
ReplayBuffer) and runs the body of the official train.py loop with them. train.py itself is not imported (hydra,
wandb logger, asserts CUDA).

Settings (both sides): MoDem's DMControl defaults: 224x224 RGB frames, a stack of 2, MoDem's encoder (six VALID
stride-2 convs of 32 channels, 7/5/3/3/3/3, + Linear to latent 50) fused with the proprioceptive state (MLP_s,
MLP_f of width 256); planner 6 iterations x 512 samples + 25 policy trajectories, 64 elites, H 5, std floor
schedule linear(0.1, 0.05, 12500); learner batch 256 (interaction + demo sequences), lr 3e-4, PER; demo sub-batch
floor(linear(0.75, 0.25, 50000)(step) x 256); action repeat 2. The official side composes its config as train.py's
hydra would (cfgs/config.yaml, its defaults list's suite cfgs/suite/dmcontrol.yaml at the top level, then the
command-line overrides, then parse_cfg); the pixax side is agents/modem.config_for_task. The script compares the
two (every TD-MPC setting of benchmark_tdmpc.SAME_SETTINGS plus frame stack, image size, channels, demos, demo
schedule; episode length, seed steps, observation, state and action sizes) and stops if any differs. The 84x84 of
TD-MPC's pixel setting cannot be used: MoDem's six VALID stride-2 convs need at least 135 pixels (pixax's
agents/modem.min_image_size(6)); --image-size changes both sides (>= 135).
Set on both sides for the benchmark (overrides of the official defaults, reported in the header):
  - demos (--demos, default 1; official 5): random-action episodes, given to both sides as demos. Their number
    only sets the demo buffer's size (and the untimed BC length); the demo sub-batch is the schedule's either way.
    pixax: scripts/collect_demos.py --random into a scratch datasets root, read by core/modem_loop.MoDemTrainer;
    official: uniform actions in [-1, 1] in its own environment, Episode objects added to its demo ReplayBuffer
    (train.py's get_demos reads .pt files + PNG frames; it is not used).
  - replay capacity: (seed episodes + timed episodes + 1) episodes on pixax (never full: sampling stays with
    replacement, as the official sampler always is), official train_steps of the same number (its buffer holds
    2 x train_steps + 1). The official 100k-step buffer of 224x224 frames (30 GB) does not fit a small machine;
    both sample over the filled part only, so its size does not change the speed.
  - --batch-size (default: the official 256): pixax's update at 224x224 and batch 256 needs more memory than a
    23 GB machine has (it was OOM-killed there; batch 64 peaked at 6.9 GB, the official update at 2 GB), so a
    small machine times a smaller batch on both sides (the demo sub-batch stays floor(ratio x batch)).
  - --episode-length (agent steps; default: the task's 500): a shorter episode (the official cfg episode_length,
    whose env wrapper then ends the episode; on pixax the dm_control task's step limit, set in this process
    while the demos and the trainer's environments are made, see `dmc_step_limit`), so that a small machine can
    time whole episodes. Per-step costs do not depend on it.

What runs on each side (one seed, one environment, BC pretraining not run: it is not part of the timed phase):
  1. demos and seed phase (untimed): the demos, then --seed-episodes episodes acted by the (untrained) BC policy
     (step 0 < seed_steps, both sides' seed-phase action), each added to the replay;
  2. warm-up (untimed): pixax compiles its update program (MoDemTrainer.run_updates(N)'s jitted scan, compiled
     ahead of time for the arguments run_updates passes, without running it) and its horizon-H planner (two plan
     calls); the official side makes two plan calls and WARMUP_UPDATES update calls (torch's first calls);
  3. timed: --episodes episodes of the interactive loop body at agent steps S, S + L, ..., S = 25000 (the first
     multiple of L where the horizon schedule gives H = 5; the demo ratio is then 0.5: 128 demo + 128 interaction
     sequences). One episode = collect (plan every step -> env.step; add the episode to the replay), then
     N = --updates updates (default L, the official schedule) with update step counter S + i.
     pixax: MoDemTrainer's own collect (its plan: one jitted call per step) and store_episode, run_updates(N)
     (sample both buffers -> combine -> update -> both priority write-backs, one lax.scan) and jax.device_get of
     the metrics. Official: train.py's loop body (Episode(cfg, obs, env.state), agent.plan(obs, env.state, ...),
     env.step(action.cpu().numpy()), `episode += ...`, `buffer += episode`, agent.update(buffer, step + i,
     demo_buffer) N times). Logging, evaluation and checkpoints are left out on both sides.
Rates: the interactive phase runs one update per agent step, so agent steps/s = 1 / (collect s/agent step +
update s/update) (benchmark_tdmpc.summarize; with N = L it is the measured episode time). With N < L the
update rate comes from N updates only (on a 2-core CPU one update at 224x224 and batch 256 takes tens of
seconds, so 500 of them take hours).
Interleaving, the plan / update / env / other split and the compile-time check are benchmark_tdmpc.py's.

--device: where BOTH sides run: "cpu" (default; JAX on its CPU backend, torch on the CPU with the shims below) or
"cuda" (the official code as written, and JAX must have a GPU).

Compatibility shims (official side, in MODEM_DRIVER; the official files are not edited): benchmark_tdmpc's gym
stand-in and, with --device cpu, its Module.cuda / Tensor.cuda no-ops and agent.device = cpu, plus
  - with --device cpu: torch.empty(..., device="cuda") makes the tensor on the CPU (ReplayBuffer._get_obs
    allocates its frame stacks with device=torch.device("cuda"));
  - the config composed with omegaconf instead of hydra (same files, same order; hydra's launcher plugin is not
    installed).

Threads: --torch-threads as benchmark_tdmpc.py (default 1). Numbers on a shared machine are noisy: compare the
ratio of one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MUJOCO_GL", "egl")

from scripts import benchmark_tdmpc as tdmpc_bench  # noqa: E402
from scripts import tables  # noqa: E402

WARMUP_UPDATES = 1  # untimed official update() calls (first-call allocations); one costs tens of seconds on a CPU
DEFAULT_DEMOS = 1
# Official cfg keys -> pixax Config fields that must agree: TD-MPC's and MoDem's own.
SAME_SETTINGS = {**tdmpc_bench.SAME_SETTINGS, "frame_stack": "frame_stack", "img_size": "image_size",
                 "num_channels": "num_channels", "demos": "demos", "demo_schedule": "demo_schedule"}

# The official side (see benchmark_tdmpc.DRIVER_START for the protocol, the shims and the helpers it defines).
MODEM_DRIVER = tdmpc_bench.DRIVER_START + r'''
# 3. CPU: tensors the official code allocates on torch.device("cuda") directly go to the CPU
if device == "cpu":
    allocate = torch.empty

    def empty_on_cpu(*size, device=None, **kwargs):
        if device is not None and torch.device(device).type == "cuda":
            device = "cpu"
        return allocate(*size, device=device, **kwargs)

    torch.empty = empty_on_cpu
    shims.append("torch.empty(device=cuda) on cpu")

from copy import deepcopy

from omegaconf import OmegaConf

from cfg_parse import parse_cfg
from env import make_env, set_seed
from algorithm.tdmpc import TDMPC
import algorithm.helper as h
from algorithm.helper import Episode, ReplayBuffer

check_official(("cfg_parse", "env", "algorithm.tdmpc", "algorithm.helper"))

# train.py's hydra composition: cfgs/config.yaml, then its defaults list's suite at the top level, then overrides
cfgs = pathlib.Path(official_dir) / "cfgs"
primary = OmegaConf.load(cfgs / "config.yaml")
primary.pop("defaults")
cfg = OmegaConf.merge(primary, OmegaConf.load(cfgs / "suite" / f"{params['suite']}.yaml"),
                      OmegaConf.from_dotlist(params["overrides"]))
cfg = parse_cfg(cfg)
shims.append("config composed with omegaconf (no hydra)")

set_seed(cfg.seed)
env, agent = make_env(cfg), TDMPC(cfg)
demo_buffer, buffer = ReplayBuffer(deepcopy(cfg)), ReplayBuffer(cfg)
if device == "cpu":
    agent.device = torch.device("cpu")
    shims.append("agent.device = cpu")
time_env_steps(env)
# the settings, read before any update (update() writes each buffer's sub-batch size into its cfg.batch_size)
config = {key: (cfg[key] if isinstance(cfg[key], (int, float, str, bool)) else str(cfg[key]))
          for key in params["config_keys"]}
config.update(episode_length=int(cfg.episode_length), seed_steps=int(cfg.seed_steps),
              capacity=int(buffer.capacity), obs_shape=list(cfg.obs_shape), action_dim=int(cfg.action_dim),
              state_dim=int(cfg.state_dim))


def random_episode():
    """A demo for the benchmark: uniform actions in [-1, 1] (speed does not depend on demo quality)."""
    obs = env.reset()
    episode = Episode(cfg, obs, env.state)
    while not episode.done:
        action = torch.rand(cfg.action_dim) * 2 - 1
        obs, reward, done, _ = env.step(action.numpy())
        episode += (obs, env.state, action, reward, done)
    return episode


def collect(step):
    """train.py: collect one trajectory, planning with the agent step of the episode's start; add it."""
    global buffer
    timers["plan"] = timers["env"] = 0.0
    start = time.perf_counter()
    obs = env.reset()
    episode = Episode(cfg, obs, env.state)
    while not episode.done:
        plan_start = time.perf_counter()
        action = agent.plan(obs, env.state, step=step, t0=episode.first)
        synchronize()
        timers["plan"] += time.perf_counter() - plan_start
        obs, reward, done, _ = env.step(action.cpu().numpy())
        episode += (obs, env.state, action, reward, done)
    assert len(episode) == cfg.episode_length
    buffer += episode
    synchronize()
    return {"seconds": time.perf_counter() - start, "plan_seconds": timers["plan"], "env_seconds": timers["env"],
            "agent_steps": len(episode), "episode_reward": float(episode.cumulative_reward)}


metrics = {}


def update_round(step, num_updates):
    start = time.perf_counter()
    for i in range(num_updates):
        metrics.update(agent.update(buffer, step + i, demo_buffer))
    synchronize()
    return {"seconds": time.perf_counter() - start, "updates": num_updates}


L = cfg.episode_length
timed_updates = params["timed_updates"]
setup_start = time.perf_counter()
for _ in range(cfg.demos):
    demo_buffer += random_episode()
for e in range(params["seed_episodes"]):
    collect(e * L)  # step < seed_steps: the (untrained) BC policy acts
start_step = params["start_step"]
update_round(start_step - params["warmup_updates"], params["warmup_updates"])  # untimed: torch's first calls
obs = env.reset()
for i in range(2):
    agent.plan(obs, env.state, step=start_step, t0=i == 0)
synchronize()
config["demo_steps"] = len(demo_buffer)
answer({"setup_seconds": time.perf_counter() - setup_start, "config": config, "shims": shims,
        "planning_horizon": int(min(cfg.horizon, h.linear_schedule(cfg.horizon_schedule, start_step))),
        **torch_facts(agent)})
''' + tdmpc_bench.DRIVER_COMMANDS


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def replay_episodes(args: argparse.Namespace) -> int:
    """Episodes both replays hold: every one the run adds, plus one, so pixax's never fills (its sampling
    mode, and so its update program, stays the same)."""
    return args.seed_episodes + args.episodes + 1


def official_overrides(task: str, args: argparse.Namespace, capacity_steps: int) -> List[str]:
    """train.py command-line overrides of the official side (hydra's key=value)."""
    overrides = [f"task={tdmpc_bench.official_task_name(task)}", f"seed={args.seed}", f"img_size={args.image_size}",
                 f"batch_size={args.batch_size}", f"demos={args.demos}", f"train_steps={capacity_steps}"]
    if args.episode_length:
        overrides.append(f"episode_length={args.episode_length}")
    return overrides


def compare_configs(pixax: "PixaxSide", official: Dict[str, Any]) -> List[str]:
    """The settings on which the two sides differ, as 'name: pixax X vs official Y' lines."""
    config, trainer = pixax.agent_config, pixax.trainer
    differences = tdmpc_bench.compare_settings(config, official, SAME_SETTINGS)
    if config.head != "flatten":
        differences.append(f"head: pixax {config.head!r} vs official 'flatten'")
    h, w, channels = trainer.obs_shape
    if list(official["obs_shape"]) != [channels, h, w]:  # official frames are channel-first
        differences.append(f"observation: pixax (h, w, C) {trainer.obs_shape} vs official (C, h, w) "
                           f"{tuple(official['obs_shape'])}")
    return differences + tdmpc_bench.differing_pairs({
        "episode_length": (pixax.episode_length, official["episode_length"]),
        "seed_steps": (config.num_seed_frames // config.action_repeat, official["seed_steps"]),
        "state size": (trainer.state_dim, official["state_dim"]),
        "action size": (trainer.action_dim, official["action_dim"]),
        "demo steps": (config.demos * pixax.episode_length, official["demo_steps"])})


@contextlib.contextmanager
def dmc_step_limit(agent_steps: Optional[int], action_repeat: int):
    """Inside: every dm_control suite task this process loads ends after agent_steps x action_repeat simulator
    steps (its control.Environment step limit, which envs/dmc.py reads as its episode length); None: unchanged."""
    from dm_control import suite

    load = suite.load

    def load_with_limit(*args, **kwargs):
        environment = load(*args, **kwargs)
        environment._step_limit = agent_steps * action_repeat
        return environment

    if agent_steps:
        suite.load = load_with_limit
    try:
        yield
    finally:
        suite.load = load


# ----------------------------------------------------------------------------------------------
# pixax
# ----------------------------------------------------------------------------------------------


class _CompileOnly:
    """Stands in for MoDemTrainer's update program for one call: compiles the program for exactly the
    arguments run_updates passes, then stops run_updates (benchmark_tdmpc._Built) before it runs."""

    def __init__(self, program):
        self.program = program

    def __call__(self, *args):
        self.program.lower(*args).compile()
        raise tdmpc_bench._Built(self.program)


class PixaxSide(tdmpc_bench.PixaxSide):
    """pixax's MoDem through core/modem_loop.MoDemTrainer, timed as benchmark_tdmpc.PixaxSide times TD-MPC."""

    agent_name = "modem"
    obs_type = "pixels"

    def configure(self, launcher, args: argparse.Namespace) -> None:
        import envs

        launcher.agent.image_size = args.image_size
        launcher.agent.batch_size = args.batch_size
        launcher.agent.demos = args.demos
        # the replay holds exactly the benchmark's episodes (module docstring)
        with dmc_step_limit(args.episode_length, self.agent.Config.action_repeat):
            probe = envs.make(launcher.task, obs_type="states", action_repeat=self.agent.Config.action_repeat)
        launcher.agent.replay_capacity = replay_episodes(args) * probe.max_episode_steps
        probe.close()

    def build_trainer(self, args: argparse.Namespace):
        from core.modem_loop import MoDemTrainer
        from scripts import collect_demos

        demos_root = str(pathlib.Path(self.run_dir.name) / "demos")
        with dmc_step_limit(args.episode_length, self.agent_config.action_repeat):
            collect_demos.main(["--random", "--task", self.loop.task, "--episodes", str(args.demos),
                                "--image-size", str(args.image_size),
                                "--action-repeat", str(self.agent_config.action_repeat), "--root", demos_root])
            return MoDemTrainer(self.agent, self.agent_config, self.loop, self.run_dir.name, demos_root=demos_root)

    def timed_updates(self, args: argparse.Namespace) -> int:
        return args.updates or self.episode_length

    def precompile(self, trainer, num_updates: int) -> str:
        from core import modem_loop

        build = modem_loop._updates_program
        modem_loop._updates_program = lambda *settings: _CompileOnly(build(*settings))
        try:
            trainer.run_updates(num_updates)
        except tdmpc_bench._Built:
            return "compiled ahead of time"
        finally:
            modem_loop._updates_program = build
        raise RuntimeError("MoDemTrainer.run_updates ran without calling modem_loop._updates_program's program: "
                           "precompile no longer matches core/modem_loop.py")

    def plan_input(self, obs, info):
        return {"pixels": obs, "state": info[self.trainer.state_key]}


# ----------------------------------------------------------------------------------------------
# official
# ----------------------------------------------------------------------------------------------

OFFICIAL_FILES = ("algorithm/tdmpc.py", "algorithm/helper.py", "cfgs/config.yaml", "cfgs/suite/dmcontrol.yaml",
                  "cfg_parse.py", "env.py", "tasks/dmcontrol.py")


def checked_official_dir(folder: str) -> pathlib.Path:
    """--official-dir, resolved, once it is seen to hold the official files this benchmark imports."""
    official_dir = pathlib.Path(folder).resolve()
    missing = [name for name in OFFICIAL_FILES if not (official_dir / name).is_file()]
    if missing:
        raise SystemExit(f"--official-dir {official_dir} lacks {', '.join(missing)}: pass a folder with "
                         f"facebookresearch/modem's {', '.join(OFFICIAL_FILES)}")
    return official_dir


class OfficialSide(tdmpc_bench.OfficialSide):
    """The official MoDem in a --python subprocess (MODEM_DRIVER); collect/update as TD-MPC's."""

    def __init__(self, pixax: PixaxSide, args: argparse.Namespace, torch_threads: int):
        official_dir = checked_official_dir(args.official_dir)
        self.name = f"official ({torch_threads} thr)"
        params = {"official_dir": str(official_dir), "code_folder": "", "suite": "dmcontrol",
                  "overrides": official_overrides(pixax.loop.task, args, pixax.loop.replay_capacity),
                  "device": args.device, "torch_threads": torch_threads, "seed_episodes": args.seed_episodes,
                  "start_step": pixax.start_step, "warmup_updates": WARMUP_UPDATES,
                  "timed_updates": pixax.num_updates, "config_keys": sorted(SAME_SETTINGS)}
        tables.DriverProcess.__init__(self, args.python, MODEM_DRIVER, params, prefix="modem_official_bench_")


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", help="folder with facebookresearch/modem's files (outside this repository)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with torch and omegaconf for the official side")
    p.add_argument("--skip-official", action="store_true", help="time pixax only")
    p.add_argument("--task", default="cartpole_swingup", help="a dm_control task, pixax name (e.g. walker_walk)")
    p.add_argument("--device", default="cpu", choices=tdmpc_bench.DEVICES, help="where both sides run")
    p.add_argument("--episodes", type=int, default=1, help="timed episodes per side (each: L plans + N updates)")
    p.add_argument("--updates", type=int, default=None,
                   help="timed updates after each episode (default: the episode length, the official schedule)")
    p.add_argument("--episode-length", type=int, default=None,
                   help="agent steps per episode on both sides (default: the task's, 500)")
    p.add_argument("--seed-episodes", type=int, default=1, help="seed-phase episodes that fill the replay first")
    p.add_argument("--demos", type=int, default=DEFAULT_DEMOS, help="random-action demo episodes (official: 5)")
    p.add_argument("--image-size", type=int, default=224, help="frame side on both sides (official 224; >= 135)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="sequences per update on both sides (official 256: interaction + demo)")
    p.add_argument("--torch-threads", default="1",
                   help="comma-separated torch intra-op thread counts, one official process each (default 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of both sides (official default 1)")
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    if not args.skip_official and not args.official_dir:
        p.error("--official-dir is required (or --skip-official)")
    for name in ("episodes", "seed_episodes", "demos", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("updates", "episode_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    args.torch_threads = tables.torch_thread_counts(p, args.torch_threads)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    tables.select_jax_device(args.device)
    from agents import modem, tdmpc

    if modem.suite_of(args.task) != "dmc":
        raise SystemExit(f"--task {args.task}: this benchmark runs DMControl tasks (the official side's dmcontrol "
                         "suite)")
    if not args.skip_official:  # fail before any work
        checked_official_dir(args.official_dir)
        tdmpc_bench.official_task_name(args.task)
    config = modem.config_for_task(args.task, image_size=args.image_size, batch_size=args.batch_size,
                                   demos=args.demos)
    report = tdmpc_bench.machine_report(args.task, args.device)
    load_start = report["load_average_start"]
    print(f"MoDem {args.task} from {config.image_size}x{config.image_size} pixels (stack {config.frame_stack}) + "
          f"state: {config.iterations} iterations x {config.num_samples} samples "
          f"(+{tdmpc.num_policy_trajectories(config)} policy), {config.num_elites} elites, H {config.horizon}, batch "
          f"{config.batch_size} (demo schedule {config.demo_schedule}), mlp {config.mlp_dim}, latent "
          f"{config.latent_dim}, action repeat {config.action_repeat}; {args.demos} random demo(s), "
          f"{args.seed_episodes} seed episode(s), then {args.episodes} timed episode(s) per side, the sides' phases "
          f"interleaved", flush=True)

    pixax = PixaxSide(args.task, args)
    sides: List[Any] = [pixax]
    tdmpc_bench.print_pixax_setup(pixax)
    try:
        if not args.skip_official:
            tdmpc_bench.start_official_sides(sides, args.torch_threads,
                                             lambda threads: OfficialSide(pixax, args, threads),
                                             lambda official: compare_configs(pixax, official))
        results = tdmpc_bench.time_sides(sides, pixax, args.episodes)
    finally:
        for side in sides[1:]:
            side.kill()
    report["load_average_end"] = os.getloadavg()
    demo_rows = modem.demo_batch_size(pixax.agent_config, pixax.start_step)
    print(f"\nMoDem {args.task} ({config.image_size}x{config.image_size} pixels + state), {args.episodes} timed "
          f"episode(s) of {pixax.episode_length} planned steps + {pixax.num_updates} updates ({demo_rows} demo + "
          f"{config.batch_size - demo_rows} interaction sequences) per side; agent steps/s = 1 / (collect s/step + "
          f"update s/update); x official = agent steps/s over the fastest official row; load average "
          f"{load_start[0]:.1f} at the start, {report['load_average_end'][0]:.1f} at the end")
    return tdmpc_bench.print_results(sides, results, report, args.json)


if __name__ == "__main__":
    main()
