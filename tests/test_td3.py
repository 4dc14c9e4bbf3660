"""Tests of the gymnasium MuJoCo environments (envs/gym_mujoco.py) and the TD3 agent (agents/td3.py).

Environment references are raw gymnasium environments driven by hand; agent references are values
computed by hand or by a numpy forward pass of the networks, never the code under test.
"""

import math

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import td3
from core import launch
from envs import gym_mujoco

REQUIRED_TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5", "Swimmer-v5",
                  "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5", "Pusher-v5")


def raw_env(task: str, seed: int):
    """gymnasium's own environment (with its TimeLimit), reset with `seed`: the reference."""
    env = gym.make(task)
    obs, _ = env.reset(seed=seed)
    return env, obs


# ================================================================ environment


def test_registry_names_and_domains():
    for task in REQUIRED_TASKS:
        assert task in envs.TASKS and envs.suite_of(task) == "gym"
    assert envs.domain_of("HalfCheetah-v5") == "halfcheetah"
    assert envs.domain_of("InvertedDoublePendulum-v5") == "inverteddoublependulum"
    assert envs.domain_of("Walker2d-v5") == "walker2d"
    with pytest.raises(ValueError) as error:
        gym_mujoco.GymMujocoEnv("HalfCheetah-v4")
    assert "HalfCheetah-v4" in str(error.value) and "HalfCheetah-v5" in str(error.value)


def test_pixels_are_refused_with_the_valid_obs_type():
    with pytest.raises(ValueError) as error:
        envs.make("Hopper-v5", obs_type="pixels")
    assert "'pixels'" in str(error.value) and "states" in str(error.value)
    with pytest.raises(ValueError, match="action_repeat"):
        envs.make("Hopper-v5", action_repeat=0)


def test_spaces_bounds_and_limits():
    env = envs.make("HalfCheetah-v5")
    assert env.observation_space.shape == (17,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.max_episode_steps == 1000 and env.stack_padding == "repeat" and env.frame_channels == 3
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (17,)
    env.close()
    # The tasks whose own bounds are not [-1, 1]; the agent still sees [-1, 1].
    for task, bound in (("InvertedPendulum-v5", 3.0), ("Humanoid-v5", 0.4), ("Pusher-v5", 2.0)):
        env = envs.make(task)
        assert np.allclose(env.action_high, bound) and np.allclose(env.action_low, -bound)
        assert np.all(env.action_space.high == 1.0)
        env.close()
    # Registered limits: 1000 steps, Reacher 50, Pusher 100; in agent steps with an action repeat.
    assert envs.make("Reacher-v5").max_episode_steps == 50
    assert envs.make("Pusher-v5").max_episode_steps == 100
    assert envs.make("Hopper-v5", action_repeat=3).max_episode_steps == math.ceil(1000 / 3)


def test_actions_rescaled_to_the_task_bounds():
    # InvertedPendulum's bounds are +-3: agent action a reaches the task as 3a.
    env = envs.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=5)
    reference, ref_obs = raw_env("InvertedPendulum-v5", 5)
    np.testing.assert_array_equal(obs, ref_obs.astype(np.float32))
    for a in (0.5, -0.25, 1.0):
        obs, reward, *_ = env.step(np.array([a], np.float32))
        ref_obs, ref_reward, *_ = reference.step(np.array([3.0 * a], np.float32))
        np.testing.assert_allclose(obs, ref_obs.astype(np.float32), rtol=1e-6, atol=1e-6)
        assert reward == ref_reward
    # normalize_actions=False: the task's own bounds, actions passed through.
    native = envs.make("InvertedPendulum-v5", normalize_actions=False)
    assert np.all(native.action_space.high == 3.0)
    np.testing.assert_array_equal(native.task_action(np.array([1.5], np.float32)), [1.5])
    # Unit bounds: the very same action (bit for bit) reaches MuJoCo.
    cheetah = envs.make("HalfCheetah-v5")
    action = np.array([0.3, -0.7, 0.11, 1.0, -1.0, 0.0], np.float32)
    np.testing.assert_array_equal(cheetah.task_action(action), action)
    for e in (env, reference, native, cheetah):
        e.close()


def test_truncation_at_the_limit_without_termination():
    env = envs.make("HalfCheetah-v5", max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(6, np.float32))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.reset()
        env.step(np.zeros(5, np.float32))
    env.close()


def test_hopper_terminates_when_it_falls_as_gymnasium_does():
    env = envs.make("Hopper-v5")
    env.reset(seed=3)
    reference, _ = raw_env("Hopper-v5", 3)
    action = np.array([1.0, -1.0, 1.0], np.float32)
    for t in range(1, 1000):
        obs, reward, terminated, truncated, info = env.step(action)
        ref_obs, ref_reward, ref_terminated, ref_truncated, _ = reference.step(action)
        np.testing.assert_array_equal(obs, ref_obs.astype(np.float32))
        assert (reward, terminated, truncated) == (ref_reward, ref_terminated, ref_truncated)
        if terminated:
            break
    assert terminated and not truncated and t < 200, "a hopper pushed one way falls early"
    assert info["discount"] == 0.0 and not reference.unwrapped.is_healthy
    env.close()
    reference.close()


def test_action_repeat_sums_rewards():
    env = envs.make("HalfCheetah-v5", action_repeat=2)
    env.reset(seed=1)
    reference, _ = raw_env("HalfCheetah-v5", 1)
    action = np.full(6, 0.5, np.float32)
    obs, reward, _, _, info = env.step(action)
    rewards = [reference.step(action)[1] for _ in range(2)]
    assert info["frames"] == 2 and reward == pytest.approx(sum(rewards), abs=1e-12)
    env.close()
    reference.close()


def test_seeds_reproduce_episodes():
    def first_obs(env, **kwargs):
        obs, _ = env.reset(**kwargs)
        return obs

    a, b = envs.make("Walker2d-v5", seed=7), envs.make("Walker2d-v5", seed=7)
    obs_a, obs_b = first_obs(a), first_obs(b)
    np.testing.assert_array_equal(obs_a, obs_b)
    # The construction seed is the first episode's seed; reset(seed=) re-seeds.
    np.testing.assert_array_equal(obs_a, raw_env("Walker2d-v5", 7)[1].astype(np.float32))
    np.testing.assert_array_equal(first_obs(a, seed=11), raw_env("Walker2d-v5", 11)[1].astype(np.float32))
    assert not np.array_equal(first_obs(b), obs_a)  # an unseeded reset continues the generator
    assert not np.array_equal(first_obs(a, seed=12), first_obs(b, seed=13))


def test_render_sizes():
    env = envs.make("Hopper-v5", image_size=32)
    env.reset(seed=0)
    small, large, again = env.render(), env.render(48), env.render(32)
    assert small.shape == (32, 32, 3) and large.shape == (48, 48, 3) and small.dtype == np.uint8
    assert small.std() > 0 and large.std() > 0
    np.testing.assert_array_equal(small, again)
    env.close()


def test_vector_env_with_reset_mask():
    venv = envs.make_vector("Hopper-v5", [0, 1], asynchronous=False)
    obs, _ = venv.reset(seed=[0, 1])
    obs2, *_ = venv.step(np.zeros((2, 3), np.float32))
    new, _ = venv.reset(seed=[5, 6], options={"reset_mask": np.array([True, False])})
    np.testing.assert_array_equal(new[0], raw_env("Hopper-v5", 5)[1].astype(np.float32))
    np.testing.assert_array_equal(new[1], obs2[1])
    venv.close()


# ================================================================ TD3: pure pieces


CONFIG = td3.Config()


def test_target_policy_smoothing_by_hand():
    next_action = jnp.array([[0.9, -0.2, 0.0]])
    eps = jnp.array([[1.0, -5.0, 3.0]])
    # noise 0.2 * eps = [0.2, -1.0, 0.6] clipped to +-0.5 -> [0.2, -0.5, 0.5]; sum clipped to +-1.
    for fn in (td3.smoothed_target_action, jax.jit(td3.smoothed_target_action, static_argnums=2)):
        np.testing.assert_allclose(fn(next_action, eps, CONFIG), [[1.0, -0.7, 0.5]], atol=1e-6)
    # Scaled by max_action = 2: noise 0.4 * eps clipped to +-1.0; sum clipped to +-2.
    config = td3.Config(max_action=2.0)
    np.testing.assert_allclose(td3.smoothed_target_action(jnp.array([[1.9, -0.2, 0.0]]), eps, config),
                               [[2.0, -1.2, 1.0]], atol=1e-6)


def test_critic_target_min_of_twins_and_terminal_mask():
    reward = jnp.array([1.0, 2.0, 3.0])
    discount = jnp.array([0.99, 0.0, 0.99])  # the replay's gamma * (1 - terminated); 2nd terminated
    q1, q2 = jnp.array([10.0, 5.0, -1.0]), jnp.array([8.0, 7.0, -2.0])
    expected = [1 + 0.99 * 8, 2.0, 3 + 0.99 * -2]
    for fn in (td3.critic_target, jax.jit(td3.critic_target)):
        np.testing.assert_allclose(fn(reward, discount, q1, q2), expected, rtol=1e-6)


def test_critic_and_actor_losses_by_hand():
    q1, q2, y = jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]), jnp.array([1.0, 1.0])
    # mean(0^2, 1^2) + mean(1^2, 3^2) = 0.5 + 5
    assert float(td3.critic_loss(q1, q2, y)) == pytest.approx(5.5)
    assert float(jax.jit(td3.critic_loss)(q1, q2, y)) == pytest.approx(5.5)
    assert float(td3.actor_loss(jnp.array([1.0, 3.0]))) == pytest.approx(-2.0)


def numpy_mlp(params: dict, x: np.ndarray, prefix: str = "") -> np.ndarray:
    """Linear-ReLU-Linear-ReLU-Linear in numpy from flax params."""
    p = params["params"]
    for i, name in enumerate(("l1", "l2", "l3")):
        layer = p[prefix + name]
        x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        if i < 2:
            x = np.maximum(x, 0.0)
    return x


def small_state(obs_dim=3, action_dim=2, hidden_dim_override=16, **overrides):
    config = td3.Config(hidden_dim=hidden_dim_override, **overrides)
    return td3.create(jax.random.PRNGKey(0), (obs_dim,), action_dim, config)


def random_batch(key, batch=8, obs_dim=3, action_dim=2):
    k = jax.random.split(key, 5)
    return {"obs": jax.random.normal(k[0], (batch, obs_dim)),
            "action": jax.random.uniform(k[1], (batch, action_dim), minval=-1, maxval=1),
            "reward": jax.random.normal(k[2], (batch,)),
            "discount": jnp.where(jax.random.uniform(k[3], (batch,)) < 0.3, 0.0, 0.99),
            "next_obs": jax.random.normal(k[4], (batch, obs_dim))}


def test_target_values_use_the_target_networks_against_numpy():
    state = small_state()
    # Targets that differ from the online networks, so using the wrong ones would show.
    state = state.replace(actor_target_params=jax.tree.map(lambda p: 1.5 * p, state.actor_params),
                          critic_target_params=jax.tree.map(lambda p: -0.7 * p, state.critic_params))
    batch, key = random_batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    got = td3.target_values(state, batch, key)

    next_obs = np.asarray(batch["next_obs"], np.float64)
    mu = np.tanh(numpy_mlp(state.actor_target_params, next_obs))
    eps = np.asarray(jax.random.normal(key, mu.shape), np.float64)  # the function's own draw
    next_action = np.clip(mu + np.clip(0.2 * eps, -0.5, 0.5), -1, 1)
    sa = np.concatenate([next_obs, next_action], axis=1)
    q1 = numpy_mlp(state.critic_target_params, sa, "q1_")[:, 0]
    q2 = numpy_mlp(state.critic_target_params, sa, "q2_")[:, 0]
    expected = np.asarray(batch["reward"]) + np.asarray(batch["discount"]) * np.minimum(q1, q2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_pytorch_linear_initialization():
    state = td3.create(jax.random.PRNGKey(0), (17,), 6, td3.Config())
    for params, name, fan_in in ((state.actor_params, "l1", 17), (state.actor_params, "l2", 256),
                                 (state.critic_params, "q2_l1", 23)):
        layer = params["params"][name]
        bound = 1 / math.sqrt(fan_in)
        for values in (np.asarray(layer["kernel"]), np.asarray(layer["bias"])):
            assert np.abs(values).max() <= bound
        assert np.asarray(layer["kernel"]).std() == pytest.approx(bound / math.sqrt(3), rel=0.05)


# ================================================================ TD3: update and act


def tree_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_close(a, b) -> bool:
    return all(np.allclose(x, y, rtol=1e-6, atol=1e-7) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("delay", [2, 3])
def test_policy_delay_and_soft_target_update(delay):
    state = small_state(policy_delay=delay, tau=0.25)
    batch = random_batch(jax.random.PRNGKey(3))
    for n in range(1, 2 * delay + 1):
        before = state
        state, metrics = td3.update(state, batch, 12345, jax.random.PRNGKey(n))
        assert int(state.num_updates) == n
        assert not tree_equal(state.critic_params, before.critic_params)  # the critic steps every update
        actor_turn = n % delay == 0  # the official total_it % policy_freq == 0: updates delay, 2*delay
        assert float(metrics["actor_updated"]) == float(actor_turn)
        if actor_turn:
            assert not tree_equal(state.actor_params, before.actor_params)
            # target <- tau * (online after this update) + (1 - tau) * target
            expected_critic = jax.tree.map(lambda o, t: 0.25 * o + 0.75 * t, state.critic_params,
                                           before.critic_target_params)
            expected_actor = jax.tree.map(lambda o, t: 0.25 * o + 0.75 * t, state.actor_params,
                                          before.actor_target_params)
            assert tree_close(state.critic_target_params, expected_critic)
            assert tree_close(state.actor_target_params, expected_actor)
        else:
            assert tree_equal(state.actor_params, before.actor_params)
            assert tree_equal(state.actor_opt_state, before.actor_opt_state)
            assert tree_equal(state.critic_target_params, before.critic_target_params)
            assert tree_equal(state.actor_target_params, before.actor_target_params)


def test_actor_step_descends_minus_q1():
    state = small_state()
    batch = random_batch(jax.random.PRNGKey(4), batch=32)
    state, _ = td3.update(state, batch, 0, jax.random.PRNGKey(0))  # update 1: critic only
    after_critic, _ = td3.update_critic(state, batch, td3.target_values(state, batch, jax.random.PRNGKey(1)))
    stepped, loss = td3.update_actor(after_critic, batch["obs"])
    # The loss is -mean Q1(s, pi(s)) (numpy forward), and one small Adam step lowers it.
    obs = np.asarray(batch["obs"], np.float64)
    action = np.tanh(numpy_mlp(after_critic.actor_params, obs))
    q1 = numpy_mlp(after_critic.critic_params, np.concatenate([obs, action], axis=1), "q1_")[:, 0]
    assert float(loss) == pytest.approx(-q1.mean(), rel=1e-4, abs=1e-6)
    assert float(td3.actor_loss_of(stepped, stepped.actor_params, batch["obs"])) < float(loss)


def test_one_update_lowers_the_critic_loss_on_its_batch():
    state = small_state()
    batch, key = random_batch(jax.random.PRNGKey(5), batch=64), jax.random.PRNGKey(6)
    target = td3.target_values(state, batch, key)  # the target the update regresses on (same key)
    critic = td3.networks(state.config, state.action_dim).critic

    def loss(params):
        return float(td3.critic_loss(*critic.apply(params, batch["obs"], batch["action"]), target))

    new_state, metrics = td3.update(state, batch, 0, key)
    assert float(metrics["critic_loss"]) == pytest.approx(loss(state.critic_params), rel=1e-5)
    assert loss(new_state.critic_params) < loss(state.critic_params)


def test_updates_fit_the_critic_to_a_fixed_batch():
    state = small_state(obs_dim=4, hidden_dim_override=64, critic_lr=1e-3)
    batch = random_batch(jax.random.PRNGKey(5), batch=64, obs_dim=4)
    losses = []
    for n in range(200):
        state, metrics = td3.update(state, batch, 0, jax.random.PRNGKey(n))
        losses.append(float(metrics["critic_loss"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:3])  # measured: 1.75 -> 0.04


def test_act_random_before_start_then_noisy_and_deterministic_in_eval():
    config = td3.Config(hidden_dim=16, num_seed_frames=100, max_action=1.0)
    state = td3.create(jax.random.PRNGKey(0), (3,), 2, config)
    obs = jnp.tile(jnp.array([[0.3, -0.1, 0.8]]), (4000, 1))
    mu = np.asarray(td3.act(state, obs, 0, jax.random.PRNGKey(0), eval_mode=True))
    np.testing.assert_allclose(mu, np.tanh(numpy_mlp(state.actor_params, np.asarray(obs, np.float64))), atol=1e-5)
    # Eval: the same action for any key and step.
    np.testing.assert_array_equal(mu, td3.act(state, obs, 10**6, jax.random.PRNGKey(9), eval_mode=True))
    # Before num_seed_frames: uniform on [-1, 1] (mean 0, std 1/sqrt(3)), whatever the policy says.
    random = np.asarray(td3.act(state, obs, 99, jax.random.PRNGKey(1), eval_mode=False))
    assert np.abs(random).max() <= 1.0
    assert abs(random.mean()) < 0.03 and random.std() == pytest.approx(1 / math.sqrt(3), rel=0.05)
    # From num_seed_frames on: pi(s) + N(0, 0.1^2), clipped.
    noisy = np.asarray(td3.act(state, obs, 100, jax.random.PRNGKey(1), eval_mode=False))
    assert (noisy - mu).std() == pytest.approx(0.1, rel=0.05) and abs((noisy - mu).mean()) < 0.01
    # Clipped to +-max_action when the noise pushes past it.
    loud = td3.create(jax.random.PRNGKey(0), (3,), 2, td3.Config(hidden_dim=16, exploration_noise=5.0))
    assert np.abs(np.asarray(td3.act(loud, obs, 10**6, jax.random.PRNGKey(2), eval_mode=False))).max() <= 1.0


# ================================================================ configuration and launcher


def test_config_tiers_and_overrides():
    assert td3.config_for_task("HalfCheetah-v5").num_seed_frames == 25_000
    assert td3.config_for_task("InvertedPendulum-v5").num_seed_frames == 1_000
    assert td3.config_for_task("Reacher-v5", num_seed_frames=7).num_seed_frames == 7
    c = td3.Config()
    assert (c.batch_size, c.discount, c.tau, c.policy_noise, c.noise_clip, c.policy_delay, c.exploration_noise,
            c.actor_lr, c.critic_lr, c.replay_capacity, c.eval_every_frames, c.num_train_frames) == (
        256, 0.99, 0.005, 0.2, 0.5, 2, 0.1, 3e-4, 3e-4, 1_000_000, 5_000, 1_000_000)
    assert {task for tier in td3.TIERS.values() for task in tier["tasks"]} == set(gym_mujoco.TASKS)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="obs_type.*states"):
        td3.config_for_task("Hopper-v5", obs_type="pixels")
    with pytest.raises(ValueError, match="policy_delay=0"):
        td3.Config(policy_delay=0)
    with pytest.raises(ValueError, match="actor_lr must be a float"):
        td3.Config(actor_lr="3e-4")
    with pytest.raises(ValueError, match="unknown task 'cheetah_run'"):
        td3.config_for_task("cheetah_run")
    with pytest.raises(ValueError, match="unknown Config field.*'lr'"):
        td3.config_for_task("Hopper-v5", lr=1e-3)
    with pytest.raises(ValueError, match="obs_shape"):
        td3.create(jax.random.PRNGKey(0), (3, 4), 2, td3.Config())


def test_launcher_resolves_the_official_loop_settings():
    config = launch.base_config(td3.Config, td3.DEFAULT_TASK)
    config.obs = "states"
    agent_config, loop = launch.resolve(td3, config)
    assert loop.task == "HalfCheetah-v5" and loop.obs_type == "states"
    assert (loop.action_repeat, loop.frame_stack, loop.nstep, loop.update_every_steps) == (1, 1, 1, 1)
    assert (loop.num_seed_frames, loop.eval_every_frames, loop.num_eval_episodes) == (25_000, 5_000, 10)
    config.obs = "pixels"
    with pytest.raises(ValueError, match="states"):
        launch.resolve(td3, config)


def test_a_tiny_run_end_to_end(tmp_path):
    config = launch.base_config(td3.Config, "InvertedPendulum-v5")
    config.obs, config.root, config.progress, config.save_video = "states", str(tmp_path), False, False
    config.agent.num_train_frames, config.agent.num_seed_frames = 120, 50
    config.agent.eval_every_frames, config.agent.num_eval_episodes = 100, 1
    config.agent.batch_size, config.agent.hidden_dim = 16, 16
    summary = launch.run(td3, "td3", config)
    assert summary["step"] == 120 and np.isfinite(summary["last_eval"])
