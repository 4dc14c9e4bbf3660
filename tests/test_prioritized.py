"""data.prioritized: the sum tree against brute-force prefix sums, stratified sampling frequencies, and
PrioritizedFrameReplay against a brute-force record of which starts are valid and what priority each
has (episodes, terminations, wrap-around), reusing test_replay's reference of valid transitions."""

from __future__ import annotations

import numpy as np
import pytest

from agents.rainbow import per_loss_weights
from data.prioritized import PrioritizedFrameReplay, SumTree
from data.replay import FrameReplay, merge_frames
from test_replay import ACTION_SHAPE, GAMMA, check_samples, feed, make_stream, reference_transitions


def chi_square_ok(counts: np.ndarray, expected_probabilities: np.ndarray) -> tuple[bool, float, int]:
    """Loose chi-square bound (mean + 6 sd): passes for correct sampling, fails for a wrong law."""
    draws = counts.sum()
    expected = draws * expected_probabilities
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    return chi_square < dof + 6 * np.sqrt(2 * dof) + 10, chi_square, dof


# ------------------------------------------------------------------------------------------ sum tree

@pytest.mark.parametrize("capacity", [1, 2, 5, 8, 37, 1000])
def test_sum_tree_matches_brute_force_prefix_sums(capacity):
    """Integer priorities keep every sum exact, so find can be checked at the interval boundaries."""
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    reference = np.zeros(capacity)
    for batch in range(8):
        size = 1 if batch % 3 == 0 else int(rng.integers(1, 2 * capacity + 2))
        indices = rng.integers(0, capacity, size)
        priorities = rng.integers(0, 5, size).astype(np.float64)  # about 1 in 5 is 0
        tree.set(indices, priorities)
        for index, priority in zip(indices, priorities):  # a repeated index keeps its last priority
            reference[index] = priority
        np.testing.assert_array_equal(tree.priorities(), reference)
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), reference)
        assert tree.total == reference.sum()
        if reference.sum() == 0:
            continue
        cumulative = np.cumsum(reference)
        values = np.concatenate([rng.uniform(0, reference.sum(), 200), [0.0],
                                 cumulative[cumulative < reference.sum()]])
        expected = np.searchsorted(cumulative, values, side="right")  # smallest i with cumsum[i] > v
        np.testing.assert_array_equal(tree.find(values), expected)
        assert np.all(reference[tree.find(values)] > 0)


def test_repeated_index_takes_last_priority():
    tree = SumTree(6)
    tree.set(np.array([3, 1, 3, 3]), np.array([1.0, 2.0, 7.0, 5.0]))
    np.testing.assert_array_equal(tree.priorities(), [0, 2, 0, 5, 0, 0])
    assert tree.total == 7.0


def test_max_recorded_priority_never_decreases():
    tree = SumTree(4)
    assert tree.max_recorded_priority == 1.0  # Dopamine's initial value
    tree.set(np.array([0, 1]), np.array([0.5, 0.25]))
    assert tree.max_recorded_priority == 1.0
    tree.set(np.array([2]), np.array([3.5]))
    assert tree.max_recorded_priority == 3.5
    tree.set(np.array([2, 3]), np.array([0.0, 2.0]))
    assert tree.max_recorded_priority == 3.5


def test_stratified_sampling_by_hand():
    """Priorities [1, 0, 3], total 4: with 4 strata of width 1 the first stratum [0, 1) can only hit
    slot 0 and the others only slot 2; with 2 strata the first [0, 2) hits slot 0 or 2."""
    tree = SumTree(3)
    tree.set(np.arange(3), np.array([1.0, 0.0, 3.0]))
    for seed in range(20):
        np.testing.assert_array_equal(tree.sample(np.random.default_rng(seed), 4), [0, 2, 2, 2])
    firsts = [tree.sample(np.random.default_rng(seed), 2) for seed in range(200)]
    assert all(second == 2 for _, second in firsts)
    share_of_zero = np.mean([first == 0 for first, _ in firsts])
    assert 0.4 < share_of_zero < 0.6  # stratum [0, 2): slot 0 holds [0, 1), slot 2 holds [1, 2)


@pytest.mark.parametrize("stratified", [True, False])
def test_sampling_frequencies_follow_priorities(stratified):
    rng = np.random.default_rng(0)
    capacity, batch_size, batches = 23, 8, 2500
    priorities = rng.uniform(0.05, 2.0, capacity) * (rng.uniform(size=capacity) > 0.2)
    tree = SumTree(capacity)
    tree.set(np.arange(capacity), priorities)
    draws = np.stack([tree.sample(rng, batch_size, stratified=stratified) for _ in range(batches)])
    counts = np.bincount(draws.ravel(), minlength=capacity)
    assert np.all(counts[priorities == 0] == 0)
    positive = priorities > 0
    ok, chi_square, dof = chi_square_ok(counts[positive], priorities[positive] / priorities.sum())
    assert ok, (chi_square, dof)
    if stratified:  # the draw of stratum k lies in the k-th segment of [0, total)
        cumulative = np.cumsum(priorities)
        starts, ends = cumulative - priorities, cumulative
        width = priorities.sum() / batch_size
        for k in range(batch_size):
            slots = draws[:, k]
            assert np.all((ends[slots] > k * width) & (starts[slots] < (k + 1) * width))


def test_sum_tree_sampling_never_reaches_zero_leaves_when_sums_round():
    """Priorities spanning 16 orders of magnitude, whose float sums round: every draw is positive."""
    tree = SumTree(1 << 12)
    rng = np.random.default_rng(1)
    priorities = 10.0 ** rng.uniform(-8, 8, tree.capacity) * (rng.uniform(size=tree.capacity) > 0.5)
    tree.set(np.arange(tree.capacity), priorities)
    drawn = np.concatenate([tree.sample(rng, 256) for _ in range(20)] + [tree.sample(rng, 64, stratified=False)])
    assert np.all(priorities[drawn] > 0)
    last_positive = np.flatnonzero(priorities)[-1]
    assert tree.find(np.nextafter(tree.total, 0.0))[()] == last_positive
    # A stratum's value that rounds up to (or past) the total still lands on the last positive slot,
    # never on a zero leaf (the zero leaves after it, or the padding leaves past the capacity).
    small = SumTree(5)
    small.set(np.arange(5), np.array([1.0, 2.0, 0.5, 0.0, 0.0]))
    np.testing.assert_array_equal(small._descend(np.array([small.total, small.total * (1 + 1e-12)])), [2, 2])


def test_sum_tree_rejects_bad_input():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.set(np.array([0, 1]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.set(np.array([0]), np.array([-0.5]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.set(np.array([0]), np.array([np.inf]))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 4\)"):
        tree.set(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="indices must be integers"):
        tree.set(np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="2 indices but 3 priorities"):
        tree.set(np.array([0, 1]), np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        SumTree(0)
    assert tree.priorities().sum() == 0  # nothing was written by the rejected calls
    with pytest.raises(RuntimeError, match="all 0"):
        tree.sample(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="all 0"):
        tree.find(np.array([0.0]))
    tree.set(np.array([1]), np.array([2.0]))
    with pytest.raises(ValueError, match=r"values must be in \[0, total=2.0\)"):
        tree.find(np.array([2.0]))


def test_sum_tree_state_dict_round_trip():
    tree = SumTree(50)
    rng = np.random.default_rng(2)
    tree.set(np.arange(50), rng.uniform(0, 4, 50))
    state = {key: np.array(value) if isinstance(value, np.ndarray) else value
             for key, value in tree.state_dict().items()}
    restored = SumTree(50)
    restored.load_state_dict(state)
    assert restored.max_recorded_priority == tree.max_recorded_priority > 1.0
    np.testing.assert_array_equal(restored.sample(np.random.default_rng(3), 64),
                                  tree.sample(np.random.default_rng(3), 64))
    with pytest.raises(ValueError, match="saved with capacity 50, but this tree has capacity 51"):
        SumTree(51).load_state_dict(state)


# ----------------------------------------------------------------------------- prioritized replay

def make_prioritized(kind, capacity, frame_stack, nstep, mode, cls=PrioritizedFrameReplay):
    frame_shape, dtype = ((2, 2, 2), np.uint8) if kind == "pixels" else ((6,), np.float32)
    return cls(capacity, frame_shape, dtype, ACTION_SHAPE, frame_stack=frame_stack, nstep=nstep,
               discount=GAMMA, nstep_at_episode_end=mode)


@pytest.mark.parametrize("kind, mode, nstep, frame_stack", [
    ("pixels", "truncate", 3, 3),
    ("pixels", "exclude", 3, 1),
    ("state", "exclude", 1, 1),
])
def test_priorities_and_samples_match_brute_force(kind, mode, nstep, frame_stack):
    """After every entry: each valid start (test_replay's reference) has its brute-force priority
    (the max recorded priority when it became valid, then its updates) and every other slot 0.
    Batches: fields equal the reference transition of the start at batch["indices"], probabilities
    equal priority / total. Priorities are updated one entry after sampling, so some sampled starts
    have been overwritten by then (they must stay at 0). Finally, frequencies follow priorities."""
    capacity = 45
    entries = make_stream(seed=nstep * 10 + frame_stack, num_episodes=24, kind=kind)
    assert len(entries) > 2 * capacity  # wraps around more than once
    entry_of = {(e["episode"], e["pos"]): g for g, e in enumerate(entries)}
    replay = make_prioritized(kind, capacity, frame_stack, nstep, mode)
    uniform = make_prioritized(kind, capacity, frame_stack, nstep, mode, cls=FrameReplay)
    sample_rng, priority_rng = np.random.default_rng(0), np.random.default_rng(1)

    priority = {}  # brute force: (episode, pos) of each valid start -> its priority
    max_recorded = 1.0
    pending = None  # (slots, new priorities) sampled at the previous entry
    updates_skipped = batches_checked = 0
    for total, entry in enumerate(entries, start=1):
        feed(replay, entry)
        feed(uniform, entry)
        reference = reference_transitions(entries, total, capacity, frame_stack, nstep, mode)
        priority = {key: priority.get(key, max_recorded) for key in reference}
        if pending is not None:
            start_at_slot = {entry_of[key] % capacity: key for key in reference}
            for slot, new in zip(*pending):
                if slot in start_at_slot:
                    priority[start_at_slot[slot]] = new
                    max_recorded = max(max_recorded, new)
                else:
                    updates_skipped += 1
            replay.update_priorities(*pending)
            pending = None

        expected = np.zeros(capacity)
        for key, value in priority.items():
            expected[entry_of[key] % capacity] = value
        np.testing.assert_array_equal(replay.priorities(), expected, err_msg=f"after {total} entries")
        assert replay.max_recorded_priority == max_recorded
        assert replay.num_transitions() == len(reference)

        if reference and total % 2 == 0:
            stacked = kind != "pixels" or total % 4 == 0
            batch = replay.sample(sample_rng, 16, stacked=stacked)
            if not stacked:  # frames on their own axis: merged, they must give the stacked layout
                batch = {**batch, "obs": merge_frames(batch["obs"]), "next_obs": merge_frames(batch["next_obs"])}
            keys = check_samples(batch, reference, kind)  # obs, action, n-step reward/discount, next_obs
            assert batch["indices"].dtype == np.int64 and batch["probabilities"].dtype == np.float32
            assert batch["indices"].tolist() == [entry_of[key] % capacity for key in keys]
            total_priority = sum(priority.values())
            np.testing.assert_allclose(batch["probabilities"], [priority[key] / total_priority for key in keys],
                                       rtol=1e-6)
            # Some above the current max, so the priority given to new starts rises over the stream.
            pending = (batch["indices"], priority_rng.uniform(0.05, max_recorded + 0.3, 16))
            batches_checked += 1
    assert batches_checked > 30 and updates_skipped > 0 and max_recorded > 2.0

    # The uniform buffer fed the same stream holds the same entries and valid starts.
    for key, value in uniform.state_dict().items():
        np.testing.assert_array_equal(replay.state_dict()[key], value, err_msg=key)

    keys_in_order = list(priority)
    probabilities = np.array([priority[key] for key in keys_in_order]) / sum(priority.values())
    index_of = {key: k for k, key in enumerate(keys_in_order)}
    for stratified in (True, False):
        batch = replay.sample(np.random.default_rng(5), 20_000, stratified=stratified)
        keys = check_samples(batch, reference, kind)
        counts = np.bincount([index_of[key] for key in keys], minlength=len(keys_in_order))
        ok, chi_square, dof = chi_square_ok(counts, probabilities)
        assert ok, (stratified, chi_square, dof)


def small_episode_replay(steps: int = 4) -> PrioritizedFrameReplay:
    """One episode of `steps` steps, frame_stack 1, nstep 1: starts 0 .. steps-1 are valid, start i in
    slot i, and obs of start i is [i]."""
    replay = PrioritizedFrameReplay(16, (1,), np.float32, (1,), frame_stack=1, nstep=1, discount=0.5)
    replay.add_first([0.0])
    for t in range(1, steps + 1):
        replay.add([float(t)], [0.0], float(t), 1.0, False, False)
    return replay


def test_update_priorities_changes_frequencies_by_hand():
    replay = small_episode_replay()
    np.testing.assert_array_equal(replay.priorities()[:5], [1, 1, 1, 1, 0])  # new starts get 1.0
    replay.update_priorities(np.array([0, 1, 2]), np.array([3.0, 1.0, 0.0]))
    # Start 3 keeps its priority 1.0: probabilities 3/5, 1/5, 0, 1/5.
    # Stratified by default: strata of width 5/4; the first two lie inside start 0's interval [0, 3).
    for seed in range(10):
        assert replay.sample(np.random.default_rng(seed), 4)["indices"][:2].tolist() == [0, 0]
    batch = replay.sample(np.random.default_rng(0), 5000)
    counts = np.bincount(batch["indices"], minlength=4)
    assert counts[2] == 0
    np.testing.assert_allclose(counts / 5000, [0.6, 0.2, 0.0, 0.2], atol=0.01)  # stratified: tight
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["indices"].astype(np.float32))
    np.testing.assert_allclose(batch["probabilities"], np.array([0.6, 0.2, 0.0, 0.2])[batch["indices"]], rtol=1e-6)
    # The next start to become valid gets the largest priority ever set, 3.0.
    replay.add([5.0], [0.0], 5.0, 1.0, False, False)
    assert replay.max_recorded_priority == 3.0
    np.testing.assert_array_equal(replay.priorities()[:6], [3, 1, 0, 1, 3, 0])


def test_weights_from_sampled_probabilities_by_hand():
    """Three starts of priorities 25, 6.25, 1 (total 32.25): weights sqrt(p_min / p) = 0.2, 0.4, 1."""
    replay = small_episode_replay(steps=3)
    replay.update_priorities(np.array([0, 1, 2]), np.array([25.0, 6.25, 1.0]))
    batch = replay.sample(np.random.default_rng(0), 64)
    expected = np.array([25.0, 6.25, 1.0])[batch["indices"]] / 32.25
    np.testing.assert_allclose(batch["probabilities"], expected, rtol=1e-6)
    weights = per_loss_weights(batch["probabilities"])
    np.testing.assert_allclose(weights, np.array([0.2, 0.4, 1.0])[batch["indices"]], rtol=1e-5)
    assert set(batch["indices"].tolist()) == {0, 1, 2}


def test_state_dict_round_trip_samples_identically():
    kind, capacity, frame_stack, nstep, mode = "pixels", 40, 3, 3, "truncate"
    entries = make_stream(seed=7, num_episodes=20, kind=kind)
    split = len(entries) // 2 + 3
    assert split > capacity
    original = make_prioritized(kind, capacity, frame_stack, nstep, mode)
    rng = np.random.default_rng(0)
    for total, entry in enumerate(entries[:split], start=1):
        feed(original, entry)
        if original.num_transitions() and total % 3 == 0:
            indices = original.sample(rng, 8)["indices"]
            original.update_priorities(indices, rng.uniform(0.1, 2.5, 8))
    assert original.max_recorded_priority > 1.0

    state = original.state_dict()
    assert all(isinstance(value, np.ndarray) or type(value) is int for value in state.values())
    saved = {key: np.array(value) if isinstance(value, np.ndarray) else value for key, value in state.items()}
    restored = make_prioritized(kind, capacity, frame_stack, nstep, mode)
    restored.load_state_dict(saved)
    assert restored.max_recorded_priority == original.max_recorded_priority
    np.testing.assert_array_equal(restored.priorities(), original.priorities())

    for step, entry in enumerate(entries[split:]):
        for replay in (original, restored):
            feed(replay, entry)
        a, b = original.sample(np.random.default_rng(step), 32), restored.sample(np.random.default_rng(step), 32)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        new = rng.uniform(0.1, 3.0, 32)
        original.update_priorities(a["indices"], new)
        restored.update_priorities(b["indices"], new)
    np.testing.assert_array_equal(restored.priorities(), original.priorities())


def test_load_state_dict_rejects_foreign_or_corrupt_states():
    replay = small_episode_replay()
    uniform = FrameReplay(16, (1,), np.float32, (1,), frame_stack=1, nstep=1, discount=0.5)
    with pytest.raises(ValueError, match="uniform FrameReplay"):
        replay.load_state_dict(uniform.state_dict())
    state = {key: np.array(value) if isinstance(value, np.ndarray) else value
             for key, value in replay.state_dict().items()}
    corrupt = {**state, "priority_tree_nodes": state["priority_tree_nodes"].copy()}
    corrupt["priority_tree_nodes"][-1] = 2.0  # a leaf of a slot with no valid start
    fresh = small_episode_replay(steps=2)
    with pytest.raises(ValueError, match=r"slots that hold no valid start: \[15\]"):
        fresh.load_state_dict(corrupt)
    assert fresh.num_transitions() == 2  # left untouched
    with pytest.raises(ValueError, match="capacity"):
        PrioritizedFrameReplay(8, (1,), np.float32, (1,), frame_stack=1, nstep=1, discount=0.5).load_state_dict(state)


def test_bad_priorities_and_empty_buffers_raise():
    replay = PrioritizedFrameReplay(16, (1,), np.float32, (1,), frame_stack=1, nstep=1, discount=0.5)
    with pytest.raises(RuntimeError, match="no valid transition"):
        replay.sample(np.random.default_rng(0), 4)
    replay = small_episode_replay()
    before = replay.priorities()
    for bad in ([1.0, np.nan], [1.0, -0.1], [np.inf, 1.0]):
        with pytest.raises(ValueError, match="finite and >= 0"):
            replay.update_priorities(np.array([0, 1]), np.array(bad))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        replay.update_priorities(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 16\)"):
        replay.update_priorities(np.array([16]), np.array([1.0]))
    with pytest.raises(ValueError, match="1-D"):
        replay.update_priorities(np.array([[0]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(np.random.default_rng(0), 0)
    np.testing.assert_array_equal(replay.priorities(), before)
    replay.update_priorities(np.arange(4), np.zeros(4))
    with pytest.raises(RuntimeError, match="all 4 valid starts have priority 0"):
        replay.sample(np.random.default_rng(0), 4)
