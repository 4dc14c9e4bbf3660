"""Minari datasets: write/read round trip, the qlearning view, validation errors, scores, normalization."""

from __future__ import annotations

import os

import h5py
import minari
import numpy as np
import pytest

from data import datasets

OBS_DIM, ACTION_DIM = 3, 1  # Pendulum-v1's spaces, so the gymnasium-id path can record a real env spec
METADATA = {"random_return": -1200.0, "expert_return": -150.0, "recipe": {"policy": "uniform random", "steps": 9}, "author": "pixax tests"}


def make_episode(rng: np.random.Generator, num_steps: int, end: str) -> dict[str, np.ndarray]:
    """An episode of num_steps steps that ends in "termination", "truncation" or "unfinished"."""
    last = np.zeros(num_steps, bool)
    last[-1] = True
    return {
        "observations": rng.normal(size=(num_steps + 1, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-2, 2, size=(num_steps, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=num_steps).astype(np.float32),
        "terminations": last & (end == "termination"),
        "truncations": last & (end == "truncation"),
    }


@pytest.fixture
def episodes() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [make_episode(rng, 3, "termination"), make_episode(rng, 4, "truncation"), make_episode(rng, 2, "unfinished")]


@pytest.fixture
def written(tmp_path, episodes):
    """(root, dataset id, data folder) of a dataset written from `episodes` under tmp_path."""
    dataset_id = "pixax/pendulum/medium-v0"
    variable_before = os.environ.get("MINARI_DATASETS_PATH")
    data_dir = datasets.write_minari(dataset_id, episodes, env_spec_or_task="Pendulum-v1", root=tmp_path, metadata=METADATA)
    assert os.environ.get("MINARI_DATASETS_PATH") == variable_before  # write_minari restores it
    return tmp_path, dataset_id, data_dir


def test_round_trip_through_minari(written, episodes, monkeypatch):
    root, dataset_id, data_dir = written
    assert data_dir == root / dataset_id / "data"

    # Minari's own reader sees the same episodes, the env spec and our reference returns.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    minari_dataset = minari.load_dataset(dataset_id)
    assert minari_dataset.total_episodes == 3 and minari_dataset.total_steps == 9
    assert minari_dataset.env_spec.id == "Pendulum-v1"
    for episode, minari_episode in zip(episodes, minari_dataset.iterate_episodes()):
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(minari_episode, key), episode[key])
    assert minari.get_normalized_score(minari_dataset, np.array([-150.0])) == pytest.approx(1.0)

    # Our reader: the qlearning view built by hand from the episodes.
    dataset = datasets.load_dataset(dataset_id, root=root)
    np.testing.assert_array_equal(dataset.observations, np.concatenate([e["observations"][:-1] for e in episodes]))
    np.testing.assert_array_equal(dataset.next_observations, np.concatenate([e["observations"][1:] for e in episodes]))
    np.testing.assert_array_equal(dataset.actions, np.concatenate([e["actions"] for e in episodes]))
    np.testing.assert_array_equal(dataset.rewards, np.concatenate([e["rewards"] for e in episodes]))
    np.testing.assert_array_equal(dataset.episode_ids, [0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(dataset.episode_starts, [0, 3, 7])
    np.testing.assert_array_equal(dataset.episode_ends, [3, 7, 9])
    assert dataset.observations.dtype == np.float32 and dataset.terminals.dtype == np.float32
    assert dataset.metadata["recipe"] == METADATA["recipe"]
    assert dataset.metadata["task"] == "Pendulum-v1"
    assert datasets.reference_returns(dataset) == (-1200.0, -150.0)
    np.testing.assert_allclose(dataset.episode_returns(), [e["rewards"].astype(np.float64).sum() for e in episodes], rtol=1e-6)

    # The same dataset read by path, and its episodes() give back what was written.
    by_path = datasets.load_dataset(root / dataset_id)
    np.testing.assert_array_equal(by_path.observations, dataset.observations)
    for episode, again in zip(episodes, dataset.episodes()):
        for key in episode:
            np.testing.assert_array_equal(again[key], episode[key])


def test_task_that_is_not_a_gymnasium_environment(tmp_path, episodes):
    datasets.write_minari("pixax/cheetah_run/random-v0", episodes, env_spec_or_task="cheetah_run", root=tmp_path, metadata=METADATA)
    dataset = datasets.load_dataset("pixax/cheetah_run/random-v0", root=tmp_path)
    assert dataset.metadata["task"] == "cheetah_run" and "env_spec" not in dataset.metadata
    assert dataset.obs_shape == (OBS_DIM,) and dataset.action_dim == ACTION_DIM


def test_terminals_are_terminations_and_timeouts_are_not_terminals(written, episodes):
    root, dataset_id, _ = written
    dataset = datasets.load_dataset(dataset_id, root=root)
    # Episode 0 terminates at row 2, episode 1 is truncated at row 6, episode 2 (rows 7, 8) is unfinished.
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dataset.timeouts, [0, 0, 0, 0, 0, 0, 1, 0, 0])
    # The transition at the timeout is kept, with the observation after the cut as next observation.
    np.testing.assert_array_equal(dataset.next_observations[6], episodes[1]["observations"][-1])


def test_missing_dataset_and_missing_file_name_the_path(written, tmp_path):
    root, dataset_id, data_dir = written
    with pytest.raises(FileNotFoundError, match="pixax/pendulum/nothing-v0") as error:
        datasets.load_dataset("pixax/pendulum/nothing-v0", root=root)
    assert str(root) in str(error.value) and dataset_id in str(error.value)  # lists what is there
    (data_dir / "main_data.hdf5").unlink()
    with pytest.raises(FileNotFoundError, match="main_data.hdf5"):
        datasets.load_dataset(dataset_id, root=root)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_hdf5_file_is_reported_with_its_path(written, damage):
    root, dataset_id, data_dir = written
    data_file = data_dir / "main_data.hdf5"
    content = data_file.read_bytes()
    if damage == "garbage":
        data_file.write_bytes(b"this is not an HDF5 file" * 100)
    else:
        data_file.write_bytes(content[: len(content) // 2])
    with pytest.raises(datasets.DatasetError, match="corrupt") as error:
        datasets.load_dataset(dataset_id, root=root)
    assert str(data_file) in str(error.value)


def test_nan_in_rewards_is_refused_on_write_and_on_read(written, episodes, tmp_path):
    bad = [dict(episode) for episode in episodes]
    bad[1]["rewards"] = bad[1]["rewards"].copy()
    bad[1]["rewards"][2] = np.nan
    with pytest.raises(datasets.DatasetError, match=r"episode 1: rewards contains NaN or inf \(first at index \(2,\)"):
        datasets.write_minari("pixax/pendulum/bad-v0", bad, env_spec_or_task="Pendulum-v1", root=tmp_path, metadata=METADATA)

    # A NaN that got into a file (written by something else) is caught on read, naming the file.
    root, dataset_id, data_dir = written
    with h5py.File(data_dir / "main_data.hdf5", "a") as file:
        file["episode_0/rewards"][1] = np.nan
    with pytest.raises(datasets.DatasetError, match="episode 0: rewards contains NaN") as error:
        datasets.load_dataset(dataset_id, root=root)
    assert str(data_dir / "main_data.hdf5") in str(error.value)


def test_inconsistent_lengths_are_refused(written, episodes, tmp_path):
    bad = [dict(episode) for episode in episodes]
    bad[0]["actions"] = bad[0]["actions"][:-1]
    with pytest.raises(datasets.DatasetError, match="episode 0: inconsistent lengths: actions"):
        datasets.write_minari("pixax/pendulum/bad-v0", bad, env_spec_or_task="Pendulum-v1", root=tmp_path, metadata=METADATA)

    root, dataset_id, data_dir = written
    with h5py.File(data_dir / "main_data.hdf5", "a") as file:
        file["episode_1/rewards"].resize((3,))
    with pytest.raises(datasets.DatasetError, match="episode 1: inconsistent lengths"):
        datasets.load_dataset(dataset_id, root=root)


def test_termination_before_the_last_step_is_refused(episodes, tmp_path):
    bad = [dict(episode) for episode in episodes]
    bad[1]["truncations"] = np.array([False, True, False, True])
    with pytest.raises(datasets.DatasetError, match="truncations is set before the last step"):
        datasets.write_minari("pixax/pendulum/bad-v0", bad, env_spec_or_task="cheetah_run", root=tmp_path, metadata=METADATA)


def test_metadata_needs_reference_returns_and_recipe(episodes, tmp_path):
    with pytest.raises(datasets.DatasetError, match="'expert_return'"):
        datasets.write_minari("pixax/x/y-v0", episodes, env_spec_or_task="t", root=tmp_path, metadata={"random_return": 0.0, "recipe": "r"})
    with pytest.raises(datasets.DatasetError, match="expert_return > random_return"):
        datasets.write_minari("pixax/x/y-v0", episodes, env_spec_or_task="t", root=tmp_path,
                              metadata={"random_return": 5.0, "expert_return": 1.0, "recipe": "r"})


def test_check_shapes_messages(written):
    root, dataset_id, _ = written
    dataset = datasets.load_dataset(dataset_id, root=root)
    datasets.check_shapes(dataset, (OBS_DIM,), ACTION_DIM)
    with pytest.raises(datasets.DatasetError, match=r"observations have shape \(3,\) per step but the agent expects \(17,\)"):
        datasets.check_shapes(dataset, (17,), ACTION_DIM)
    with pytest.raises(datasets.DatasetError, match="actions have dimension 1 but the agent expects 6"):
        datasets.check_shapes(dataset, (OBS_DIM,), 6)


def test_normalized_score_by_hand():
    assert datasets.normalized_score(5.0, random_return=1.0, expert_return=9.0) == pytest.approx(50.0)
    np.testing.assert_allclose(datasets.normalized_score(np.array([1.0, 9.0, 13.0]), 1.0, 9.0), [0.0, 100.0, 150.0])
    random_return, expert_return = datasets.D4RL_V2_REFERENCE_RETURNS["halfcheetah"]
    assert datasets.normalized_score(expert_return, random_return, expert_return) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="undefined"):
        datasets.normalized_score(1.0, 2.0, 2.0)


def test_concatenate_episode_wise_and_write_back(written, tmp_path):
    root, dataset_id, _ = written
    medium = datasets.load_dataset(dataset_id, root=root)
    both = datasets.concatenate([medium, medium])
    assert both.num_transitions == 18 and both.num_episodes == 6
    np.testing.assert_array_equal(both.episode_ids, [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5])
    np.testing.assert_array_equal(both.episode_starts, [0, 3, 7, 9, 12, 16])
    np.testing.assert_array_equal(both.episode_ends, [3, 7, 9, 12, 16, 18])
    np.testing.assert_array_equal(both.terminals[9:], medium.terminals)

    # Written back as a Minari dataset (how medium-expert is made) it reads back identically.
    datasets.write_minari("pixax/pendulum/medium-expert-v0", both.episodes(), env_spec_or_task="Pendulum-v1", root=tmp_path,
                          metadata={**METADATA, "recipe": both.metadata["recipe"]})
    again = datasets.load_dataset("pixax/pendulum/medium-expert-v0", root=tmp_path)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_ids"):
        np.testing.assert_array_equal(getattr(again, key), getattr(both, key))

    other = datasets.OfflineDataset(**{**medium.__dict__, "metadata": {**medium.metadata, "ref_max_score": 1.0}, "name": "other"})
    with pytest.raises(datasets.DatasetError, match="reference returns differ"):
        datasets.concatenate([medium, other])
