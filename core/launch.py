"""What every off-policy pixel launcher shares: flags -> resolved settings -> run directory -> training.

A launcher (experiments/<agent>.py) is a config plus one call:

    python experiments/drqv2.py --config.task=walker_walk --config.seeds=0,1,2 --config.agent.lr=8e-5
    python experiments/drqv2.py --resume=runs/drqv2/walker_walk/<timestamp>

`config.agent.*` fields start unset: each takes, in order, the agent's default (the paper's value),
the task's tier and per-task override, then the value given on the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import sys
import types
import typing

from absl import logging as absl_logging
from ml_collections import config_dict

import envs
from core import devices
from core import logging as runlog
from core.offpolicy import LoopConfig, OffPolicyTrainer, preflight

SEED_STRATEGIES = ("auto", "map", "vmap", "unroll")
OBS_TYPES = ("pixels", "states")
AUTO_BOOL = ("auto", "true", "false")


def base_config(agent_config_cls, task: str = "cartpole_swingup", obs: str = "pixels") -> config_dict.ConfigDict:
    """The launcher flags; `agent` holds one unset field per field of the agent's Config."""
    c = config_dict.ConfigDict()
    c.task = task
    c.seeds = "0"                      # comma-separated: "0,1,2,3" trains 4 seeds in one process
    c.obs = obs                        # pixels | states
    c.root = "runs"                    # run directories go to <root>/<agent>/<task>/<timestamp>
    c.checkpoint_every_frames = 100_000
    c.save_video = True
    c.video_size = 128
    c.seed_strategy = "auto"           # auto | map | vmap | unroll: how the seeds share one jitted program
    c.async_envs = "auto"              # auto | true | false: environments in subprocesses
    c.frames_on_device = "auto"        # auto | true | false: pixel replay frames also on the accelerator
    c.parallel_eval = 0                # evaluation episodes at once per seed; 0: auto (core/offpolicy.py)
    c.progress = True
    c.mw_double_reset = True           # Meta-World only: store the official trainer's second reset per episode
    add_device_flags(c)
    c.agent = unset_agent_fields(agent_config_cls)
    return c


def add_device_flags(c: config_dict.ConfigDict) -> None:
    """The device and process flags every launcher has (core/devices.py)."""
    c.devices = "auto"                 # auto | N | SxD: N devices, or S on the seed axis x D on the data axis
    c.coordinator = ""                 # host:port of process 0 for a run over several processes (jax.distributed)
    c.num_processes = 0                # with --config.coordinator: how many processes join
    c.process_id = -1                  # with --config.coordinator: this process's index, 0 .. num_processes - 1


def unset_agent_fields(agent_config_cls) -> config_dict.ConfigDict:
    """One unset flag per field of the agent's Config (obs_type is a launcher flag)."""
    hints = typing.get_type_hints(agent_config_cls)
    return config_dict.ConfigDict({f.name: config_dict.placeholder(_plain_type(hints[f.name]))
                                   for f in dataclasses.fields(agent_config_cls) if f.name != "obs_type"})


def _plain_type(annotation) -> type:
    """The flag type of a Config field: int, float, str or bool (Optional[float] -> float)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, str, bool) else object


def parse_seeds(text) -> tuple[int, ...]:
    items = [s for s in str(text).replace(" ", "").split(",") if s != ""]
    try:
        seeds = tuple(int(s) for s in items)
    except ValueError:
        seeds = ()
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--config.seeds={text!r}: expected distinct non-negative integers separated by commas, "
                         f"e.g. --config.seeds=0 or --config.seeds=0,1,2,3")
    return seeds


def _auto_bool(config: config_dict.ConfigDict, name: str) -> bool | None:
    """An auto|true|false flag as None|True|False, after checking it (runs saved before the flag: auto)."""
    value = str(config.get(name, "auto")).lower()
    _choice(name, value, AUTO_BOOL)
    return {"auto": None, "true": True, "false": False}[value]


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"--config.{name}={value!r} is not valid; choose one of {', '.join(map(str, valid))}")


def _positive(name: str, value, allow_zero: bool = False) -> None:
    if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"--config.{name}={value!r}: expected a {'non-negative' if allow_zero else 'positive'} integer")


def resolve(agent_module, config: config_dict.ConfigDict):
    """Checks every flag and returns (agent Config, LoopConfig); raises ValueError naming what is wrong."""
    if config.task not in envs.TASKS:
        raise ValueError(f"--config.task={config.task!r} is not a known task; valid tasks: {', '.join(envs.TASKS)}")
    seeds = parse_seeds(config.seeds)
    _choice("obs", config.obs, OBS_TYPES)
    _choice("seed_strategy", config.seed_strategy, SEED_STRATEGIES)
    async_envs, frames_on_device = _auto_bool(config, "async_envs"), _auto_bool(config, "frames_on_device")
    for name in ("checkpoint_every_frames", "video_size"):
        _positive(name, config[name])
    _positive("parallel_eval", config.get("parallel_eval", 0), allow_zero=True)
    overrides = {k: v for k, v in config.agent.items() if v is not None}
    agent_config = agent_module.config_for_task(config.task, obs_type=config.obs, **overrides)
    a = agent_config
    # The device layout must fit the seeds and the batch: checked here, before any run directory exists
    # (the loops plan the same layout again when they are built). Runs saved before the flag existed: "auto".
    device_spec = str(config.get("devices", "auto"))
    devices.plan(device_spec, len(seeds), a.batch_size)
    loop = LoopConfig(
        task=config.task, seeds=seeds, obs_type=config.obs, action_repeat=a.action_repeat,
        frame_stack=a.frame_stack, image_size=a.image_size,
        num_train_frames=a.num_train_frames, num_seed_frames=a.num_seed_frames,
        # the planners (TD-MPC) have no update_every_steps or nstep: one update per agent step, sequences
        update_every_steps=getattr(a, "update_every_steps", 1), batch_size=a.batch_size,
        replay_capacity=a.replay_capacity, nstep=getattr(a, "nstep", 1), discount=a.discount, eval_every_frames=a.eval_every_frames,
        num_eval_episodes=a.num_eval_episodes, checkpoint_every_frames=config.checkpoint_every_frames,
        save_video=bool(config.save_video), video_size=config.video_size, seed_strategy=config.seed_strategy,
        async_envs=async_envs, frames_on_device=frames_on_device,
        parallel_eval=int(config.get("parallel_eval", 0)),
        progress=bool(config.progress), mw_double_reset=bool(config.mw_double_reset), devices=device_spec,
        reward_clip=getattr(a, "reward_clip", None), prioritized_replay=bool(getattr(a, "prioritized", False)),
        env_options=env_options(config.task, a))
    return agent_config, loop


# Agent Config fields that are environment settings (Dopamine's Atari protocol); passed to the
# environments that take them.
ENV_OPTION_FIELDS = ("sticky_actions", "terminal_on_life_loss")


def env_options(task: str, agent_config) -> tuple:
    """(name, value) pairs of the agent's environment settings that the task's constructor accepts."""
    accepted = inspect.signature(envs.SUITES[envs.suite_of(task)].make).parameters
    return tuple((name, getattr(agent_config, name)) for name in ENV_OPTION_FIELDS
                 if hasattr(agent_config, name) and name in accepted)


def versions() -> dict:
    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "mujoco", "dm-control", "gymnasium", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def run(agent_module, agent_name: str, config: config_dict.ConfigDict, resume: str = "",
        trainer_cls=OffPolicyTrainer) -> dict:
    """Trains (or resumes) one run; bad input stops here, before any work, with a message.
    `trainer_cls`: the loop (OffPolicyTrainer, or core/episodic.py's EpisodicTrainer for the planners)."""
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint operation at INFO
    try:  # first: jax.distributed must join before any JAX computation
        devices.initialize(config.coordinator, config.num_processes, config.process_id)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"pixax: {e}")
    try:
        if resume:
            run_dir = runlog.check_run_dir(resume)
            saved = runlog.read_config(run_dir)
            if saved.get("agent") != agent_name:
                raise ValueError(f"--resume={resume!r} is a run of agent {saved.get('agent')!r}, not {agent_name!r}; "
                                 f"resume it with experiments/{saved.get('agent')}.py")
            config = config_dict.ConfigDict(saved["launcher"])
        agent_config, loop = resolve(agent_module, config)
        if trainer_cls is OffPolicyTrainer:  # its host replay's RAM check (other loops check their own)
            preflight(loop)
        if not resume:
            run_dir = runlog.new_run_dir(config.root, agent_name, config.task)
            runlog.write_config(run_dir, {
                "agent": agent_name, "task": config.task, "launcher": config.to_dict(),
                "agent_config": dataclasses.asdict(agent_config), "loop": dataclasses.asdict(loop),
                "versions": versions(), "command": " ".join(sys.argv)})
        trainer = trainer_cls(agent_module, agent_config, loop, run_dir)
    except (ValueError, MemoryError) as e:
        sys.exit(f"pixax: {e}")
    print(f"pixax: {agent_name} on {loop.task}, seeds {list(loop.seeds)}, {loop.num_train_frames:,} frames -> {run_dir}",
          file=sys.stderr)
    try:
        summary = trainer.train(resume=bool(resume))
    finally:
        trainer.close()
    summary["run_dir"] = run_dir
    print(f"pixax: done at {summary['step'] * loop.action_repeat:,} frames; last evaluation return "
          f"{summary['last_eval']:.1f} (mean over seeds); results in {run_dir}", file=sys.stderr)
    return summary


def main(agent_module, agent_name: str, trainer_cls=OffPolicyTrainer) -> None:
    """The command line of a launcher: `--config.*` flags (ml_collections) and `--resume`."""
    defaults = (getattr(agent_module, "DEFAULT_TASK", "cartpole_swingup"), getattr(agent_module, "DEFAULT_OBS", "pixels"))
    command_line(base_config(agent_module.Config, *defaults),
                 lambda config, resume: run(agent_module, agent_name, config, resume=resume, trainer_cls=trainer_cls))


def command_line(defaults: config_dict.ConfigDict, run_fn) -> None:
    """absl flags `--config.*` over `defaults` and `--resume`, then run_fn(config, resume)."""
    from absl import app, flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_dict("config", defaults)
    resume = flags.DEFINE_string("resume", "", "a run directory to continue exactly where it stopped")

    def run_from_flags(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --config.<name>=<value>)")
        run_fn(config.value, resume.value)

    app.run(run_from_flags)
