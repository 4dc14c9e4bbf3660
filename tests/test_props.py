"""Tests of PROPS (agents/props.py) and the sampling-error metric (core/sampling_error.py), spec §8, §11.

References are hand-worked numbers (written next to each test), closed forms (Gaussian KL, the
least-squares maximum-likelihood fit of a linear-Gaussian output layer), Monte Carlo estimates, and a
plain Python FIFO for the ring buffer, never the code under test. The update tests share one small
Config (CADENCE) and two rollout lengths, so the file compiles few programs.
"""

import collections
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ppo, props
from core import sampling_error as se

OBS_DIM, ACTION_DIM, E = 3, 2, 2
# n = 4, m = 2, b = 1, two envs: calls see T = 2, 4, 4, 4, ... steps; a PPO update every n / m = 2 calls.
# PPO: 8 samples per full buffer in minibatches of 4; behaviour: (4 - 2) * 2 = 4 samples in minibatches of 2.
# props_target_kl 1e-6: with fresh references the first minibatch has KL 0 and steps (lr 1e-2), the second
# one's KL is then far above 1e-6, so every behaviour update takes exactly one step ("before_step").
CADENCE = props.Config(hidden_dim=8, num_steps=4, props_num_steps=2, buffer_batches=1, num_envs=E,
                       num_minibatches=2, update_epochs=2, props_epochs=2, props_num_minibatches=2,
                       num_train_frames=80, lr=1e-2, props_lr=1e-2, target_kl=0.0, props_target_kl=1e-6,
                       se_every_updates=2, se_epochs=2)


# Test data comes from numpy, and agents are created / evaluated through jitted functions: in eager mode
# JAX compiles every primitive for every new shape, which costs more than the tests themselves here.
def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


create_props = jax.jit(props.create, static_argnums=(1, 2, 3))
create_ppo = jax.jit(ppo.create, static_argnums=(1, 2, 3))


@functools.partial(jax.jit, static_argnums=3)
def policy_log_prob(params, obs, actions, tanh_mean=True):
    """(mean, log_std, log pi(a|s)) of a policy params dict."""
    mean, log_std = ppo.policy(params, obs, tanh_mean)
    return mean, log_std, ppo.log_prob(mean, log_std, actions)


def rollout(seed, T, done_every=3) -> ppo.Rollout:
    dones = (np.arange(T * E).reshape(T, E) % done_every == done_every - 1).astype(np.float32)
    return ppo.Rollout(obs=normal(seed, (T, E, OBS_DIM)), actions=normal(seed + 1, (T, E, ACTION_DIM)),
                       rewards=normal(seed + 2, (T, E)), dones=jnp.asarray(dones),
                       last_obs=normal(seed + 3, (E, OBS_DIM)))


def tree_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_trees_close(a, b, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=atol)


def moved_params(shift=0.3):
    """A fresh agent's params (hidden 8) moved off the init, so tanh_mean and the output layer matter."""
    state = create_ppo(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE)
    return jax.tree.map(lambda x: x + shift, state.params)


def props_state(config):
    """A fresh PROPS agent (hidden 8) under `config` (created once under CADENCE: the same arrays)."""
    return create_props(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE).replace(config=config)


# ================================================================ config


def test_config_for_task_uses_the_props_and_ppo_buffer_columns():
    c = props.config_for_task("Hopper-v4")
    assert (c.num_steps, c.lr, c.props_num_steps, c.props_lr, c.props_clip, c.props_target_kl, c.props_lambda,
            c.props_num_minibatches, c.num_train_frames, c.buffer_batches) == (
        2048, 1e-3, 256, 1e-3, 0.3, 0.05, 0.3, 16, 1_000_000, 2)
    c = props.config_for_task("Ant-v5")
    assert (c.num_steps, c.lr, c.props_num_steps, c.props_clip, c.props_target_kl, c.props_lambda,
            c.num_train_frames) == (2048, 1e-4, 256, 0.05, 0.03, 0.1, 4_000_000)
    c = props.config_for_task("Swimmer-v4")
    assert (c.props_num_steps, c.props_lr) == (1024, 1e-5)
    c = props.config_for_task("Walker2d-v5")
    assert (c.props_num_minibatches, c.props_target_kl) == (32, 0.1)
    c = props.config_for_task("Hopper-v5", behaviour="none")  # PPO-BUFFER column
    assert (c.num_steps, c.lr, c.buffer_batches) == (1024, 1e-4, 2)
    assert (props.window_steps(c), props.buffer_steps(c)) == (1024, 2048)
    c = props.config_for_task("Hopper-v5")
    assert (props.window_steps(c), props.buffer_steps(c)) == (256, 4096)
    assert (c.props_epochs, c.kl_direction, c.kl_reduce, c.stale_props_reference, c.props_adv) == (
        16, "behaviour_target", "mean", False, False)
    with pytest.raises(ValueError, match="valid fields"):
        props.config_for_task("Hopper-v5", props_m=256)
    with pytest.raises(ValueError, match="props_num_steps"):
        props.Config(num_steps=2048, props_num_steps=300)  # m must divide n
    with pytest.raises(ValueError, match="props_num_steps"):
        props.Config(num_steps=1024, buffer_batches=1, props_num_steps=1024)  # b * n - m = 0 samples
    with pytest.raises(ValueError, match="kl_direction"):
        props.Config(kl_direction="forward")
    with pytest.raises(ValueError, match="behaviour"):
        props.Config(behaviour="ppo")


# ================================================================ which samples the behaviour update sees


@pytest.mark.parametrize("b", [1, 2, 4])
def test_behaviour_update_sees_exactly_the_samples_that_will_remain(b):
    # A plain FIFO of step ids stands in for the loop's ring buffer: every m steps the update gets the
    # buffer (oldest first); the samples that still exist at the next update are the ones that matter.
    for n, m in ((4, 2), (4, 1), (8, 4), (4, 4)):
        if m >= b * n:
            continue
        config = props.Config(num_steps=n, props_num_steps=m, buffer_batches=b, num_minibatches=1,
                              props_num_minibatches=1, num_train_frames=10 * n)
        fifo, next_id = collections.deque(maxlen=b * n), 0
        for _ in range(3 * b * n // m):
            for _ in range(m):
                fifo.append(next_id)
                next_id += 1
            ids = list(fifo)
            seen = ids[props.behaviour_start(len(ids), config):]
            after = collections.deque(ids, maxlen=b * n)
            after.extend(range(next_id, next_id + m))
            assert seen == [i for i in ids if i in after], (b, n, m, ids)


def test_update_skips_the_oldest_m_steps_only_when_the_buffer_is_full():
    state = create_props(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE)
    # Full buffer (T = b * n = 4) on a call without a PPO update (env steps 4 -> 6): the oldest m = 2 steps
    # are poisoned with NaN; the behaviour update must not see them.
    full = rollout(10, 4)
    full = full._replace(obs=full.obs.at[:2].set(jnp.nan))
    new, m = props.update(state.replace(env_steps=jnp.asarray(4, jnp.int32)), full, jax.random.PRNGKey(2))
    assert float(m["target_update"]) == 0.0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.behaviour_params))
    assert np.isfinite(float(m["props_loss"])) and float(m["props_gradient_steps"]) == 1.0
    # Not full (T = 2 of 4): every step is used, the oldest included.
    partial = rollout(30, 2)
    partial = partial._replace(obs=partial.obs.at[0].set(jnp.nan))
    new, m = props.update(state, partial, jax.random.PRNGKey(2))
    assert not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.behaviour_params))
    with pytest.raises(ValueError, match="multiple of window_steps"):
        props.update(state, rollout(10, 3), jax.random.PRNGKey(2))


# ================================================================ the behaviour objective


def controlled_minibatch(phi, ratios, advantages=None):
    """Samples whose r = pi_phi / pi_theta are exactly `ratios` at phi, with pi_theta's mean and std equal
    to pi_phi's (the KL term is 0): reference log-prob = log pi_phi - log r."""
    n = len(ratios)
    obs, actions = normal(11, (n, OBS_DIM)), normal(12, (n, ACTION_DIM))
    mean, log_std, log_prob = policy_log_prob(phi, obs, actions)
    return {"obs": obs, "actions": actions, "log_probs": log_prob - jnp.log(jnp.asarray(ratios)),
            "means": mean, "log_stds": log_std,
            "advantages": jnp.asarray(advantages if advantages is not None else np.zeros(n), jnp.float32)}


def test_props_loss_on_hand_numbers():
    config = props.Config(props_clip=0.3, props_lambda=0.3)
    phi = props.policy_params(moved_params())
    ratios = [0.5, 0.9, 1.2, 1.6]
    mb = controlled_minibatch(phi, ratios, advantages=[2.0, -1.0, 0.5, 1.5])
    # max(r, clip(r, .7, 1.3)): 0.5 -> 0.7 (clipped below), 0.9, 1.2 (inside), 1.6 (r > 1: never clipped)
    # -> mean 4.4 / 4 = 1.1; the KL term is 0 (pi_theta = pi_phi in mean and std).
    loss_fn = jax.jit(props.props_loss, static_argnums=2)  # (op-by-op eager mode compiles every primitive)
    all_valid = jnp.ones(4, bool)
    loss, m = loss_fn(phi, mb, config, all_valid)
    np.testing.assert_allclose(loss, 1.1, rtol=1e-5)
    np.testing.assert_allclose(m["props_kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["props_clip_fraction"], 0.5)  # |r - 1| > 0.3 for 0.5 and 1.6
    np.testing.assert_allclose(m["props_approx_kl"], np.mean([(r - 1) - math.log(r) for r in ratios]), rtol=1e-4)
    # props_adv: weights |A| / std(A) (ddof 1, not mean-centred numerator). A = (2, -1, .5, 1.5): mean .75,
    # squared deviations 1.5625 + 3.0625 + .0625 + .5625 = 5.25, std sqrt(5.25 / 3) = 1.3229;
    # mean(surrogate * |A|) = (.7 * 2 + .9 * 1 + 1.2 * .5 + 1.6 * 1.5) / 4 = 1.325 -> 1.325 / 1.3229.
    loss, _ = loss_fn(phi, mb, dataclasses.replace(config, props_adv=True), all_valid)
    np.testing.assert_allclose(loss, 1.325 / math.sqrt(5.25 / 3), rtol=1e-5)
    # ROS: plain mean ratio, no clip (4.2 / 4).
    loss, _ = loss_fn(phi, mb, dataclasses.replace(config, behaviour="ros"), all_valid)
    np.testing.assert_allclose(loss, 1.05, rtol=1e-5)
    # A padded minibatch: the masked-out sample does not count.
    loss, _ = loss_fn(phi, mb, config, jnp.array([True, True, True, False]))
    np.testing.assert_allclose(loss, (0.7 + 0.9 + 1.2) / 3, rtol=1e-5)


def test_props_loss_gradient_is_zero_below_the_clip_and_never_clipped_above():
    config = props.Config(props_clip=0.3, props_lambda=0.3)
    phi = props.policy_params(moved_params())
    grad = jax.jit(jax.grad(lambda p, mb, valid, c: props.props_loss(p, mb, c, valid)[0]), static_argnums=3)
    grad_norm = lambda ratios: float(optax_norm(grad(phi, controlled_minibatch(phi, ratios), jnp.ones(4, bool),
                                                     config)))
    # Every r < 1 - eps and the KL term at its minimum (0): a constant loss, zero gradient.
    assert grad_norm([0.3, 0.5, 0.6, 0.65]) < 1e-6
    # Every r > 1 + eps: not clipped from above (a PPO-style clip would give zero gradient here).
    assert grad_norm([1.4, 1.6, 2.0, 3.0]) > 1e-2
    # With lambda = 0 the gradient is that of mean(r) over the unclipped samples only: samples below the
    # clip add nothing, so [0.5, 1.6] has the gradient of [1.6] alone (the 0.5 sample masked out), halved
    # (a mean over 2 samples instead of 1).
    no_kl = dataclasses.replace(config, props_lambda=0.0)
    mb = controlled_minibatch(phi, [0.5, 1.6])
    g_mixed = grad(phi, mb, jnp.array([True, True]), no_kl)
    g_alone = grad(phi, mb, jnp.array([False, True]), no_kl)
    assert float(optax_norm(g_alone)) > 1e-2
    for a, b in zip(jax.tree.leaves(g_mixed), jax.tree.leaves(g_alone)):
        np.testing.assert_allclose(a, 0.5 * b, rtol=1e-4, atol=1e-7)


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_gaussian_kl_closed_form_monte_carlo_directions_and_reductions():
    rng = np.random.default_rng(0)
    mu_phi, mu_theta = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    ls_phi, ls_theta = rng.normal(scale=0.4, size=(5, 3)), rng.normal(scale=0.4, size=(5, 3))
    s_phi, s_theta = np.exp(ls_phi), np.exp(ls_theta)
    closed = np.log(s_theta / s_phi) + (s_phi ** 2 + (mu_phi - mu_theta) ** 2) / (2 * s_theta ** 2) - 0.5
    np.testing.assert_allclose(props.gaussian_kl(mu_phi, ls_phi, mu_theta, ls_theta), closed, rtol=1e-5, atol=1e-6)
    # Monte Carlo: E_{x ~ phi}[log phi(x) - log theta(x)] per dimension, 200k samples each.
    x = mu_phi + s_phi * rng.normal(size=(200_000, 5, 3))
    log_n = lambda x, mu, s: -0.5 * ((x - mu) / s) ** 2 - np.log(s)
    samples = log_n(x, mu_phi, s_phi) - log_n(x, mu_theta, s_theta)
    stderr = samples.std(0) / math.sqrt(len(x))
    assert np.all(np.abs(samples.mean(0) - closed) < 4 * stderr + 1e-6)
    reverse = np.log(s_phi / s_theta) + (s_theta ** 2 + (mu_theta - mu_phi) ** 2) / (2 * s_phi ** 2) - 0.5
    valid = jnp.ones(5, bool)
    expected = {("behaviour_target", "mean"): closed.mean(), ("behaviour_target", "sum"): closed.sum(1).mean(),
                ("target_behaviour", "mean"): reverse.mean(), ("target_behaviour", "sum"): reverse.sum(1).mean()}
    for (direction, reduce), value in expected.items():
        config = props.Config(kl_direction=direction, kl_reduce=reduce)
        np.testing.assert_allclose(props.kl_regularizer(mu_phi, ls_phi, mu_theta, ls_theta, valid, config), value,
                                   rtol=1e-5)
    assert abs(closed.mean() - reverse.mean()) > 0.05  # the two directions really differ here


# ================================================================ behaviour_update


# b = 2, n = 4, m = 2, one env: a full buffer minus m = 6 samples, minibatches of 6 // 2 = 3; delta = 0.1.
BEHAVIOUR = props.Config(hidden_dim=8, num_steps=4, props_num_steps=2, buffer_batches=2, num_minibatches=2,
                         num_train_frames=80, props_epochs=3, props_num_minibatches=2, props_target_kl=0.1,
                         props_lr=1e-2)


def references(state, shift, n=12):
    """n samples with pi_theta's references, the reference log-probs shifted by +shift: at phi = theta
    every log r = -shift, so the first minibatch's approx-KL is e^-shift - 1 + shift."""
    obs, actions = normal(21, (n, OBS_DIM)), normal(22, (n, ACTION_DIM))
    mean, log_std, log_prob = policy_log_prob(props.policy_params(state.params), obs, actions)
    return {"obs": obs, "actions": actions, "log_probs": log_prob + shift,
            "means": mean, "log_stds": log_std, "advantages": jnp.zeros(n)}


def test_behaviour_update_resets_phi_to_theta_and_stops_at_delta():
    state = props_state(BEHAVIOUR)
    state = state.replace(params=moved_params())
    theta = props.policy_params(state.params)
    garbage = jax.tree.map(lambda x: x + 3.0, theta)  # phi before the update: far from theta
    state = state.replace(behaviour_params=garbage)
    # Shift 0.5: first approx-KL = e^-.5 - .5 = 0.1065 > delta = 0.1: no step at all, phi = theta exactly.
    phi, opt_state, m = props.behaviour_update(state, references(state, 0.5), jax.random.PRNGKey(3), BEHAVIOUR)
    assert (float(m["props_gradient_steps"]), float(m["props_early_stopped"])) == (0.0, 1.0)
    np.testing.assert_allclose(m["props_approx_kl"], math.exp(-0.5) - 0.5, rtol=1e-4)
    assert tree_equal(phi, theta)
    assert tree_equal(opt_state, state.behaviour_opt_state)
    # Shift 0.2: 0.0187 < delta, and r = e^-.2 = .82 inside the clip (above 1 - eps_P = .7, so the gradient
    # is not zero): it steps; phi starts from theta (not from the old phi): it stays within a few Adam
    # steps (lr 1e-2 each) of theta.
    phi, opt_state, m = props.behaviour_update(state, references(state, 0.2), jax.random.PRNGKey(3), BEHAVIOUR)
    steps = float(m["props_gradient_steps"])
    assert steps >= 1
    assert int(opt_state[1].count) == steps  # phi's Adam state carried over and advanced once per step
    largest = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(phi), jax.tree.leaves(theta)))
    assert 0 < largest <= 3 * 1e-2 * steps
    # It lowered the probability of the buffer's actions.
    refs = references(state, 0.0)
    assert float(jnp.mean(policy_log_prob(phi, refs["obs"], refs["actions"])[2] - refs["log_probs"])) < 0


def test_ros_step_lowers_the_probability_of_buffer_actions():
    config = dataclasses.replace(BEHAVIOUR, behaviour="ros")
    state = props_state(config)
    state = state.replace(params=moved_params())
    refs = references(state, 0.0)  # r = 1 for every sample at phi = theta
    phi, _, m = props.behaviour_update(state, refs, jax.random.PRNGKey(3), config)
    assert (float(m["props_gradient_steps"]), float(m["props_early_stopped"])) == (1.0, 0.0)  # one full-batch step
    log_ratio = policy_log_prob(phi, refs["obs"], refs["actions"])[2] - refs["log_probs"]
    # Descending mean(r) lowers pi_phi on the buffer's actions (PPOROS HEAD's -mean(log r) would raise it).
    assert float(jnp.mean(log_ratio)) < -1e-3
    assert float(jnp.mean(jnp.exp(log_ratio))) < 1.0


# ================================================================ update: cadence, references, act


def test_a_ppo_update_happens_exactly_every_n_over_m_calls():
    state = create_props(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE)
    names = None
    for call in range(1, 7):
        T = min(2 * call, 4)  # min(filled, b * n)
        before = state
        state, m = props.update(state, rollout(10 * call, T), jax.random.PRNGKey(100 + call))
        due = call % 2 == 0  # n / m = 2
        assert int(state.env_steps) == 2 * call
        assert int(state.num_updates) == call // 2
        assert float(m["target_update"]) == float(due)
        assert np.isfinite(float(m["policy_loss"])) == due  # PPO's metrics: NaN on calls without its update
        assert tree_equal(state.params, before.params) != due
        # Sampling error before target update 2 only (se_every_updates = 2): call 4.
        assert np.isfinite(float(m["sampling_error"])) == (call == 4)
        # Fresh references: KL 0 at the first minibatch, then > 1e-6: exactly one behaviour step.
        assert (float(m["props_gradient_steps"]), float(m["props_early_stopped"])) == (1.0, 1.0)
        assert not tree_equal(state.behaviour_params, props.policy_params(state.params))
        names = names or set(m)
        assert set(m) == names and all(m[k].shape == () for k in m)
    assert {"props_loss", "props_kl", "props_gradient_steps", "props_early_stopped", "sampling_error",
            "policy_loss", "approx_kl", "lr"} <= names


def test_stale_and_fresh_references_differ_only_when_the_updates_coincide():
    # (The sampling error is off in the stale variant: it changes nothing else, and costs compile time.)
    stale = dataclasses.replace(CADENCE, stale_props_reference=True, se_every_updates=0)
    state = create_props(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE)
    state = state.replace(behaviour_params=jax.tree.map(lambda x: x - 2.0, state.behaviour_params))
    data, key = rollout(50, 4), jax.random.PRNGKey(6)
    # env steps 4 -> 6: no PPO update, theta unchanged: both references are the same numbers.
    s = state.replace(env_steps=jnp.asarray(4, jnp.int32))
    fresh_state, _ = props.update(s, data, key)
    stale_state, _ = props.update(s.replace(config=stale), data, key)
    assert_trees_close(fresh_state.behaviour_params, stale_state.behaviour_params)  # two programs: not bitwise
    # env steps 2 -> 4: a PPO update first. Same theta after it either way; phi starts from the UPDATED
    # theta. Stale references (the pre-update theta) make r != 1 at the first minibatch, so the early stop
    # fires before any step (pitfall #35): phi = the updated theta exactly. Fresh ones: r = 1, one step.
    s = state.replace(env_steps=jnp.asarray(2, jnp.int32))
    fresh_state, fresh_m = props.update(s, data, key)
    stale_state, stale_m = props.update(s.replace(config=stale), data, key)
    assert float(fresh_m["target_update"]) == float(stale_m["target_update"]) == 1.0
    assert_trees_close(fresh_state.params, stale_state.params)
    assert not tree_equal(fresh_state.params, state.params)
    assert (float(stale_m["props_gradient_steps"]), float(stale_m["props_early_stopped"])) == (0.0, 1.0)
    assert float(stale_m["props_approx_kl"]) > 1e-6
    assert tree_equal(stale_state.behaviour_params, props.policy_params(stale_state.params))
    assert float(fresh_m["props_gradient_steps"]) == 1.0
    assert not tree_equal(fresh_state.behaviour_params, stale_state.behaviour_params)


def test_ppo_buffer_is_ppo_on_the_buffer_with_phi_equal_to_theta():
    config = dataclasses.replace(CADENCE, behaviour="none", se_every_updates=0)
    assert (props.window_steps(config), props.buffer_steps(config)) == (4, 4)  # one call per n steps
    state = props_state(config)
    data, key = rollout(60, 4), jax.random.PRNGKey(7)
    new, m = props.update(state, data, key)
    reference, ppo_m = ppo.update(ppo.PPOState(params=state.params, opt_state=state.opt_state,
                                               num_updates=state.num_updates, config=config,
                                               action_dim=ACTION_DIM), data, key)
    assert_trees_close(new.params, reference.params)  # the same PPO update (same key)
    np.testing.assert_allclose(m["policy_loss"], ppo_m["policy_loss"], rtol=1e-5, atol=1e-7)
    assert tree_equal(new.behaviour_params, props.policy_params(new.params))  # pi_phi = pi_theta
    assert float(m["target_update"]) == 1.0 and not any(name.startswith("props_") for name in m)


def test_act_samples_the_behaviour_policy_and_evaluates_the_target_mean():
    state = create_props(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE)
    phi = {"actor": state.params["actor"], "log_std": jnp.log(jnp.array([0.5, 2.0]))}
    phi["actor"] = {**phi["actor"], "layer_2": {**phi["actor"]["layer_2"], "bias": jnp.array([1.0, -1.0])}}
    state = state.replace(behaviour_params=phi)
    obs = jnp.tile(normal(8, (1, OBS_DIM)), (4000, 1))
    target_mean = policy_log_prob(props.policy_params(state.params), obs[:1], obs[:1, :ACTION_DIM])[0]
    behaviour_mean = policy_log_prob(phi, obs[:1], obs[:1, :ACTION_DIM])[0]
    np.testing.assert_allclose(props.act(state, obs[:1], jax.random.PRNGKey(9), eval_mode=True), target_mean,
                               rtol=1e-5, atol=1e-6)
    actions = np.asarray(props.act(state, obs, jax.random.PRNGKey(9)))
    np.testing.assert_allclose(actions.mean(0), behaviour_mean[0], atol=0.12)  # standard errors 0.008 and 0.032
    np.testing.assert_allclose(actions.std(0), [0.5, 2.0], rtol=0.05)


# ================================================================ sampling error


def test_empirical_policy_trainable_leaves():
    params = props.policy_params(moved_params())
    ppoq = ppo.empirical_policy_trainable(params, freeze_hidden_biases=False)  # PPOROS
    assert ppoq == {"actor": {"layer_0": {"kernel": False, "bias": True}, "layer_1": {"kernel": False, "bias": True},
                              "layer_2": {"kernel": True, "bias": True}}, "log_std": True}
    frozen = ppo.empirical_policy_trainable(params, freeze_hidden_biases=True)  # PROPS-2025
    assert [frozen["actor"][f"layer_{i}"]["bias"] for i in range(3)] == [False, False, True]
    # |normalized A| weights: A = (1, 2, 3): mean 2, sample std 1 -> |(-1, 0, 1)|.
    np.testing.assert_allclose(se.advantage_weights(jnp.array([1.0, 2.0, 3.0])), [1.0, 0.0, 1.0], rtol=1e-6)


SE_N, SE_HIDDEN = 1024, CADENCE.hidden_dim


def linear_gaussian_setup():
    """pi_theta with tanh_mean off: mean = W h(s) + c with fixed features h (hidden layers frozen, biases
    too), state-independent std. pi_D's maximum-likelihood fit is then least squares per action dim."""
    params = props.policy_params(create_ppo(jax.random.PRNGKey(0), OBS_DIM, ACTION_DIM, CADENCE).params)
    params["actor"]["layer_2"]["kernel"] = 0.5 * normal(5, (SE_HIDDEN, ACTION_DIM))
    params["log_std"] = jnp.array([-0.3, 0.2])
    trainable = jax.tree.map(lambda x: float(x), ppo.empirical_policy_trainable(params, freeze_hidden_biases=True))

    def log_prob(p, obs, actions):
        mean, log_std = ppo.policy(p, obs, False)
        return ppo.log_prob(mean, log_std, actions)

    fit = jax.jit(lambda obs, actions: se.sampling_error(
        log_prob, params, trainable, obs, actions, jax.random.PRNGKey(3), epochs=1000, minibatch_size=SE_N,
        lr=3e-2, max_grad_norm=0.0))
    return params, fit


def closed_form_sampling_error(params, obs, actions):
    """mean[log pi_D - log pi_theta] with pi_D the least-squares / residual-variance fit (float64)."""
    x = np.asarray(obs, np.float64)
    for i in range(2):
        layer = params["actor"][f"layer_{i}"]
        x = np.tanh(x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64))
    features = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    a = np.asarray(actions, np.float64)
    coef = np.linalg.lstsq(features, a, rcond=None)[0]
    var_d = np.mean((a - features @ coef) ** 2, axis=0)
    log_n = lambda a, mu, var: np.sum(-0.5 * (a - mu) ** 2 / var - 0.5 * np.log(2 * np.pi * var), axis=1)
    out = params["actor"]["layer_2"]
    mean_theta = x @ np.asarray(out["kernel"], np.float64) + np.asarray(out["bias"], np.float64)
    var_theta = np.exp(2 * np.asarray(params["log_std"], np.float64))
    return np.mean(log_n(a, features @ coef, var_d) - log_n(a, mean_theta, var_theta))


def test_sampling_error_small_on_policy_larger_for_few_samples_and_matches_the_closed_form():
    params, fit = linear_gaussian_setup()
    obs = normal(1, (SE_N, OBS_DIM))
    mean, log_std, _ = policy_log_prob(params, obs, jnp.zeros((SE_N, ACTION_DIM)), False)
    actions = mean + jnp.exp(log_std) * normal(2, mean.shape)
    # A large buffer drawn from pi_theta itself: SE ~ (trainable params) / (2 N) = 20 / 2048.
    big, fitted = fit(obs, actions)
    np.testing.assert_allclose(big, closed_form_sampling_error(params, obs, actions), rtol=1e-2)
    assert 0 < float(big) < 0.02
    for name in ("layer_0", "layer_1"):  # frozen leaves did not move
        assert tree_equal(fitted["actor"][name], params["actor"][name])
    # A tiny buffer: 16 distinct samples (each repeated, so the fit has the same shape and program).
    tiny = jnp.arange(SE_N) % 16
    small, _ = fit(obs[tiny], actions[tiny])
    np.testing.assert_allclose(small, closed_form_sampling_error(params, obs[tiny], actions[tiny]), rtol=1e-2)
    assert float(small) > 20 * float(big)
