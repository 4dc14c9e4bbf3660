"""MoDem on Meta-World and Adroit (spec §3.2-3.5): the proprioceptive slices against the raw environment state
by hand, the sparse reward success - 1, MoDem's episode lengths, Meta-World's scripted demos through
data/demos.py, and a tiny MoDemTrainer run on a Meta-World task that logs the latched evaluation success."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from agents import modem
from core.modem_loop import MoDemTrainer
from core.offpolicy import LoopConfig
from data import demos as demo_data
from envs import adroit, metaworld
from scripts import collect_demos

MW_TASK = "mw_reach"  # its scripted expert succeeds within a few agent steps
SIZE = 32


def test_modem_episode_lengths_and_settings_per_domain():
    assert [modem.episode_steps(t) for t in ("adroit_door", "adroit_hammer", "adroit_pen", "mw_assembly")] == \
        [100, 125, 50, 100]
    assert modem.episode_steps("walker_walk") is None
    assert [modem.config_for_task(t).iterations for t in ("adroit_pen", "mw_assembly", "walker_walk")] == [8, 4, 6]
    assert modem.config_for_task("mw_assembly").demo_schedule == "linear(0.5,0.25,50000)"
    assert modem.env_options_for_task("walker_walk") == {"proprio": True}
    assert modem.env_options_for_task("adroit_hammer") == {"modem_state": True, "sparse_reward": True,
                                                            "max_episode_steps": 125, "terminate_on_drop": False}
    assert modem.state_key("mw_reach") == "modem_state" and modem.state_key("cartpole_swingup") == "proprio"
    env = adroit.AdroitEnv("adroit_hammer", obs_type="states", max_episode_steps=125)
    assert (env.max_episode_steps, env.episode_frames) == (125, 250)
    env.close()


def test_metaworld_modem_state_and_sparse_reward_by_hand():
    # action_repeat 1: the agent step's success is its one simulator step's, so reward = info["success"] - 1
    kwargs = dict(seed=3, action_repeat=1, max_episode_steps=150)
    sparse = metaworld.MetaWorldEnv(MW_TASK, obs_type="states", modem_state=True, sparse_reward=True, **kwargs)
    raw = metaworld.MetaWorldEnv(MW_TASK, obs_type="states", **kwargs)  # the raw 39-d state, same seed
    from metaworld.policies import ENV_POLICY_MAP
    expert = ENV_POLICY_MAP["reach-v3"]()
    try:
        assert sparse.modem_state_space.shape == (8,) and raw.modem_state_space is None
        _, info = sparse.reset(seed=3)
        state, raw_info = raw.reset(seed=3)
        assert "modem_state" not in raw_info
        hand = [0, 1, 2, 3, 18, 19, 20, 21]  # hand xyz, gripper, previous hand xyz, previous gripper
        np.testing.assert_array_equal(info["modem_state"], state[hand].astype(np.float32))
        rewards = []
        for _ in range(150):
            action = expert.get_action(state.astype(np.float64)).astype(np.float32)
            _, reward, _, _, info = sparse.step(action)
            state, _, _, _, raw_info = raw.step(action)
            np.testing.assert_array_equal(info["modem_state"], state[hand].astype(np.float32))
            assert reward == raw_info["success"] - 1.0
            rewards.append(reward)
        assert -1.0 in rewards and 0.0 in rewards  # both values seen: the expert reaches the goal
    finally:
        sparse.close()
        raw.close()


def test_adroit_modem_state_slices_by_hand_and_sparse_reward():
    import mujoco

    def site(env, name):
        return env._env.data.site_xpos[mujoco.mj_name2id(env._env.model, mujoco.mjtObj.mjOBJ_SITE, name)]

    door = adroit.AdroitEnv("adroit_door", obs_type="states", image_size=SIZE, modem_state=True, sparse_reward=True)
    pen = adroit.AdroitEnv("adroit_pen", obs_type="states", image_size=SIZE, modem_state=True,
                           max_episode_steps=50, terminate_on_drop=False)
    try:
        assert door.modem_state_space.shape == (30,) and pen.modem_state_space.shape == (27,)
        _, info = door.reset(seed=1)
        qpos = door._env.data.qpos
        np.testing.assert_allclose(info["modem_state"], np.r_[qpos[1:-2], site(door, "S_grasp")], rtol=1e-6)
        _, reward, _, _, info = door.step(np.zeros(28, np.float32))
        np.testing.assert_allclose(info["modem_state"], np.r_[door._env.data.qpos[1:-2], site(door, "S_grasp")],
                                   rtol=1e-6)
        assert reward == -1.0 and info["success"] == 0.0  # a closed door
        # open the door past 1.4 rad: the goal is achieved at the step's last frame -> reward 0
        hinge = mujoco.mj_name2id(door._env.model, mujoco.mjtObj.mjOBJ_JOINT, "door_hinge")
        door._env.data.qpos[door._env.model.jnt_qposadr[hinge]] = 1.5
        _, reward, _, _, info = door.step(np.zeros(28, np.float32))
        assert reward == 0.0 and info["success"] == 1.0

        _, info = pen.reset(seed=2)
        data = pen._env.data
        desired = (site(pen, "target_top") - site(pen, "target_bottom")) / pen._env.tar_length
        np.testing.assert_allclose(info["modem_state"], np.r_[data.qpos[:-6], desired], rtol=1e-5, atol=1e-7)
        assert pen.max_episode_steps == 50
    finally:
        door.close()
        pen.close()


@pytest.mark.slow  # ~20 s on the shared CPUs (minari + rendering)
def test_scripted_metaworld_demos_round_trip(tmp_path):
    result = collect_demos.main(["--scripted", "--task", MW_TASK, "--episodes", "1", "--max-episodes", "3",
                                 "--image-size", str(SIZE), "--root", str(tmp_path)])
    assert result["successful"] == 1
    demos = demo_data.read_demos(result["dataset_id"], str(tmp_path), episode_length=100, num_demos=1)
    episode = demos.episode(0)
    assert episode["pixels"].shape == (101, SIZE, SIZE, 3) and episode["pixels"].dtype == np.uint8
    assert episode["state"].shape == (101, 8) and episode["actions"].shape == (100, 4)
    rewards, success = episode["rewards"], episode["success"]
    assert set(np.unique(rewards)) <= {-1.0, 0.0} and rewards.max() == 0.0
    # sparse: the LAST simulator step's success - 1, while info["success"] is any of the two simulator steps,
    # so a reward of 0 implies a successful step, and they differ at most where the goal is first reached
    assert (rewards <= success[1:] - 1.0).all() and (rewards != success[1:] - 1.0).sum() <= 2
    assert rewards[-1] == 0.0  # the expert holds the goal to the end
    # the state is MoDem's slice of the raw state: replay the demo's actions in a states copy
    env = metaworld.MetaWorldEnv(MW_TASK, obs_type="states", max_episode_steps=100)
    state, _ = env.reset(seed=demos.metadata["episodes"][0]["seed"])
    for t in range(3):
        np.testing.assert_allclose(episode["state"][t], state[[0, 1, 2, 3, 18, 19, 20, 21]], rtol=1e-6)
        state, *_ = env.step(episode["actions"][t])
    env.close()


@pytest.mark.slow
def test_tiny_modem_run_on_metaworld_logs_latched_success(tmp_path):
    length, repeat = 20, 2
    root = tmp_path / "demos"
    # 2 scripted demos of the run's (shortened) episode length, recorded as collect_demos records them
    options = {**collect_demos.modem_recording_options(MW_TASK, sparse=True), "max_episode_steps": length}
    env = metaworld.MetaWorldEnv(MW_TASK, obs_type="states", action_repeat=repeat, **options)
    policy = collect_demos.Policy(collect_demos.scripted_policy(MW_TASK, 0.1, 0), {"policy": "scripted"}, "states",
                                  {})
    episodes = [collect_demos.record_episode(env, policy, seed=s, image_size=SIZE, state_source="modem_state",
                                             sparse=True) for s in (0, 1)]
    env.close()
    demo_data.write_demos(demo_data.dataset_id_for(MW_TASK), episodes, task=MW_TASK, root=str(root))

    config = modem.config_for_task(
        MW_TASK, image_size=SIZE, num_convs=2, latent_dim=8, enc_dim=16, mlp_dim=16, num_channels=4,
        num_samples=16, num_elites=4, iterations=2, batch_size=8, num_seed_frames=2 * length * repeat,
        num_train_frames=3 * length * repeat, replay_capacity=1000, eval_every_frames=3 * length * repeat,
        num_eval_episodes=1, demos=2, demo_schedule="linear(0.5,0.25,60)")
    cfg = LoopConfig(task=MW_TASK, seeds=(0,), obs_type="pixels", action_repeat=repeat, frame_stack=2,
                     image_size=SIZE, num_train_frames=config.num_train_frames,
                     num_seed_frames=config.num_seed_frames, batch_size=8, replay_capacity=1000,
                     eval_every_frames=config.eval_every_frames, num_eval_episodes=1,
                     checkpoint_every_frames=10_000, save_video=False, progress=False,
                     env_options=(("max_episode_steps", length),))
    run_dir = tmp_path / "run"
    trainer = MoDemTrainer(modem, config, cfg, str(run_dir), demos_root=str(root))
    assert trainer.state_key == "modem_state" and trainer.state_dim == 8 and trainer.episode_steps == length
    # record every evaluation step's per-step success to latch it by hand
    eval_success, original_step = [], trainer.eval_envs.step

    def step(actions):
        out = original_step(actions)
        eval_success.append(np.asarray(out[4]["success"], np.float64))
        return out

    trainer.eval_envs.step = step
    stored = []
    original_store = trainer.store_episode

    def store_episode(observations, actions, rewards):
        stored.append(np.array(rewards))
        return original_store(observations, actions, rewards)

    trainer.store_episode = store_episode
    try:
        trainer.train()
    finally:
        trainer.close()
    rows = np.genfromtxt(run_dir / "metrics.csv", delimiter=",", names=True)
    assert set(np.atleast_1d(rows["phase"]).tolist()) == {2.0, 3.0}  # seeding, then interactive
    for name in ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "bc_loss"):
        if name in rows.dtype.names:
            values = np.atleast_1d(rows[name])
            assert np.isfinite(values[~np.isnan(values)]).all() and (~np.isnan(values)).any(), name
    assert all(set(np.unique(r)) <= {-1.0, 0.0} for r in stored)  # sparse rewards stored
    evals = np.atleast_1d(np.genfromtxt(run_dir / "eval.csv", delimiter=",", names=True))
    assert "episode_success" in evals.dtype.names
    # each evaluation is one episode of `length` steps: its latched success is the max of its step successes
    latched = np.array(eval_success).reshape(len(evals), length).max(axis=1)
    np.testing.assert_array_equal(evals["episode_success"], latched)
