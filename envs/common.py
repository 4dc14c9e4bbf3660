"""What the environment wrappers share: argument checks, the frame stack, and a MuJoCo camera."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

OBS_TYPES = ("pixels", "states")


def check_arguments(obs_type: str, **positive_ints: Any) -> None:
    """obs_type must be one of OBS_TYPES and every keyword a positive integer (a ValueError otherwise)."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"Unknown obs_type {obs_type!r}. Valid obs_types: {', '.join(OBS_TYPES)}")
    for name, value in positive_ints.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class FrameStack:
    """The last `size` frames, concatenated on the channel (last) axis, oldest first."""

    def __init__(self, size: int):
        self.frames: deque[np.ndarray] = deque(maxlen=size)

    def reset(self, frame: np.ndarray, zero_fill: bool = False) -> None:
        """Fills the stack with `frame` (or zeros, then `frame` as the newest, e.g. Meta-World's stack)."""
        pad = np.zeros_like(frame) if zero_fill else frame
        for _ in range(self.frames.maxlen - 1):
            self.frames.append(pad)
        self.frames.append(frame)

    def push(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def observation(self) -> np.ndarray:
        return np.concatenate(self.frames, axis=-1)


class MujocoCamera:
    """Renders square RGB images of a MuJoCo model's camera, one renderer per image size."""

    def __init__(self, mujoco, model, camera_id: int, flip_vertical: bool = False):
        self._mujoco, self._model, self.camera_id, self.flip_vertical = mujoco, model, camera_id, flip_vertical
        self._renderers: dict[int, Any] = {}

    def render(self, data, size: int) -> np.ndarray:
        if size not in self._renderers:
            self._renderers[size] = self._mujoco.Renderer(self._model, height=size, width=size)
        renderer = self._renderers[size]
        renderer.update_scene(data, camera=self.camera_id)
        frame = renderer.render()
        return np.ascontiguousarray(frame[::-1]) if self.flip_vertical else frame

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
