"""Frame-deduplicated replay with n-step targets for off-policy agents (DrQ-v2, DrM, TD3 on states).

A ring buffer of `capacity` ENTRIES, filled in time order. Entry t holds
  * o_t, the newest frame of observation t (one frame, e.g. uint8 (84, 84, 3), not the stack:
    stacks are rebuilt when sampling, which stores ~1/frame_stack of the bytes; spec §1.2, §5 #7, #25),
  * a_t, r_t, d_t: the action, reward and env discount of the step that produced o_t
    (zeros for the entry written by `add_first`, which starts an episode),
  * is_first / is_last (terminated or truncated), the entry's position within its episode, and its
    position within its frame stack (equal to the episode position unless a frame restarted the
    stack mid-episode, see `add(restart_stack=True)`),
  * optionally a proprioceptive vector p_t (`proprio_shape`, float32; Adroit's 24 hand joints),
    returned as batch["proprio"] (p at obs) and batch["next_proprio"] (p at next_obs).

Observation i (S = frame_stack) is the concatenation on the LAST axis of frames i-S+1, ..., i, oldest
first. Frames from before the first frame of its stack (the episode's first entry, or the last entry
added with restart_stack=True) are padded according to `pad_first_frame`:
  * "repeat" (default): that first frame repeated, as DMC's frame stack does (DrQ-v2);
  * "zeros": zero frames, as DrM's Meta-World frame stack does at reset (spec §2.6).
With S = 1 it is the frame itself (state vectors: frame_shape=(obs_dim,), float32).

A transition starting at entry i (DrQ-v2's n-step tuple, spec §1.2, with window length m = nstep):
  obs      = observation i
  action   = a_{i+1}
  reward   = R = sum_{j<m} (prod_{k<j} gamma * d_{i+1+k}) * r_{i+1+j}
  discount = G = prod_{j<m} gamma * d_{i+1+j}
  next_obs = observation i+m
The env discount d is 1.0, or 0.0 on a termination; the buffer uses d as given, so the caller must
pass 0.0 on a termination and 1.0 on a time-limit truncation (which keeps bootstrapping).

Valid starts:
  * "exclude" (default, faithful to DrQ-v2): entries i+1..i+nstep exist and belong to i's episode,
    so the last nstep-1 observations of every episode are never starts.
  * "truncate": also the starts i < e < i+nstep where e is the episode's is_last entry, with the
    window shortened to m = e - i (G is then 0 after a termination, gamma^m after a truncation).
  * An unfinished episode contributes only windows already fully written. `add_first` may be called
    while an episode is still open (e.g. after a resume): that episode is then abandoned as it is.
  * After wrap-around a start is valid only while every entry it reads (its stacked frames, its
    window and next_obs's frames) is still in the buffer.

`sample` draws starts independently and uniformly over the valid starts (with replacement) using only
the numpy Generator it is given. The valid starts are kept incrementally in a dense index array
(swap-remove), so `add` is O(frame_stack + nstep) and `sample` is O(batch) vectorised numpy. Most of
sample's time goes to interleaving the stacked frames' channels on the last axis (about 4x the cost of
gathering them).

Deviation from the official loader (spec §1.2): one uniform in-process ring buffer instead of
per-episode files read by 4 DataLoader workers, so data is sampleable as soon as its window is
written and every minibatch is drawn from the whole buffer.
"""

from __future__ import annotations

import numpy as np
import psutil

NSTEP_AT_EPISODE_END_MODES = ("exclude", "truncate")
PAD_FIRST_FRAME_MODES = ("repeat", "zeros")

_GIB = 1024**3
# Keys of state_dict that hold the buffer's configuration (checked on load, never overwritten).
_CONFIG_KEYS = ("capacity", "frame_stack", "nstep", "nstep_at_episode_end", "discount")


def _array_specs(capacity: int, frame_shape: tuple, frame_dtype, action_shape: tuple,
                 proprio_shape: tuple | None = None) -> dict:
    """Name -> (shape, dtype) of every per-entry array; used both to allocate and to size the buffer."""
    proprio = {} if proprio_shape is None else {"proprio": ((capacity, *proprio_shape), np.dtype(np.float32))}
    return {
        "frames": ((capacity, *frame_shape), np.dtype(frame_dtype)),
        **proprio,
        "actions": ((capacity, *action_shape), np.dtype(np.float32)),
        "rewards": ((capacity,), np.dtype(np.float32)),
        "env_discounts": ((capacity,), np.dtype(np.float32)),
        "is_first": ((capacity,), np.dtype(np.bool_)),
        "is_last": ((capacity,), np.dtype(np.bool_)),
        "episode_pos": ((capacity,), np.dtype(np.int64)),
        # Entries since the first frame of this entry's frame stack (how far back its stack may read).
        "stack_pos": ((capacity,), np.dtype(np.int64)),
        # Number of steps in the n-step window of each valid start (< nstep only in "truncate" mode).
        "window_len": ((capacity,), np.dtype(np.int32)),
        # valid_slots[:num_valid] lists the valid starts; slot_to_dense is its inverse (-1: not valid).
        "valid_slots": ((capacity,), np.dtype(np.int64)),
        "slot_to_dense": ((capacity,), np.dtype(np.int64)),
    }


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _shape_tuple(name: str, shape, *, min_ndim: int) -> tuple:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of non-negative ints, got {shape!r}") from None
    if len(shape) < min_ndim or any(s < 0 for s in shape):
        raise ValueError(f"{name} must be a tuple of at least {min_ndim} non-negative ints, got {shape!r}")
    return shape


class FrameReplay:
    """Ring buffer of single frames that rebuilds frame stacks and n-step transitions when sampling."""

    def __init__(self, capacity: int, frame_shape: tuple, frame_dtype, action_shape: tuple, *,
                 frame_stack: int, nstep: int, discount: float,
                 nstep_at_episode_end: str = "exclude", pad_first_frame: str = "repeat",
                 proprio_shape: tuple | None = None, check_memory: bool = True):
        self.capacity = _positive_int("capacity", capacity)
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.nstep = _positive_int("nstep", nstep)
        # Stacking concatenates on the last axis, so a frame needs one.
        self.frame_shape = _shape_tuple("frame_shape", frame_shape, min_ndim=1)
        self.action_shape = _shape_tuple("action_shape", action_shape, min_ndim=0)
        self.frame_dtype = np.dtype(frame_dtype)
        if not 0.0 <= float(discount) <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount!r}")
        self.discount = float(discount)
        if nstep_at_episode_end not in NSTEP_AT_EPISODE_END_MODES:
            raise ValueError(f"nstep_at_episode_end must be one of {NSTEP_AT_EPISODE_END_MODES}, "
                             f"got {nstep_at_episode_end!r}")
        self.nstep_at_episode_end = nstep_at_episode_end
        if pad_first_frame not in PAD_FIRST_FRAME_MODES:
            raise ValueError(f"pad_first_frame must be one of {PAD_FIRST_FRAME_MODES}, got {pad_first_frame!r}")
        self.pad_first_frame = pad_first_frame
        self.proprio_shape = None if proprio_shape is None else _shape_tuple("proprio_shape", proprio_shape,
                                                                             min_ndim=1)

        if check_memory:
            self._check_memory()
        for name, (shape, dtype) in self._specs(self.capacity).items():
            setattr(self, "_" + name, np.zeros(shape, dtype))  # zeros: pages are committed lazily
        self._slot_to_dense.fill(-1)
        self._num_valid = 0
        self._total_added = 0  # entries ever written; entry g lives in slot g % capacity
        self._episode_open = False  # add() is allowed only inside an episode started by add_first()

    # ----------------------------------------------------------------------------------------- sizing

    @staticmethod
    def memory_bytes(capacity: int, frame_shape: tuple, frame_dtype, action_shape: tuple,
                     proprio_shape: tuple | None = None) -> int:
        """Bytes of host memory a buffer of `capacity` entries allocates."""
        specs = _array_specs(int(capacity), tuple(frame_shape), frame_dtype, tuple(action_shape),
                             None if proprio_shape is None else tuple(proprio_shape))
        return sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for shape, dtype in specs.values())

    def _specs(self, capacity: int) -> dict:
        return _array_specs(capacity, self.frame_shape, self.frame_dtype, self.action_shape, self.proprio_shape)

    def _check_memory(self) -> None:
        sizes = (self.frame_shape, self.frame_dtype, self.action_shape, self.proprio_shape)
        needed = self.memory_bytes(self.capacity, *sizes)
        available = psutil.virtual_memory().available
        if needed > available:
            per_entry = self.memory_bytes(1, *sizes)
            raise MemoryError(
                f"replay capacity {self.capacity} of {self.frame_shape} {self.frame_dtype} frames needs "
                f"{needed / _GIB:.2f} GiB but only {available / _GIB:.2f} GiB of memory is available; "
                f"the largest capacity that fits is {available // per_entry} "
                f"(pass check_memory=False to allocate anyway)")

    def __len__(self) -> int:
        """Number of stored entries."""
        return min(self._total_added, self.capacity)

    def num_transitions(self) -> int:
        """Number of valid sampling starts right now."""
        return self._num_valid

    # ---------------------------------------------------------------------------------------- writing

    def add_first(self, frame, proprio=None) -> None:
        """Starts an episode with the newest frame of the reset observation (and its proprio vector,
        required exactly when the buffer has a proprio_shape)."""
        frame, proprio = self._checked_frame(frame), self._checked_proprio(proprio)
        self._write_entry(frame, proprio, 0.0, 0.0, 0.0, is_first=True, is_last=False, episode_pos=0, stack_pos=0)
        self._episode_open = True

    def add(self, frame, action, reward, env_discount, terminated: bool, truncated: bool, *,
            proprio=None, restart_stack: bool = False) -> None:
        """Appends the step that produced `frame` (the newest frame of the next observation).

        restart_stack: `frame` comes from an environment reset inside this episode, so its
        observation's stack starts afresh (earlier frames are padded, not read). DrM's Meta-World
        trainer stores such an entry: its second reset at every episode end (`mw_double_reset`).
        """
        if not self._episode_open:
            raise RuntimeError("add() needs an open episode: call add_first() with the reset frame first "
                               "(and again after every step with terminated or truncated)")
        frame, proprio = self._checked_frame(frame), self._checked_proprio(proprio)
        action = np.asarray(action, np.float32)
        if action.shape != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape}, got {action.shape}")
        is_last = bool(terminated) or bool(truncated)
        previous = (self._total_added - 1) % self.capacity
        pos = int(self._episode_pos[previous]) + 1
        stack_pos = 0 if restart_stack else int(self._stack_pos[previous]) + 1
        self._write_entry(frame, proprio, action, float(reward), float(env_discount),
                          is_first=False, is_last=is_last, episode_pos=pos, stack_pos=stack_pos)
        newest = self._total_added - 1
        # The start nstep entries back now has its whole window written.
        if pos >= self.nstep:
            self._validate_start(newest - self.nstep, self.nstep)
        # The episode ended before the windows of its last nstep-1 starts were complete.
        if is_last and self.nstep_at_episode_end == "truncate":
            for window in range(1, min(self.nstep - 1, pos) + 1):
                self._validate_start(newest - window, window)
        self._episode_open = not is_last

    def _checked_frame(self, frame) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame must have shape {self.frame_shape}, got {frame.shape}")
        if frame.dtype != self.frame_dtype and not np.can_cast(frame.dtype, self.frame_dtype, "same_kind"):
            both_int = frame.dtype.kind in "iu" and self.frame_dtype.kind in "iu"
            info = np.iinfo(self.frame_dtype) if both_int else None
            if not (both_int and frame.size and info.min <= frame.min() and frame.max() <= info.max):
                raise ValueError(f"frame of dtype {frame.dtype} cannot be stored as {self.frame_dtype} "
                                 f"without changing its values")
        return frame

    def _checked_proprio(self, proprio):
        if self.proprio_shape is None:
            if proprio is not None:
                raise ValueError("this buffer stores no proprio vector (proprio_shape=None), but one was given")
            return None
        if proprio is None:
            raise ValueError(f"this buffer stores a proprio vector of shape {self.proprio_shape} with every "
                             f"entry; pass proprio=")
        proprio = np.asarray(proprio, np.float32)
        if proprio.shape != self.proprio_shape:
            raise ValueError(f"proprio must have shape {self.proprio_shape}, got {proprio.shape}")
        return proprio

    def _write_entry(self, frame, proprio, action, reward, env_discount, *, is_first, is_last, episode_pos,
                     stack_pos) -> None:
        written = self._total_added
        if written >= self.capacity:
            self._evict(written - self.capacity)
        slot = written % self.capacity
        self._frames[slot] = frame
        if proprio is not None:
            self._proprio[slot] = proprio
        self._actions[slot] = action
        self._rewards[slot] = reward
        self._env_discounts[slot] = env_discount
        self._is_first[slot] = is_first
        self._is_last[slot] = is_last
        self._episode_pos[slot] = episode_pos
        self._stack_pos[slot] = stack_pos
        self._total_added = written + 1

    # ------------------------------------------------------------------------ valid-start bookkeeping

    def _oldest_entry_read(self, start: int) -> int:
        """Oldest entry a start reads: the first frame of its stack (next_obs's stack is never older)."""
        pos = int(self._stack_pos[start % self.capacity])
        return start - min(self.frame_stack - 1, pos)

    def _validate_start(self, start: int, window: int) -> None:
        # With a small capacity, the start's first stacked frame may already be overwritten.
        if self._oldest_entry_read(start) < self._total_added - self.capacity:
            return
        slot = start % self.capacity
        self._window_len[slot] = window
        self._valid_slots[self._num_valid] = slot
        self._slot_to_dense[slot] = self._num_valid
        self._num_valid += 1

    def _invalidate_slot(self, slot: int) -> None:
        dense = self._slot_to_dense[slot]
        if dense < 0:
            return
        last = self._valid_slots[self._num_valid - 1]
        self._valid_slots[dense] = last
        self._slot_to_dense[last] = dense
        self._slot_to_dense[slot] = -1
        self._num_valid -= 1

    def _evict(self, entry: int) -> None:
        """Drops the starts that read `entry`, which is about to be overwritten.

        Start entry+k (k < frame_stack) reads it iff its stack reaches back k frames, i.e. its
        stack position is >= k. Older starts were dropped on earlier evictions.
        """
        for k in range(min(self.frame_stack, self.capacity)):
            slot = (entry + k) % self.capacity
            if k == 0 or self._stack_pos[slot] >= k:
                self._invalidate_slot(slot)

    # --------------------------------------------------------------------------------------- sampling

    def sample(self, rng: np.random.Generator, batch_size: int, stacked: bool = True, *,
               frame_slots: bool = False) -> dict:
        """Draws `batch_size` transitions uniformly (with replacement) over the valid starts.

        With stacked=False, obs and next_obs keep the frames on their own axis, (batch, frame_stack,
        *frame_shape), oldest first: a plain gather, several times faster than interleaving the frames'
        channels on the host; `merge_frames` (e.g. on the accelerator) gives the stacked layout.
        With frame_slots=True no frame is copied: "obs_slots" / "next_obs_slots" (batch, frame_stack)
        int32 give the slots of those frames, oldest first, with `capacity` for a zero padding frame, for
        a copy of the frames kept on the accelerator (`newest_slot` says where each added frame went).
        """
        batch_size = _positive_int("batch_size", batch_size)
        if self._num_valid == 0:
            raise RuntimeError(
                f"no valid transition to sample yet: {len(self)} entries stored, and a start needs its "
                f"next {self.nstep} step(s) written in its own episode (nstep_at_episode_end="
                f"{self.nstep_at_episode_end!r}); add more steps before sampling")
        starts = self._valid_slots[rng.integers(0, self._num_valid, size=batch_size)]
        return self._transitions(starts, stacked, frame_slots)

    @property
    def newest_slot(self) -> int:
        """The slot of the entry added last (where its frame is stored)."""
        if self._total_added == 0:
            raise RuntimeError("nothing was added yet")
        return (self._total_added - 1) % self.capacity

    def _transitions(self, starts: np.ndarray, stacked: bool = True, frame_slots: bool = False) -> dict:
        """The batch of the given valid start slots (a subclass that chooses its starts calls this)."""
        batch_size = len(starts)
        window = self._window_len[starts]

        # n-step return and discount, vectorised over the batch; the loop runs over the nstep offsets.
        reward = np.zeros(batch_size, np.float64)
        discount = np.ones(batch_size, np.float64)
        for j in range(self.nstep):
            step = (starts + 1 + j) % self.capacity
            inside = j < window
            reward += np.where(inside, discount * self._rewards[step], 0.0)
            discount = np.where(inside, discount * self.discount * self._env_discounts[step], discount)

        next_slots = (starts + window) % self.capacity
        batch = {
            "action": self._actions[(starts + 1) % self.capacity],
            "reward": reward.astype(np.float32),
            "discount": discount.astype(np.float32),
        }
        if frame_slots:
            batch["obs_slots"], batch["next_obs_slots"] = self._padded_frame_slots(starts), \
                self._padded_frame_slots(next_slots)
        else:
            observations = self._stacked_observations if stacked else self._frame_sequences
            batch["obs"], batch["next_obs"] = observations(starts), observations(next_slots)
        if self.proprio_shape is not None:
            batch["proprio"] = self._proprio[starts]
            batch["next_proprio"] = self._proprio[next_slots]
        return batch

    def _frame_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(batch, frame_stack) slots of each observation's frames, oldest first, clamped to the first
        frame of its stack; and where zero padding applies, the mask of the frames that are padding
        (None when nothing is zeroed)."""
        wanted = np.arange(self.frame_stack - 1, -1, -1)[None, :]
        available = self._stack_pos[slots][:, None]
        back = np.minimum(wanted, available)
        padding = None
        if self.pad_first_frame == "zeros":
            padding = wanted > available
            if not padding.any():
                padding = None
        return (slots[:, None] - back) % self.capacity, padding

    def _padded_frame_slots(self, slots: np.ndarray) -> np.ndarray:
        """_frame_slots with the zero-padding frames pointed at slot `capacity` (the zero frame)."""
        frame_slots, padding = self._frame_slots(slots)
        if padding is not None:
            frame_slots = np.where(padding, self.capacity, frame_slots)
        return frame_slots.astype(np.int32)

    def _frame_sequences(self, slots: np.ndarray) -> np.ndarray:
        frame_slots, padding = self._frame_slots(slots)
        frames = np.take(self._frames, frame_slots, axis=0)
        if padding is not None:
            frames[padding] = 0
        return frames

    def _stacked_observations(self, slots: np.ndarray) -> np.ndarray:
        if self.frame_stack == 1:
            return self._frames[slots]
        channels = self.frame_shape[-1]
        out = np.empty((len(slots), *self.frame_shape[:-1], self.frame_stack * channels), self.frame_dtype)
        frame_slots, padding = self._frame_slots(slots)
        for k in range(self.frame_stack):  # oldest frame first
            frames = np.take(self._frames, frame_slots[:, k], axis=0)
            if padding is not None:
                frames[padding[:, k]] = 0
            if channels <= 4:
                # Few channels (RGB): one strided copy per channel is ~4x faster than copying
                # 3-element slices, whose inner loop is too short.
                for c in range(channels):
                    out[..., k * channels + c] = frames[..., c]
            else:
                out[..., k * channels:(k + 1) * channels] = frames
        return out

    # ------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Numpy arrays and python ints. The arrays are the live buffer (not copies, which would double
        the memory of a full pixel replay): save them before the next add."""
        state = {name: getattr(self, "_" + name) for name in self._specs(1)}
        state.update(
            num_valid=self._num_valid,
            total_added=self._total_added,
            episode_open=int(self._episode_open),
            capacity=self.capacity,
            frame_stack=self.frame_stack,
            nstep=self.nstep,
            nstep_at_episode_end=NSTEP_AT_EPISODE_END_MODES.index(self.nstep_at_episode_end),
            discount=np.asarray(self.discount, np.float64),
        )
        return state

    def load_state_dict(self, d: dict) -> None:
        """Restores a state_dict of a buffer built with the same arguments (copied into this buffer).

        A state saved before stack positions existed (no "stack_pos") is read with stack positions
        equal to episode positions, which is what they were then.
        """
        if "stack_pos" not in d and "episode_pos" in d:
            d = {**d, "stack_pos": d["episode_pos"]}
        expected = self.state_dict()
        missing = sorted(set(expected) - set(d))
        if missing:
            raise ValueError(f"replay state is missing keys {missing}")
        for key in _CONFIG_KEYS:
            if not np.array_equal(np.asarray(d[key]), np.asarray(expected[key])):
                saved, here = np.asarray(d[key]).item(), np.asarray(expected[key]).item()
                if key == "nstep_at_episode_end" and saved in range(len(NSTEP_AT_EPISODE_END_MODES)):
                    saved, here = NSTEP_AT_EPISODE_END_MODES[saved], self.nstep_at_episode_end  # show names
                raise ValueError(f"replay state was saved with {key}={saved!r}, but this buffer has "
                                 f"{key}={here!r}")
        specs = self._specs(self.capacity)
        for name, (shape, dtype) in specs.items():  # check everything before overwriting anything
            value = np.asarray(d[name])
            if value.shape != shape or not np.can_cast(value.dtype, dtype, "same_kind"):
                raise ValueError(f"replay state array {name!r} is {value.dtype} {value.shape}, "
                                 f"expected {dtype} {shape}")
        for name in specs:
            np.copyto(getattr(self, "_" + name), np.asarray(d[name]), casting="same_kind")
        self._num_valid = int(d["num_valid"])
        self._total_added = int(d["total_added"])
        self._episode_open = bool(int(d["episode_open"]))


def merge_frames(frames):
    """(..., frame_stack, H, W, C) -> (..., H, W, frame_stack * C), oldest frame first; works on numpy
    and jax arrays (inside jit it is a cheap transpose on the accelerator)."""
    *lead, stack, h, w, c = frames.shape
    moved = frames.reshape(-1, stack, h, w, c).transpose(0, 2, 3, 1, 4)
    return moved.reshape(*lead, h, w, stack * c)
