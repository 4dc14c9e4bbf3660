"""Prioritized experience replay for the Rainbow / DER agents (spec §4.5: Dopamine "full Rainbow").

Three pieces:

* `SumTree`: leaf i holds the priority of replay slot i; every inner node holds the sum of its two
  children, so the total is the root, a prefix-sum search descends from the root in O(log N), and
  changing one priority recomputes the O(log N) sums above it. Sums are recomputed from the
  children (not updated by adding a delta, as Dopamine does), so they never drift: a subtree whose
  leaves are all 0 sums to exactly 0 and is never entered.
* `PrioritizedFrameReplay`: `FrameReplay` (data/replay.py: frame deduplication, n-step windows,
  episode and wrap-around validity) whose valid starts are drawn in proportion to their priorities.
The loss weights and new priorities of Dopamine's full Rainbow agent are the agent's
(agents/rainbow.py: per_loss_weights, priorities_from_loss); the loop passes the new priorities back.

Dopamine's rules, as followed here:
  * a new transition gets the largest priority ever set (`max_recorded_priority`, initially 1.0;
    it never decreases, and setting a priority of 0 leaves it unchanged);
  * a batch of B is drawn by stratified sampling: [0, total) is cut into B equal segments and one
    value is drawn uniformly in each; each value picks the slot whose prefix-sum interval holds it
    (dopamine/replay_memory/sum_tree.py stratified_sample, the buffer the 2023 MoE agents use);
  * after the update, the sampled transitions' priorities become sqrt(loss + 1e-10) (C51
    cross-entropy per sample), and the loss is weighted by 1/sqrt(p + 1e-10) normalised by the batch
    maximum, p being the sampling probability: a fixed importance exponent of 0.5, no annealing.

Where this differs from Dopamine's buffer (by design, documented):
  * Dopamine gives an entry its priority when it is written, while its n-step window is not
    complete yet, and redraws (without stratification) any sampled index that is not a valid
    transition. Here a start gets the max priority when it becomes valid, and every start that is
    not valid (window incomplete, crossing an episode end, or partly overwritten after wrap-around)
    has priority 0, so it is never drawn and every stratum's draw is kept.
  * batch["probabilities"] is priority / total. Dopamine's older buffer returns the raw priority
    under the name "sampling_probabilities"; since the loss weights are divided by their batch
    maximum, both give the same weights (up to the 1e-10 guard). Dopamine's 2024 replay
    (jax/replay_memory/samplers.py) returns priority / total, as here.
  * Dopamine's 2024 replay draws B independent values in [0, total) instead of strata:
    `sample(..., stratified=False)`.
"""

from __future__ import annotations

import numpy as np

from data.replay import FrameReplay

# Dopamine's guard against zero losses (priority sqrt(1e-10) = 1e-5 > 0) and zero probabilities.


def _checked_priorities(priorities, expected_shape: tuple) -> np.ndarray:
    priorities = np.asarray(priorities, np.float64)
    if priorities.shape != expected_shape:
        raise ValueError(f"priorities must have shape {expected_shape} (one per index), got {priorities.shape}")
    bad = ~np.isfinite(priorities) | (priorities < 0)
    if bad.any():
        raise ValueError(f"priorities must be finite and >= 0, got {priorities[bad][:5].tolist()} "
                         f"at positions {np.flatnonzero(bad)[:5].tolist()}")
    return priorities


class SumTree:
    """Array-based binary sum tree over `capacity` non-negative priorities (all 0 at first)."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        num_leaves = 1 << (self.capacity - 1).bit_length()  # next power of two; padding leaves stay 0
        # Node 0 is the root; node k has children 2k+1 and 2k+2; the leaves are the last num_leaves.
        self._nodes = np.zeros(2 * num_leaves - 1, np.float64)
        self._first_leaf = num_leaves - 1
        self._depth = num_leaves.bit_length() - 1  # edges from the root to a leaf
        self.max_recorded_priority = 1.0

    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._nodes[0])

    def get(self, indices) -> np.ndarray:
        """Priorities of the given slots (float64)."""
        return self._nodes[self._first_leaf + self._checked_indices(indices)]

    def priorities(self) -> np.ndarray:
        """All `capacity` leaf priorities (a copy)."""
        return self._nodes[self._first_leaf:self._first_leaf + self.capacity].copy()

    def _checked_indices(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise ValueError(f"indices must be in [0, {self.capacity}), got values from {indices.min()} "
                             f"to {indices.max()}")
        return indices

    def set(self, indices, priorities) -> None:
        """Sets the priorities of a batch of slots (a repeated slot takes its last priority).

        Priorities must be finite and >= 0; a slot with priority 0 is never found. O(B log N).
        """
        indices = self._checked_indices(indices).reshape(-1)
        priorities = _checked_priorities(priorities, np.shape(priorities)).reshape(-1)
        if priorities.shape != indices.shape:
            raise ValueError(f"got {indices.size} indices but {priorities.size} priorities")
        if indices.size == 0:
            return
        if indices.size == 1:
            self._set_one(int(indices[0]), float(priorities[0]))
            return
        # As in Dopamine, a priority overwritten within the batch still counts for the max.
        self.max_recorded_priority = max(self.max_recorded_priority, float(priorities.max()))
        # Keep the last occurrence of each slot (numpy leaves the winner of repeated assignment open).
        _, last_from_end = np.unique(indices[::-1], return_index=True)
        keep = indices.size - 1 - last_from_end
        indices, priorities = indices[keep], priorities[keep]
        nodes = indices + self._first_leaf
        self._nodes[nodes] = priorities
        for _ in range(self._depth):
            # Repeated parents are assigned the same sum, so duplicates are harmless here.
            nodes = (nodes - 1) // 2
            self._nodes[nodes] = self._nodes[2 * nodes + 1] + self._nodes[2 * nodes + 2]

    def _set_one(self, index: int, priority: float) -> None:
        """Unchecked single-slot set with python scalars (the replay's per-step path: ~10x faster
        than the vectorised path on arrays of one element)."""
        self.max_recorded_priority = max(self.max_recorded_priority, priority)
        nodes = self._nodes
        node = index + self._first_leaf
        nodes[node] = priority
        while node:
            node = (node - 1) >> 1
            nodes[node] = nodes[2 * node + 1] + nodes[2 * node + 2]

    def find(self, values) -> np.ndarray:
        """For each value v in [0, total): the slot i whose prefix-sum interval holds v, i.e. the
        smallest i with priority[0] + ... + priority[i] > v (so a slot of priority 0 is never found)."""
        values = np.asarray(values, np.float64)
        total = self.total
        if total <= 0.0:
            raise ValueError("cannot search a sum tree whose priorities are all 0")
        if not np.all((values >= 0.0) & (values < total)):
            raise ValueError(f"values must be in [0, total={total!r}), got values from {values.min()} "
                             f"to {values.max()}")
        return self._descend(values)

    def _descend(self, values: np.ndarray) -> np.ndarray:
        """Root-to-leaf search, vectorised over the values.

        Going right only when the right subtree is positive, and left only when v < left sum or the
        right subtree is 0, keeps every step inside a subtree of positive sum, so rounding (v - left
        slightly above the right sum, or a stratum's value rounding up to the total) can never reach a
        leaf of priority 0.
        """
        shape = values.shape
        remaining = values.reshape(-1).copy()
        nodes = np.zeros(remaining.shape, np.int64)
        for _ in range(self._depth):
            left = 2 * nodes + 1
            left_sum = self._nodes[left]
            go_right = (remaining >= left_sum) & (self._nodes[left + 1] > 0.0)
            remaining = np.where(go_right, remaining - left_sum, remaining)
            nodes = left + go_right
        return (nodes - self._first_leaf).reshape(shape)

    def sample(self, rng: np.random.Generator, batch_size: int, *, stratified: bool = True) -> np.ndarray:
        """Draws `batch_size` slots with probability priority / total (with replacement).

        stratified=True (Dopamine's sum tree): one value uniform in each of `batch_size` equal
        segments of [0, total), in segment order. stratified=False: independent uniform values in
        [0, total) (Dopamine's 2024 replay sampler). Only `rng` is used.
        """
        total = self.total
        if total <= 0.0:
            raise RuntimeError("cannot sample from a sum tree whose priorities are all 0")
        if stratified:
            values = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        else:
            values = rng.random(batch_size) * total
        return self._descend(values)

    def state_dict(self) -> dict:
        """Capacity, the node sums (the live array, not a copy) and max_recorded_priority."""
        return {"capacity": self.capacity, "nodes": self._nodes,
                "max_recorded_priority": np.asarray(self.max_recorded_priority, np.float64)}

    def load_state_dict(self, d: dict) -> None:
        """Restores a state_dict of a tree of the same capacity (copied into this tree)."""
        if int(d["capacity"]) != self.capacity:
            raise ValueError(f"sum tree state was saved with capacity {int(d['capacity'])}, but this tree has "
                             f"capacity {self.capacity}")
        nodes = np.asarray(d["nodes"])
        if nodes.shape != self._nodes.shape:
            raise ValueError(f"sum tree state has {nodes.shape[0]} nodes, but a tree of capacity "
                             f"{self.capacity} has {self._nodes.shape[0]}")
        _checked_priorities(nodes, self._nodes.shape)
        max_recorded = float(np.asarray(d["max_recorded_priority"]))
        if not np.isfinite(max_recorded) or max_recorded < 1.0:
            raise ValueError(f"max_recorded_priority must be finite and >= 1.0 (its initial value), "
                             f"got {max_recorded!r}")
        np.copyto(self._nodes, nodes, casting="same_kind")
        self.max_recorded_priority = max_recorded


class PrioritizedFrameReplay(FrameReplay):
    """FrameReplay whose valid starts are drawn in proportion to a priority kept in a sum tree.

    Takes FrameReplay's arguments. A start that becomes valid gets the tree's max_recorded_priority;
    a start that stops being valid (its entries are overwritten) gets priority 0. `sample` adds
    batch["indices"] (int64 slots, to pass back to `update_priorities`) and batch["probabilities"]
    (float32, priority / total at sampling time).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tree = SumTree(self.capacity)

    @property
    def max_recorded_priority(self) -> float:
        """The priority the next start that becomes valid will get (largest ever set, at least 1.0)."""
        return self._tree.max_recorded_priority

    def priorities(self, indices=None) -> np.ndarray:
        """Priorities of the given slots, or of all `capacity` slots (0 where no valid start is)."""
        return self._tree.priorities() if indices is None else self._tree.get(indices)

    # Hooks on FrameReplay's valid-start bookkeeping: the only places starts gain or lose validity.

    def _validate_start(self, start: int, window: int) -> None:
        super()._validate_start(start, window)
        slot = start % self.capacity
        if self._slot_to_dense[slot] >= 0:  # FrameReplay skips starts already partly overwritten
            self._tree._set_one(slot, self._tree.max_recorded_priority)

    def _invalidate_slot(self, slot: int) -> None:
        was_valid = self._slot_to_dense[slot] >= 0
        super()._invalidate_slot(slot)
        if was_valid:
            self._tree._set_one(slot, 0.0)

    # ------------------------------------------------------------------------------------- sampling

    def sample(self, rng: np.random.Generator, batch_size: int, stacked: bool = True, *,
               frame_slots: bool = False, stratified: bool = True) -> dict:
        """Draws `batch_size` valid starts with probability priority / total (see SumTree.sample for
        `stratified`) and returns FrameReplay's batch for them plus "indices" and "probabilities"."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if self._num_valid == 0:
            return super().sample(rng, batch_size, stacked, frame_slots=frame_slots)  # raises FrameReplay's "no valid transition"
        if self._tree.total <= 0.0:
            raise RuntimeError(f"all {self._num_valid} valid starts have priority 0, so none can be drawn; "
                               f"update_priorities must leave some priority > 0")
        slots = self._tree.sample(rng, int(batch_size), stratified=stratified)
        batch = self._transitions(slots, stacked, frame_slots)
        batch["indices"] = slots
        batch["probabilities"] = (self._tree.get(slots) / self._tree.total).astype(np.float32)
        return batch

    def update_priorities(self, indices, priorities) -> None:
        """Sets the priorities of sampled slots (batch["indices"]); a repeated slot takes its last
        priority. Priorities must be finite and >= 0 (a start of priority 0 is never drawn).

        A slot whose start stopped being valid since it was sampled keeps priority 0. (As in
        Dopamine, a slot already reused by a newer valid start gives that start the priority.)
        """
        indices = np.asarray(indices)
        if indices.ndim != 1:
            raise ValueError(f"indices must be a 1-D array of slots, got shape {indices.shape}")
        priorities = _checked_priorities(priorities, indices.shape)
        indices = self._tree._checked_indices(indices)
        still_valid = self._slot_to_dense[indices] >= 0
        self._tree.set(indices[still_valid], priorities[still_valid])

    # ---------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """FrameReplay's state plus the sum tree (live arrays: save them before the next add)."""
        tree = self._tree.state_dict()
        return {**super().state_dict(), "priority_tree_nodes": tree["nodes"],
                "max_recorded_priority": tree["max_recorded_priority"]}

    def load_state_dict(self, d: dict) -> None:
        """Restores a state_dict of a PrioritizedFrameReplay built with the same arguments."""
        if "priority_tree_nodes" not in d or "max_recorded_priority" not in d:
            raise ValueError("replay state has no priorities (keys 'priority_tree_nodes', "
                             "'max_recorded_priority'): it was saved by a uniform FrameReplay")
        # Check the tree fully before FrameReplay overwrites anything.
        tree = SumTree(self.capacity)
        tree.load_state_dict({"capacity": self.capacity, "nodes": d["priority_tree_nodes"],
                              "max_recorded_priority": d["max_recorded_priority"]})
        slot_to_dense = np.asarray(d.get("slot_to_dense", np.zeros(0)))
        if slot_to_dense.shape == (self.capacity,):  # otherwise FrameReplay reports the wrong shape
            stray = np.flatnonzero((tree.priorities() > 0.0) & (slot_to_dense < 0))
            if stray.size:
                raise ValueError(f"replay state gives priority > 0 to slots that hold no valid start: "
                                 f"{stray[:5].tolist()}")
        super().load_state_dict(d)
        self._tree = tree
