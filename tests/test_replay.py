"""FrameReplay against a brute-force reference built from the list of episodes it was fed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data.replay import FrameReplay, merge_frames

GAMMA = 0.9
ACTION_SHAPE = (2,)


# ------------------------------------------------------------------------------------- stream of steps

def make_frame(kind: str, episode: int, pos: int) -> np.ndarray:
    """A tiny frame that encodes (episode, position in episode), so an observation can be decoded."""
    if kind == "pixels":
        frame = np.full((2, 2, 2), 7, np.uint8)
        frame[..., 0], frame[..., 1] = episode, pos
        return frame
    # A state vector with more than 4 entries (FrameReplay copies few-channel frames differently).
    return np.array([episode, pos, 0.5, -1.0, 2.0, 3.0], np.float32)


def make_proprio(episode: int, pos: int) -> np.ndarray:
    return np.array([episode, pos, -pos], np.float32)


def make_stream(seed: int, num_episodes: int, kind: str, double_reset: bool = False) -> list[dict]:
    """Entries in time order: episodes of 1..12 steps ending by termination or truncation; an episode
    is sometimes abandoned (a new one starts without is_last); the last one may be unfinished.

    double_reset: most episodes get a second reset entry right after the first (zero action, reward 0,
    discount 1, restarting the frame stack), as DrM's Meta-World trainer stores them."""
    rng = np.random.default_rng(seed)
    entries = []
    for episode in range(num_episodes):
        length = int(rng.integers(1, 13))
        ending = rng.choice(["terminated", "truncated", "abandoned"], p=[0.45, 0.45, 0.1])
        if episode == num_episodes - 1:
            ending = "unfinished"
        entries.append(dict(episode=episode, pos=0, frame=make_frame(kind, episode, 0),
                            action=np.zeros(ACTION_SHAPE, np.float32), reward=np.float32(0),
                            env_discount=np.float32(0), terminated=False, truncated=False, restart=False,
                            proprio=make_proprio(episode, 0)))
        second_reset = double_reset and rng.uniform() < 0.7
        for pos in range(1, length + 1):
            last = pos == length
            terminated = bool(last and ending == "terminated")
            restart = second_reset and pos == 1
            entries.append(dict(episode=episode, pos=pos, frame=make_frame(kind, episode, pos),
                                action=np.zeros(ACTION_SHAPE, np.float32) if restart
                                else rng.uniform(-1, 1, ACTION_SHAPE).astype(np.float32),
                                reward=np.float32(0.0 if restart else rng.uniform(-1, 1)),
                                env_discount=np.float32(0.0 if terminated else 1.0),
                                terminated=terminated, truncated=bool(last and ending == "truncated"),
                                restart=restart, proprio=make_proprio(episode, pos)))
    return entries


def feed(replay: FrameReplay, entry: dict) -> None:
    proprio = entry["proprio"] if replay.proprio_shape is not None else None
    if entry["pos"] == 0:
        replay.add_first(entry["frame"], proprio=proprio)
    else:
        replay.add(entry["frame"], entry["action"], entry["reward"], entry["env_discount"],
                   entry["terminated"], entry["truncated"], proprio=proprio, restart_stack=entry["restart"])


# ---------------------------------------------------------------------------------- brute force

def reference_transitions(entries: list[dict], total: int, capacity: int, frame_stack: int, nstep: int,
                          mode: str, pad: str = "repeat") -> dict:
    """(episode, pos) of each valid start -> its transition, from the first `total` entries.

    An observation's stack starts at the latest entry at or before it that is a reset (pos 0, or a
    restart); the frames before it are that first frame again (pad "repeat") or zeros ("zeros")."""
    oldest_kept = max(0, total - capacity)

    def first_of_stack(g):
        while entries[g]["pos"] > 0 and not entries[g]["restart"]:
            g -= 1
        return g

    def stack_entries(g):
        """Entries read by observation g's stack, oldest first; None for a zero frame."""
        first = first_of_stack(g)
        wanted = [g - back for back in range(frame_stack - 1, -1, -1)]
        if pad == "zeros":
            return [h if h >= first else None for h in wanted]
        return [max(h, first) for h in wanted]

    def observation(g):
        frames = [np.zeros_like(entries[g]["frame"]) if h is None else entries[h]["frame"]
                  for h in stack_entries(g)]
        return np.concatenate(frames, axis=-1)

    transitions = {}
    for i in range(oldest_kept, total):
        episode = entries[i]["episode"]
        same_episode = [j for j in range(i + 1, min(i + nstep, total - 1) + 1)
                        if entries[j]["episode"] == episode]
        if len(same_episode) == nstep:
            window = nstep
        elif mode == "truncate" and same_episode and (entries[same_episode[-1]]["terminated"]
                                                      or entries[same_episode[-1]]["truncated"]):
            window = len(same_episode)
        else:
            continue
        needed = stack_entries(i) + list(range(i + 1, i + window + 1)) + stack_entries(i + window)
        if min(h for h in needed if h is not None) < oldest_kept:
            continue
        reward, discount = 0.0, 1.0
        for j in range(window):
            step = entries[i + 1 + j]
            reward += discount * float(step["reward"])
            discount *= GAMMA * float(step["env_discount"])
        transitions[(episode, entries[i]["pos"])] = dict(
            obs=observation(i), action=entries[i + 1]["action"], reward=reward, discount=discount,
            next_obs=observation(i + window), proprio=entries[i]["proprio"],
            next_proprio=entries[i + window]["proprio"])
    return transitions


def newest_frame_keys(obs: np.ndarray, kind: str) -> list[tuple]:
    """(episode, pos) decoded from the newest frame of each observation in a batch."""
    newest = obs[:, 0, 0, -2:] if kind == "pixels" else obs[:, -6:-4]
    return [(int(episode), int(pos)) for episode, pos in newest]


def check_samples(batch: dict, reference: dict, kind: str) -> list:
    """Asserts every sampled transition is a reference transition with equal fields; returns the keys."""
    keys = newest_frame_keys(batch["obs"], kind)
    invalid = [key for key in keys if key not in reference]
    assert not invalid, f"sampled starts {invalid[:5]} are not valid starts"
    fields = ["obs", "next_obs", "action", "reward", "discount"]
    fields += [f for f in ("proprio", "next_proprio") if f in batch]
    for field in fields:
        expected = np.stack([reference[key][field] for key in keys])
        if field in ("reward", "discount"):
            np.testing.assert_allclose(batch[field], expected, rtol=1e-5, atol=1e-6, err_msg=field)
        else:
            np.testing.assert_array_equal(batch[field], expected, err_msg=field)
    return keys


def make_replay(kind, capacity, frame_stack, nstep, mode, pad="repeat", proprio=False) -> FrameReplay:
    frame_shape, dtype = ((2, 2, 2), np.uint8) if kind == "pixels" else ((6,), np.float32)
    return FrameReplay(capacity, frame_shape, dtype, ACTION_SHAPE, frame_stack=frame_stack, nstep=nstep,
                       discount=GAMMA, nstep_at_episode_end=mode, pad_first_frame=pad,
                       proprio_shape=(3,) if proprio else None)


# ---------------------------------------------------------------------------------------- tests

def feed_and_check_every_step(kind, mode, nstep, frame_stack, capacity, seed, min_batches_checked=4,
                              pad="repeat", double_reset=False, proprio=False):
    """Feeds a stream, checking after every entry the count of valid starts against the brute force
    and a sampled batch (stacked and unstacked). Returns the buffer and the last reference."""
    entries = make_stream(seed=seed, num_episodes=24, kind=kind, double_reset=double_reset)
    assert len(entries) > 2 * capacity  # the ring wraps around more than once
    replay = make_replay(kind, capacity, frame_stack, nstep, mode, pad=pad, proprio=proprio)
    rng = np.random.default_rng(0)
    batches_checked = 0
    for total, entry in enumerate(entries, start=1):
        feed(replay, entry)
        reference = reference_transitions(entries, total, capacity, frame_stack, nstep, mode, pad=pad)
        assert len(replay) == min(total, capacity)
        assert replay.num_transitions() == len(reference), f"after {total} entries"
        if reference:
            if kind == "pixels" and frame_stack > 1:  # the unstacked layout pads the same way
                separate = replay.sample(np.random.default_rng(total), 8, stacked=False)
                check_samples({**separate, "obs": merge_frames(separate["obs"]),
                               "next_obs": merge_frames(separate["next_obs"])}, reference, kind)
                # Frame slots (for a device copy of the frames): the same draws, the same frames.
                slots = replay.sample(np.random.default_rng(total), 8, frame_slots=True)
                assert "obs" not in slots and slots["obs_slots"].dtype == np.int32
                frames = np.concatenate([replay.state_dict()["frames"],
                                         np.zeros((1, *replay.frame_shape), replay.frame_dtype)])
                np.testing.assert_array_equal(replay.state_dict()["frames"][replay.newest_slot], entry["frame"])
                for key in ("obs", "next_obs"):
                    np.testing.assert_array_equal(frames[slots[key + "_slots"]], separate[key])
                for key in ("action", "reward", "discount"):
                    np.testing.assert_array_equal(slots[key], separate[key])
            batch = replay.sample(rng, 32)
            assert batch["obs"].dtype == replay.frame_dtype and batch["next_obs"].dtype == replay.frame_dtype
            assert batch["action"].dtype == np.float32 and batch["action"].shape == (32, *ACTION_SHAPE)
            assert batch["reward"].dtype == np.float32 and batch["reward"].shape == (32,)
            assert batch["discount"].dtype == np.float32 and batch["discount"].shape == (32,)
            check_samples(batch, reference, kind)
            batches_checked += 1
    assert batches_checked >= min_batches_checked
    return replay, reference


@pytest.mark.parametrize("kind", ["pixels", "state"])
@pytest.mark.parametrize("mode", ["exclude", "truncate"])
@pytest.mark.parametrize("nstep, frame_stack", list(itertools.product([1, 3], [1, 3])))
def test_matches_brute_force_with_wraparound(kind, mode, nstep, frame_stack):
    replay, reference = feed_and_check_every_step(kind, mode, nstep, frame_stack, capacity=45,
                                                  seed=nstep * 10 + frame_stack)
    rng = np.random.default_rng(1)

    # Uniform over the valid starts: every start appears and the counts pass a loose chi-square bound.
    assert len(reference) > 10
    draws = 20_000
    keys = check_samples(replay.sample(rng, draws), reference, kind)
    index = {key: k for k, key in enumerate(reference)}
    counts = np.bincount([index[key] for key in keys], minlength=len(reference))
    assert counts.min() > 0, "some valid start was never sampled"
    expected = draws / len(reference)
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    dof = len(reference) - 1
    assert chi_square < dof + 6 * np.sqrt(2 * dof) + 10, (chi_square, dof)


@pytest.mark.parametrize("mode", ["exclude", "truncate"])
@pytest.mark.parametrize("capacity", [3, 4, 5])
def test_capacity_smaller_than_a_transition_span(mode, capacity):
    """Starts deep in an episode read frame_stack + nstep = 6 entries, more than the ring holds: they
    must never become valid, while starts near an episode's reset frame (which read fewer) still can.
    With capacity 3 no full 3-step window fits, so only "truncate" has valid starts."""
    feed_and_check_every_step("pixels", mode, nstep=3, frame_stack=3, capacity=capacity, seed=5,
                              min_batches_checked=0 if (capacity, mode) == (3, "exclude") else 1)


def test_truncate_mode_by_hand():
    """Episode: reset frame, then rewards 1 and 2; gamma 0.5, nstep 3."""
    def run(mode, terminated):
        replay = FrameReplay(10, (1,), np.float32, (1,), frame_stack=1, nstep=3, discount=0.5,
                             nstep_at_episode_end=mode)
        replay.add_first([0.0])
        replay.add([1.0], [0.1], 1.0, 1.0, False, False)
        replay.add([2.0], [0.2], 2.0, 0.0 if terminated else 1.0, terminated, not terminated)
        return replay

    with pytest.raises(RuntimeError, match="no valid transition"):
        run("exclude", terminated=True).sample(np.random.default_rng(0), 1)
    for terminated, expected_discount in [(True, {0: 0.0, 1: 0.0}), (False, {0: 0.25, 1: 0.5})]:
        replay = run("truncate", terminated)
        assert replay.num_transitions() == 2
        batch = replay.sample(np.random.default_rng(0), 64)
        for obs, action, reward, discount, next_obs in zip(*(batch[k] for k in
                                                              ("obs", "action", "reward", "discount", "next_obs"))):
            start = int(obs[0])
            assert action[0] == pytest.approx([0.1, 0.2][start])
            assert reward == pytest.approx({0: 1 + 0.5 * 2, 1: 2.0}[start])
            assert discount == pytest.approx(expected_discount[start])
            assert next_obs[0] == 2.0
        assert {int(o[0]) for o in batch["obs"]} == {0, 1}


@pytest.mark.parametrize("kind", ["pixels", "state"])
@pytest.mark.parametrize("mode", ["exclude", "truncate"])
@pytest.mark.parametrize("pad", ["repeat", "zeros"])
def test_padding_restarted_stacks_and_proprio_match_brute_force(kind, mode, pad):
    """Zero or repeated padding before the first frame of a stack, stacks restarted by a second reset
    entry inside an episode (DrM's Meta-World double reset), and the proprio vectors of obs and
    next_obs, all against the brute force, with wrap-around."""
    feed_and_check_every_step(kind, mode, nstep=3, frame_stack=3, capacity=45, seed=11, pad=pad,
                              double_reset=True, proprio=True)


def frames_of_pairs(batch):
    return {(tuple(o.ravel()), tuple(n.ravel())) for o, n in zip(batch["obs"], batch["next_obs"])}


def test_frame_stack_zero_padding_by_hand():
    replay = FrameReplay(10, (1, 1, 1), np.uint8, (1,), frame_stack=3, nstep=1, discount=0.99,
                         pad_first_frame="zeros")
    for value in (10, 11, 12):
        frame = np.full((1, 1, 1), value, np.uint8)
        replay.add_first(frame) if value == 10 else replay.add(frame, [0.5], 1.0, 1.0, False, False)
    assert frames_of_pairs(replay.sample(np.random.default_rng(0), 64)) == {
        ((0, 0, 10), (0, 10, 11)), ((0, 10, 11), (10, 11, 12))}


@pytest.mark.parametrize("pad, expected", [
    ("repeat", {((10, 10, 10), (11, 11, 11)), ((11, 11, 11), (11, 11, 12))}),
    ("zeros", {((0, 0, 10), (0, 0, 11)), ((0, 0, 11), (0, 11, 12))}),
])
def test_restart_stack_by_hand(pad, expected):
    """add_first(10), a second reset 11 (restart_stack), a step 12: the stack of 11 does not read 10, but
    10 -> 11 is a transition (DrM's spurious zero-action transition of the double reset)."""
    replay = FrameReplay(10, (1, 1, 1), np.uint8, (1,), frame_stack=3, nstep=1, discount=0.99,
                         pad_first_frame=pad)
    replay.add_first(np.full((1, 1, 1), 10, np.uint8))
    replay.add(np.full((1, 1, 1), 11, np.uint8), [0.0], 0.0, 1.0, False, False, restart_stack=True)
    replay.add(np.full((1, 1, 1), 12, np.uint8), [0.5], 1.0, 1.0, False, False)
    batch = replay.sample(np.random.default_rng(0), 64)
    assert frames_of_pairs(batch) == expected
    first = batch["obs"][:, 0, 0, -1] == 10
    assert first.any() and np.all(batch["action"][first] == 0.0) and np.all(batch["reward"][first] == 0.0)


def test_frame_stack_repeats_reset_frame_by_hand():
    replay = FrameReplay(10, (1, 1, 1), np.uint8, (1,), frame_stack=3, nstep=1, discount=0.99)
    replay.add_first(np.full((1, 1, 1), 10, np.uint8))
    replay.add(np.full((1, 1, 1), 11, np.uint8), [0.5], 1.0, 1.0, False, False)
    replay.add(np.full((1, 1, 1), 12, np.uint8), [0.5], 1.0, 1.0, False, False)
    batch = replay.sample(np.random.default_rng(0), 64)
    pairs = {(tuple(o.ravel()), tuple(n.ravel())) for o, n in zip(batch["obs"], batch["next_obs"])}
    assert pairs == {((10, 10, 10), (10, 10, 11)), ((10, 10, 11), (10, 11, 12))}


def test_state_dict_round_trip_and_continue():
    kind, capacity, frame_stack, nstep, mode = "pixels", 40, 3, 3, "truncate"
    entries = make_stream(seed=7, num_episodes=20, kind=kind)
    split = len(entries) // 2 + 3  # inside an episode, after wrap-around
    assert split > capacity
    original = make_replay(kind, capacity, frame_stack, nstep, mode)
    for entry in entries[:split]:
        feed(original, entry)

    state = original.state_dict()
    for key, value in state.items():
        assert isinstance(value, np.ndarray) or type(value) is int, (key, type(value))
    saved = {key: np.array(value) if isinstance(value, np.ndarray) else value for key, value in state.items()}
    restored = make_replay(kind, capacity, frame_stack, nstep, mode)
    restored.load_state_dict(saved)
    assert len(restored) == len(original) and restored.num_transitions() == original.num_transitions()
    for a, b in [(original.sample(np.random.default_rng(3), 64), restored.sample(np.random.default_rng(3), 64))]:
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])

    for total, entry in enumerate(entries[split:], start=split + 1):
        feed(original, entry)
        feed(restored, entry)
    reference = reference_transitions(entries, len(entries), capacity, frame_stack, nstep, mode)
    assert restored.num_transitions() == original.num_transitions() == len(reference)
    a, b = original.sample(np.random.default_rng(4), 256), restored.sample(np.random.default_rng(4), 256)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    check_samples(b, reference, kind)


def test_load_state_dict_rejects_other_configuration():
    replay = FrameReplay(8, (2,), np.float32, (1,), frame_stack=1, nstep=3, discount=0.99)
    other = FrameReplay(8, (2,), np.float32, (1,), frame_stack=1, nstep=1, discount=0.99)
    with pytest.raises(ValueError, match="nstep"):
        other.load_state_dict(replay.state_dict())
    bigger = FrameReplay(9, (2,), np.float32, (1,), frame_stack=1, nstep=3, discount=0.99)
    with pytest.raises(ValueError, match="capacity"):
        bigger.load_state_dict(replay.state_dict())


def test_memory_check():
    with pytest.raises(MemoryError, match=r"GiB.*largest capacity that fits is \d+"):
        FrameReplay(10**12, (84, 84, 3), np.uint8, (6,), frame_stack=3, nstep=3, discount=0.99)
    per_entry = FrameReplay.memory_bytes(1, (84, 84, 3), np.uint8, (6,))
    assert per_entry >= 84 * 84 * 3 + 6 * 4 + 8  # frame + float32 action + reward and discount
    assert FrameReplay.memory_bytes(1000, (84, 84, 3), np.uint8, (6,)) == 1000 * per_entry


def test_bad_arguments():
    kwargs = dict(frame_stack=3, nstep=3, discount=0.99)
    for capacity in (0, -5):
        with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
            FrameReplay(capacity, (4, 4, 3), np.uint8, (2,), **kwargs)
    with pytest.raises(ValueError, match="nstep must be an integer >= 1"):
        FrameReplay(10, (4, 4, 3), np.uint8, (2,), **{**kwargs, "nstep": 0})
    with pytest.raises(ValueError, match="frame_stack must be an integer >= 1"):
        FrameReplay(10, (4, 4, 3), np.uint8, (2,), **{**kwargs, "frame_stack": 0})
    with pytest.raises(ValueError, match="'exclude', 'truncate'"):
        FrameReplay(10, (4, 4, 3), np.uint8, (2,), **kwargs, nstep_at_episode_end="bootstrap")
    with pytest.raises(ValueError, match="frame_shape"):
        FrameReplay(10, (), np.uint8, (2,), **kwargs)
    with pytest.raises(ValueError, match="pad_first_frame must be one of \\('repeat', 'zeros'\\)"):
        FrameReplay(10, (4, 4, 3), np.uint8, (2,), **kwargs, pad_first_frame="zero")
    with_proprio = FrameReplay(10, (4, 4, 3), np.uint8, (2,), **kwargs, proprio_shape=(5,))
    with pytest.raises(ValueError, match="pass proprio="):
        with_proprio.add_first(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"proprio must have shape \(5,\)"):
        with_proprio.add_first(np.zeros((4, 4, 3), np.uint8), proprio=np.zeros(4))
    with pytest.raises(ValueError, match="stores no proprio"):
        FrameReplay(10, (4, 4, 3), np.uint8, (2,), **kwargs).add_first(np.zeros((4, 4, 3), np.uint8), proprio=[1.0])

    replay = FrameReplay(10, (4, 4, 3), np.uint8, (2,), **kwargs)
    with pytest.raises(RuntimeError, match="add_first"):
        replay.add(np.zeros((4, 4, 3), np.uint8), np.zeros(2), 0.0, 1.0, False, False)
    with pytest.raises(ValueError, match=r"frame must have shape \(4, 4, 3\)"):
        replay.add_first(np.zeros((4, 4, 9), np.uint8))
    replay.add_first(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame must have shape \(4, 4, 3\)"):
        replay.add(np.zeros((3, 4, 4), np.uint8), np.zeros(2), 0.0, 1.0, False, False)
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        replay.add(np.zeros((4, 4, 3), np.uint8), np.zeros(3), 0.0, 1.0, False, False)
    with pytest.raises(ValueError, match="cannot be stored as uint8"):
        replay.add(np.full((4, 4, 3), 0.5), np.zeros(2), 0.0, 1.0, False, False)
    with pytest.raises(RuntimeError, match="no valid transition"):
        replay.sample(np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(np.random.default_rng(0), 0)


def test_unstacked_sample_merges_to_the_stacked_layout():
    from data.replay import merge_frames

    buf = FrameReplay(50, (4, 4, 3), np.uint8, (2,), frame_stack=3, nstep=2, discount=0.9)
    data_rng = np.random.default_rng(3)
    for episode in range(4):
        buf.add_first(data_rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
        for t in range(9):
            buf.add(data_rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), data_rng.uniform(-1, 1, 2), 1.0, 1.0,
                    False, t == 8)
    stacked = buf.sample(np.random.default_rng(0), 64)
    separate = buf.sample(np.random.default_rng(0), 64, stacked=False)
    assert separate["obs"].shape == (64, 3, 4, 4, 3)
    for key in ("obs", "next_obs"):
        np.testing.assert_array_equal(merge_frames(separate[key]), stacked[key])
    for key in ("action", "reward", "discount"):
        np.testing.assert_array_equal(separate[key], stacked[key])
