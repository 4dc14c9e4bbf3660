"""Token heads ("Don't flatten, tokenize!", pixel-agents spec §4) in the pixel encoders of TD-MPC and MoDem.

The head replaces the flatten between the last conv's feature map and the Linear to the latent. Expected
parameter trees are written out by hand from the layer sizes (spec §2.1 and tokens.py's layers); "flatten"
must give exactly the tree of the official encoders. Tiny models and horizon 1 keep the compiled programs
few: one real create and update per head (softmoe in TD-MPC, tokenize in MoDem); the other trees and latent
shapes are traced only (jax.eval_shape).
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from agents import modem, tdmpc
from core import launch

ACTION_DIM, STATE_DIM, LATENT, MLP = 2, 5, 8, 16
# 56 -> 25 -> 11 -> 5 -> 2 (four VALID convs): a 2x2x4 map, i.e. 4 "perconv" tokens of 4 channels.
TDMPC_SMALL = dict(obs_type="pixels", image_size=56, frame_stack=2, latent_dim=LATENT, mlp_dim=MLP, num_channels=4,
                   num_samples=16, num_elites=4, iterations=1, batch_size=2, horizon=1, head_expert_hidden=8)
TDMPC_SHAPE = (56, 56, 6)
# 32 -> 13 -> 5 (two VALID convs): a 5x5x4 map.
MODEM_SMALL = dict(image_size=32, num_convs=2, latent_dim=LATENT, enc_dim=16, mlp_dim=MLP, num_channels=4,
                   num_samples=16, num_elites=4, iterations=1, batch_size=2, horizon=1, head_expert_hidden=8)
MODEM_SHAPE = {"pixels": (32, 32, 6), "state": (STATE_DIM,)}


def shapes(tree) -> dict:
    return {"/".join(path): tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def dense(prefix: str, d_in: int, d_out: int) -> dict:
    return {f"{prefix}/kernel": (d_in, d_out), f"{prefix}/bias": (d_out,)}


def conv(prefix: str, kernel: int, c_in: int, c_out: int) -> dict:
    return {f"{prefix}/kernel": (kernel, kernel, c_in, c_out), f"{prefix}/bias": (c_out,)}


def told_heads_tree() -> dict:
    """Dynamics, reward, Q and pi of the small TOLD (spec §2.1), on [z, a] = 8 + 2 = 10 inputs."""
    tree = {}
    for name, d_out in (("dynamics", LATENT), ("reward", 1), ("pi", ACTION_DIM)):
        d_in = LATENT if name == "pi" else LATENT + ACTION_DIM
        for i, (a, b) in enumerate(((d_in, MLP), (MLP, MLP), (MLP, d_out))):
            tree.update(dense(f"{name}/params/dense_{i}", a, b))
    for q in ("q1", "q2"):
        for i, (a, b) in enumerate(((LATENT + ACTION_DIM, MLP), (MLP, MLP), (MLP, 1))):
            tree.update(dense(f"q/params/{q}_dense_{i}", a, b))
        tree.update({f"q/params/{q}_layer_norm/scale": (MLP,), f"q/params/{q}_layer_norm/bias": (MLP,)})
    return tree


# The official pixel encoder of the small TD-MPC: four convs of 4 channels, then Linear(2*2*4 = 16 -> 8).
TDMPC_CONVS = {**conv("conv_0", 7, 6, 4), **conv("conv_1", 5, 4, 4), **conv("conv_2", 3, 4, 4),
               **conv("conv_3", 3, 4, 4)}
TDMPC_FLATTEN_ENCODER = {**TDMPC_CONVS, **dense("dense_0", 16, LATENT)}
# MoDem's fused encoder: image convs + Linear(5*5*4 = 100 -> 8); state and fuse MLPs (S -> 16 -> 8, 8 -> 16 -> 8).
MODEM_STATE_AND_FUSE = {**dense("state/dense_0", STATE_DIM, 16), **dense("state/dense_1", 16, LATENT),
                        **dense("fuse/dense_0", LATENT, 16), **dense("fuse/dense_1", 16, LATENT)}
MODEM_CONVS = {**conv("pixels/conv_0", 7, 6, 4), **conv("pixels/conv_1", 5, 4, 4)}
MODEM_FLATTEN_ENCODER = {**MODEM_CONVS, **dense("pixels/dense_0", 100, LATENT), **MODEM_STATE_AND_FUSE}


def prefixed(prefix: str, tree: dict) -> dict:
    return {f"{prefix}/{name}": shape for name, shape in tree.items()}


def tdmpc_params_shapes(**head_fields) -> dict:
    config = tdmpc.Config(**TDMPC_SMALL, **head_fields)
    return shapes(jax.eval_shape(lambda: tdmpc.create(jax.random.PRNGKey(0), TDMPC_SHAPE, ACTION_DIM, config)).params)


def modem_encoder_shapes(**head_fields) -> dict:
    config = modem.Config(**MODEM_SMALL, **head_fields)
    state = jax.eval_shape(lambda: modem.create(jax.random.PRNGKey(0), MODEM_SHAPE, ACTION_DIM, config))
    return shapes(state.params["encoder"])


def sequences(seed: int, pixel_shape, state_dim=None, batch=2, horizon=1) -> dict:
    rng = np.random.default_rng(seed)
    pixels = jnp.asarray(rng.integers(0, 256, (batch, horizon + 1, *pixel_shape)), jnp.uint8)
    obs = pixels if state_dim is None else {
        "pixels": pixels, "state": jnp.asarray(rng.normal(size=(batch, horizon + 1, state_dim)), jnp.float32)}
    return {"obs": obs,
            "action": jnp.asarray(rng.uniform(-1, 1, (batch, horizon, ACTION_DIM)), jnp.float32),
            "reward": jnp.asarray(rng.uniform(0, 1, (batch, horizon)), jnp.float32),
            "weights": jnp.ones((batch,), jnp.float32)}


def head_leaves(tree, prefix: str) -> dict:
    return {name: np.asarray(leaf) for name, leaf in traverse_util.flatten_dict(tree, sep="/").items()
            if name.startswith(prefix)}


# ================================================================ flatten: the official encoders, unchanged


def test_flatten_is_the_official_parameter_tree():
    official = {**prefixed("encoder/params", TDMPC_FLATTEN_ENCODER), **told_heads_tree()}
    assert tdmpc_params_shapes() == official
    # "flatten" ignores every other head field (no head parameters, the same Linear)
    assert tdmpc_params_shapes(head="flatten", head_tokenizer="patch", head_patch_size=2, head_num_experts=4,
                               head_slots=8, head_aggregate="mean") == official
    assert tdmpc.model(tdmpc.Config(**TDMPC_SMALL), ACTION_DIM).encoder_net.head == ()
    assert modem_encoder_shapes() == prefixed("params", MODEM_FLATTEN_ENCODER)
    assert modem_encoder_shapes(head_num_experts=2, head_slots=8) == prefixed("params", MODEM_FLATTEN_ENCODER)


# ================================================================ TD-MPC with a token head

# (head fields, the encoder tree they give): tokenize = perconv tokens (4 of 4 dims) -> per-token
# Dense(8) ReLU Dense(4), flattened: 16 features; softmoe = SoftMoE-1 with 4 slots, mean over tokens: 4.
TDMPC_HEADS = {
    "tokenize": (dict(head="tokenize"), {
        **dense("head/token_mixer/projection/dense_0", 4, 8), **dense("head/token_mixer/projection/dense_1", 8, 4),
        **dense("dense_0", 16, LATENT)}),
    "softmoe": (dict(head="softmoe", head_slots=4, head_aggregate="mean"), {
        "head/softmoe/phi": (4, 1, 4), "head/softmoe/scale": (1,),
        "head/softmoe/experts/dense_0/kernel": (1, 4, 8), "head/softmoe/experts/dense_0/bias": (1, 8),
        "head/softmoe/experts/dense_1/kernel": (1, 8, 4), "head/softmoe/experts/dense_1/bias": (1, 4),
        **dense("dense_0", 4, LATENT)}),
}


@pytest.mark.parametrize("head", sorted(TDMPC_HEADS))
def test_tdmpc_token_head_tree_and_latent(head):
    fields, encoder_tree = TDMPC_HEADS[head]
    expected = {**prefixed("encoder/params", {**TDMPC_CONVS, **encoder_tree}), **told_heads_tree()}
    assert tdmpc_params_shapes(**fields) == expected  # the head's parameters, nothing else new, no "intermediates"
    config = tdmpc.Config(**TDMPC_SMALL, **fields)
    told = tdmpc.model(config, ACTION_DIM)
    params = jax.eval_shape(lambda: tdmpc.create(jax.random.PRNGKey(0), TDMPC_SHAPE, ACTION_DIM, config)).params
    z = jax.eval_shape(told.encode, params, jnp.zeros((3, *TDMPC_SHAPE), jnp.uint8))
    assert z.shape == (3, LATENT) and z.dtype == jnp.float32


def test_tdmpc_update_trains_the_token_head():
    """One update with the SoftMoE head (the tokenize head's update runs in MoDem's test below: one compiled
    create + update per head keeps the file fast)."""
    agent = tdmpc.create(jax.random.PRNGKey(0), TDMPC_SHAPE, ACTION_DIM,
                         tdmpc.Config(**TDMPC_SMALL, **TDMPC_HEADS["softmoe"][0]))
    new, metrics = tdmpc.update(agent, sequences(1, TDMPC_SHAPE), 10, jax.random.PRNGKey(2))
    assert all(np.all(np.isfinite(np.asarray(value))) for value in metrics.values())
    before, after = head_leaves(agent.params, "encoder/params/head"), head_leaves(new.params, "encoder/params/head")
    assert len(before) == 6 and before.keys() == after.keys()
    for name in before:
        if name.endswith("softmoe/scale"):  # used only with the router's l2 normalisation (off): no gradient
            np.testing.assert_array_equal(after[name], before[name])
        else:
            assert not np.array_equal(after[name], before[name]), f"{name} was not trained"


# ================================================================ MoDem: a token head on the image, then fusion

# patch tokens: Conv(2x2, stride 2) of the 5x5x4 map to 8 dims -> 2x2 = 4 tokens of 8; the tokenize head's
# per-token Dense(8) ReLU Dense(8); flattened: 32 features into the image Linear.
MODEM_HEAD = dict(head="tokenize", head_tokenizer="patch", head_patch_size=2, head_embed_dim=8)
MODEM_TOKEN_ENCODER = {
    **MODEM_CONVS, **conv("pixels/head/tokenizer/embedding", 2, 4, 8),
    **dense("pixels/head/token_mixer/projection/dense_0", 8, 8),
    **dense("pixels/head/token_mixer/projection/dense_1", 8, 8),
    **dense("pixels/dense_0", 32, LATENT), **MODEM_STATE_AND_FUSE}


def test_modem_token_head_fuses_with_proprioception_and_trains():
    config = modem.Config(**MODEM_SMALL, **MODEM_HEAD)
    agent = modem.create(jax.random.PRNGKey(0), MODEM_SHAPE, ACTION_DIM, config)
    assert shapes(agent.params["encoder"]) == prefixed("params", MODEM_TOKEN_ENCODER)
    told = modem.model(config, ACTION_DIM, MODEM_SHAPE["pixels"])
    batch = sequences(3, MODEM_SHAPE["pixels"], STATE_DIM)
    pixels, state = batch["obs"]["pixels"][:, 0], batch["obs"]["state"][:, 0]
    encoder = agent.params["encoder"]["params"]

    @jax.jit
    def fused_and_by_hand(params):
        z = told.encode(params, modem.pack_observations(pixels, state))

        def mlp(p, x):  # Linear ELU Linear
            hidden = jax.nn.elu(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
            return hidden @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]

        image = modem.PixelEncoder(4, 2, LATENT, head=told.encoder_net.head).apply(
            {"params": encoder["pixels"]}, pixels)
        return z, mlp(encoder["fuse"], image + mlp(encoder["state"], state))

    z, expected = fused_and_by_hand(agent.params)  # x = img_enc(pixels) + MLP_s(state); z = MLP_f(x)
    assert z.shape == (2, LATENT)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)

    new, metrics = modem.update(agent, batch, modem.demo_rows(2, 1), 0, jax.random.PRNGKey(4))
    assert all(np.all(np.isfinite(np.asarray(value))) for value in metrics.values())
    before = head_leaves(agent.params, "encoder/params/pixels/head")
    after = head_leaves(new.params, "encoder/params/pixels/head")
    assert len(before) == 6 and before.keys() == after.keys()
    for name in before:
        assert not np.array_equal(after[name], before[name]), f"{name} was not trained"


# ================================================================ configuration


@pytest.mark.parametrize("config_type, fields, message", [
    (tdmpc.Config, dict(obs_type="pixels", head="tokens"), r"head='tokens' \(must be one of"),
    (tdmpc.Config, dict(obs_type="pixels", head="softmoe", head_num_experts=4, head_slots=6),
     r"head_slots=6 \(must be a positive multiple of head_num_experts=4\)"),
    (tdmpc.Config, dict(obs_type="states", head="tokenize"), r"token heads need obs_type='pixels'"),
    (tdmpc.Config, dict(obs_type="pixels", head="softmoe", head_tokenizer="pixels"), r"head_tokenizer='pixels'"),
    (tdmpc.Config, dict(obs_type="pixels", head="tokenize", head_aggregate="max"), r"head_aggregate='max'"),
    # 84^2 leaves a 3x3 map: a 4x4 patch does not fit
    (tdmpc.Config, dict(obs_type="pixels", head="tokenize", head_tokenizer="patch", head_patch_size=4),
     r"head_patch_size=4 \(must be <= 3, the side of the encoder's 3x3 feature map at image_size=84"),
    (modem.Config, dict(head="tokens"), r"invalid Config: head='tokens'"),
    (modem.Config, dict(head="softmoe", head_num_experts=3), r"head_slots=4 \(must be a positive multiple"),
    # 224^2 through six convs leaves a 2x2 map
    (modem.Config, dict(head="softmoe", head_tokenizer="pool", head_patch_size=3), r"<= 2, the side of"),
])
def test_bad_head_values_are_refused(config_type, fields, message):
    with pytest.raises(ValueError, match=message):
        config_type(**fields)


def test_head_fields_reach_the_task_configs_and_the_launcher_at_full_size():
    config = tdmpc.config_for_task("walker_walk", obs_type="pixels", head="softmoe")
    state = jax.eval_shape(lambda: tdmpc.create(jax.random.PRNGKey(0), (84, 84, 9), 6, config))
    encoder = shapes(state.params["encoder"])
    # 84 -> 3x3x32: 9 perconv tokens of 32, one slot per token, flattened into the same Linear(288 -> 50)
    assert encoder["params/head/softmoe/phi"] == (32, 1, 9) and encoder["params/dense_0/kernel"] == (288, 50)
    config = modem.config_for_task("adroit_door", head="tokenize", head_aggregate="sum")
    state = jax.eval_shape(lambda: modem.create(jax.random.PRNGKey(0), {"pixels": (224, 224, 6), "state": (30,)},
                                                4, config))
    encoder = shapes(state.params["encoder"])
    assert encoder["params/pixels/head/token_mixer/projection/dense_0/kernel"] == (32, 256)
    assert encoder["params/pixels/dense_0/kernel"] == (32, 50)  # the sum over the 2x2 map's 4 tokens
    for config_type in (tdmpc.Config, modem.Config):
        flags = launch.unset_agent_fields(config_type)
        assert {"head", "head_tokenizer", "head_patch_size", "head_embed_dim", "head_num_experts", "head_slots",
                "head_expert_hidden", "head_aggregate"} <= set(flags)
