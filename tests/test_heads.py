"""Token heads ("Don't flatten, tokenize!") inside DrQ-v2 and DrM (spec §4.7): the trunks tokenize the
encoder's feature map; flatten stays exactly DrQ-v2; DrM measures and perturbs the head's Dense layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from agents import drm, drqv2
from tests.batches import ACTION_DIM, pixels_batch

SMALL = dict(hidden_dim=32, feature_dim=16, image_size=32, batch_size=8, head_expert_hidden=16,
             head_embed_dim=8, head_patch_size=3, head_slots=4)
DRM = dict(max_perturb_factor=0.9, target_lambda=0.6)
OBS_SHAPE = (32, 32, 9)  # encoder map 9x9x32 -> patch 3 -> 3x3 = 9 tokens of 8


def flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree))


@pytest.mark.parametrize("head, module", [("tokenize", "token_mixer"), ("softmoe", "softmoe")])
def test_token_head_in_every_trunk(head, module):
    state = drqv2.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, drqv2.config_for_task(
        "cartpole_swingup", head=head, **SMALL))
    features = drqv2.encode(state, pixels_batch(0)["obs"])
    assert features.shape == (8, 9, 9, 32)  # the map, not the flat 2592-vector
    for params in (state.actor_params, state.critic_params):
        names = ["/".join(k) for k in flat(params)]
        assert any(f"trunk/head/{module}" in n for n in names)
        assert any(n.startswith("params/trunk/head/tokenizer/embedding") for n in names)
        # the trunk's Dense takes the aggregated tokens: 9 tokens x 8 dims, flattened
        assert flat(params)[("params", "trunk", "dense", "kernel")].shape == (9 * 8, 16)


def test_flatten_head_is_drqv2():
    """head=flatten (the default) keeps DrQ-v2's parameter tree and numbers."""
    sizes = dict(hidden_dim=32, feature_dim=16, image_size=32)
    plain = drqv2.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, drqv2.config_for_task("cartpole_swingup", **sizes))
    named = drqv2.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, drqv2.config_for_task(
        "cartpole_swingup", head="flatten", head_num_experts=4, head_slots=8, **sizes))
    assert not any("head" in "/".join(k) for k in flat(named.actor_params))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(named)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("head", ["tokenize", "softmoe"])
def test_updates_learn_a_fixed_batch(head):
    """Repeated updates on one batch lower the critic loss (gradients reach the head)."""
    config = drqv2.config_for_task("cartpole_swingup", head=head, lr=1e-3, **SMALL)
    state = drqv2.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, config)
    batch = pixels_batch(1)
    before = flat(state.critic_params)
    losses = []
    for i in range(30):
        state, metrics = drqv2.update(state, batch, 10_000, jax.random.PRNGKey(i))
        losses.append(float(metrics["critic_loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    after = flat(state.critic_params)
    moved = [k for k in before if "head" in k and not np.allclose(before[k], after[k])]
    assert moved, "the token head's params never changed"


def test_drm_measures_and_perturbs_the_head():
    """beta includes the SoftMoE experts' Dense layers (dormant_include_moe, default on) and the
    perturbation blends them like every Dense: theta <- alpha theta + (1 - alpha) phi."""
    config = drm.config_for_task("cartpole_swingup", head="softmoe", **SMALL, **DRM)
    state = drm.create(jax.random.PRNGKey(0), OBS_SHAPE, ACTION_DIM, config)
    features = drqv2.encode(state, pixels_batch(0)["obs"])
    beta = drm.measure_dormant_ratio(state, features, pixels_batch(0)["action"])
    assert {"actor/trunk/head/softmoe/experts/dense_0", "actor/trunk/head/softmoe/experts/dense_1"} <= set(beta.per_layer)
    off = drm.config_for_task("cartpole_swingup", head="softmoe", dormant_include_moe=False, **SMALL, **DRM)
    beta_off = drm.measure_dormant_ratio(state.replace(config=off), features, pixels_batch(0)["action"])
    assert not any("head" in name for name in beta_off.per_layer)

    paths = drm.perturbed_layers(state)["actor"]
    assert ("trunk", "head", "softmoe", "experts", "dense_0") in paths
    state = state.replace(dormant_ratio=jnp.float32(0.3))  # alpha = clip(1 - 2 * 0.3, 0.2, 0.9) = 0.4
    key = jax.random.PRNGKey(5)
    new = jax.jit(drm.perturb)(state, key)
    fresh = flat(drm.fresh_params(state, key)["actor"])
    before, after = flat(state.actor_params), flat(new.actor_params)
    kernel = ("params", "trunk", "head", "softmoe", "experts", "dense_0", "kernel")
    np.testing.assert_allclose(after[kernel], 0.4 * before[kernel] + 0.6 * fresh[kernel], rtol=1e-5, atol=1e-6)
    for name in (("params", "trunk", "head", "softmoe", "phi"), ("params", "trunk", "layer_norm", "scale")):
        np.testing.assert_array_equal(after[name], before[name])  # the router and LayerNorm are not Dense


@pytest.mark.parametrize("field, value, message", [
    ("head", "moe", "head"), ("head_tokenizer", "rows", "head_tokenizer"), ("head_aggregate", "max", "head_aggregate"),
    ("head_slots", 6, "head_slots"),
])
def test_bad_head_settings_are_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        drqv2.config_for_task("cartpole_swingup", **{**SMALL, "head": "softmoe", "head_num_experts": 4, field: value})


def test_token_heads_need_pixels():
    with pytest.raises(ValueError, match="pixels"):
        drqv2.config_for_task("cartpole_swingup", obs_type="states", head="tokenize")
