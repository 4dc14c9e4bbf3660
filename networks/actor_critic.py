"""DrQ-v2 actor, critic (twin Q) and a state-value head, on top of encoder features (spec §1.4).

Each network has its own trunk Dense(feature_dim) -> LayerNorm -> tanh that projects the encoder
output (39200 for 84x84 pixels) down to `feature_dim`; the heads are MLPs with `hidden_dim` units.
All heads return float32, whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

from networks.mlp import MLP, dense, layer_norm

Dtype = Any


class Trunk(nn.Module):
    """Dense(feature_dim) -> LayerNorm(eps 1e-5) -> tanh. Also returns the raw Dense output (pre-LayerNorm)."""

    feature_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        projected = dense(self.feature_dim, self.dtype, "dense")(features)
        return jnp.tanh(layer_norm(self.dtype)(projected)), projected


class Actor(nn.Module):
    """Deterministic policy mean mu in (-1, 1)^A: trunk, Dense(hidden) ReLU Dense(hidden) ReLU Dense(A) tanh.

    `return_activations=True` returns (mu, activations) with the RAW output of every Dense layer:
      "trunk":    trunk Dense, pre-LayerNorm        (feature_dim units)
      "hidden_0": first policy Dense, pre-ReLU      (hidden_dim)
      "hidden_1": second policy Dense, pre-ReLU     (hidden_dim)
      "output":   last Dense, pre-tanh              (action_dim)
    DrM's official dormant rule applies ReLU to the two hidden entries (spec §2.1).
    """

    action_dim: int
    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, return_activations: bool = False
                 ) -> Union[jnp.ndarray, Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]]:
        h, trunk_out = Trunk(self.feature_dim, self.dtype, name="trunk")(features)
        out, dense_outs = MLP((self.hidden_dim, self.hidden_dim, self.action_dim), dtype=self.dtype,
                              name="policy")(h, return_activations=True)
        mu = jnp.tanh(out.astype(jnp.float32))
        if not return_activations:
            return mu
        activations = {
            "trunk": trunk_out,
            "hidden_0": dense_outs["dense_0"],
            "hidden_1": dense_outs["dense_1"],
            "output": dense_outs["dense_2"],
        }
        return mu, activations


class Critic(nn.Module):
    """Twin Q: own trunk, then Q1 and Q2 on concat(h, a), two separate MLPs
    Dense(hidden) ReLU Dense(hidden) ReLU Dense(1).

    Returns (q1, q2), each float32 of shape (B,).
    """

    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, action: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        h, _ = Trunk(self.feature_dim, self.dtype, name="trunk")(features)
        h_action = jnp.concatenate([h, action.astype(h.dtype)], axis=-1)
        sizes = (self.hidden_dim, self.hidden_dim, 1)
        q1 = MLP(sizes, dtype=self.dtype, name="q1")(h_action)
        q2 = MLP(sizes, dtype=self.dtype, name="q2")(h_action)
        return q1[..., 0].astype(jnp.float32), q2[..., 0].astype(jnp.float32)


class Value(nn.Module):
    """State value V(h): own trunk, then Dense(hidden) ReLU Dense(hidden) ReLU Dense(1); float32 (B,).

    Not used by DrQ-v2; it is DrM's expectile V network (spec §2.4), same shapes and init.
    """

    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        h, _ = Trunk(self.feature_dim, self.dtype, name="trunk")(features)
        v = MLP((self.hidden_dim, self.hidden_dim, 1), dtype=self.dtype, name="value")(h)
        return v[..., 0].astype(jnp.float32)
