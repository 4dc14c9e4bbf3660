"""Dormant neurons of Dense layers (Sokar et al. 2023; DrM's dormant ratio beta, spec §2.1).

For a layer l with N_l neurons and activations h_i(x) over a batch of inputs x:

    s_i  = mean_x |h_i(x)|  /  ( (1/N_l) * sum_k mean_x |h_k(x)| )      neuron score
    i is tau-dormant  iff  s_i < tau    (official DrM code: strict `<`; the paper writes `<=`)
    beta = sum_l #dormant_l / sum_l N_l                                   pooled over layers,
                                                                          NOT a mean of per-layer ratios

The comparison is made as `mean|h_i| < tau * mean_k mean|h_k|` (no division), as the official
code does: a layer whose activations are all zero has no dormant neuron under `<` and all neurons
dormant under `<=`.

What "the activation of a Dense layer" means is a choice, the *activation rule*:

    "pre"       the raw output of every Dense layer
    "post"      every layer after the nonlinearity that follows it in the network (Sokar et al.)
    "official"  what DrM's PyTorch forward hooks end up reading: the raw output, except where the
                network follows the layer with an in-place ReLU, which overwrites the stored tensor,
                so the hook sees the post-ReLU values. For the DrQ-v2 actor: trunk pre-LayerNorm,
                hidden layers post-ReLU, output layer pre-tanh.

Read top to bottom:
  1. the ratio from activations: `neuron_mask`, `dormant_ratio` (any dict name -> (batch, units))
  2. raw Dense outputs of ANY flax module: `dense_outputs`, `layer_paths`, `module_dormant_ratio`
  3. activation rules: `DenseLayer`, `measured_activations`, and the layer tables of the DrQ-v2
     actor and critic (`actor_layers`, `critic_layers`)
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import layer_norm

Array = jnp.ndarray
RULES = ("official", "pre", "post")
COMPARISONS = ("<", "<=")

# ----------------------------------------------------------------------------------------------
# 1. The ratio from activations
# ----------------------------------------------------------------------------------------------


class DormantRatio(NamedTuple):
    total: Array  # dormant neurons summed over layers / neurons summed over layers
    per_layer: Dict[str, Array]  # each layer's own ratio


def _check_threshold(tau, comparison: str) -> None:
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS} (official DrM: '<'; paper: '<='), "
                         f"got {comparison!r}")
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"dormant threshold tau must be in [0, 1) (DrM uses 0.025), got {tau!r}")
    elif not isinstance(tau, jax.Array):
        raise ValueError(f"dormant threshold tau must be a number in [0, 1), got {type(tau).__name__} {tau!r}")


def _as_units(activation: Array) -> Array:
    """(..., units) -> (samples, units) in float32: every leading axis counts as a sample."""
    activation = jnp.asarray(activation)
    if activation.ndim < 2:
        raise ValueError(f"activations must be (batch, units) (or (..., units)), got shape {activation.shape}")
    return activation.astype(jnp.float32).reshape(-1, activation.shape[-1])


def neuron_mask(activation: Array, tau: float, comparison: str = "<") -> Array:
    """Boolean (units,): which neurons of one layer are tau-dormant on this batch."""
    _check_threshold(tau, comparison)
    mean_abs = jnp.mean(jnp.abs(_as_units(activation)), axis=0)  # E_x |h_i(x)|, per neuron
    threshold = tau * jnp.mean(mean_abs)  # tau * layer average
    return mean_abs < threshold if comparison == "<" else mean_abs <= threshold


def dormant_ratio(activations: Mapping[str, Array], tau: float, comparison: str = "<") -> DormantRatio:
    """Total (pooled) and per-layer dormant ratios of `activations` (layer name -> (batch, units))."""
    if not activations:
        raise ValueError("dormant_ratio needs at least one layer's activations, got an empty mapping")
    counts, units = {}, {}
    for name, activation in activations.items():
        mask = neuron_mask(activation, tau, comparison)
        counts[name], units[name] = jnp.sum(mask), mask.shape[0]
    per_layer = {name: counts[name] / units[name] for name in activations}
    total = sum(counts.values()) / sum(units.values())
    return DormantRatio(jnp.asarray(total, jnp.float32),
                        {name: jnp.asarray(r, jnp.float32) for name, r in per_layer.items()})


# ----------------------------------------------------------------------------------------------
# 2. Dense outputs of any flax module
# ----------------------------------------------------------------------------------------------


def _captured(module: nn.Module, variables, args, kwargs, types: Tuple[type, ...]) -> Dict[str, Any]:
    def capture(mdl: nn.Module, method_name: str) -> bool:
        return isinstance(mdl, types) and method_name == "__call__"

    _, state = module.apply(variables, *args, capture_intermediates=capture, mutable=["intermediates"], **kwargs)
    flat = {}

    def walk(tree, path):
        for key, value in tree.items():
            if key == "__call__":
                flat["/".join(path)] = value
            elif isinstance(value, Mapping):  # other leaves are values a module sowed itself
                walk(value, path + (key,))

    walk(state.get("intermediates", {}), ())  # absent when the module calls no such layer
    return flat


def dense_outputs(module: nn.Module, variables, *args, types: Tuple[type, ...] = (nn.Dense,), **kwargs
                  ) -> Dict[str, Array]:
    """Raw outputs of every `nn.Dense` (or `types`) call in `module.apply(variables, *args, **kwargs)`.

    Names are module paths joined by "/" (the param paths, e.g. "trunk/dense", "policy/dense_0").
    A layer called several times gets its outputs concatenated along the sample axis.
    """
    outputs = {}
    for name, calls in _captured(module, variables, args, kwargs, types).items():
        calls = [_as_units(c) for c in calls]
        outputs[name] = calls[0] if len(calls) == 1 else jnp.concatenate(calls, axis=0)
    return outputs


def layer_paths(module: nn.Module, variables, *args, types: Tuple[type, ...] = (nn.Dense,), **kwargs
                ) -> Tuple[Tuple[str, ...], ...]:
    """Module paths (tuples of names, as in the params tree) of every `types` layer the module calls.

    Shapes only: nothing is computed (jax.eval_shape), so it is cheap inside a jitted function.
    """
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), (variables, args))
    names = []
    jax.eval_shape(lambda v, a: names.extend(_captured(module, v, a, kwargs, types)), *abstract)
    return tuple(tuple(name.split("/")) for name in sorted(names))


Activation = Union[None, Callable[[Array], Array], Mapping[str, Callable[[Array], Array]]]


def module_dormant_ratio(module: nn.Module, variables, *args, tau: float, comparison: str = "<",
                         activation: Activation = None, **kwargs) -> DormantRatio:
    """Dormant ratio of the Dense layers of any flax module on the batch `args`.

    activation: None -> rule "pre" (raw Dense outputs); a function -> applied to every layer's
    output; a dict layer name -> function -> per layer (must name every Dense layer, see
    `dense_outputs` for the names).
    """
    raw = dense_outputs(module, variables, *args, **kwargs)
    if activation is None:
        measured = raw
    elif callable(activation):
        measured = {name: activation(x) for name, x in raw.items()}
    else:
        missing = sorted(set(raw) - set(activation))
        unknown = sorted(set(activation) - set(raw))
        if missing or unknown:
            raise ValueError(f"activation must give a function for every Dense layer {sorted(raw)}; "
                             f"missing {missing}, unknown {unknown}")
        measured = {name: activation[name](x) for name, x in raw.items()}
    return dormant_ratio(measured, tau, comparison)


# ----------------------------------------------------------------------------------------------
# 3. Activation rules
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    """How a Dense layer's output continues in the network, which is what the rules need.

    nonlinearity: what the network applies to this layer's output next ("post" measures it).
    inplace_relu: the official PyTorch network follows this layer with nn.ReLU(inplace=True), so its
                  forward hook reads the post-ReLU tensor ("official" measures relu(raw) here).
    is_output:    the network's last layer (DrM includes it; `dormant_include_output_layer`).
    """

    nonlinearity: Callable[[Array], Array]
    inplace_relu: bool = False
    is_output: bool = False


def measured_activations(raw: Mapping[str, Array], layers: Mapping[str, DenseLayer], rule: str
                         ) -> Dict[str, Array]:
    """Apply an activation rule ("official", "pre" or "post") to raw Dense outputs."""
    if rule not in RULES:
        raise ValueError(f"activation rule must be one of {RULES}, got {rule!r}")
    missing = sorted(set(raw) - set(layers))
    if missing:
        raise ValueError(f"no DenseLayer description for layer(s) {missing}; described: {sorted(layers)}")
    measured = {}
    for name, x in raw.items():
        layer = layers[name]
        if rule == "pre":
            measured[name] = x
        elif rule == "post":
            measured[name] = layer.nonlinearity(x)
        else:
            measured[name] = nn.relu(x) if layer.inplace_relu else x
    return measured


def _trunk_nonlinearity(trunk_params) -> Callable[[Array], Array]:
    """tanh(LayerNorm(x)) with the trunk's own LayerNorm params (networks.actor_critic.Trunk)."""
    ln_params = {"params": trunk_params["layer_norm"]}
    return lambda x: jnp.tanh(layer_norm(jnp.float32).apply(ln_params, x.astype(jnp.float32)))


def _mlp_layers(prefix: str, mlp_params, output_nonlinearity: Callable[[Array], Array]) -> Dict[str, DenseLayer]:
    """networks.mlp.MLP: dense_0 .. dense_{n-1}; in-place ReLU after every layer but the last."""
    n = len(mlp_params)
    layers = {f"{prefix}/dense_{i}": DenseLayer(nn.relu, inplace_relu=True) for i in range(n - 1)}
    layers[f"{prefix}/dense_{n - 1}"] = DenseLayer(output_nonlinearity, is_output=True)
    return layers


def actor_layers(actor_params) -> Dict[str, DenseLayer]:
    """The Dense layers of networks.actor_critic.Actor, named as `dense_outputs` names them:
    trunk/dense (-> LayerNorm -> tanh), policy/dense_0, policy/dense_1 (-> ReLU, in-place in the
    official code), policy/dense_2 (output -> tanh)."""
    params = actor_params["params"]
    return {"trunk/dense": DenseLayer(_trunk_nonlinearity(params["trunk"])),
            **_mlp_layers("policy", params["policy"], jnp.tanh)}


def critic_layers(critic_params) -> Dict[str, DenseLayer]:
    """The Dense layers of networks.actor_critic.Critic: trunk/dense, then q1/dense_i and q2/dense_i
    (hidden -> ReLU, in-place in the official code; output -> nothing)."""
    params = critic_params["params"]
    identity = lambda x: x  # noqa: E731 - the Q output has no nonlinearity
    return {"trunk/dense": DenseLayer(_trunk_nonlinearity(params["trunk"])),
            **_mlp_layers("q1", params["q1"], identity), **_mlp_layers("q2", params["q2"], identity)}
