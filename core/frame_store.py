"""The replay's frames, mirrored on the accelerator, so that a pixel update gathers its stacks there.

Why: with the frames on the host, each update of batch 256 (84x84, frame stack 3, obs and next_obs)
gathers ~32 MB on the CPU (7.9 ms per batch on the 2-core development machine) and copies it to the
device (~2 ms of DrM's 5.7 ms update on an H200): more host time than the update's own (docs/benchmarks.md). Here the host replay (data/replay.py) still owns the episode
bookkeeping, sampling and checkpoints; it only hands out frame *slots* (`sample(frame_slots=True)`),
and the update indexes this store with them. Each frame the replay stores is written here too
(`record`), in one batched device write per update (`flush`).

Layout: (S, capacity + 1, *frame_shape) for S seeds, frame dtype (uint8 pixels); slot `capacity` stays
zero, for the zero padding of Meta-World's frame stacks. It costs the device S x capacity frames
(21 GiB per seed for DrM's 1M x 84x84x3), so the loop uses it only where it fits (core/offpolicy.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

UPLOAD_CHUNK = 65_536  # slots per device write when a whole replay is uploaded (a restored checkpoint)


def store_bytes(num_seeds: int, capacity: int, frame_shape: tuple, dtype) -> int:
    """Device bytes of a store."""
    return num_seeds * (capacity + 1) * int(np.prod(frame_shape)) * np.dtype(dtype).itemsize


def device_memory_bytes() -> int | None:
    """The default device's memory limit, or None where the backend does not say (the CPU)."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return None if not stats else int(stats.get("bytes_limit", 0)) or None


def _write(store, seeds, slots, frames):
    return store.at[seeds, slots].set(frames)


_write_donated = jax.jit(_write, donate_argnums=0)  # the store is updated in place


def gather(store: jax.Array, slots: jax.Array) -> jax.Array:
    """Frames (S, *slots.shape[1:], *frame_shape) of per-seed slots (S, ...): for use inside jit."""
    seeds = jnp.arange(store.shape[0]).reshape((-1,) + (1,) * (slots.ndim - 1))
    return store[seeds, slots]


class FrameStore:
    """A device copy of S replays' frames; written through `record` + `flush`, read with `gather`."""

    def __init__(self, num_seeds: int, capacity: int, frame_shape: tuple, dtype):
        self.capacity, self.frame_shape, self.dtype = capacity, tuple(frame_shape), np.dtype(dtype)
        self.array = jnp.zeros((num_seeds, capacity + 1, *self.frame_shape), self.dtype)
        self._pending: list[tuple[int, int, np.ndarray]] = []

    def record(self, seed_index: int, slot: int, frame: np.ndarray) -> None:
        """Queues frame -> (seed, slot); written on the next `flush` (before the next update)."""
        self._pending.append((seed_index, slot, np.array(frame, self.dtype)))  # a copy: obs buffers get reused

    def flush(self) -> None:
        """Writes the queued frames in one device call. The count is padded to a power of two (with
        repeats of the last write, which change nothing) so only a few shapes ever compile."""
        if not self._pending:
            return
        seeds, slots, frames = zip(*self._pending)
        self._pending = []
        size = 1 << (len(seeds) - 1).bit_length()
        pad = size - len(seeds)
        seeds = np.asarray(seeds + seeds[-1:] * pad, np.int32)
        slots = np.asarray(slots + slots[-1:] * pad, np.int32)
        frames = np.stack(frames + frames[-1:] * pad)
        self.array = _write_donated(self.array, seeds, slots, frames)

    def upload(self, seed_index: int, frames: np.ndarray) -> None:
        """Replaces one seed's frames with a replay's whole frame array (capacity, *frame_shape), in
        chunks (no second full-size copy on the host)."""
        self._pending = [p for p in self._pending if p[0] != seed_index]
        for start in range(0, self.capacity, UPLOAD_CHUNK):
            chunk = np.asarray(frames[start:start + UPLOAD_CHUNK], self.dtype)
            slots = np.arange(start, start + len(chunk), dtype=np.int32)
            self.array = _write_donated(self.array, np.full(len(chunk), seed_index, np.int32), slots, chunk)
