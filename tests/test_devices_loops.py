"""Issue 8 (Scale): the off-policy and episodic loops on a (seed, data) device mesh (core/devices.py).

Everything that needs several devices runs in a subprocess with 4 forced CPU devices (the pytest process
has one), one subprocess per part, each doing all its layouts:
  (a) agent updates (tests/mesh_check.py): TD3 on 1x2, 1x4, 2x1, 2x2; DrQ-v2, DrM, DQN, Rainbow, TD-MPC and
      MoDem on 2x2 (2 seeds, batch 8) against each seed's update alone on one device; the programs with a data
      axis of 2 or more hold an all-reduce (XLA really split the batch), those without one hold none;
  (b) loops: a short OffPolicyTrainer run (TD3 on Reacher-v5 from states) and a short EpisodicTrainer run
      (TD-MPC on cartpole_balance from states), 2 seeds, `--config.devices` "1" vs "2x2": the same final
      agent states (and, for TD-MPC, replays with their priorities) and the same metrics.csv / eval.csv;
  (c) launcher: a layout that does not fit the seeds or the batch stops with devices.plan's message before
      any run directory exists.
This file is also the script of parts (b) and (c): `python tests/test_devices_loops.py <root>`.

Tolerances (float32 throughout). (a) One update: the data-parallel program sums each batch statistic in parts
and adds the parts (an all-reduce), the one-device program sums it whole; the orders differ, so values of
size ~1-10 differ by a few ulps (measured, 2 seeds, batch 8: <= 1.1e-5 abs for DrQ-v2, <= 7.5e-7 for the
others). UPDATE_ATOL = 1e-4 leaves ~10x room. A broken layout moves the outputs by the size of the losses and
gradients themselves (measured on 2x2: each data device updating on its own half-batch mean, no average:
0.13 to 0.40 abs; the two seeds' results swapped: 0.49 to 1.16), three orders above it.
(b) ~200 TD3 updates / 120 TD-MPC updates with the acting and planning between them: the rounding
differences compound (measured: <= 1.5e-6 for TD3, 3.8e-6 for TD-MPC, states and metrics); LOOP_ATOL = 1e-4
leaves ~25x room and is still far below what a broken layout gives.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

import multidevice  # tests/multidevice.py


UPDATE_ATOL = 1e-4  # (a): one update, see the module docstring
LOOP_ATOL = 1e-4  # (b): ~200 updates and the episodes they act in

AGENT_LAYOUTS = {"td3": ["1x2", "1x4", "2x1", "2x2"], "drqv2": ["2x2"], "drm": ["2x2"], "dqn": ["2x2"],
                 "rainbow": ["2x2"], "tdmpc": ["2x2"], "modem": ["2x2"]}


def run_on_four_devices(args, cwd, timeout=600) -> list:
    """The JSON lines printed by `python args...` run with 4 forced CPU devices."""
    done = multidevice.run_python(args, devices=4, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# ------------------------------------------------------------------------------------------ (a) agents

@pytest.fixture(scope="module")
def agent_results():
    args = ["mesh_check.py", *[f"{agent}={','.join(layouts)}" for agent, layouts in AGENT_LAYOUTS.items()]]
    rows = run_on_four_devices(args, cwd=os.path.join(multidevice.REPO, "tests"))
    by_agent = {}
    for row in rows:
        by_agent.setdefault(row["agent"], []).append(row)
    return by_agent


@pytest.mark.slow
@pytest.mark.parametrize("agent", list(AGENT_LAYOUTS))
def test_update_on_a_mesh_equals_each_seed_on_one_device(agent_results, agent):
    rows = agent_results[agent]
    assert "error" not in rows[0], rows[0]["error"]
    assert [row["layout"] for row in rows] == AGENT_LAYOUTS[agent]
    for row in rows:
        assert row["abs"] < UPDATE_ATOL, row
        data_devices = int(row["layout"].split("x")[1])
        # a split batch is summed across devices; seeds alone never talk to each other
        assert row["all_reduce"] == (data_devices > 1), row


# ------------------------------------------------------------------------------------------ (b), (c) loops

@pytest.fixture(scope="module")
def loop_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("loops")
    rows = run_on_four_devices([os.path.abspath(__file__), str(root)], cwd=multidevice.REPO)
    return {row["part"]: row for row in rows}


@pytest.mark.slow
def test_bad_layouts_stop_before_any_run_directory(loop_results):
    assert "error" not in loop_results["launch"], loop_results["launch"]["error"]
    cases = loop_results["launch"]["cases"]
    expected = {
        "3": "--config.devices='3': 3 devices on the data axis do not divide the batch of 256",
        "3x1": "--config.devices='3x1': 3 devices on the seed axis do not divide the 2 seeds",
        "1x4": "--config.devices='1x4': 4 devices on the data axis do not divide the batch of 6",
    }
    assert sorted(cases) == sorted(expected)
    for spec, text in expected.items():
        assert cases[spec]["exit"].startswith("pixax: " + text), cases[spec]
        assert cases[spec]["created"] == [], cases[spec]  # nothing under --config.root


# The loops' update steps (trainer.update / trainer.run_updates): TD3 once per agent step from step 100 to 299;
# TD-MPC one scan after each of the episodes at steps 40, 80, 120. Rows, per seed: TD3 6 episodes and
# evaluations at steps 0, 150; TD-MPC 4 episodes and evaluations at steps 0, 80.
EXPECTED_RUNS = {"offpolicy": {"update_calls": 200, "metric_rows": 12, "eval_rows": 4},
                 "episodic": {"update_calls": 3, "metric_rows": 8, "eval_rows": 4}}


@pytest.mark.slow
@pytest.mark.parametrize("part", ["offpolicy", "episodic"])
def test_loop_on_2x2_equals_loop_on_one_device(loop_results, part):
    result = loop_results[part]
    assert "error" not in result, result["error"]
    assert result["layouts"] == ["1x1", "2x2"]
    # The 2x2 run really split each update's batch (an all-reduce); the one-device run has no collective.
    assert result["all_reduce"] == [False, True]
    expected = EXPECTED_RUNS[part]
    assert result["update_calls"] == [expected["update_calls"]] * 2
    assert (result["metric_rows"], result["eval_rows"]) == (expected["metric_rows"], expected["eval_rows"])
    assert result["state_abs"] < LOOP_ATOL, result
    for name, difference in result["metrics_diff"].items():
        assert difference < LOOP_ATOL, (name, result)


# ------------------------------------------------------------------------------------------ the script

def _read_rows(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _metric_differences(dir_a, dir_b) -> tuple:
    """Per column of metrics.csv and eval.csv (times left out): the largest |a - b| over the rows, relative
    to max(1, |a|) (losses and returns of any size); and the row counts (metrics, eval)."""
    differences, counts = {}, []
    for name in ("metrics.csv", "eval.csv"):
        rows_a, rows_b = _read_rows(os.path.join(dir_a, name)), _read_rows(os.path.join(dir_b, name))
        assert len(rows_a) == len(rows_b), (name, len(rows_a), len(rows_b))
        counts.append(len(rows_a))
        for row_a, row_b in zip(rows_a, rows_b):
            for column, value in row_a.items():
                if column in ("fps", "wall_time", "collect_time", "update_time") or value == "":
                    continue
                a, b = float(value), float(row_b[column])
                if math.isnan(a) and math.isnan(b):
                    continue
                key = f"{name}:{column}"
                differences[key] = max(differences.get(key, 0.0), abs(a - b) / max(1.0, abs(a)))
    return differences, counts


def _max_abs(tree_a, tree_b) -> float:
    import jax
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
               for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))


def _watch_updates(trainer, method: str, programs: str) -> dict:
    """Counts the calls of trainer.<method> (the loop's update step) and wraps trainer.<programs> (its jitted
    update program, or the dict that caches them) so that the first call seen records whether the compiled
    program holds an all-reduce (the compilation that call then uses)."""
    import jax
    record = {"calls": 0}
    original = getattr(trainer, method)

    def counted(*args, **kwargs):
        record["calls"] += 1
        return original(*args, **kwargs)
    setattr(trainer, method, counted)

    def recording(program):
        def call(*args):
            concrete = not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args))
            if concrete and "all_reduce" not in record:  # (not under the loop's eval_shape of the metrics)
                record["all_reduce"] = "all-reduce" in program.lower(*args).compile().as_text()
            return program(*args)
        return call

    class RecordingDict(dict):
        def __setitem__(self, key, program):
            super().__setitem__(key, recording(program))

    current = getattr(trainer, programs)
    setattr(trainer, programs, RecordingDict(current) if isinstance(current, dict) else recording(current))
    return record


def _offpolicy_run(run_dir: str, spec: str):
    """TD3 on Reacher-v5 (fixed 50-step episodes): 100 seed steps, then an update per step to step 300."""
    import jax

    from agents import td3
    from core.offpolicy import LoopConfig, OffPolicyTrainer
    config = td3.config_for_task("Reacher-v5", hidden_dim=32, batch_size=8, num_seed_frames=100)
    loop = LoopConfig(task="Reacher-v5", seeds=(0, 1), obs_type="states", action_repeat=1, frame_stack=1,
                      num_train_frames=300, num_seed_frames=100, update_every_steps=1, batch_size=8,
                      replay_capacity=1000, nstep=1, eval_every_frames=150, num_eval_episodes=1,
                      checkpoint_every_frames=10**6, save_video=False, progress=False, async_envs=False, devices=spec)
    trainer = OffPolicyTrainer(td3, config, loop, run_dir)
    record = _watch_updates(trainer, "update", "_update")
    try:
        trainer.train()
        return jax.device_get(trainer.states), str(trainer.layout), record
    finally:
        trainer.close()


def _episodic_run(run_dir: str, spec: str):
    """TD-MPC on cartpole_balance, 40-step episodes (action repeat 25): episodes at steps 0, 40, 80, 120; the
    seed phase's 40 updates after the second, 40 after each later one."""
    import jax

    from agents import tdmpc
    from core.episodic import EpisodicTrainer
    from core.offpolicy import LoopConfig
    repeat = 25
    config = tdmpc.config_for_task("cartpole_balance", obs_type="states", latent_dim=4, enc_dim=8, mlp_dim=8,
                                   num_samples=8, num_elites=2, iterations=1, batch_size=8, horizon=2,
                                   action_repeat=repeat, num_seed_frames=40 * repeat)
    loop = LoopConfig(task="cartpole_balance", seeds=(0, 1), obs_type="states", action_repeat=repeat,
                      num_train_frames=120 * repeat, num_seed_frames=40 * repeat, batch_size=8,
                      replay_capacity=4000, eval_every_frames=80 * repeat, num_eval_episodes=1,
                      checkpoint_every_frames=10**6, save_video=False, progress=False, async_envs=False, devices=spec)
    trainer = EpisodicTrainer(tdmpc, config, loop, run_dir)
    record = _watch_updates(trainer, "run_updates", "_updates")
    try:
        trainer.train()
        return jax.device_get((trainer.states, trainer.replays)), str(trainer.layout), record
    finally:
        trainer.close()


def _launch_checks(root: str) -> dict:
    """launch.run with layouts that do not fit (2 seeds on 4 devices): its exit message, what it created."""
    from agents import td3
    from core import launch
    cases = {}
    for spec, batch in (("3", None), ("3x1", None), ("1x4", 6)):
        where = os.path.join(root, f"launch_{spec}")
        config = launch.base_config(td3.Config, "Reacher-v5", "states")
        config.seeds, config.root, config.devices, config.progress = "0,1", where, spec, False
        if batch is not None:
            config.agent.batch_size = batch
        try:
            launch.run(td3, "td3", config)
            message = "ran"
        except SystemExit as stop:
            message = str(stop.code)
        created = sorted(os.listdir(where)) if os.path.exists(where) else []
        cases[spec] = {"exit": message, "created": created}
    return cases


def _compare_runs(part: str, run, root: str) -> dict:
    """The run of `part` on layouts "1" and "2x2": what differs between them, what each did."""
    dirs = [os.path.join(root, f"{part}_{spec}") for spec in ("1", "2x2")]
    (state_a, layout_a, record_a), (state_b, layout_b, record_b) = [run(d, spec) for d, spec in
                                                                    zip(dirs, ("1", "2x2"))]
    differences, (metric_rows, eval_rows) = _metric_differences(*dirs)
    return {"part": part, "layouts": [layout_a, layout_b],
            "all_reduce": [record_a.get("all_reduce"), record_b.get("all_reduce")],
            "update_calls": [record_a["calls"], record_b["calls"]], "metric_rows": metric_rows,
            "eval_rows": eval_rows, "state_abs": _max_abs(state_a, state_b), "metrics_diff": differences}


def _script(root: str) -> None:
    parts = {"launch": lambda: {"part": "launch", "cases": _launch_checks(root)},
             "offpolicy": lambda: _compare_runs("offpolicy", _offpolicy_run, root),
             "episodic": lambda: _compare_runs("episodic", _episodic_run, root)}
    for part, run in parts.items():
        try:
            result = run()
        except Exception as error:  # one part's failure is reported; the others still run
            first_line = (str(error).strip().splitlines() or [""])[0]
            result = {"part": part, "error": f"{type(error).__name__}: {first_line}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _script(sys.argv[1])
