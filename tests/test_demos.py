"""data/demos.py and scripts/collect_demos.py (spec model-offline-onpolicy-agents.md §3.5, §10 #5 and #7).

References: hand-made demos whose pixels and states encode (episode, step), so that any sampled
sequence shows whether its frames and states belong together; episodes replayed in the environment
from their recorded seeds and actions; a TD3 actor evaluated directly on the recorded states.
Environments: cartpole_swingup with action repeat 25 (40 agent steps per episode) and 16x16 renders.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import td3, tdmpc
from core import seeds as seeding
from core.checkpoint import Checkpointer
from core.logging import write_config
from core.offpolicy import LoopConfig
from data import demos
from data.datasets import DatasetError
from scripts import collect_demos

L, STATE_DIM, ACTION_DIM, SIZE = 8, 4, 2, 6
TASK, ACTION_REPEAT, TASK_LENGTH = "cartpole_swingup", 25, 40  # 1000 frames / 25


def hand_episode(e: int, length: int = L) -> dict:
    """Demo e: every pixel of frame t is 20 e + t, state t = (e, t, 0.5, -1), actions and rewards by hand."""
    steps = np.arange(length + 1)
    pixels = np.broadcast_to((20 * e + steps)[:, None, None, None], (length + 1, SIZE, SIZE, 3)).astype(np.uint8)
    state = np.stack([np.full(length + 1, e), steps, np.full(length + 1, 0.5), np.full(length + 1, -1.0)], 1)
    actions = np.stack([np.linspace(-1, 1, length), np.full(length, 0.1 * e)], 1)
    success = (steps >= length - 1).astype(np.float32)
    return {"pixels": pixels, "state": state.astype(np.float32), "actions": actions.astype(np.float32),
            "rewards": (success[1:] - 1.0).astype(np.float32), "success": success}


def write_hand_demos(root, num=3, task="walker_walk", **kwargs):
    episodes = [hand_episode(e) for e in range(num)]
    demos.write_demos(demos.dataset_id_for(task), episodes, task=task, root=root,
                      metadata={"recipe": {"policy": "by hand"}, "action_repeat": 2}, **kwargs)
    return episodes


# ================================================================ format


def test_write_then_read_gives_the_same_demos(tmp_path):
    episodes = write_hand_demos(tmp_path)
    read = demos.read_demos(demos.dataset_id_for("walker_walk"), root=tmp_path, episode_length=L)
    assert (read.num_episodes, read.episode_length, read.frame_shape) == (3, L, (SIZE, SIZE, 3))
    assert (read.state_dim, read.action_dim) == (4, 2)
    for e, episode in enumerate(episodes):
        for key in ("pixels", "state", "actions", "rewards", "success"):
            np.testing.assert_array_equal(read.episode(e)[key], episode[key], err_msg=key)
    assert read.metadata["task"] == "walker_walk" and read.metadata["episode_length"] == L
    assert read.metadata["recipe"] == {"policy": "by hand"}
    np.testing.assert_allclose(read.returns(), [-(L - 2)] * 3)  # success at steps L-1 and L: two rewards of 0
    assert demos.read_demos(demos.dataset_id_for("walker_walk"), root=tmp_path, num_demos=2).num_episodes == 2

    # the file is Minari's: its reader sees the episode groups of spec §3.5
    with h5py.File(tmp_path / "pixax/walker_walk/demos-v0/data/main_data.hdf5") as f:
        group = f["episode_1"]
        pixels = group["observations/pixels"]
        assert pixels.shape == (L + 1, SIZE, SIZE, 3) and pixels.dtype == np.uint8
        assert group["observations/state"].shape == (L + 1, 4) and group["infos/success"].shape == (L + 1,)
        assert not group["terminations"][()].any() and group["truncations"][()].tolist() == [False] * (L - 1) + [True]
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        import minari

        assert minari.load_dataset("pixax/walker_walk/demos-v0").total_episodes == 3
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


def _broken(change):
    episodes = [hand_episode(0), hand_episode(1)]
    change(episodes[1])
    return episodes


@pytest.mark.parametrize("change, message", [
    (lambda ep: ep.update(hand_episode(1, length=L - 1)), r"episode 1: 7 steps but episode 0 has 8.*fixed"),
    (lambda ep: ep["state"].__setitem__((3, 1), np.nan), r"episode 1: state contains NaN"),
    (lambda ep: ep.update(pixels=ep["pixels"].astype(np.float32)), r"episode 1: pixels must be uint8"),
    (lambda ep: ep.update(pixels=ep["pixels"][:-1]), r"episode 1: pixels must be .*\(9, h, w, 3\)"),
    (lambda ep: ep.update(terminations=np.arange(L) == 3), r"episode 1: terminations is set at step 3"),
    (lambda ep: ep.pop("rewards"), r"episode 1: missing \['rewards'\]"),
])
def test_bad_demos_are_refused_naming_the_problem(tmp_path, change, message):
    with pytest.raises(DatasetError, match=message):
        demos.write_demos("pixax/walker_walk/demos-v0", _broken(change), task="walker_walk", root=tmp_path)
    assert not (tmp_path / "pixax/walker_walk/demos-v0").exists()


def test_a_missing_corrupt_or_short_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="walker_walk/demos-v0"):
        demos.read_demos("pixax/walker_walk/demos-v0", root=tmp_path)
    write_hand_demos(tmp_path)
    name = demos.dataset_id_for("walker_walk")
    with pytest.raises(DatasetError, match="already exists"):
        write_hand_demos(tmp_path)
    with pytest.raises(DatasetError, match="8 steps per episode but the environment's episodes have 10"):
        demos.read_demos(name, root=tmp_path, episode_length=10)
    with pytest.raises(DatasetError, match="4 demos asked for but the dataset holds 3"):
        demos.read_demos(name, root=tmp_path, num_demos=4)

    data_file = tmp_path / name / "data" / "main_data.hdf5"
    with h5py.File(data_file, "r+") as f:  # episode 2 one step short: a demo of another length on disk
        group = f["episode_2"]
        for key in ("actions", "rewards", "terminations", "truncations", "observations/pixels",
                    "observations/state", "infos/success"):
            values = group[key][()][:-1]
            del group[key]
            group[key] = values
    with pytest.raises(DatasetError, match=r"main_data.hdf5\), episode 2: 7 steps but episode 0 has 8"):
        demos.read_demos(name, root=tmp_path)

    data_file.write_bytes(data_file.read_bytes()[:2000])  # truncated file
    with pytest.raises(DatasetError, match=r"main_data.hdf5.*corrupt"):
        demos.read_demos(name, root=tmp_path)


# ================================================================ replay


def _check_aligned(batch, horizon):
    """Every sampled step's state (e, t) matches its newest frame 20 e + t, and the older frame is t - 1
    (the episode's first frame repeated at t = 0); sequences stay inside one episode."""
    pixels, state = np.asarray(batch["obs"]["pixels"]), np.asarray(batch["obs"]["state"])
    e, t = state[..., 0], state[..., 1]
    np.testing.assert_array_equal(pixels[..., 0, 0, 3], 20 * e + t)  # newest frame (channels 3:6)
    np.testing.assert_array_equal(pixels[..., 0, 0, 0], 20 * e + np.maximum(t - 1, 0))  # older frame
    assert np.all(e == e[:, :1]) and np.all(np.diff(t, axis=1) == 1) and np.all(t <= L)
    np.testing.assert_allclose(batch["action"][..., 1], 0.1 * e[:, :horizon], rtol=1e-6)


def test_demo_replay_holds_exactly_the_demos_with_states_aligned(tmp_path):
    write_hand_demos(tmp_path)
    loaded = demos.read_demos(demos.dataset_id_for("walker_walk"), root=tmp_path)
    replay = demos.demo_replay(loaded, frame_stack=2, horizon=3)
    priority = np.asarray(replay.sequences.priority)
    assert priority.shape == (3, L) and replay.state.shape == (3, L + 1, 4)  # sized to the demos (spec §10 #5)
    np.testing.assert_array_equal(priority, np.tile([1.0] * (L - 3) + [0.0] * 3, (3, 1)))  # last H never drawn
    batch, indices = demos.sample_replay(replay, jax.random.PRNGKey(0), 64, 3)
    _check_aligned(batch, 3)
    np.testing.assert_allclose(batch["weights"], 1.0)  # untouched priorities: uniform over the sampleable steps
    # Only the rows flagged valid are written (here the first 2 of 64): the others keep priority 1.
    valid = jnp.arange(64) < 2
    masked = demos.update_replay_priorities(replay, indices, jnp.full((64,), 2.0), valid=valid)
    written = np.zeros(priority.size, bool)
    written[np.asarray(indices[:2])] = True
    flat = np.asarray(masked.sequences.priority).reshape(-1)
    np.testing.assert_allclose(flat[written], 2.0 + 1e-6, rtol=1e-7)
    np.testing.assert_array_equal(flat[~written], priority.reshape(-1)[~written])
    np.testing.assert_array_equal(masked.state, replay.state)
    replay = demos.update_replay_priorities(replay, indices, jnp.full((64,), 2.0))
    assert float(replay.sequences.max_priority) == pytest.approx(2.0 + 1e-6)


def test_replay_ring_overwrites_states_with_their_frames():
    replay = demos.init_replay(2 * L, L, (SIZE, SIZE, 3), 4, ACTION_DIM, 2, horizon=3)
    for e in range(3):  # the third episode overwrites row 0
        ep = hand_episode(e)
        replay = demos.add_replay_episode(replay, ep["pixels"], ep["state"], ep["actions"], ep["rewards"])
    np.testing.assert_array_equal(replay.state[0, :, 0], 2)
    batch, _ = demos.sample_replay(replay, jax.random.PRNGKey(1), 64, 3)
    _check_aligned(batch, 3)
    assert set(np.unique(np.asarray(batch["obs"]["state"])[..., 0])) == {1.0, 2.0}
    with pytest.raises(ValueError, match="state must have shape"):
        demos.add_replay_episode(replay, ep["pixels"], ep["state"][:, :3], ep["actions"], ep["rewards"])


# ================================================================ scripts/collect_demos.py


def test_collect_random_demos_end_to_end(tmp_path):
    argv = ["--random", "--task", TASK, "--episodes", "2", "--max-episodes", "2", "--image-size", "16",
            "--action-repeat", str(ACTION_REPEAT), "--root", str(tmp_path), "--seed", "3"]
    out = collect_demos.main(argv)
    assert out["episodes"] == 2
    loaded = demos.read_demos(out["dataset_id"], root=tmp_path, episode_length=TASK_LENGTH)
    assert loaded.pixels.shape == (2, TASK_LENGTH + 1, 16, 16, 3) and loaded.state.shape == (2, TASK_LENGTH + 1, 5)
    recipe = loaded.metadata["recipe"]
    assert (recipe["policy"], recipe["reward_type"], recipe["action_repeat"]) == ("random", "dense", ACTION_REPEAT)
    assert loaded.pixels.std() > 0 and np.all(np.abs(loaded.actions) <= 1)

    # Replaying a demo from its recorded seed and actions gives its states, rewards and first render.
    env = envs.make(TASK, seed=0, obs_type="states", action_repeat=ACTION_REPEAT)
    seed = loaded.metadata["episodes"][1]["seed"]
    obs, _ = env.reset(seed=seed)
    np.testing.assert_array_equal(loaded.pixels[1, 0], env.render(16))
    states, rewards = [obs], []
    for action in loaded.actions[1]:
        obs, reward, *_ = env.step(action)
        states.append(obs)
        rewards.append(reward)
    env.close()
    np.testing.assert_allclose(loaded.state[1], np.stack(states), rtol=1e-6)
    np.testing.assert_allclose(loaded.rewards[1], rewards, rtol=1e-6)
    assert loaded.metadata["episodes"][1]["return"] == pytest.approx(sum(rewards), rel=1e-5)

    with pytest.raises(SystemExit) as stop:  # an existing dataset stops before any work
        collect_demos.main(argv)
    assert stop.value.code == 2


def _fake_run(path, agent_name, config, seeds, keys):
    """A run directory as core/launch.py and the loops write it: config.json and an orbax checkpoint."""
    os.makedirs(path)
    module = {"td3": td3, "tdmpc": tdmpc}[agent_name]
    states = seeding.stack([module.create(jax.random.PRNGKey(k), (5,), 1, config) for k in keys])
    checkpointer = Checkpointer(os.path.join(path, "checkpoints"))
    checkpointer.save(1000, {"agent": states, "replay": {"frames": np.zeros(4, np.uint8)}}, {"step": 1000})
    checkpointer.close()
    loop = LoopConfig(task=TASK, seeds=seeds, obs_type="states", action_repeat=ACTION_REPEAT, frame_stack=1)
    write_config(path, {"agent": agent_name, "task": TASK, "agent_config": dataclasses.asdict(config),
                        "loop": dataclasses.asdict(loop)})
    return states


def test_collect_from_a_run_directory_uses_the_chosen_seeds_agent(tmp_path):
    run = str(tmp_path / "runs" / "td3")
    states = _fake_run(run, "td3", td3.Config(hidden_dim=16), (4, 7), keys=(0, 1))
    out = collect_demos.main(["--run", run, "--seed-index", "1", "--episodes", "1", "--max-episodes", "1",
                              "--image-size", "16", "--root", str(tmp_path / "demos")])
    loaded = demos.read_demos(out["dataset_id"], root=tmp_path / "demos")
    recipe = loaded.metadata["recipe"]
    assert (recipe["policy"], recipe["seed"], recipe["checkpoint_step"]) == ("td3", 7, 1000)
    assert recipe["state_source"] == "observation"
    # the recorded actions are seed 7's deterministic actor on the recorded states, not seed 4's
    observations = jnp.asarray(loaded.state[0, :-1])
    expected = [np.asarray(td3.act(seeding.unstack(states, i), observations, 0, None, eval_mode=True)) for i in (0, 1)]
    np.testing.assert_allclose(loaded.actions[0], np.clip(expected[1], -1, 1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(loaded.actions[0], np.clip(expected[0], -1, 1), atol=1e-3)

    planner = str(tmp_path / "runs" / "tdmpc")  # a planner's run: plan() acts
    _fake_run(planner, "tdmpc", tdmpc.Config(latent_dim=8, enc_dim=16, mlp_dim=16, num_samples=16, num_elites=4,
                                             iterations=1, action_repeat=ACTION_REPEAT), (0,), keys=(0,))
    out = collect_demos.main(["--run", planner, "--episodes", "1", "--max-episodes", "1", "--image-size", "16",
                              "--root", str(tmp_path / "demos"), "--dataset-id", "pixax/cartpole_swingup/demos-v1"])
    assert demos.read_demos(out["dataset_id"], root=tmp_path / "demos").metadata["recipe"]["policy"] == "tdmpc"


def _run_with_config(run, text):
    os.makedirs(os.path.join(run, "checkpoints"))
    with open(os.path.join(run, "config.json"), "w") as f:
        f.write(text)


@pytest.mark.parametrize("setup, message", [
    (lambda run: None, "no such directory"),
    (lambda run: os.makedirs(run), "has no config.json and no checkpoints"),
    (lambda run: _run_with_config(run, "{"), "config.json is not valid JSON"),
    (lambda run: _run_with_config(run, json.dumps({"agent": "td3"})), r"config.json has no \['agent_config', 'loop'\]"),
    (lambda run: _run_with_config(run, json.dumps({"agent": "sac", "agent_config": {}, "loop": {}})),
     "names agent 'sac', but there is no agents/sac.py"),
])
def test_a_bad_run_directory_stops_with_a_message(tmp_path, capsys, setup, message):
    run = str(tmp_path / "run")
    setup(run)
    with pytest.raises(SystemExit) as stop:
        collect_demos.main(["--run", run, "--root", str(tmp_path / "demos")])
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_run_without_checkpoint_or_seed_is_refused(tmp_path, capsys):
    run = str(tmp_path / "run")
    _fake_run(run, "td3", td3.Config(hidden_dim=16), (0,), keys=(0,))
    with pytest.raises(SystemExit):
        collect_demos.main(["--run", run, "--seed-index", "3", "--root", str(tmp_path / "demos")])
    assert "--seed-index=3: the run trained seeds [0]" in capsys.readouterr().err
    for entry in os.listdir(os.path.join(run, "checkpoints")):
        shutil.rmtree(os.path.join(run, "checkpoints", entry))
    with pytest.raises(SystemExit):
        collect_demos.main(["--run", run, "--root", str(tmp_path / "demos")])
    assert "holds no complete checkpoint" in capsys.readouterr().err
