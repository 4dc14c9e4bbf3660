"""Sampling error of a buffer of (s, a) with respect to a target policy (spec §8.3, PROPS paper).

The empirical policy pi_D is the maximum-likelihood fit of the policy network to the buffer's
(s, a) pairs, started from pi_theta with some parameters frozen (the feature layers: ROS / PROPS
freeze the hidden weight matrices). The sampling error is KL(pi_D || pi_theta) estimated on the
buffer's own samples:

    SE = mean_i [ log pi_D(a_i | s_i) - log pi_theta(a_i | s_i) ]      (optionally weighted per sample)

A buffer that matches pi_theta's distribution exactly gives pi_D = pi_theta and SE = 0; a small or
skewed buffer lets pi_D move away from pi_theta and SE grows.

Reference code (read, nothing copied): PPOROS a0c8708 `PROPS/ppo_props_continuous.py` `compute_se`
(Adam lr 1e-3, `se_epochs` epochs of shuffled minibatches of 512 * samples // num_steps, gradient
norm clipped at 1, log-std clamped to [-3, 1] in both log-probs via `PROPS/utils.py`
`get_action_and_info(clamp=True)`); PROPS d5d91bd `ppo_continuous.py` `compute_se` (2000 full-batch
epochs, no clip, no clamp, hidden biases frozen as well).

Everything here is generic over the policy: the caller passes `log_prob_fn(params, obs, actions)`
and a pytree `trainable` of booleans (same structure as params) saying which leaves the fit may
change. Pure and jittable: epochs and minibatches are nested `lax.scan`s; the last minibatch of an
epoch may be smaller than the others (as PyTorch slicing gives), which is done with a mask.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

Params = Any
LogProbFn = Callable[[Params, jnp.ndarray, jnp.ndarray], jnp.ndarray]

ADAM_EPS = 1e-8  # torch.optim.Adam's default eps (PPOROS / PROPS-2025 create the fit's Adam with defaults)


def minibatch_indices(key: jax.Array, num_samples: int, minibatch_size: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """One epoch of shuffled minibatches: (indices, valid), each (k, minibatch_size) with
    k = ceil(num_samples / minibatch_size). A fresh permutation is cut into consecutive pieces; the
    last piece may be short, its missing entries padded with index 0 and valid = False."""
    if num_samples < 1 or minibatch_size < 1:
        raise ValueError(f"need num_samples >= 1 and minibatch_size >= 1, got {num_samples} and {minibatch_size}")
    num_minibatches = -(-num_samples // minibatch_size)
    padded = num_minibatches * minibatch_size
    permutation = jax.random.permutation(key, num_samples)
    indices = jnp.zeros((padded,), jnp.int32).at[:num_samples].set(permutation)
    valid = jnp.arange(padded) < num_samples
    return indices.reshape(num_minibatches, minibatch_size), valid.reshape(num_minibatches, minibatch_size)


def masked_mean(x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """Mean of x over the entries where valid (x and valid of the same shape)."""
    valid = valid.astype(x.dtype)
    return jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def advantage_weights(advantages: jnp.ndarray) -> jnp.ndarray:
    """|normalized A|: |(A - mean) / (std + 1e-8)| with the sample std (ddof 1), the per-sample weights
    of PPOROS HEAD's sampling-error variant (spec pitfall #31)."""
    return jnp.abs((advantages - advantages.mean()) / (jnp.std(advantages, ddof=1) + 1e-8))


def fit_empirical_policy(log_prob_fn: LogProbFn, params: Params, trainable: Any, obs: jnp.ndarray,
                         actions: jnp.ndarray, key: jax.Array, *, epochs: int, minibatch_size: int,
                         lr: float = 1e-3, max_grad_norm: float = 1.0) -> Params:
    """pi_D: starting from params, `epochs` epochs of Adam (lr, PyTorch defaults) on
    -mean log_prob_fn(p, s, a) over shuffled minibatches of the (N, ...) obs / actions. Only the leaves
    whose `trainable` entry is True move (the others get zero gradient and zero update, as PyTorch's
    requires_grad=False); the gradient of the trainable leaves is clipped to global norm
    max_grad_norm first (<= 0: no clip). minibatch_size is capped to N (a full batch)."""
    num_samples = obs.shape[0]
    size = min(max(int(minibatch_size), 1), num_samples)
    mask = lambda tree: jax.tree.map(lambda leaf, t: leaf * t, tree, trainable)
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=ADAM_EPS)
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), adam) if max_grad_norm > 0 else adam

    def negative_log_likelihood(p, idx, valid):
        return -masked_mean(log_prob_fn(p, obs[idx], actions[idx]), valid)

    def minibatch_step(carry, minibatch):
        p, opt_state = carry
        grads = mask(jax.grad(negative_log_likelihood)(p, *minibatch))
        updates, opt_state = tx.update(grads, opt_state, p)
        p = jax.tree.map(lambda leaf, u: leaf - lr * u, p, mask(updates))
        return (p, opt_state), None

    def epoch(carry, epoch_key):
        minibatches = minibatch_indices(epoch_key, num_samples, size)
        return jax.lax.scan(minibatch_step, carry, minibatches)[0], None

    (fitted, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(key, epochs))
    return fitted


def sampling_error(log_prob_fn: LogProbFn, params: Params, trainable: Any, obs: jnp.ndarray,
                   actions: jnp.ndarray, key: jax.Array, *, epochs: int, minibatch_size: int,
                   lr: float = 1e-3, max_grad_norm: float = 1.0,
                   weights: Optional[jnp.ndarray] = None) -> Tuple[jnp.ndarray, Params]:
    """(SE, pi_D's params): fit pi_D (fit_empirical_policy) and return
    mean[w * (log pi_D(a|s) - log pi_theta(a|s))] over all N samples (w = 1 unless `weights` (N,) is
    given, e.g. advantage_weights; PPOROS averages w * log-ratio, it does not divide by mean(w))."""
    fitted = fit_empirical_policy(log_prob_fn, params, trainable, obs, actions, key, epochs=epochs,
                                  minibatch_size=minibatch_size, lr=lr, max_grad_norm=max_grad_norm)
    log_ratio = log_prob_fn(fitted, obs, actions) - log_prob_fn(params, obs, actions)
    if weights is not None:
        log_ratio = weights * log_ratio
    return jnp.mean(log_ratio), fitted
