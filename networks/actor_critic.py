"""DrQ-v2 actor, critic (twin Q) and a state-value head, on top of encoder features (spec §1.4).

Each network has its own trunk Dense(feature_dim) -> LayerNorm -> tanh that projects the encoder
output (39200 for 84x84 pixels) down to `feature_dim`; the heads are MLPs with `hidden_dim` units.
All heads return float32, whatever the compute dtype.

With a token head (`head`: the settings of a `networks.tokens.Head`, "Don't flatten, tokenize!", spec
§4.7) the encoder gives its feature map (B, h, w, d) instead of the flat vector, and each trunk first
tokenizes and mixes it with its own Head, then projects with the same Dense -> LayerNorm -> tanh.

Two options of DrM's official Meta-World and Adroit networks (spec §2.6, §2.7), off by default (then
the modules, their params and their outputs are exactly DrQ-v2's):
  * `proprio_dim > 0` (actor, critic, V; Adroit): after the trunk, h <- Fusion(h + StateMLP(s)) for
    a proprioceptive vector s given as `proprio=` (`ProprioFusion`);
  * `hidden_dropout`, `hidden_layer_norm` (critic; Meta-World): Dropout then LayerNorm after each
    hidden Dense of Q1 and Q2 (`QHead`); dropout is active only with `deterministic=False`, which
    needs a "dropout" RNG: `critic.apply(params, h, a, deterministic=False, rngs={"dropout": key})`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

from networks.mlp import MLP, dense, layer_norm
from networks.tokens import Head

Dtype = Any


class Trunk(nn.Module):
    """Dense(feature_dim) -> LayerNorm(eps 1e-5) -> tanh. Also returns the raw Dense output (pre-LayerNorm).

    `head`: (name, value) pairs of a tokens.Head, applied first to a feature map (B, h, w, d); empty
    (the default, DrQ-v2) for flat features.
    """

    feature_dim: int
    dtype: Dtype = jnp.float32
    head: Tuple[Tuple[str, Any], ...] = ()

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
        if self.head:
            features = Head(**dict(self.head), dtype=self.dtype, name="head")(features, noisy=False)
        elif features.ndim != 2:
            raise ValueError(f"{type(self).__name__} without a token head takes flat features (B, D), "
                             f"got {features.shape}")
        projected = dense(self.feature_dim, self.dtype, "dense")(features)
        return jnp.tanh(layer_norm(self.dtype)(projected)), projected


class ProprioFusion(nn.Module):
    """DrM's Adroit state fusion (spec §2.7), after a trunk: h <- Fusion(h + StateMLP(s)) with
    StateMLP = Dense(hidden) ReLU Dense(feature_dim) ("state_encoder") and
    Fusion = Dense(hidden) ReLU Dense(feature_dim) ("fusion"); no nonlinearity after either output."""

    feature_dim: int
    hidden_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jnp.ndarray, proprio: jnp.ndarray, return_activations: bool = False):
        sizes = (self.hidden_dim, self.feature_dim)
        encoded, state_outs = MLP(sizes, dtype=self.dtype, name="state_encoder")(
            proprio.astype(self.dtype), return_activations=True)
        fused, fusion_outs = MLP(sizes, dtype=self.dtype, name="fusion")(h + encoded, return_activations=True)
        if not return_activations:
            return fused
        return fused, {"state_encoder_0": state_outs["dense_0"], "state_encoder_1": state_outs["dense_1"],
                       "fusion_0": fusion_outs["dense_0"], "fusion_1": fusion_outs["dense_1"]}


def _fuse(module: nn.Module, h: jnp.ndarray, proprio: Optional[jnp.ndarray], return_activations: bool = False):
    """h, or ProprioFusion(h, proprio) named "proprio_fusion" when module.proprio_dim > 0 (then proprio is required)."""
    if module.proprio_dim == 0:
        if proprio is not None:
            raise ValueError(f"{type(module).__name__} has no proprio fusion (proprio_dim=0) but proprio was given")
        return (h, {}) if return_activations else h
    if proprio is None or proprio.shape[-1] != module.proprio_dim:
        got = None if proprio is None else proprio.shape
        raise ValueError(f"{type(module).__name__} fuses a proprio vector of {module.proprio_dim} entries: pass "
                         f"proprio= of shape (batch, {module.proprio_dim}), got {got}")
    return ProprioFusion(module.feature_dim, module.hidden_dim, module.dtype, name="proprio_fusion")(
        h, proprio, return_activations=return_activations)


class Actor(nn.Module):
    """Deterministic policy mean mu in (-1, 1)^A: trunk, Dense(hidden) ReLU Dense(hidden) ReLU Dense(A) tanh.

    `return_activations=True` returns (mu, activations) with the RAW output of every Dense layer:
      "trunk":    trunk Dense, pre-LayerNorm        (feature_dim units)
      "hidden_0": first policy Dense, pre-ReLU      (hidden_dim)
      "hidden_1": second policy Dense, pre-ReLU     (hidden_dim)
      "output":   last Dense, pre-tanh              (action_dim)
    (with proprio fusion also "state_encoder_0/1" and "fusion_0/1", see ProprioFusion).
    DrM's official dormant rule applies ReLU to the two hidden entries (spec §2.1).
    """

    action_dim: int
    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32
    proprio_dim: int = 0  # > 0: ProprioFusion after the trunk (DrM Adroit)
    head: Tuple[Tuple[str, Any], ...] = ()  # token head of the trunk (see Trunk); () = flat features

    @nn.compact
    def __call__(self, features: jnp.ndarray, return_activations: bool = False,
                 proprio: Optional[jnp.ndarray] = None
                 ) -> Union[jnp.ndarray, Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]]:
        h, trunk_out = Trunk(self.feature_dim, self.dtype, self.head, name="trunk")(features)
        h, fusion_outs = _fuse(self, h, proprio, return_activations=True)
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
            **fusion_outs,
        }
        return mu, activations


class QHead(nn.Module):
    """DrM's Meta-World Q head (DroQ-style, spec §2.6): 2 x [Dense(hidden), Dropout(rate), LayerNorm,
    ReLU], Dense(1). Params dense_0, layer_norm_0, dense_1, layer_norm_1, dense_2 (the LayerNorms only
    with layer_norm=True); dropout only with rate > 0 and deterministic=False."""

    hidden_dim: int
    dropout_rate: float = 0.0
    layer_norm: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        for i in range(2):
            x = dense(self.hidden_dim, self.dtype, f"dense_{i}")(x)
            if self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=deterministic, name=f"dropout_{i}")(x)
            if self.layer_norm:
                x = layer_norm(self.dtype, name=f"layer_norm_{i}")(x)
            x = nn.relu(x)
        return dense(1, self.dtype, "dense_2")(x)


class Critic(nn.Module):
    """Twin Q: own trunk, then Q1 and Q2 on concat(h, a), two separate MLPs
    Dense(hidden) ReLU Dense(hidden) ReLU Dense(1) (QHead with hidden_dropout / hidden_layer_norm).

    Returns (q1, q2), each float32 of shape (B,). `deterministic=False` turns dropout on (train mode).
    """

    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32
    hidden_dropout: float = 0.0  # DrM Meta-World: 0.01
    hidden_layer_norm: bool = False  # DrM Meta-World: True
    proprio_dim: int = 0  # > 0: ProprioFusion after the trunk (DrM Adroit)
    head: Tuple[Tuple[str, Any], ...] = ()  # token head of the trunk (see Trunk); () = flat features

    @nn.compact
    def __call__(self, features: jnp.ndarray, action: jnp.ndarray, proprio: Optional[jnp.ndarray] = None,
                 deterministic: bool = True) -> Tuple[jnp.ndarray, jnp.ndarray]:
        h, _ = Trunk(self.feature_dim, self.dtype, self.head, name="trunk")(features)
        h = _fuse(self, h, proprio)
        h_action = jnp.concatenate([h, action.astype(h.dtype)], axis=-1)
        if self.hidden_dropout > 0 or self.hidden_layer_norm:
            def head(name):
                return QHead(self.hidden_dim, self.hidden_dropout, self.hidden_layer_norm, self.dtype,
                             name=name)(h_action, deterministic)
        else:
            def head(name):
                return MLP((self.hidden_dim, self.hidden_dim, 1), dtype=self.dtype, name=name)(h_action)
        q1, q2 = head("q1"), head("q2")
        return q1[..., 0].astype(jnp.float32), q2[..., 0].astype(jnp.float32)


class Value(nn.Module):
    """State value V(h): own trunk, then Dense(hidden) ReLU Dense(hidden) ReLU Dense(1); float32 (B,).

    Not used by DrQ-v2; it is DrM's expectile V network (spec §2.4), same shapes and init.
    """

    feature_dim: int = 50
    hidden_dim: int = 1024
    dtype: Dtype = jnp.float32
    proprio_dim: int = 0  # > 0: ProprioFusion after the trunk (DrM Adroit)
    head: Tuple[Tuple[str, Any], ...] = ()  # token head of the trunk (see Trunk); () = flat features

    @nn.compact
    def __call__(self, features: jnp.ndarray, proprio: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        h, _ = Trunk(self.feature_dim, self.dtype, self.head, name="trunk")(features)
        h = _fuse(self, h, proprio)
        v = MLP((self.hidden_dim, self.hidden_dim, 1), dtype=self.dtype, name="value")(h)
        return v[..., 0].astype(jnp.float32)
