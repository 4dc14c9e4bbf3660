"""agents.dqn, agents.rainbow and networks.atari: targets and losses against hand values, the C51
projection against hand values and a brute-force loop, the epsilon schedule, the target sync period,
PER weights, acting, network shapes, one learning step, and config errors. Tiny networks and 20x20
images throughout; the paper-size shapes are checked with eval_shape (no compute)."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import dqn, rainbow
from networks import atari

OBS_SHAPE = (20, 20, 4)
NUM_ACTIONS = 3
TINY = dict(hidden_dim=16, expert_hidden=8, num_experts=2, embed_dim=8)
DQN_CONFIG = dqn.Config(encoder="nature", lr=1e-3, epsilon_eval=0.0, **TINY)
RAINBOW_CONFIG = rainbow.Config(encoder="nature", lr=1e-3, num_atoms=11, epsilon_eval=0.0, **TINY)


def fixed_batch(seed=0, batch_size=8, probabilities=None):
    rng = np.random.default_rng(seed)
    batch = {
        "obs": jnp.asarray(rng.integers(0, 256, size=(batch_size, *OBS_SHAPE)), jnp.uint8),
        "action": jnp.asarray(rng.integers(0, NUM_ACTIONS, size=(batch_size,)), jnp.float32),
        "reward": jnp.asarray(rng.choice([-1.0, 0.0, 1.0], size=(batch_size,)), jnp.float32),
        "discount": jnp.asarray(np.where(rng.uniform(size=batch_size) < 0.25, 0.0, 0.99), jnp.float32),
        "next_obs": jnp.asarray(rng.integers(0, 256, size=(batch_size, *OBS_SHAPE)), jnp.uint8),
    }
    if probabilities is not None:
        batch["probabilities"] = jnp.asarray(probabilities, jnp.float32)
    return batch


# ---------------------------------------------------------------- DQN pieces against hand values


@pytest.mark.parametrize("jit", [False, True])
def test_dqn_target_hand_values(jit):
    target_fn = jax.jit(dqn.dqn_target) if jit else dqn.dqn_target
    reward = jnp.array([1.0, 0.5, -1.0])
    discount = jnp.array([0.99, 0.0, 0.99 ** 3])
    next_q = jnp.array([[1.0, 3.0], [2.0, -1.0], [-2.0, -4.0]])
    np.testing.assert_allclose(target_fn(reward, discount, next_q),
                               [1 + 0.99 * 3, 0.5, -1 - 0.99 ** 3 * 2], rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_huber_and_mse_hand_values(jit):
    huber = jax.jit(dqn.huber_loss) if jit else dqn.huber_loss
    targets = jnp.array([0.5, 2.0, -3.0, 1.0])
    predictions = jnp.zeros(4)
    # |x| <= 1: x^2 / 2; else 1/2 + (|x| - 1)
    np.testing.assert_allclose(huber(targets, predictions), [0.125, 1.5, 2.5, 0.5], rtol=1e-6)
    # delta 2, |x| = 3: 0.5 * 4 + 2 * (3 - 2) = 4
    np.testing.assert_allclose(dqn.huber_loss(jnp.array([3.0]), jnp.array([0.0]), delta=2.0), [4.0])
    np.testing.assert_allclose(dqn.mse_loss(targets, predictions), [0.25, 4.0, 9.0, 1.0])


def test_linearly_decaying_epsilon_hand_values():
    values = [float(dqn.linearly_decaying_epsilon(s, 100, 10, 0.01)) for s in (0, 10, 60, 110, 10_000)]
    np.testing.assert_allclose(values, [1.0, 1.0, 0.505, 0.01, 0.01], rtol=1e-6)
    # Dopamine's values: 1 for 20 000 steps (80 000 seed frames / 4), 0.01 after 250 000 more.
    config = dqn.Config()
    assert config.warmup_steps == 20_000
    np.testing.assert_allclose([float(dqn.train_epsilon(config, s)) for s in (0, 20_000, 145_000, 270_000, 10**7)],
                               [1.0, 1.0, 0.505, 0.01, 0.01], rtol=1e-6)


def test_epsilon_greedy_extremes():
    q = jnp.tile(jnp.array([[0.0, 2.0, 1.0]]), (512, 1))
    greedy = dqn.epsilon_greedy(jax.random.PRNGKey(0), q, 0.0)
    assert greedy.dtype == jnp.int32 and np.all(np.asarray(greedy) == 1)
    uniform = np.asarray(dqn.epsilon_greedy(jax.random.PRNGKey(1), q, 1.0))
    counts = np.bincount(uniform, minlength=3)
    assert counts.min() > 512 / 3 * 0.7, counts  # every action, roughly uniformly


def test_target_sync_due_exactly_at_the_period():
    update_steps = np.arange(0, 40_001, 4)  # updates every 4 agent steps
    due = np.asarray(dqn.target_sync_due(jnp.asarray(update_steps), 8000, 4))
    np.testing.assert_array_equal(update_steps[due], [0, 8000, 16_000, 24_000, 32_000, 40_000])
    # A period that is not a multiple of the update period: the first update at or after each multiple.
    update_steps = np.arange(0, 41, 4)
    due = np.asarray(dqn.target_sync_due(jnp.asarray(update_steps), 10, 4))
    np.testing.assert_array_equal(update_steps[due], [0, 12, 20, 32, 40])


def test_sync_target_copies_online_params_only_when_due():
    config = dqn.Config(target_update_period=8000, update_every_steps=4)
    state = dqn.DQNState(params={"w": jnp.ones(3)}, target_params={"w": jnp.zeros(3)}, opt_state=(),
                         config=config, action_dim=2, obs_shape=OBS_SHAPE)
    for step, copied in ((7996, False), (8000, True), (8004, False), (16_000, True)):
        new_state, synced = dqn.sync_target(state, jnp.int32(step))
        np.testing.assert_array_equal(new_state.target_params["w"], np.full(3, 1.0 if copied else 0.0))
        assert float(synced) == float(copied)


# ---------------------------------------------------------------- Rainbow pieces


def c51_projection_brute_force(reward, discount, probabilities, support):
    """Bellemare et al. (2017) Algorithm 1, one atom at a time (floor / ceil split)."""
    v_min, v_max, num_atoms = support[0], support[-1], len(support)
    delta_z = (v_max - v_min) / (num_atoms - 1)
    projected = np.zeros(num_atoms)
    for z, p in zip(support, probabilities):
        tz = min(max(reward + discount * z, v_min), v_max)
        b = (tz - v_min) / delta_z
        lower, upper = int(math.floor(b)), int(math.ceil(b))
        if lower == upper:
            projected[lower] += p
        else:
            projected[lower] += p * (upper - b)
            projected[upper] += p * (b - lower)
    return projected


def test_project_distribution_hand_values():
    support = jnp.array([-1.0, 0.0, 1.0])
    # -0.5 splits evenly between -1 and 0; 0.5 between 0 and 1; 2.0 is clipped to 1; -3.0 to -1.
    np.testing.assert_allclose(
        rainbow.project_distribution(jnp.array([-0.5, 0.5, 2.0]), jnp.array([0.2, 0.3, 0.5]), support),
        [0.1, 0.25, 0.65], rtol=1e-6)
    np.testing.assert_allclose(
        rainbow.project_distribution(jnp.array([-3.0, 0.0, 0.75]), jnp.array([0.6, 0.3, 0.1]), support),
        [0.6, 0.3 + 0.025, 0.075], rtol=1e-6)
    # Batched, through categorical_target: a terminal transition (discount 0) puts all mass around R.
    next_probabilities = jnp.array([[[0.2, 0.3, 0.5]], [[0.2, 0.3, 0.5]]])  # (B=2, A=1, K=3)
    target = rainbow.categorical_target(jnp.array([0.25, 0.0]), jnp.array([0.0, 0.5]), next_probabilities,
                                        jnp.array([0, 0]), support)
    np.testing.assert_allclose(target[0], [0.0, 0.75, 0.25], rtol=1e-6)
    # discount 0.5, reward 0: atoms at -0.5, 0, 0.5 -> [0.1, 0.1 + 0.3 + 0.25, 0.25]
    np.testing.assert_allclose(target[1], [0.1, 0.65, 0.25], rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_project_distribution_against_brute_force(jit):
    rng = np.random.default_rng(0)
    support = np.linspace(-10.0, 10.0, 51)
    batch = 64
    reward = rng.uniform(-15, 15, size=batch)  # some targets fall outside [v_min, v_max]
    discount = np.where(rng.uniform(size=batch) < 0.25, 0.0, 0.99 ** rng.integers(1, 11, size=batch))
    probabilities = rng.dirichlet(np.ones(51), size=batch)
    project = jax.jit(rainbow.project_distribution) if jit else rainbow.project_distribution
    supports_target = reward[:, None] + discount[:, None] * support[None, :]
    ours = np.asarray(project(jnp.asarray(supports_target, jnp.float32), jnp.asarray(probabilities, jnp.float32),
                              jnp.asarray(support, jnp.float32)))
    expected = np.stack([c51_projection_brute_force(reward[i], discount[i], probabilities[i], support)
                         for i in range(batch)])
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(ours.sum(-1), 1.0, rtol=1e-5)


def test_dueling_combination_hand_values():
    value = jnp.array([[[5.0, 1.0]]])  # (B=1, 1, K=2)
    advantage = jnp.array([[[1.0, 0.0], [2.0, 3.0], [6.0, 0.0]]])  # (B=1, A=3, K=2); means 3, 1
    np.testing.assert_allclose(atari.dueling_combine(value, advantage)[0],
                               [[3.0, 0.0], [4.0, 3.0], [8.0, 0.0]])


def test_double_dqn_next_action_and_target():
    online_q, target_q = jnp.array([[1.0, 5.0, 2.0]]), jnp.array([[9.0, 0.0, 0.0]])
    assert int(rainbow.next_actions(online_q, target_q, double_dqn=True)[0]) == 1
    assert int(rainbow.next_actions(online_q, target_q, double_dqn=False)[0]) == 0
    # The target distribution is the target network's at the action the online network picked.
    support = jnp.array([-1.0, 0.0, 1.0])
    next_probabilities = jnp.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    action = rainbow.next_actions(online_q, target_q, double_dqn=True)
    target = rainbow.categorical_target(jnp.zeros(1), jnp.ones(1), next_probabilities, action, support)
    np.testing.assert_allclose(target[0], [0.0, 0.0, 1.0])


def test_cross_entropy_and_per_hand_values():
    np.testing.assert_allclose(rainbow.cross_entropy(jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2))), [math.log(2)],
                               rtol=1e-6)
    # 1/sqrt(p) = [3.162, 1.581, 6.325] -> divided by the max: [0.5, 0.25, 1]
    np.testing.assert_allclose(rainbow.per_loss_weights(jnp.array([0.1, 0.4, 0.025])), [0.5, 0.25, 1.0], rtol=1e-5)
    np.testing.assert_allclose(rainbow.priorities_from_loss(jnp.array([0.0, 4.0, -1e-7])), [1e-5, 2.0, 1e-5],
                               rtol=1e-5)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("encoder, channels", [("nature", 64), ("impala", 32)])
def test_encoders_paper_size_feature_maps(encoder, channels):
    """84x84x4 -> 11x11 (Flax SAME padding), spec §4.2: 121 tokens of 64 (Nature) / 32 (Impala)."""
    module = atari.ENCODERS[encoder]()
    obs = jnp.zeros((2, 84, 84, 4), jnp.uint8)
    out = jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), obs)[0])
    assert out.shape == (2, 11, 11, channels)


@pytest.mark.parametrize("encoder", ["nature", "impala"])
@pytest.mark.parametrize("head", ["flatten", "tokenize", "softmoe"])
@pytest.mark.parametrize("rainbow_net", [False, True])
def test_q_network_shapes(encoder, head, rainbow_net):
    extra = dict(noisy=True, dueling=True, num_atoms=11) if rainbow_net else {}
    net = atari.QNetwork(NUM_ACTIONS, encoder=encoder, head=head, num_experts=2, expert_hidden=8, hidden_dim=16,
                         **extra)
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    out, params = jax.eval_shape(lambda: net.init_with_output(rngs, jnp.zeros((5, *OBS_SHAPE), jnp.uint8)))
    assert out.q.shape == (5, NUM_ACTIONS)
    if rainbow_net:
        assert out.logits.shape == out.probabilities.shape == (5, NUM_ACTIONS, 11)
    else:
        assert out.logits is None and out.probabilities is None
    # The tokenized heads replace the penultimate Dense (Dopamine's MoE networks).
    assert ("dense_hidden" in params["params"]) == (head == "flatten")
    assert ("dense_advantage" in params["params"]) == rainbow_net


# ---------------------------------------------------------------- agents: act and update


@pytest.fixture(scope="module")
def dqn_agent():
    return dqn.create(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS, DQN_CONFIG)


@pytest.fixture(scope="module")
def rainbow_agent():
    return rainbow.create(jax.random.PRNGKey(0), OBS_SHAPE, NUM_ACTIONS, RAINBOW_CONFIG)


def test_dqn_act_greedy_in_eval_and_random_in_seed_phase(dqn_agent):
    obs = fixed_batch(1, batch_size=64)["obs"]
    greedy = np.asarray(jnp.argmax(dqn.apply_network(dqn_agent, dqn_agent.params, obs).q, axis=-1))
    for seed in range(2):
        action = dqn.act(dqn_agent, obs, 0, jax.random.PRNGKey(seed), eval_mode=True)
        assert action.shape == (64,) and action.dtype == jnp.int32
        np.testing.assert_array_equal(action, greedy)  # epsilon_eval = 0
    # Training at step 0 (seed phase): epsilon 1, so uniform actions, not the greedy ones.
    action = np.asarray(dqn.act(dqn_agent, obs, 0, jax.random.PRNGKey(0), eval_mode=False))
    assert len(np.unique(action)) == NUM_ACTIONS and (action != greedy).mean() > 0.4


def test_rainbow_act_eval_is_noise_free_and_greedy(rainbow_agent):
    obs = fixed_batch(1, batch_size=16)["obs"]
    q = rainbow.dqn.apply_network(rainbow_agent, rainbow_agent.params, obs, noise=False).q
    for seed in range(2):
        action = rainbow.act(rainbow_agent, obs, 0, jax.random.PRNGKey(seed), eval_mode=True)
        np.testing.assert_array_equal(action, np.argmax(q, axis=-1))


def test_distributional_output_is_a_distribution_with_its_mean_as_q(rainbow_agent):
    obs = fixed_batch(1, batch_size=4)["obs"]

    @jax.jit
    def outputs(key_a, key_b):  # one compiled program for the three calls
        apply = functools.partial(dqn.apply_network, rainbow_agent, rainbow_agent.params, obs)
        return apply(key_a, noise=True), apply(key_b, noise=True), apply(noise=False, expert_noise=False)

    out, other_noise, quiet = outputs(jax.random.PRNGKey(2), jax.random.PRNGKey(3))
    assert out.probabilities.shape == (4, NUM_ACTIONS, 11)
    np.testing.assert_allclose(out.probabilities.sum(-1), 1.0, rtol=1e-5)
    support = np.linspace(-10.0, 10.0, 11)
    np.testing.assert_allclose(out.q, (np.asarray(out.probabilities) * support).sum(-1), rtol=1e-5, atol=1e-5)
    # Noise on changes the output with the key; noise off is the mean network.
    assert not np.allclose(out.q, other_noise.q) and not np.allclose(out.q, quiet.q)


def test_per_sample_noise_draws_differ_across_rows(rainbow_agent):
    obs = jnp.repeat(fixed_batch(2, batch_size=1)["obs"], 4, axis=0)  # four identical rows
    shared_state = rainbow_agent.replace(config=dataclasses.replace(RAINBOW_CONFIG, per_sample_noise=False))

    @jax.jit
    def both(key):
        return (rainbow.online_outputs(rainbow_agent, rainbow_agent.params, obs, key).q,
                rainbow.online_outputs(shared_state, rainbow_agent.params, obs, key).q)

    per_row, shared = both(jax.random.PRNGKey(5))
    assert not np.allclose(per_row[0], per_row[1])
    np.testing.assert_allclose(shared, np.repeat(shared[:1], 4, axis=0), rtol=1e-6)


def test_dqn_updates_reduce_the_loss_on_a_fixed_batch(dqn_agent):
    batch, state, losses = fixed_batch(3), dqn_agent, []
    for i in range(15):
        state, metrics = dqn.update(state, batch, jnp.int32(100), jax.random.PRNGKey(i))  # no sync at 100
        losses.append(float(metrics["loss"]))
        assert all(v.shape == () and v.dtype == jnp.float32 for v in metrics.values())
    assert float(metrics["target_synced"]) == 0.0
    assert losses[-1] < 0.7 * losses[0], losses
    # The target network is untouched until a sync step, then equals the online network.
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.target_params, dqn_agent.params))
    state, metrics = dqn.update(state, batch, jnp.int32(8000), jax.random.PRNGKey(0))
    assert float(metrics["target_synced"]) == 1.0
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.target_params, state.params))


def test_rainbow_updates_reduce_the_loss_and_return_priorities(rainbow_agent):
    """Terminal transitions with rewards on atoms (support -10, -8, ..., 10): the target is one-hot,
    so the cross-entropy can go to 0 and must fall."""
    probabilities = np.array([0.1, 0.4, 0.025, 0.2, 0.1, 0.05, 0.05, 0.075])
    batch = {**fixed_batch(4, probabilities=probabilities), "discount": jnp.zeros(8),
             "reward": jnp.array([-2.0, 0.0, 2.0, 2.0, 0.0, -2.0, 4.0, 0.0])}
    state, losses = rainbow_agent, []
    for i in range(15):
        state, metrics = rainbow.update(state, batch, jnp.int32(100), jax.random.PRNGKey(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses
    priorities = np.asarray(metrics.pop("priorities"))
    assert priorities.shape == (8,) and np.all(priorities > 0)
    assert all(v.shape == () and v.dtype == jnp.float32 for v in metrics.values())
    # priorities^2 are the per-sample cross-entropies; the loss weights them by 1/sqrt(p) / max.
    per_sample = priorities ** 2 - 1e-10
    np.testing.assert_allclose(per_sample.mean(), metrics["cross_entropy"], rtol=1e-4)
    weights = (1 / np.sqrt(probabilities)) / (1 / np.sqrt(probabilities)).max()
    np.testing.assert_allclose((weights * per_sample).mean(), metrics["loss"], rtol=1e-4)


# ---------------------------------------------------------------- configs


def test_dopamine_values_of_the_presets():
    d = dqn.config_for_task("atari_pong")
    assert (d.lr, d.adam_eps, d.nstep, d.discount, d.target_update_period, d.update_every_steps) == \
        (6.25e-5, 1.5e-4, 1, 0.99, 8000, 4)
    assert (d.num_seed_frames // d.action_repeat, d.epsilon_train, d.epsilon_eval, d.epsilon_decay_period) == \
        (20_000, 0.01, 0.001, 250_000)
    assert (d.batch_size, d.replay_capacity, d.encoder, d.num_experts, d.sticky_actions, d.reward_clip) == \
        (32, 1_000_000, "nature", 8, True, 1.0)
    r = rainbow.config_for_task("atari_pong")
    assert (r.lr, r.nstep, r.num_atoms, r.v_max, r.encoder, r.num_experts) == (6.25e-5, 3, 51, 10.0, "impala", 4)
    assert r.noisy and r.dueling and r.double_dqn and r.prioritized
    assert dqn.support_bounds(r) == (-10.0, 10.0)
    der = rainbow.config_for_task("atari_pong", preset="der")
    assert (der.lr, der.adam_eps, der.nstep, der.num_seed_frames // der.action_repeat, der.update_every_steps,
            der.target_update_period, der.encoder, der.num_experts) == (1e-4, 1.5e-4, 10, 1600, 1, 2000, "nature", 4)
    assert (der.num_train_frames // der.action_repeat, der.sticky_actions, der.terminal_on_life_loss) == \
        (100_001, False, True)
    # User values come last; the toy tier applies to toy_catch.
    assert rainbow.config_for_task("atari_pong", preset="der", nstep=5).nstep == 5
    assert dqn.config_for_task("toy_catch").action_repeat == 1


@pytest.mark.parametrize("build, words", [
    (lambda: dqn.Config(encoder="resnet"), ["encoder", "nature", "impala"]),
    (lambda: dqn.Config(head="gap"), ["head", "flatten", "tokenize", "softmoe"]),
    (lambda: dqn.Config(loss_type="cross_entropy"), ["loss_type", "mse", "huber"]),
    (lambda: rainbow.Config(num_atoms=1), ["num_atoms"]),
    (lambda: rainbow.Config(v_max=-1.0), ["v_max"]),
    (lambda: rainbow.config_for_task("atari_pong", preset="c51"), ["preset", "rainbow", "der"]),
    (lambda: dqn.config_for_task("atari_pong", learning_rate=1.0), ["learning_rate", "lr"]),
    (lambda: dqn.config_for_task("cheetah_run"), ["cheetah_run", "atari_*", "toy_*"]),
    (lambda: atari.QNetwork(3, encoder="resnet"), ["resnet", "nature", "impala"]),
    (lambda: dqn.create(jax.random.PRNGKey(0), OBS_SHAPE, 0, DQN_CONFIG), ["action_dim"]),
])
def test_config_errors_name_valid_values(build, words):
    with pytest.raises(ValueError) as error:
        build()
    for word in words:
        assert word in str(error.value), (word, str(error.value))
