"""DeepMind Control suite tasks behind the gymnasium API (spec §1.1, units §0.2).

One `DMCEnv` stacks, innermost first, what DrQ-v2's pipeline does around a suite task:

- task load: `suite.load(domain, task, task_kwargs={"random": seed}, visualize_reward=False)`;
- actions: the agent sees a float32 Box [-1, 1]^A; actions are rescaled to the task's bounds and
  cast to the task's dtype (float64) before stepping;
- action repeat: one agent step = `action_repeat` frames (inner steps); rewards are summed, each
  weighted by the running product of inner discounts; discounts multiply; the repeat stops early
  when the inner episode ends;
- observations: "pixels" = the last `frame_stack` RGB renders concatenated on the LAST axis
  (uint8, (H, W, 3 * frame_stack), oldest first), or "states" = the flattened observation dict
  (float32 vector);
- proprio=True (pixels only; MoDem's DMControl "state", spec §3.2): the flattened observation dict
  (what "states" gives) is also exposed as `proprio_space` and as info["proprio"] after reset and
  every step. Off by default (`proprio_space` is then None and info has no "proprio").

Unlike the official trainer (spec §1.1, "Timestep"), a terminal discount of 0 is NOT turned into
1: the end of an episode is `truncated` when the last inner discount is > 0 (the suite's time
limit) and `terminated` when it is 0.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from dm_control import suite
from dm_control.mujoco import engine

from envs.common import OBS_TYPES, FrameStack, check_arguments  # noqa: F401

# DrQ-v2 names ball_in_cup tasks `cup_*` (e.g. its `cup_catch` config).
_DOMAIN_ALIASES = {"cup": "ball_in_cup"}

# lqr's actions are bounded by +-1e10 and its episodes have no time limit: rescaling [-1, 1] to
# those bounds would make the task meaningless, so it is left out of the registry.
_EXCLUDED_DOMAINS = {"lqr": "its actions are unbounded (+-1e10) and it has no time limit"}

# Camera per domain (DrQ-v2): quadruped is filmed from camera 2, everything else from camera 0.
_DEFAULT_CAMERA = {"quadruped": 2}



def _build_task_table() -> dict[str, tuple[str, str]]:
    """Maps every valid task name to its dm_control (domain, task) pair."""
    table = {
        f"{domain}_{task}": (domain, task)
        for domain, task in suite.ALL_TASKS
        if domain not in _EXCLUDED_DOMAINS
    }
    for alias, domain in _DOMAIN_ALIASES.items():
        for task_domain, task in suite.ALL_TASKS:
            if task_domain == domain:
                table[f"{alias}_{task}"] = (domain, task)
    return table


_TASKS: dict[str, tuple[str, str]] = _build_task_table()
TASKS: list[str] = sorted(_TASKS)


def resolve(task: str) -> tuple[str, str]:
    """Returns the dm_control (domain, task) of a pixax task name; ValueError if it is unknown."""
    if task in _TASKS:
        return _TASKS[task]
    reason = ""
    for domain, why in _EXCLUDED_DOMAINS.items():
        if task.startswith(domain + "_"):
            reason = f" (the {domain} domain is not supported: {why})"
    raise ValueError(
        f"Unknown dm_control task {task!r}{reason}. Valid tasks: {', '.join(TASKS)}"
    )


def domain_of(task: str) -> str:
    """The dm_control domain of a task name, e.g. 'ball_in_cup' for 'cup_catch'."""
    return resolve(task)[0]


class DMCEnv(gym.Env):
    """A dm_control suite task as a gymnasium environment (pixels or states, action repeat).

    `reset(seed=s)` re-seeds the task's random state, so the same seed always gives the same
    initial state and, for the same actions, the same episode.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        *,
        obs_type: str = "pixels",
        seed: int = 0,
        action_repeat: int = 2,
        frame_stack: int = 3,
        image_size: int = 84,
        camera_id: int | None = None,
        proprio: bool = False,
    ) -> None:
        domain, task_name = resolve(task)
        check_arguments(obs_type, action_repeat=action_repeat, frame_stack=frame_stack, image_size=image_size)
        if proprio and obs_type != "pixels":
            raise ValueError(f"{task}: proprio=True adds the state vector to pixel observations; with "
                             f"obs_type={obs_type!r} the observation is that vector already (use proprio=False)")
        self.proprio = bool(proprio)

        self.task = task
        self.domain = domain
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        # "states" observations are not stacked.
        self.frame_stack = int(frame_stack) if obs_type == "pixels" else 1
        self.image_size = int(image_size)
        self.camera_id = _DEFAULT_CAMERA.get(domain, 0) if camera_id is None else camera_id
        self.render_mode = "rgb_array"

        self._env = suite.load(
            domain, task_name, task_kwargs={"random": seed}, visualize_reward=False
        )
        # size -> a dm_control Camera kept for every later frame (the suite keeps one physics per
        # environment): physics.render builds a new Camera and MuJoCo scene per call, ~18% of DrM's
        # training loop on an H200.
        self._cameras: dict = {}
        # One rendered frame per agent step, for evaluation videos played at real-time speed.
        agent_step_seconds = self._env.control_timestep() * self.action_repeat
        self.metadata = {**self.metadata, "render_fps": round(1.0 / agent_step_seconds)}

        action_spec = self._env.action_spec()
        self._action_low = np.asarray(action_spec.minimum, dtype=action_spec.dtype)
        self._action_high = np.asarray(action_spec.maximum, dtype=action_spec.dtype)
        self._action_dtype = action_spec.dtype
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=action_spec.shape, dtype=np.float32)

        state_dim = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
        state_space = gym.spaces.Box(-np.inf, np.inf, shape=(state_dim,), dtype=np.float32)
        if obs_type == "pixels":
            self.observation_space = gym.spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3 * self.frame_stack), dtype=np.uint8
            )
        else:
            self.observation_space = state_space
        self.proprio_space = state_space if self.proprio else None

        # Agent steps per episode: the suite's step limit (1000 frames) in units of action repeats;
        # when action_repeat does not divide it, the last agent step takes fewer frames.
        self.max_episode_steps = math.ceil(round(self._env._step_limit) / self.action_repeat)

        self._frames = FrameStack(self.frame_stack)
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode; with `seed`, the task's random state is replaced by one seeded with it."""
        super().reset(seed=seed)
        if seed is not None:
            # The task draws its initial state (and any noise) from this RandomState only.
            self._env.task._random = np.random.RandomState(seed)
        time_step = self._env.reset()
        self._needs_reset = False
        if self.obs_type == "pixels":
            self._frames.reset(self.render())
        info = {"proprio": self._flat_state(time_step)} if self.proprio else {}
        return self._observation(time_step), info

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One agent step: the action repeated `action_repeat` frames (fewer if the episode ends)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after the episode ended; call reset()."
            )
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task}: action must have shape {self.action_space.shape}, got {action.shape}"
            )
        inner_action = self._rescale(action)

        reward, discount, frames = 0.0, 1.0, 0
        for _ in range(self.action_repeat):
            time_step = self._env.step(inner_action)
            frames += 1
            reward += discount * (time_step.reward or 0.0)
            discount *= time_step.discount
            if time_step.last():
                break

        terminated = truncated = False
        if time_step.last():
            self._needs_reset = True
            terminated = bool(time_step.discount == 0)
            truncated = not terminated
        if self.obs_type == "pixels":
            self._frames.push(self.render())
        info = {"discount": float(discount), "frames": frames}
        if self.proprio:
            info["proprio"] = self._flat_state(time_step)
        return self._observation(time_step), float(reward), terminated, truncated, info

    def render(self, size: int | None = None) -> np.ndarray:
        """An RGB uint8 (size, size, 3) image of the current state from the observation camera.

        `size` defaults to `image_size`; it can be at most the model's offscreen buffer
        (640x480 unless the task's XML says otherwise).
        """
        size = self.image_size if size is None else int(size)
        if size not in self._cameras:
            self._cameras[size] = engine.Camera(self._env.physics, size, size, self.camera_id)
        return self._cameras[size].render().copy()  # the camera reuses its buffer for the next frame

    def close(self) -> None:
        """Frees the MuJoCo rendering contexts."""
        self._cameras.clear()
        self._env.physics.free()

    # ------------------------------------------------------------------ helpers

    def _rescale(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> [low, high] of the task, in the task's dtype."""
        action = action.astype(self._action_dtype)
        return self._action_low + (action + 1.0) * 0.5 * (self._action_high - self._action_low)

    def _observation(self, time_step) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._frames.observation()
        return self._flat_state(time_step)

    @staticmethod
    def _flat_state(time_step) -> np.ndarray:
        """The task's observation dict flattened in its order, float32 (the "states" observation)."""
        return np.concatenate(
            [np.asarray(value, dtype=np.float32).ravel() for value in time_step.observation.values()]
        )
