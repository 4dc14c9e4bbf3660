"""Record MoDem demonstrations (spec §3.5, §3.7) from a trained pixax agent, Meta-World's scripted policies,
or a random policy.

    python scripts/collect_demos.py --run runs/tdmpc/quadruped_run/<timestamp> --episodes 5
    python scripts/collect_demos.py --run runs/drqv2/adroit_door/<timestamp> --episodes 5 --max-episodes 50
    python scripts/collect_demos.py --scripted --task mw_assembly --episodes 5
    python scripts/collect_demos.py --random --task walker_walk --episodes 2 --image-size 64 --root /tmp/demos

writes the demos dataset `pixax/<task>/demos-v0` (data/demos.py) under --root (MINARI_DATASETS_PATH
semantics; default: that variable, else ~/.minari/datasets) and prints where.

The policy. --run loads the run directory of any pixax agent that has `create` and either the off-policy
`act(state, obs, step, key, eval_mode)` (DrQ-v2, DrM, TD3...) or the planner `plan` (TD-MPC): its
config.json gives the agent, its Config, the task and the environment settings; its latest checkpoint
(core/checkpoint.py, as the loops save it: {"agent": states stacked over the run's seeds, "replay": ...})
gives the agent of --seed-index (only the agent is read). It acts in evaluation mode (deterministic
actor, planner without exploration noise) at the checkpoint's agent step. --scripted (Meta-World only) acts
with the task's hand-written expert of the metaworld package (metaworld.policies.ENV_POLICY_MAP, e.g.
SawyerAssemblyV3Policy for mw_assembly) on the 39-d state, plus N(0, --noise^2) action noise (spec §3.7:
scripted policies + small noise, successful episodes kept). --random acts uniformly in [-1, 1] (for tests).

Each recorded episode stores, for o_0 .. o_L, an RGB render of --image-size (MoDem: 224) from the task's
camera, and the state vector MoDem's loop reads (core/modem_loop.py): for Meta-World and Adroit MoDem's
proprioceptive slice (info["modem_state"], agents/modem.py env_options_for_task: Meta-World 8-d hand +
gripper, Adroit door 30-d / hammer 36-d / pen 27-d), recorded with MoDem's episode length (Meta-World 100
agent steps; door / hammer / pen 100 / 125 / 50); for DMControl the full state observation (the flattened
observation dict). A pixel-trained DMControl agent is fed by the environment it was trained with, and a
states copy of the same task, reset with the same seed and stepped with the same actions, gives the state
(its rewards must agree step by step).

Rewards (--reward): "sparse" = success - 1 (MoDem's learning reward for Meta-World and Adroit: the
environment's sparse_reward option, from the last simulator step of each agent step, as the loop gets it),
"dense" = the environment's reward (DMControl); "auto" picks sparse for Meta-World / Adroit.

Which episodes. Up to --max-episodes episodes are played (environment seeds from --seed); an episode that
ends before the task's fixed length is dropped (spec §10 #7). Successful episodes (the environment's
info["episode_success"] at the end, or any per-step success) are kept first, in the order played, and
collection stops once --episodes of them exist; the rest is filled with the highest-return episodes. The
metadata records the policy, the settings and every kept episode's seed, return and success.

The action repeat defaults to the run's (random: 2, MoDem's); demos must be recorded with the action
repeat of the MoDem run that uses them (its episode length is what data/demos.py checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import os
import pathlib
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from core import seeds as seeding  # noqa: E402
from core.logging import CONFIG_FILE  # noqa: E402
from core.offpolicy import LoopConfig, action_size, env_kwargs, episode_seed  # noqa: E402
from data import demos as demo_data  # noqa: E402
from data.datasets import datasets_root  # noqa: E402

DEMO_STREAM = 2  # environment seeds: episode_seed(seed, DEMO_STREAM, i); training uses 0, evaluation 1
SPARSE_REWARD_SUITES = ("metaworld", "adroit")  # MoDem learns from success - 1 there (spec §3.2)
SCRIPTED_NOISE = 0.1  # std of the Gaussian action noise added to Meta-World's scripted policies (spec §3.7)
REWARD_TYPES = ("auto", "dense", "sparse")
RANDOM_ACTION_REPEAT = 2  # MoDem's action repeat in every suite
ACT_PARAMETERS = ("state", "obs", "step", "key", "eval_mode")  # the off-policy loop's agent.act


class RunError(ValueError):
    """A run directory that cannot give a policy: what is missing or wrong, and where."""


# ---------------------------------------------------------------------------------------------- policies


@dataclasses.dataclass
class Policy:
    """act(obs, info, t) -> action (A,) float32 in the environment's action space; `description` goes to metadata."""

    act: Callable[[np.ndarray, dict, int], np.ndarray]
    description: Dict[str, Any]
    obs_type: str  # the observations it reads: "states" or "pixels"
    env_settings: Dict[str, Any]  # envs.make keyword arguments of the environment it acts in


def random_policy(action_dim: int, seed: int) -> Callable[[np.ndarray, dict, int], np.ndarray]:
    rng = np.random.default_rng([seed, DEMO_STREAM])
    return lambda obs, info, t: rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)


def _tuples(value):
    """JSON lists back to the tuples the configs hold."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_run(run_dir: str) -> Dict[str, Any]:
    """config.json of a run directory, checked; RunError naming what is wrong."""
    if not os.path.isdir(run_dir):
        raise RunError(f"--run={run_dir!r}: no such directory; pass a run directory (runs/<agent>/<task>/<timestamp>) "
                       f"written by a pixax launcher")
    missing = [name for name in (CONFIG_FILE, "checkpoints") if not os.path.exists(os.path.join(run_dir, name))]
    if missing:
        raise RunError(f"--run={run_dir!r} is not a pixax run directory: it has no {' and no '.join(missing)} "
                       f"(a run directory holds config.json and checkpoints/)")
    path = os.path.join(run_dir, CONFIG_FILE)
    try:
        with open(path) as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path} is not valid JSON ({error}); the run directory is damaged") from None
    absent = [key for key in ("agent", "agent_config", "loop") if key not in saved]
    if absent:
        raise RunError(f"{path} has no {absent}: it was not written by a pixax launcher (core/launch.py)")
    return saved


def _restore_agent(run_dir: str, like_states: Any) -> tuple:
    """The stacked agent states of the latest checkpoint (only the "agent" item) and its meta dict."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
    try:
        step = manager.latest_step()
        if step is None:
            raise RunError(f"{directory} holds no complete checkpoint; the run stopped before its first save")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # restore onto the first device
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                {"agent": like_states})
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True),
                meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"checkpoint {step} in {directory} does not hold this run's agent states "
                           f"({type(error).__name__}: {str(error)[:300]}); was config.json edited?") from None
    finally:
        manager.close()
    states = jax.tree.map(jnp.asarray, restored["state"]["agent"])
    return states, dict(restored["meta"] or {}), int(step)


def load_run_policy(run_dir: str, seed_index: int, action_repeat: Optional[int]) -> tuple:
    """(task, Policy) of a run directory's latest checkpoint (see the module docstring)."""
    saved = read_run(run_dir)
    agent_name = saved["agent"]
    try:
        module = importlib.import_module(f"agents.{agent_name}")
    except ImportError:
        raise RunError(f"{run_dir}: config.json names agent {agent_name!r}, but there is no agents/{agent_name}.py")
    has_plan = hasattr(module, "plan") and hasattr(module, "planning_horizon")
    has_act = hasattr(module, "act") and tuple(inspect.signature(module.act).parameters)[:5] == ACT_PARAMETERS
    if not hasattr(module, "create") or not (has_plan or has_act):
        raise RunError(f"agent {agent_name!r} has neither the planner `plan` nor the off-policy "
                       f"`act{ACT_PARAMETERS}`; demos can be recorded from DrQ-v2, DrM, TD3 or TD-MPC runs")

    field_names = {f.name for f in dataclasses.fields(LoopConfig)}
    loop = LoopConfig(**{k: _tuples(v) for k, v in saved["loop"].items() if k in field_names})
    config_fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(saved["agent_config"]) - config_fields)
    if unknown:
        raise RunError(f"{run_dir}: config.json's agent_config has fields {unknown} that agents/{agent_name}.py's "
                       f"Config does not know; the agent changed since the run")
    config = module.Config(**_tuples(saved["agent_config"]))
    if not 0 <= seed_index < len(loop.seeds):
        raise RunError(f"--seed-index={seed_index}: the run trained seeds {list(loop.seeds)}; use an index in "
                       f"[0, {len(loop.seeds) - 1}]")

    settings = env_kwargs(loop)
    if action_repeat is not None:
        settings["action_repeat"] = action_repeat
    probe = envs.make(loop.task, seed=0, **settings)
    obs_shape, act_space = probe.observation_space.shape, probe.action_space
    has_proprio = getattr(probe, "proprio_space", None) is not None
    probe.close()
    if not hasattr(act_space, "shape") or hasattr(act_space, "n"):
        raise RunError(f"{loop.task} has discrete actions; MoDem demos need continuous actions in [-1, 1]")
    action_dim = action_size(act_space)

    def fresh():
        return module.create(jax.random.PRNGKey(0), obs_shape, action_dim, config)

    like = jax.eval_shape(lambda: seeding.stack([fresh() for _ in loop.seeds]))
    states, meta, checkpoint_step = _restore_agent(run_dir, like)
    state = seeding.unstack(states, seed_index)
    step = int(meta.get("step", checkpoint_step))
    key = jax.random.PRNGKey(int(loop.seeds[seed_index]))

    if has_plan:
        horizon = int(module.planning_horizon(config, step))
        mean = {"value": jnp.zeros((config.horizon, action_dim), jnp.float32)}

        def act(obs, info, t):
            action, mean["value"] = module.plan(state, jnp.asarray(obs), jax.random.fold_in(key, t), mean["value"],
                                                step=step, horizon=horizon, first_step=jnp.asarray(t == 0),
                                                eval_mode=True)
            return np.asarray(action, np.float32)
    else:
        act_jit = jax.jit(lambda s, o, k, extra: module.act(s, o[None], step, k, eval_mode=True, **extra)[0])
        # the off-policy loop passes the environment's proprioceptive vector to agents that take it (Adroit)
        pass_proprio = has_proprio and "proprio" in inspect.signature(module.act).parameters

        def act(obs, info, t):
            extra = {"proprio": jnp.asarray(info["proprio"], jnp.float32)[None]} if pass_proprio else {}
            return np.asarray(act_jit(state, jnp.asarray(obs), jax.random.fold_in(key, t), extra), np.float32)

    description = {"policy": agent_name, "run_dir": os.path.abspath(run_dir), "checkpoint_step": checkpoint_step,
                   "agent_step": step, "seed": int(loop.seeds[seed_index]), "mode": "evaluation"}
    return loop.task, Policy(act, description, loop.obs_type, settings)


def scripted_policy(task: str, noise: float, seed: int) -> Callable[[np.ndarray, dict, int], np.ndarray]:
    """Meta-World's scripted expert of `task` (metaworld.policies.ENV_POLICY_MAP) on the 39-d state observation,
    plus N(0, noise^2) noise, clipped to [-1, 1]."""
    from envs import metaworld as metaworld_env
    from metaworld.policies import ENV_POLICY_MAP

    expert = ENV_POLICY_MAP[f"{metaworld_env.resolve(task)}-v3"]()
    rng = np.random.default_rng([seed, DEMO_STREAM])

    def act(obs, info, t):
        action = expert.get_action(np.asarray(obs, np.float64)) + noise * rng.standard_normal(4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
    return act


def modem_recording_options(task: str, sparse: bool) -> Dict[str, Any]:
    """envs.make options that give MoDem's state (info["modem_state"]), episode length and, with `sparse`, its
    reward for a Meta-World or Adroit task (agents/modem.py env_options_for_task, without the frame-stack fill,
    which only the acting policy sees); {} for other suites."""
    from agents import modem

    if envs.suite_of(task) not in SPARSE_REWARD_SUITES:
        return {}
    options = modem.env_options_for_task(task)
    options.pop("zero_fill_stack", None)
    options["sparse_reward"] = sparse
    return options


# ---------------------------------------------------------------------------------------------- recording


def _state_of(obs: np.ndarray, info: dict, source: str, state_env_obs: Optional[np.ndarray]) -> np.ndarray:
    if source in ("proprio", "modem_state"):
        return np.asarray(info[source], np.float32)
    if source == "observation":
        return np.asarray(obs, np.float32)
    return np.asarray(state_env_obs, np.float32)


def record_episode(env, policy: Policy, *, seed: int, image_size: int, state_source: str, sparse: bool,
                   state_env=None) -> Optional[Dict[str, Any]]:
    """One episode as data/demos.py's dict (+ seed, return, episode_success), or None when it ends before the
    environment's fixed length. state_source: "modem_state", "proprio", "observation" or "state_env" (a states
    copy of the task stepped in lockstep). An environment with sparse_reward gives the sparse reward itself."""
    env_sparse = bool(getattr(env, "sparse_reward", False))
    length = env.max_episode_steps
    obs, info = env.reset(seed=seed)
    state_obs = state_env.reset(seed=seed)[0] if state_env is not None else None
    pixels, states, actions, rewards = [env.render(image_size)], [_state_of(obs, info, state_source, state_obs)], [], []
    success, episode_success = [0.0], 0.0
    for t in range(length):
        action = np.clip(policy.act(obs, info, t), -1.0, 1.0).astype(np.float32)  # stored as stepped (spec §2.7)
        obs, reward, terminated, truncated, info = env.step(action)
        if state_env is not None:
            state_obs, state_reward, *_ = state_env.step(action)
            if not np.isclose(state_reward, reward, rtol=1e-5, atol=1e-6):
                raise RuntimeError(f"{getattr(env, 'task', 'the task')}: the states copy of the task drifted from the "
                                   f"agent's environment at step {t} (reward {state_reward} vs {reward}); its "
                                   f"simulation is not deterministic")
        step_success = float(info.get("success", 0.0))
        episode_success = max(episode_success, float(info.get("episode_success", step_success)))
        pixels.append(env.render(image_size))
        states.append(_state_of(obs, info, state_source, state_obs))
        actions.append(action)
        rewards.append(step_success - 1.0 if sparse and not env_sparse else float(reward))
        success.append(step_success)
        if (terminated or truncated) and t < length - 1:
            return None
    return {"pixels": np.stack(pixels).astype(np.uint8), "state": np.stack(states), "actions": np.stack(actions),
            "rewards": np.asarray(rewards, np.float32), "success": np.asarray(success, np.float32), "seed": int(seed),
            "return": float(np.sum(rewards)), "episode_success": bool(episode_success > 0),
            "reports_success": "success" in info}


def choose(episodes: Sequence[Dict[str, Any]], count: int) -> List[Dict[str, Any]]:
    """Successful episodes first (in the order played), then the rest by return (highest first)."""
    successful = [e for e in episodes if e["episode_success"]]
    others = sorted((e for e in episodes if not e["episode_success"]), key=lambda e: -e["return"])
    return (successful + others)[:count]


# ---------------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory of a trained pixax agent (runs/<agent>/<task>/<timestamp>)")
    source.add_argument("--scripted", action="store_true",
                        help="record Meta-World's scripted expert + --noise (needs --task mw_<name>)")
    source.add_argument("--random", action="store_true", help="record a uniform random policy (needs --task)")
    parser.add_argument("--task", help="task of --scripted / --random (a --run's task comes from its config.json)")
    parser.add_argument("--noise", type=float, default=SCRIPTED_NOISE,
                        help=f"std of the scripted policy's Gaussian action noise (default {SCRIPTED_NOISE})")
    parser.add_argument("--episodes", type=int, default=5, help="demos to write (MoDem: 5)")
    parser.add_argument("--max-episodes", type=int, default=None,
                        help="episodes to play at most (default 2 x --episodes)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the rendered frames (MoDem: 224)")
    parser.add_argument("--action-repeat", type=int, default=None,
                        help=f"default: the run's; --random: {RANDOM_ACTION_REPEAT}")
    parser.add_argument("--reward", choices=REWARD_TYPES, default="auto",
                        help="sparse = success - 1, dense = environment reward; auto: sparse for Meta-World/Adroit")
    parser.add_argument("--seed-index", type=int, default=0, help="which of the run's seeds acts")
    parser.add_argument("--seed", type=int, default=0, help="environment seeds (and the random policy's)")
    parser.add_argument("--root", default=None, help="datasets root (MINARI_DATASETS_PATH semantics)")
    parser.add_argument("--dataset-id", default=None, help="default: pixax/<task>/demos-v0")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return parser


def _check_positive(parser: argparse.ArgumentParser, name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        parser.error(f"--{name} must be a positive integer, got {value}")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parses the flags, records, writes; returns {"path", "dataset_id", "episodes", "successful"}.
    Bad flags or a bad run directory exit with status 2 and a message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("episodes", "max_episodes", "image_size", "action_repeat"):
        _check_positive(parser, name.replace("_", "-"), getattr(args, name))
    max_episodes = 2 * args.episodes if args.max_episodes is None else args.max_episodes
    if max_episodes < args.episodes:
        parser.error(f"--max-episodes ({max_episodes}) must be at least --episodes ({args.episodes})")

    if args.noise < 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    if args.random or args.scripted:
        flag = "--random" if args.random else "--scripted"
        if args.task is None:
            parser.error(f"{flag} needs --task (e.g. --task {'walker_walk' if args.random else 'mw_assembly'})")
        if args.task not in envs.TASKS:
            parser.error(f"--task={args.task!r} is not a known task; valid tasks: {', '.join(envs.TASKS)}")
        if args.scripted and envs.suite_of(args.task) != "metaworld":
            parser.error(f"--scripted records Meta-World's scripted policies (mw_<name> tasks); {args.task!r} is a "
                         f"{envs.suite_of(args.task)} task: record its demos from a trained run (--run)")
        task = args.task
        settings = dict(obs_type="states", action_repeat=args.action_repeat or RANDOM_ACTION_REPEAT)
        if args.random:
            probe = envs.make(task, seed=0, **settings)
            action_dim = action_size(probe.action_space)
            probe.close()
            policy = Policy(random_policy(action_dim, args.seed), {"policy": "random", "seed": args.seed}, "states",
                            settings)
        else:
            policy = Policy(scripted_policy(task, args.noise, args.seed),
                            {"policy": "scripted", "noise": args.noise, "seed": args.seed}, "states", settings)
    else:
        if args.task is not None:
            parser.error("--task is read from the run's config.json; leave it out with --run")
        try:
            task, policy = load_run_policy(args.run, args.seed_index, args.action_repeat)
        except RunError as error:
            parser.error(str(error))

    sparse = (args.reward == "sparse"
              or (args.reward == "auto" and envs.suite_of(task) in SPARSE_REWARD_SUITES))
    env = envs.make(task, seed=args.seed, **{**policy.env_settings, **modem_recording_options(task, sparse)})
    if getattr(env, "modem_state_space", None) is not None:
        state_source, state_env = "modem_state", None
    elif getattr(env, "proprio_space", None) is not None:
        state_source, state_env = "proprio", None
    elif policy.obs_type == "states":
        state_source, state_env = "observation", None
    else:
        state_source = "state_env"
        state_env = envs.make(task, seed=args.seed, **{**policy.env_settings, "obs_type": "states"})
    dataset_id = args.dataset_id or demo_data.dataset_id_for(task)
    existing = datasets_root(args.root) / dataset_id
    if existing.exists() and not args.overwrite:
        parser.error(f"{existing} already exists; pass --overwrite to replace it (or another --root / --dataset-id)")

    played, dropped = [], 0
    try:
        for index in range(max_episodes):
            episode = record_episode(env, policy, seed=episode_seed(args.seed, DEMO_STREAM, index),
                                     image_size=args.image_size, state_source=state_source, sparse=sparse,
                                     state_env=state_env)
            if episode is None:
                dropped += 1
                continue
            played.append(episode)
            if sum(e["episode_success"] for e in played) >= args.episodes:
                break
    finally:
        env.close()
        if state_env is not None:
            state_env.close()
    if len(played) < args.episodes:
        sys.exit(f"collect_demos: only {len(played)} of {max_episodes} episodes ran to the fixed length "
                 f"({dropped} ended early); {args.episodes} are needed: raise --max-episodes")
    chosen = choose(played, args.episodes)
    successful = sum(e["episode_success"] for e in chosen)
    if successful < args.episodes and any(e["reports_success"] for e in played):
        print(f"collect_demos: {successful} of the {args.episodes} demos succeeded; the rest are the highest-return "
              f"episodes of {len(played)} played", file=sys.stderr)

    metadata = {
        "recipe": {**policy.description, "action_repeat": policy.env_settings["action_repeat"],
                   "image_size": args.image_size, "reward_type": "sparse" if sparse else "dense",
                   "state_source": state_source, "env_seed": args.seed, "episodes_played": len(played) + dropped,
                   "episodes_dropped_early_end": dropped},
        "action_repeat": policy.env_settings["action_repeat"],
        "episodes": [{"seed": e["seed"], "return": e["return"], "success": e["episode_success"]} for e in chosen],
    }
    path = demo_data.write_demos(dataset_id, chosen, task=task, root=args.root, metadata=metadata,
                                 overwrite=args.overwrite)
    print(f"collect_demos: wrote {len(chosen)} demos ({successful} successful) of {len(chosen[0]['rewards'])} steps "
          f"of {task} to {path}")
    return {"path": pathlib.Path(path), "dataset_id": dataset_id, "episodes": len(chosen), "successful": successful}


if __name__ == "__main__":
    main()
