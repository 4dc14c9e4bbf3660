"""TD3+BC and PRDC: losses and targets against hand values, the update's schedule, normalization, the
dataset-constraint BC target, configs (spec §4, §5, §6.1, §10 #18-25, §11)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import prdc, td3bc

SMALL = dict(batch_size=16, hidden_dims=(16, 16))


def random_dataset(seed=0, num=64, obs_dim=3, action_dim=2):
    rng = np.random.default_rng(seed)
    obs = rng.normal(loc=2.0, scale=3.0, size=(num, obs_dim))
    actions = rng.uniform(-1, 1, size=(num, action_dim))
    rewards = np.sin(obs[:, 0]) + actions[:, 0]
    next_obs = obs + 0.1 * rng.normal(size=obs.shape)
    terminals = (rng.uniform(size=num) < 0.1).astype(np.float32)
    return obs, actions, rewards, next_obs, terminals


def fresh_agent(config, seed=0, **dataset_kwargs):
    obs, actions, rewards, next_obs, terminals = random_dataset(**dataset_kwargs)
    arrays, mean, std = td3bc.dataset_arrays(obs, actions, rewards, next_obs, terminals, config)
    state = td3bc.create(jax.random.key(seed), obs.shape[1], actions.shape[1], config, mean, std)
    return state, arrays


def tree_equal(a, b) -> bool:
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# ------------------------------------------------------------------------------- TD3+BC pieces


@pytest.mark.parametrize("jit", [False, True])
def test_critic_target_uses_per_sample_discount_and_terminal(jit):
    fn = jax.jit(td3bc.critic_target) if jit else td3bc.critic_target
    target = fn(jnp.array([1.0, 2.0, 0.5]), jnp.array([0.9, 0.5, 0.9]), jnp.array([0.0, 0.0, 1.0]),
                jnp.array([10.0, 4.0, 7.0]), jnp.array([8.0, 6.0, 3.0]))
    # min Q' = [8, 4, 3]: 1 + 0.9*8, 2 + 0.5*4, 0.5 + 0 (terminal).
    np.testing.assert_allclose(target, [8.2, 4.0, 0.5], rtol=1e-6)


def test_critic_target_rejects_a_broadcasting_shape():
    with pytest.raises(ValueError, match="discount must have the reward's shape"):
        td3bc.critic_target(jnp.zeros(4), jnp.zeros((4, 1)), jnp.zeros(4), jnp.zeros(4), jnp.zeros(4))


def test_critic_loss_hand_value():
    loss = td3bc.critic_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(loss, 1.0 + 0.5)  # mean([1, 1]) + mean([0, 1])


@pytest.mark.parametrize("jit", [False, True])
def test_bc_lambda_times_mean_abs_q_is_alpha(jit):
    q = jnp.array([-2.0, 4.0, 0.5, -7.25])
    lam = (jax.jit(td3bc.bc_lambda) if jit else td3bc.bc_lambda)(q, 2.5)
    np.testing.assert_allclose(lam, 2.5 / 3.4375, rtol=1e-6)
    np.testing.assert_allclose(lam * jnp.mean(jnp.abs(q)), 2.5, rtol=1e-6)
    np.testing.assert_array_equal(jax.grad(lambda q: td3bc.bc_lambda(q, 2.5))(q), 0.0)  # stop-gradient


def test_actor_loss_mse_is_mean_over_batch_and_action_dims():
    q = jnp.array([1.0, 3.0])
    pi = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    target = jnp.array([[1.0, 0.0], [1.0, -1.0]])
    # -0.5 * mean(q) + mean([1, 0, 0, 4]) = -1 + 1.25 (a sum over action dims would give 1.5).
    np.testing.assert_allclose(td3bc.actor_loss(q, pi, target, 0.5), 0.25)


def test_actor_loss_gradient_through_q_is_not_zero_when_all_q_positive():
    # Spec §10 #24: with lambda detached, -lambda*mean(Q) keeps dL/dQ_i = -lambda/B; had lambda kept its
    # gradient, lambda*mean(Q) = alpha for positive Q and the Q term would be constant.
    q = jnp.array([1.0, 3.0])
    pi = jnp.zeros((2, 2))

    def loss(q):
        return td3bc.actor_loss(q, pi, pi, td3bc.bc_lambda(q, 2.5))

    np.testing.assert_allclose(jax.grad(loss)(q), [-2.5 / 2 / 2, -2.5 / 2 / 2], rtol=1e-6)


def test_actor_update_gradient_reaches_the_actor_through_the_critic():
    state, arrays = fresh_agent(td3bc.Config(**SMALL))
    obs = arrays["obs"][:8]

    def loss(actor_params):
        pi = td3bc.policy(state, actor_params, obs)
        q, _ = td3bc.q_values(state, state.critic_params, obs, pi)
        # BC target = pi itself (constant): the BC term has zero gradient, only Q's is left.
        return td3bc.actor_loss(q, pi, jax.lax.stop_gradient(pi), td3bc.bc_lambda(q, 2.5))

    grads = jax.grad(loss)(state.actor_params)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)) > 0


# ------------------------------------------------------------------------------- TD3+BC update


def test_update_critic_target_uses_batch_discount():
    state, arrays = fresh_agent(td3bc.Config(**SMALL))
    batch = {name: values[:8] for name, values in arrays.items()}
    key = jax.random.key(3)
    next_action = td3bc.target_policy_action(state, batch["next_obs"], key)
    min_q = jnp.minimum(*td3bc.q_values(state, state.critic_target_params, batch["next_obs"], next_action))
    discounts = jnp.array([0.0, 0.2, 0.5, 0.9, 0.99, 1.0, 0.3, 0.0])
    batch = {**batch, "discount": discounts}
    _, metrics = td3bc.update_critic(state, batch, key)
    expected = np.mean(np.asarray(batch["reward"]) + np.asarray(discounts) * (1 - np.asarray(batch["terminal"]))
                       * np.asarray(min_q))
    np.testing.assert_allclose(metrics["target_q"], expected, rtol=1e-5)
    _, uniform = td3bc.update_critic(state, {**batch, "discount": jnp.full(8, 0.99)}, key)
    assert abs(float(uniform["target_q"]) - float(metrics["target_q"])) > 1e-4


def test_policy_delay_actor_and_targets_move_every_second_update():
    state, arrays = fresh_agent(td3bc.Config(**SMALL))
    batch = {name: values[:16] for name, values in arrays.items()}
    previous = state
    for update_number in range(1, 5):
        state, metrics = td3bc.update(state, batch, jax.random.key(update_number))
        actor_step = update_number % 2 == 0
        assert int(state.step) == update_number
        assert float(metrics["actor_updated"]) == float(actor_step)
        assert not tree_equal(state.critic_params, previous.critic_params)  # critic: every update
        assert tree_equal(state.actor_params, previous.actor_params) != actor_step
        assert tree_equal(state.actor_target_params, previous.actor_target_params) != actor_step
        assert tree_equal(state.critic_target_params, previous.critic_target_params) != actor_step
        previous = state


def test_soft_target_update_is_tau_mix():
    state, _ = fresh_agent(td3bc.Config(tau=0.25, **SMALL))
    online = jax.tree_util.tree_map(lambda x: x + 1.0, state.critic_params)
    moved = td3bc.soft_update_targets(state.replace(critic_params=online))
    for t, t0 in zip(jax.tree_util.tree_leaves(moved.critic_target_params),
                     jax.tree_util.tree_leaves(state.critic_target_params)):
        np.testing.assert_allclose(t, t0 + 0.25, rtol=1e-6, atol=1e-6)


def test_dataset_arrays_normalize_states_and_fill_discount():
    obs, actions, rewards, next_obs, terminals = random_dataset()
    arrays, mean, std = td3bc.dataset_arrays(obs, actions, rewards, next_obs, terminals, td3bc.Config())
    np.testing.assert_allclose(mean, obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, obs.std(0), rtol=1e-5)  # population std, no eps stored
    np.testing.assert_allclose(arrays["obs"], (obs - obs.mean(0)) / (obs.std(0) + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arrays["next_obs"], (next_obs - obs.mean(0)) / (obs.std(0) + 1e-3),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arrays["discount"], 0.99)
    np.testing.assert_allclose(arrays["reward"], rewards, rtol=1e-6)
    hubl = np.linspace(0.5, 0.9, len(rewards))
    arrays, _, _ = td3bc.dataset_arrays(obs, actions, rewards, next_obs, terminals, td3bc.Config(), discounts=hubl)
    np.testing.assert_allclose(arrays["discount"], hubl, rtol=1e-6)


def test_act_normalizes_raw_observations():
    state, _ = fresh_agent(td3bc.Config(**SMALL))
    raw = np.array([[1.0, -2.0, 5.0], [0.0, 0.0, 0.0]], np.float32)
    actor = td3bc.Actor(2, (16, 16), 1.0)
    by_hand = (raw - np.asarray(state.obs_mean)) / (np.asarray(state.obs_std) + 1e-3)
    np.testing.assert_allclose(td3bc.act(state, raw), actor.apply(state.actor_params, by_hand), rtol=1e-5, atol=1e-6)
    assert not np.allclose(td3bc.act(state, raw), actor.apply(state.actor_params, raw))

    config = td3bc.Config(normalize_states=False, **SMALL)
    state = td3bc.create(jax.random.key(0), 3, 2, config)
    np.testing.assert_allclose(td3bc.act(state, raw), actor.apply(state.actor_params, raw), rtol=1e-6)


def test_update_many_scans_and_lowers_the_critic_loss():
    config = td3bc.Config(batch_size=32, hidden_dims=(32, 32), discount=0.5)
    state, arrays = fresh_agent(config, num=128)
    first_key, *keys = jax.random.split(jax.random.key(1), 7)
    state, first = td3bc.update_many(state, arrays, first_key, num_updates=50)
    assert int(state.step) == 50 and float(first["actor_updates"]) == 25
    for key in keys:
        state, last = td3bc.update_many(state, arrays, key, num_updates=50)
    assert int(state.step) == 350
    assert float(last["critic_loss"]) < 0.5 * float(first["critic_loss"])


# ------------------------------------------------------------------------------- PRDC


def test_keys_scale_states_only():
    keys = prdc.keys(jnp.array([[1.0, -2.0]]), jnp.array([[0.5]]), 3.0)
    np.testing.assert_array_equal(keys, [[3.0, -6.0, 0.5]])


def tiny_prdc(beta, k=1, backend="kdtree"):
    """Keys over 1-D normalized states and 1-D actions; the actor outputs 0 everywhere (zero params)."""
    config = prdc.Config(beta=beta, k=k, nn_backend=backend, nn_block=2, normalize_states=False, **SMALL)
    arrays = {"obs": jnp.array([[0.0], [0.3], [-0.5]]), "action": jnp.array([[1.0], [0.0], [-0.2]])}
    state = td3bc.create(jax.random.key(0), 1, 1, config)
    state = state.replace(actor_params=jax.tree_util.tree_map(jnp.zeros_like, state.actor_params))
    return state, prdc.build_constraint(arrays, config)


@pytest.mark.parametrize("backend", ["kdtree", "brute_force"])
def test_bc_target_is_the_nearest_key_and_beta_changes_it(backend):
    obs = jnp.array([[0.0]])  # query [beta * 0, pi = 0]
    # squared distances: key0 (s 0, a 1) = 1; key1 (s 0.3, a 0) = 0.09 beta^2; key2 (s -0.5, a -0.2) = 0.25 beta^2 + 0.04
    state, constraint = tiny_prdc(beta=1.0, backend=backend)
    np.testing.assert_array_equal(prdc.nearest_dataset_action(state, obs, constraint), [[0.0]])  # key1 (0.09)
    state, constraint = tiny_prdc(beta=5.0, backend=backend)
    np.testing.assert_array_equal(prdc.nearest_dataset_action(state, obs, constraint), [[1.0]])  # key0 (1 < 2.25)


@pytest.mark.parametrize("backend", ["kdtree", "brute_force"])
def test_kth_neighbour_option(backend):
    # beta 1: distances key1 0.09, key2 0.29, key0 1 -> k=2 is key2, k=3 key0 (the k-th only, not a mean).
    for k, expected in ((2, -0.2), (3, 1.0)):
        state, constraint = tiny_prdc(beta=1.0, k=k, backend=backend)
        np.testing.assert_allclose(prdc.nearest_dataset_action(state, jnp.array([[0.0]]), constraint), [[expected]])


def test_prdc_actor_step_regresses_to_the_nearest_key_action_not_the_batch_action():
    state, constraint = tiny_prdc(beta=5.0)
    state = state.replace(step=jnp.ones((), jnp.int32))  # the next update is an actor update
    batch = {"obs": jnp.zeros((4, 1)), "action": jnp.full((4, 1), 0.5), "reward": jnp.zeros(4),
             "discount": jnp.full(4, 0.99), "next_obs": jnp.zeros((4, 1)), "terminal": jnp.zeros(4)}
    _, metrics = prdc.update(state, batch, jax.random.key(0), constraint)
    np.testing.assert_allclose(metrics["bc_loss"], 1.0)  # (pi 0 - nearest action 1)^2
    _, metrics = td3bc.update(state, batch, jax.random.key(0))
    np.testing.assert_allclose(metrics["bc_loss"], 0.25)  # TD3+BC: (0 - 0.5)^2


def test_prdc_update_many_with_device_index_matches_kdtree():
    results = {}
    for backend in ("brute_force", "kdtree"):
        config = prdc.Config(nn_backend=backend, nn_block=48, **SMALL)  # 64 keys: not a multiple of the block
        state, arrays = fresh_agent(config)
        constraint = prdc.build_constraint(arrays, config)
        state, metrics = prdc.update_many(state, arrays, constraint, jax.random.key(2), num_updates=20)
        assert int(state.step) == 20 and float(metrics["actor_updates"]) == 10
        results[backend] = (state, metrics)
    np.testing.assert_allclose(results["brute_force"][1]["bc_loss"], results["kdtree"][1]["bc_loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(results["brute_force"][0].actor_params),
                    jax.tree_util.tree_leaves(results["kdtree"][0].actor_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- configs


def test_family_tables():
    assert td3bc.config_for_task("hopper-medium-v2") == td3bc.Config()
    assert td3bc.config_for_task("antmaze-umaze-v2").normalize_states is False  # TD3_BC issue #2
    cheetah = prdc.config_for_task("pixax/halfcheetah/medium-v0")
    assert (cheetah.alpha, cheetah.beta, cheetah.k) == (40.0, 2.0, 1)
    walker = prdc.config_for_task("walker2d-medium-replay-v2", k=2)
    assert (walker.alpha, walker.beta, walker.k) == (2.5, 2.0, 2)
    antmaze = prdc.config_for_task("antmaze-medium-play-v2")
    assert (antmaze.alpha, antmaze.beta, antmaze.reward_scale, antmaze.reward_shift) == (7.5, 7.5, 10000.0, -1.0)
    assert antmaze.normalize_states is True and isinstance(antmaze.reward_scale, float)


def test_antmaze_reward_transform_changes_rewards_only():
    obs, actions, rewards, next_obs, terminals = random_dataset()
    config = prdc.config_for_task("antmaze-umaze-v2")
    arrays, mean, std = td3bc.dataset_arrays(obs, actions, rewards, next_obs, terminals, config)
    plain, _, _ = td3bc.dataset_arrays(obs, actions, rewards, next_obs, terminals, dataclasses.replace(
        config, reward_scale=1.0, reward_shift=0.0))
    np.testing.assert_allclose(arrays["reward"], 10000.0 * rewards - 1.0, rtol=1e-6)
    for name in ("obs", "next_obs", "action", "terminal", "discount"):
        np.testing.assert_array_equal(arrays[name], plain[name])  # spec §10 #18: next_state untouched


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="alpha must be a float, got str"):
        td3bc.Config(alpha="2.5")  # TD3_BC main.py parsed --alpha untyped (spec §10 #25)
    with pytest.raises(ValueError, match="policy_freq=0 \\(must be >= 1\\)"):
        td3bc.Config(policy_freq=0)
    with pytest.raises(ValueError, match="nn_backend='faiss' \\(must be one of \\('brute_force', 'kdtree'\\)\\)"):
        prdc.Config(nn_backend="faiss")
    with pytest.raises(ValueError, match="k=0 \\(must be >= 1\\)"):
        prdc.Config(k=0)
    with pytest.raises(ValueError, match="no dataset family"):
        prdc.config_for_task("pixax//")
    assert prdc.config_for_task("pixax/invertedpendulum/noisy-v0") == prdc.Config()  # other families: defaults
    with pytest.raises(ValueError, match="unknown Config field\\(s\\) \\['gamma'\\]"):
        td3bc.config_for_task("hopper-medium-v2", gamma=0.9)
    with pytest.raises(ValueError, match="needs the dataset's obs_mean and obs_std"):
        td3bc.create(jax.random.key(0), 3, 2, td3bc.Config())
    state, arrays = fresh_agent(td3bc.Config(**SMALL))
    with pytest.raises(ValueError, match="batch is missing \\['discount'\\]"):
        td3bc.update(state, {k: v[:4] for k, v in arrays.items() if k != "discount"}, jax.random.key(0))

