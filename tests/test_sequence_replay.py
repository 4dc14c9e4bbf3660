"""data.sequence_replay against brute-force references: sampling frequencies against p^alpha / sum,
importance weights against hand values, sequence windows and frame stacks against slices of the
episodes that were added, the ring over episodes, priorities (new episodes, write-back, the official
current-max rule), sampling without replacement, vmap over seeds and the out-of-memory message."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import sequence_replay as sr

add_episode = jax.jit(sr.add_episode)
sample = jax.jit(sr.sample, static_argnames=("batch_size", "horizon", "replace"))
update_priorities = jax.jit(sr.update_priorities)


def chi_square_ok(counts: np.ndarray, expected_probabilities: np.ndarray) -> tuple[bool, float]:
    """Loose chi-square bound (mean + 6 sd): passes for the right law, fails for a visibly wrong one."""
    expected = counts.sum() * expected_probabilities
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    return chi_square < dof + 6 * np.sqrt(2 * dof) + 10, chi_square


def state_episode(tag: int, length: int, obs_dim: int = 3, action_dim: int = 2):
    """An episode whose every value encodes (tag, step), so a sampled window shows where it came from."""
    steps = np.arange(length + 1, dtype=np.float32)
    obs = tag * 1000.0 + steps[:, None] * 10.0 + np.arange(obs_dim, dtype=np.float32)
    action = -(tag * 1000.0 + steps[:length, None] * 10.0 + np.arange(action_dim, dtype=np.float32))
    reward = tag * 1000.0 + steps[:length] + 0.5
    return obs, action, reward


def fill(state, tags, length):
    episodes = []
    for tag in tags:
        episode = state_episode(tag, length, state.obs.shape[-1], state.action.shape[-1])
        state = add_episode(state, *episode)
        episodes.append(episode)
    return state, episodes


def set_all_priorities(state, values: np.ndarray):
    """Writes `values` (flat, one per slot) so that the stored priorities are exactly `values`."""
    indices = np.arange(values.size, dtype=np.int32)
    return update_priorities(state, indices, jnp.asarray(values - sr.PRIORITY_EPS, jnp.float32))


# ------------------------------------------------------------------------------------ adding, ring


def test_new_episode_priorities_and_ring_overwrite():
    length, horizon = 6, 2
    state = sr.init(3 * length + 2, length, (3,), np.float32, 2, horizon=horizon)  # floor: 3 rows
    assert state.priority.shape == (3, length) and state.obs.shape == (3, length + 1, 3)
    assert float(state.max_priority) == 1.0 and int(state.num_episodes) == 0

    state, episodes = fill(state, [0], length)
    np.testing.assert_array_equal(state.priority[0], [1, 1, 1, 1, 0, 0])  # empty buffer: 1.0, last H zero
    np.testing.assert_array_equal(state.priority[1:], 0)

    # The next episode gets the largest stored priority.
    state = update_priorities(state, jnp.array([1, 2], jnp.int32), jnp.array([4.0, 0.5]))
    state, more = fill(state, [1, 2], length)
    episodes += more
    np.testing.assert_allclose(state.priority[1], [4, 4, 4, 4, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(state.priority[2], [4, 4, 4, 4, 0, 0], rtol=1e-6)

    # Ring: the fourth and fifth episodes overwrite the oldest rows (0, then 1), nothing else.
    state, more = fill(state, [3, 4], length)
    episodes += more
    assert int(state.num_episodes) == 5
    for row, tag in zip(range(3), [3, 4, 2]):
        np.testing.assert_array_equal(state.obs[row], episodes[tag][0])
        np.testing.assert_array_equal(state.action[row], episodes[tag][1])
        np.testing.assert_array_equal(state.reward[row], episodes[tag][2])
    batch, indices = sample(state, jax.random.key(0), 256, horizon)
    sampled_tags = np.unique(np.asarray(batch["obs"][:, 0, 0]) // 1000)
    np.testing.assert_array_equal(sampled_tags, [2, 3, 4])


def test_new_priority_is_the_current_max_of_the_stored_priorities():
    """Official TD-MPC takes the max of the stored priorities at every add (the row about to be
    overwritten included), so it falls when priorities fall; max_priority tracks exactly that."""
    length, horizon = 5, 1
    state, _ = fill(sr.init(2 * length, length, (3,), np.float32, 2, horizon=horizon), [0, 1], length)
    priorities = np.array([[9, 2, 2, 2, 0], [3, 3, 1, 3, 0]], np.float32)
    state = set_all_priorities(state, priorities.reshape(-1))
    assert float(state.max_priority) == pytest.approx(9.0)
    # Row 0 holds the max and is the one overwritten: the new episode still gets 9 (official).
    state, _ = fill(state, [2], length)
    np.testing.assert_allclose(state.priority[0], [9, 9, 9, 9, 0], rtol=1e-6)
    # Lowering every priority lowers the max (no running max), and the next episode gets the new one.
    state = set_all_priorities(state, np.array([0.5, 0.25, 0.5, 0.5, 0, 3, 0.75, 1, 2, 0], np.float32))
    assert float(state.max_priority) == pytest.approx(3.0)
    state, _ = fill(state, [3], length)
    np.testing.assert_allclose(state.priority[1], [3, 3, 3, 3, 0], rtol=1e-6)
    assert float(state.max_priority) == pytest.approx(3.0)


def test_update_priorities_adds_eps_and_leaves_other_slots():
    length = 4
    state, _ = fill(sr.init(2 * length, length, (3,), np.float32, 2, horizon=1), [0, 1], length)
    before = np.asarray(state.priority).reshape(-1)
    indices = jnp.array([6, 1, 6, 2], jnp.int32)  # slot 6 twice: it keeps the larger value
    new = jnp.array([[0.25], [7.0], [2.0], [0.0]])  # (B, 1), as a loss may return it
    after = np.asarray(update_priorities(state, indices, new).priority).reshape(-1)
    expected = before.copy()
    expected[[1, 2, 6]] = [7.0 + 1e-6, 1e-6, 2.0 + 1e-6]
    np.testing.assert_allclose(after, expected, rtol=1e-7, atol=0)
    assert after[2] > 0  # +1e-6: a slot whose TD error is 0 can still be drawn


def test_update_priorities_ignores_the_rows_not_valid():
    length = 4
    state, _ = fill(sr.init(2 * length, length, (3,), np.float32, 2, horizon=1), [0, 1], length)
    state = set_all_priorities(state, np.array([9, 2, 2, 0, 3, 3, 1, 0], np.float32))
    indices = jnp.array([6, 1, 6, 2, 0], jnp.int32)
    new = jnp.array([0.25, 7.0, 2.0, 0.0, 20.0])
    valid = jnp.array([True, False, False, True, False])
    masked = update_priorities(state, indices, new, valid)
    # by hand: slot 6 keeps the valid 0.25 (the ignored 2.0 has no say), slot 2 gets 0 + 1e-6; the ignored
    # slots 1 and 0 keep 2 and 9 exactly (no +1e-6), and the ignored 20 never reaches max_priority
    np.testing.assert_allclose(np.asarray(masked.priority).reshape(-1),
                               [9, 2, 1e-6, 0, 3, 3, 0.25 + 1e-6, 0], rtol=1e-7, atol=0)
    assert np.asarray(masked.priority)[0, 1] == np.asarray(state.priority)[0, 1]
    assert float(masked.max_priority) == pytest.approx(9.0)
    # the same as writing the valid rows alone
    alone = update_priorities(state, indices[valid], new[valid])
    jax.tree.map(np.testing.assert_array_equal, masked, alone)
    # no valid row: nothing changes; all rows valid: the unmasked write
    untouched = update_priorities(state, indices, new, jnp.zeros(5, bool))
    jax.tree.map(np.testing.assert_array_equal, untouched, state)
    jax.tree.map(np.testing.assert_array_equal, update_priorities(state, indices, new, jnp.ones(5, bool)),
                 update_priorities(state, indices, new))
    with pytest.raises(ValueError, match="valid must be a bool array of shape"):
        sr.update_priorities(state, indices, new, jnp.ones(4, bool))


# ------------------------------------------------------------------------------------------ sampling


def test_sampling_frequencies_follow_priority_to_the_alpha():
    """A partly filled ring (3 of 4 rows) with spread-out priorities: slot frequencies over 51,200
    draws match p^0.6 / sum; the same counts reject a uniform law and p / sum (alpha 1)."""
    length, horizon = 5, 1
    state, _ = fill(sr.init(4 * length, length, (3,), np.float32, 2, horizon=horizon), [0, 1, 2], length)
    rng = np.random.default_rng(0)
    priorities = np.zeros((4, length), np.float32)
    priorities[:3, :length - horizon] = np.exp(rng.uniform(np.log(0.05), np.log(20.0), (3, length - horizon)))
    state = set_all_priorities(state, priorities.reshape(-1))

    keys = jax.random.split(jax.random.key(1), 50)
    _, indices = jax.vmap(lambda key: sample(state, key, 1024, horizon))(keys)
    counts = np.bincount(np.asarray(indices).reshape(-1), minlength=4 * length)

    flat = priorities.reshape(-1).astype(np.float64)
    positive = flat > 0
    assert counts[~positive].sum() == 0  # last step of each episode and the empty row: never drawn
    ok, chi_square = chi_square_ok(counts[positive], flat[positive] ** 0.6 / (flat[positive] ** 0.6).sum())
    assert ok, chi_square
    uniform = np.full(positive.sum(), 1.0 / positive.sum())
    assert not chi_square_ok(counts[positive], uniform)[0]
    assert not chi_square_ok(counts[positive], flat[positive] / flat[positive].sum())[0]


def test_importance_weights_by_hand():
    """One episode, stored priorities [1, 16, 81, 0] (the last step masked), N = 4 filled slots.
    alpha = beta = 1/2: p^alpha = [1, 4, 9], so w ∝ (N P)^-1/2 ∝ [1, 1/2, 1/3], divided by the largest
    weight in the batch. Defaults alpha 0.6, beta 0.4: w(81) / w(1) = 81^-0.24."""
    length = 4
    state, _ = fill(sr.init(length, length, (3,), np.float32, 2, horizon=1), [0], length)
    state = set_all_priorities(state, np.array([1.0, 16.0, 81.0, 0.0], np.float32))
    hand = {0: 1.0, 1: 1.0 / 2.0, 2: 1.0 / 3.0}
    seen_batches = set()
    for seed in range(40):
        batch, indices = sample(state, jax.random.key(seed), 3, 1, alpha=0.5, beta=0.5)
        indices = np.asarray(indices).tolist()
        largest = max(hand[i] for i in indices)
        np.testing.assert_allclose(batch["weights"], [hand[i] / largest for i in indices], rtol=1e-5)
        assert batch["weights"].dtype == jnp.float32 and batch["weights"].shape == (3,)
        seen_batches.add(frozenset(indices))
    assert {frozenset({1, 2}), frozenset({0, 1, 2})} <= seen_batches  # both normalizations exercised

    batch, indices = sample(state, jax.random.key(0), 3, 1, replace=False)  # all three slots
    weights = dict(zip(np.asarray(indices).tolist(), np.asarray(batch["weights"]).tolist()))
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(16.0 ** -0.24, rel=1e-5)
    assert weights[2] == pytest.approx(81.0 ** -0.24, rel=1e-5)


@pytest.mark.parametrize("replace", [True, False])
def test_last_horizon_steps_are_never_sampled(replace):
    length, horizon = 8, 3
    state, _ = fill(sr.init(3 * length, length, (3,), np.float32, 2, horizon=horizon), [0, 1, 2], length)
    seen_steps = set()
    for seed in range(10):
        _, indices = sample(state, jax.random.key(seed), 15, horizon, replace=replace)
        steps = np.asarray(indices) % length
        assert steps.max() < length - horizon, steps
        seen_steps.update(steps.tolist())
    assert seen_steps == set(range(length - horizon))


def test_sequence_windows_match_the_stored_episodes():
    """After the ring wrapped, every sampled window equals the slice of the episode its row holds."""
    length, horizon, obs_dim, action_dim = 7, 3, 3, 2
    state, episodes = fill(sr.init(3 * length, length, (obs_dim,), np.float32, action_dim, horizon=horizon),
                           [0, 1, 2, 3], length)
    row_holds = {0: 3, 1: 1, 2: 2}
    for sample_horizon in (horizon, 2):  # a shorter horizon than the buffer's is fine
        batch, indices = sample(state, jax.random.key(sample_horizon), 64, sample_horizon)
        assert batch["obs"].shape == (64, sample_horizon + 1, obs_dim) and batch["obs"].dtype == jnp.float32
        assert batch["action"].shape == (64, sample_horizon, action_dim)
        assert batch["reward"].shape == (64, sample_horizon) and indices.dtype == jnp.int32
        for b, index in enumerate(np.asarray(indices)):
            row, step = divmod(int(index), length)
            obs, action, reward = episodes[row_holds[row]]
            np.testing.assert_array_equal(batch["obs"][b], obs[step:step + sample_horizon + 1])
            np.testing.assert_array_equal(batch["action"][b], action[step:step + sample_horizon])
            np.testing.assert_array_equal(batch["reward"][b], reward[step:step + sample_horizon])


def pixel_episode(tag: int, length: int, channels: int = 2, size: int = 3) -> np.ndarray:
    """Frames (L+1, size, size, C) uint8 (channels-last, as pixax's environments) whose value is
    100 * channel + 10 * tag + step."""
    values = 100 * np.arange(channels)[None, :] + 10 * tag + np.arange(length + 1)[:, None]
    return np.broadcast_to(values[:, None, None, :], (length + 1, size, size, channels)).astype(np.uint8)


def test_pixel_frames_are_restacked_with_the_first_frame_repeated():
    length, horizon, stack, channels = 4, 1, 3, 2
    state = sr.init(2 * length, length, (3, 3, channels), np.uint8, 1, frame_stack=stack, horizon=horizon)
    frames = [pixel_episode(tag, length, channels) for tag in (1, 2)]
    zeros = np.zeros((length, 1), np.float32)
    state = add_episode(state, frames[0], zeros, zeros[:, 0])
    # A stacked observation (L+1, h, w, k*C) is accepted too; its newest frame is stored.
    stacked = np.concatenate([np.zeros_like(frames[1])] * (stack - 1) + [frames[1]], axis=-1)
    state = add_episode(state, stacked, zeros, zeros[:, 0])
    np.testing.assert_array_equal(state.obs[1], frames[1])

    batch, indices = sample(state, jax.random.key(0), 128, horizon)
    assert batch["obs"].shape == (128, horizon + 1, 3, 3, stack * channels) and batch["obs"].dtype == jnp.uint8
    starts = set()
    for b, index in enumerate(np.asarray(indices)):
        row, step = divmod(int(index), length)
        starts.add(step)
        for j in range(horizon + 1):
            position = step + j
            expected = np.concatenate([frames[row][max(position - stack + 1 + i, 0)] for i in range(stack)],
                                      axis=-1)
            np.testing.assert_array_equal(batch["obs"][b, j], expected)
    assert 0 in starts and 1 in starts  # episode starts, where the first frame is repeated
    # By hand: the stack at step 1 of episode tag 1 is frames 0, 0, 1 (channel 0 values 10, 10, 11).
    b = int(np.flatnonzero(np.asarray(indices) == 1)[0])
    np.testing.assert_array_equal(batch["obs"][b, 0, 0, 0, :], [10, 110, 10, 110, 11, 111])


def test_sampling_without_replacement():
    """Distinct slots, and the law of numpy's choice(replace=False, p) (successive draws): with
    p^alpha = [1, 4, 9] / 14 and 2 draws, slot i is left out with probability
    sum over orders (j, k) of the other two of q_j q_k / (1 - q_j)."""
    length = 4
    state, _ = fill(sr.init(length, length, (3,), np.float32, 2, horizon=1), [0], length)
    state = set_all_priorities(state, np.array([1.0, 16.0, 81.0, 0.0], np.float32))
    keys = jax.random.split(jax.random.key(2), 4000)
    _, indices = jax.vmap(lambda key: sample(state, key, 2, 1, alpha=0.5, replace=False))(keys)
    indices = np.asarray(indices)
    assert np.all(indices[:, 0] != indices[:, 1]) and indices.max() < 3
    left_out = 3 - indices.sum(axis=1)  # the slot of {0, 1, 2} not drawn
    counts = np.bincount(left_out, minlength=3)

    q = np.array([1.0, 4.0, 9.0]) / 14.0
    left_out_probability = np.zeros(3)
    for j, k in itertools.permutations(range(3), 2):
        left_out_probability[3 - j - k] += q[j] * q[k] / (1.0 - q[j])
    ok, chi_square = chi_square_ok(counts, left_out_probability)
    assert ok, (counts, chi_square)
    # The bound is tight enough to reject a uniform law (plain top-k without Gumbel noise, which always
    # leaves out slot 0, fails it too).
    assert not chi_square_ok(counts, np.full(3, 1 / 3))[0]

    # A full buffer: batch_size equal to the sampleable slots returns every one of them once.
    state, _ = fill(sr.init(3 * 6, 6, (3,), np.float32, 2, horizon=2), [0, 1, 2], 6)
    _, indices = sample(state, jax.random.key(3), 12, 2, replace=False)
    expected = [row * 6 + step for row in range(3) for step in range(4)]
    assert sorted(np.asarray(indices).tolist()) == expected


def test_vmap_over_seeds_gives_each_seed_its_own_result():
    length, horizon = 5, 1
    states = []
    for seed in range(2):
        state, _ = fill(sr.init(2 * length, length, (3,), np.float32, 2, horizon=horizon), [seed], length)
        states.append(state)
    states[1] = update_priorities(states[1], jnp.array([0, 1], jnp.int32), jnp.array([30.0, 0.0]))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    new_episodes = [state_episode(tag, length) for tag in (5, 6)]
    stacked_episode = [np.stack(parts) for parts in zip(*new_episodes)]
    stacked = jax.jit(jax.vmap(sr.add_episode))(stacked, *stacked_episode)
    keys = jax.random.split(jax.random.key(7), 2)
    batches, indices = jax.jit(jax.vmap(lambda state, key: sr.sample(state, key, 32, horizon)))(stacked, keys)
    new_priorities = jnp.arange(64, dtype=jnp.float32).reshape(2, 32)
    stacked = jax.jit(jax.vmap(sr.update_priorities))(stacked, indices, new_priorities)

    for seed in range(2):
        state = add_episode(states[seed], *new_episodes[seed])
        batch, own_indices = sample(state, keys[seed], 32, horizon)
        state = update_priorities(state, own_indices, new_priorities[seed])
        np.testing.assert_array_equal(indices[seed], own_indices)
        for name in batch:
            np.testing.assert_array_equal(batches[name][seed], batch[name])
        for name in ("obs", "action", "reward", "priority", "num_episodes", "max_priority"):
            np.testing.assert_array_equal(getattr(stacked, name)[seed], getattr(state, name))
    assert not np.array_equal(batches["obs"][0], batches["obs"][1])  # the seeds differ


# ------------------------------------------------------------------------------- memory and errors


def test_memory_error_names_bytes_needed_and_capacity():
    """capacity 100, L 10 (E 10), obs (3, 8, 8) uint8, 2 actions: obs 10*11*192 = 21,120 bytes, action
    100*2*4 = 800, reward + priority 800, 2 scalars 8: 22,728; sampling workspace 3*4*100 = 1,200:
    23,928 in all. Per episode 2,112 + 80 + 80 + 8 + 120 = 2,400, so 23,927 bytes fit 9 episodes."""
    args = (100, 10, (3, 8, 8), np.uint8, 2)
    assert sr.memory_bytes(*args) == 22_728
    with pytest.raises(MemoryError) as error:
        sr.init(*args, max_bytes=23_927)
    message = str(error.value)
    assert "needs 23928 bytes" in message and "capacity_steps=100" in message
    assert "23927 bytes" in message and "largest capacity_steps that fits is 90" in message
    assert sr.init(*args, max_bytes=23_928).obs.shape == (10, 11, 3, 8, 8)
    assert sr.init(*args).obs.dtype == jnp.uint8  # the default limit (free memory) holds a small buffer


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="horizon"):
        sr.init(20, 5, (3,), np.float32, 2, horizon=5)
    with pytest.raises(ValueError, match="at least one episode"):
        sr.init(4, 5, (3,), np.float32, 2, horizon=1)
    state = sr.init(10, 5, (3,), np.float32, 2, horizon=2)
    with pytest.raises(ValueError, match="at most the horizon"):
        sr.sample(state, jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="obs must have shape"):
        sr.add_episode(state, np.zeros((5, 3), np.float32), np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="cannot be stored"):
        pixels = sr.init(10, 5, (2, 2, 1), np.uint8, 1, horizon=1)
        sr.add_episode(pixels, np.zeros((6, 2, 2, 1), np.float32), np.zeros((5, 1)), np.zeros(5))
