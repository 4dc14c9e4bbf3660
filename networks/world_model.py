"""The TOLD world model of TD-MPC (spec model-offline-onpolicy-agents.md §2.1).

Five flax modules, one params subtree each, kept together in one dict
`{"encoder", "dynamics", "reward", "q", "pi"}` (the agent's `params`):

  encoder h     obs -> z          states: Linear(D, enc_dim) ELU Linear(enc_dim, latent)
                                  pixels: /255, Conv(k7,s2) ReLU Conv(k5,s2) ReLU Conv(k3,s2) ReLU
                                          Conv(k3,s2) ReLU, flatten, Linear(latent); VALID convs.
                                          Optionally a token head (networks/tokens.py) in place of
                                          the flatten ("Don't flatten, tokenize!"; pixax's option)
  dynamics d    [z, a] -> z'      Linear ELU Linear ELU Linear (mlp_dim wide)
  reward R      [z, a] -> r       same shape, out 1, last layer zero-initialized
  Q             [z, a] -> Q1, Q2  two heads: Linear LayerNorm Tanh Linear ELU Linear(1), last layer zero
  policy pi     z -> a            MLP as dynamics, out A, then tanh

Init as the official `orthogonal_init`: Dense orthogonal (gain 1), Conv orthogonal with ReLU gain
sqrt(2), zero biases; LayerNorm with PyTorch's eps 1e-5. Pixels are channel-last (flax convs), as
pixax's environments and replays give them.

`TOLD` bundles the modules and exposes the model as pure functions of the params dict (`encode`,
`next`, `q`, `pi`). The agent's losses and planner only call these four methods, so a test can hand
them any object with the same methods (a hand-made linear model) and check values by hand.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.encoders import conv_kernel_init
from networks.mlp import dense, layer_norm
from networks.tokens import Head

Params = Dict[str, Any]
PARAM_KEYS = ("encoder", "dynamics", "reward", "q", "pi")

# The pixel encoder's convolutions (kernel, stride), all VALID (spec §2.1).
PIXEL_CONVS = ((7, 2), (5, 2), (3, 2), (3, 2))
# Smallest square image the four stride-2 VALID convs map to at least 1x1 (39 -> 17 -> 7 -> 3 -> 1).
MIN_IMAGE_SIZE = 39

# The settings of a networks.tokens.Head as (name, value) pairs (hashable, so a module field); () is
# the official flatten. agents/drqv2.py `trunk_head(config)` builds them from a Config's head_* fields.
HeadSettings = Tuple[Tuple[str, Any], ...]


def feature_map_size(image_size: int, convs: Sequence[Tuple[int, int]] = PIXEL_CONVS) -> int:
    """Side of the square feature map that VALID `convs` make of an image_size^2 image (0: none left).
    84 -> 39 -> 18 -> 8 -> 3 with the four convs of the TD-MPC pixel encoder."""
    size = image_size
    for kernel, stride in convs:
        size = (size - kernel) // stride + 1 if size >= kernel else 0
    return max(size, 0)


def flatten_or_tokenize(feature_map: jnp.ndarray, head: HeadSettings) -> jnp.ndarray:
    """(B, h, w, C) -> (B, F): the official flatten when `head` is () (no parameters, so the encoder's
    parameter tree is exactly the official one), else a tokens.Head named "head" (submodule of the
    calling module). Must be called inside a compact module's __call__."""
    if not head:
        return feature_map.reshape(feature_map.shape[0], -1)
    return Head(**dict(head), name="head")(feature_map, noisy=False)


def _zero_dense(features: int, name: str) -> nn.Dense:
    """The zero-initialized (weight and bias) last layer of the reward and Q heads."""
    return nn.Dense(features, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros, name=name)


class StateEncoder(nn.Module):
    """Linear(D, enc_dim) ELU Linear(enc_dim, latent_dim); no output normalization."""

    enc_dim: int
    latent_dim: int

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = nn.elu(dense(self.enc_dim, jnp.float32, "dense_0")(obs.astype(jnp.float32)))
        return dense(self.latent_dim, jnp.float32, "dense_1")(x)


class PixelEncoder(nn.Module):
    """Channel-last pixels (B, h, w, C) in [0, 255] (uint8 or float) -> z (B, latent_dim).

    x/255 (no centring, as the official NormalizeImg), four VALID convs with ReLU, flatten, Linear.
    84x84 gives 39 -> 18 -> 8 -> 3, i.e. 32*3*3 = 288 features. The flatten order is (h, w, C) rather
    than PyTorch's (C, h, w); it only matters when porting official weights.

    `head` (pixax's option, not in TD-MPC): a token head replaces the flatten, between the last conv's
    feature map (e.g. 3x3x32: 9 "perconv" tokens of 32) and the Linear, whose input becomes the head's
    aggregated output. () is the official encoder, parameter tree included (conv_0..3, dense_0).
    """

    num_channels: int
    latent_dim: int
    head: HeadSettings = ()

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = obs.astype(jnp.float32) / 255.0
        for i, (kernel, stride) in enumerate(PIXEL_CONVS):
            x = nn.Conv(self.num_channels, (kernel, kernel), strides=(stride, stride), padding="VALID",
                        kernel_init=conv_kernel_init, bias_init=nn.initializers.zeros, name=f"conv_{i}")(x)
            x = nn.relu(x)
        x = flatten_or_tokenize(x, self.head)
        return dense(self.latent_dim, jnp.float32, "dense_0")(x)


class MLP(nn.Module):
    """Linear(mlp_dim) ELU Linear(mlp_dim) ELU Linear(out_dim): dynamics, reward and policy trunks.

    `zero_last` zero-initializes the last layer (reward head)."""

    mlp_dim: int
    out_dim: int
    zero_last: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.elu(dense(self.mlp_dim, jnp.float32, "dense_0")(x))
        x = nn.elu(dense(self.mlp_dim, jnp.float32, "dense_1")(x))
        last = _zero_dense(self.out_dim, "dense_2") if self.zero_last else dense(self.out_dim, jnp.float32, "dense_2")
        return last(x)


class TwinQ(nn.Module):
    """Two independent heads on [z, a]: Linear LayerNorm Tanh Linear ELU Linear(1, zero init).

    Returns (Q1, Q2), each of shape (B,)."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        qs = []
        for head in ("q1", "q2"):
            h = dense(self.mlp_dim, jnp.float32, f"{head}_dense_0")(x)
            h = jnp.tanh(layer_norm(jnp.float32, f"{head}_layer_norm")(h))
            h = nn.elu(dense(self.mlp_dim, jnp.float32, f"{head}_dense_1")(h))
            qs.append(_zero_dense(1, f"{head}_dense_2")(h)[..., 0])
        return qs[0], qs[1]


class TOLD(NamedTuple):
    """The five modules and the model as pure functions of the params dict (keys PARAM_KEYS)."""

    encoder_net: nn.Module
    dynamics_net: MLP
    reward_net: MLP
    q_net: TwinQ
    pi_net: MLP

    def encode(self, params: Params, obs: jnp.ndarray) -> jnp.ndarray:
        """h(obs): (B, *obs_shape) -> (B, latent). Pixels channel-last in [0, 255]."""
        return self.encoder_net.apply(params["encoder"], obs)

    def next(self, params: Params, z: jnp.ndarray, action: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """(d(z, a), R(z, a)): next latent (B, latent) and predicted reward (B,)."""
        x = jnp.concatenate([z, action], axis=-1)
        return self.dynamics_net.apply(params["dynamics"], x), self.reward_net.apply(params["reward"], x)[..., 0]

    def q(self, params: Params, z: jnp.ndarray, action: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """(Q1(z, a), Q2(z, a)), each (B,)."""
        return self.q_net.apply(params["q"], jnp.concatenate([z, action], axis=-1))

    def pi(self, params: Params, z: jnp.ndarray) -> jnp.ndarray:
        """The policy prior's mean tanh(MLP(z)), (B, A); noise is added by the caller."""
        return jnp.tanh(self.pi_net.apply(params["pi"], z))

    def init(self, key: jax.Array, obs: jnp.ndarray, action_dim: int) -> Params:
        """Fresh params from one example batch of observations (B, *obs_shape); one key per module."""
        keys = dict(zip(PARAM_KEYS, jax.random.split(key, len(PARAM_KEYS))))
        encoder = self.encoder_net.init(keys["encoder"], obs)
        z = jnp.zeros(jax.eval_shape(self.encoder_net.apply, encoder, obs).shape, jnp.float32)
        za = jnp.concatenate([z, jnp.zeros((z.shape[0], action_dim), jnp.float32)], axis=-1)
        return {
            "encoder": encoder,
            "dynamics": self.dynamics_net.init(keys["dynamics"], za),
            "reward": self.reward_net.init(keys["reward"], za),
            "q": self.q_net.init(keys["q"], za),
            "pi": self.pi_net.init(keys["pi"], z),
        }


def make_told(obs_type: str, action_dim: int, latent_dim: int = 50, enc_dim: int = 256, mlp_dim: int = 512,
              num_channels: int = 32, head: HeadSettings = ()) -> TOLD:
    """The TOLD modules for `obs_type` "states" or "pixels" (defaults: the official TD-MPC sizes).

    `head`: the pixel encoder's token head (see PixelEncoder); () flattens as the official encoder."""
    if obs_type == "pixels":
        encoder = PixelEncoder(num_channels, latent_dim, head=tuple(head))
    elif head:
        raise ValueError(f"a token head needs obs_type='pixels' (a conv feature map to tokenize), "
                         f"got obs_type={obs_type!r} with head {dict(head)}")
    elif obs_type == "states":
        encoder = StateEncoder(enc_dim, latent_dim)
    else:
        raise ValueError(f"obs_type must be 'states' or 'pixels', got {obs_type!r}")
    return TOLD(
        encoder_net=encoder,
        dynamics_net=MLP(mlp_dim, latent_dim),
        reward_net=MLP(mlp_dim, 1, zero_last=True),
        q_net=TwinQ(mlp_dim),
        pi_net=MLP(mlp_dim, action_dim),
    )
