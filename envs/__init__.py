"""pixax environments: one `make(task)` registry over the supported suites.

Suites are entries of `SUITES`; a task name belongs to exactly one suite:

- "dmc": DeepMind Control suite (`envs.dmc`), e.g. `cheetah_run`;
- "metaworld": Meta-World (`envs.metaworld`), `mw_<name>` e.g. `mw_door-open`; needs the pip
  extra `metaworld`;
- "adroit": Adroit hand (`envs.adroit`), `adroit_door`, `adroit_hammer`, `adroit_pen`; needs the
  pip extra `adroit`;
- "atari": Atari 2600 games through the ALE with Dopamine's preprocessing (`envs.atari`),
  `atari_<game>` e.g. `atari_pong`, `atari_ms_pacman` (discrete actions, grayscale pixels only);
  needs the pip extra `atari`;
- "gym": gymnasium's MuJoCo v5 tasks (`envs.gym_mujoco`), named by their gymnasium ids, e.g.
  `HalfCheetah-v5`, `Hopper-v5` (states only; actions in [-1, 1], rescaled to the task's bounds);
- "toy": bsuite's Catch (`envs.toy`), `toy_catch`: a tiny discrete-action pixel task for CI
  learning tests.

Every task name is registered whether or not its package is installed; making a task whose
package is missing raises an ImportError that names the extra to install.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

# Headless rendering through EGL; must be set before dm_control (or mujoco) is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402

from envs import adroit, atari, dmc, gym_mujoco, metaworld, toy  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Suite:
    """A family of tasks: their names, a constructor, and the domain (family member) of a task."""

    tasks: tuple[str, ...]
    make: Callable[..., gym.Env]
    domain_of: Callable[[str], str]


SUITES: dict[str, Suite] = {
    "dmc": Suite(tasks=tuple(dmc.TASKS), make=dmc.DMCEnv, domain_of=dmc.domain_of),
    "metaworld": Suite(
        tasks=tuple(metaworld.TASKS), make=metaworld.MetaWorldEnv, domain_of=metaworld.domain_of
    ),
    "adroit": Suite(tasks=tuple(adroit.TASKS), make=adroit.AdroitEnv, domain_of=adroit.domain_of),
    "atari": Suite(tasks=tuple(atari.TASKS), make=atari.AtariEnv, domain_of=atari.domain_of),
    "gym": Suite(tasks=tuple(gym_mujoco.TASKS), make=gym_mujoco.GymMujocoEnv, domain_of=gym_mujoco.domain_of),
    "toy": Suite(tasks=tuple(toy.TASKS), make=toy.CatchEnv, domain_of=toy.domain_of),
}

TASKS: list[str] = sorted(task for suite in SUITES.values() for task in suite.tasks)


def suite_of(task: str) -> str:
    """The name of the suite (a key of SUITES) that holds `task`; ValueError listing valid tasks."""
    for name, suite in SUITES.items():
        if task in suite.tasks:
            return name
    if task.startswith(atari.TASK_PREFIX):
        atari.resolve(task)  # its message names close games instead of listing every task
    raise ValueError(f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)}")


def make(task: str, **kwargs: Any) -> gym.Env:
    """Creates the environment of `task`; kwargs go to its suite's constructor (DMCEnv,
    MetaWorldEnv, AdroitEnv, AtariEnv, GymMujocoEnv or CatchEnv), e.g. obs_type, seed, action_repeat,
    frame_stack, image_size."""
    return SUITES[suite_of(task)].make(task, **kwargs)


def domain_of(task: str) -> str:
    """The domain of a task, e.g. 'ball_in_cup' for 'cup_catch' (used for per-domain settings)."""
    return SUITES[suite_of(task)].domain_of(task)


from envs.vector import make_vector  # noqa: E402  (vector.py imports make and suite_of, defined above)

__all__ = ["SUITES", "Suite", "TASKS", "domain_of", "make", "make_vector", "suite_of"]
