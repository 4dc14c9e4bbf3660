"""The offline loop on a device mesh (`--config.devices`, core/devices.py): PRDC with HUBL trained for 200
updates on 2 seeds with layouts 1 (one device), 1x2 (each seed's batch split over 2 devices) and 2x1 (one
seed per device) ends with the same parameters, metrics and evaluations; PRDC's nearest-neighbour search on the
split batch returns the indices of a float64 brute-force search; layouts that do not fit stop before a
run directory with devices.plan's message.

How close is "the same". A data-parallel update sums the batch in another order: ~1e-7 apart. Most
parameters stay there, but a ReLU unit whose input sits that close to 0 for one sample turns the rounding
into a different gradient, and Adam carries it on: measured (TD3+BC and PRDC on this dataset, no HUBL, 200
updates), the 1-device run started from critic weights nudged by ONE float32 ulp ends up to 5e-3 away in a
few q1 weights, exactly as far as the 1x2 run; mean |difference| over every state leaf 4e-6, chunk metrics
within 1e-4 (relative). A broken layout is far outside: batches drawn with other keys, or half-batch
gradients (a per-device mean that is never averaged), gave mean |difference| >= 2e-4 (a third of all
values > 1e-4 apart) and chunk metrics >= 26% apart already after 20 updates; swapped seeds differ by
the whole initialization. `assert_same_training` checks mean |difference| <= 3e-5, max <= 1e-2 and
metrics within 1e-3.

Several devices need XLA_FLAGS set before jax starts, so the runs happen in one subprocess: this file
run as a script (`python tests/test_devices_offline.py <dataset root> <runs root>`), which prints JSON.
tests/test_distributed.py reuses the dataset and the comparison.
"""

from __future__ import annotations

import csv
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batches  # tests/batches.py

import multidevice  # tests/multidevice.py

from agents import prdc
from core import offline
from core import seeds as seeding
from core.checkpoint import Checkpointer
from data import datasets

TASK = "InvertedPendulum-v5"  # 4 states, 1 action
DATASET = "pixax/invertedpendulum/random-v0"
UPDATES, CHUNK, BATCH = 200, 100, 64
LAYOUTS = ("1", "1x2", "2x1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_dataset(root) -> None:
    """A small random-action dataset of whole episodes (145 transitions, uniform rewards)."""
    episodes = batches.offline_episodes(uniform_rewards=True)
    datasets.write_minari(DATASET, episodes, env_spec_or_task=TASK, root=root,
                          metadata={"random_return": 5.0, "expert_return": 1000.0, "recipe": {"policy": "uniform"}})


def config(dataset_root, runs, devices: str, seeds: str = "0,1", agent_module=prdc, updates: int = UPDATES,
           **agent):
    c = offline.base_config(agent_module.Config, TASK, DATASET)
    c.dataset_root, c.root, c.seeds, c.progress, c.devices = str(dataset_root), str(runs), seeds, False, devices
    c.updates_per_call, c.checkpoint_every_updates = min(CHUNK, updates), updates
    c.agent.num_updates, c.agent.eval_every_updates, c.agent.num_eval_episodes = updates, updates, 1
    c.agent.hidden_dims, c.agent.batch_size = (32, 32), BATCH
    for name, value in agent.items():
        c.agent[name] = value
    return c


# ----------------------------------------------------------------------------------- the subprocess

def stopped_with(run) -> str:
    """The message a run that must stop before any work exits with."""
    try:
        run()
    except SystemExit as e:
        return str(e.code)
    return "no error"


def nearest_indices_agree(trainer, beta: float) -> bool:
    """PRDC's neighbour search as the loop runs it on a mesh (each seed's queries split over "data", the
    index replicated) against a float64 brute-force argmin over the dataset's keys."""
    from core import devices

    data = devices.to_host(trainer.data)
    dataset_keys = np.concatenate([beta * data["obs"], data["action"]], axis=1).astype(np.float64)
    rng = np.random.default_rng(1)
    obs = data["obs"][rng.integers(0, len(dataset_keys), (2, BATCH))]
    queries = np.concatenate([beta * obs, rng.uniform(-1, 1, (2, BATCH, 1))], axis=2).astype(np.float32)
    distances = ((queries[:, :, None, :].astype(np.float64) - dataset_keys[None, None]) ** 2).sum(-1)
    expected = distances.argmin(-1)

    def search(queries, index):
        def one_seed(seed_queries):
            return devices.replicated_in_program(index).query(devices.shard_batch(seed_queries), k=1)
        return seeding.over_seeds(one_seed, "unroll", jit=False, mesh=trainer.mesh)(queries)

    found = jax.jit(search)(devices.put_seeds(queries, trainer.mesh), trainer.constraint.index)
    return bool(np.array_equal(devices.to_host(found), expected))


def subprocess_main(dataset_root: str, runs: str) -> None:
    import functools

    import envs

    # Evaluation environments in this process: 2 seeds would otherwise start 2 interpreters per run.
    envs.make_vector = functools.partial(envs.make_vector, asynchronous=False)
    trainers = []

    class Recorded(offline.OfflineTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    offline.OfflineTrainer = Recorded
    out = {"runs": {}}
    for layout in LAYOUTS:
        c = config(dataset_root, f"{runs}/{layout}", layout)
        c.hubl = "rank"  # HUBL's relabeled rewards and per-sample discounts are batch columns too
        out["runs"][layout] = offline.run(prdc, "prdc", c)["run_dir"]
        out.setdefault("layouts", []).append(str(trainers[-1].layout))
        if layout == "1x2":  # the update program really splits the batch: XLA added cross-device reductions
            trainer = trainers[-1]
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(trainer.loop_keys, 0)
            text = trainer._update.lower(trainer.states, keys, trainer.data, trainer.constraint).compile().as_text()
            out["all_reduce"] = "all-reduce" in text
            out["nearest_equal"] = nearest_indices_agree(trainer, trainer.agent_config.beta)
    bad = f"{runs}/bad"
    out["errors"] = {
        "batch": stopped_with(lambda: offline.run(prdc, "prdc", config(dataset_root, bad, "1x2", batch_size=63))),
        "seeds": stopped_with(lambda: offline.run(prdc, "prdc", config(dataset_root, bad, "2x1", seeds="0,1,2"))),
        "kdtree": stopped_with(lambda: offline.run(prdc, "prdc", config(dataset_root, bad, "1x2",
                                                                        nn_backend="kdtree"))),
    }
    out["bad_runs_made"] = os.path.exists(bad)
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def mesh_runs(dataset_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = multidevice.run_python([os.path.abspath(__file__), dataset_root, runs], devices=2, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows(path, drop=("wall_time", "updates_per_s")):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if k not in drop and v != ""} for r in csv.DictReader(f)]


def final_states(run_dir, dataset_root, agent_module=prdc):
    """The agent states of a run's last checkpoint, restored onto this process's one device."""
    with open(f"{run_dir}/config.json") as f:
        launcher = json.load(f)["launcher"]
    updates = launcher["agent"]["num_updates"]
    agent_config, loop = offline.resolve(agent_module, config(dataset_root, run_dir, "1", launcher["seeds"],
                                                              agent_module, updates))
    zeros, ones = np.zeros(4, np.float32), np.ones(4, np.float32)
    like = seeding.stack([agent_module.create(jax.random.PRNGKey(0), 4, 1, agent_config, zeros, ones)
                          for _ in loop.seeds])
    checkpointer = Checkpointer(f"{run_dir}/checkpoints")
    try:
        tree, meta = checkpointer.restore({"agent": like, "keys": jnp.zeros((len(loop.seeds), 2), jnp.uint32)})
    finally:
        checkpointer.close()
    assert meta["step"] == updates
    return jax.device_get(tree)


def assert_same_training(run_dir, reference_dir, dataset_root, agent_module=prdc) -> None:
    """Same final states (checkpoint), metrics.csv and eval.csv, to the tolerances of the module docstring."""
    states, reference = (final_states(d, dataset_root, agent_module) for d in (run_dir, reference_dir))
    differences = np.concatenate([np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
                                  for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(reference))])
    assert differences.mean() <= 3e-5 and differences.max() <= 1e-2, (
        f"{run_dir}: states differ by {differences.mean():.2e} on average, {differences.max():.2e} at most")
    for name in ("metrics.csv", "eval.csv"):
        got, expected = rows(f"{run_dir}/{name}"), rows(f"{reference_dir}/{name}")
        assert [sorted(r) for r in got] == [sorted(r) for r in expected], name
        for row, want in zip(got, expected):
            np.testing.assert_allclose([row[k] for k in sorted(row)], [want[k] for k in sorted(want)],
                                       rtol=1e-3, atol=1e-6, err_msg=f"{run_dir} {name}")


def test_layouts_train_the_same_agents(mesh_runs, dataset_root):
    assert mesh_runs["layouts"] == ["1x1", "1x2", "2x1"]
    assert mesh_runs["all_reduce"], "the 1x2 update program holds no cross-device reduction: the batch is not split"
    one = mesh_runs["runs"]["1"]
    assert len(rows(f"{one}/metrics.csv")) == 2 * UPDATES // CHUNK  # 2 seeds, a row per chunk
    for layout in ("1x2", "2x1"):
        run_dir = mesh_runs["runs"][layout]
        with open(f"{run_dir}/config.json") as f:
            assert json.load(f)["loop"]["devices"] == layout
        assert_same_training(run_dir, one, dataset_root)
    # the two seeds really differ, so swapped seeds would show
    kernel = final_states(one, dataset_root)["agent"].actor_params["params"]["mlp"]["output"]["dense"]["kernel"]
    assert np.abs(kernel[0] - kernel[1]).max() > 0.05


def test_nearest_neighbours_on_a_split_batch_match_brute_force(mesh_runs):
    assert mesh_runs["nearest_equal"]


def test_layouts_that_do_not_fit_stop_before_a_run_directory(mesh_runs, dataset_root, tmp_path):
    errors = mesh_runs["errors"]
    assert "2 devices on the data axis do not divide the batch of 63" in errors["batch"], errors["batch"]
    assert "2 devices on the seed axis do not divide the 3 seeds" in errors["seeds"], errors["seeds"]
    assert "nn_backend='kdtree'" in errors["kdtree"] and "brute_force" in errors["kdtree"], errors["kdtree"]
    assert not mesh_runs["bad_runs_made"]
    # this process has one device
    for devices, message in (("4", "asks for 4 devices (1 seed x 4 data); 1 are available"),
                             ("two", "--config.devices='two' is not valid; use 'auto'")):
        with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
            offline.run(prdc, "prdc", config(dataset_root, tmp_path / "runs", devices, seeds="0"))
    assert not (tmp_path / "runs").exists()


if __name__ == "__main__":
    subprocess_main(*sys.argv[1:])
