"""The device copy of the replay's frames (core/frame_store.py) against a numpy mirror."""

import jax
import jax.numpy as jnp
import numpy as np
from core import frame_store


def frame(value, shape=(2, 2, 3)):
    return np.full(shape, value, np.uint8)


def test_record_and_flush_write_every_frame_where_it_belongs():
    store = frame_store.FrameStore(num_seeds=2, capacity=6, frame_shape=(2, 2, 3), dtype=np.uint8)
    mirror = np.zeros((2, 7, 2, 2, 3), np.uint8)
    writes = [(0, 0, 10), (1, 0, 20), (0, 1, 11), (0, 2, 12), (1, 5, 25)]  # 5 writes: padded to 8
    for seed, slot, value in writes:
        source = frame(value)
        store.record(seed, slot, source)
        source[:] = 0  # the caller's buffer is reused: the store kept its own copy
        mirror[seed, slot] = value
    np.testing.assert_array_equal(np.asarray(store.array), 0)  # nothing is written before flush
    store.flush()
    np.testing.assert_array_equal(np.asarray(store.array), mirror)
    store.record(0, 1, frame(31))  # an overwrite (the ring wrapped) of a single frame
    store.flush()
    mirror[0, 1] = 31
    np.testing.assert_array_equal(np.asarray(store.array), mirror)
    assert not np.asarray(store.array)[:, 6].any()  # slot `capacity`: the zero padding frame


def test_upload_in_chunks_replaces_one_seed(monkeypatch):
    monkeypatch.setattr(frame_store, "UPLOAD_CHUNK", 4)  # 10 slots: chunks of 4, 4 and 2
    store = frame_store.FrameStore(num_seeds=2, capacity=10, frame_shape=(3,), dtype=np.uint8)
    store.record(1, 3, np.full(3, 99, np.uint8))
    store.record(0, 2, np.full(3, 7, np.uint8))
    frames = np.arange(30, dtype=np.uint8).reshape(10, 3)
    store.upload(1, frames)  # seed 1's queued write is dropped: the upload is its newer content
    store.flush()
    array = np.asarray(store.array)
    np.testing.assert_array_equal(array[1, :10], frames)
    np.testing.assert_array_equal(array[0, 2], 7)
    assert not array[0, [0, 1, 3]].any() and not array[:, 10].any()


def test_gather_by_per_seed_slots():
    store = jnp.asarray(np.arange(2 * 5, dtype=np.uint8).reshape(2, 5, 1))
    slots = jnp.asarray([[[0, 4], [2, 2]], [[1, 3], [4, 0]]], jnp.int32)  # (seeds 2, batch 2, stack 2)
    gathered = np.asarray(jax.jit(frame_store.gather)(store, slots))
    assert gathered.shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(gathered[..., 0], [[[0, 4], [2, 2]], [[6, 8], [9, 5]]])


def test_store_bytes_and_no_memory_limit_on_the_cpu():
    assert frame_store.store_bytes(8, 1_000_000, (84, 84, 3), np.uint8) == 8 * 1_000_001 * 84 * 84 * 3
    if jax.default_backend() == "cpu":
        assert frame_store.device_memory_bytes() is None
