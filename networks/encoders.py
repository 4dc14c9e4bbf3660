"""Observation encoders: the DrQ-v2 conv encoder (pixels) and an MLP encoder (state vectors)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from networks.mlp import MLP

Dtype = Any

# DrQ-v2 `utils.weight_init`: Conv2d -> orthogonal weight with ReLU gain sqrt(2), zero bias.
conv_kernel_init = nn.initializers.orthogonal(scale=math.sqrt(2.0))


class PixelEncoder(nn.Module):
    """DrQ-v2 encoder (spec §1.4): x/255 - 0.5, Conv3x3 s2, ReLU, 3 x [Conv3x3 s1, ReLU], flatten.

    Input: channel-last pixels (B, H, W, C) (uint8, or float in [0, 255]); for (B, 84, 84, 9) the
    output is (B, 35 * 35 * 32) = (B, 39200), or the map (B, 35, 35, 32) with flatten=False (for a
    token head, networks/tokens.py). VALID padding as in PyTorch's default. Flatten order is
    (H, W, C), not PyTorch's (C, H, W): irrelevant unless porting official weights.
    """

    num_filters: int = 32
    num_layers: int = 4
    dtype: Dtype = jnp.float32
    flatten: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        # Scale in float32 (bfloat16 cannot hold x/255 exactly), then compute in `dtype`.
        x = (obs.astype(jnp.float32) / 255.0 - 0.5).astype(self.dtype)
        for i in range(self.num_layers):
            x = nn.Conv(
                self.num_filters,
                kernel_size=(3, 3),
                strides=(2, 2) if i == 0 else (1, 1),
                padding="VALID",
                kernel_init=conv_kernel_init,
                bias_init=nn.initializers.zeros,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name=f"conv_{i}",
            )(x)
            x = nn.relu(x)
        return x.reshape(x.shape[0], -1) if self.flatten else x


class StateEncoder(nn.Module):
    """Encoder for state-vector observations (--obs=states): 2 x [Dense(hidden), ReLU].

    Not part of DrQ-v2 (a pixel method): pixax's own choice, so the same agent code runs on
    proprioceptive states for quick checks and probe tests. Dense init as everywhere (orthogonal).
    """

    hidden_dim: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = obs.astype(self.dtype)
        return MLP((self.hidden_dim, self.hidden_dim), activate_final=True, dtype=self.dtype, name="mlp")(x)
