"""Several seeds of one task stepping in parallel (one subprocess per environment).

The vector environment never resets on its own (autoreset DISABLED): the training loop resets
finished environments explicitly, with the seed it derived for their next episode, e.g.
`venv.reset(seed=[s0, s1], options={"reset_mask": np.array([True, False])})`. Environments left
out of the mask keep their state and their last observation.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

# The package's __init__ defines make and suite_of before it imports this module.
from envs import make, suite_of

# The parent process runs JAX threads, so forking it is unsafe; workers start fresh interpreters.
SUBPROCESS_CONTEXT = "spawn"


def make_vector(
    task: str,
    seeds: list[int],
    *,
    asynchronous: bool | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """One environment of `task` per seed (env i is made with seed=seeds[i]), autoreset disabled.

    asynchronous: subprocesses (AsyncVectorEnv) or in-process (SyncVectorEnv); by default
    subprocesses iff there are several seeds. env_kwargs go to `envs.make` (e.g. obs_type,
    image_size, action_repeat). `.call("render", size)` returns one frame per environment.
    """
    suite_of(task)  # an unknown task fails here, before any subprocess starts
    if "seed" in env_kwargs:
        raise ValueError("make_vector takes one seed per environment through `seeds`, not `seed`")
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("make_vector needs at least one seed, got an empty list")
    if asynchronous is None:
        asynchronous = len(seeds) > 1

    env_fns = [functools.partial(make, task, seed=seed, **env_kwargs) for seed in seeds]
    autoreset = gym.vector.AutoresetMode.DISABLED
    if asynchronous:
        # AsyncVectorEnv first builds env_fns[0] in this process to read the spaces, so wrong
        # env_kwargs also fail here before the workers start.
        return gym.vector.AsyncVectorEnv(
            env_fns, context=SUBPROCESS_CONTEXT, autoreset_mode=autoreset
        )
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset)
