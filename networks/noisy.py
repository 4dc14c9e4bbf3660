"""Factorised-Gaussian NoisyNet linear layer (Fortunato et al. 2018), as Dopamine's full Rainbow uses it.

    y = x (W_mu + W_sigma * eps_W) + (b_mu + b_sigma * eps_b)
    eps_W[i, j] = f(p_i) f(q_j),   eps_b[j] = f(q_j),   p ~ N(0, I_in), q ~ N(0, I_out),
    f(u) = sign(u) sqrt(|u|)

Only in + out Gaussian numbers are drawn per call (the "factorised" noise of the paper's eqs. 10-11),
so eps_W is an outer product, and the bias noise reuses the output factor.

Initialisation (Dopamine `jax/networks.py` NoisyNetwork, spec §4.3): mu ~ U(-1/sqrt(in), 1/sqrt(in))
for kernel and bias, sigma = sigma0 / sqrt(in) with sigma0 = 0.1. Fortunato et al. suggest
sigma0 = 0.5 for factorised noise; Dopamine (and so the SoftMoE papers' Rainbow / DER runs) uses 0.1.

Noise comes from the flax RNG stream "noise" and is drawn once per call: every row of a batch (and
every leading axis) sees the same eps, as in Dopamine, where the per-sample network is vmapped over
the batch with one key. `noisy=False` uses the means only (evaluation) and needs no RNG.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

NOISE_RNG = "noise"
DOPAMINE_SIGMA0 = 0.1


def scaled_noise(u: jnp.ndarray) -> jnp.ndarray:
    """f(u) = sign(u) * sqrt(|u|), applied to the Gaussian factors of factorised noise."""
    return jnp.sign(u) * jnp.sqrt(jnp.abs(u))


def factorised_noise(key: jax.Array, in_features: int, out_features: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(eps_W of shape (in, out), eps_b of shape (out,)) with eps_W = outer(f(p), f(q)), eps_b = f(q)."""
    key_in, key_out = jax.random.split(key)
    f_p = scaled_noise(jax.random.normal(key_in, (in_features,), jnp.float32))
    f_q = scaled_noise(jax.random.normal(key_out, (out_features,), jnp.float32))
    return jnp.outer(f_p, f_q), f_q


def _uniform_fan_in_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


class NoisyDense(nn.Module):
    """Dense layer with factorised Gaussian parameter noise.

    Params: `kernel_mu`, `kernel_sigma` (in, out) and, with `use_bias`, `bias_mu`, `bias_sigma` (out,).
    `__call__(x, noisy=True)`: x of shape (..., in); with `noisy` the layer draws fresh noise from the
    "noise" RNG stream (pass `rngs={"noise": key}` to `apply`), without it the output is x W_mu + b_mu.
    `noisy` is a Python bool (static under jit).
    """

    features: int
    sigma0: float = DOPAMINE_SIGMA0
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, noisy: bool = True) -> jnp.ndarray:
        in_features = x.shape[-1]
        mu_init = _uniform_fan_in_init(in_features)
        sigma_init = nn.initializers.constant(self.sigma0 / math.sqrt(in_features))
        kernel_mu = self.param("kernel_mu", mu_init, (in_features, self.features), jnp.float32)
        kernel_sigma = self.param("kernel_sigma", sigma_init, (in_features, self.features), jnp.float32)
        if self.use_bias:
            bias_mu = self.param("bias_mu", mu_init, (self.features,), jnp.float32)
            bias_sigma = self.param("bias_sigma", sigma_init, (self.features,), jnp.float32)

        kernel, bias = kernel_mu, (bias_mu if self.use_bias else None)
        if noisy:
            eps_kernel, eps_bias = factorised_noise(self.make_rng(NOISE_RNG), in_features, self.features)
            kernel = kernel_mu + kernel_sigma * eps_kernel
            if self.use_bias:
                bias = bias_mu + bias_sigma * eps_bias

        y = jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + bias.astype(self.dtype)
        return y
