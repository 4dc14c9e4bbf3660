"""scripts/offline_table.py: cells are the mean +- sample std over seeds of each seed's final normalized score."""

import json

import pytest

from scripts import offline_table


def fake_run(folder, agent, dataset, hubl, scores_by_seed, num_updates=None):
    """A run directory with config.json and eval.csv; scores_by_seed = {seed: [score at step 0, 100, ...]}."""
    folder.mkdir(parents=True)
    config = {"agent": agent, "launcher": {"dataset": dataset, "hubl": hubl}}
    if num_updates is not None:
        config["agent_config"] = {"num_updates": num_updates}
    (folder / "config.json").write_text(json.dumps(config))
    lines = ["seed,step,frame,episode_reward,normalized_score,wall_time"]
    for seed, scores in scores_by_seed.items():
        lines += [f"{seed},{100 * i},{100 * i},0.0,{score},1.0" for i, score in enumerate(scores)]
    (folder / "eval.csv").write_text("\n".join(lines) + "\n")


def test_table_by_hand(tmp_path):
    fake_run(tmp_path / "td3bc/a", "td3bc", "pixax/hopper/medium-v0", "none", {0: [1, 40], 1: [2, 60]})
    fake_run(tmp_path / "td3bc/b", "td3bc", "pixax/hopper/medium-v0", "none", {2: [3, 50]})  # pooled with a
    fake_run(tmp_path / "prdc/c", "prdc", "pixax/hopper/medium-v0", "rank", {0: [0, 10, 30]}, num_updates=200)
    fake_run(tmp_path / "prdc/d", "prdc", "pixax/hopper/medium-v0", "none", {0: [0, 10]}, num_updates=200)  # unfinished
    text = offline_table.main([str(tmp_path)])
    assert "| dataset | TD3+BC | PRDC + HUBL (rank) |" in text  # the unfinished PRDC run is left out
    assert "| pixax/hopper/medium-v0 | 50.0 ± 10.0 (n=3) | 30.0 (n=1) |" in text  # std of 40, 60, 50 (ddof 1)
    assert "update(s) 100, 200" in text
    two = offline_table.main([str(tmp_path / "prdc"), "--last", "2"])
    assert "| pixax/hopper/medium-v0 | 20.0 (n=1) |" in two


def test_a_seed_in_two_runs_of_one_cell_is_refused(tmp_path):
    fake_run(tmp_path / "a", "td3bc", "d-v0", "none", {0: [1]})
    fake_run(tmp_path / "b", "td3bc", "d-v0", "none", {0: [2]})
    with pytest.raises(SystemExit, match=r"seeds \[0\]"):
        offline_table.main([str(tmp_path)])
