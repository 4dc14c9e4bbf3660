"""Adroit hand tasks (door, hammer, pen) behind the gymnasium API, with the rules of the official
DrM code (spec §2.6 and §2.7; package `gymnasium-robotics`, pip extra `adroit`).

DrM ran mj_envs `door-v0`, `hammer-v0` and `pen-v0` (vendored in its `rrl-dependencies/mj_envs`)
through RRL's pixel wrapper. Here the same MuJoCo scenes come from gymnasium-robotics
(`AdroitHandDoor-v1`, `AdroitHandHammer-v1`, `AdroitHandPen-v1`: physics, actions, state vector
and reset distribution as in v0), and this module applies the v0 rules itself, because
gymnasium-robotics 1.4.2's v1 differs from them:

| rule | official (mj_envs v0, used here) | gymnasium-robotics v1 |
|---|---|---|
| door/hammer reward, hand-to-object term | -0.1 * distance | +0.1 * distance (sign bug [1]) |
| door goal achieved | hinge angle > 1.4 | >= 1.35 |
| pen goal achieved | orientation similarity > 0.95 | and distance < 0.075 |
| pen dropped (height < 0.075) | episode terminates | continues |
| pen time limit | 100 frames | 200 frames |

[1] fixed as AdroitHand*-v2 in gymnasium-robotics >= 1.4.3 (Farama-Foundation/Gymnasium-Robotics#220).

One `AdroitEnv` does, innermost first, what DrM's `adroit.make` does:

- actions: Box [-1, 1]^A (A = 28 door, 26 hammer, 24 pen), mapped to the actuator ranges by the
  task itself;
- action repeat: one agent step = `action_repeat` simulator frames (default 2, DrM's global
  `action_repeat`); rewards summed and multiplied by 1/20 (door), 1/100 (hammer), 1/50 (pen);
  the repeat stops early when the episode ends;
- time limit: 200 frames (door, hammer) or 100 (pen), i.e. 100 / 100 / 50 agent steps, ended as a
  truncation; a dropped pen ends the episode as a termination (discount 0);
- observations: "pixels" = 84x84 RGB renders from DrM's cameras (door/hammer `top`, pen
  `vil_camera`, placed as in DrM's mj_envs XML since gymnasium-robotics has no `top` camera and
  puts `vil_camera` elsewhere), the last `frame_stack` (default 1, DrM's Adroit value) frames
  concatenated on the LAST axis, oldest first; or "states" = the task's state vector (float32).

`info` of every step (and "proprio" also at reset): "proprio" = the 24 hand joint positions
(float32, wrist WRJ1 ... thumb THJ0: DrM's `observation_sensor`, i.e. qpos without the arm and
object joints); "discount"; "frames"; "goal_achieved_frames" (frames of this step with the goal
achieved: DrM's `n_goal_achieved`); "success" (1.0 if any of them); "episode_success" (1.0 once
the goal has held on more than 25 frames of the episode, pen: more than 20 — the official metric).

MoDem's options (model-offline-onpolicy-agents.md §3.2-3.3; core/modem_loop.py sets them):

- `modem_state=True`: info["modem_state"] at reset and every step = MoDem's proprioceptive "state",
  slices of the raw gymnasium-robotics observation (`modem_state_of(task, state)`, MODEM_STATE_SLICES).
  gymnasium-robotics 1.4.2's `_get_obs` keeps mj_envs v0's layout, so the mj_envs slices apply as they
  are: door obs = [qpos[1:-2] (27), latch, hinge, palm xyz, handle xyz, palm - handle, open flag] ->
  obs[0:27] + obs[29:32] (30-d: qpos[1:-2] and the palm position); hammer obs = [qpos[:-6] (27),
  clip(qvel[-6:], +-1), palm xyz, ...] -> obs[0:36]; pen obs = [qpos[:-6] (24), pen xyz, pen velocity
  (6), pen orientation, desired orientation, ...] -> obs[0:24] + obs[-9:-6] (27-d: the desired
  orientation). tests/test_modem_domains.py checks them against the model's qpos and sites;
- `sparse_reward=True`: the reward of an agent step is success - 1 in {-1, 0}, the goal_achieved of its
  LAST simulator frame (MoDem's wrapper), instead of the scaled dense sum;
- `max_episode_steps`: the time limit in agent steps (MoDem: door 100, hammer 125, pen 50) instead of
  DrM's frame limits;
- `terminate_on_drop=False`: a dropped pen does not end the episode (MoDem stores fixed-length episodes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from envs.common import OBS_TYPES, FrameStack, MujocoCamera, check_arguments  # noqa: F401

DOMAIN = "adroit"
INSTALL_HINT = "pip install -e '.[adroit]'  (or: pip install gymnasium-robotics==1.4.2)"

# DrM's observation_sensor: the hand's joints, in the order of the qpos slices DrM takes
# (door qpos[4:-2], hammer qpos[2:-7], pen qpos[:-6]).
HAND_JOINTS = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0",
    "MFJ3", "MFJ2", "MFJ1", "MFJ0",
    "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)


def _quat_about_z(angle: float) -> tuple[float, float, float, float]:
    """MuJoCo (w, x, y, z) quaternion of `euler="0 0 angle"`."""
    return (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))


class Scene:
    """Positions of named things in a MuJoCo model's current state (ids looked up once)."""

    def __init__(self, mujoco, model, data) -> None:
        self._mujoco, self.model, self.data = mujoco, model, data
        self._ids: dict[tuple[int, str], int] = {}

    def _id(self, kind, name: str) -> int:
        key = (int(kind), name)
        if key not in self._ids:
            index = self._mujoco.mj_name2id(self.model, kind, name)
            if index < 0:
                raise ValueError(f"The Adroit model has no {kind.name} named {name!r}")
            self._ids[key] = index
        return self._ids[key]

    def site(self, name: str) -> np.ndarray:
        return self.data.site_xpos[self._id(self._mujoco.mjtObj.mjOBJ_SITE, name)]

    def body(self, name: str) -> np.ndarray:
        return self.data.xpos[self._id(self._mujoco.mjtObj.mjOBJ_BODY, name)]

    def joint_qpos(self, name: str) -> float:
        joint = self._id(self._mujoco.mjtObj.mjOBJ_JOINT, name)
        return float(self.data.qpos[self.model.jnt_qposadr[joint]])


# ---------------------------------------------------------------- official (mj_envs v0) rules
# Each returns (reward of one frame before rescaling, goal achieved, episode terminates).


def door_rules(scene: Scene) -> tuple[float, bool, bool]:
    palm_to_handle = np.linalg.norm(scene.site("S_grasp") - scene.site("S_handle"))
    door = scene.joint_qpos("door_hinge")
    reward = -0.1 * palm_to_handle - 0.1 * (door - 1.57) ** 2 - 1e-5 * np.sum(scene.data.qvel**2)
    reward += 2.0 * (door > 0.2) + 8.0 * (door > 1.0) + 10.0 * (door > 1.35)
    return float(reward), bool(door > 1.4), False


def hammer_rules(scene: Scene) -> tuple[float, bool, bool]:
    hammer, tool, nail = scene.body("Object"), scene.site("tool"), scene.site("S_target")
    nail_to_goal = np.linalg.norm(nail - scene.site("nail_goal"))
    reward = (
        -0.1 * np.linalg.norm(scene.site("S_grasp") - hammer)
        - np.linalg.norm(tool - nail)
        - 10.0 * nail_to_goal
        - 1e-2 * np.linalg.norm(scene.data.qvel)
    )
    reward += 2.0 * (hammer[2] > 0.04 and tool[2] > 0.04)
    reward += 25.0 * (nail_to_goal < 0.02) + 75.0 * (nail_to_goal < 0.01)
    return float(reward), bool(nail_to_goal < 0.01), False


def pen_rules(scene: Scene) -> tuple[float, bool, bool]:
    pen = scene.body("Object")
    pen_axis = scene.site("object_top") - scene.site("object_bottom")
    target_axis = scene.site("target_top") - scene.site("target_bottom")
    orientation_similarity = np.dot(
        pen_axis / np.linalg.norm(pen_axis), target_axis / np.linalg.norm(target_axis)
    )
    distance = np.linalg.norm(pen - scene.site("eps_ball"))
    reward = -distance + orientation_similarity
    reward += 10.0 * (distance < 0.075 and orientation_similarity > 0.9)
    reward += 50.0 * (distance < 0.075 and orientation_similarity > 0.95)
    dropped = pen[2] < 0.075
    reward -= 5.0 * dropped
    return float(reward), bool(orientation_similarity > 0.95), bool(dropped)


@dataclasses.dataclass(frozen=True)
class AdroitTask:
    """One task: the gymnasium-robotics class, DrM's camera and DrM's rules."""

    env_class: str  # in gymnasium_robotics.envs.adroit_hand
    camera: str  # DrM's camera name
    camera_host: str  # the gymnasium-robotics camera moved to DrM's camera pose
    camera_pos: tuple[float, float, float]
    camera_quat: tuple[float, float, float, float]
    episode_frames: int  # mj_envs max_episode_steps (simulator frames)
    reward_scale: float
    success_frames: int  # the episode succeeds if the goal holds on MORE than this many frames
    rules: Callable[[Scene], tuple[float, bool, bool]]


# MoDem's proprioceptive slices of the raw gymnasium-robotics observation (see the module doc).
MODEM_STATE_SLICES: dict[str, tuple[slice, ...]] = {
    "adroit_door": (slice(0, 27), slice(29, 32)),  # qpos[1:-2], palm xyz
    "adroit_hammer": (slice(0, 36),),  # qpos[:-6], clip(qvel[-6:], +-1), palm xyz
    "adroit_pen": (slice(0, 24), slice(-9, -6)),  # qpos[:-6], desired orientation
}


def modem_state_of(task: str, state: np.ndarray) -> np.ndarray:
    """MoDem's proprioceptive "state" of a raw Adroit observation (float32; see MODEM_STATE_SLICES)."""
    resolve(task)
    state = np.asarray(state)
    return np.concatenate([state[..., s] for s in MODEM_STATE_SLICES[task]], axis=-1).astype(np.float32)


# Camera poses from DrM's rrl-dependencies/mj_envs/.../assets/DAPG_{door,hammer,pen}.xml.
ADROIT_TASKS: dict[str, AdroitTask] = {
    "adroit_door": AdroitTask(
        "AdroitHandDoorEnv", "top", "fixed", (0.0, 0.0, 1.5), _quat_about_z(3.14),
        episode_frames=200, reward_scale=1 / 20, success_frames=25, rules=door_rules,
    ),
    "adroit_hammer": AdroitTask(
        "AdroitHandHammerEnv", "top", "fixed", (0.0, 0.0, 1.1), _quat_about_z(3.14),
        episode_frames=200, reward_scale=1 / 100, success_frames=25, rules=hammer_rules,
    ),
    "adroit_pen": AdroitTask(
        "AdroitHandPenEnv", "vil_camera", "vil_camera", (0.0, -0.8, 0.8), (0.92388, 0.382683, 0.0, 0.0),
        episode_frames=100, reward_scale=1 / 50, success_frames=20, rules=pen_rules,
    ),
}
TASKS: list[str] = sorted(ADROIT_TASKS)


def resolve(task: str) -> AdroitTask:
    """The description of an Adroit task; ValueError listing the valid names if it is unknown."""
    if task not in ADROIT_TASKS:
        raise ValueError(f"Unknown Adroit task {task!r}. Valid tasks: {', '.join(TASKS)}")
    return ADROIT_TASKS[task]


def domain_of(task: str) -> str:
    """'adroit' for every Adroit task (DrM's per-domain settings are keyed by it)."""
    resolve(task)
    return DOMAIN


def _import_adroit_hand():
    try:
        import gymnasium_robotics.envs.adroit_hand as adroit_hand
    except ImportError as error:
        raise ImportError(
            f"Adroit tasks need the 'gymnasium-robotics' package, which is not installed: {INSTALL_HINT}"
        ) from error
    return adroit_hand


class AdroitEnv(gym.Env):
    """An Adroit task with DrM's cameras, rewards, success and time limits (see the module doc).

    The construction seed is the seed of the first episode; `reset(seed=s)` re-seeds the task's
    random state, so the same seed and actions always give the same episode.
    `flip_vertical=True` reproduces DrM's pixels exactly: its mujoco-py renderer returned
    OpenGL's bottom-up rows, so its Adroit images were upside down; the default gives upright ones.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        *,
        obs_type: str = "pixels",
        seed: int = 0,
        action_repeat: int = 2,
        frame_stack: int = 1,
        image_size: int = 84,
        flip_vertical: bool = False,
        modem_state: bool = False,
        sparse_reward: bool = False,
        max_episode_steps: int | None = None,
        terminate_on_drop: bool = True,
    ) -> None:
        spec = resolve(task)
        check_arguments(obs_type, action_repeat=action_repeat, frame_stack=frame_stack, image_size=image_size)
        if max_episode_steps is not None:
            check_arguments(obs_type, max_episode_steps=max_episode_steps)
        adroit_hand = _import_adroit_hand()
        import mujoco

        self._mujoco = mujoco
        self.task = task
        self.domain = DOMAIN
        self.task_spec = spec
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        self.frame_stack = int(frame_stack) if obs_type == "pixels" else 1  # states are not stacked
        self.image_size = int(image_size)
        self.flip_vertical = bool(flip_vertical)
        self.stack_padding = "repeat"  # the first frame fills the stack at reset (read by the training loop)
        self.camera = spec.camera
        self.reward_scale = spec.reward_scale
        self.episode_frames = (spec.episode_frames if max_episode_steps is None
                               else int(max_episode_steps) * self.action_repeat)
        self.success_frames = spec.success_frames
        self.max_episode_steps = math.ceil(self.episode_frames / self.action_repeat)
        self.with_modem_state = bool(modem_state)
        self.sparse_reward = bool(sparse_reward)
        self.terminate_on_drop = bool(terminate_on_drop)
        self.render_mode = "rgb_array"

        self._env = getattr(adroit_hand, spec.env_class)(reward_type="dense")
        model = self._env.model
        self._scene = Scene(mujoco, model, self._env.data)
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, spec.camera_host)
        model.cam_pos[camera_id] = spec.camera_pos
        model.cam_quat[camera_id] = spec.camera_quat
        self._camera_id = camera_id
        self._camera = MujocoCamera(mujoco, model, camera_id, self.flip_vertical)
        joint = mujoco.mjtObj.mjOBJ_JOINT
        self._hand_qpos = np.array(
            [model.jnt_qposadr[mujoco.mj_name2id(model, joint, name)] for name in HAND_JOINTS]
        )

        agent_step_seconds = self._env.dt * self.action_repeat
        self.metadata = {**self.metadata, "render_fps": round(1.0 / agent_step_seconds)}

        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=self._env.action_space.shape, dtype=np.float32)
        if obs_type == "pixels":
            self.observation_space = gym.spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, 3 * self.frame_stack), dtype=np.uint8
            )
        else:
            state_dim = self._env.observation_space.shape[0]
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(state_dim,), dtype=np.float32)
        self.proprio_space = gym.spaces.Box(-np.inf, np.inf, shape=(len(HAND_JOINTS),), dtype=np.float32)
        modem_dim = modem_state_of(task, np.zeros(self._env.observation_space.shape)).shape[0]
        self.modem_state_space = (gym.spaces.Box(-np.inf, np.inf, shape=(modem_dim,), dtype=np.float32)
                                  if self.with_modem_state else None)

        self._first_episode_seed: int | None = int(seed)
        self._frames = FrameStack(self.frame_stack)
        self._frame_count = 0
        self._goal_frames = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode; with `seed`, the task's random state is re-seeded with it."""
        super().reset(seed=seed)
        if seed is None:
            seed, self._first_episode_seed = self._first_episode_seed, None
        else:
            self._first_episode_seed = None
        state, _ = self._env.reset(seed=None if seed is None else int(seed))
        self._frame_count = 0
        self._goal_frames = 0
        self._needs_reset = False
        if self.obs_type == "pixels":
            self._frames.reset(self.render())  # the first frame fills the stack (RRL's wrapper)
        info = {"proprio": self._proprio()}
        if self.with_modem_state:
            info["modem_state"] = modem_state_of(self.task, state)
        return self._observation(state), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
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
        action = action.astype(np.float64)

        reward, goal_frames, frames, terminated = 0.0, 0, 0, False
        for _ in range(self.action_repeat):
            state, *_ = self._env.step(action)
            frames += 1
            self._frame_count += 1
            frame_reward, goal_achieved, terminated = self.task_spec.rules(self._scene)
            terminated = terminated and self.terminate_on_drop
            reward += frame_reward
            goal_frames += int(goal_achieved)
            if terminated or self._frame_count >= self.episode_frames:
                break
        self._goal_frames += goal_frames
        truncated = not terminated and self._frame_count >= self.episode_frames
        self._needs_reset = terminated or truncated

        if self.obs_type == "pixels":
            self._frames.push(self.render())
        info = {
            "discount": 0.0 if terminated else 1.0,
            "frames": frames,
            "goal_achieved_frames": goal_frames,
            "success": float(goal_frames > 0),
            "episode_success": float(self._goal_frames > self.success_frames),
            "proprio": self._proprio(),
        }
        if self.with_modem_state:
            info["modem_state"] = modem_state_of(self.task, state)
        # MoDem: the last frame's goal_achieved - 1; otherwise DrM's scaled dense reward
        reward = float(goal_achieved) - 1.0 if self.sparse_reward else reward * self.reward_scale
        return self._observation(state), reward, terminated, truncated, info

    def render(self, size: int | None = None) -> np.ndarray:
        """An RGB uint8 (size, size, 3) image of the current state from the observation camera.

        `size` defaults to `image_size`; it can be at most the model's offscreen buffer (1680).
        """
        return self._camera.render(self._env.data, self.image_size if size is None else int(size))

    def close(self) -> None:
        """Frees the rendering contexts."""
        self._camera.close()
        self._env.close()

    # ------------------------------------------------------------------ helpers

    def _proprio(self) -> np.ndarray:
        return self._env.data.qpos[self._hand_qpos].astype(np.float32)

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._frames.observation()
        return np.asarray(state, dtype=np.float32)
