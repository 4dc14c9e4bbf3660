"""The run directory and what is logged into it.

runs/<agent>/<task>/<timestamp>/
    config.json        every resolved setting
    metrics.csv        one row per training episode and seed (episode return, fps, update metrics)
    updates.csv        one row per update and seed, for the metrics the agent traces (agent.TRACE_METRICS,
                       e.g. DrM's dormant ratio per layer, sigma, lambda)
    events.csv         one row per agent event (agent.trace_events, e.g. DrM's perturbations and awaken step)
    eval.csv           one row per evaluation and seed
    tb/                TensorBoard events (one tag prefix per seed)
    checkpoints/       orbax checkpoints (see core/checkpoint.py)
    videos/            mp4 of evaluation episodes

Several processes (one run over `jax.distributed`): every process gets the same run directory (process 0
picks the timestamp and broadcasts it), and only process 0 writes config.json, the CSVs and TensorBoard
(`is_main_process`); orbax writes the checkpoints of all processes together (core/checkpoint.py).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from typing import Any, Iterable

import numpy as np

CONFIG_FILE = "config.json"


def is_main_process() -> bool:
    """True unless this is a process other than 0 of a run over several processes (jax.distributed)."""
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def new_run_dir(root: str, agent: str, task: str) -> str:
    """<root>/<agent>/<task>/<timestamp>, created; over several processes, process 0's timestamp (a collective:
    every process calls this)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    several = _process_count() > 1
    if several:
        stamp = _broadcast_text(stamp)
    path = os.path.join(root, agent, task, stamp)
    os.makedirs(path, exist_ok=several)  # several processes on one file system all create it
    return path


def _process_count() -> int:
    import jax

    return jax.process_count() if jax.distributed.is_initialized() else 1


def _broadcast_text(text: str, size: int = 64) -> str:
    """Process 0's `text` (at most `size` bytes of UTF-8) on every process."""
    from jax.experimental import multihost_utils

    encoded = text.encode()
    if len(encoded) > size:
        raise ValueError(f"cannot broadcast {len(encoded)} bytes; at most {size}")
    buffer = np.zeros(size, np.uint8)
    buffer[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(received[received != 0].astype(np.uint8)).decode()


def check_run_dir(path: str) -> str:
    """Raises a clear error unless `path` is a pixax run directory that can be resumed."""
    if not os.path.isdir(path):
        raise ValueError(f"--resume={path!r}: no such directory; pass a run directory "
                         f"(runs/<agent>/<task>/<timestamp>) written by a pixax launcher")
    missing = [name for name in (CONFIG_FILE, "checkpoints") if not os.path.exists(os.path.join(path, name))]
    if missing:
        raise ValueError(f"--resume={path!r} is not a pixax run directory: it has no {' and no '.join(missing)} "
                         f"(a run directory holds config.json and checkpoints/)")
    return path


def write_config(run_dir: str, config: dict) -> None:
    if not is_main_process():
        return
    tmp = os.path.join(run_dir, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(run_dir, CONFIG_FILE))


def read_config(run_dir: str) -> dict:
    with open(os.path.join(run_dir, CONFIG_FILE)) as f:
        return json.load(f)


class CsvLog:
    """An append-only CSV whose columns may grow (update metrics appear only once updates start).

    When a row brings a new column, the file is rewritten with the wider header; otherwise rows are
    appended and flushed, so the file is always readable while the run goes on.
    """

    def __init__(self, path: str, first_columns: Iterable[str]):
        self.path = path
        self.columns = list(first_columns)
        self.rows: list[dict] = []
        if os.path.exists(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or self.columns)
                self.rows = list(reader)
        else:
            self._rewrite()

    def truncate(self, keep) -> None:
        """Keeps only the rows for which keep(row) is true (used on resume to drop rows logged after
        the checkpoint, which the resumed run logs again)."""
        self.rows = [r for r in self.rows if keep(r)]
        self._rewrite()

    def write(self, row: dict) -> None:
        row = {k: _plain(v) for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def _plain(v: Any):
    if isinstance(v, (np.generic, np.ndarray)):
        return v.item()
    return v


class _NoLog:
    """The logs of processes other than 0 in a run over several processes: they write nothing."""

    def write(self, row: dict) -> None:
        pass

    def write_rows(self, rows: list[dict]) -> None:
        pass

    def truncate(self, keep) -> None:
        pass


class Logger:
    """metrics.csv, eval.csv and TensorBoard for S seeds trained in one process (over several processes,
    only process 0 writes; the others log into nothing)."""

    def __init__(self, run_dir: str, seeds: list[int], resume_step: int | None = None,
                 resume_frame: int | None = None, tensorboard: bool = True, metrics_row_before_checkpoint: bool = True):
        self.run_dir = run_dir
        self.seeds = seeds
        self.tb = None
        if not is_main_process():
            self.metrics = self.eval = self.updates = self.events = _NoLog()
            return
        self.metrics = CsvLog(os.path.join(run_dir, "metrics.csv"),
                              ["seed", "step", "frame", "episode", "episode_reward", "episode_length", "fps"])
        self.eval = CsvLog(os.path.join(run_dir, "eval.csv"),
                           ["seed", "step", "frame", "episode_reward", "episode_length", "wall_time"])
        self.updates = TraceLog(os.path.join(run_dir, "updates.csv"), ["seed", "step", "frame"])
        self.events = TraceLog(os.path.join(run_dir, "events.csv"), ["seed", "step", "frame", "event"])
        if resume_step is not None:
            # Updates and events at steps before the checkpoint's step belong to the checkpointed run.
            self.updates.truncate(lambda row: int(float(row["step"])) < resume_step)
            self.events.truncate(lambda row: int(float(row["step"])) < resume_step)
            # A checkpoint at step t is taken after the training episode that ended at t was logged
            # and before the evaluation at t: the resumed run logs again what came after. The episodic
            # loop (metrics_row_before_checkpoint=False) logs an episode at its START step t, after the
            # checkpoint at t, so its row at t is logged again too.
            keep_at = (lambda step: step <= resume_step) if metrics_row_before_checkpoint else (lambda step: step < resume_step)
            self.metrics.truncate(lambda row: keep_at(int(float(row["step"]))))
            self.eval.truncate(lambda row: int(float(row["step"])) < resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # TensorBoard's x axis is frames; an evaluation at the resume frame is written again (same value).
            purge = None if resume_frame is None else resume_frame + 1
            self.tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=purge)

    def _tb(self, prefix: str, seed: int, frame: int, row: dict) -> None:
        if self.tb is None:
            return
        for k, v in row.items():
            if k in ("seed", "step", "frame"):
                continue
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):  # NaN marks "not computed at this step" (e.g. the sampling error)
                self.tb.add_scalar(f"{prefix}/{k}/seed{seed}", value, frame)

    def log_train(self, row: dict) -> None:
        self.metrics.write(row)
        self._tb("train", row["seed"], row["frame"], row)

    def log_eval(self, row: dict) -> None:
        self.eval.write(row)
        self._tb("eval", row["seed"], row["frame"], row)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TraceLog:
    """A CSV with fixed columns for high-volume rows (one per update and seed): streamed to disk, never
    held in memory. The columns are fixed by the first rows written (or by the file on resume)."""

    def __init__(self, path: str, first_columns: Iterable[str]):
        self.path = path
        self.first_columns = list(first_columns)
        self.columns: list[str] | None = None
        if os.path.exists(path):
            with open(path, newline="") as f:
                self.columns = next(csv.reader(f), None)

    def truncate(self, keep) -> None:
        """Keeps only the rows for which keep(row) is true, streaming through a temporary file."""
        if self.columns is None:
            return
        tmp = self.path + ".tmp"
        with open(self.path, newline="") as src, open(tmp, "w", newline="") as dst:
            reader, writer = csv.DictReader(src), csv.DictWriter(dst, self.columns)
            writer.writeheader()
            writer.writerows(row for row in reader if keep(row))
        os.replace(tmp, self.path)

    def write_rows(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.columns is None:
            names = dict.fromkeys(self.first_columns)
            for row in rows:
                names.update(dict.fromkeys(row))
            self.columns = list(names)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.columns).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerows(
                {k: _plain(v) for k, v in row.items()} for row in rows)
