"""agents.modem (spec model-offline-onpolicy-agents.md §3, §10 #1-7, §11 "MoDem demo mixing" / "MoDem phases").

References are hand-computed values (BC loss, demo-ratio schedule, weight normalization), the spec's
numbers (official config), or statistics of many draws (the seed-phase action), never the code under
test. A tiny agent (16x16 pixels, two convs, 8-d latent) keeps the compiled programs few and small.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import modem, tdmpc

ACTION_DIM, STATE_DIM, H = 2, 5, 5
PIXEL_SHAPE = (16, 16, 6)  # 16x16 RGB, frame_stack 2, channel-last
OBS_SHAPE = {"pixels": PIXEL_SHAPE, "state": (STATE_DIM,)}
TINY = modem.Config(image_size=16, num_convs=2, latent_dim=8, enc_dim=16, mlp_dim=16, num_channels=4, num_samples=16,
                    num_elites=4, iterations=2, batch_size=6, num_seed_frames=200)  # seed_steps = 200 / 2 = 100


@pytest.fixture(scope="module")
def agent():
    return modem.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, TINY)


def sequences(seed, n, weights=None):
    """n random sequences as a MoDem buffer samples them."""
    rng = np.random.default_rng(seed)
    return {
        "obs": {"pixels": jnp.asarray(rng.integers(0, 256, (n, H + 1, *PIXEL_SHAPE)), jnp.uint8),
                "state": jnp.asarray(rng.normal(size=(n, H + 1, STATE_DIM)), jnp.float32)},
        "action": jnp.asarray(rng.uniform(-1, 1, (n, H, ACTION_DIM)), jnp.float32),
        "reward": jnp.asarray(rng.uniform(0, 1, (n, H)), jnp.float32),
        "weights": jnp.asarray(rng.uniform(0.2, 1, n) if weights is None else weights, jnp.float32),
    }


def one_obs(seed):
    rng = np.random.default_rng(seed)
    return {"pixels": jnp.asarray(rng.integers(0, 256, PIXEL_SHAPE), jnp.uint8),
            "state": jnp.asarray(rng.normal(size=STATE_DIM), jnp.float32)}


# ================================================================ config and schedules


def test_config_has_modems_values_per_suite():
    for task, iterations, schedule in (("adroit_door", 8, "linear(0.75,0.25,50000)"),
                                       ("mw_assembly", 4, "linear(0.5,0.25,50000)"),
                                       ("quadruped_run", 6, "linear(0.75,0.25,50000)")):
        c = modem.config_for_task(task)
        assert (c.iterations, c.demo_schedule) == (iterations, schedule)
        assert (c.lr, c.batch_size, c.std_schedule) == (3e-4, 256, "linear(0.1,0.05,12500)")
        assert (c.frame_stack, c.image_size, c.action_repeat, c.obs_type) == (2, 224, 2, "pixels")
        assert (c.eval_every_frames, c.num_eval_episodes, c.demos, c.clip_final_action) == (2000, 30, 5, True)
        assert (modem.seed_steps(c), c.num_train_frames // c.action_repeat, c.latent_dim) == (5000, 100_000, 50)
        # everything else is TD-MPC's (spec §3.4)
        assert (c.horizon, c.num_samples, c.num_elites, c.mixture_coef) == (5, 512, 64, 0.05)
        assert (c.temperature, c.momentum, c.min_std, c.rho, c.tau) == (0.5, 0.1, 0.05, 0.5, 0.01)
        assert (c.consistency_coef, c.reward_coef, c.value_coef) == (2.0, 0.5, 0.1)
    assert modem.bc_iterations(modem.config_for_task("adroit_door"), 100) == 1000  # 2 x 5 demos x 100 (door)
    assert float(modem.std_floor(modem.config_for_task("adroit_door"), 6250)) == pytest.approx(0.075)
    assert modem.min_image_size(6) == 135 and modem.min_image_size(2) == 15


def test_bad_task_field_or_value_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        modem.config_for_task("door_open")
    with pytest.raises(ValueError, match="unknown Config field"):
        modem.config_for_task("adroit_door", demo_ratio=0.5)
    with pytest.raises(ValueError, match="image_size"):
        modem.Config(image_size=64)  # six convs need >= 135
    with pytest.raises(ValueError, match="obs_type"):
        modem.Config(obs_type="states")
    with pytest.raises(ValueError, match="demo_schedule"):
        modem.Config(demo_schedule="linear(1.5,0.25,50000)")


def test_demo_batch_size_follows_the_schedule():
    expected = {"adroit_door": (192, 128, 64, 64), "mw_assembly": (128, 96, 64, 64), "walker_walk": (192, 128, 64, 64)}
    for task, sizes in expected.items():
        c = modem.config_for_task(task)
        assert tuple(modem.demo_batch_size(c, s) for s in (0, 25_000, 50_000, 100_000)) == sizes
        assert modem.batch_split(c, 25_000) == (256 - sizes[1], sizes[1])
    c = modem.config_for_task("adroit_door")
    assert modem.demo_batch_size(c, 1000) == 189  # floor(0.74 * 256 = 189.44)


def test_traced_demo_batch_size_equals_the_host_value():
    traced = jax.jit(modem.traced_demo_batch_size, static_argnums=0)
    # by hand (DMC / Adroit 0.75 -> 0.25 over 50k of 256): 192 - step / 390.625, then 64
    by_hand = {0: 192, 1000: 189, 3125: 184, 3126: 183, 25_000: 128, 49_999: 64, 50_000: 64, 100_000: 64}
    c = modem.config_for_task("walker_walk")
    for step, size in by_hand.items():
        assert modem.demo_batch_size(c, step) == size == int(traced(c, jnp.int32(step))), step
    # and at every 7th step of 0..60k of each suite's schedule plus a small batch (float32 vs Python floats)
    steps = np.arange(0, 60_001, 7)
    for c in (modem.config_for_task("adroit_door"), modem.config_for_task("mw_assembly"),
              dataclasses.replace(TINY, demo_schedule="linear(0.5,0.25,160)")):
        on_device = np.asarray(jax.jit(jax.vmap(lambda s: modem.traced_demo_batch_size(c, s)))(jnp.asarray(steps)))
        host = np.array([modem.demo_batch_size(c, int(s)) for s in steps])
        np.testing.assert_array_equal(on_device, host)
        assert on_device.dtype == np.int32


def test_demo_rows_are_the_last_n_demo():
    np.testing.assert_array_equal(modem.demo_rows(5, jnp.int32(2)), [False, False, False, True, True])
    np.testing.assert_array_equal(modem.demo_rows(3, 0), [False, False, False])


# ================================================================ model


def test_fused_encoder_adds_image_and_state_features_then_fuses(agent):
    told, params = modem.model(TINY, ACTION_DIM, PIXEL_SHAPE), agent.params
    enc = params["encoder"]["params"]
    assert enc["state"]["dense_0"]["kernel"].shape == (STATE_DIM, 16)  # Linear(S, enc_dim) ELU Linear(enc_dim, latent)
    assert enc["fuse"]["dense_0"]["kernel"].shape == (8, 16)  # Linear(latent, enc_dim) ELU Linear(enc_dim, latent)
    obs = one_obs(1)
    packed = modem.pack_observations(obs["pixels"][None], obs["state"][None])
    pixels, state = modem.unpack_observations(packed, PIXEL_SHAPE)
    np.testing.assert_array_equal(pixels[0], np.asarray(obs["pixels"], np.float32))
    np.testing.assert_array_equal(state[0], obs["state"])

    def mlp(p, x):  # Linear ELU Linear by hand
        h = jax.nn.elu(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
        return h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]

    image = modem.PixelEncoder(4, 2, 8).apply({"params": enc["pixels"]}, obs["pixels"][None])
    expected = mlp(enc["fuse"], image + mlp(enc["state"], obs["state"][None]))
    np.testing.assert_allclose(told.encode(params, packed), expected, rtol=1e-5, atol=1e-6)
    # Full size: six VALID convs map 224 -> 2, so the image projection reads 32 * 2 * 2 = 128 features.
    full = modem.config_for_task("adroit_door")
    shapes = jax.eval_shape(lambda: modem.model(full, 4, (224, 224, 6)).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 224 * 224 * 6 + 30)), 4))
    assert shapes["encoder"]["params"]["pixels"]["dense_0"]["kernel"].shape == (128, 50)
    assert "conv_5" in shapes["encoder"]["params"]["pixels"]


# ================================================================ phase 1: behaviour cloning


class LinearModel(NamedTuple):
    """encode(o) = o @ W, pi(z) = tanh(z @ V): a model whose BC loss is computable by hand."""

    def encode(self, params, obs):
        return obs @ params["W"]

    def pi(self, params, z):
        return jnp.tanh(z @ params["V"])


def test_bc_loss_by_hand():
    params = {"W": jnp.eye(2), "V": jnp.array([[0.5, 0.0], [0.0, -1.0]])}
    obs = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    action = jnp.array([[0.0, 0.5], [1.0, 0.0]])
    # pi = [[tanh(0.5), 0], [0, tanh(-2)]] = [[0.462117, 0], [0, -0.964028]]
    # squared errors 0.213552, 0.25, 1, 0.929350 -> mean over batch and action dims = 2.392902 / 4
    assert float(modem.bc_loss(LinearModel(), params, obs, action)) == pytest.approx(0.5982255, abs=1e-6)


def test_bc_update_trains_encoder_and_policy_only(agent):
    batch = sequences(3, 6)
    fast = agent.replace(config=dataclasses.replace(TINY, lr=3e-3))  # 25 steps suffice to see it learn
    state, losses = fast, []
    for i in range(25):
        state, metrics = modem.bc_update(state, batch, jax.random.PRNGKey(i))
        losses.append(float(metrics["bc_loss"]))
    assert losses[-1] < 0.5 * losses[0]
    for name in ("dynamics", "reward", "q"):
        chex_equal = jax.tree.map(np.array_equal, state.params[name], agent.params[name])
        assert all(jax.tree.leaves(chex_equal)), name
    for name in ("encoder", "pi"):
        assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, state.params[name], agent.params[name]))), name
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, state.target_params, agent.target_params)))
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, state.model_opt_state, agent.model_opt_state)))


# ================================================================ phase 2: seeding acts with the BC policy


def _with_policy_bias(agent, bias):
    """The agent with pi's last bias set, so that pi(z) = tanh(bias) for any z (last kernel zeroed)."""
    pi = jax.tree.map(lambda x: x, agent.params["pi"])
    pi["params"]["dense_2"]["kernel"] = jnp.zeros_like(pi["params"]["dense_2"]["kernel"])
    pi["params"]["dense_2"]["bias"] = jnp.asarray(bias, jnp.float32)
    return agent.replace(params={**agent.params, "pi": pi})


def _train_plans(agent, obs, keys, steps, prev_mean):
    """plan in training mode for many (key, step) pairs at once (one compiled program)."""
    return jax.vmap(lambda k, step: modem.plan(agent, obs, k, prev_mean, step=step, horizon=2, first_step=True,
                                               eval_mode=False))(keys, steps)


def test_seed_phase_acts_with_the_bc_policy_plus_clipped_noise_then_plans(agent):
    obs, keys = one_obs(4), jax.random.split(jax.random.PRNGKey(5), 401)
    steps = jnp.asarray([0] * 400 + [100])  # seed_steps = 100: the last one plans
    prev_mean = jnp.full((H, ACTION_DIM), 0.3)
    mu = np.tanh([0.8, 3.0])  # pi(z) = (0.664, 0.995)
    actions, means = _train_plans(_with_policy_bias(agent, [0.8, 3.0]), obs, keys, steps, prev_mean)
    seed_actions, seed_means = np.asarray(actions[:400]), np.asarray(means[:400])
    noise = seed_actions[:, 0] - mu[0]
    assert abs(noise.mean()) < 0.01 and noise.std() == pytest.approx(0.05, rel=0.15)  # min_std; uniform: 0.58
    assert np.all(noise <= 0.3) and np.all(noise >= -0.3)
    assert np.all(seed_actions[:, 1] <= 1 - 1e-6 + 1e-7) and seed_actions[:, 1].max() > 0.99  # clamped below 1
    np.testing.assert_array_equal(seed_means, np.broadcast_to(prev_mean, seed_means.shape))  # warm start untouched
    # after seeding the planner acts: a new mean over the 2 planned steps, zeros beyond
    assert np.any(np.asarray(means[400, :2]) != 0.3) and np.all(np.asarray(means[400, 2:]) == 0)


def test_evaluation_always_plans(agent):
    action, mean = modem.plan(agent, one_obs(6), jax.random.PRNGKey(7), jnp.zeros((H, ACTION_DIM)), step=0,
                              horizon=1, first_step=True, eval_mode=True)  # step 0 < seed_steps
    assert np.all(np.asarray(mean[:1]) != 0) and np.all(np.asarray(mean[1:]) == 0)
    assert np.all(np.abs(np.asarray(action)) <= 1)


# ================================================================ phase 3: one update on interaction + demo data


def test_combine_batches_picks_rows_and_normalizes_each_sub_batch_over_its_used_rows():
    interaction = sequences(8, 5, weights=[0.5, 2.0, 1.0, 8.0, 9.0])  # rows 3, 4 unused: their 8 and 9 ignored
    demo = sequences(9, 5, weights=[7.0, 6.0, 0.2, 0.1, 0.4])  # rows 0-2 unused
    is_demo = jnp.array([False, False, False, True, True])
    combined = modem.combine_batches(interaction, demo, is_demo)
    # by hand: interaction [0.5, 2, 1] / 2, demo [0.1, 0.4] / 0.4
    np.testing.assert_allclose(combined["weights"], [0.25, 1.0, 0.5, 0.25, 1.0])
    np.testing.assert_array_equal(combined["obs"]["pixels"][:3], interaction["obs"]["pixels"][:3])
    np.testing.assert_array_equal(combined["obs"]["pixels"][3:], demo["obs"]["pixels"][3:])  # demo part last
    np.testing.assert_array_equal(combined["obs"]["state"][3:], demo["obs"]["state"][3:])
    np.testing.assert_array_equal(combined["action"][:3], interaction["action"][:3])
    np.testing.assert_array_equal(combined["reward"][3:], demo["reward"][3:])
    alone = modem.combine_batches(interaction, demo, jnp.zeros(5, bool))  # no demo row
    np.testing.assert_allclose(alone["weights"], [0.5 / 9, 2 / 9, 1 / 9, 8 / 9, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(alone["action"], interaction["action"])


def test_update_returns_a_priority_per_row(agent):
    interaction, demo = sequences(10, 6), sequences(11, 6)
    is_demo = modem.demo_rows(6, 2)
    key = jax.random.PRNGKey(12)
    batch = modem.combine_batches(interaction, demo, is_demo)
    state, metrics = modem.update(agent, batch, is_demo, 0, key)
    assert metrics["priorities"].shape == (6,)
    assert float(metrics["demo_batch_size"]) == 2
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    assert np.all(np.asarray(metrics["priorities"]) > 0)
    # Priorities are per row: changing one demo sequence changes only its own row's priority; changing an
    # unused row changes nothing at all.
    changed = jax.tree.map(lambda x: x, demo)
    changed["reward"] = demo["reward"].at[5].add(5.0)
    _, other = modem.update(agent, modem.combine_batches(interaction, changed, is_demo), is_demo, 0, key)
    np.testing.assert_array_equal(other["priorities"][:5], metrics["priorities"][:5])
    assert other["priorities"][5] > metrics["priorities"][5] + 1
    unused = jax.tree.map(lambda x: x, demo)
    unused["reward"] = demo["reward"].at[0].add(5.0)
    _, same = modem.update(agent, modem.combine_batches(interaction, unused, is_demo), is_demo, 0, key)
    np.testing.assert_array_equal(same["priorities"], metrics["priorities"])
    # one TD-MPC update: model, policy and (step 0 is even) the EMA moved; the BC optimizer did not
    assert not np.allclose(state.params["q"]["params"]["q1_dense_2"]["kernel"], 0)
    ema = tdmpc.ema(agent.target_params, state.params, TINY.tau)
    np.testing.assert_allclose(state.target_params["pi"]["params"]["dense_2"]["kernel"],
                               ema["pi"]["params"]["dense_2"]["kernel"], rtol=1e-6)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, state.bc_opt_state, agent.bc_opt_state)))
    assert TINY.batch_size == 6  # the config is never rewritten with a sub-batch size (spec §10 #4)


def test_create_refuses_a_wrong_observation_shape():
    with pytest.raises(ValueError, match="'pixels'.*'state'"):
        modem.create(jax.random.PRNGKey(0), PIXEL_SHAPE, ACTION_DIM, TINY)
    with pytest.raises(ValueError, match="channel-last"):
        modem.create(jax.random.PRNGKey(0), {"pixels": (32, 32, 6), "state": (5,)}, ACTION_DIM, TINY)
