"""Tests of envs/: the dm_control gymnasium wrapper and the vector environment.

References are raw dm_control environments driven by hand, not the wrapper itself. Images are
small (32x32) and episodes use "states" where pixels are not the point, to keep the file fast.
"""

import numpy as np
import pytest

import envs
from dm_control import suite
from envs import dmc

SIZE = 32


def flatten(observation: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])


def hand_rescale(action: np.ndarray, spec) -> np.ndarray:
    """[-1, 1] -> [minimum, maximum] of a dm_control action spec, computed here independently."""
    action = action.astype(np.float64)
    return spec.minimum + (action + 1.0) / 2.0 * (spec.maximum - spec.minimum)


# ---------------------------------------------------------------- task names and errors


def test_task_names_and_domains():
    assert envs.TASKS == sorted(envs.TASKS)
    for name in ("cartpole_swingup", "ball_in_cup_catch", "cup_catch", "quadruped_walk",
                 "humanoid_CMU_run", "point_mass_easy", "manipulator_bring_ball"):
        assert name in envs.TASKS
    assert envs.domain_of("cup_catch") == "ball_in_cup"
    assert envs.domain_of("ball_in_cup_catch") == "ball_in_cup"
    assert envs.domain_of("point_mass_easy") == "point_mass"
    assert envs.domain_of("humanoid_CMU_run") == "humanoid_CMU"
    # Every suite task except the unbounded-action lqr domain, plus the cup_catch alias.
    expected = {f"{d}_{t}" for d, t in suite.ALL_TASKS if d != "lqr"} | {"cup_catch"}
    assert set(envs.SUITES["dmc"].tasks) == expected


def test_unknown_task_lists_valid_tasks():
    for make in (envs.make, dmc.DMCEnv, envs.domain_of):
        with pytest.raises(ValueError) as error:
            make("cartpole_swingupp")
        message = str(error.value)
        assert "cartpole_swingupp" in message
        assert "cartpole_swingup," in message and "cup_catch" in message and "walker_run" in message


def test_unknown_obs_type_lists_valid_ones():
    with pytest.raises(ValueError) as error:
        dmc.DMCEnv("cartpole_swingup", obs_type="rgb")
    message = str(error.value)
    assert "'rgb'" in message and "pixels" in message and "states" in message


def test_wrong_action_shape():
    env = dmc.DMCEnv("cheetah_run", obs_type="states")
    env.reset(seed=0)
    with pytest.raises(ValueError) as error:
        env.step(np.zeros(5, np.float32))
    assert "(6,)" in str(error.value) and "(5,)" in str(error.value)
    with pytest.raises(ValueError):
        env.step(np.zeros((1, 6), np.float32))


def test_step_before_reset_is_an_error():
    env = dmc.DMCEnv("cartpole_swingup", obs_type="states")
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1, np.float32))


# ---------------------------------------------------------------- action repeat and scaling


def test_reward_under_action_repeat_matches_raw_dm_control():
    # quadruped's actuators have bounds [-1, 1.1] and [-0.8, 0.8]: an unscaled action would drive
    # the physics differently from the hand-rescaled one.
    seed, repeat = 3, 2
    env = dmc.DMCEnv("quadruped_walk", obs_type="states", seed=seed, action_repeat=repeat)
    raw = suite.load("quadruped", "walk", task_kwargs={"random": seed}, visualize_reward=False)
    spec = raw.action_spec()
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)

    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, flatten(raw.reset().observation))
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(15):
        action = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        inner = hand_rescale(action, spec)
        expected_reward = 0.0
        for _ in range(repeat):
            time_step = raw.step(inner)
            expected_reward += time_step.reward
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(reward, float)
        assert reward == pytest.approx(expected_reward, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(obs, flatten(time_step.observation))
        assert info == {"discount": 1.0, "frames": repeat}
        assert not terminated and not truncated
        rewards.append(reward)
    assert np.ptp(rewards) > 0  # the comparison saw varying rewards, not a constant


def test_rescale_endpoints_reach_bounds():
    env = dmc.DMCEnv("quadruped_walk", obs_type="states")
    spec = env._env.action_spec()
    ones = np.ones(spec.shape, np.float32)
    np.testing.assert_array_equal(env._rescale(ones), spec.maximum)
    np.testing.assert_array_equal(env._rescale(-ones), spec.minimum)
    assert env._rescale(ones).dtype == np.float64


def test_episode_truncates_after_500_agent_steps_with_repeat_2():
    env = dmc.DMCEnv("cartpole_balance", obs_type="states", action_repeat=2)
    assert env.max_episode_steps == 500
    env.reset(seed=0)
    action = np.zeros(1, np.float32)
    total_frames = 0
    for step in range(1, 501):
        _, _, terminated, truncated, info = env.step(action)
        total_frames += info["frames"]
        assert info["frames"] == 2
        assert not terminated
        assert truncated == (step == 500), step
    assert total_frames == 1000 and info["discount"] == 1.0
    with pytest.raises(RuntimeError):  # no silent reset by the inner env
        env.step(action)
    env.reset()
    assert env.step(action)[3] is False


def test_episode_truncates_with_repeat_not_dividing_1000():
    env = dmc.DMCEnv("cartpole_balance", obs_type="states", action_repeat=3)
    assert env.max_episode_steps == 334  # 333 steps of 3 frames + one of 1 frame
    env.reset(seed=0)
    frames = []
    for step in range(1, 335):
        _, _, terminated, truncated, info = env.step(np.zeros(1, np.float32))
        frames.append(info["frames"])
        assert not terminated
        assert truncated == (step == 334), step
    assert frames[:-1] == [3] * 333 and frames[-1] == 1 and sum(frames) == 1000


def test_termination_discount_zero_stops_repeat_early():
    # No suite task used here terminates, so make inner frame 3 terminal (discount 0) by hand.
    seed = 1
    env = dmc.DMCEnv("cartpole_swingup", obs_type="states", seed=seed, action_repeat=2)
    twin = dmc.DMCEnv("cartpole_swingup", obs_type="states", seed=seed, action_repeat=1)
    frame_count = [0]

    def terminate_on_third_frame(physics):
        frame_count[0] += 1
        return 0.0 if frame_count[0] == 3 else None

    env._env.task.get_termination = terminate_on_third_frame
    env.reset()
    twin.reset()
    action = np.full(1, 0.5, np.float32)
    twin_rewards = [twin.step(action)[1] for _ in range(3)]

    _, reward, terminated, truncated, info = env.step(action)
    assert reward == pytest.approx(twin_rewards[0] + twin_rewards[1])
    assert not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step(action)
    assert terminated is True and truncated is False
    assert info == {"discount": 0.0, "frames": 1}
    assert reward == pytest.approx(twin_rewards[2])


# ---------------------------------------------------------------- pixels and frame stack


def test_pixel_observation_and_frame_stack():
    env = dmc.DMCEnv("cartpole_swingup", image_size=SIZE, frame_stack=3, seed=0)
    assert env.observation_space.shape == (SIZE, SIZE, 9)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 9) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    first = env.render()
    for k in range(3):  # on reset the first frame fills the whole stack
        np.testing.assert_array_equal(obs[..., 3 * k:3 * k + 3], first)
    assert first.std() > 0  # an actual image, not a blank buffer

    previous = obs
    for _ in range(4):
        obs, *_ = env.step(np.ones(1, np.float32))
        np.testing.assert_array_equal(obs[..., 6:9], env.render())  # newest last
        np.testing.assert_array_equal(obs[..., 0:6], previous[..., 3:9])  # older frames shift left
        previous = obs
    # The cart moved: oldest and newest frames of the stack differ.
    assert not np.array_equal(obs[..., 0:3], obs[..., 6:9])


def test_render_size_and_camera():
    env = dmc.DMCEnv("cartpole_swingup", image_size=SIZE)
    env.reset(seed=0)
    frame = env.render(48)
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    assert env.camera_id == 0
    assert dmc.DMCEnv("quadruped_walk", obs_type="states").camera_id == 2
    assert dmc.DMCEnv("quadruped_walk", obs_type="states", camera_id=1).camera_id == 1


def test_kept_cameras_render_what_physics_render_does():
    """DMCEnv keeps one dm_control Camera per size; its frames equal a fresh physics.render, after steps."""
    env = dmc.DMCEnv("cheetah_run", image_size=SIZE)
    env.reset(seed=0)
    for t in range(3):
        env.step(np.full(env.action_space.shape, 0.5 - t, np.float32))
        for size in (SIZE, 48):
            expected = env._env.physics.render(height=size, width=size, camera_id=env.camera_id)
            np.testing.assert_array_equal(env.render(size), expected)
    assert set(env._cameras) == {SIZE, 48}
    env.close()


def test_states_observation_space():
    env = dmc.DMCEnv("cartpole_swingup", obs_type="states", frame_stack=3)
    obs, _ = env.reset(seed=0)
    # cartpole: position (cart x, cos, sin of the pole angle) + velocity (2) = 5 numbers.
    assert obs.shape == (5,) == env.observation_space.shape
    assert obs.dtype == np.float32 and env.frame_stack == 1


# ---------------------------------------------------------------- seeding


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, *_ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return np.stack(observations), np.array(rewards)


def test_reset_seed_is_deterministic():
    env = dmc.DMCEnv("cartpole_swingup", obs_type="states", seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 1)).astype(np.float32)
    obs_a, rewards_a = rollout(env, 5, actions)
    obs_b, rewards_b = rollout(env, 5, actions)  # same instance, after an episode was played
    other = dmc.DMCEnv("cartpole_swingup", obs_type="states", seed=123)
    obs_c, rewards_c = rollout(other, 5, actions)  # another instance, other construction seed
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rewards_a, rewards_c)
    obs_d, rewards_d = rollout(env, 6, actions)
    assert not np.array_equal(obs_a[0], obs_d[0])
    assert not np.array_equal(rewards_a, rewards_d)
    # The construction seed is the seed of the first episode.
    fresh = dmc.DMCEnv("cartpole_swingup", obs_type="states", seed=5)
    np.testing.assert_array_equal(fresh.reset()[0], obs_a[0])


def test_reset_seed_pixels_identical():
    a = dmc.DMCEnv("cartpole_swingup", image_size=SIZE, seed=0)
    b = dmc.DMCEnv("cartpole_swingup", image_size=SIZE, seed=9)
    np.testing.assert_array_equal(a.reset(seed=4)[0], b.reset(seed=4)[0])


# ---------------------------------------------------------------- vector environments


def test_make_vector_validates_task_before_starting_workers(monkeypatch):
    def no_workers(*args, **kwargs):
        raise AssertionError("AsyncVectorEnv was created for an unknown task")

    monkeypatch.setattr(envs.vector.gym.vector, "AsyncVectorEnv", no_workers)
    with pytest.raises(ValueError, match="Valid tasks"):
        envs.make_vector("no_such_task", [0, 1])
    with pytest.raises(ValueError):
        envs.make_vector("cartpole_swingup", [0, 1], seed=3)


def test_make_vector_sync_when_one_seed_or_asked():
    import gymnasium as gym

    venv = envs.make_vector("cartpole_swingup", [0], obs_type="states")
    assert isinstance(venv, gym.vector.SyncVectorEnv)
    venv.close()
    venv = envs.make_vector("cartpole_swingup", [0, 1], asynchronous=False, obs_type="states")
    assert isinstance(venv, gym.vector.SyncVectorEnv)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
    venv.close()


def test_async_vector_matches_single_envs_and_reset_mask():
    import gymnasium as gym

    seeds = [3, 4]
    kwargs = dict(image_size=SIZE, action_repeat=2)
    singles = [dmc.DMCEnv("cartpole_swingup", seed=s, **kwargs) for s in seeds]
    venv = envs.make_vector("cartpole_swingup", seeds, **kwargs)
    try:
        assert isinstance(venv, gym.vector.AsyncVectorEnv)
        assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.DISABLED
        assert venv.observation_space.shape == (2, SIZE, SIZE, 9)

        obs, _ = venv.reset(seed=seeds)
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(obs[i], env.reset(seed=seeds[i])[0])
        assert not np.array_equal(obs[0], obs[1])

        actions = np.array([[0.7], [-0.4]], np.float32)
        for _ in range(2):
            obs, rewards, terminated, truncated, info = venv.step(actions)
            for i, env in enumerate(singles):
                o, r, te, tr, inf = env.step(actions[i])
                np.testing.assert_array_equal(obs[i], o)
                assert rewards[i] == r and terminated[i] == te and truncated[i] == tr
                assert info["frames"][i] == inf["frames"] == 2

        frames = venv.call("render", 40)
        assert len(frames) == 2
        for frame, env in zip(frames, singles):
            assert frame.shape == (40, 40, 3) and frame.dtype == np.uint8
            np.testing.assert_array_equal(frame, env.render(40))

        # Reset only env 1 (new seed 7): env 0 keeps its state and last observation.
        last_obs_0 = obs[0].copy()
        obs, _ = venv.reset(seed=[None, 7], options={"reset_mask": np.array([False, True])})
        np.testing.assert_array_equal(obs[0], last_obs_0)
        np.testing.assert_array_equal(obs[1], singles[1].reset(seed=7)[0])
        obs, rewards, *_ = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, *_ = env.step(actions[i])
            np.testing.assert_array_equal(obs[i], o)
            assert rewards[i] == r
    finally:
        venv.close()
