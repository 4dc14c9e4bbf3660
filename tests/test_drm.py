"""agents.drm: the alpha / sigma / lambda tables of the spec (§2.2, §2.3), the perturbation against a
fresh init recomputed here (§2.2), the awaken step (§2.3), the expectile loss and the blended target
by hand (§2.4), the order of one update (§2.5), per-task configs (§2.6, §2.7), and DrM with its three
mechanisms off against DrQ-v2. Tiny networks throughout (hidden 32, features 8, images 32x32)."""

import dataclasses
import functools

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batches
from batches import ACTION_DIM, STATE_DIM

from agents import drm, drqv2
from networks import actor_critic, dormant, encoders


TINY = dict(hidden_dim=32, feature_dim=8, num_expl_steps=100, stddev_schedule="linear(0.5,0.1,1000)")
STATES = dict(TINY, obs_type="states", state_encoder_dim=16)
CONFIG = drm.Config(**STATES, max_perturb_factor=0.9, target_lambda=0.6, dormant_perturb_interval=4)
MECHANISMS_OFF = dict(perturb=False, exploitation=False, stddev_type="drqv2")
PIXELS = dict(TINY, image_size=32)


states_batch = batches.states_batch
pixels_batch = functools.partial(batches.pixels_batch, batch_size=4)


@pytest.fixture(scope="module")
def states_agent():
    return drm.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, CONFIG)


def flat(params):
    return traverse_util.flatten_dict(params)


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---------------------------------------------------------------- alpha, sigma, lambda (spec tables)

BETAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0]


@pytest.mark.parametrize("alpha_max, expected", [
    (0.6, [0.6, 0.6, 0.6, 0.4, 0.2, 0.2]),
    (0.9, [0.9, 0.8, 0.6, 0.4, 0.2, 0.2]),
    (1.0, [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]),
])
def test_perturb_factor_table(alpha_max, expected):
    """§2.2: alpha = clip(1 - 2 beta, 0.2, alpha_max) at beta = 0, 0.1, 0.2, 0.3, 0.4, 0.5."""
    config = dataclasses.replace(CONFIG, max_perturb_factor=alpha_max)
    alphas = [float(drm.perturb_factor(config, beta)) for beta in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
    np.testing.assert_allclose(alphas, expected, atol=1e-6)


def test_dormant_stddev_table():
    """§2.3: sigma_dorm = sigmoid(10 (beta - 0.2)), the spec's 3-decimal table, except beta = 0.25:
    sigmoid(0.5) = 0.62246, which rounds to 0.622 (the spec prints 0.623)."""
    expected = [0.119, 0.182, 0.269, 0.378, 0.5, 0.622, 0.731, 0.881, 0.953, 1.0]
    np.testing.assert_allclose([float(drm.dormant_stddev(CONFIG, b)) for b in BETAS], expected, atol=5e-4)


def test_lambda_table_and_its_variants():
    """§2.3: lambda = 0.6 / (1 + exp(50 (beta - 0.2))); Meta-World: constant; exploitation off: 0."""
    expected = [0.600, 0.600, 0.596, 0.554, 0.300, 0.046, 0.004, 0.000, 0.000, 0.000]
    np.testing.assert_allclose([float(drm.target_lambda(CONFIG, b)) for b in BETAS], expected, atol=5e-4)
    constant = dataclasses.replace(CONFIG, constant_lambda=True, target_lambda=0.5)
    assert [float(drm.target_lambda(constant, b)) for b in (0.0, 0.2, 1.0)] == [0.5, 0.5, 0.5]
    off = dataclasses.replace(CONFIG, exploitation=False)
    assert float(drm.target_lambda(off, 0.0)) == 0.0


def test_stddev_types():
    """awake: sigma_dorm before t0, then max(sigma_dorm, schedule restarted at t0); dormant: sigma_dorm;
    drqv2: the plain schedule. Schedule linear(0.5, 0.1, 1000): 0.3 at 500 steps after t0."""
    low, high = 0.0, 0.3  # sigma_dorm 0.1192 and 0.7311
    sigma = lambda config, step, beta, t0: float(drm.stddev(config, step, beta, jnp.int32(t0)))  # noqa: E731
    np.testing.assert_allclose(sigma(CONFIG, 5000, low, -1), 0.1192, atol=1e-4)
    np.testing.assert_allclose(sigma(CONFIG, 5000, low, 4500), 0.3, atol=1e-6)  # restarted schedule wins
    np.testing.assert_allclose(sigma(CONFIG, 5000, high, 4500), 0.7311, atol=1e-4)  # sigma_dorm wins
    np.testing.assert_allclose(sigma(CONFIG, 4500, low, 4500), 0.5, atol=1e-6)  # jump to 0.5 at t0
    dormant_type = dataclasses.replace(CONFIG, stddev_type="dormant")
    np.testing.assert_allclose(sigma(dormant_type, 5000, low, 4500), 0.1192, atol=1e-4)
    plain = dataclasses.replace(CONFIG, stddev_type="drqv2")
    np.testing.assert_allclose(sigma(plain, 500, high, 100), 0.3, atol=1e-6)


# ---------------------------------------------------------------- awaken step


def test_awaken_step_is_set_once_and_never_reset():
    """num_expl_steps = 100: t0 = the first step > 100 with beta < 0.2, then fixed whatever beta does."""
    t0 = jnp.int32(-1)
    history = []
    for step, beta in [(98, 0.1), (100, 0.1), (102, 0.3), (104, 0.1), (106, 0.05), (108, 0.9), (110, 0.1)]:
        t0 = drm.awaken(CONFIG, t0, step, beta)
        history.append(int(t0))
    assert history == [-1, -1, -1, 104, 104, 104, 104]
    no_guard = dataclasses.replace(CONFIG, awaken_guard=False)  # Meta-World agent
    assert int(drm.awaken(no_guard, jnp.int32(-1), 50, 0.1)) == 50


def test_update_keeps_an_awaken_step_and_waits_for_the_exploration_phase(states_agent):
    batch = states_batch(0)
    awake = states_agent.replace(awaken_step=jnp.int32(7))
    assert int(drm.update(awake, batch, 202, jax.random.PRNGKey(1))[0].awaken_step) == 7
    # step 2 <= num_expl_steps: not awakened whatever beta is.
    state, metrics = drm.update(states_agent, batch, 2, jax.random.PRNGKey(1))
    assert int(state.awaken_step) == -1 and float(metrics["awaken_step"]) == -1.0


# ---------------------------------------------------------------- losses by hand


def test_expectile_loss_by_hand():
    """u = V - Q = [-1, 0, 2, -0.5]; w = 0.9 where u <= 0, 0.1 where u > 0:
    (0.9 * 1 + 0.9 * 0 + 0.1 * 4 + 0.9 * 0.25) / 4 = 0.38125."""
    v, q = jnp.array([1.0, 2.0, 3.0, 0.0]), jnp.array([2.0, 2.0, 1.0, 0.5])
    np.testing.assert_allclose(drm.expectile_loss(v, q, 0.9), 0.38125, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(drm.expectile_loss, static_argnums=2)(v, q, 0.9), 0.38125, rtol=1e-6)
    # The gradient pushes V up where it is below Q (an upper expectile for kappa > 0.5).
    grad = jax.grad(drm.expectile_loss)(v, q, 0.9)
    np.testing.assert_allclose(grad, [2 * 0.9 * -1 / 4, 0.0, 2 * 0.1 * 2 / 4, 2 * 0.9 * -0.5 / 4], rtol=1e-6)


def test_blended_target_by_hand():
    """min Q_tgt = [2, 1]; 0.25 V + 0.75 min Q = [4, 0.25]; y = R + Gamma * that = [4.6, 2.125]."""
    reward, discount = jnp.array([[1.0], [2.0]]), jnp.array([[0.9], [0.5]])
    q1, q2, v = jnp.array([3.0, 1.0]), jnp.array([2.0, 4.0]), jnp.array([10.0, -2.0])
    np.testing.assert_allclose(drm.blended_target(reward, discount, q1, q2, v, 0.25), [4.6, 2.125], rtol=1e-6)
    # lambda = 0 is DrQ-v2's target.
    np.testing.assert_allclose(drm.blended_target(reward, discount, q1, q2, v, 0.0),
                               drqv2.critic_target(reward, discount, q1, q2), rtol=1e-6)


# ---------------------------------------------------------------- perturbation


def expected_fresh(key, obs_shape, config):
    """phi recomputed from the documented key derivation: split(key, 3) = (main, target, value);
    split(main, 3) = (encoder, actor, critic) as in drqv2.init_params; critic target: split(target, 3)[2]."""
    sizes = (config.obs_type, config.feature_dim, config.hidden_dim, config.state_encoder_dim)
    return _expected_fresh(key, tuple(obs_shape), sizes)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _expected_fresh(key, obs_shape, sizes):
    config = dict(zip(("obs_type", "feature_dim", "hidden_dim", "state_encoder_dim"), sizes))
    config = type("Sizes", (), config)
    key_main, key_target, key_value = jax.random.split(key, 3)
    key_encoder, key_actor, key_critic = jax.random.split(key_main, 3)
    if config.obs_type == "pixels":
        encoder = encoders.PixelEncoder()
        encoder_params = encoder.init(key_encoder, jnp.zeros((1, *obs_shape), jnp.uint8))
    else:
        encoder = encoders.StateEncoder(hidden_dim=config.state_encoder_dim)
        encoder_params = encoder.init(key_encoder, jnp.zeros((1, *obs_shape)))
    features = jnp.zeros(encoder.apply(encoder_params, jnp.zeros((1, *obs_shape))).shape)
    action = jnp.zeros((1, ACTION_DIM))
    critic = actor_critic.Critic(config.feature_dim, config.hidden_dim)
    return {
        "encoder": encoder_params,
        "actor": actor_critic.Actor(ACTION_DIM, config.feature_dim, config.hidden_dim).init(key_actor, features),
        "critic": critic.init(key_critic, features, action),
        "critic_target": critic.init(jax.random.split(key_target, 3)[2], features, action),
        "value": actor_critic.Value(config.feature_dim, config.hidden_dim).init(key_value, features),
    }


@jax.jit
def used_state(state):
    """Params moved off their init (biases and LayerNorm non-trivial) and Adam states after one step."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))
    noisy = lambda tree: jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), tree)  # noqa
    opt = drqv2.optimizer(state.config)
    updates = {}
    for name in ("encoder", "actor", "critic", "value"):
        params = noisy(getattr(state, f"{name}_params"))
        grads = jax.tree.map(jnp.ones_like, params)
        updates[f"{name}_params"] = params
        updates[f"{name}_opt_state"] = opt.update(grads, opt.init(params), params)[1]
    updates["critic_target_params"] = noisy(state.critic_target_params)
    return state.replace(**updates, dormant_ratio=jnp.float32(0.3))  # alpha = 1 - 2 * 0.3 = 0.4


def is_dense(key):
    return key[-2].startswith("dense")


def check_blend(before, after, fresh, alpha, blended):
    """Each leaf: blended(key) -> alpha theta + (1 - alpha) phi, else unchanged (exactly)."""
    before, after, fresh = flat(before), flat(after), flat(fresh)
    assert before.keys() == after.keys()
    for key in before:
        if blended(key):
            np.testing.assert_allclose(after[key], alpha * before[key] + (1 - alpha) * fresh[key],
                                       rtol=1e-6, atol=1e-7, err_msg=str(key))
            assert not np.allclose(after[key], before[key]), key
        else:
            np.testing.assert_array_equal(after[key], before[key], err_msg=str(key))


perturb_jit = jax.jit(drm.perturb)


@pytest.fixture(scope="module")
def pixels_state():
    config = drm.Config(**PIXELS, max_perturb_factor=0.6, target_lambda=0.6)
    return used_state(drm.create(jax.random.PRNGKey(3), (32, 32, 9), ACTION_DIM, config))


def test_perturbation_blends_every_dense_layer_and_nothing_else(pixels_state):
    """alpha = clip(1 - 2 * 0.3, 0.2, 0.6) = 0.4. Dense kernels and biases of actor, critic, critic
    target (its own phi) and V move to alpha theta + (1 - alpha) phi; LayerNorm and the conv encoder do
    not move; every Adam state is a fresh one (count 0); beta and t0 are unchanged."""
    state, key = pixels_state, jax.random.PRNGKey(11)
    new = perturb_jit(state, key)
    fresh = expected_fresh(key, (32, 32, 9), state.config)
    alpha = 0.4
    np.testing.assert_allclose(new.perturb_alpha, alpha, rtol=1e-6)
    for name in ("actor", "critic", "critic_target", "value"):
        check_blend(getattr(state, f"{name}_params"), getattr(new, f"{name}_params"), fresh[name], alpha, is_dense)
    check_blend(state.encoder_params, new.encoder_params, fresh["encoder"], alpha, lambda key: False)
    # the critic target's phi is not the critic's: the two blends differ even where theta agreed
    assert not np.allclose(flat(fresh["critic"])[("params", "q1", "dense_0", "kernel")],
                           flat(fresh["critic_target"])[("params", "q1", "dense_0", "kernel")])
    opt = drqv2.optimizer(state.config)
    for name in ("encoder", "actor", "critic", "value"):
        reset = getattr(new, f"{name}_opt_state")
        assert tree_equal(reset, opt.init(getattr(new, f"{name}_params"))), name
        assert not tree_equal(reset, getattr(state, f"{name}_opt_state")), name
    assert float(new.dormant_ratio) == float(state.dormant_ratio) and int(new.awaken_step) == -1


def test_perturbation_options(pixels_state):
    """perturb_encoder_convs: convs blended too; copy_online: target = the perturbed critic;
    reset_opt_state=False: Adam states kept."""
    key = jax.random.PRNGKey(12)
    config = dataclasses.replace(pixels_state.config, perturb_encoder_convs=True, perturb_target="copy_online",
                                 reset_opt_state=False)
    state = pixels_state.replace(config=config)
    new = perturb_jit(state, key)
    fresh = expected_fresh(key, (32, 32, 9), config)
    check_blend(state.encoder_params, new.encoder_params, fresh["encoder"], 0.4, lambda k: k[-2].startswith("conv"))
    assert tree_equal(new.critic_target_params, new.critic_params)
    for name in ("encoder", "actor", "critic", "value"):
        assert tree_equal(getattr(new, f"{name}_opt_state"), getattr(state, f"{name}_opt_state"))


def test_perturbation_of_the_state_encoder_blends_its_dense_layers(states_agent):
    """obs_type=states: pixax's MLP encoder is made of Dense layers, so the nn.Linear rule blends it
    (biases are still 0 here: 0.4 * 0 + 0.6 * 0 leaves them unchanged)."""
    state, key = states_agent.replace(dormant_ratio=jnp.float32(0.3)), jax.random.PRNGKey(13)
    new = perturb_jit(state, key)
    fresh = expected_fresh(key, (STATE_DIM,), state.config)
    check_blend(state.encoder_params, new.encoder_params, fresh["encoder"], 0.4,
                lambda k: is_dense(k) and k[-1] == "kernel")


def test_update_perturbs_inside_jit_on_interval_steps(states_agent):
    """interval 4: step 4 perturbs first (alpha from the previous beta, Adam counts restart), then
    updates as the perturbed state does at step 6, where nothing fires (before awakening, sigma and
    everything else do not depend on the step); step 6 does not perturb."""
    batch, key = states_batch(1), jax.random.PRNGKey(5)
    state = states_agent.replace(dormant_ratio=jnp.float32(0.3))
    new, metrics = drm.update(state, batch, 4, key)
    assert float(metrics["perturbed"]) == 1.0
    np.testing.assert_allclose(metrics["alpha"], 0.4, rtol=1e-6)
    assert int(new.actor_opt_state[0].count) == 1  # reset, then one step
    perturbed = perturb_jit(state, jax.random.fold_in(key, drm._PERTURB_SALT))
    reference, reference_metrics = drm.update(perturbed, batch, 6, key)
    assert float(reference_metrics["perturbed"]) == 0.0
    for name in ("encoder", "actor", "critic", "critic_target", "value"):
        for x, y in zip(jax.tree.leaves(getattr(new, f"{name}_params")),
                        jax.tree.leaves(getattr(reference, f"{name}_params")), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    later, metrics = drm.update(new, batch, 6, key)
    assert float(metrics["perturbed"]) == 0.0 and int(later.actor_opt_state[0].count) == 2
    np.testing.assert_allclose(metrics["alpha"], 0.4, rtol=1e-6)  # alpha of the last perturbation


# ---------------------------------------------------------------- one update: beta, order, metrics


@jax.jit
def reference_update_pieces(state, batch, key):
    """beta recomputed from Actor(return_activations=True) with ReLU on the hidden layers only, and the
    mean critic target with V after / before its expectile step."""
    features = drqv2.encode(state, batch["obs"])
    _, raw = drqv2.networks(CONFIG, ACTION_DIM).actor.apply(state.actor_params, features, return_activations=True)
    official = {"trunk": raw["trunk"], "hidden_0": jax.nn.relu(raw["hidden_0"]),
                "hidden_1": jax.nn.relu(raw["hidden_1"]), "output": raw["output"]}
    beta = dormant.dormant_ratio(official, 0.025)
    sigma, lam = drm.dormant_stddev(CONFIG, beta.total), drm.target_lambda(CONFIG, beta.total)
    _, key_target, _ = jax.random.split(key, 3)
    next_features = drqv2.encode(state, batch["next_obs"])
    q1, q2 = drqv2.target_q_values(state, next_features, sigma, key_target)
    after_v_step, _ = drm.update_value(state, features, batch["action"])

    def target_mean(value_params):
        v = drm.value_network(CONFIG).apply(value_params, next_features)
        return drm.blended_target(batch["reward"], batch["discount"], q1, q2, v, lam).mean()

    return {"beta": beta.total, "beta_hidden_0": beta.per_layer["hidden_0"], "sigma": sigma, "lambda": lam,
            "target_after": target_mean(after_v_step.value_params), "target_before": target_mean(state.value_params)}


def test_update_measures_beta_then_uses_the_just_updated_value_net(states_agent):
    """Step 2 (no perturbation, before awakening): beta = the official rule on the actor's Dense outputs
    for encode(obs) with the pre-update encoder; the critic target uses sigma_dorm(beta), lambda(beta)
    and V AFTER its expectile step."""
    state, batch, key = states_agent, states_batch(2), jax.random.PRNGKey(9)
    new, metrics = drm.update(state, batch, 2, key)
    expected = reference_update_pieces(state, batch, key)
    assert 0.0 < float(expected["beta"]) < 0.2  # lambda near 0.6: the V term matters
    np.testing.assert_allclose(metrics["dormant_ratio"], expected["beta"], rtol=1e-6)
    np.testing.assert_allclose(new.dormant_ratio, expected["beta"], rtol=1e-6)
    np.testing.assert_allclose(metrics["dormant_ratio/actor/policy/dense_0"], expected["beta_hidden_0"], rtol=1e-6)
    np.testing.assert_allclose(metrics["stddev"], expected["sigma"], rtol=1e-5)
    np.testing.assert_allclose(metrics["lambda"], expected["lambda"], rtol=1e-5)
    np.testing.assert_allclose(metrics["critic_target_q"], expected["target_after"], rtol=1e-5)
    assert abs(float(expected["target_after"]) - float(expected["target_before"])) > 1e-6


def test_metrics_names(states_agent):
    _, metrics = drm.update(states_agent, states_batch(3), 2, jax.random.PRNGKey(0))
    drqv2_names = {"batch_reward", "critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss",
                   "actor_logprob", "actor_ent", "actor_stddev"}
    drm_names = {"dormant_ratio", "stddev", "lambda", "alpha", "awaken_step", "value_loss", "perturbed"}
    layers = {f"dormant_ratio/actor/{n}" for n in ("trunk/dense", "policy/dense_0", "policy/dense_1", "policy/dense_2")}
    assert drqv2_names | drm_names | layers <= set(metrics)
    assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values())


def test_actor_and_critic_dormant_network(states_agent):
    config = dataclasses.replace(CONFIG, dormant_network="actor+critic", dormant_include_output_layer=False)
    state = states_agent.replace(config=config)
    ratio = drm.measure_dormant_ratio(state, drqv2.encode(state, states_batch(4)["obs"]), states_batch(4)["action"])
    assert set(ratio.per_layer) == {"actor/trunk/dense", "actor/policy/dense_0", "actor/policy/dense_1",
                                    "critic/trunk/dense", "critic/q1/dense_0", "critic/q1/dense_1",
                                    "critic/q2/dense_0", "critic/q2/dense_1"}


def test_act_uses_sigma_from_the_state(states_agent):
    """beta = 0 and not awakened: sigma = sigma_dorm(0) = 0.1192; noise unclipped, action clamped."""
    state = states_agent.replace(dormant_ratio=jnp.float32(0.0))
    obs, key = states_batch(5)["obs"][:4], jax.random.PRNGKey(21)
    action = drm.act(state, obs, 500, key, eval_mode=False)
    mu = drm.act(state, obs, 500, key, eval_mode=True)
    noise = jax.random.normal(jax.random.split(key)[0], mu.shape) * float(drm.dormant_stddev(CONFIG, 0.0))
    np.testing.assert_allclose(action, np.clip(mu + noise, -1 + 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-6)


def test_state_is_a_pytree_with_drm_fields(states_agent):
    """beta, t0, alpha, V params and V's Adam state are leaves (orbax saves them); the config is not."""
    paths = {jax.tree_util.keystr(path[:1]) for path, _ in jax.tree_util.tree_flatten_with_path(states_agent)[0]}
    assert {".dormant_ratio", ".awaken_step", ".perturb_alpha", ".value_params", ".value_opt_state",
            ".actor_params", ".critic_target_params"} <= paths
    assert not any("config" in p for p in paths)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), states_agent, states_agent)
    assert stacked.awaken_step.shape == (2,) and stacked.config == CONFIG
    assert float(states_agent.dormant_ratio) == 1.0 and int(states_agent.awaken_step) == -1


# ---------------------------------------------------------------- mechanisms off == DrQ-v2


DRQV2_FIELDS = ("encoder_params", "actor_params", "critic_params", "critic_target_params", "encoder_opt_state",
                "actor_opt_state", "critic_opt_state")


def check_same_as_drqv2(obs_shape, base, batches, obs):
    key = jax.random.PRNGKey(42)
    ours = drm.create(key, obs_shape, ACTION_DIM, drm.Config(**base, **MECHANISMS_OFF))
    theirs = drqv2.create(key, obs_shape, ACTION_DIM, drqv2.Config(**base))
    for step, batch in zip(range(2, 2 * len(batches) + 2, 2), batches):
        update_key = jax.random.PRNGKey(step)
        ours, our_metrics = drm.update(ours, batch, step, update_key)
        theirs, their_metrics = drqv2.update(theirs, batch, step, update_key)
        for name, value in their_metrics.items():
            assert np.array_equal(our_metrics[name], value), name
        for name in DRQV2_FIELDS:
            assert tree_equal(getattr(ours, name), getattr(theirs, name)), (step, name)
    for step in (50, 500):  # uniform phase, then noisy actions
        for eval_mode in (False, True):
            act_key = jax.random.PRNGKey(step)
            np.testing.assert_array_equal(drm.act(ours, obs, step, act_key, eval_mode=eval_mode),
                                          drqv2.act(theirs, obs, step, act_key, eval_mode=eval_mode))


def test_mechanisms_off_is_exactly_drqv2():
    """From pixels (augmentation included), three updates: bit-for-bit equal params, Adam states,
    metrics and actions."""
    check_same_as_drqv2((32, 32, 9), PIXELS, [pixels_batch(s) for s in range(3)], pixels_batch(9)["obs"][:2])


# ---------------------------------------------------------------- configs


def test_official_dmc_task_configs():
    dog = drm.config_for_task("dog_run")
    assert (dog.max_perturb_factor, dog.target_lambda, dog.lr, dog.feature_dim) == (0.6, 0.6, 8e-5, 100)
    assert dog.stddev_schedule == "linear(1.0,0.1,2000000)" and dog.num_train_frames == 30_100_000
    assert drm.config_for_task("dog_trot").max_perturb_factor == 0.9
    assert drm.config_for_task("humanoid_walk").max_perturb_factor == 0.9
    walker = drm.config_for_task("walker_run")
    assert (walker.batch_size, walker.nstep, walker.max_perturb_factor, walker.target_lambda) == (512, 3, 1.0, 0.6)
    assert drm.config_for_task("quadruped_run").replay_capacity == 100_000
    assert drm.config_for_task("quadruped_walk").replay_capacity == 100_000
    manipulator = drm.config_for_task("manipulator_bring_ball")
    assert (manipulator.lr, manipulator.feature_dim, manipulator.max_perturb_factor) == (8e-5, 50, 0.9)
    assert drm.config_for_task("acrobot_swingup_sparse").lr == 1e-4
    default = drm.config_for_task("cheetah_run")
    assert (default.dormant_threshold, default.target_dormant_ratio, default.dormant_perturb_interval,
            default.perturb_rate, default.min_perturb_factor, default.expectile, default.lambda_temp,
            default.dormant_temp, default.stddev_type, default.dormant_activation) == \
        (0.025, 0.2, 100_000, 2.0, 0.2, 0.9, 50.0, 10.0, "awake", "official")
    assert drm.config_for_task("dog_run", max_perturb_factor=0.8, obs_type="states").max_perturb_factor == 0.8


def test_metaworld_and_adroit_configs():
    for name in ("mw_door-open", "mw_hammer", "door-open-v3", "metaworld_sweep-into", "assembly", "hammer-v2"):
        mw = drm.config_for_task(name)
        assert (mw.max_perturb_factor, mw.target_lambda, mw.constant_lambda, mw.expectile) == (0.95, 0.5, True, 0.9)
        assert (mw.nstep, mw.discount, mw.num_train_frames, mw.awaken_guard) == (10, 0.97, 2_100_000, False)
        assert (mw.critic_hidden_dropout, mw.critic_hidden_layer_norm, mw.critic_target_dropout, mw.proprio_dim) == \
            (0.01, True, True, 0)
    assert drm.task_domain("hammer") == ("adroit", "hammer")
    assert drm.task_domain("hammer-v3") == ("metaworld", "hammer")
    for name in ("door", "adroit_pen", "AdroitHandHammer-v1"):
        adroit = drm.config_for_task(name)
        assert (adroit.frame_stack, adroit.expectile, adroit.max_perturb_factor, adroit.target_lambda) == \
            (1, 0.7, 0.9, 0.6)
        assert adroit.num_train_frames == 6_100_000 and not adroit.constant_lambda
        assert (adroit.proprio_dim, adroit.critic_hidden_dropout, adroit.critic_hidden_layer_norm) == (24, 0.0, False)
    dmc = drm.config_for_task("cheetah_run")
    assert (dmc.proprio_dim, dmc.critic_hidden_dropout, dmc.critic_hidden_layer_norm) == (0, 0.0, False)


def test_task_without_official_values_needs_them():
    with pytest.raises(ValueError, match="max_perturb_factor"):
        drm.config_for_task("walker_walk")
    with pytest.raises(ValueError, match="target_lambda"):
        drm.config_for_task("walker_walk", max_perturb_factor=1.0)
    walker = drm.config_for_task("walker_walk", max_perturb_factor=1.0, target_lambda=0.6)
    assert (walker.nstep, walker.batch_size, walker.num_train_frames) == (1, 512, 210_000)  # DrQ-v2's, DrM's easy
    drm.config_for_task("walker_walk", perturb=False, exploitation=False)  # nothing needs them
    with pytest.raises(ValueError, match="max_perturb_factor"):
        drm.Config(target_lambda=0.6)


@pytest.mark.parametrize("field, value", [
    ("dormant_threshold", 1.5), ("dormant_threshold", -0.1), ("dormant_perturb_interval", 0),
    ("dormant_perturb_interval", 3), ("stddev_type", "max"), ("perturb_target", "none"),
    ("dormant_activation", "relu"), ("dormant_network", "critic"), ("max_perturb_factor", 0.1),
    ("max_perturb_factor", "0.6"), ("expectile", 1.0), ("target_lambda", 2.0),
    ("critic_hidden_dropout", 1.0), ("critic_hidden_dropout", -0.01), ("proprio_dim", -1),
])
def test_bad_values_are_clear_errors(field, value):
    with pytest.raises(ValueError, match=field):
        drm.config_for_task("dog_run", **{field: value})


def test_unknown_task_or_field_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'dog_fly'.*walker_run"):
        drm.config_for_task("dog_fly")
    with pytest.raises(ValueError, match="unknown Config field"):
        drm.config_for_task("dog_run", perturbation_rate=2)
