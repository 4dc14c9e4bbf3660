"""Meta-World manipulation tasks behind the gymnasium API, set up as the official DrM code does
(spec §2.6 and §2.7; package `metaworld`, pip extra `metaworld`).

Task names are `mw_<name>`, where <name> is the Meta-World environment name without its version,
e.g. `mw_assembly`, `mw_door-open`, `mw_stick-pull` (DrM's configs name them `assembly`,
`door-open`, ...). metaworld 3.1.1 ships only v3 environments; DrM used v2. The v3 tasks are the
same 50 scenes and goals, with revised code (v3 also clips observations to their bounds).

One `MetaWorldEnv` does, innermost first, what DrM's `metaworld_env.make` does:

- task: the goal-observable environment `<name>-v3-goal-observable` with goals and object
  positions drawn anew at every reset (`_freeze_rand_vec = False`); they are drawn from the
  environment's own seeded generator (DrM drew them from numpy's global one), so
  `reset(seed=s)` always gives the same episode;
- actions: Box [-1, 1]^4 (Meta-World's own bounds, so no rescaling);
- action repeat: one agent step = `action_repeat` simulator steps, rewards summed; the step
  succeeds if any of them reports success;
- time limit: `max_episode_steps` = 250 agent steps, ended as a truncation (no terminal states);
- observations: "pixels" = RGB renders from camera `corner2` moved to (0.75, 0.075, 0.7), the
  last `frame_stack` of them concatenated on the LAST axis (uint8 (H, W, 3k), oldest first),
  zero-filled at reset as DrM does; or "states" = Meta-World's 39-d state vector (float32).

`info` of every step: "discount" (always 1.0), "frames" (simulator steps taken), "success" (1.0 if
this agent step succeeded) and "episode_success" (1.0 once any step of the episode succeeded: the
official success metric, spec §2.7). DrM's trainer quirk of resetting twice per episode
(`mw_double_reset`) belongs to the training loop, not here.

MoDem's options (model-offline-onpolicy-agents.md §3.2; core/modem_loop.py sets them):

- `modem_state=True`: info["modem_state"] at reset and every step = MoDem's 8-d proprioceptive
  "state", obs[0:4] + obs[18:22] of the 39-d state vector (hand xyz + gripper opening, then the same
  of the previous frame; `modem_state_of(state)`), and `modem_state_space`;
- `sparse_reward=True`: the reward of an agent step is success - 1 in {-1, 0}, the success of the
  LAST of its `action_repeat` simulator steps (MoDem's wrapper), not the dense reward sum.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

from envs.common import OBS_TYPES, FrameStack, MujocoCamera, check_arguments  # noqa: F401

DOMAIN = "metaworld"
TASK_PREFIX = "mw_"
INSTALL_HINT = "pip install -e '.[metaworld]'  (or: pip install metaworld==3.1.1)"

# The 50 Meta-World environments (v3 names without version). Kept here, not read from the
# package, so the registry knows the names even where metaworld is not installed.
METAWORLD_NAMES = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press",
    "button-press-topdown", "button-press-topdown-wall", "button-press-wall", "coffee-button",
    "coffee-pull", "coffee-push", "dial-turn", "disassemble", "door-close", "door-lock",
    "door-open", "door-unlock", "drawer-close", "drawer-open", "faucet-close", "faucet-open",
    "hammer", "hand-insert", "handle-press", "handle-press-side", "handle-pull",
    "handle-pull-side", "lever-pull", "peg-insert-side", "peg-unplug-side", "pick-out-of-hole",
    "pick-place", "pick-place-wall", "plate-slide", "plate-slide-back", "plate-slide-back-side",
    "plate-slide-side", "push", "push-back", "push-wall", "reach", "reach-wall", "shelf-place",
    "soccer", "stick-pull", "stick-push", "sweep", "sweep-into", "window-close", "window-open",
)
TASKS: list[str] = sorted(TASK_PREFIX + name for name in METAWORLD_NAMES)


# DrM (metaworld_env.py) moves camera corner2 here before every reset; metaworld 3.1.1's
# camera corner4 sits at this very position with corner2's orientation.
CAMERA = "corner2"
CORNER2_POSITION = (0.75, 0.075, 0.7)
EPISODE_STEPS = 250  # agent steps: DrM's TimeLimit(250) wraps the action repeat
# MoDem's proprioceptive slices of the 39-d state: hand xyz + gripper, and their previous-frame copy.
MODEM_STATE_SLICES = (slice(0, 4), slice(18, 22))
MODEM_STATE_DIM = 8


def modem_state_of(state: np.ndarray) -> np.ndarray:
    """MoDem's 8-d "state" of a 39-d Meta-World state vector: state[0:4] + state[18:22] (float32)."""
    state = np.asarray(state)
    if state.shape[-1] != 39:
        raise ValueError(f"a Meta-World state vector has 39 entries, got shape {state.shape}")
    return np.concatenate([state[..., s] for s in MODEM_STATE_SLICES], axis=-1).astype(np.float32)


def resolve(task: str) -> str:
    """The Meta-World name of a pixax task (e.g. 'door-open' for 'mw_door-open'); ValueError if unknown."""
    if task in TASKS:
        return task[len(TASK_PREFIX):]
    # Catch the likely slips (mw_door_open, mw_door-open-v2) by comparing without separators/version.
    def normal(name: str) -> str:
        return name.removesuffix("-v2").removesuffix("-v3").replace("_", "").replace("-", "")

    by_normal_name = {normal(t): t for t in TASKS}
    close = difflib.get_close_matches(normal(task), list(by_normal_name), n=1)
    hint = f" Did you mean {by_normal_name[close[0]]!r}?" if close else ""
    raise ValueError(f"Unknown Meta-World task {task!r}.{hint} Valid tasks: {', '.join(TASKS)}")


def domain_of(task: str) -> str:
    """'metaworld' for every Meta-World task (DrM's per-domain settings are keyed by it)."""
    resolve(task)
    return DOMAIN


def _import_metaworld():
    try:
        import metaworld.env_dict as env_dict
    except ImportError as error:
        raise ImportError(
            f"Meta-World tasks need the 'metaworld' package, which is not installed: {INSTALL_HINT}"
        ) from error
    return env_dict


class MetaWorldEnv(gym.Env):
    """A Meta-World task as a gymnasium environment (pixels or states, action repeat, success).

    The construction seed is the seed of the first episode; `reset(seed=s)` re-seeds the goal and
    object positions, so the same seed and actions always give the same episode.
    `flip_vertical` (default True) turns rows upside down as the official mujoco-py renderer
    did (it returned OpenGL's bottom-up rows): Meta-World's corner cameras are rolled 180 degrees
    about their view axis, so the flipped image is the one whose table is at the bottom (it is
    mirrored left-right relative to the camera's own view, exactly as DrM's images were).
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
        camera: str = CAMERA,
        max_episode_steps: int = EPISODE_STEPS,
        zero_fill_stack: bool = True,
        flip_vertical: bool = True,
        modem_state: bool = False,
        sparse_reward: bool = False,
    ) -> None:
        name = resolve(task)
        check_arguments(obs_type, action_repeat=action_repeat, frame_stack=frame_stack, image_size=image_size,
                        max_episode_steps=max_episode_steps)
        env_dict = _import_metaworld()
        import mujoco

        self._mujoco = mujoco
        self.task = task
        self.domain = DOMAIN
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        self.frame_stack = int(frame_stack) if obs_type == "pixels" else 1  # states are not stacked
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.zero_fill_stack = bool(zero_fill_stack)
        # How the stack is filled at reset; the training loop's replay rebuilds stacks the same way.
        self.stack_padding = "zeros" if self.zero_fill_stack else "repeat"
        self.flip_vertical = bool(flip_vertical)
        self.with_modem_state = bool(modem_state)
        self.sparse_reward = bool(sparse_reward)
        self.render_mode = "rgb_array"

        env_class = env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{name}-v3-goal-observable"]
        self._env = env_class(seed=int(seed))
        # New goal and object positions at every reset, drawn from the env's seeded generator.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        # Meta-World refuses to step past its own path length (500); our time limit governs.
        self._env.max_path_length = self.max_episode_steps * self.action_repeat

        model = self._env.model
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"Unknown camera {camera!r}. Valid cameras: {', '.join(names)}")
        if camera == CAMERA:
            model.cam_pos[camera_id] = CORNER2_POSITION  # takes effect at the next reset's forward pass
        self.camera = camera
        self._camera_id = camera_id
        self._camera = MujocoCamera(mujoco, self._env.model, camera_id, self.flip_vertical)

        # One rendered frame per agent step, for evaluation videos played at real-time speed.
        agent_step_seconds = self._env.dt * self.action_repeat
        self.metadata = {**self.metadata, "render_fps": round(1.0 / agent_step_seconds)}

        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        if obs_type == "pixels":
            self.observation_space = gym.spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3 * self.frame_stack), dtype=np.uint8
            )
        else:
            state_dim = self._env.observation_space.shape[0]
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(state_dim,), dtype=np.float32)
        self.modem_state_space = (gym.spaces.Box(-np.inf, np.inf, shape=(MODEM_STATE_DIM,), dtype=np.float32)
                                  if self.with_modem_state else None)

        self._first_episode_seed: int | None = int(seed)
        self._frames = FrameStack(self.frame_stack)
        self._steps = 0
        self._episode_success = False
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode with new goal/object positions; `seed` re-seeds their generator."""
        super().reset(seed=seed)
        if seed is None:
            seed, self._first_episode_seed = self._first_episode_seed, None
        else:
            self._first_episode_seed = None
        if seed is not None:
            self._env.seed(int(seed))
        state, _ = self._env.reset()
        self._steps = 0
        self._episode_success = False
        self._needs_reset = False
        if self.obs_type == "pixels":
            self._frames.reset(self.render(), zero_fill=self.zero_fill_stack)
        info = {"modem_state": modem_state_of(state)} if self.with_modem_state else {}
        return self._observation(state), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One agent step: the action repeated `action_repeat` simulator steps, rewards summed."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after the episode ended; call reset()."
            )
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task}: action must have shape {self.action_space.shape}, got {action.shape}"
            )
        action = action.astype(np.float32)

        reward, success, last_success = 0.0, False, False
        for _ in range(self.action_repeat):
            state, inner_reward, _, _, inner_info = self._env.step(action)
            reward += float(inner_reward)
            last_success = bool(inner_info["success"])
            success = success or last_success
        if self.sparse_reward:  # MoDem: the last simulator step's success - 1
            reward = float(last_success) - 1.0
        self._steps += 1
        self._episode_success = self._episode_success or success

        truncated = self._steps >= self.max_episode_steps
        self._needs_reset = truncated
        if self.obs_type == "pixels":
            self._frames.push(self.render())
        info = {
            "discount": 1.0,
            "frames": self.action_repeat,
            "success": float(success),
            "episode_success": float(self._episode_success),
        }
        if self.with_modem_state:
            info["modem_state"] = modem_state_of(state)
        return self._observation(state), reward, False, truncated, info

    def render(self, size: int | None = None) -> np.ndarray:
        """An RGB uint8 (size, size, 3) image of the current state from the observation camera.

        `size` defaults to `image_size`; it can be at most the model's offscreen buffer (480).
        """
        return self._camera.render(self._env.data, self.image_size if size is None else int(size))

    def close(self) -> None:
        """Frees the rendering contexts."""
        self._camera.close()
        self._env.close()

    # ------------------------------------------------------------------ helpers

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._frames.observation()
        return np.asarray(state, dtype=np.float32)
