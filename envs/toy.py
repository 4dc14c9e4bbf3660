"""Toy pixel tasks for quick learning checks (CI): bsuite's Catch behind the gymnasium API.

`toy_catch`: a board of 10 rows x 5 columns. A ball starts in a random column of the top row and
falls one row per step; a paddle on the bottom row starts in the middle column and moves left,
stays or moves right (actions 0, 1, 2; it stops at the walls). When the ball reaches the bottom
row (after 9 steps) the episode terminates with reward +1 if the paddle is under the ball, else -1;
every other step gives 0. Ball columns are drawn as bsuite draws them
(`np.random.RandomState(seed).randint(columns)`), so a seed gives bsuite's sequence of balls.

Observations: "pixels" = the board as uint8 (255 for ball and paddle, 0 elsewhere) scaled to
image_size x image_size by nearest neighbour, the last `frame_stack` frames on the LAST axis
(uint8 (size, size, frame_stack), oldest first, the first frame repeated at reset); "states" =
the board as float32 (rows * columns,) of 0/1 (bsuite's observation, flattened).

A DQN learns it in a few thousand steps: the task the learning tests run on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from envs.common import FrameStack, check_arguments

TASKS: tuple[str, ...] = ("toy_catch",)
_DOMAINS = {"toy_catch": "catch"}
PADDLE_MOVES = (-1, 0, 1)  # action 0: left, 1: stay, 2: right (bsuite's order)


def domain_of(task: str) -> str:
    """'catch' for 'toy_catch'; ValueError for an unknown toy task."""
    if task not in _DOMAINS:
        raise ValueError(f"Unknown toy task {task!r}. Valid toy tasks: {', '.join(TASKS)}")
    return _DOMAINS[task]


def nearest_neighbour_indices(source: int, target: int) -> np.ndarray:
    """Source index of each of `target` output cells: cell i shows source cell floor(i * source / target)."""
    return np.arange(target) * source // target


class CatchEnv(gym.Env):
    """bsuite's Catch as a gymnasium environment (pixels or states, see the module doc).

    The construction seed seeds the first episode; `reset(seed=s)` re-seeds the ball's column, so
    the same seed and actions give the same episode. `action_repeat` repeats an action up to that
    many steps (rewards summed, stopping when the ball lands).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "toy_catch",
        *,
        obs_type: str = "pixels",
        seed: int = 0,
        action_repeat: int = 1,
        frame_stack: int = 1,
        image_size: int = 20,
        rows: int = 10,
        columns: int = 5,
    ) -> None:
        domain = domain_of(task)
        check_arguments(obs_type, action_repeat=action_repeat, frame_stack=frame_stack,
                        image_size=image_size, columns=columns)
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 2:
            raise ValueError(f"rows must be an integer of at least 2 (the ball must fall), got {rows!r}")

        self.task = task
        self.domain = domain
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        self.frame_stack = int(frame_stack) if obs_type == "pixels" else 1  # states are not stacked
        self.image_size = int(image_size)
        self.rows, self.columns = int(rows), int(columns)
        self.frame_channels = 1
        self.stack_padding = "repeat"
        self.render_mode = "rgb_array"
        # The ball lands after rows - 1 steps, in agent steps of action_repeat steps each.
        self.max_episode_steps = math.ceil((self.rows - 1) / self.action_repeat)

        self.action_space = gym.spaces.Discrete(len(PADDLE_MOVES))
        if obs_type == "pixels":
            self.observation_space = gym.spaces.Box(
                0, 255, shape=(self.image_size, self.image_size, self.frame_stack), dtype=np.uint8
            )
        else:
            self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.rows * self.columns,), dtype=np.float32)

        self._rng = np.random.RandomState(int(seed))
        self._frames = FrameStack(self.frame_stack)
        self._ball_row = self._ball_column = self._paddle_column = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Drops a new ball in a random column of the top row; the paddle starts in the middle."""
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.RandomState(int(seed))
        self._ball_column = int(self._rng.randint(self.columns))
        self._ball_row = 0
        self._paddle_column = self.columns // 2
        self._needs_reset = False
        if self.obs_type == "pixels":
            self._frames.reset(self._pixels(self.image_size))
        return self._observation(), {"frames": 0}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Moves the paddle and drops the ball one row, `action_repeat` times (fewer if it lands)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after the episode ended; call reset()."
            )
        index = np.asarray(action)
        if index.shape != () or not np.issubdtype(index.dtype, np.integer) or not 0 <= index < len(PADDLE_MOVES):
            raise ValueError(f"{self.task}: action must be 0 (left), 1 (stay) or 2 (right), got {action!r}")
        move = PADDLE_MOVES[int(index)]

        reward, terminated, frames = 0.0, False, 0
        for _ in range(self.action_repeat):
            self._paddle_column = min(max(self._paddle_column + move, 0), self.columns - 1)
            self._ball_row += 1
            frames += 1
            if self._ball_row == self.rows - 1:  # the ball reached the paddle's row
                reward += 1.0 if self._paddle_column == self._ball_column else -1.0
                terminated = True
                break
        self._needs_reset = terminated
        if self.obs_type == "pixels":
            self._frames.push(self._pixels(self.image_size))
        return self._observation(), reward, terminated, False, {"frames": frames}

    def render(self, size: int | None = None) -> np.ndarray:
        """The board as an RGB uint8 (size, size, 3) image (white ball and paddle on black)."""
        frame = self._pixels(self.image_size if size is None else int(size))
        return np.repeat(frame, 3, axis=-1)

    # ------------------------------------------------------------------ helpers

    def board(self) -> np.ndarray:
        """The (rows, columns) float32 board: 1 at the ball and the paddle, 0 elsewhere."""
        board = np.zeros((self.rows, self.columns), np.float32)
        board[self._ball_row, self._ball_column] = 1.0
        board[self.rows - 1, self._paddle_column] = 1.0
        return board

    def _pixels(self, size: int) -> np.ndarray:
        """The board scaled to (size, size, 1) uint8 by nearest neighbour."""
        image = (self.board() * 255).astype(np.uint8)
        image = image[nearest_neighbour_indices(self.rows, size)][:, nearest_neighbour_indices(self.columns, size)]
        return image[..., None]

    def _observation(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._frames.observation()
        return self.board().ravel()
