"""Tests of envs/metaworld.py and envs/adroit.py (and their entries in the envs registry).

Names, errors and missing-package messages are tested without the packages; the rest skips
cleanly when metaworld or gymnasium-robotics is absent. References are the raw Meta-World and
gymnasium-robotics environments driven by hand, and DrM's rules written out by hand.

Pixels are slow on a CPU (llvmpipe): both suites render a 4096x4096 shadow map and multisample
every frame. Tests whose point is geometry or stacking turn both down first (`cheap_rendering`);
images are small and few.
"""

import sys

import numpy as np
import pytest

import envs
from envs import adroit, metaworld

SIZE = 32


def cheap_rendering(env):
    """Lowers shadow and anti-aliasing quality before the first render (only the shading changes)."""
    env._env.model.vis.quality.shadowsize = 256
    env._env.model.vis.quality.offsamples = 0
    return env


@pytest.fixture
def close_after():
    """Collects environments and closes them (frees their GL contexts) after the test."""
    made = []
    yield made.append
    for env in made:
        env.close()


def metaworld_env_dict():
    return pytest.importorskip("metaworld.env_dict", reason="metaworld is not installed")


def adroit_hand():
    return pytest.importorskip(
        "gymnasium_robotics.envs.adroit_hand", reason="gymnasium-robotics is not installed"
    )


# ================================================================ registry (no packages needed)


def test_registry_names_and_domains():
    assert len(metaworld.TASKS) == 50 and metaworld.TASKS == sorted(metaworld.TASKS)
    assert adroit.TASKS == ["adroit_door", "adroit_hammer", "adroit_pen"]
    for task in ("mw_assembly", "mw_door-open", "mw_stick-pull", "mw_pick-place-wall", "mw_reach"):
        assert task in envs.TASKS
        assert envs.suite_of(task) == "metaworld" and envs.domain_of(task) == "metaworld"
    for task in adroit.TASKS:
        assert envs.suite_of(task) == "adroit" and envs.domain_of(task) == "adroit"
    assert envs.suite_of("cheetah_run") == "dmc"
    suites = [set(suite.tasks) for suite in envs.SUITES.values()]
    assert sum(len(s) for s in suites) == len(set().union(*suites)) == len(envs.TASKS)  # no overlaps


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError) as error:
        metaworld.MetaWorldEnv("mw_door_open")
    message = str(error.value)
    assert "'mw_door_open'" in message and "Did you mean 'mw_door-open'?" in message
    assert "mw_assembly" in message and "mw_window-open" in message
    with pytest.raises(ValueError, match="Did you mean 'mw_door-open'"):
        metaworld.domain_of("mw_door-open-v2")

    with pytest.raises(ValueError) as error:
        adroit.AdroitEnv("adroit_relocate")
    message = str(error.value)
    assert "'adroit_relocate'" in message
    assert "adroit_door, adroit_hammer, adroit_pen" in message

    with pytest.raises(ValueError) as error:
        envs.make("mw_no_such_task")
    assert "mw_assembly" in str(error.value) and "adroit_pen" in str(error.value)


def test_bad_arguments_fail_before_any_import():
    with pytest.raises(ValueError, match="obs_type"):
        metaworld.MetaWorldEnv("mw_reach", obs_type="rgb")
    with pytest.raises(ValueError, match="action_repeat"):
        adroit.AdroitEnv("adroit_door", action_repeat=0)


def test_missing_package_names_the_pip_extra(monkeypatch):
    # A None entry in sys.modules makes `import` fail as if the package were not installed.
    for module in ("metaworld", "metaworld.env_dict"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as error:
        envs.make("mw_reach")
    assert "metaworld" in str(error.value) and ".[metaworld]" in str(error.value)

    for module in ("gymnasium_robotics", "gymnasium_robotics.envs", "gymnasium_robotics.envs.adroit_hand"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError) as error:
        envs.make("adroit_pen")
    assert "gymnasium-robotics" in str(error.value) and ".[adroit]" in str(error.value)


# ================================================================ Meta-World


def raw_metaworld(name: str, seed: int):
    """The raw goal-observable task with goals drawn anew at each reset from its seeded generator."""
    env_dict = metaworld_env_dict()
    env = env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{name}-v3-goal-observable"](seed=seed)
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.seed(seed)
    return env


def test_metaworld_task_list_matches_package():
    env_dict = metaworld_env_dict()
    package_names = {name.removesuffix("-v3") for name in env_dict.ALL_V3_ENVIRONMENTS}
    assert set(metaworld.METAWORLD_NAMES) == package_names


@pytest.mark.filterwarnings("ignore:Constant.s. may be too high")  # from Meta-World's scripted policy
def test_metaworld_reward_repeat_and_success_match_raw_env(close_after):
    metaworld_env_dict()
    from metaworld.policies import SawyerReachV3Policy

    seed, repeat = 3, 2
    env = metaworld.MetaWorldEnv("mw_reach", obs_type="states", seed=seed, action_repeat=repeat)
    close_after(env)
    raw = raw_metaworld("reach", seed)
    assert env.action_space.shape == (4,) and env.action_space.dtype == np.float32
    assert env.observation_space.shape == (39,)

    obs, info = env.reset()
    raw_obs, _ = raw.reset()
    assert info == {}
    np.testing.assert_array_equal(obs, raw_obs.astype(np.float32))
    policy = SawyerReachV3Policy()  # Meta-World's scripted expert: reaches the goal in ~25 steps
    successes, episode_successes = [], []
    for _ in range(30):
        action = np.clip(policy.get_action(obs.astype(np.float64)), -1, 1).astype(np.float32)
        expected_reward, expected_success = 0.0, False
        for _ in range(repeat):
            raw_obs, raw_reward, _, _, raw_info = raw.step(action)
            expected_reward += raw_reward
            expected_success = expected_success or raw_info["success"] > 0
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(reward, float) and reward == expected_reward
        np.testing.assert_array_equal(obs, raw_obs.astype(np.float32))
        assert info["success"] == float(expected_success)
        assert info["discount"] == 1.0 and info["frames"] == repeat
        assert not terminated and not truncated
        successes.append(info["success"])
        episode_successes.append(info["episode_success"])
    # The comparison saw both outcomes; the episode flag is the running "any step succeeded".
    assert 0.0 in successes and 1.0 in successes
    np.testing.assert_array_equal(episode_successes, np.maximum.accumulate(successes))


def test_metaworld_step_succeeds_if_any_repeated_frame_succeeds(close_after):
    metaworld_env_dict()
    env = metaworld.MetaWorldEnv("mw_reach", obs_type="states", action_repeat=3)
    close_after(env)
    env.reset(seed=0)
    raw_step = env._env.step
    pattern = iter([False, True, False] + [False] * 3)  # success on the middle frame of step 1 only

    def step_reporting_pattern(action):
        obs, reward, terminated, truncated, info = raw_step(action)
        return obs, reward, terminated, truncated, {**info, "success": float(next(pattern))}

    env._env.step = step_reporting_pattern
    info_1 = env.step(np.zeros(4, np.float32))[4]
    info_2 = env.step(np.zeros(4, np.float32))[4]
    assert (info_1["success"], info_1["episode_success"]) == (1.0, 1.0)
    assert (info_2["success"], info_2["episode_success"]) == (0.0, 1.0)


def test_metaworld_truncates_after_250_agent_steps(close_after):
    metaworld_env_dict()
    for repeat in (2, 3):  # 3 x 250 frames is past Meta-World's own 500-step limit
        env = metaworld.MetaWorldEnv("mw_reach", obs_type="states", action_repeat=repeat)
        close_after(env)
        assert env.max_episode_steps == 250
        env.reset(seed=0)
        action = np.zeros(4, np.float32)
        for step in range(1, 251):
            _, _, terminated, truncated, info = env.step(action)
            assert not terminated and truncated == (step == 250), step
            assert info["frames"] == repeat
        with pytest.raises(RuntimeError):
            env.step(action)
        env.reset()
        assert env.step(action)[3] is False


def rollout(env, actions, seed):
    """Observations and rewards of one episode start: reset(seed) then `actions`."""
    observations, rewards = [env.reset(seed=seed)[0]], []
    for action in actions:
        obs, reward, *_ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return np.stack(observations), np.array(rewards)


def test_metaworld_reset_seed_is_deterministic(close_after):
    metaworld_env_dict()
    a = metaworld.MetaWorldEnv("mw_push", obs_type="states", seed=0)
    b = metaworld.MetaWorldEnv("mw_push", obs_type="states", seed=9)
    fresh = metaworld.MetaWorldEnv("mw_push", obs_type="states", seed=4)
    for env in (a, b, fresh):
        close_after(env)
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32)

    obs_a, rewards_a = rollout(a, actions, 4)
    obs_b, rewards_b = rollout(b, actions, 4)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    np.testing.assert_array_equal(rollout(a, actions, 4)[0], obs_a)  # same instance, after an episode
    # The construction seed is the seed of the first episode.
    np.testing.assert_array_equal(fresh.reset()[0], obs_a[0])
    # Another seed: other goal and object positions (goal = last 3 numbers of the state).
    obs_c, _ = rollout(a, actions, 5)
    assert not np.allclose(obs_c[0, -3:], obs_a[0, -3:])
    # Without a seed, each reset draws new positions.
    assert not np.allclose(a.reset()[0][-3:], a.reset()[0][-3:])


def test_metaworld_camera_is_drm_corner2(close_after):
    metaworld_env_dict()
    import mujoco

    env = metaworld.MetaWorldEnv("mw_door-open", image_size=SIZE, frame_stack=1)
    close_after(env)
    env.reset(seed=1)
    model = env._env.model
    corner2 = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
    np.testing.assert_array_equal(model.cam_pos[corner2], [0.75, 0.075, 0.7])
    # metaworld 3.1.1 has a camera corner4 at that position with corner2's orientation: the
    # environment's frame must be its (row-flipped) image, at the full default shading.
    reference = mujoco.Renderer(model, SIZE, SIZE)
    reference.update_scene(env._env.data, camera="corner4")
    expected = reference.render()[::-1]
    reference.close()
    frame = env.render()
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8 and frame.std() > 0
    np.testing.assert_array_equal(frame, expected)
    # corner2 is rolled upside down (its image-up axis points down in the world): hence the flip.
    camera_up = env._env.data.cam_xmat[corner2].reshape(3, 3)[:, 1]
    assert camera_up[2] < -0.5


def test_metaworld_image_is_upright(close_after):
    """The hand moved up must appear higher in the image than the hand moved down."""
    metaworld_env_dict()

    def frame_after_moving(dz):
        env = cheap_rendering(metaworld.MetaWorldEnv("mw_reach", image_size=48, frame_stack=1))
        close_after(env)
        env.reset(seed=0)
        for _ in range(12):
            obs, *_ = env.step(np.array([0.0, 0.0, dz, 0.0], np.float32))
        return obs.astype(int), env._env.tcp_center[2]

    up, up_height = frame_after_moving(1.0)
    down, down_height = frame_after_moving(-1.0)
    assert up_height > down_height + 0.2

    def red(image):  # the Sawyer arm is red (0.5, 0.1, 0.1)
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        return (r > 90) & (r > 2 * g) & (r > 2 * b)

    rows = np.broadcast_to(np.arange(48)[:, None], (48, 48))
    only_up, only_down = red(up) & ~red(down), red(down) & ~red(up)
    assert only_up.sum() > 20 and only_down.sum() > 20
    assert rows[only_up].mean() + 5 < rows[only_down].mean()  # row 0 is the top of the image


def test_metaworld_frame_stack_is_zero_filled_at_reset(close_after):
    metaworld_env_dict()
    env = cheap_rendering(metaworld.MetaWorldEnv("mw_reach", image_size=SIZE, frame_stack=3))
    close_after(env)
    assert env.observation_space.shape == (SIZE, SIZE, 9) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 9) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert not obs[..., :6].any()
    np.testing.assert_array_equal(obs[..., 6:], env.render())
    reset_frame, previous = obs[..., 6:], obs
    for step in (1, 2):
        obs, *_ = env.step(np.array([0.0, 1.0, 1.0, 0.0], np.float32))
        np.testing.assert_array_equal(obs[..., 6:], env.render())  # newest last
        np.testing.assert_array_equal(obs[..., :6], previous[..., 3:])  # older frames shift left
        assert obs[..., :3].any() == (step == 2)  # one zero frame left after step 1, none after 2
        previous = obs
    np.testing.assert_array_equal(obs[..., :3], reset_frame)
    assert not np.array_equal(obs[..., 3:6], obs[..., 6:])  # the arm moved

    repeat_fill = cheap_rendering(metaworld.MetaWorldEnv("mw_reach", image_size=SIZE, zero_fill_stack=False))
    close_after(repeat_fill)
    obs, _ = repeat_fill.reset(seed=0)
    for k in range(3):
        np.testing.assert_array_equal(obs[..., 3 * k:3 * k + 3], repeat_fill.render())
    assert repeat_fill.render(40).shape == (40, 40, 3)


# ================================================================ Adroit


def test_adroit_reward_scale_repeat_and_rules_match_raw_env(close_after):
    """Our rewards = DrM's v0 rewards x scale, summed over the repeat; v0 = v1 - 0.2 d for door and
    hammer (v1 flipped the sign of the 0.1 * hand-to-object distance term), v0 = v1 for pen."""
    metaworld_env_dict()
    hand = adroit_hand()
    cases = {
        "adroit_door": (hand.AdroitHandDoorEnv, 1 / 20, ("S_grasp", "S_handle", "site")),
        "adroit_hammer": (hand.AdroitHandHammerEnv, 1 / 100, ("S_grasp", "Object", "body")),
        "adroit_pen": (hand.AdroitHandPenEnv, 1 / 50, None),
    }
    for task, (raw_class, scale, hand_to_object) in cases.items():
        seed, repeat = 2, 2
        env = adroit.AdroitEnv(task, obs_type="states", seed=seed, action_repeat=repeat)
        raw = raw_class(reward_type="dense")
        close_after(env)
        close_after(raw)
        obs, info = env.reset()
        raw_obs, _ = raw.reset(seed=seed)
        np.testing.assert_array_equal(obs, raw_obs.astype(np.float32))
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(8):
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            expected = 0.0
            for _ in range(repeat):
                raw_obs, raw_reward, *_ = raw.step(action.astype(np.float64))
                correction = 0.0
                if hand_to_object is not None:
                    a, b, kind = hand_to_object
                    b_pos = raw.data.body(b).xpos if kind == "body" else raw.data.site(b).xpos
                    correction = -0.2 * np.linalg.norm(raw.data.site(a).xpos - b_pos)
                expected += raw_reward + correction
            obs, reward, terminated, truncated, info = env.step(action)
            assert reward == pytest.approx(expected * scale, rel=1e-9, abs=1e-12), task
            np.testing.assert_array_equal(obs, raw_obs.astype(np.float32))
            assert not terminated and not truncated and info["frames"] == repeat
            rewards.append(reward)
        assert np.ptp(rewards) > 0, task


def test_adroit_goal_rules_differ_from_v1_as_drm_defines_them(close_after):
    import mujoco

    adroit_hand()
    # Door: DrM's goal is a hinge angle > 1.4 (v1: >= 1.35); the bonuses are 2 + 8 + 10.
    door = adroit.AdroitEnv("adroit_door", obs_type="states")
    close_after(door)
    door.reset(seed=0)
    raw = door._env
    hinge = raw.model.joint("door_hinge").qposadr[0]
    for angle, goal in ((1.38, False), (1.45, True)):
        qpos = raw.data.qpos.copy()
        qpos[hinge] = angle
        raw.set_state(qpos, np.zeros_like(raw.data.qvel))
        reward, achieved, terminal = adroit.door_rules(door._scene)
        palm_to_handle = np.linalg.norm(raw.data.site("S_grasp").xpos - raw.data.site("S_handle").xpos)
        assert reward == pytest.approx(-0.1 * palm_to_handle - 0.1 * (angle - 1.57) ** 2 + 20.0)
        assert achieved == goal and terminal is False
        assert raw.step(np.zeros(28))[4]["success"]  # v1 counts both angles as success

    # Pen: DrM's goal is the orientation alone (v1 also wants the pen within 0.075 of the target).
    pen = adroit.AdroitEnv("adroit_pen", obs_type="states")
    close_after(pen)
    pen.reset(seed=0)
    raw = pen._env
    raw.model.body("target").quat[:] = raw.data.body("Object").xquat  # target = pen orientation
    qpos = raw.data.qpos.copy()
    qpos[raw.model.joint("OBJTy").qposadr[0]] += 0.2  # 20 cm sideways (OBJTy slides along world y)
    raw.set_state(qpos, raw.data.qvel.copy())
    reward, achieved, terminal = adroit.pen_rules(pen._scene)
    assert achieved and not terminal and reward == pytest.approx(-0.2 + 1.0, abs=1e-6)
    assert not raw.step(np.zeros(24))[4]["success"]

    # Pen dropped below 7.5 cm: the episode terminates (discount 0) within the repeat, reward - 5.
    pen.reset(seed=0)
    qpos = raw.data.qpos.copy()
    assert raw.model.joint("OBJTx").id == mujoco.mj_name2id(raw.model, mujoco.mjtObj.mjOBJ_JOINT, "OBJTx")
    qpos[raw.model.joint("OBJTx").qposadr[0]] += 0.2  # OBJTx slides along world -z: 25 cm -> 5 cm
    raw.set_state(qpos, raw.data.qvel.copy())
    obs, reward, terminated, truncated, info = pen.step(np.zeros(24, np.float32))
    assert terminated and not truncated and info["discount"] == 0.0 and info["frames"] == 1
    assert reward * 50 < -4.0
    with pytest.raises(RuntimeError):
        pen.step(np.zeros(24, np.float32))


def test_adroit_episode_success_needs_more_than_25_goal_frames(close_after):
    adroit_hand()
    for repeat, first_success_step in ((2, 13), (1, 26)):  # 26 goal frames after 13 / 26 steps
        env = adroit.AdroitEnv("adroit_door", obs_type="states", action_repeat=repeat)
        close_after(env)
        env.reset(seed=0)
        raw = env._env
        qpos = raw.data.qpos.copy()
        qpos[raw.model.joint("door_hinge").qposadr[0]] = 1.5  # door held open (nothing pushes it back)
        raw.set_state(qpos, raw.data.qvel.copy())
        for step in range(1, first_success_step + 3):
            _, _, _, _, info = env.step(np.zeros(28, np.float32))
            assert info["goal_achieved_frames"] == repeat and info["success"] == 1.0
            assert info["episode_success"] == float(step >= first_success_step), (repeat, step)
        env.reset()
        assert env.step(np.zeros(28, np.float32))[4]["episode_success"] == 0.0


def test_adroit_time_limits(close_after):
    adroit_hand()
    for task, repeat, steps, last_frames in (
        ("adroit_door", 2, 100, 2),
        ("adroit_hammer", 3, 67, 2),  # 200 frames = 66 x 3 + 2
    ):
        env = adroit.AdroitEnv(task, obs_type="states", action_repeat=repeat)
        close_after(env)
        assert env.max_episode_steps == steps
        env.reset(seed=0)
        action = np.zeros(env.action_space.shape, np.float32)
        for step in range(1, steps + 1):
            _, _, terminated, truncated, info = env.step(action)
            assert not terminated and truncated == (step == steps), (task, step)
        assert info["frames"] == last_frames and info["discount"] == 1.0
        with pytest.raises(RuntimeError):
            env.step(action)
    pen = adroit.AdroitEnv("adroit_pen", obs_type="states")
    close_after(pen)
    assert pen.max_episode_steps == 50 and pen.episode_frames == 100


def test_adroit_proprio_is_drm_observation_sensor(close_after):
    adroit_hand()
    # DrM's slices of qpos: door [4:-2], hammer [2:-7], pen [:-6].
    slices = {"adroit_door": slice(4, -2), "adroit_hammer": slice(2, -7), "adroit_pen": slice(None, -6)}
    for task, hand_slice in slices.items():
        env = adroit.AdroitEnv(task, obs_type="states")
        close_after(env)
        _, info = env.reset(seed=0)
        assert info["proprio"].shape == (24,) == env.proprio_space.shape
        assert info["proprio"].dtype == np.float32
        for _ in range(2):
            action = np.random.default_rng(1).uniform(-1, 1, env.action_space.shape).astype(np.float32)
            _, _, _, _, info = env.step(action)
            np.testing.assert_array_equal(info["proprio"], env._env.data.qpos[hand_slice].astype(np.float32))
        assert np.ptp(info["proprio"]) > 0


def test_adroit_reset_seed_is_deterministic(close_after):
    adroit_hand()
    a = adroit.AdroitEnv("adroit_door", obs_type="states", seed=0)
    b = adroit.AdroitEnv("adroit_door", obs_type="states", seed=7)
    fresh = adroit.AdroitEnv("adroit_door", obs_type="states", seed=3)
    for env in (a, b, fresh):
        close_after(env)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 28)).astype(np.float32)

    obs_a, rewards_a = rollout(a, actions, 3)
    obs_b, rewards_b = rollout(b, actions, 3)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    np.testing.assert_array_equal(fresh.reset()[0], obs_a[0])
    assert not np.array_equal(rollout(a, actions, 4)[0][0], obs_a[0])  # the door is placed elsewhere


def test_adroit_pixels_cameras_and_upright_image(close_after):
    adroit_hand()
    pen = cheap_rendering(adroit.AdroitEnv("adroit_pen", image_size=SIZE))
    close_after(pen)
    assert pen.frame_stack == 1 and pen.camera == "vil_camera"
    obs, info = pen.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 3) and obs.dtype == np.uint8 and pen.observation_space.contains(obs)
    # vil_camera looks down at 45 degrees: black background above the table at the top of an
    # upright image, the white marble table at the bottom.
    brightness = obs.astype(float).mean(axis=(1, 2))
    assert brightness[: SIZE // 4].mean() + 60 < brightness[-SIZE // 4:].mean()
    camera = pen._env.data.cam_xmat[pen._camera_id].reshape(3, 3)
    np.testing.assert_allclose(pen._env.data.cam_xpos[pen._camera_id], [0.0, -0.8, 0.8], atol=1e-6)
    assert camera[2, 1] > 0.5  # image-up points up in the world

    flipped = cheap_rendering(adroit.AdroitEnv("adroit_pen", image_size=SIZE, flip_vertical=True))
    close_after(flipped)
    np.testing.assert_array_equal(flipped.reset(seed=0)[0], obs[::-1])

    # DrM's `top` cameras: straight down from (0, 0, 1.5) (door) / (0, 0, 1.1) (hammer), turned
    # 3.14 rad about z, so image-right is world -x and image-up world -y.
    for task, height in (("adroit_door", 1.5), ("adroit_hammer", 1.1)):
        env = cheap_rendering(adroit.AdroitEnv(task, image_size=SIZE, frame_stack=2))
        close_after(env)
        obs, _ = env.reset(seed=0)
        assert env.camera == "top" and obs.shape == (SIZE, SIZE, 6)
        np.testing.assert_array_equal(obs[..., :3], obs[..., 3:])  # the first frame fills the stack
        data = env._env.data
        np.testing.assert_allclose(data.cam_xpos[env._camera_id], [0.0, 0.0, height], atol=1e-9)
        c, s = np.cos(3.14), np.sin(3.14)
        np.testing.assert_allclose(
            data.cam_xmat[env._camera_id].reshape(3, 3), [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-6
        )
        obs, *_ = env.step(np.ones(env.action_space.shape, np.float32))
        assert not np.array_equal(obs[..., :3], obs[..., 3:])  # the hand moved
    assert env.render(48).shape == (48, 48, 3)


def test_vector_env_aggregates_success_and_proprio():
    adroit_hand()
    venv = envs.make_vector("adroit_door", [0, 1], asynchronous=False, obs_type="states")
    try:
        obs, info = venv.reset(seed=[0, 1])
        assert obs.shape == (2, 39) and info["proprio"].shape == (2, 24)
        obs, rewards, terminated, truncated, info = venv.step(np.zeros((2, 28), np.float32))
        assert info["proprio"].shape == (2, 24) and info["episode_success"].shape == (2,)
        assert rewards.shape == (2,) and rewards[0] != rewards[1]
    finally:
        venv.close()
