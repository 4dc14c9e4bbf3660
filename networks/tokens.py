"""Tokenized encoder heads and the SoftMoE layer ("Don't flatten, tokenize!", spec §4).

A pixel encoder ends in a feature map F of shape (B, h, w, d). The usual head flattens it
(B, h*w*d) and feeds a wide Dense layer. Sokar et al. (ICLR 2025, spec §4.1, §4.4) find that the
gains of a SoftMoE penultimate layer (Obando-Ceron, Sokar et al., ICML 2024) come mainly from
*tokenizing* F instead of flattening it, and that a single, suitably scaled expert ("SoftMoE-1
scaled") keeps the gain (reported for Rainbow / DER; not for DQN, spec §4.4 caveat).

Tokenization schemes (spec §4.2), per sample:

    "perconv"  one token per spatial position: row (i, j) is F[i, j, :]     -> (h*w, d)
    "perfeat"  one token per channel: token c is vec(F[:, :, c])             -> (d, h*w)
    "patch"    Conv(kernel = stride = patch, VALID) to `embed_dim`, then perconv
                                                       -> (floor(h/patch) * floor(w/patch), embed_dim)
    "pool"     average-pool patch x patch (stride patch, VALID), then perconv
                                                       -> (floor(h/patch) * floor(w/patch), d)

Shapes for Atari (84x84x4, Nature CNN with Flax SAME padding, feature map 11x11x64): perconv gives
121 tokens of 64 (Dopamine's "144 x 64" comments are stale, spec §4.2); perfeat 64 tokens of 121;
patch 3 gives 3*3 = 9 tokens of embed_dim (64 in Dopamine's Nature-CNN / Rainbow nets, 32 in the
Impala DQN net). For DrQ-v2 (35x35x32): perconv 1225 x 32, patch 5 -> 49 x 64 (spec §4.7).

Token mixers (`Head.kind`, spec §4.3, §4.4):

    "flatten"   no tokens: reshape to (B, h*w*d), the default everywhere (DrQ-v2, DrM, DQN, ...)
    "tokenize"  `TokenMixer`: one Dense(hidden) -> ReLU -> Dense(token dim) applied to every token
                with shared weights, no routing (the "tokenized baseline"; layer order [UNVERIFIED])
    "softmoe"   `SoftMoE` (spec §4.3), batch-safe: all softmaxes stay within a sample (§5 row 24)

then an aggregate over tokens: "flatten" (B, m*d_out) as Dopamine does before its Q head, or
"mean" / "sum" (B, d_out) as the tokenized baselines "tokenized_avg" / "tokenized_sum" (§4.4).

Randomness is explicit (§5 row 23): noisy experts draw from the flax RNG stream "noise" and nothing
falls back to a clock-seeded key. Router statistics are sown into the "intermediates" collection.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.noisy import NOISE_RNG, NoisyDense

Dtype = Any

TOKENIZERS = ("perconv", "perfeat", "patch", "pool")
HEADS = ("flatten", "tokenize", "softmoe")
AGGREGATES = ("flatten", "mean", "sum")

# Dopamine's SoftMoE router, expert and token-mixer inits (spec §4.3).
router_init = nn.initializers.lecun_normal()
expert_kernel_init = nn.initializers.xavier_uniform()
# Dopamine's l2_normalize epsilon.
L2_NORM_EPSILON = 1e-6


def _check_choice(what: str, value: str, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid values: {', '.join(valid)}")


def _check_feature_map(feature_map: jnp.ndarray) -> None:
    if feature_map.ndim != 4:
        raise ValueError(
            f"expected a feature map of shape (batch, height, width, channels), got shape {feature_map.shape}")


def tokenize(feature_map: jnp.ndarray, scheme: str) -> jnp.ndarray:
    """Parameter-free tokenization: "perconv" (B,h,w,d) -> (B,h*w,d), "perfeat" (B,h,w,d) -> (B,d,h*w).

    Tokens are in row-major (i, j) order; "patch" and "pool" live in `Tokenizer` (they take a patch
    size, and "patch" has parameters).
    """
    _check_feature_map(feature_map)
    batch, height, width, channels = feature_map.shape
    per_position = feature_map.reshape(batch, height * width, channels)
    if scheme == "perconv":
        return per_position
    if scheme == "perfeat":
        return jnp.swapaxes(per_position, 1, 2)
    raise ValueError(f"tokenize() handles 'perconv' and 'perfeat', got {scheme!r}; "
                     f"use Tokenizer for every scheme in {TOKENIZERS}")


def l2_normalize(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    """x / (||x||_2 + 1e-6) along `axis`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / (norm + L2_NORM_EPSILON)


def default_slots_per_expert(num_tokens: int, num_experts: int, capacity_factor: float = 1.0) -> int:
    """Dopamine's slot count p = ceil(m * capacity_factor / n) (at least one slot per expert)."""
    return max(1, int(math.ceil(num_tokens * capacity_factor / num_experts)))


def scaled_expert_hidden(num_experts: int, expert_hidden: int) -> int:
    """Hidden width of the single expert of "SoftMoE-1 scaled" that matches SoftMoE-`num_experts`.

    [INFERRED] (spec §4.4, §6 item 4): the paper's exact scaling rule is not available; widening the
    one expert's hidden layer n-fold gives it the same weight-matrix parameters as n experts of width
    `expert_hidden` (the biases differ by (n - 1) * token_dim, the extra output biases of n experts).
    This is also how Dopamine scales its flatten baseline (`scale_hidden_layer`: 512 * num_experts).
    """
    if num_experts < 1 or expert_hidden < 1:
        raise ValueError(f"num_experts and expert_hidden must be >= 1, got {num_experts}, {expert_hidden}")
    return num_experts * expert_hidden


def router_weights(tokens: jnp.ndarray, phi: jnp.ndarray, scale: jnp.ndarray,
                   normalize: bool) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """SoftMoE dispatch and combine weights, each (B, m, n, p) in float32 (spec §4.3).

    tokens (B, m, d), phi (d, n, p), scale (1,). Logits L = X Phi per sample, with, when `normalize`,
    X -> X / (||X|| + 1e-6) per token and Phi -> scale * Phi / (||Phi|| + 1e-6) per slot column (over d).
    dispatch = softmax of L over the token axis (each slot: a convex combination of the sample's tokens);
    combine = softmax of L jointly over (n, p) (each token: a convex combination of the sample's slots).
    """
    if normalize:
        tokens, phi = l2_normalize(tokens, axis=-1), scale * l2_normalize(phi, axis=0)
    logits = jnp.einsum("bmd,dnp->bmnp", tokens, phi).astype(jnp.float32)  # softmax in float32 under bf16
    dispatch = jax.nn.softmax(logits, axis=1)  # over tokens, within each sample, never over the batch
    combine = jax.nn.softmax(logits, axis=(2, 3))  # over all (expert, slot) pairs
    return dispatch, combine


class Tokenizer(nn.Module):
    """Feature map (B, h, w, d) -> tokens (B, m, token_dim) by one of TOKENIZERS (see module docstring).

    "patch" has one Conv named "embedding" (Flax's default init, as Dopamine's); the others have none.
    """

    scheme: str = "perconv"
    patch_size: int = 3
    embed_dim: int = 64
    dtype: Dtype = jnp.float32

    def __post_init__(self):
        _check_choice("tokenizer", self.scheme, TOKENIZERS)
        if self.patch_size < 1 or self.embed_dim < 1:
            raise ValueError(f"patch_size and embed_dim must be >= 1, got {self.patch_size}, {self.embed_dim}")
        super().__post_init__()

    @nn.compact
    def __call__(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        _check_feature_map(feature_map)
        if self.scheme in ("perconv", "perfeat"):
            return tokenize(feature_map, self.scheme)
        height, width = feature_map.shape[1:3]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"a {height}x{width} feature map holds no {self.patch_size}x{self.patch_size} "
                             f"patch; use a smaller patch_size or the 'perconv' tokenizer")
        window = (self.patch_size, self.patch_size)
        if self.scheme == "patch":
            patches = nn.Conv(self.embed_dim, kernel_size=window, strides=window, padding="VALID",
                              dtype=self.dtype, param_dtype=jnp.float32, name="embedding")(feature_map)
        else:  # "pool"
            patches = nn.avg_pool(feature_map, window_shape=window, strides=window, padding="VALID")
        return tokenize(patches, "perconv")


class Expert(nn.Module):
    """One expert f_e (spec §4.3): Dense(hidden) -> ReLU -> Dense(out), xavier-uniform kernels, zero biases.

    With `noisy_first`, `dense_0` is a NoisyDense (Dopamine's Rainbow / DER experts) and draws noise
    when `apply_noise`. Input (..., d) -> output (..., out_features).
    """

    hidden: int
    out_features: int
    noisy_first: bool = False
    apply_noise: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.noisy_first:
            x = NoisyDense(self.hidden, dtype=self.dtype, name="dense_0")(x, noisy=self.apply_noise)
        else:
            x = nn.Dense(self.hidden, kernel_init=expert_kernel_init, dtype=self.dtype,
                         param_dtype=jnp.float32, name="dense_0")(x)
        x = nn.relu(x)
        return nn.Dense(self.out_features, kernel_init=expert_kernel_init, dtype=self.dtype,
                        param_dtype=jnp.float32, name="dense_1")(x)


class SoftMoE(nn.Module):
    """Soft mixture of experts over tokens (Puigcerver et al.; spec §4.3), batched.

    Input X (B, m, d) -> output Y (B, m, d): the experts keep the token size, as Dopamine's do.
    Per sample: logits L = X Phi (m, n, p); dispatch D = softmax over tokens (axis m), combine
    C = softmax jointly over (n, p); slot inputs X~ = D^T X (nan -> 0); Y = sum_{e,q} C f_e(X~_{e,q}).
    Softmaxes never cross samples (spec §5 row 24).

    Params: `phi` (d, n, p) lecun-normal; `scale` (1,) init 1, used only with `normalize` (created
    either way, as Dopamine does, so switching normalisation keeps the parameter tree);
    `experts/dense_0`, `experts/dense_1` with a leading expert axis n (independent params per expert).

    Experts run as one `nn.vmap` over the expert axis (it reuses `Expert`, and so NoisyDense,
    unchanged): on the 2-core CPU a jitted forward + backward ran 1.2-1.5x faster than a hand-stacked
    einsum with (n, d, hidden) weights, over (B, n, p, d, hidden) from (32, 4, 31, 64, 512) to
    (256, 1, 16, 64, 1024). With noisy experts
    each expert draws its own noise (the "noise" RNG is split over experts), shared by its slots and by
    the batch. Dopamine instead hands every expert the same key, so all experts see the same eps.

    Sows `intermediates/<path>/combine_weight_per_expert` (shape (n,)): the combine weight averaged
    over batch, tokens and slots, Dopamine's logged router statistic (multiply by p for each expert's
    share of the combine mass, which sums to 1). Read it with `apply(..., mutable=["intermediates"])`.
    """

    num_experts: int
    slots_per_expert: Optional[int] = None
    capacity_factor: float = 1.0
    expert_hidden: int = 512
    normalize: bool = False
    noisy_experts: bool = False
    dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.slots_per_expert is not None and self.slots_per_expert < 1:
            raise ValueError(f"slots_per_expert must be >= 1 or None (ceil(m * capacity_factor / n)), "
                             f"got {self.slots_per_expert}")
        if self.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")
        if self.expert_hidden < 1:
            raise ValueError(f"expert_hidden must be >= 1, got {self.expert_hidden}")
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, noisy: bool = True) -> jnp.ndarray:
        if tokens.ndim != 3:
            raise ValueError(f"SoftMoE expects tokens of shape (batch, tokens, token_dim), got {tokens.shape}")
        num_tokens, token_dim = tokens.shape[1:]
        slots = self.slots_per_expert or default_slots_per_expert(num_tokens, self.num_experts,
                                                                  self.capacity_factor)
        phi = self.param("phi", router_init, (token_dim, self.num_experts, slots), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (1,), jnp.float32)

        x = tokens.astype(self.dtype)
        dispatch, combine = router_weights(x, phi.astype(self.dtype), scale.astype(self.dtype), self.normalize)

        # Slots mix the raw tokens, not the normalised ones. nan -> 0 as Dopamine (spec §4.3): logits
        # that overflow (inf) make the dispatch softmax nan.
        slot_inputs = jnp.einsum("bmd,bmnp->bnpd", x, dispatch.astype(self.dtype))
        slot_inputs = jnp.nan_to_num(slot_inputs)

        experts = nn.vmap(
            Expert,
            in_axes=1, out_axes=1, axis_size=self.num_experts,
            # intermediates: so that capture_intermediates (networks/dormant.py) sees the experts' Dense layers
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True, NOISE_RNG: True},
        )(hidden=self.expert_hidden, out_features=token_dim, noisy_first=self.noisy_experts,
          apply_noise=noisy, dtype=self.dtype, name="experts")
        slot_outputs = experts(slot_inputs)  # (B, n, p, d)

        self.sow("intermediates", "combine_weight_per_expert", jnp.mean(combine, axis=(0, 1, 3)))
        return jnp.einsum("bnpd,bmnp->bmd", slot_outputs, combine.astype(self.dtype))


class TokenMixer(nn.Module):
    """The tokenized baseline without routing (spec §4.4): Dense(hidden) -> ReLU -> Dense(token dim),
    the same weights for every token (an expert applied per token). (B, m, d) -> (B, m, d)."""

    hidden: int = 512
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
        if tokens.ndim != 3:
            raise ValueError(f"TokenMixer expects tokens of shape (batch, tokens, token_dim), got {tokens.shape}")
        return Expert(self.hidden, tokens.shape[-1], dtype=self.dtype, name="projection")(tokens)


def aggregate_tokens(tokens: jnp.ndarray, how: str) -> jnp.ndarray:
    """(B, m, d) -> (B, m*d) for "flatten", (B, d) for "mean" / "sum" over tokens."""
    _check_choice("aggregate", how, AGGREGATES)
    if how == "flatten":
        return tokens.reshape(tokens.shape[0], -1)
    if how == "mean":
        return jnp.mean(tokens, axis=1)
    return jnp.sum(tokens, axis=1)


class Head(nn.Module):
    """Encoder feature map (B, h, w, d) -> vector (B, F) for the layers after it (Q / actor / critic).

    kind "flatten" reshapes (B, h*w*d) and ignores every other field; "tokenize" and "softmoe"
    tokenize with `tokenizer` (`patch_size`, `embed_dim`), mix with `TokenMixer(expert_hidden)` or
    `SoftMoE(num_experts, slots_per_expert, expert_hidden, normalize, noisy_experts)`, then reduce
    with `aggregate`. `num_experts` has no default: Dopamine uses 8 for DQN, 4 for Rainbow / DER,
    and "SoftMoE-1 scaled" is num_experts=1 with `scaled_expert_hidden(n, 512)`.
    `noisy` (a Python bool: static under jit) is passed to noisy experts, which then draw from the
    "noise" RNG; other kinds ignore it.
    """

    kind: str = "flatten"
    tokenizer: str = "perconv"
    patch_size: int = 3
    embed_dim: int = 64
    num_experts: Optional[int] = None
    slots_per_expert: Optional[int] = None
    expert_hidden: int = 512
    normalize: bool = False
    noisy_experts: bool = False
    aggregate: str = "flatten"
    dtype: Dtype = jnp.float32

    def __post_init__(self):
        _check_choice("head kind", self.kind, HEADS)
        _check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        _check_choice("aggregate", self.aggregate, AGGREGATES)
        if self.kind == "softmoe" and self.num_experts is None:
            raise ValueError("a 'softmoe' head needs num_experts (Dopamine: 8 for DQN, 4 for Rainbow / DER)")
        super().__post_init__()

    @nn.compact
    def __call__(self, feature_map: jnp.ndarray, noisy: bool = True) -> jnp.ndarray:
        _check_feature_map(feature_map)
        if self.kind == "flatten":
            return feature_map.reshape(feature_map.shape[0], -1)
        tokens = Tokenizer(self.tokenizer, self.patch_size, self.embed_dim, dtype=self.dtype,
                           name="tokenizer")(feature_map)
        if self.kind == "tokenize":
            mixed = TokenMixer(self.expert_hidden, dtype=self.dtype, name="token_mixer")(tokens)
        else:
            mixed = SoftMoE(self.num_experts, self.slots_per_expert, expert_hidden=self.expert_hidden,
                            normalize=self.normalize, noisy_experts=self.noisy_experts, dtype=self.dtype,
                            name="softmoe")(tokens, noisy=noisy)
        return aggregate_tokens(mixed, self.aggregate)
