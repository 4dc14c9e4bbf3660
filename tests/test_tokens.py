"""networks.tokens and networks.noisy: SoftMoE against a brute-force loop reference on hand-set
parameters, router normalisation, batch independence and permutation equivariance, tokenizers
against numpy loops, Head output shapes, slot counts, parameter counts of SoftMoE-n vs SoftMoE-1
scaled (formulas written out here), NoisyDense's init, mean-only path, factorised noise structure and
noise statistics, and the errors for bad arguments."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks import noisy, tokens

# ----------------------------------------------------------------------------------------------
# A brute-force SoftMoE in plain Python loops (no einsum, no softmax helper)
# ----------------------------------------------------------------------------------------------


def _relu(v):
    return [max(0.0, a) for a in v]


def _affine(v, kernel, bias):
    """v @ kernel + bias with loops; kernel is (in, out)."""
    return [sum(v[i] * kernel[i][j] for i in range(len(v))) + bias[j] for j in range(len(bias))]


def _norm(v):
    return math.sqrt(sum(a * a for a in v))


def reference_softmoe(x, phi, scale, normalize, w0, b0, w1, b1):
    """One sample. x: m lists of d; phi[k][e][q]; w0[e] (d, H); w1[e] (H, d).
    Returns (output m x d, dispatch[t][e][q], combine[t][e][q])."""
    m, d = len(x), len(x[0])
    n, p = len(phi[0]), len(phi[0][0])
    router_x = [[a / (_norm(row) + 1e-6) for a in row] for row in x] if normalize else x

    def phi_entry(k, e, q):
        if not normalize:
            return phi[k][e][q]
        column_norm = math.sqrt(sum(phi[kk][e][q] ** 2 for kk in range(d)))
        return scale * phi[k][e][q] / (column_norm + 1e-6)

    logits = [[[sum(router_x[t][k] * phi_entry(k, e, q) for k in range(d)) for q in range(p)]
               for e in range(n)] for t in range(m)]
    dispatch = [[[math.exp(logits[t][e][q]) / sum(math.exp(logits[s][e][q]) for s in range(m))
                  for q in range(p)] for e in range(n)] for t in range(m)]
    combine = [[[math.exp(logits[t][e][q]) / sum(math.exp(logits[t][f][r]) for f in range(n) for r in range(p))
                 for q in range(p)] for e in range(n)] for t in range(m)]
    slot_outputs = {}
    for e, q in itertools.product(range(n), range(p)):
        slot_input = [sum(dispatch[t][e][q] * x[t][k] for t in range(m)) for k in range(d)]
        slot_outputs[e, q] = _affine(_relu(_affine(slot_input, w0[e], b0[e])), w1[e], b1[e])
    output = [[sum(combine[t][e][q] * slot_outputs[e, q][k] for e in range(n) for q in range(p))
               for k in range(d)] for t in range(m)]
    return output, dispatch, combine


def softmoe_params(phi, scale, w0, b0, w1, b1):
    as_array = lambda a: jnp.asarray(a, jnp.float32)
    return {"params": {
        "phi": as_array(phi), "scale": as_array([scale]),
        "experts": {"dense_0": {"kernel": as_array(w0), "bias": as_array(b0)},
                    "dense_1": {"kernel": as_array(w1), "bias": as_array(b1)}}}}


# 3 tokens of dim 2, 2 experts with 1 slot each, hidden width 2.
X = [[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]]
PHI = [[[0.5], [1.0]], [[-1.0], [1.0]]]  # phi[k][e][q]: expert 0 column (0.5, -1), expert 1 column (1, 1)
W0 = [[[1.0, -1.0], [0.5, 2.0]], [[-0.5, 1.0], [1.0, 1.0]]]
B0 = [[0.1, -0.2], [0.0, 0.3]]
W1 = [[[1.0, 0.0], [-1.0, 0.5]], [[0.2, -0.3], [0.4, 1.0]]]
B1 = [[0.0, 0.1], [-0.1, 0.0]]


def test_softmoe_matches_hand_computed_case():
    # Logits by hand: token 0 -> (0.5, 1), token 1 -> (-2, 2), token 2 -> (1.5, 0).
    expected, dispatch, combine = reference_softmoe(X, PHI, 1.0, False, W0, B0, W1, B1)
    e1 = [math.exp(1.0), math.exp(2.0), math.exp(0.0)]  # expert 1's logits over the 3 tokens
    np.testing.assert_allclose([dispatch[t][1][0] for t in range(3)], np.array(e1) / sum(e1), rtol=1e-12)
    np.testing.assert_allclose(combine[1][0][0], math.exp(-2) / (math.exp(-2) + math.exp(2)), rtol=1e-12)

    layer = tokens.SoftMoE(num_experts=2, slots_per_expert=1, expert_hidden=2)
    variables = softmoe_params(PHI, 1.0, W0, B0, W1, B1)
    out, state = layer.apply(variables, jnp.asarray([X]), mutable=["intermediates"])
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)
    # Router statistic: combine weight per expert averaged over tokens (and the single slot).
    per_expert = [np.mean([combine[t][e][0] for t in range(3)]) for e in range(2)]
    np.testing.assert_allclose(state["intermediates"]["combine_weight_per_expert"][0], per_expert, rtol=1e-5)
    # Under jit too.
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, jnp.asarray([X]))[0], expected,
                               rtol=1e-5, atol=1e-6)


def test_softmoe_normalized_router_two_slots():
    """One expert, two slots, router l2-normalisation on with learnable scale 2."""
    phi = [[[0.3, -1.0]], [[2.0, 0.5]]]  # (d=2, n=1, p=2)
    w0, b0 = [W0[0]], [B0[0]]
    w1, b1 = [W1[0]], [B1[0]]
    expected, _, _ = reference_softmoe(X, phi, 2.0, True, w0, b0, w1, b1)
    unnormalized, _, _ = reference_softmoe(X, phi, 2.0, False, w0, b0, w1, b1)
    assert np.max(np.abs(np.array(expected) - np.array(unnormalized))) > 1e-2  # the flag matters here
    layer = tokens.SoftMoE(num_experts=1, slots_per_expert=2, expert_hidden=2, normalize=True)
    out = layer.apply(softmoe_params(phi, 2.0, w0, b0, w1, b1), jnp.asarray([X]))
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_nan_dispatch_is_zeroed_before_the_experts():
    """Token 0's logit for slot 0 overflows to inf, so slot 0's dispatch column is nan. With the
    nan -> 0 guard slot 0 receives the zero vector, and tokens 1 and 2 (which put all their combine
    weight on slot 0) get expert(0) = relu(b0) W1 + b1; only token 0 itself is lost."""
    x = jnp.asarray([[[1e20], [1.0], [2.0]]])
    w0, b0, w1, b1 = [[[1.0, -2.0]]], [[0.5, -0.3]], [[[2.0], [1.0]]], [[0.25]]
    layer = tokens.SoftMoE(num_experts=1, slots_per_expert=2, expert_hidden=2)
    out = np.asarray(layer.apply(softmoe_params([[[1e20, 1.0]]], 1.0, w0, b0, w1, b1), x))
    expert_of_zero = max(0.5, 0.0) * 2.0 + max(-0.3, 0.0) * 1.0 + 0.25
    np.testing.assert_allclose(out[0, 1:, 0], [expert_of_zero, expert_of_zero], rtol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_dispatch_and_combine_are_distributions_within_each_sample(normalize):
    key_x, key_phi = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (3, 5, 4))
    phi = jax.random.normal(key_phi, (4, 2, 3))
    dispatch, combine = tokens.router_weights(x, phi, jnp.array([1.5]), normalize)
    assert dispatch.shape == combine.shape == (3, 5, 2, 3)
    np.testing.assert_allclose(dispatch.sum(axis=1), np.ones((3, 2, 3)), rtol=1e-5)  # over tokens, per slot
    np.testing.assert_allclose(combine.sum(axis=(2, 3)), np.ones((3, 5)), rtol=1e-5)  # over slots, per token
    assert np.all(np.asarray(dispatch) > 0) and np.all(np.asarray(combine) > 0)


def _random_softmoe(num_experts=2, num_tokens=6, token_dim=3, **kwargs):
    layer = tokens.SoftMoE(num_experts=num_experts, expert_hidden=8, **kwargs)
    x = jax.random.normal(jax.random.key(1), (2, num_tokens, token_dim))
    variables = layer.init(jax.random.key(2), x)
    return layer, variables, x


def test_softmoe_is_permutation_equivariant_over_tokens():
    layer, variables, x = _random_softmoe()
    permutation = np.array([3, 0, 5, 1, 4, 2])
    out = layer.apply(variables, x)
    out_permuted = layer.apply(variables, x[:, permutation])
    np.testing.assert_allclose(out_permuted, out[:, permutation], rtol=1e-5, atol=1e-6)


def test_softmoe_does_not_mix_samples():
    layer, variables, x = _random_softmoe()
    out = layer.apply(variables, x)
    changed = x.at[1].set(100.0 * jax.random.normal(jax.random.key(3), x.shape[1:]))
    out_changed = layer.apply(variables, changed)
    np.testing.assert_allclose(out_changed[0], out[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.apply(variables, x[:1])[0], out[0], rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(np.asarray(out_changed[1] - out[1]))) > 1e-3


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------

FMAP = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype(np.float32)


def test_tokenize_perconv_and_perfeat_exact():
    batch, height, width, channels = FMAP.shape
    perconv = np.asarray(tokens.tokenize(jnp.asarray(FMAP), "perconv"))
    perfeat = np.asarray(tokens.tokenize(jnp.asarray(FMAP), "perfeat"))
    assert perconv.shape == (batch, height * width, channels)
    assert perfeat.shape == (batch, channels, height * width)
    for b, i, j in itertools.product(range(batch), range(height), range(width)):
        np.testing.assert_array_equal(perconv[b, i * width + j], FMAP[b, i, j, :])
    for b, c in itertools.product(range(batch), range(channels)):
        column = [FMAP[b, i, j, c] for i in range(height) for j in range(width)]
        np.testing.assert_array_equal(perfeat[b, c], column)


def test_patch_and_pool_tokenizers_against_loops():
    patch, embed = 3, 4  # 7x7 map -> 2x2 patches (the last row and column are dropped: VALID)
    tokenizer = tokens.Tokenizer("patch", patch_size=patch, embed_dim=embed)
    variables = tokenizer.init(jax.random.key(0), FMAP)
    kernel = np.asarray(variables["params"]["embedding"]["kernel"])  # (3, 3, 3, embed)
    bias = np.asarray(variables["params"]["embedding"]["bias"])
    patch_tokens = np.asarray(tokenizer.apply(variables, FMAP))
    pool_tokens = np.asarray(tokens.Tokenizer("pool", patch_size=patch).apply({}, FMAP))
    assert patch_tokens.shape == (2, 4, embed) and pool_tokens.shape == (2, 4, 3)
    for b, a, c in itertools.product(range(2), range(2), range(2)):
        window = FMAP[b, patch * a:patch * a + patch, patch * c:patch * c + patch, :]
        expected = sum(window[i, j] @ kernel[i, j] for i in range(patch) for j in range(patch)) + bias
        np.testing.assert_allclose(patch_tokens[b, 2 * a + c], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pool_tokens[b, 2 * a + c], window.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Head
# ----------------------------------------------------------------------------------------------

# 7x7x3 map, patch 3, embed 5: (tokens, token dim) per tokenizer.
TOKEN_SHAPES = {"perconv": (49, 3), "perfeat": (3, 49), "patch": (4, 5), "pool": (4, 3)}


@pytest.mark.parametrize("kind,tokenizer,aggregate", [
    (kind, tokenizer, aggregate)
    for kind in ("tokenize", "softmoe") for tokenizer in tokens.TOKENIZERS for aggregate in tokens.AGGREGATES])
def test_head_output_shapes(kind, tokenizer, aggregate):
    head = tokens.Head(kind=kind, tokenizer=tokenizer, patch_size=3, embed_dim=5, num_experts=2,
                       expert_hidden=8, aggregate=aggregate)
    # Abstract evaluation: shapes without compiling (the numbers are checked in the other tests).
    variables = jax.eval_shape(head.init, jax.random.key(0), FMAP)
    out = jax.eval_shape(head.apply, variables, FMAP)
    num_tokens, token_dim = TOKEN_SHAPES[tokenizer]
    expected_features = num_tokens * token_dim if aggregate == "flatten" else token_dim
    assert out.shape == (2, expected_features)


def test_flatten_head_is_a_reshape_without_params():
    head = tokens.Head()  # kind "flatten", the default
    variables = head.init(jax.random.key(0), FMAP)
    assert jax.tree_util.tree_leaves(variables) == []
    np.testing.assert_array_equal(head.apply(variables, FMAP), FMAP.reshape(2, -1))


def test_tokenize_head_mean_and_sum_aggregate_the_shared_projection():
    """The tokenized baseline: one projection for every token, then mean / sum over tokens."""
    outs = {}
    for aggregate in tokens.AGGREGATES:
        head = tokens.Head(kind="tokenize", expert_hidden=8, aggregate=aggregate)
        variables = head.init(jax.random.key(0), FMAP)  # same key: same params for the three heads
        outs[aggregate] = np.asarray(head.apply(variables, FMAP))
    params = variables["params"]["token_mixer"]["projection"]
    w0, b0 = np.asarray(params["dense_0"]["kernel"]), np.asarray(params["dense_0"]["bias"])
    w1, b1 = np.asarray(params["dense_1"]["kernel"]), np.asarray(params["dense_1"]["bias"])
    per_token = np.stack([np.stack([np.maximum(FMAP[b, i, j] @ w0 + b0, 0) @ w1 + b1
                                    for i in range(7) for j in range(7)]) for b in range(2)])
    np.testing.assert_allclose(outs["flatten"], per_token.reshape(2, -1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs["mean"], per_token.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs["sum"], per_token.sum(axis=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_experts,capacity_factor,expected_slots", [
    (1, 1.0, 121), (4, 1.0, 31), (8, 1.0, 16), (4, 0.5, 16), (121, 1.0, 1), (200, 1.0, 1)])
def test_default_slots_per_expert_is_ceil_of_tokens_over_experts(num_experts, capacity_factor, expected_slots):
    layer = tokens.SoftMoE(num_experts=num_experts, capacity_factor=capacity_factor, expert_hidden=2)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 121, 4)))  # 11x11 perconv tokens
    assert shapes["params"]["phi"].shape == (4, num_experts, expected_slots)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def test_parameter_count_softmoe_n_vs_softmoe_1_scaled():
    m, d, n, hidden = 9, 4, 4, 8  # a 3x3x4 map, perconv tokens
    fmap = jnp.zeros((1, 3, 3, d))
    moe_n = tokens.Head(kind="softmoe", num_experts=n, expert_hidden=hidden)
    moe_1 = tokens.Head(kind="softmoe", num_experts=1, expert_hidden=tokens.scaled_expert_hidden(n, hidden))
    params_n = jax.eval_shape(moe_n.init, jax.random.key(0), fmap)["params"]["softmoe"]
    params_1 = jax.eval_shape(moe_1.init, jax.random.key(0), fmap)["params"]["softmoe"]

    assert tokens.scaled_expert_hidden(n, hidden) == n * hidden
    slots_n, slots_1 = math.ceil(m / n), m  # 3 and 9
    # One expert of width H: d*H + H (first Dense) + H*d + d (second Dense).
    experts_n = n * (d * hidden + hidden + hidden * d + d)
    experts_1 = d * (n * hidden) + n * hidden + (n * hidden) * d + d
    assert (experts_n, experts_1) == (304, 292)
    assert _count(params_n["experts"]) == experts_n
    assert _count(params_1["experts"]) == experts_1
    # Expert weight matrices equal; only the n output biases of SoftMoE-n differ from the 1 of SoftMoE-1.
    kernels = lambda p: _count(p["experts"]["dense_0"]["kernel"]) + _count(p["experts"]["dense_1"]["kernel"])
    assert kernels(params_n) == kernels(params_1) == 2 * n * d * hidden
    assert experts_n - experts_1 == (n - 1) * d
    # Router phi (d, n, p) plus the scalar scale.
    assert _count(params_n) == experts_n + d * n * slots_n + 1 == 353
    assert _count(params_1) == experts_1 + d * 1 * slots_1 + 1 == 329


def test_noisy_experts_mean_path_and_fresh_noise():
    head = tokens.Head(kind="softmoe", num_experts=2, expert_hidden=8, noisy_experts=True)
    variables = head.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, FMAP)
    experts = variables["params"]["softmoe"]["experts"]
    assert set(experts["dense_0"]) == {"kernel_mu", "kernel_sigma", "bias_mu", "bias_sigma"}
    assert set(experts["dense_1"]) == {"kernel", "bias"}

    # noisy=False needs no RNG and equals a plain SoftMoE whose first expert layer holds the means.
    quiet = head.apply(variables, FMAP, noisy=False)
    plain = tokens.Head(kind="softmoe", num_experts=2, expert_hidden=8)
    plain_params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    plain_params["softmoe"]["experts"]["dense_0"] = {"kernel": experts["dense_0"]["kernel_mu"],
                                                     "bias": experts["dense_0"]["bias_mu"]}
    np.testing.assert_allclose(quiet, plain.apply({"params": plain_params}, FMAP), rtol=1e-5, atol=1e-6)

    noisy_apply = jax.jit(lambda v, x, key: head.apply(v, x, rngs={"noise": key}))
    out_a, out_b = noisy_apply(variables, FMAP, jax.random.key(5)), noisy_apply(variables, FMAP, jax.random.key(6))
    np.testing.assert_allclose(noisy_apply(variables, FMAP, jax.random.key(5)), out_a)  # same key, same noise
    assert np.max(np.abs(np.asarray(out_a - out_b))) > 1e-4
    assert np.max(np.abs(np.asarray(out_a - quiet))) > 1e-4


# ----------------------------------------------------------------------------------------------
# NoisyDense
# ----------------------------------------------------------------------------------------------

IN, OUT = 4, 3
X_IN = jnp.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]])


def _noisy_layer(sigma0=0.5):
    layer = noisy.NoisyDense(OUT, sigma0=sigma0)
    variables = layer.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, X_IN)
    return layer, variables, {k: np.asarray(v) for k, v in variables["params"].items()}


def test_noisy_dense_init_matches_dopamine():
    assert noisy.NoisyDense(OUT).sigma0 == 0.1
    _, _, params = _noisy_layer(sigma0=0.1)
    np.testing.assert_allclose(params["kernel_sigma"], np.full((IN, OUT), 0.1 / 2.0), rtol=1e-6)
    np.testing.assert_allclose(params["bias_sigma"], np.full((OUT,), 0.1 / 2.0), rtol=1e-6)
    assert np.all(np.abs(params["kernel_mu"]) <= 0.5) and np.all(np.abs(params["bias_mu"]) <= 0.5)
    assert len(np.unique(params["kernel_mu"])) == IN * OUT  # drawn, not constant
    no_bias = noisy.NoisyDense(OUT, use_bias=False).init(jax.random.key(0), X_IN, noisy=False)
    assert set(no_bias["params"]) == {"kernel_mu", "kernel_sigma"}


def test_noisy_dense_without_noise_is_the_mean_layer():
    layer, variables, params = _noisy_layer()
    expected = np.asarray(X_IN) @ params["kernel_mu"] + params["bias_mu"]
    np.testing.assert_allclose(layer.apply(variables, X_IN, noisy=False), expected, rtol=1e-5, atol=1e-6)
    noisy_out = layer.apply(variables, X_IN, rngs={"noise": jax.random.key(3)})
    assert np.max(np.abs(np.asarray(noisy_out) - expected)) > 1e-3


def test_noisy_dense_noise_is_factorised():
    """Recover eps_b from a zero input and eps_W from the identity: eps_W = outer(f(p), eps_b)."""
    layer, variables, params = _noisy_layer()
    rngs = {"noise": jax.random.key(7)}
    bias = np.asarray(layer.apply(variables, jnp.zeros((1, IN)), rngs=rngs))[0]
    kernel = np.asarray(layer.apply(variables, jnp.eye(IN), rngs=rngs)) - bias  # rows of W
    eps_bias = (bias - params["bias_mu"]) / params["bias_sigma"]
    eps_kernel = (kernel - params["kernel_mu"]) / params["kernel_sigma"]
    f_p = eps_kernel[:, 0] / eps_bias[0]
    np.testing.assert_allclose(eps_kernel, np.outer(f_p, eps_bias), rtol=1e-4, atol=1e-5)
    assert np.linalg.matrix_rank(eps_kernel, tol=1e-4) == 1
    # The pure helper has the same structure (the layer's key is folded with its path by flax).
    eps_w_helper, eps_b_helper = noisy.factorised_noise(jax.random.key(7), IN, OUT)
    f_p_helper = np.asarray(eps_w_helper)[:, 0] / float(eps_b_helper[0])
    np.testing.assert_allclose(eps_w_helper, np.outer(f_p_helper, eps_b_helper), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(noisy.scaled_noise(jnp.array([-4.0, 0.0, 2.25])), [-2.0, 0.0, 1.5])


def test_noisy_dense_noise_statistics():
    """Over many draws: mean output = mu output; per-output variance, by hand with E f(u)^2 = E|u| =
    sqrt(2/pi) and E f(u) = 0: Var y_j = sqrt(2/pi) * (sqrt(2/pi) * sum_i x_i^2 sigma_ij^2 + sigma_b_j^2)."""
    layer, variables, params = _noisy_layer(sigma0=0.5)
    x = X_IN[:1]
    keys = jax.random.split(jax.random.key(11), 4000)
    draws = np.asarray(jax.vmap(lambda k: layer.apply(variables, x, rngs={"noise": k})[0])(keys))
    mean_output = np.asarray(x[0]) @ params["kernel_mu"] + params["bias_mu"]
    c = math.sqrt(2.0 / math.pi)
    variance = c * (c * (np.asarray(x[0]) ** 2) @ (params["kernel_sigma"] ** 2) + params["bias_sigma"] ** 2)
    np.testing.assert_allclose(draws.mean(axis=0), mean_output, atol=5 * np.sqrt(variance / len(keys)).max())
    np.testing.assert_allclose(draws.var(axis=0), variance, rtol=0.15)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="head kind 'gap'.*flatten, tokenize, softmoe"):
        tokens.Head(kind="gap")
    with pytest.raises(ValueError, match="tokenizer 'pixel'.*perconv, perfeat, patch, pool"):
        tokens.Head(kind="tokenize", tokenizer="pixel")
    with pytest.raises(ValueError, match="aggregate 'max'.*flatten, mean, sum"):
        tokens.Head(kind="tokenize", aggregate="max")
    with pytest.raises(ValueError, match="num_experts"):
        tokens.Head(kind="softmoe")
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        tokens.Head().init(jax.random.key(0), jnp.zeros((2, 7, 3)))
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        tokens.tokenize(jnp.zeros((7, 7, 3)), "perconv")
    with pytest.raises(ValueError, match="use Tokenizer"):
        tokens.tokenize(jnp.zeros((1, 7, 7, 3)), "patch")
    with pytest.raises(ValueError, match="no 3x3 patch"):
        tokens.Tokenizer("pool").init(jax.random.key(0), jnp.zeros((1, 2, 5, 3)))
    with pytest.raises(ValueError, match="num_experts must be >= 1"):
        tokens.SoftMoE(num_experts=0)
    with pytest.raises(ValueError, match="slots_per_expert"):
        tokens.SoftMoE(num_experts=2, slots_per_expert=0)
    with pytest.raises(ValueError, match="capacity_factor"):
        tokens.SoftMoE(num_experts=2, capacity_factor=0.0)
    with pytest.raises(ValueError, match="batch, tokens, token_dim"):
        tokens.SoftMoE(num_experts=2).init(jax.random.key(0), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="num_experts and expert_hidden"):
        tokens.scaled_expert_hidden(0, 512)
