"""scripts/make_dataset.py: D4RL-protocol datasets from a tiny TD3 run on InvertedPendulum-v5 (~25 s on 2 cores).

The run: TD3 with 64-unit networks, 200 uniform seed steps, 1500 training steps evaluated every 250,
episodes limited to 40 steps, 400 steps per rollout dataset. It reaches the 40-step limit (return 40)
at its last snapshot, so the datasets hold both terminations (the pole fell: |angle| > 0.2) and
time-limit truncations. The checks replay stored episodes in the environment from their recorded
reset seeds, recompute the expert / medium choice from the recorded snapshots, and compare the
concatenation and the training prefix episode by episode.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from agents import td3bc
from core import offline
from data import datasets
from envs import gym_mujoco
from scripts import make_dataset as md

TASK = "InvertedPendulum-v5"
SEED = 3
STEPS_PER_DATASET = 400
TIME_LIMIT = 40
SEED_STEPS = 200
ANGLE_LIMIT = 0.2  # InvertedPendulum-v5 terminates when |obs[1]| (the pole angle) exceeds it
TINY_RUN = ["--train-steps", "1500", "--eval-every", "250", "--eval-episodes", "3", "--steps-per-dataset",
            str(STEPS_PER_DATASET), "--reference-episodes", "10", "--max-episode-steps", str(TIME_LIMIT),
            "--seed", str(SEED), "--td3", "hidden_dim=64", "--td3", f"num_seed_frames={SEED_STEPS}",
            "--td3", "batch_size=128", "--no-progress"]


def dataset_id(name: str) -> str:
    return f"pixax/invertedpendulum/{name}-v0"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(root, summary rows, loaded datasets by name) of one tiny run writing all five datasets."""
    root = tmp_path_factory.mktemp("datasets")
    rows = md.main([TASK, "--root", str(root), *TINY_RUN])
    loaded = {name: datasets.load_dataset(dataset_id(name), root=root) for name in md.DATASET_NAMES}
    return root, rows, loaded


def episode_seeds(root, name: str) -> list[int]:
    """The reset seed Minari recorded for each episode (episode attribute 'seed')."""
    path = root / dataset_id(name) / "data" / "main_data.hdf5"
    with h5py.File(path, "r") as f:
        return [int(f[f"episode_{e}"].attrs["seed"]) for e in range(len(f.keys()))]


def training(dataset) -> dict:
    return dataset.metadata["recipe"]["training"]


# ---------------------------------------------------------------------------------------------- pure pieces

def test_split_episodes_by_hand():
    obs = np.arange(7, dtype=np.float32)[:, None]
    next_obs = obs + 100
    terminated = np.array([0, 1, 0, 0, 0, 0, 0], bool)
    truncated = np.array([0, 0, 0, 0, 1, 0, 0], bool)
    episodes = md.split_episodes(obs, obs, np.ones(7, np.float32), next_obs, terminated, truncated, [5, 6, 7])
    assert [len(e["rewards"]) for e in episodes] == [2, 3, 2]
    np.testing.assert_array_equal(episodes[0]["observations"][:, 0], [0, 1, 101])  # o_0, o_1, then next_obs of step 1
    np.testing.assert_array_equal(episodes[2]["observations"][:, 0], [5, 6, 106])
    assert episodes[0]["terminations"].tolist() == [False, True] and not episodes[0]["truncations"].any()
    assert episodes[1]["truncations"].tolist() == [False, False, True] and not episodes[1]["terminations"].any()
    assert not md.is_finished(episodes[2])  # the log stops mid-episode
    assert [e["seed"] for e in episodes] == [5, 6, 7]


def test_choose_snapshots_by_hand():
    def snaps(returns):
        return [md.Snapshot(step=250 * (i + 1), eval_return=r, actor_params=None) for i, r in enumerate(returns)]

    # best: 90 twice -> the latest (step 1250); target 30 -> step 500
    medium, expert = md.choose_snapshots(snaps([10, 30, 90, 60, 90]), 1 / 3, "best")
    assert (medium.step, expert.step) == (500, 1250)
    # final: 60 at step 1000; target 20 is as close to 10 (step 250) as to 30 (step 500) -> the earliest
    medium, expert = md.choose_snapshots(snaps([10, 30, 90, 60]), 1 / 3, "final")
    assert (medium.step, expert.step) == (250, 1000)
    # medium is never later than the expert: 29 (step 1000, closest to 30) comes after the best (step 750)
    medium, expert = md.choose_snapshots(snaps([10, 40, 90, 29]), 1 / 3, "best")
    assert (medium.step, expert.step) == (500, 750)


def test_format_table_has_a_row_per_dataset():
    rows = [{"dataset": "pixax/hopper/medium-v0", "episodes": 3, "transitions": 1000, "mean_return": 500.0,
             "normalized_score": 33.3}]
    table = md.format_table(rows, 0.0, 1500.0, 1.0)
    assert "pixax/hopper/medium-v0" in table and "1,000" in table and "33.3" in table and "1500.00" in table


# ---------------------------------------------------------------------------------------------- the datasets

def test_datasets_exist_load_and_have_the_planned_sizes(generated):
    root, rows, loaded = generated
    assert [row["dataset"] for row in rows] == [dataset_id(name) for name in md.DATASET_NAMES]
    for name in ("random", "medium", "expert"):
        assert loaded[name].num_transitions == STEPS_PER_DATASET
    assert loaded["medium-expert"].num_transitions == 2 * STEPS_PER_DATASET
    medium_step = training(loaded["medium"])["medium_step"]
    assert loaded["medium-replay"].num_transitions == medium_step
    for row, name in zip(rows, md.DATASET_NAMES):
        assert row["episodes"] == loaded[name].num_episodes and row["transitions"] == loaded[name].num_transitions
    assert loaded["random"].obs_shape == (4,) and loaded["random"].action_dim == 1
    for dataset in loaded.values():  # actions as the agent sees them
        assert np.all(np.abs(dataset.actions) <= 1.0)


def test_terminals_are_the_pole_falling_and_timeouts_the_time_limit(generated):
    _, _, loaded = generated
    counts = {"terminal": 0, "timeout": 0}
    for name, dataset in loaded.items():
        # no transition that is not the last of its episode carries a flag
        last = np.zeros(dataset.num_transitions, bool)
        last[dataset.episode_ends - 1] = True
        assert not np.any((dataset.terminals + dataset.timeouts)[~last]), name
        fell = np.abs(dataset.next_observations[:, 1]) > ANGLE_LIMIT
        np.testing.assert_array_equal(dataset.terminals.astype(bool), fell, err_msg=name)  # terminal <=> fell
        lengths = dataset.episode_ends - dataset.episode_starts
        assert np.all(lengths <= TIME_LIMIT), name
        timeout = dataset.timeouts[dataset.episode_ends - 1].astype(bool)
        np.testing.assert_array_equal(timeout, lengths == TIME_LIMIT, err_msg=name)
        # only a cut log ends with neither flag: the last episode of a rollout (medium-expert: of each part)
        unfinished = np.flatnonzero(~(timeout | dataset.terminals[dataset.episode_ends - 1].astype(bool)))
        allowed = {dataset.num_episodes - 1}
        if name == "medium-expert":
            allowed.add(loaded["medium"].num_episodes - 1)
        assert set(unfinished.tolist()) <= allowed, (name, unfinished)
        counts["terminal"] += int(dataset.terminals.sum())
        counts["timeout"] += int(dataset.timeouts.sum())
    assert counts["terminal"] > 0 and counts["timeout"] > 0  # both kinds of episode end are exercised


def test_metadata_holds_the_references_and_the_recipe(generated):
    _, _, loaded = generated
    random_return, expert_return = datasets.reference_returns(loaded["random"])
    for name, dataset in loaded.items():
        assert datasets.reference_returns(dataset) == (random_return, expert_return), name
        recipe = dataset.metadata["recipe"]
        assert recipe["dataset"] == name and recipe["max_episode_steps"] == TIME_LIMIT
        assert recipe["training"]["td3_config"]["hidden_dim"] == 64 and recipe["training"]["seed"] == SEED
        finished = [e for e in dataset.episodes() if md.is_finished(e)]
        assert dataset.metadata["behaviour_return"] == pytest.approx(np.mean(md.episode_returns(finished)))
    # random: uniform actions; its reference is the same kind of episode, drawn independently
    assert loaded["random"].metadata["recipe"]["action_noise_std"] is None
    assert abs(loaded["random"].metadata["behaviour_return"] - random_return) < 2.5
    assert expert_return > random_return + 10
    # the expert is the best snapshot (latest on ties), medium the one closest to a third of it (earliest)
    snapshots = training(loaded["expert"])["snapshots"]
    best = max(r for _, r in snapshots)
    expert_step = max(step for step, r in snapshots if r == best)
    distance = {step: abs(r - best / 3) for step, r in snapshots if step <= expert_step}
    medium_step = min(step for step in distance if distance[step] == min(distance.values()))
    assert training(loaded["expert"])["expert_step"] == expert_step
    assert training(loaded["expert"])["medium_step"] == medium_step
    for name, step in (("medium", medium_step), ("expert", expert_step)):
        recipe = loaded[name].metadata["recipe"]
        assert recipe["snapshot_step"] == step and recipe["action_noise_std"] == 0.1
        assert "SAC" in recipe["policy"]  # the difference from D4RL is written down
    assert medium_step < expert_step


def test_medium_expert_is_medium_then_expert_episode_by_episode(generated):
    root, _, loaded = generated
    combined = loaded["medium"].episodes() + loaded["expert"].episodes()
    episodes = loaded["medium-expert"].episodes()
    assert len(episodes) == len(combined)
    for mine, theirs in zip(episodes, combined):
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key])
    assert episode_seeds(root, "medium-expert") == episode_seeds(root, "medium") + episode_seeds(root, "expert")


def replay_in_env(episode: dict, seed: int) -> None:
    """The episode's observations, rewards and flags are what the environment gives for its reset seed and actions."""
    env = gym_mujoco.GymMujocoEnv(TASK, max_episode_steps=TIME_LIMIT)
    obs, _ = env.reset(seed=seed)
    np.testing.assert_allclose(obs, episode["observations"][0], atol=1e-6)
    for t, action in enumerate(episode["actions"]):
        obs, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(obs, episode["observations"][t + 1], atol=1e-5)
        assert reward == episode["rewards"][t]
        assert terminated == episode["terminations"][t] and truncated == episode["truncations"][t]
    env.close()


def test_medium_replay_is_the_training_log_up_to_the_medium_step(generated):
    root, _, loaded = generated
    replay = loaded["medium-replay"]
    episodes, seeds = replay.episodes(), episode_seeds(root, "medium-replay")
    # consecutive training episodes: episode e was reset with the training stream's e-th seed
    assert seeds == [md.derived_seed(SEED, md.TRAIN_STREAM, e) for e in range(len(episodes))]
    for e in (0, 1, len(episodes) // 2, len(episodes) - 1):
        replay_in_env(episodes[e], seeds[e])
    # the first SEED_STEPS actions are TD3's uniform warm-up: spread over [-1, 1], mean ~0, std ~1/sqrt(3)
    warmup = replay.actions[:SEED_STEPS, 0]
    assert warmup.min() < -0.9 and warmup.max() > 0.9
    assert abs(warmup.mean()) < 0.12 and abs(warmup.std() - 1 / np.sqrt(3)) < 0.08
    # it stops at the medium step: the last episode is cut there unless it ended exactly at that step
    assert replay.num_transitions == training(replay)["medium_step"]


def test_rollouts_replay_in_the_environment(generated):
    root, _, loaded = generated
    for name in ("random", "medium", "expert"):
        seeds = episode_seeds(root, name)
        assert len(set(seeds)) == len(seeds)
        episodes = loaded[name].episodes()
        replay_in_env(episodes[0], seeds[0])
        replay_in_env(episodes[-1], seeds[-1])


def test_same_seed_same_data(generated, tmp_path):
    root, _, loaded = generated
    md.main([TASK, "--root", str(tmp_path), *TINY_RUN, "--datasets", "random,medium-replay"])
    for name in ("random", "medium-replay"):
        again = datasets.load_dataset(dataset_id(name), root=tmp_path)
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            np.testing.assert_array_equal(getattr(again, key), getattr(loaded[name], key), err_msg=f"{name} {key}")
        assert again.metadata["ref_min_score"] == loaded[name].metadata["ref_min_score"]
        assert again.metadata["ref_max_score"] == loaded[name].metadata["ref_max_score"]


# ---------------------------------------------------------------------------------------------- errors

def test_an_existing_dataset_is_refused_before_any_work(generated, capsys):
    root, _, _ = generated
    data_file = root / dataset_id("medium") / "data" / "main_data.hdf5"
    before = os.stat(data_file).st_mtime_ns
    with pytest.raises(SystemExit) as stop:
        md.main([TASK, "--root", str(root), *TINY_RUN, "--datasets", "medium"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert "already exist" in message and "--overwrite" in message and dataset_id("medium") in message
    assert os.stat(data_file).st_mtime_ns == before


@pytest.mark.parametrize("flags, expected", [
    (["Hopper-v9"], "valid tasks"),
    ([TASK, "--datasets", "medium,experts"], "experts"),
    ([TASK, "--td3", "hidden=64"], "valid: "),
    ([TASK, "--td3", "hidden_dim=wide"], "hidden_dim takes a value of type int"),
    ([TASK, "--td3", "actor_lr=-1"], "actor_lr"),
    ([TASK, "--medium-fraction", "0"], "--medium-fraction"),
    ([TASK, "--train-steps", "100", "--eval-every", "500"], "--eval-every"),
    ([TASK, "--steps-per-dataset", "0"], "--steps-per-dataset"),
    ([TASK, "--max-episode-steps", "0"], "--max-episode-steps"),
    ([TASK, "--expert", "median"], "invalid choice"),
])
def test_bad_flags_stop_with_a_clear_message(flags, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        md.main([*flags, "--root", str(tmp_path)])
    assert stop.value.code == 2
    assert expected in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def offline_config(root, dataset: str, runs):
    config = offline.base_config(td3bc.Config, TASK, dataset)
    config.dataset_root, config.root, config.progress = str(root), str(runs), False
    return config


def corrupt_copy(root, tmp_path):
    """A root holding a copy of the medium dataset whose HDF5 file lost its second half."""
    corrupt_root = tmp_path / "corrupt"
    source = root / dataset_id("medium") / "data"
    target = corrupt_root / dataset_id("medium") / "data"
    target.mkdir(parents=True)
    (target / "metadata.json").write_bytes((source / "metadata.json").read_bytes())
    content = (source / "main_data.hdf5").read_bytes()
    (target / "main_data.hdf5").write_bytes(content[: len(content) // 2])
    return corrupt_root


def test_offline_run_stops_on_a_missing_or_corrupt_dataset_with_a_clear_message(generated, tmp_path):
    root, _, _ = generated
    with pytest.raises(SystemExit) as stop:
        offline.run(td3bc, "td3bc", offline_config(root, dataset_id("medium-typo"), tmp_path / "runs"))
    assert "No Minari dataset" in str(stop.value.code) and dataset_id("medium") in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        config = offline_config(corrupt_copy(root, tmp_path), dataset_id("medium"), tmp_path / "runs")
        offline.run(td3bc, "td3bc", config)
    assert "corrupt" in str(stop.value.code)


@pytest.mark.parametrize("problem", ["missing", "corrupt", "shape"])
def test_offline_run_makes_no_run_directory_for_a_bad_dataset(generated, tmp_path, problem):
    root, _, _ = generated
    runs = tmp_path / "runs"
    if problem == "missing":
        config = offline_config(root, dataset_id("medium-typo"), runs)
    elif problem == "corrupt":
        config = offline_config(corrupt_copy(root, tmp_path), dataset_id("medium"), runs)
    else:  # an InvertedPendulum dataset (4 states, 1 action) evaluated on Hopper (11, 3)
        config = offline_config(root, dataset_id("medium"), runs)
        config.task = "Hopper-v5"
    with pytest.raises(SystemExit) as stop:
        offline.run(td3bc, "td3bc", config)
    if problem == "shape":
        assert "(4,)" in str(stop.value.code) and "(11,)" in str(stop.value.code), stop.value.code
    assert not runs.exists() or not any(runs.rglob("*")), sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
