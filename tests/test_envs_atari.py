"""Tests of envs/atari.py and envs/toy.py (and their entries in the envs registry).

Atari references are ale_py's raw environment (frameskip=1, sticky actions off) stepped by hand,
and area resizes computed by brute force (exact box integrals, or pixel repetition followed by
block means). Catch references are scripted policies and bsuite's rules written out by hand.
Atari tests skip when ale_py is absent; names and the missing-package message are tested without it.
"""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import envs
from envs import atari, toy
from envs.atari import AtariEnv, area_resize, area_weights
from envs.toy import CatchEnv


def raw_ale(game: str):
    """ale_py's own environment: one frame per step, grayscale screens, no sticky actions."""
    ale_env = pytest.importorskip("ale_py.env", reason="ale_py is not installed")
    return ale_env.AtariEnv(game, obs_type="grayscale", frameskip=1, repeat_action_probability=0.0)


needs_ale = pytest.mark.skipif(atari.ale_py is None, reason="ale_py is not installed")


# ================================================================ area resize


def brute_force_area_average(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact area average, pixel by pixel: the integral of the piecewise-constant image over each
    output cell's box, divided by the box's area (rational arithmetic)."""
    source_height, source_width = image.shape
    out = np.zeros((height, width))
    for i in range(height):
        top, bottom = Fraction(i * source_height, height), Fraction((i + 1) * source_height, height)
        for j in range(width):
            left, right = Fraction(j * source_width, width), Fraction((j + 1) * source_width, width)
            total = Fraction(0)
            for y in range(int(top), min(int(np.ceil(bottom)), source_height)):
                dy = min(bottom, y + 1) - max(top, y)
                for x in range(int(left), min(int(np.ceil(right)), source_width)):
                    dx = min(right, x + 1) - max(left, x)
                    total += dy * dx * int(image[y, x])
            out[i, j] = total / ((bottom - top) * (right - left))
    return out


def block_mean_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Area average by repeating every pixel until both sizes divide evenly, then averaging blocks."""
    def along(axis_image, source, axis):
        common = np.gcd(source, size)
        repeated = np.repeat(axis_image, size // common, axis=axis)  # length source * size / common
        block = source // common
        shape = list(repeated.shape)
        shape[axis:axis + 1] = [size, block]
        return repeated.reshape(shape).mean(axis=axis + 1)

    rows_done = along(image.astype(np.float64), image.shape[0], 0)
    return along(rows_done, image.shape[1], 1)


def test_area_weights_by_hand():
    # 5 -> 2: each output cell covers 2.5 source cells.
    np.testing.assert_allclose(area_weights(5, 2), [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]], atol=1e-7)
    # 4 -> 2: plain pairs.
    np.testing.assert_allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], atol=1e-7)
    np.testing.assert_allclose(area_weights(210, 84).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("shape, size", [((13, 11), 5), ((7, 9), 4), ((3, 5), 7)])
def test_area_resize_matches_brute_force(shape, size):
    image = np.random.default_rng(sum(shape) + size).integers(0, 256, shape, dtype=np.uint8)
    exact = brute_force_area_average(image, size, size)
    resized = area_resize(image, size)
    assert resized.dtype == np.uint8 and resized.shape == (size, size)
    # Rounded to the nearest integer: never more than half a grey level away.
    assert np.abs(resized - exact).max() <= 0.5 + 1e-3


def test_area_resize_atari_screen_and_rgb():
    rng = np.random.default_rng(0)
    screen = rng.integers(0, 256, (210, 160), dtype=np.uint8)
    assert np.abs(area_resize(screen, 84) - block_mean_resize(screen, 84)).max() <= 0.5 + 1e-3
    rgb = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    resized = area_resize(rgb, 84)
    assert resized.shape == (84, 84, 3) and resized.dtype == np.uint8
    for channel in range(3):
        assert np.abs(resized[..., channel] - block_mean_resize(rgb[..., channel], 84)).max() <= 0.5 + 1e-3
    # Integer factors are plain block means.
    block = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    np.testing.assert_array_equal(area_resize(block, 2), [[25, 45], [105, 125]])


# ================================================================ Atari: registry and arguments


def test_atari_registry_names():
    assert "atari_pong" in envs.TASKS and "atari_ms_pacman" in envs.TASKS and "atari_breakout" in envs.TASKS
    assert envs.suite_of("atari_pong") == "atari" and envs.domain_of("atari_ms_pacman") == "ms_pacman"
    assert len(atari.ATARI_57_GAMES) == 57 == len(set(atari.ATARI_57_GAMES))
    assert set(atari.ATARI_57_GAMES) <= set(atari.GAMES)
    if atari.ale_py is not None:
        from ale_py import roms

        assert atari.TASKS == sorted("atari_" + game for game in roms.get_all_rom_ids())
    with pytest.raises(ValueError, match=r"atari_ms_pacman.*there are \d+"):
        envs.make("atari_mspacman")
    with pytest.raises(ValueError, match="Did you mean 'atari_space_invaders'"):
        atari.resolve("ALE/SpaceInvaders-v5")


def test_atari_without_ale_py_lists_57_games_and_names_the_extra():
    code = (
        "import sys; sys.modules['ale_py'] = None\n"
        "import envs\n"
        "assert len(envs.atari.TASKS) == 57 and 'atari_pong' in envs.TASKS, len(envs.atari.TASKS)\n"
        "try:\n"
        "    envs.make('atari_pong')\n"
        "except ImportError as error:\n"
        "    assert '[atari]' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    repository_root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=repository_root)
    assert result.returncode == 0, result.stderr


@needs_ale
def test_atari_argument_errors():
    with pytest.raises(ValueError, match="Valid obs_types for atari_pong: pixels"):
        AtariEnv("atari_pong", obs_type="states")
    with pytest.raises(ValueError, match="Valid obs_types"):
        AtariEnv("atari_pong", obs_type="rgb")
    with pytest.raises(ValueError, match="action_repeat"):
        AtariEnv("atari_pong", action_repeat=0)
    env = AtariEnv("atari_pong", sticky_actions=False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    with pytest.raises(ValueError, match=r"integer in \[0, 6\)"):
        env.step(6)
    with pytest.raises(ValueError, match="integer"):
        env.step(1.0)
    env.close()


# ================================================================ Atari: protocol


@needs_ale
def test_atari_spaces_and_attributes():
    env = AtariEnv("atari_breakout", image_size=64, frame_stack=3, action_repeat=4)
    assert env.action_space.n == 4 and env.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.frame_channels == 1 and env.stack_padding == "zeros"
    assert env.max_episode_steps == 27_000  # 108 000 frames / 4
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["lives"] == 5 and info["game_over"] is False
    obs, reward, terminated, truncated, info = env.step(np.int64(1))
    assert obs.shape == (64, 64, 3) and isinstance(reward, float) and not terminated and not truncated
    assert info["frames"] == 4 and {"lives", "game_over", "life_lost"} <= set(info)
    frame = env.render(48)
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.reset()  # a reset in the middle of a game (no life lost) starts a new game
    assert env._ale.getEpisodeFrameNumber() == 0
    assert envs.make("atari_pong", action_repeat=2).max_episode_steps == 54_000
    env.close()


@needs_ale
def test_atari_frame_skip_sums_rewards_and_max_pools():
    """Each agent step = 4 raw frames: rewards summed, observation = area-resized max of frames 3 and 4."""
    raw = raw_ale("pong")
    env = AtariEnv("atari_pong", sticky_actions=False, seed=3)
    obs, _ = env.reset()
    first, _ = raw.reset(seed=3)
    # Dopamine's state at episode start: zeros, then the first frame.
    assert not obs[..., :3].any()
    assert np.abs(obs[..., 3] - block_mean_resize(first, 84)).max() <= 0.5 + 1e-3

    rng = np.random.default_rng(0)
    rewards, pooling_mattered = [], False
    for _ in range(120):
        action = int(rng.integers(env.action_space.n))
        raw_frames, raw_reward = [], 0.0
        for _ in range(4):
            frame, reward, terminated, truncated, _ = raw.step(action)
            raw_frames.append(frame)
            raw_reward += reward
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == raw_reward and not terminated and not truncated and info["frames"] == 4
        expected = block_mean_resize(np.maximum(raw_frames[2], raw_frames[3]), 84)
        assert np.abs(obs[..., -1] - expected).max() <= 0.5 + 1e-3
        last_only = block_mean_resize(raw_frames[3], 84)
        pooling_mattered = pooling_mattered or np.abs(obs[..., -1] - last_only).max() > 1
        rewards.append(reward)
    assert any(rewards), "Pong should score within 120 agent steps"
    assert pooling_mattered, "max-pooling should differ from the last frame somewhere"
    # The stack holds the last 4 frames, oldest first.
    assert obs.shape == (84, 84, 4)
    env.close()
    raw.close()


def play(env: AtariEnv, actions: list[int], seed: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    observations = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        observations.append(obs)
    return np.stack(observations)


@needs_ale
def test_atari_seeds_and_sticky_actions():
    actions = [int(a) for a in np.random.default_rng(1).integers(0, 6, 60)]
    sticky = AtariEnv("atari_pong", sticky_actions=True)
    seed0 = play(sticky, actions, seed=0)
    np.testing.assert_array_equal(play(sticky, actions, seed=0), seed0)  # same seed, same game
    assert not np.array_equal(play(sticky, actions, seed=1), seed0)  # sticky actions draw from the seed
    # The construction seed seeds the first game like reset(seed=...).
    fresh = AtariEnv("atari_pong", sticky_actions=True, seed=1)
    obs, _ = fresh.reset()
    np.testing.assert_array_equal(
        np.stack([obs] + [fresh.step(a)[0] for a in actions]), play(sticky, actions, seed=1)
    )
    # Without sticky actions the ALE is deterministic: the seed changes nothing.
    plain = AtariEnv("atari_pong", sticky_actions=False)
    np.testing.assert_array_equal(play(plain, actions, seed=0), play(plain, actions, seed=1))
    for env in (sticky, fresh, plain):
        env.close()


@needs_ale
def test_atari_life_loss_continues_the_game():
    env = AtariEnv("atari_breakout", sticky_actions=False, terminal_on_life_loss=True)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert info["lives"] == 5
    life_returns, lives_seen = [], []
    for _ in range(5):
        life_return = 0.0
        while True:
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
            life_return += reward
            if terminated or truncated:
                break
        assert terminated and not truncated and info["life_lost"]
        life_returns.append(life_return)
        lives_seen.append(info["lives"])
        if info["game_over"]:
            break
        assert "game_return" not in info
        frame_number = env._ale.getEpisodeFrameNumber()
        last_frame = obs[..., -1]
        obs, info = env.reset(seed=123)  # a lost life: the game goes on, the seed is not used
        assert env._ale.getEpisodeFrameNumber() == frame_number > 0
        assert info["game_over"] is False and info["lives"] == lives_seen[-1]
        np.testing.assert_array_equal(obs[..., -1], last_frame)  # a fresh, zero-filled stack
        assert not obs[..., :-1].any()
    assert lives_seen == [4, 3, 2, 1, 0] and info["game_over"]
    assert sum(life_returns) > 0 and info["game_return"] == sum(life_returns)
    env.reset()  # the game is over: a new game starts
    assert env._ale.getEpisodeFrameNumber() == 0 and env._ale.lives() == 5
    env.close()


@needs_ale
def test_atari_life_loss_without_terminal():
    """Dopamine's default: a lost life is reported but the episode is the whole game."""
    env = AtariEnv("atari_breakout", sticky_actions=False, terminal_on_life_loss=False)
    env.reset(seed=0)
    lives_lost, steps, total = 0, 0, 0.0
    while True:
        _, reward, terminated, truncated, info = env.step(1)  # FIRE only: the ball is never hit
        steps += 1
        total += reward
        lives_lost += info["life_lost"]
        if terminated or truncated:
            break
    # Hand-counted with the raw ALE: 5 lives lost, game over at frame 485 (FIRE only).
    assert terminated and not truncated and info["game_over"] and lives_lost == 5
    assert steps == 122 and info["game_return"] == total == 0.0
    env.close()


@needs_ale
def test_atari_truncation_counts_the_whole_game():
    env = AtariEnv("atari_pong", sticky_actions=False, max_episode_frames=40)
    assert env.max_episode_steps == 10
    env.reset(seed=0)
    for step in range(1, 11):
        _, _, terminated, truncated, info = env.step(0)
        assert not terminated and truncated == (step == 10)
    assert info["game_over"] and info["game_return"] == 0.0
    with pytest.raises(RuntimeError):
        env.step(0)
    env.reset()
    assert env._ale.getEpisodeFrameNumber() == 0
    env.close()

    # With terminal_on_life_loss the limit counts agent steps over all lives of the game:
    # FIRE only loses the first life at frame 97 (agent step 25), the limit is 40 game steps.
    env = AtariEnv("atari_breakout", sticky_actions=False, terminal_on_life_loss=True, max_episode_frames=160)
    env.reset(seed=0)
    lengths = []
    for _ in range(2):
        length = 0
        while True:
            _, _, terminated, truncated, info = env.step(1)
            length += 1
            if terminated or truncated:
                break
        lengths.append((length, terminated, truncated, info["game_over"]))
        env.reset()
    assert lengths == [(25, True, False, False), (15, False, True, True)]
    env.close()


# ================================================================ Catch


def ball_and_paddle(state: np.ndarray, rows: int = 10, columns: int = 5) -> tuple[int, int]:
    board = state.reshape(rows, columns)
    ball_row = int(np.nonzero(board[:-1].any(axis=1))[0][0]) if board[:-1].any() else rows - 1
    ball_column = int(np.argmax(board[ball_row]))
    paddle_column = int(np.argmax(board[-1]))
    return ball_column, paddle_column


def run_catch(env: CatchEnv, policy, seed=None) -> tuple[list[float], int]:
    state, _ = env.reset(seed=seed)
    rewards = []
    while True:
        state, reward, terminated, truncated, _ = env.step(policy(*ball_and_paddle(state)))
        rewards.append(reward)
        assert not truncated
        if terminated:
            return rewards, len(rewards)


def towards(ball, paddle):
    return 1 + int(np.sign(ball - paddle))


def away(ball, paddle):
    return 0 if ball >= paddle else 2


def test_catch_registry_and_spaces():
    assert toy.TASKS == ("toy_catch",) and envs.suite_of("toy_catch") == "toy"
    assert envs.domain_of("toy_catch") == "catch"
    env = envs.make("toy_catch")
    assert env.action_space.n == 3 and env.observation_space.shape == (20, 20, 1)
    assert env.observation_space.dtype == np.uint8 and env.frame_channels == 1
    assert env.stack_padding == "repeat" and env.max_episode_steps == 9
    obs, _ = env.reset()
    assert obs.shape == (20, 20, 1) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert sorted(np.unique(obs)) == [0, 255]
    assert env.render(40).shape == (40, 40, 3)
    states = CatchEnv(obs_type="states")
    assert states.observation_space.shape == (50,) and states.reset()[0].dtype == np.float32
    stacked = CatchEnv(frame_stack=3, image_size=10)
    obs, _ = stacked.reset()
    assert obs.shape == (10, 10, 3) and all(np.array_equal(obs[..., 0], obs[..., k]) for k in (1, 2))
    assert CatchEnv(action_repeat=4).max_episode_steps == 3
    with pytest.raises(ValueError, match="Valid toy tasks"):
        CatchEnv("toy_pong")
    with pytest.raises(ValueError, match="action must be"):
        env.step(3)


def test_catch_rewards_of_scripted_policies():
    env = CatchEnv(obs_type="states", seed=0)
    for _ in range(10):
        rewards, length = run_catch(env, towards)
        assert length == 9 and rewards == [0.0] * 8 + [1.0]
        rewards, length = run_catch(env, away)
        assert length == 9 and rewards == [0.0] * 8 + [-1.0]


def test_catch_action_repeat_and_walls():
    env = CatchEnv(obs_type="states", action_repeat=4, seed=0)
    state, _ = env.reset()
    _, paddle = ball_and_paddle(state)
    assert paddle == 2
    lengths = 0
    while True:
        state, reward, terminated, _, info = env.step(0)  # always left: the paddle stops at the wall
        lengths += 1
        if terminated:
            break
    assert lengths == 3 and info["frames"] == 1  # 4 + 4 + 1 rows
    assert ball_and_paddle(state)[1] == 0


def test_catch_pixels_match_states():
    pixels, states = CatchEnv(seed=7), CatchEnv(obs_type="states", seed=7)
    image, _ = pixels.reset()
    state, _ = states.reset()
    for action in [0, 2, 2, 1, 0, 2, 1, 1, 0]:
        # 20 x 20 pixels: each board row is 2 pixels high, each column 4 pixels wide.
        board = state.reshape(10, 5)
        np.testing.assert_array_equal(image[..., 0], np.repeat(np.repeat(board, 2, 0), 4, 1) * 255)
        image, reward_p, done_p, _, _ = pixels.step(action)
        state, reward_s, done_s, _, _ = states.step(action)
        assert reward_p == reward_s and done_p == done_s
    assert done_s


def test_catch_seeds():
    def ball_columns(env, episodes, seed=None):
        columns = []
        for episode in range(episodes):
            state, _ = env.reset(seed=seed if episode == 0 else None)
            columns.append(int(np.argmax(state.reshape(10, 5)[0])))
        return columns

    bsuite_rng = np.random.RandomState(5)
    expected = [int(bsuite_rng.randint(5)) for _ in range(20)]  # bsuite draws one column per reset
    assert ball_columns(CatchEnv(obs_type="states", seed=5), 20) == expected
    assert ball_columns(CatchEnv(obs_type="states", seed=0), 20, seed=5) == expected
    assert ball_columns(CatchEnv(obs_type="states", seed=6), 20) != expected
