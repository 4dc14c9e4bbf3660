"""Value networks for discrete-action pixel agents (DQN, Rainbow, DER), as Dopamine builds them.

Encoders return the feature map (B, h, w, d), not a flat vector, so that a `tokens.Head` decides
what happens to it (spec §4.2-§4.4):

    NatureCNN       x/255 -> Conv 32 8x8/4 -> ReLU -> Conv 64 4x4/2 -> ReLU -> Conv 64 3x3/1 -> ReLU
                    (Flax's default SAME padding: 84x84x4 -> 21 -> 11 -> 11, so (B, 11, 11, 64))
    ImpalaEncoder   x/255 -> 3 stacks of 16 / 32 / 32 channels, each Conv 3x3 -> MaxPool 3x3/2 (SAME)
                    -> 2 residual blocks [ReLU, Conv, ReLU, Conv, + input]; final ReLU
                    (84 -> 42 -> 21 -> 11, so (B, 11, 11, 32))

Initialization is Dopamine's (jax/networks.py): xavier-uniform kernels for the Nature convs, the
first conv of each Impala stack and every Dense; the Impala residual convs keep Flax's default
(lecun-normal), as Dopamine's do; zero biases. Noisy layers are `noisy.NoisyDense` (sigma0 = 0.1).

`QNetwork` = encoder -> `tokens.Head` -> [penultimate Dense(hidden) + ReLU] -> output layer(s).

Where Dopamine puts the SoftMoE (labs/moes/architectures/networks.py, NatureDQNMoE, ImpalaMoE,
FullRainbowMoENetwork, read at 5873f54): the SoftMoE REPLACES the penultimate Dense(512) + ReLU.
The baseline branch (moe_type BASELINE) flattens the feature map and applies Dense(512) (noisy in
Rainbow / DER) + ReLU; the SoftMoE branch tokenizes, applies the SoftMoE, flattens its (m, d)
output and feeds it straight to the output layer (Q-values, or dueling + C51 heads). Only
`use_extra_linear_layer` (False in every shipped gin file) adds a plain Dense(512) + ReLU after
either branch; here that is `extra_dense`. So the penultimate Dense exists only for head kind
"flatten"; "tokenize" (the tokenized baseline, spec §4.4) replaces it the same way "softmoe" does.

Output (Dopamine's FullRainbowNetwork): with `num_atoms` = 1 the output layer gives Q-values
(DQN); with `num_atoms` > 1 it gives logits (B, A, atoms), probabilities = softmax over atoms,
Q = sum(support * probabilities). `dueling` computes the output as value + advantage - mean over
actions of advantage (per atom). With `noisy` every layer after the head is a NoisyDense (except
`extra_dense`, a plain Dense in Dopamine too), and the head's experts are noisy as well.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import flax.linen as nn
import jax.numpy as jnp

from networks import tokens
from networks.noisy import DOPAMINE_SIGMA0, NoisyDense

xavier_uniform = nn.initializers.xavier_uniform()


def scale_pixels(obs: jnp.ndarray) -> jnp.ndarray:
    """uint8 pixels (or floats in [0, 255]) -> float32 in [0, 1] (Dopamine's preprocess_atari_inputs)."""
    return obs.astype(jnp.float32) / 255.0


class NatureCNN(nn.Module):
    """Mnih et al. (2015) encoder, Dopamine's Flax version: (B, H, W, C) pixels -> (B, h, w, 64)."""

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = scale_pixels(obs)
        for i, (features, kernel, stride) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
            x = nn.Conv(features, kernel_size=(kernel, kernel), strides=(stride, stride),
                        kernel_init=xavier_uniform, name=f"conv_{i}")(x)  # padding: Flax's SAME
            x = nn.relu(x)
        return x


class ImpalaStack(nn.Module):
    """Conv 3x3 (xavier) -> MaxPool 3x3 stride 2 (SAME) -> `num_blocks` residual blocks."""

    channels: int
    num_blocks: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Conv(self.channels, kernel_size=(3, 3), padding="SAME", kernel_init=xavier_uniform,
                    name="conv")(x)
        x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        for block in range(self.num_blocks):
            residual = x
            for j in range(2):
                x = nn.relu(x)
                # Dopamine's residual convs use Flax's default kernel init (lecun-normal).
                x = nn.Conv(self.channels, kernel_size=(3, 3), padding="SAME", name=f"block_{block}_conv_{j}")(x)
            x = x + residual
        return x


class ImpalaEncoder(nn.Module):
    """Espeholt et al. (2018) ResNet encoder, Dopamine's version: (B, H, W, C) -> (B, h, w, 32)."""

    stack_sizes: tuple = (16, 32, 32)
    num_blocks: int = 2

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = scale_pixels(obs)
        for i, channels in enumerate(self.stack_sizes):
            x = ImpalaStack(channels, self.num_blocks, name=f"stack_{i}")(x)
        return nn.relu(x)


ENCODERS = {"nature": NatureCNN, "impala": ImpalaEncoder}


def check_encoder(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}")


def dueling_combine(value: jnp.ndarray, advantage: jnp.ndarray) -> jnp.ndarray:
    """Q (or logits) = value + advantage - mean over actions of advantage (Wang et al. 2016).

    value (B, 1, K), advantage (B, A, K) -> (B, A, K); K = atoms (1 for plain Q-values).
    """
    return value + advantage - jnp.mean(advantage, axis=1, keepdims=True)


class QOutput(NamedTuple):
    q: jnp.ndarray  # (B, A) Q-values
    logits: Optional[jnp.ndarray] = None  # (B, A, atoms), distributional networks only
    probabilities: Optional[jnp.ndarray] = None  # (B, A, atoms), softmax of logits over atoms


class QNetwork(nn.Module):
    """Pixels (B, H, W, C) -> QOutput. See the module docstring for the layer order.

    `__call__(obs, noise=True, expert_noise=None)`: with `noisy`, `noise` says whether the noisy
    layers after the head draw noise (RNG stream "noise"), `expert_noise` (default: `noise`) whether
    the head's noisy experts do. Without `noisy` both are ignored and no RNG is needed.
    """

    action_dim: int
    encoder: str = "nature"
    # tokens.Head fields (kind "flatten" is Dopamine's baseline).
    head: str = "flatten"
    tokenizer: str = "perconv"
    patch_size: int = 3
    embed_dim: int = 64
    num_experts: Optional[int] = None
    slots_per_expert: Optional[int] = None
    expert_hidden: int = 512
    normalize: bool = False
    aggregate: str = "flatten"
    # Layers after the head.
    hidden_dim: int = 512  # the penultimate Dense (head "flatten" only)
    extra_dense: bool = False  # Dopamine's use_extra_linear_layer
    noisy: bool = False
    sigma0: float = DOPAMINE_SIGMA0
    dueling: bool = False
    num_atoms: int = 1  # 1: plain Q-values; > 1: C51 over linspace(v_min, v_max, num_atoms)
    v_min: float = -10.0
    v_max: float = 10.0

    def __post_init__(self):
        check_encoder(self.encoder)
        if self.num_atoms < 1:
            raise ValueError(f"num_atoms must be >= 1, got {self.num_atoms}")
        if self.num_atoms > 1 and not self.v_min < self.v_max:
            raise ValueError(f"need v_min < v_max for a distributional network, got {self.v_min}, {self.v_max}")
        super().__post_init__()

    def support(self) -> jnp.ndarray:
        return jnp.linspace(self.v_min, self.v_max, self.num_atoms, dtype=jnp.float32)

    def _dense(self, features: int, name: str, noise: bool):
        """Dopamine's `feature_layer`: a NoisyDense when the network is noisy, else xavier Dense."""
        if self.noisy:
            layer = NoisyDense(features, sigma0=self.sigma0, name=name)
            return lambda x: layer(x, noisy=noise)
        return nn.Dense(features, kernel_init=xavier_uniform, name=name)

    @nn.compact
    def __call__(self, obs: jnp.ndarray, noise: bool = True, expert_noise: Optional[bool] = None) -> QOutput:
        if obs.ndim != 4:
            raise ValueError(f"QNetwork expects pixels (batch, height, width, channels), got shape {obs.shape}")
        expert_noise = noise if expert_noise is None else expert_noise
        feature_map = ENCODERS[self.encoder](name="encoder")(obs)
        x = tokens.Head(kind=self.head, tokenizer=self.tokenizer, patch_size=self.patch_size,
                        embed_dim=self.embed_dim, num_experts=self.num_experts,
                        slots_per_expert=self.slots_per_expert, expert_hidden=self.expert_hidden,
                        normalize=self.normalize, noisy_experts=self.noisy, aggregate=self.aggregate,
                        name="head")(feature_map, noisy=expert_noise)
        if self.head == "flatten":  # the tokenized heads replace this layer (module docstring)
            x = nn.relu(self._dense(self.hidden_dim, "dense_hidden", noise)(x))
        if self.extra_dense:
            x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=xavier_uniform, name="dense_extra")(x))

        batch, actions, atoms = x.shape[0], self.action_dim, self.num_atoms
        if self.dueling:
            advantage = self._dense(actions * atoms, "dense_advantage", noise)(x).reshape(batch, actions, atoms)
            value = self._dense(atoms, "dense_value", noise)(x).reshape(batch, 1, atoms)
            logits = dueling_combine(value, advantage)
        else:
            logits = self._dense(actions * atoms, "dense_q", noise)(x).reshape(batch, actions, atoms)

        logits = logits.astype(jnp.float32)
        if atoms == 1:
            return QOutput(q=logits[..., 0])
        probabilities = nn.softmax(logits, axis=-1)
        return QOutput(q=jnp.sum(self.support() * probabilities, axis=-1), logits=logits,
                       probabilities=probabilities)
