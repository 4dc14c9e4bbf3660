"""Make D4RL-protocol offline datasets of a gymnasium MuJoCo v5 task with pixax's own TD3 (spec §9.1).

    python scripts/make_dataset.py Hopper-v5 --root ~/.minari/datasets
    python scripts/make_dataset.py InvertedPendulum-v5 --root /tmp/d --train-steps 30000 \
        --steps-per-dataset 100000 --datasets medium,expert,medium-expert --eval-every 2000

writes the Minari datasets `pixax/<domain>/<name>-v0` under --root (MINARI_DATASETS_PATH semantics;
default: that variable, else ~/.minari/datasets), e.g. `pixax/hopper/medium-v0`, and prints a table.

Recipe (D4RL's, with the differences named):
  1. train TD3 online (agents/td3.py, the official settings of the task's tier, `--td3 NAME=VALUE`
     to override one) for --train-steps environment steps on one environment; every --eval-every
     steps (and at the last step) evaluate the deterministic actor on --eval-episodes episodes and
     keep a snapshot of its parameters with that evaluation return.
  2. expert = the snapshot with the best evaluation return (ties: the latest), or with
     `--expert final` the last one. D4RL used a fully trained SAC policy.
     medium = among the snapshots up to the expert's step, the one whose evaluation return is
     closest to --medium-fraction (1/3) x the expert snapshot's (ties: the earliest), i.e. D4RL's
     early-stopped policy at about a third of the expert's return (raw returns, not normalized).
  3. datasets, --steps-per-dataset N environment steps each:
     random         uniform random actions in [-1, 1]
     medium, expert the snapshot's deterministic action plus Gaussian noise of std
                    --behaviour-noise (0.1, TD3's exploration noise), clipped to [-1, 1]. D4RL
                    rolled out SAC's stochastic policy; pixax's TD3 actor is deterministic, so the
                    noise is TD3's own exploration recipe.
     medium-replay  every transition the training run collected before the medium snapshot's step
                    (D4RL: the replay buffer of the medium agent); not N steps, exactly that many.
     medium-expert  the medium episodes followed by the expert episodes (2N steps).
     Episodes are whole except the last of a rollout, which is cut so the dataset holds exactly N
     steps; a cut episode (and the episode in progress at the medium step of medium-replay) ends
     neither terminated nor truncated, an unfinished log (data/datasets.py treats it like a
     truncation: no terminal). A time limit sets truncations, the task's own end terminations.
  4. reference returns, stored in every dataset's metadata (so normalized score 0 = random,
     100 = expert): random_return = mean return of --reference-episodes uniform-random episodes;
     expert_return = mean deterministic return of the expert snapshot on as many episodes.

Episodes have the task's registered time limit (1000 steps on most tasks) unless --max-episode-steps
sets another one (for training, evaluation, rollouts and references alike; recorded in the recipe).
Actions are stored as the agent sees them, in [-1, 1] (the dataset's action space says so);
envs/gym_mujoco.py rescales them to the task's bounds (e.g. +-3 on InvertedPendulum-v5).

Everything is seeded by --seed: the TD3 initialization and its keys (jax.random), every episode's
reset seed (recorded per episode in Minari), replay sampling and rollout noise (numpy Generators
from np.random.SeedSequence([seed, stream])). Two runs with the same flags write the same data on
the same machine and software.

Every dataset needs the TD3 run, even random alone: the expert's return is its reference.
An existing dataset stops the script before any work unless --overwrite is given (then it is
deleted and written again).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import td3  # noqa: E402
from data import datasets  # noqa: E402
from envs import gym_mujoco  # noqa: E402

DATASET_NAMES = ("random", "medium", "medium-replay", "expert", "medium-expert")
EXPERT_CHOICES = ("best", "final")
NAMESPACE = "pixax"
VERSION = 0

# Independent random streams, one per use of randomness: np.random.SeedSequence([seed, stream, ...]).
TRAIN_STREAM, EVAL_STREAM, REPLAY_STREAM, REFERENCE_RANDOM_STREAM, REFERENCE_EXPERT_STREAM = 0, 1, 2, 3, 4
ROLLOUT_STREAMS = {"random": 10, "medium": 11, "expert": 12}

Episode = dict  # observations (T+1, obs_dim), actions (T, A), rewards, terminations, truncations (T,), seed
Policy = Callable[[np.ndarray], np.ndarray]  # observation (obs_dim,) -> deterministic action (A,) in [-1, 1]


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed for one episode or generator, independent across different `entropy` tuples."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def dataset_id(task: str, name: str) -> str:
    """The Minari id of dataset `name` of `task`, e.g. 'pixax/hopper/medium-v0'."""
    return f"{NAMESPACE}/{gym_mujoco.domain_of(task)}/{name}-v{VERSION}"


def make_env(task: str, seed: int, max_episode_steps: Optional[int] = None) -> gym_mujoco.GymMujocoEnv:
    """The task with pixax's conventions (actions in [-1, 1]); max_episode_steps None = the registered limit."""
    return gym_mujoco.GymMujocoEnv(task, seed=seed, max_episode_steps=max_episode_steps)


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, disable=not enabled,
                file=sys.stderr)


# ---------------------------------------------------------------------------------------------- episodes

def split_episodes(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   next_observations: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                   seeds: Sequence[Optional[int]]) -> list[Episode]:
    """Flat transitions in time order -> episodes (the layout data.datasets.write_minari takes).

    An episode ends at a step that is terminated or truncated; steps after the last end form an
    unfinished episode (both flags False at its last step). seeds[e] is episode e's reset seed."""
    ends = np.flatnonzero(terminated | truncated) + 1
    if len(ends) == 0 or ends[-1] != len(rewards):
        ends = np.append(ends, len(rewards))
    episodes, start = [], 0
    for index, end in enumerate(ends):
        episodes.append({
            "observations": np.concatenate([observations[start:end], next_observations[end - 1:end]]),
            "actions": actions[start:end],
            "rewards": rewards[start:end],
            "terminations": terminated[start:end].copy(),
            "truncations": truncated[start:end].copy(),
            "seed": seeds[index],
        })
        start = end
    return episodes


def episode_returns(episodes: Sequence[Episode]) -> np.ndarray:
    return np.array([float(np.sum(episode["rewards"], dtype=np.float64)) for episode in episodes])


def is_finished(episode: Episode) -> bool:
    """Whether the episode ended in the task (termination or time limit), not by a cut of the log."""
    return bool(episode["terminations"][-1] or episode["truncations"][-1])


def behaviour_return(episodes: Sequence[Episode]) -> float:
    """Mean return of the finished episodes (a cut episode's return is partial); of all when none finished."""
    finished = [episode for episode in episodes if is_finished(episode)]
    return float(np.mean(episode_returns(finished or episodes)))


# ---------------------------------------------------------------------------------------------- policies

def deterministic_policy(state: td3.TD3State, actor_params: Any) -> Policy:
    """The deterministic TD3 actor pi(s) with `actor_params` (a snapshot), as a host function."""
    snapshot = state.replace(actor_params=actor_params)
    unused_key = jax.random.PRNGKey(0)  # act's eval mode draws no noise

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.asarray(td3.act(snapshot, obs[None].astype(np.float32), 0, unused_key, eval_mode=True))[0]

    return policy


def run_episode(env: gym_mujoco.GymMujocoEnv, choose_action: Callable[[np.ndarray], np.ndarray], seed: int,
                max_steps: Optional[int] = None) -> tuple[Episode, int]:
    """One episode from reset(seed) until it ends or `max_steps` steps were taken; returns (episode, steps)."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    while True:
        action = np.asarray(choose_action(obs), np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated)
        if terminated or truncated or (max_steps is not None and len(rewards) >= max_steps):
            break
    episode = {
        "observations": np.stack(observations).astype(np.float32),
        "actions": np.stack(actions).astype(np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "terminations": np.asarray(terminations, bool),
        "truncations": np.asarray(truncations, bool),
        "seed": seed,
    }
    return episode, len(rewards)


def episode_return(env: gym_mujoco.GymMujocoEnv, choose_action: Callable[[np.ndarray], np.ndarray], seed: int
                   ) -> float:
    """Undiscounted return of one whole episode from reset(seed)."""
    episode, _ = run_episode(env, choose_action, seed)
    return float(np.sum(episode["rewards"], dtype=np.float64))


def noisy_action_fn(policy: Optional[Policy], noise_std: float, rng: np.random.Generator,
                    action_dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions in [-1, 1] when policy is None, else clip(pi(s) + N(0, noise_std^2), -1, 1)."""
    if policy is None:
        return lambda obs: rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
    if noise_std == 0:
        return policy
    return lambda obs: np.clip(policy(obs) + noise_std * rng.standard_normal(action_dim), -1.0, 1.0)


def rollout(task: str, policy: Optional[Policy], num_steps: int, *, noise_std: float, seed: int, stream: int,
            max_episode_steps: Optional[int] = None, progress: bool = True, desc: str = "") -> list[Episode]:
    """Episodes of `policy` (None: uniform random actions) with Gaussian action noise, exactly
    `num_steps` steps in all: whole episodes, the last one cut (unfinished) where the total is reached."""
    env = make_env(task, derived_seed(seed, stream), max_episode_steps)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    choose_action = noisy_action_fn(policy, noise_std, rng, int(env.action_space.shape[0]))
    episodes, steps = [], 0
    with _progress(num_steps, desc or f"{task} rollout", "step", progress) as bar:
        while steps < num_steps:
            episode, taken = run_episode(env, choose_action, derived_seed(seed, stream, len(episodes)),
                                         max_steps=num_steps - steps)
            episodes.append(episode)
            steps += taken
            bar.update(taken)
    env.close()
    return episodes


def mean_return(task: str, policy: Optional[Policy], num_episodes: int, *, seed: int, stream: int,
                max_episode_steps: Optional[int] = None) -> float:
    """Mean undiscounted return of `num_episodes` whole episodes (policy None: uniform random actions)."""
    env = make_env(task, derived_seed(seed, stream), max_episode_steps)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    choose_action = noisy_action_fn(policy, 0.0, rng, int(env.action_space.shape[0]))
    returns = [episode_return(env, choose_action, derived_seed(seed, stream, e)) for e in range(num_episodes)]
    env.close()
    return float(np.mean(returns))


# ---------------------------------------------------------------------------------------------- training

@dataclasses.dataclass(frozen=True)
class Snapshot:
    step: int  # environment steps taken when it was saved
    eval_return: float  # mean deterministic return over the evaluation episodes
    actor_params: Any


@dataclasses.dataclass
class TrainingRun:
    """An online TD3 run: its snapshots and every transition it collected, in time order."""

    task: str
    config: td3.Config
    state: td3.TD3State  # the final agent (its static fields give the actor's shapes)
    snapshots: list[Snapshot]
    transitions: dict[str, np.ndarray]  # obs, action, reward, next_obs, terminated, truncated: (steps, ...)
    episode_seeds: list[int]  # reset seed of each training episode, in order

    def episodes_before(self, step: int) -> list[Episode]:
        """The training episodes of the first `step` environment steps (the last one unfinished if cut)."""
        t = {key: value[:step] for key, value in self.transitions.items()}
        return split_episodes(t["obs"], t["action"], t["reward"], t["next_obs"], t["terminated"], t["truncated"],
                              self.episode_seeds)

    def policy(self, snapshot: Snapshot) -> Policy:
        return deterministic_policy(self.state, snapshot.actor_params)


def train_td3(task: str, config: td3.Config, *, train_steps: int, eval_every: int, eval_episodes: int, seed: int,
              max_episode_steps: Optional[int] = None, progress: bool = True) -> TrainingRun:
    """Online TD3 on one environment (the official loop: uniform actions for the first
    seed_steps, then one update per update_every_steps steps after storing each transition), with a
    deterministic evaluation and an actor snapshot every `eval_every` steps and at the last step."""
    env = make_env(task, derived_seed(seed, TRAIN_STREAM), max_episode_steps)
    eval_env = make_env(task, derived_seed(seed, EVAL_STREAM), max_episode_steps)
    obs_dim, action_dim = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    init_key, loop_key = jax.random.split(jax.random.PRNGKey(seed))
    state = td3.create(init_key, (obs_dim,), action_dim, config)
    replay_rng = np.random.default_rng(np.random.SeedSequence([seed, REPLAY_STREAM]))
    seed_steps = td3.seed_steps(config)

    transitions = {
        "obs": np.zeros((train_steps, obs_dim), np.float32),
        "action": np.zeros((train_steps, action_dim), np.float32),
        "reward": np.zeros(train_steps, np.float32),
        "next_obs": np.zeros((train_steps, obs_dim), np.float32),
        "terminated": np.zeros(train_steps, bool),
        "truncated": np.zeros(train_steps, bool),
    }
    episode_seeds = [derived_seed(seed, TRAIN_STREAM, 0)]
    obs, _ = env.reset(seed=episode_seeds[0])
    snapshots: list[Snapshot] = []
    with _progress(train_steps, f"TD3 {task}", "step", progress) as bar:
        for step in range(train_steps):
            act_key, update_key = jax.random.split(jax.random.fold_in(loop_key, step))
            action = np.asarray(td3.act(state, obs[None], step, act_key, eval_mode=False))[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in (("obs", obs), ("action", action), ("reward", reward), ("next_obs", next_obs),
                               ("terminated", terminated), ("truncated", truncated)):
                transitions[key][step] = value
            if terminated or truncated:
                episode_seeds.append(derived_seed(seed, TRAIN_STREAM, len(episode_seeds)))
                obs, _ = env.reset(seed=episode_seeds[-1])
            else:
                obs = next_obs

            if step >= seed_steps and step % config.update_every_steps == 0:
                # Uniform over the last replay_capacity transitions, this step's included (S1 ReplayBuffer).
                index = replay_rng.integers(max(0, step + 1 - config.replay_capacity), step + 1, config.batch_size)
                batch = {
                    "obs": transitions["obs"][index],
                    "action": transitions["action"][index],
                    "reward": transitions["reward"][index],
                    "discount": config.discount * (1.0 - transitions["terminated"][index].astype(np.float32)),
                    "next_obs": transitions["next_obs"][index],
                }
                state, _ = td3.update(state, batch, step, update_key)

            done_steps = step + 1
            if done_steps % eval_every == 0 or done_steps == train_steps:
                policy = deterministic_policy(state, state.actor_params)
                returns = [episode_return(eval_env, policy, derived_seed(seed, EVAL_STREAM, done_steps, e))
                           for e in range(eval_episodes)]
                snapshots.append(Snapshot(done_steps, float(np.mean(returns)), state.actor_params))
                bar.set_postfix(eval_return=f"{snapshots[-1].eval_return:.1f}", refresh=False)
            bar.update(1)
    env.close()
    eval_env.close()
    # The episode started after the last step holds no transition.
    if transitions["terminated"][-1] or transitions["truncated"][-1]:
        episode_seeds.pop()
    return TrainingRun(task, config, state, snapshots, transitions, episode_seeds)


def choose_snapshots(snapshots: Sequence[Snapshot], medium_fraction: float, expert: str = "best"
                     ) -> tuple[Snapshot, Snapshot]:
    """(medium, expert): expert = best evaluation return (ties: latest) or the final snapshot; medium =
    among the snapshots up to the expert's step, the return closest to medium_fraction x the expert's
    (ties: earliest)."""
    if not snapshots:
        raise ValueError("no snapshots: the training run made no evaluation")
    if expert not in EXPERT_CHOICES:
        raise ValueError(f"expert={expert!r}; valid: {', '.join(EXPERT_CHOICES)}")
    if expert == "final":
        expert_snapshot = snapshots[-1]
    else:
        expert_snapshot = max(reversed(snapshots), key=lambda s: s.eval_return)  # reversed: ties go to the latest
    target = medium_fraction * expert_snapshot.eval_return
    candidates = [s for s in snapshots if s.step <= expert_snapshot.step]
    medium_snapshot = min(candidates, key=lambda s: abs(s.eval_return - target))  # ties go to the earliest
    return medium_snapshot, expert_snapshot


# ---------------------------------------------------------------------------------------------- the script

def parse_td3_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['hidden_dim=64', 'num_seed_frames=200'] -> {'hidden_dim': 64, ...}, each value of its field's type."""
    fields = {field.name: field for field in dataclasses.fields(td3.Config)}
    converters = {"int": int, "float": float, "str": str,
                  "bool": lambda text: {"true": True, "false": False}[text.lower()]}
    overrides = {}
    for item in items:
        name, separator, text = item.partition("=")
        if not separator or name not in fields:
            raise ValueError(f"--td3 {item!r}: expected NAME=VALUE with NAME a td3.Config field; valid: "
                             f"{', '.join(sorted(fields))}")
        kind = fields[name].type if isinstance(fields[name].type, str) else fields[name].type.__name__
        try:
            overrides[name] = converters[kind](text)
        except (KeyError, ValueError):
            raise ValueError(f"--td3 {item!r}: {name} takes a value of type {kind}, got {text!r}") from None
    return overrides


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_dataset.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help=f"a gymnasium MuJoCo v5 task: {', '.join(gym_mujoco.TASKS)}")
    p.add_argument("--root", default=None,
                   help="datasets folder (MINARI_DATASETS_PATH semantics); default: that variable, "
                        "else ~/.minari/datasets")
    p.add_argument("--steps-per-dataset", type=int, default=1_000_000,
                   help="environment steps of each rollout dataset (random, medium, expert); D4RL: 1M")
    p.add_argument("--train-steps", type=int, default=None,
                   help="environment steps of the TD3 run (default: TD3's num_train_frames, 1M)")
    p.add_argument("--datasets", default=",".join(DATASET_NAMES),
                   help=f"comma-separated subset of {','.join(DATASET_NAMES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--medium-fraction", type=float, default=1 / 3,
                   help="medium = the snapshot whose eval return is closest to this fraction of the expert's")
    p.add_argument("--expert", default="best", choices=EXPERT_CHOICES,
                   help="expert = the best evaluated snapshot (ties: latest) or the final one")
    p.add_argument("--eval-every", type=int, default=None,
                   help="environment steps between evaluations / snapshots (default: TD3's eval_every_frames, 5000)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="episodes per evaluation (default: TD3's num_eval_episodes, 10)")
    p.add_argument("--reference-episodes", type=int, default=50,
                   help="episodes behind each reference return (random and expert)")
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="time limit of every episode (training, evaluation, datasets, references); default: the "
                        "task's registered limit (1000 steps on most tasks), as D4RL")
    p.add_argument("--behaviour-noise", type=float, default=0.1,
                   help="std of the Gaussian action noise of the medium / expert rollouts (TD3's 0.1)")
    p.add_argument("--td3", action="append", default=[], metavar="NAME=VALUE",
                   help="override a td3.Config field, e.g. --td3 hidden_dim=64 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="delete and rewrite datasets that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked arguments of one invocation."""

    task: str
    root: pathlib.Path
    names: tuple[str, ...]
    steps_per_dataset: int
    train_steps: int
    eval_every: int
    eval_episodes: int
    reference_episodes: int
    medium_fraction: float
    expert: str
    behaviour_noise: float
    max_episode_steps: Optional[int]  # None: the task's registered limit
    seed: int
    config: td3.Config
    overwrite: bool
    progress: bool


def make_plan(args: argparse.Namespace) -> Plan:
    """Checks every argument (ValueError naming the flag and the valid values) before any work."""
    if args.task not in gym_mujoco.TASKS:
        raise ValueError(f"unknown task {args.task!r}; valid tasks: {', '.join(gym_mujoco.TASKS)}")
    names = tuple(name.strip() for name in args.datasets.split(",") if name.strip())
    unknown = [name for name in names if name not in DATASET_NAMES]
    if unknown or not names:
        raise ValueError(f"--datasets {args.datasets!r}: unknown {unknown or 'empty list'}; valid: "
                         f"{', '.join(DATASET_NAMES)}")
    names = tuple(name for name in DATASET_NAMES if name in names)  # generation order, no duplicates
    if not 0 < args.medium_fraction <= 1:
        raise ValueError(f"--medium-fraction must be in (0, 1], got {args.medium_fraction}")
    if not (args.behaviour_noise >= 0 and math.isfinite(args.behaviour_noise)):
        raise ValueError(f"--behaviour-noise must be a finite number >= 0, got {args.behaviour_noise}")
    config = td3.config_for_task(args.task, **parse_td3_overrides(args.td3))
    train_steps = config.num_train_frames if args.train_steps is None else args.train_steps
    eval_every = config.eval_every_frames if args.eval_every is None else args.eval_every
    eval_episodes = config.num_eval_episodes if args.eval_episodes is None else args.eval_episodes
    for flag, value in (("--steps-per-dataset", args.steps_per_dataset), ("--train-steps", train_steps),
                        ("--eval-every", eval_every), ("--eval-episodes", eval_episodes),
                        ("--reference-episodes", args.reference_episodes),
                        *((("--max-episode-steps", args.max_episode_steps),) if args.max_episode_steps is not None
                          else ())):
        _positive(flag, value)
    if eval_every > train_steps:
        raise ValueError(f"--eval-every={eval_every} exceeds --train-steps={train_steps}: the run would keep one "
                         "snapshot only; evaluate several times to pick a medium policy")
    config = dataclasses.replace(config, num_train_frames=train_steps, eval_every_frames=eval_every,
                                 num_eval_episodes=eval_episodes)
    return Plan(task=args.task, root=datasets.datasets_root(args.root), names=names,
                steps_per_dataset=args.steps_per_dataset, train_steps=train_steps, eval_every=eval_every,
                eval_episodes=eval_episodes, reference_episodes=args.reference_episodes,
                medium_fraction=args.medium_fraction, expert=args.expert, behaviour_noise=args.behaviour_noise,
                max_episode_steps=args.max_episode_steps, seed=args.seed, config=config, overwrite=args.overwrite,
                progress=not args.no_progress)


def existing_datasets(plan: Plan) -> list[pathlib.Path]:
    return [plan.root / dataset_id(plan.task, name) for name in plan.names
            if (plan.root / dataset_id(plan.task, name)).exists()]


def build_recipes(plan: Plan, run: TrainingRun, medium: Snapshot, expert: Snapshot, time_limit: int
                  ) -> dict[str, dict[str, Any]]:
    """The "recipe" metadata of each dataset: how its data was made (JSON types)."""
    common = {
        "generator": "pixax scripts/make_dataset.py (D4RL protocol, spec 9.1)",
        "actions": "stored in [-1, 1]; the environment rescales them to the task's bounds (envs/gym_mujoco.py)",
        "max_episode_steps": time_limit,
        "references": (f"random_return: mean return of {plan.reference_episodes} uniform-random episodes; "
                       f"expert_return: mean deterministic return of the expert snapshot (step {expert.step}) "
                       f"over {plan.reference_episodes} episodes"),
        "training": {
            "task": plan.task, "seed": plan.seed, "train_steps": plan.train_steps, "eval_every": plan.eval_every,
            "eval_episodes": plan.eval_episodes, "td3_config": dataclasses.asdict(plan.config),
            "snapshots": [[s.step, s.eval_return] for s in run.snapshots],
            "expert_choice": plan.expert, "expert_step": expert.step, "expert_eval_return": expert.eval_return,
            "medium_fraction": plan.medium_fraction, "medium_step": medium.step,
            "medium_eval_return": medium.eval_return,
        },
    }
    rollout = {
        "num_steps": plan.steps_per_dataset,
        "episode_cut": "whole episodes; the last is cut where the total reaches num_steps and ends unfinished "
                       "(neither terminated nor truncated)",
    }
    noise = (f"deterministic TD3 actor + Gaussian noise N(0, {plan.behaviour_noise}^2) clipped to [-1, 1] "
             "(TD3's exploration recipe; D4RL rolled out a stochastic SAC policy)")
    recipes = {
        "random": {"policy": "uniform random actions in [-1, 1] (D4RL: a randomly initialized SAC policy)",
                   "action_noise_std": None, **rollout},
        "medium": {"policy": f"TD3 snapshot at step {medium.step} (eval return {medium.eval_return:.2f}); {noise}",
                   "snapshot_step": medium.step, "action_noise_std": plan.behaviour_noise, **rollout},
        "expert": {"policy": f"TD3 snapshot at step {expert.step} (eval return {expert.eval_return:.2f}); {noise}",
                   "snapshot_step": expert.step, "action_noise_std": plan.behaviour_noise, **rollout},
        "medium-replay": {
            "policy": (f"every transition the TD3 run collected in its first {medium.step} steps (the medium "
                       f"snapshot's step): uniform random actions for {td3.seed_steps(plan.config)} steps, then "
                       f"the learning actor + N(0, {plan.config.exploration_noise}^2)"),
            "num_steps": medium.step, "episode_cut": "the episode in progress at the medium step ends unfinished"},
    }
    recipes["medium-expert"] = {
        "policy": "the medium episodes followed by the expert episodes",
        "concatenated_from": [dataset_id(plan.task, "medium"), dataset_id(plan.task, "expert")],
        "recipes": [{"dataset": "medium", **recipes["medium"]}, {"dataset": "expert", **recipes["expert"]}]}
    return {name: {"dataset": name, **common, **recipe} for name, recipe in recipes.items()}


def generate(plan: Plan) -> list[dict[str, Any]]:
    """Trains, rolls out and writes the planned datasets; returns one summary row per dataset."""
    started = time.time()
    probe = make_env(plan.task, 0, plan.max_episode_steps)
    observation_space, action_space, time_limit = probe.observation_space, probe.action_space, probe.max_episode_steps
    probe.close()

    run = train_td3(plan.task, plan.config, train_steps=plan.train_steps, eval_every=plan.eval_every,
                    eval_episodes=plan.eval_episodes, seed=plan.seed, max_episode_steps=plan.max_episode_steps,
                    progress=plan.progress)
    medium, expert = choose_snapshots(run.snapshots, plan.medium_fraction, plan.expert)
    print(f"make_dataset: snapshots (step: eval return) "
          f"{', '.join(f'{s.step}: {s.eval_return:.1f}' for s in run.snapshots)}; expert ({plan.expert}) at step "
          f"{expert.step} ({expert.eval_return:.1f}), medium at step {medium.step} ({medium.eval_return:.1f}, "
          f"target {plan.medium_fraction:.3f} x expert)", file=sys.stderr)
    if medium.step == expert.step and any(name.startswith("medium") for name in plan.names):
        print("make_dataset: warning: the medium snapshot is the expert one (no earlier snapshot is closer to "
              "the target); evaluate more often (--eval-every) or train longer", file=sys.stderr)

    random_return = mean_return(plan.task, None, plan.reference_episodes, seed=plan.seed,
                                stream=REFERENCE_RANDOM_STREAM, max_episode_steps=plan.max_episode_steps)
    expert_return = mean_return(plan.task, run.policy(expert), plan.reference_episodes, seed=plan.seed,
                                stream=REFERENCE_EXPERT_STREAM, max_episode_steps=plan.max_episode_steps)
    if not expert_return > random_return:
        raise RuntimeError(
            f"the expert policy (mean return {expert_return:.2f}) is not better than uniform random actions "
            f"({random_return:.2f}): normalized scores would be undefined. Train longer (--train-steps).")

    episodes: dict[str, list[Episode]] = {}
    need = set(plan.names) | ({"medium", "expert"} if "medium-expert" in plan.names else set())
    for name, snapshot in (("random", None), ("medium", medium), ("expert", expert)):
        if name in need:
            episodes[name] = rollout(plan.task, None if snapshot is None else run.policy(snapshot),
                                     plan.steps_per_dataset,
                                     noise_std=0.0 if snapshot is None else plan.behaviour_noise,
                                     seed=plan.seed, stream=ROLLOUT_STREAMS[name],
                                     max_episode_steps=plan.max_episode_steps, progress=plan.progress,
                                     desc=f"{name} rollout")
    if "medium-replay" in need:
        episodes["medium-replay"] = run.episodes_before(medium.step)
    if "medium-expert" in need:
        episodes["medium-expert"] = episodes["medium"] + episodes["expert"]

    recipes = build_recipes(plan, run, medium, expert, time_limit)
    rows = []
    for name in plan.names:
        target = plan.root / dataset_id(plan.task, name)
        if target.exists() and plan.overwrite:
            shutil.rmtree(target)
        data = episodes[name]
        mean = behaviour_return(data)
        metadata = {
            "random_return": random_return, "expert_return": expert_return, "recipe": recipes[name],
            "behaviour_return": mean, "seed": plan.seed,
            "algorithm_name": "pixax TD3 (scripts/make_dataset.py)",
            "description": f"D4RL-protocol {name} dataset of {plan.task} made by pixax (spec 9.1)",
        }
        datasets.write_minari(dataset_id(plan.task, name), data, env_spec_or_task=plan.task, root=plan.root,
                              metadata=metadata, observation_space=observation_space, action_space=action_space)
        rows.append({"dataset": dataset_id(plan.task, name), "episodes": len(data),
                     "transitions": int(sum(len(e["rewards"]) for e in data)), "mean_return": mean,
                     "normalized_score": datasets.normalized_score(mean, random_return, expert_return)})
    print(format_table(rows, random_return, expert_return, time.time() - started))
    return rows


def format_table(rows: Sequence[dict[str, Any]], random_return: float, expert_return: float, seconds: float) -> str:
    lines = [f"{'dataset':<40} {'episodes':>9} {'transitions':>12} {'mean return':>12} {'normalized':>11}"]
    for row in rows:
        lines.append(f"{row['dataset']:<40} {row['episodes']:>9,} {row['transitions']:>12,} "
                     f"{row['mean_return']:>12.2f} {row['normalized_score']:>11.1f}")
    lines.append(f"references: random return {random_return:.2f}, expert return {expert_return:.2f}; "
                 f"mean return over finished episodes; {seconds:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Parses the flags, refuses existing datasets unless --overwrite, generates; exits 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args)
    except ValueError as error:
        parser.error(str(error))
    existing = existing_datasets(plan)
    if existing and not plan.overwrite:
        parser.error(f"dataset(s) already exist: {', '.join(str(p) for p in existing)}; pass --overwrite to "
                     "replace them (or choose another --root)")
    return generate(plan)


if __name__ == "__main__":
    main()
