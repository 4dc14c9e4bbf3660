"""gymnasium's MuJoCo v5 tasks (HalfCheetah, Hopper, Walker2d, Ant, Humanoid, ...) behind pixax's
environment conventions: the state-based tasks of TD3 and of the D4RL-protocol datasets (spec §9, §9.1).

Task names are the gymnasium ids, e.g. `HalfCheetah-v5`; the domain is the lowercase name without
its version (`halfcheetah`). One `GymMujocoEnv` holds the bare MuJoCo environment of
`gymnasium.make(task).unwrapped` (no gymnasium wrappers) and does, innermost first:

- actions: by default the agent sees a float32 Box [-1, 1]^A and actions are rescaled to the
  task's bounds (`action_low`, `action_high`) before stepping. Humanoid-v5 and HumanoidStandup-v5
  (+-0.4), InvertedPendulum-v5 (+-3) and Pusher-v5 (+-2) are the tasks whose bounds are not
  [-1, 1]; on every other task the rescaling is the identity and the action reaches MuJoCo
  unchanged. All bounds are symmetric, so an agent acting in [-1, 1] with noise in those units is
  the official TD3's agent acting in [-max_action, max_action] with noise scaled by max_action.
  `normalize_actions=False` exposes the task's own bounds instead (actions passed through);
- action repeat: one agent step = `action_repeat` simulator steps (gymnasium steps), rewards summed,
  stopping early when the task terminates;
- time limit: `max_episode_steps` agent steps, by default the task's registered limit (1000
  steps; Reacher-v5 50, Pusher-v5 100) divided by `action_repeat`, rounded up. Reaching it sets
  `truncated=True` (also on a step that terminates, as gymnasium's TimeLimit does); `terminated`
  is the task's own termination only (Hopper, Walker2d, Ant, Humanoid, the pendulums fall or leave
  their healthy range);
- observations: "states" only, the task's observation vector as float32 (frame_stack is not
  applied to states). Pixels are not offered: a ValueError says so.

`info` of every step: the task's own info of the last simulator step (reward terms, positions),
"frames" (simulator steps taken) and "discount" (0.0 on termination, else 1.0).

Rendering (`render(size)`) goes through gymnasium's MuJoCo renderer with each task's default
camera (the tracking camera of the locomotion tasks), one offscreen context per image size; set
`MUJOCO_GL=egl` for headless machines (envs/__init__.py does).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from envs.common import check_arguments

# gymnasium 1.4.0's MuJoCo v5 ids (its registry holds no other v5 MuJoCo task).
TASKS: tuple[str, ...] = (
    "Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Humanoid-v5", "HumanoidStandup-v5",
    "InvertedDoublePendulum-v5", "InvertedPendulum-v5", "Pusher-v5", "Reacher-v5", "Swimmer-v5",
    "Walker2d-v5",
)
OBS_TYPES = ("states",)


def domain_of(task: str) -> str:
    """The lowercase task name without its version, e.g. 'halfcheetah' for 'HalfCheetah-v5'."""
    if task not in TASKS:
        raise ValueError(f"Unknown gymnasium MuJoCo task {task!r}. Valid tasks: {', '.join(TASKS)}")
    return task.rsplit("-", 1)[0].lower()


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class GymMujocoEnv(gym.Env):
    """A gymnasium MuJoCo v5 task with pixax's conventions (states, [-1, 1] actions; module doc).

    The construction seed seeds the first episode; `reset(seed=s)` re-seeds the task's generator
    (its initial-state noise), so the same seed and actions give the same episode. Later resets
    without a seed continue that generator, as gymnasium's do.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        *,
        obs_type: str = "states",
        seed: int = 0,
        action_repeat: int = 1,
        frame_stack: int = 1,
        image_size: int = 84,
        max_episode_steps: int | None = None,
        normalize_actions: bool = True,
    ) -> None:
        domain = domain_of(task)
        if obs_type not in OBS_TYPES:
            raise ValueError(
                f"{task}: obs_type {obs_type!r} is not supported; gymnasium MuJoCo tasks offer only "
                f"obs_type='states' (valid: {', '.join(OBS_TYPES)})"
            )
        check_arguments(obs_type="states", action_repeat=action_repeat, frame_stack=frame_stack,
                        image_size=image_size)
        if max_episode_steps is not None:
            _positive_int("max_episode_steps", max_episode_steps)
        if not isinstance(normalize_actions, bool):
            raise ValueError(f"normalize_actions must be True or False, got {normalize_actions!r}")

        self.task = task
        self.domain = domain
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        self.frame_stack = 1  # states are not stacked
        self.image_size = int(image_size)
        self.frame_channels = 3  # an RGB frame; unused, observations are states
        self.stack_padding = "repeat"
        self.normalize_actions = normalize_actions
        self.render_mode = "rgb_array"

        # The bare MuJoCo environment: the time limit and the checks are this class's.
        self._env = gym.make(task, render_mode="rgb_array", width=self.image_size,
                             height=self.image_size).unwrapped
        registered_limit = gym.spec(task).max_episode_steps  # simulator steps
        self.max_episode_steps = (math.ceil(registered_limit / self.action_repeat)
                                  if max_episode_steps is None else int(max_episode_steps))
        # One rendered frame per agent step, for evaluation videos played at real-time speed.
        self.metadata = {**self.metadata, "render_fps": round(1.0 / (self._env.dt * self.action_repeat))}

        inner = self._env.action_space
        self.action_low = np.asarray(inner.low, np.float32).copy()
        self.action_high = np.asarray(inner.high, np.float32).copy()
        self._bounds_are_unit = bool(np.all(self.action_low == -1.0) and np.all(self.action_high == 1.0))
        if normalize_actions:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=inner.shape, dtype=np.float32)
        else:
            self.action_space = gym.spaces.Box(self.action_low, self.action_high, dtype=np.float32)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=self._env.observation_space.shape, dtype=np.float32
        )

        self._first_seed: int | None = int(seed)
        self._renderers: dict[int, Any] = {}
        self._steps = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode; with `seed` (or, at the first reset, the construction seed) the task's
        generator is re-seeded. `options` is accepted for the vector environment and not used."""
        super().reset(seed=seed)
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        else:
            self._first_seed = None
        obs, info = self._env.reset(seed=None if seed is None else int(seed))
        self._steps = 0
        self._needs_reset = False
        return np.asarray(obs, np.float32), dict(info)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One agent step: the action repeated `action_repeat` simulator steps (fewer on termination)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after the episode ended; call reset()."
            )
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task}: action must have shape {self.action_space.shape}, got {action.shape}"
            )
        inner_action = self.task_action(action)

        reward, terminated, frames, info = 0.0, False, 0, {}
        for _ in range(self.action_repeat):
            obs, inner_reward, terminated, _, info = self._env.step(inner_action)
            reward += float(inner_reward)
            frames += 1
            if terminated:
                break
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        self._needs_reset = bool(terminated or truncated)
        info = {**info, "frames": frames, "discount": 0.0 if terminated else 1.0}
        return np.asarray(obs, np.float32), reward, bool(terminated), bool(truncated), info

    def render(self, size: int | None = None) -> np.ndarray:
        """An RGB uint8 (size, size, 3) image of the current state from the task's default camera
        (`size` defaults to `image_size`)."""
        size = self.image_size if size is None else int(size)
        renderer = self._renderer(size)
        if len(self._renderers) > 1 and renderer.viewer is not None:
            renderer.viewer.make_context_current()  # one OpenGL context is current at a time
        return renderer.render("rgb_array")

    def close(self) -> None:
        """Frees the rendering contexts and the task."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()

    # ------------------------------------------------------------------ helpers

    def task_action(self, action: np.ndarray) -> np.ndarray:
        """The action the task receives: [-1, 1] rescaled to [action_low, action_high] (float32)
        when actions are normalized and the bounds are not already [-1, 1]; else `action` itself."""
        action = np.asarray(action, np.float32)
        if not self.normalize_actions or self._bounds_are_unit:
            return action
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def _renderer(self, size: int):
        """gymnasium's MuJoCo renderer of `size` x `size` images, with the task's camera settings."""
        if size not in self._renderers:
            _positive_int("size", size)
            from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

            own = self._env.mujoco_renderer
            model = self._env.model
            # The offscreen buffer must hold the image; a context copies it when it is created.
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, size)
            self._renderers[size] = MujocoRenderer(
                model, self._env.data, own.default_cam_config, width=size, height=size,
                max_geom=own.max_geom, camera_id=own.camera_id,  # no v5 task sets visual options
            )
        return self._renderers[size]
