"""Dense building blocks with DrQ-v2's initialization."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# DrQ-v2 `utils.weight_init`: nn.Linear -> orthogonal weight (gain 1), zero bias.
dense_kernel_init = nn.initializers.orthogonal(scale=1.0)
# PyTorch's LayerNorm eps; Flax's default (1e-6) differs.
LAYER_NORM_EPSILON = 1e-5


def dense(features: int, dtype: Dtype, name: str) -> nn.Dense:
    """A Dense layer with orthogonal (gain 1) kernel, zero bias, float32 params, `dtype` compute."""
    return nn.Dense(
        features,
        kernel_init=dense_kernel_init,
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def layer_norm(dtype: Dtype, name: str = "layer_norm") -> nn.LayerNorm:
    """LayerNorm with PyTorch's eps (1e-5), scale 1 / bias 0 init; statistics in float32.

    Two-pass variance (mean of squared deviations) as PyTorch computes it, not Flax's default
    E[x^2] - E[x]^2, which loses precision when the mean is large compared with the spread.
    """
    return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, use_fast_variance=False, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


class MLP(nn.Module):
    """Dense layers `dense_0 ... dense_{n-1}` with `activation` between them.

    `activate_final` also applies the activation after the last layer.
    With `return_activations=True` returns (output, {"dense_i": raw output of Dense i}), the
    pre-activation outputs, so a caller can apply whatever rule it measures (e.g. DrM's dormant ratio).
    """

    layer_sizes: Sequence[int]
    activation: Callable = nn.relu
    activate_final: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, return_activations: bool = False) -> Union[jnp.ndarray, Tuple[jnp.ndarray, Dict]]:
        activations = {}
        for i, size in enumerate(self.layer_sizes):
            name = f"dense_{i}"
            x = dense(size, self.dtype, name)(x)
            activations[name] = x
            if i < len(self.layer_sizes) - 1 or self.activate_final:
                x = self.activation(x)
        if return_activations:
            return x, activations
        return x
