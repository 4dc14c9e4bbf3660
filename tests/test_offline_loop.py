"""The offline loop end to end: a run killed between checkpoints and resumed with `--resume` ends with the
numbers of an uninterrupted run (agent state, metrics.csv, eval.csv), PRDC with HUBL relabeling."""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest

import batches  # tests/batches.py

from agents import prdc
from core import offline
from core.checkpoint import Checkpointer
from data import datasets

TASK = "InvertedPendulum-v5"  # 4 states, 1 action
DATASET = "pixax/invertedpendulum/random-v0"
UPDATES, CHUNK, CHECKPOINT_EVERY = 400, 100, 200


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    """A small random-action dataset of whole episodes (terminations and time-limit truncations)."""
    episodes = batches.offline_episodes()
    root = tmp_path_factory.mktemp("datasets")
    datasets.write_minari(DATASET, episodes, env_spec_or_task=TASK, root=root,
                          metadata={"random_return": 5.0, "expert_return": 1000.0, "recipe": {"policy": "uniform"}})
    return root


def config(root, runs):
    c = offline.base_config(prdc.Config, TASK, DATASET)
    c.dataset_root, c.root, c.seeds, c.progress = str(root), str(runs), "0,1", False
    c.hubl = "rank"  # HUBL's relabeled rewards and discounts go through the resumed run too
    c.updates_per_call, c.checkpoint_every_updates = CHUNK, CHECKPOINT_EVERY
    c.agent.num_updates, c.agent.eval_every_updates, c.agent.num_eval_episodes = UPDATES, 200, 1
    c.agent.hidden_dims = (32, 32)
    return c


def rows(path, drop=("wall_time", "updates_per_s")):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if k not in drop and v != ""} for r in csv.DictReader(f)]


def final_state(run_dir, root):
    """The agent states of the run's last checkpoint (update UPDATES)."""
    agent_config, loop = offline.resolve(prdc, config(root, run_dir))
    like = offline.OfflineTrainer(prdc, agent_config, loop, str(run_dir))
    try:
        tree, meta = Checkpointer(f"{run_dir}/checkpoints").restore({"agent": like.states, "keys": like.loop_keys})
    finally:
        like.close()
    assert meta["step"] == UPDATES
    return jax.device_get(tree["agent"])


def test_resume_after_a_crash_equals_the_uninterrupted_run(dataset_root, tmp_path, monkeypatch):
    straight = offline.run(prdc, "prdc", config(dataset_root, tmp_path / "a"))["run_dir"]

    # Crash in the chunk that ends at update 400 (before its rows are logged): metrics up to update 300
    # are on disk, and the last checkpoint is the one at update 200.
    original = offline.check_finite

    def crash_at_400(metrics, seeds, step, checkpoint_step):
        original(metrics, seeds, step, checkpoint_step)
        if step == 400:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(offline, "check_finite", crash_at_400)
    with pytest.raises(KeyboardInterrupt):
        offline.run(prdc, "prdc", config(dataset_root, tmp_path / "b"))
    monkeypatch.setattr(offline, "check_finite", original)
    (crashed,) = (tmp_path / "b" / "prdc" / TASK).iterdir()
    assert Checkpointer(f"{crashed}/checkpoints").latest_step() == 200
    assert max(r["step"] for r in rows(f"{crashed}/metrics.csv")) == 300  # rows past the checkpoint exist...
    summary = offline.run(prdc, "prdc", config(dataset_root, tmp_path / "b"), resume=str(crashed))
    assert summary["step"] == UPDATES

    for name in ("metrics.csv", "eval.csv"):  # ...and are rewritten, once, with the same numbers
        assert rows(f"{crashed}/{name}") == rows(f"{straight}/{name}"), name
    assert [r["step"] for r in rows(f"{crashed}/eval.csv")] == [0, 0, 200, 200, 400, 400]
    jax.tree.map(np.testing.assert_array_equal, final_state(crashed, dataset_root), final_state(straight, dataset_root))
