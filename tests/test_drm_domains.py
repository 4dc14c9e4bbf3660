"""DrM on Meta-World and Adroit (spec §2.6, §2.7, §5 #20): the Meta-World Q heads (Dropout(0.01) and
LayerNorm after each hidden Dense, by hand; dropout in every critic call of an update, the target's
included), the Adroit proprioception fusion (actor, critic and V by hand, the dormant ratio over its
layers, act and update), and both suites end to end through the shared loop on the real
environments (32x32 pixels; Meta-World episodes shortened to 30 steps so the test runs in seconds)."""

import csv
import functools

import flax.linen as nn
import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import drm, drqv2
from networks import actor_critic, dormant

STATE_DIM, ACTION_DIM, PROPRIO, FEATURES, HIDDEN, BATCH = 7, 3, 5, 6, 16, 16
TINY = dict(obs_type="states", state_encoder_dim=16, hidden_dim=HIDDEN, feature_dim=FEATURES, num_expl_steps=100,
            stddev_schedule="linear(0.5,0.1,1000)")
METAWORLD = drm.config_for_task("mw_assembly", **TINY)
ADROIT = drm.config_for_task("adroit_door", **TINY, proprio_dim=PROPRIO)


def batch_of(seed, batch_size=BATCH, proprio=False):
    rng = np.random.default_rng(seed)
    batch = {
        "obs": jnp.asarray(rng.normal(size=(batch_size, STATE_DIM)), jnp.float32),
        "action": jnp.asarray(rng.uniform(-1, 1, size=(batch_size, ACTION_DIM)), jnp.float32),
        "reward": jnp.asarray(rng.uniform(0, 1, size=(batch_size,)), jnp.float32),
        "discount": jnp.full((batch_size,), 0.97 ** 10, jnp.float32),
        "next_obs": jnp.asarray(rng.normal(size=(batch_size, STATE_DIM)), jnp.float32),
    }
    if proprio:
        batch["proprio"] = jnp.asarray(rng.normal(size=(batch_size, PROPRIO)), jnp.float32)
        batch["next_proprio"] = jnp.asarray(rng.normal(size=(batch_size, PROPRIO)), jnp.float32)
    return batch


# ---------------------------------------------------------------- numpy references


def np_dense(p, x):
    return np.asarray(x, np.float64) @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_layer_norm(p, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_relu(x):
    return np.maximum(x, 0.0)


def np_trunk(p, x):
    return np.tanh(np_layer_norm(p["layer_norm"], np_dense(p["dense"], x)))


def np_fusion(p, h, s):
    """h <- Fusion(h + StateMLP(s)), each a Dense ReLU Dense."""
    encoded = np_dense(p["state_encoder"]["dense_1"], np_relu(np_dense(p["state_encoder"]["dense_0"], s)))
    return np_dense(p["fusion"]["dense_1"], np_relu(np_dense(p["fusion"]["dense_0"], h + encoded)))


def np_mlp(p, x, layers=3):
    for i in range(layers - 1):
        x = np_relu(np_dense(p[f"dense_{i}"], x))
    return np_dense(p[f"dense_{layers - 1}"], x)


# ---------------------------------------------------------------- Meta-World Q heads


def test_metaworld_q_heads_by_hand():
    """Deterministic (eval-mode) critic: Q = Dense(ReLU(LN(Dense(ReLU(LN(Dense(concat(trunk(h), a))))))))."""
    rng = np.random.default_rng(0)
    h, a = rng.normal(size=(8, 20)).astype(np.float32), rng.uniform(-1, 1, (8, ACTION_DIM)).astype(np.float32)
    critic = actor_critic.Critic(FEATURES, HIDDEN, hidden_dropout=0.01, hidden_layer_norm=True)
    params = critic.init(jax.random.PRNGKey(0), h, a)
    p = jax.tree.map(np.asarray, params["params"])
    assert set(p["q1"]) == {"dense_0", "layer_norm_0", "dense_1", "layer_norm_1", "dense_2"}
    x = np.concatenate([np_trunk(p["trunk"], h), a], -1)
    for head, q in zip(("q1", "q2"), critic.apply(params, h, a)):
        y = x
        for i in (0, 1):
            y = np_relu(np_layer_norm(p[head][f"layer_norm_{i}"], np_dense(p[head][f"dense_{i}"], y)))
        np.testing.assert_allclose(q, np_dense(p[head]["dense_2"], y)[:, 0], rtol=1e-5, atol=1e-6)
    # Without the options the critic is DrQ-v2's, params and all.
    plain = actor_critic.Critic(FEATURES, HIDDEN)
    plain_params = plain.init(jax.random.PRNGKey(0), h, a)
    assert set(plain_params["params"]["q1"]) == {"dense_0", "dense_1", "dense_2"}


def test_metaworld_dropout_drops_one_percent_and_rescales():
    """Train mode: after each hidden Dense of Q1 and Q2, ~1% of the units are zeroed and the others scaled
    by 1/0.99 (PyTorch's Dropout(0.01)); Q1 and Q2 draw different masks; the same key gives the same masks."""
    rng = np.random.default_rng(1)
    h, a = rng.normal(size=(4096, 20)).astype(np.float32), rng.uniform(-1, 1, (4096, ACTION_DIM)).astype(np.float32)
    critic = actor_critic.Critic(FEATURES, HIDDEN, hidden_dropout=0.01, hidden_layer_norm=True)
    params = critic.init(jax.random.PRNGKey(0), h, a)
    key = jax.random.PRNGKey(5)

    def train_mode(key):
        return critic.apply(params, h, a, deterministic=False, rngs={"dropout": key},
                            capture_intermediates=lambda m, _: isinstance(m, (nn.Dense, nn.Dropout)),
                            mutable=["intermediates"])

    (q1, q2), state = train_mode(key)
    inter = state["intermediates"]
    kept_masks = []
    for head in ("q1", "q2"):
        for i in (0, 1):
            before = np.asarray(inter[head][f"dense_{i}"]["__call__"][0])
            after = np.asarray(inter[head][f"dropout_{i}"]["__call__"][0])
            kept = after != 0
            np.testing.assert_allclose(after[kept], before[kept] / 0.99, rtol=1e-6)
            assert 0.007 < 1 - kept.mean() < 0.013, 1 - kept.mean()
            kept_masks.append(kept)
    assert not np.array_equal(kept_masks[0], kept_masks[2])  # Q1 and Q2: independent masks
    deterministic = critic.apply(params, h, a)
    assert not np.allclose(q1, deterministic[0])
    np.testing.assert_array_equal(train_mode(key)[0][0], q1)
    assert not np.array_equal(train_mode(jax.random.PRNGKey(6))[0][0], q1)


@functools.partial(jax.jit, static_argnames=("target_dropout",))
def reference_metaworld_update(state, batch, key, target_dropout=True):
    """The update's metrics recomputed from drqv2's / drm's pieces with the documented keys: dropout
    masks from split(fold_in(key, _DROPOUT_SALT), 4) for V step, target, critic loss, actor loss."""
    keys = dict(zip(("value", "target", "critic", "actor"),
                    jax.random.split(jax.random.fold_in(key, drm._DROPOUT_SALT), 4)))
    _, key_target, key_actor = jax.random.split(key, 3)
    features, pullback = drqv2.encode_with_pullback(state, batch["obs"])
    next_features = drqv2.encode(state, batch["next_obs"])
    beta = drm.measure_dormant_ratio(state, features, batch["action"]).total
    awaken_step = drm.awaken(state.config, state.awaken_step, 2, beta)
    state = state.replace(dormant_ratio=beta, awaken_step=awaken_step)
    std, lam = drm.stddev(state.config, 2, beta, awaken_step), drm.target_lambda(state.config, beta)
    state, value_metrics = drm.update_value(state, features, batch["action"], dropout_key=keys["value"])
    tq1, tq2 = drqv2.target_q_values(state, next_features, std, key_target,
                                     dropout_key=keys["target"] if target_dropout else None)
    next_v = drm.value_of(state, state.value_params, next_features)
    target = drm.blended_target(batch["reward"], batch["discount"], tq1, tq2, next_v, lam)
    state, critic_metrics = drqv2.update_critic(state, features, pullback, batch["action"], target,
                                                dropout_key=keys["critic"])
    _, actor_metrics = drqv2.update_actor(state, features, std, key_actor, dropout_key=keys["actor"])
    no_target_dropout = drqv2.target_q_values(state, next_features, std, key_target)
    return {**value_metrics, **critic_metrics, **actor_metrics, "target_q_without_dropout": no_target_dropout[0]}


@pytest.mark.parametrize("target_dropout", [True, False])
def test_metaworld_update_uses_dropout_in_every_critic_call(target_dropout):
    """Official (§5 #20): the V step, the target (unless critic_target_dropout=False), the critic loss and
    the actor loss all run the critic in train mode. (No perturbation here: it is not what is tested.)"""
    config = drm.Config(**{**vars(METAWORLD), "critic_target_dropout": target_dropout, "perturb": False})
    state = drm.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, config)
    batch, key = batch_of(0), jax.random.PRNGKey(3)
    _, metrics = drm.update(state, batch, 2, key)
    expected = reference_metaworld_update(state, batch, key, target_dropout=target_dropout)
    for name in ("value_loss", "critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss"):
        np.testing.assert_allclose(metrics[name], expected[name], rtol=2e-5, atol=1e-6, err_msg=name)
    # Dropout changes the target's numbers, so the comparison above tells the two settings apart.
    assert abs(float(expected["target_q_without_dropout"].mean()) - float(expected["critic_target_q"])) > 1e-6


def test_metaworld_perturbation_blends_dense_layers_and_keeps_q_head_layer_norms():
    state = drm.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, METAWORLD)
    state = state.replace(dormant_ratio=jnp.float32(0.3))  # alpha = 1 - 2 * 0.3 = 0.4
    key = jax.random.PRNGKey(8)
    fresh = traverse_util.flatten_dict(drm.fresh_params(state, key)["critic"])
    before = traverse_util.flatten_dict(state.critic_params)
    after = traverse_util.flatten_dict(drm.perturb(state, key).critic_params)
    assert any("layer_norm_0" in path for path in after)
    for path, value in after.items():
        if path[-2].startswith("dense"):
            np.testing.assert_allclose(value, 0.4 * before[path] + 0.6 * fresh[path], rtol=1e-5, atol=1e-7)
        else:  # the trunk's and the Q heads' LayerNorms
            np.testing.assert_array_equal(value, before[path])


def test_metaworld_critic_dormant_layers():
    """dormant_network="actor+critic" with the Meta-World Q heads: the Dense layers are named as in the DMC
    critic; "post" measures ReLU(LayerNorm(x)) of the hidden layers (no dropout)."""
    config = drm.Config(**{**vars(METAWORLD), "dormant_network": "actor+critic", "dormant_activation": "post"})
    state = drm.create(jax.random.PRNGKey(0), (STATE_DIM,), ACTION_DIM, config)
    batch = jax.tree.map(lambda x: jnp.repeat(x[:1], 8, axis=0), batch_of(1))  # identical: dead ReLUs show
    features = drqv2.encode(state, batch["obs"])
    ratio = drm.measure_dormant_ratio(state, features, batch["action"])
    assert {f"critic/{h}/dense_{i}" for h in ("q1", "q2") for i in range(3)} <= set(ratio.per_layer)
    p = jax.tree.map(np.asarray, state.critic_params["params"])
    x = np.concatenate([np_trunk(p["trunk"], features), batch["action"]], -1)
    hidden = np_relu(np_layer_norm(p["q2"]["layer_norm_0"], np_dense(p["q2"]["dense_0"], x)))
    expected = dormant.dormant_ratio({"h": jnp.asarray(hidden, jnp.float32)}, 0.025).total
    assert float(expected) > 0.2
    np.testing.assert_allclose(ratio.per_layer["critic/q2/dense_0"], expected)


# ---------------------------------------------------------------- Adroit proprioception fusion


def test_fusion_in_actor_critic_and_value_by_hand():
    rng = np.random.default_rng(2)
    h, s = rng.normal(size=(8, 20)).astype(np.float32), rng.normal(size=(8, PROPRIO)).astype(np.float32)
    a = rng.uniform(-1, 1, (8, ACTION_DIM)).astype(np.float32)
    key = jax.random.PRNGKey(0)

    actor = actor_critic.Actor(ACTION_DIM, FEATURES, HIDDEN, proprio_dim=PROPRIO)
    params = actor.init(key, h, proprio=s)
    p = jax.tree.map(np.asarray, params["params"])
    fused = np_fusion(p["proprio_fusion"], np_trunk(p["trunk"], h), s)
    np.testing.assert_allclose(actor.apply(params, h, proprio=s), np.tanh(np_mlp(p["policy"], fused)),
                               rtol=1e-5, atol=1e-6)

    critic = actor_critic.Critic(FEATURES, HIDDEN, proprio_dim=PROPRIO)
    params = critic.init(key, h, a, proprio=s)
    p = jax.tree.map(np.asarray, params["params"])
    x = np.concatenate([np_fusion(p["proprio_fusion"], np_trunk(p["trunk"], h), s), a], -1)
    for head, q in zip(("q1", "q2"), critic.apply(params, h, a, proprio=s)):
        np.testing.assert_allclose(q, np_mlp(p[head], x)[:, 0], rtol=1e-5, atol=1e-6)

    value = actor_critic.Value(FEATURES, HIDDEN, proprio_dim=PROPRIO)
    params = value.init(key, h, proprio=s)
    p = jax.tree.map(np.asarray, params["params"])
    fused = np_fusion(p["proprio_fusion"], np_trunk(p["trunk"], h), s)
    np.testing.assert_allclose(value.apply(params, h, proprio=s), np_mlp(p["value"], fused)[:, 0],
                               rtol=1e-5, atol=1e-6)

    with pytest.raises(ValueError, match="proprio= of shape"):
        actor.apply(actor.init(key, h, proprio=s), h)
    with pytest.raises(ValueError, match="no proprio fusion"):
        actor_critic.Value(FEATURES, HIDDEN).init(key, h, proprio=s)


def test_adroit_dormant_ratio_includes_the_fusion_layers():
    """Official rule (spec §2.1): trunk raw, policy hidden post-ReLU, output raw, and in the fusion block
    the first Dense of each MLP post-ReLU, the second raw; pooled over all 8 layers."""
    state = drm.create(jax.random.PRNGKey(1), (STATE_DIM,), ACTION_DIM, ADROIT)
    # Identical samples: every neuron whose pre-activation is negative is dormant after a ReLU and
    # none is before it, so the rule of each layer shows in the ratio.
    batch = jax.tree.map(lambda x: jnp.repeat(x[:1], 8, axis=0), batch_of(4, proprio=True))
    features = drqv2.encode(state, batch["obs"])
    ratio = drm.measure_dormant_ratio(state, features, batch["action"], batch["proprio"])
    actor = drqv2.networks(ADROIT, ACTION_DIM).actor
    _, raw = actor.apply(state.actor_params, features, return_activations=True, proprio=batch["proprio"])
    relu_layers = ("hidden_0", "hidden_1", "state_encoder_0", "fusion_0")
    official = {name: jax.nn.relu(x) if name in relu_layers else x for name, x in raw.items()}
    assert len(official) == 8
    expected = dormant.dormant_ratio(official, 0.025)
    assert all(expected.per_layer[name] > 0.2 for name in relu_layers)
    assert float(dormant.dormant_ratio(raw, 0.025).total) < float(expected.total) - 0.1
    np.testing.assert_allclose(ratio.total, expected.total, rtol=1e-6)
    assert {"actor/proprio_fusion/state_encoder/dense_0", "actor/proprio_fusion/fusion/dense_1"} <= set(ratio.per_layer)
    np.testing.assert_allclose(ratio.per_layer["actor/proprio_fusion/fusion/dense_0"],
                               expected.per_layer["fusion_0"], rtol=1e-6)
    # The perturbation blends the fusion layers of the actor, critic and V (Dense layers all).
    paths = drm.perturbed_layers(state)
    for name in ("actor", "critic", "value"):
        assert ("proprio_fusion", "state_encoder", "dense_0") in paths[name], name


def test_adroit_act_and_update_use_proprio():
    state = drm.create(jax.random.PRNGKey(2), (STATE_DIM,), ACTION_DIM, ADROIT)
    batch, key = batch_of(5, proprio=True), jax.random.PRNGKey(4)
    mu = drm.act(state, batch["obs"], 500, key, eval_mode=True, proprio=batch["proprio"])
    expected = drqv2.networks(ADROIT, ACTION_DIM).actor.apply(
        state.actor_params, drqv2.encode(state, batch["obs"]), proprio=batch["proprio"])
    np.testing.assert_allclose(mu, expected, rtol=1e-6, atol=1e-7)

    new, metrics = drm.update(state, batch, 2, key)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    other = drm.update(state, {**batch, "proprio": batch["proprio"] + 1.0}, 2, key)[0]
    assert not np.allclose(jax.tree.leaves(new.critic_params)[0], jax.tree.leaves(other.critic_params)[0])
    other = drm.update(state, {**batch, "next_proprio": batch["next_proprio"] + 1.0}, 2, key)[1]
    assert float(other["critic_target_q"]) != float(metrics["critic_target_q"])
    with pytest.raises(ValueError, match="proprio_dim=5"):
        drm.update(state, {k: v for k, v in batch.items() if "proprio" not in k}, 2, key)


# ---------------------------------------------------------------- end to end through the shared loop


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


PIXEL_AGENT = dict(image_size=32, hidden_dim=16, feature_dim=4, batch_size=8, num_expl_steps=20,
                   num_seed_frames=80, replay_capacity=2000, num_eval_episodes=1)


def test_metaworld_end_to_end_with_the_launcher(tmp_path, monkeypatch):
    """`launch.run(drm, ...)` on mw_assembly from 32x32 pixels, episodes shortened to 30 agent steps:
    success columns in metrics.csv / eval.csv, and the replay holds 1 + 30 entries for the first
    episode and 2 + 30 for every later one (the double reset)."""
    import envs
    from core import launch

    short = functools.partial(envs.metaworld.MetaWorldEnv, max_episode_steps=30)
    monkeypatch.setitem(envs.SUITES, "metaworld", envs.Suite(envs.SUITES["metaworld"].tasks, short,
                                                             envs.SUITES["metaworld"].domain_of))
    config = launch.base_config(drm.Config)
    config.task, config.root, config.progress, config.save_video = "mw_assembly", str(tmp_path), False, False
    config.async_envs = "false"
    for name, value in dict(PIXEL_AGENT, num_train_frames=240, eval_every_frames=120).items():
        config.agent[name] = value
    summary = launch.run(drm, "drm", config)

    train_rows = read_csv(f"{summary['run_dir']}/metrics.csv")
    assert [int(r["buffer_size"]) for r in train_rows] == [31, 63, 95, 127]
    assert all(float(r["episode_success"]) in (0.0, 1.0) for r in train_rows)
    assert np.isfinite(float(train_rows[-1]["critic_loss"])) and "dormant_ratio" in train_rows[-1]
    eval_rows = read_csv(f"{summary['run_dir']}/eval.csv")
    assert [int(r["frame"]) for r in eval_rows] == [0, 120]
    assert all(float(r["success_rate"]) in (0.0, 1.0) for r in eval_rows)


def test_adroit_end_to_end_stores_and_uses_proprio(tmp_path):
    """adroit_door from 32x32 pixels (action repeat 8: 25-step episodes): the replay stores the 24 hand
    joint positions of every entry, the DrM update fuses them, success columns are logged."""
    from core.offpolicy import LoopConfig, OffPolicyTrainer

    config = drm.config_for_task("adroit_door", obs_type="pixels", **PIXEL_AGENT)
    loop = LoopConfig(task="adroit_door", seeds=(0,), action_repeat=8, frame_stack=1, image_size=32,
                      num_train_frames=400, num_seed_frames=80, batch_size=8, replay_capacity=2000,
                      nstep=config.nstep, discount=config.discount, eval_every_frames=200, num_eval_episodes=1,
                      checkpoint_every_frames=10_000, save_video=False, progress=False, async_envs=False)
    trainer = OffPolicyTrainer(drm, config, loop, str(tmp_path))
    try:
        assert trainer.proprio_shape == (24,) and trainer.states.value_params["params"]["proprio_fusion"]
        trainer.train()
        replay = trainer.replays[0]
        stored = replay.state_dict()["proprio"][:len(replay)]
    finally:
        trainer.close()
    # 2 x (reset + 25 steps): the door task resets the hand to its zero pose, then the hand moves.
    assert stored.shape == (52, 24)
    resets = np.array([0, 26])
    np.testing.assert_array_equal(stored[resets], 0.0)
    assert np.abs(np.delete(stored, resets, axis=0)).sum(axis=1).min() > 0
    assert not np.allclose(stored[1], stored[20])
    train_rows = read_csv(tmp_path / "metrics.csv")
    assert len(train_rows) == 2 and "episode_success" in train_rows[0]
    assert np.isfinite(float(train_rows[-1]["critic_loss"]))
    assert "actor/proprio_fusion/fusion/dense_0" in " ".join(train_rows[-1])
    eval_rows = read_csv(tmp_path / "eval.csv")
    assert [int(r["frame"]) for r in eval_rows] == [0, 200]
    assert all(float(r["success_rate"]) in (0.0, 1.0) for r in eval_rows)
