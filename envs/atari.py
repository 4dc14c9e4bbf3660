"""Atari 2600 games (Arcade Learning Environment) behind the gymnasium API, set up as Dopamine's
`create_atari_environment` + `AtariPreprocessing` do (spec §4.5; package `ale-py`, pip extra `atari`).

Task names are `atari_<game>`, where <game> is the ALE ROM id in snake_case, e.g. `atari_pong`,
`atari_ms_pacman`, `atari_breakout`. `TASKS` lists every ROM ale_py ships (the 57 standard games
when ale_py is not installed).

One `AtariEnv` does, innermost first:

- game: ale_py's ALE v5 environment with frameskip=1 (this wrapper repeats actions), the minimal
  action set, sticky actions with probability 0.25 when `sticky_actions` (Machado et al. 2018; the
  ALE draws them from its own seeded generator) and no time limit inside the ALE;
- action repeat: one agent step = `action_repeat` frames, rewards summed and NOT clipped (the agent
  clips); the step stops early when the game ends, or when a life is lost with
  `terminal_on_life_loss`;
- observation frame: the ALE's grayscale screen (210 x 160), max-pooled over the step's last two
  frames (a step cut short returns its final frame), then resized to image_size x image_size by
  area averaging (what cv2.INTER_AREA computes when downscaling; written in numpy here);
- frame stack: the last `frame_stack` frames on the LAST axis, uint8 (size, size, frame_stack),
  oldest first, zero-filled at the start of an episode: Dopamine's agents zero their state at every
  `begin_episode` and its replay pads the frames before an episode's start with zeros, so
  `stack_padding = "zeros"`;
- time limit: `max_episode_steps = max_episode_frames // action_repeat` agent steps per game
  (Dopamine's Runner: 27 000 steps = 108 000 frames = 30 minutes), ended as a truncation.

`terminal_on_life_loss` (DER's setting; Dopamine's Runner handles it the same way): a lost life
ends the agent's episode (`terminated=True`, info["life_lost"]=True) but not the game; the next
`reset()` continues the same game (it does not reset the ALE and ignores its seed) and returns the
current frame as a fresh, zero-filled stack. Only when the game is over does `reset()` start a new
game.

`info` of every step and reset: "lives" (the ALE's lives counter), "game_over" (True when the game
ended, by the ALE's game over or by the time limit, so the next reset starts a new game),
"life_lost" (a life was lost in this step) and "frames" (frames emulated); at a game's end also
"game_return": the game's raw score, summed over all its lives, so a trainer can log real scores
when episodes are lives.

Dopamine details knowingly not reproduced: its ALE v5 environment also truncates games at 100 000
frames and then reports them as terminal (`max_num_frames_per_episode=100_000`, before the Runner's
27 000-step limit); here the only limit is `max_episode_frames`, reported as a truncation. Dopamine's
observation after a step cut short is a stale buffer (its docstring says to ignore it); here it is
the final frame. With sticky actions off the ALE is deterministic: the seed then changes nothing.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import gymnasium as gym
import numpy as np

from envs.common import check_arguments

try:
    import ale_py
    from ale_py import env as ale_env
except ImportError:  # the task names stay listed; making a task says what to install
    ale_py = ale_env = None

TASK_PREFIX = "atari_"
INSTALL_HINT = "pip install -e '.[atari]'  (or: pip install ale-py==0.12.1)"
VALID_OBS_TYPES = ("pixels",)  # the ALE has no state vector comparable to the other suites'

STICKY_ACTION_PROBABILITY = 0.25  # Machado et al. 2018, Dopamine's default
ALE_FRAMES_PER_SECOND = 60
DOPAMINE_EPISODE_FRAMES = 108_000  # 30 minutes of play = Dopamine's 27 000 agent steps x 4

# The 57 games of the standard Atari benchmark (ALE ROM ids), listed when ale_py is missing.
ATARI_57_GAMES = (
    "alien", "amidar", "assault", "asterix", "asteroids", "atlantis", "bank_heist", "battle_zone",
    "beam_rider", "berzerk", "bowling", "boxing", "breakout", "centipede", "chopper_command",
    "crazy_climber", "defender", "demon_attack", "double_dunk", "enduro", "fishing_derby",
    "freeway", "frostbite", "gopher", "gravitar", "hero", "ice_hockey", "jamesbond", "kangaroo",
    "krull", "kung_fu_master", "montezuma_revenge", "ms_pacman", "name_this_game", "phoenix",
    "pitfall", "pong", "private_eye", "qbert", "riverraid", "road_runner", "robotank", "seaquest",
    "skiing", "solaris", "space_invaders", "star_gunner", "surround", "tennis", "time_pilot",
    "tutankham", "up_n_down", "venture", "video_pinball", "wizard_of_wor", "yars_revenge", "zaxxon",
)


def _installed_games() -> tuple[str, ...]:
    """Every ROM id ale_py ships, or the 57 standard games when ale_py is not installed."""
    if ale_py is None:
        return ATARI_57_GAMES
    from ale_py import roms

    return tuple(roms.get_all_rom_ids())


GAMES: tuple[str, ...] = tuple(sorted(_installed_games()))
TASKS: list[str] = [TASK_PREFIX + game for game in GAMES]


def resolve(task: str) -> str:
    """The ALE ROM id of a pixax task (e.g. 'ms_pacman' for 'atari_ms_pacman'); ValueError if unknown."""
    if task in TASKS:
        return task[len(TASK_PREFIX):]
    # Catch the likely slips: Gymnasium ids (ALE/MsPacman-v5), CamelCase, a missing prefix.
    name = task.removeprefix("ALE/").split("-v")[0].removeprefix(TASK_PREFIX)
    by_normal_name = {game.replace("_", ""): game for game in GAMES}
    close = difflib.get_close_matches(name.replace("_", "").lower(), list(by_normal_name), n=1)
    hint = f" Did you mean {TASK_PREFIX + by_normal_name[close[0]]!r}?" if close else ""
    examples = ", ".join(TASK_PREFIX + game for game in ("pong", "breakout", "ms_pacman", "seaquest"))
    raise ValueError(
        f"Unknown Atari task {task!r}.{hint} Atari tasks are 'atari_<ROM id in snake_case>', e.g. "
        f"{examples}; there are {len(TASKS)} (envs.atari.TASKS lists them)."
    )


def domain_of(task: str) -> str:
    """The game of an Atari task, e.g. 'ms_pacman' for 'atari_ms_pacman'."""
    return resolve(task)


# ---------------------------------------------------------------------- area resize


@functools.lru_cache(maxsize=None)
def area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) float32 matrix of an area-average resize along one axis.

    Output cell i covers the source interval [i * source/target, (i+1) * source/target); its
    weight on source cell j is the length of [j, j+1) inside that interval divided by the
    interval's length, so every row sums to 1. `rows @ image @ cols.T` resizes an image.
    """
    edges = np.arange(target + 1, dtype=np.float64) * source / target
    cells = np.arange(source, dtype=np.float64)
    overlap = np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(edges[:-1, None], cells[None, :])
    weights = (np.clip(overlap, 0.0, None) * (target / source)).astype(np.float32)
    weights.setflags(write=False)  # shared by every caller through the cache
    return weights


@functools.lru_cache(maxsize=None)
def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero entries of area_weights(source, target), row by row: (target, taps) source
    indices and their weights (padded with weight 0). Gathering these few rows is about twice as
    fast as the dense product and keeps BLAS threads out of every environment process."""
    weights = area_weights(source, target)
    taps = int((weights > 0).sum(axis=1).max())
    indices = np.zeros((target, taps), np.intp)
    tap_weights = np.zeros((target, taps), np.float32)
    for row, row_weights in enumerate(weights):
        (nonzero,) = np.nonzero(row_weights)
        indices[row, : len(nonzero)] = nonzero
        tap_weights[row, : len(nonzero)] = row_weights[nonzero]
    return indices, tap_weights


def area_resize(image: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) or (H, W, C) uint8 image resized to (size, size[, C]) by area averaging, rounded
    to the nearest integer: `rows @ image @ cols.T` with rows = area_weights(H, size) and
    cols = area_weights(W, size), which is cv2.resize(image, (size, size),
    interpolation=cv2.INTER_AREA) when downscaling (up to float rounding); when upscaling each
    output pixel still averages the area it covers (cv2 interpolates bilinearly there instead)."""
    row_indices, row_weights = _area_taps(image.shape[0], size)
    col_indices, col_weights = _area_taps(image.shape[1], size)
    pixels = image.astype(np.float32)
    rows_done = np.einsum("ik,ik...->i...", row_weights, pixels[row_indices])  # (size, W[, C])
    resized = np.einsum("jk,ijk...->ij...", col_weights, rows_done[:, col_indices])  # (size, size[, C])
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------- environment


def _check_ale_installed() -> None:
    if ale_py is None:
        raise ImportError(f"Atari tasks need the 'ale-py' package, which is not installed: {INSTALL_HINT}")


class AtariEnv(gym.Env):
    """An Atari 2600 game as a gymnasium environment with Dopamine's preprocessing (see module doc).

    The construction seed seeds the first game; `reset(seed=s)` re-seeds the ALE (its sticky
    actions) whenever that reset starts a new game, so the same seed and actions give the same game.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        *,
        obs_type: str = "pixels",
        seed: int = 0,
        action_repeat: int = 4,
        frame_stack: int = 4,
        image_size: int = 84,
        sticky_actions: bool = True,
        terminal_on_life_loss: bool = False,
        max_episode_frames: int = DOPAMINE_EPISODE_FRAMES,
    ) -> None:
        game = resolve(task)
        check_arguments(obs_type, action_repeat=action_repeat, frame_stack=frame_stack,
                        image_size=image_size, max_episode_frames=max_episode_frames)
        if obs_type not in VALID_OBS_TYPES:
            raise ValueError(
                f"Atari tasks have no state observations (obs_type={obs_type!r}). "
                f"Valid obs_types for {task}: {', '.join(VALID_OBS_TYPES)}"
            )
        if max_episode_frames < action_repeat:
            raise ValueError(
                f"max_episode_frames ({max_episode_frames}) must be at least action_repeat "
                f"({action_repeat}): an episode needs at least one agent step"
            )
        _check_ale_installed()

        self.task = task
        self.domain = game
        self.obs_type = obs_type
        self.action_repeat = int(action_repeat)
        self.frame_stack = int(frame_stack)
        self.image_size = int(image_size)
        self.sticky_actions = bool(sticky_actions)
        self.terminal_on_life_loss = bool(terminal_on_life_loss)
        self.max_episode_steps = int(max_episode_frames) // self.action_repeat
        self.frame_channels = 1  # one grayscale channel per frame (the replay stores the newest)
        self.stack_padding = "zeros"  # Dopamine zero-fills the stack at every episode start
        self.render_mode = "rgb_array"
        # One rendered frame per agent step, for evaluation videos played at real-time speed.
        self.metadata = {**self.metadata, "render_fps": round(ALE_FRAMES_PER_SECOND / self.action_repeat)}

        self._env = ale_env.AtariEnv(
            game,
            obs_type="grayscale",
            frameskip=1,
            repeat_action_probability=STICKY_ACTION_PROBABILITY if self.sticky_actions else 0.0,
            full_action_space=False,
            max_num_frames_per_episode=0,  # no limit inside the ALE: max_episode_frames governs
        )
        self._ale = self._env.ale
        self._action_set = self._env._action_set  # ALE action ids of the minimal action set
        self.action_space = gym.spaces.Discrete(len(self._action_set))
        self.observation_space = gym.spaces.Box(
            0, 255, shape=(self.image_size, self.image_size, self.frame_stack), dtype=np.uint8
        )

        self._first_game_seed: int | None = int(seed)
        self._stack = np.zeros(self.observation_space.shape, np.uint8)
        self._frame = np.zeros((self.image_size, self.image_size), np.uint8)  # newest processed frame
        self._lives = 0
        self._game_steps = 0  # agent steps since the game started (over all its lives)
        self._game_return = 0.0
        self._resume_game = False  # the last episode ended by a lost life: reset continues the game
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode: a new game, or after a lost life (terminal_on_life_loss) the rest of
        the current game from its current frame. `seed` re-seeds the ALE when a new game starts."""
        super().reset(seed=seed)
        if not self._resume_game:
            if seed is None:
                seed, self._first_game_seed = self._first_game_seed, None
            else:
                self._first_game_seed = None
            # ale_py's reset re-seeds (and reloads the ROM) only when given a seed.
            self._env.reset(seed=None if seed is None else int(seed))
            self._lives = self._ale.lives()
            self._game_steps = 0
            self._game_return = 0.0
            self._frame = area_resize(self._ale.getScreenGrayscale(), self.image_size)
        self._resume_game = False
        self._stack[:] = 0
        self._stack[..., -1] = self._frame
        self._needs_reset = False
        info = {"lives": self._lives, "game_over": False, "life_lost": False, "frames": 0}
        return self._stack.copy(), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One agent step: the action repeated `action_repeat` frames (fewer if a life or the game ends)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after the episode ended; call reset()."
            )
        index = np.asarray(action)
        if index.shape != () or not np.issubdtype(index.dtype, np.integer) or not 0 <= index < self.action_space.n:
            raise ValueError(
                f"{self.task}: action must be an integer in [0, {self.action_space.n}), got {action!r}"
            )
        ale_action = self._action_set[int(index)]

        reward, life_lost, game_over = 0.0, False, False
        last_screens: list[np.ndarray] = []  # the frames of the step's last two positions
        for inner in range(self.action_repeat):
            reward += float(self._ale.act(ale_action))
            lives = self._ale.lives()
            life_lost = life_lost or lives < self._lives
            self._lives = lives
            game_over = self._ale.game_over(with_truncation=False)
            cut_short = game_over or (life_lost and self.terminal_on_life_loss)
            if inner >= self.action_repeat - 2 or cut_short:
                last_screens.append(self._ale.getScreenGrayscale())
            if cut_short:
                break
        frames = inner + 1
        # Max-pool the last two frames (Atari sprites flicker); a step cut short keeps its final frame.
        pooled = last_screens[-1] if len(last_screens) == 1 else np.maximum(last_screens[-2], last_screens[-1])
        self._frame = area_resize(pooled, self.image_size)
        self._stack = np.concatenate([self._stack[..., 1:], self._frame[..., None]], axis=-1)

        self._game_steps += 1
        self._game_return += reward
        terminated = game_over or (life_lost and self.terminal_on_life_loss)
        truncated = self._game_steps >= self.max_episode_steps
        game_ended = game_over or truncated
        self._resume_game = terminated and not game_ended
        self._needs_reset = terminated or truncated

        info: dict[str, Any] = {"lives": self._lives, "game_over": game_ended, "life_lost": life_lost,
                                "frames": frames}
        if game_ended:
            info["game_return"] = self._game_return
        return self._stack.copy(), reward, terminated, truncated, info

    def render(self, size: int | None = None) -> np.ndarray:
        """The current RGB screen as uint8 (size, size, 3), area-resized (default image_size)."""
        size = self.image_size if size is None else int(size)
        return area_resize(self._ale.getScreenRGB(), size)

    def close(self) -> None:
        self._env.close()

    def get_action_meanings(self) -> list[str]:
        """Names of the minimal action set, e.g. ['NOOP', 'FIRE', 'RIGHT', 'LEFT'] for Breakout."""
        return [action.name for action in self._action_set]
