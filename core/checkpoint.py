"""Checkpoints of a whole training run with orbax.

A checkpoint holds one pytree (agent states, RNG keys, replay buffers: numpy and jax arrays) and one
JSON object (counters, numpy generator states). Orbax writes each step into a temporary folder and
renames it when complete, so a crash while saving never leaves a broken checkpoint behind: the last
complete one stays the latest.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores run checkpoints under `<run_dir>/checkpoints/<step>/`."""

    def __init__(self, directory: str, max_to_keep: int = 1):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
            item_names=("state", "meta"),
        )

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, like_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores the checkpoint at `step` (default: the latest) into the structure of `like_state`."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree.map(_abstract, like_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        state = jax.tree.map(_same_kind, like_state, restored["state"])
        return state, restored["meta"]

    def close(self) -> None:
        self._manager.close()


def _abstract(x):
    if isinstance(x, np.ndarray):
        return np.empty(x.shape, x.dtype)  # restored as numpy, not as a device array
    return ocp.utils.to_shape_dtype_struct(x)


def _same_kind(like, restored):
    """Keeps host arrays (replay) on the host and device arrays (agent state) on the device."""
    if isinstance(like, np.ndarray):
        return np.asarray(restored)
    return jax.numpy.asarray(restored)
