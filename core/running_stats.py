"""Running mean / variance statistics and the observation and reward normalizers built on them.

Pure-function versions of what the on-policy agents' environment wrappers do (spec §7 "env wrappers"):
gymnasium's `RunningMeanStd`, `NormalizeObservation` and `NormalizeReward`, in the form the PPO/PROPS
code (PPOROS, `PROPS/utils.py`) uses them. Everything here is a pytree and jittable, so the loop can
keep one normalizer per seed, stack them over seeds and checkpoint them with the agent.

Read top to bottom:

  1. RunningMeanStd: mean, var, count and the parallel-variance update (Chan et al.), exactly
     gymnasium 1.4's `gymnasium.wrappers.utils.RunningMeanStd` / `update_mean_var_count_from_moments`
     (initial mean 0, var 1, count 1e-4; the batch variance is the population variance, ddof 0).
  2. normalize / denormalize with it: (x - mean) / sqrt(var + eps), eps 1e-8 (gymnasium's and
     PPOROS's epsilon), optionally clipped (the +-10 clip of the official `TransformObservation` /
     `TransformReward` wrappers).
  3. The reward normalizer (gymnasium `NormalizeReward`, PPOROS `PROPS/utils.py` `NormalizeReward`):
     each step first folds the reward into a per-environment discounted return,
         G <- G * gamma * (1 - terminated) + r,
     then updates the return statistics with G, then divides the reward (not G, and not centred)
     by the updated sqrt(var + eps). Only `terminated` multiplies the old return away: a time-limit
     truncation does NOT reset G (PPOROS and gymnasium 1.4's single-environment wrapper alike), and
     the reset is applied in the terminating step itself, so the terminal reward starts the next
     episode's G (gymnasium's "kept for backward compatibility" form). We follow that exactly.

Order in the official code: every statistic is updated with the new data BEFORE that data is
normalized (NormalizeObservation.normalize: update, then normalize; NormalizeReward: update G, update
the return statistics, then scale). `running_stats_update` followed by `normalize` reproduces it.

Differences to know about:
  * PPOROS wraps each sub-environment separately, so with num_envs > 1 it would keep one return
    statistic per environment, each updated with a batch of one; here (as in gymnasium's vector
    NormalizeReward) one statistic is shared and updated with the batch of all environments' G.
    The PROPS runs use num_envs = 1, where the two agree exactly.
  * gymnasium 1.4's *vector* NormalizeReward additionally skips the next-step autoreset step and, in
    same-step mode, zeroes G after any episode end; PPOROS (single-env wrappers inside a same-step
    SyncVectorEnv) does neither, and neither do we.
  * Statistics are float32 here (gymnasium keeps float64); the tests agree to ~1e-6 relative.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import flax.struct as struct
import jax.numpy as jnp

EPSILON = 1e-8  # gymnasium NormalizeObservation / NormalizeReward epsilon (also PPOROS's wrappers)
INITIAL_COUNT = 1e-4  # gymnasium RunningMeanStd(epsilon=1e-4): the prior's pseudo-count

# ----------------------------------------------------------------------------------------------
# 1. Running mean and variance
# ----------------------------------------------------------------------------------------------


class RunningMeanStd(struct.PyTreeNode):
    """Running mean and (population) variance of a stream of arrays of one shape.

    Starts from the prior mean 0, var 1 with pseudo-count 1e-4, as gymnasium's RunningMeanStd.
    """

    mean: jnp.ndarray  # (*shape,)
    var: jnp.ndarray  # (*shape,)
    count: jnp.ndarray  # float32 scalar: samples seen + 1e-4


def running_stats_init(shape: Union[int, Sequence[int]] = ()) -> RunningMeanStd:
    """Fresh statistics for values of `shape` (() for a scalar stream such as returns)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return RunningMeanStd(mean=jnp.zeros(shape, jnp.float32), var=jnp.ones(shape, jnp.float32),
                          count=jnp.asarray(INITIAL_COUNT, jnp.float32))


def running_stats_update(stats: RunningMeanStd, batch: jnp.ndarray) -> RunningMeanStd:
    """Fold a batch (leading axis = samples, the rest = the statistics' shape) into the statistics.

    Parallel-variance combination of the running (mean, var, count) with the batch's moments
    (gymnasium `update_mean_var_count_from_moments`):
        delta = batch_mean - mean,  total = count + n
        mean' = mean + delta * n / total
        var'  = (var * count + batch_var * n + delta^2 * count * n / total) / total
    """
    batch = jnp.asarray(batch, jnp.float32)
    if batch.ndim != stats.mean.ndim + 1 or batch.shape[1:] != stats.mean.shape:
        raise ValueError(f"batch must have shape (n, *{stats.mean.shape}) for statistics of shape "
                         f"{stats.mean.shape}, got {batch.shape}")
    n = batch.shape[0]
    batch_mean = jnp.mean(batch, axis=0)
    batch_var = jnp.var(batch, axis=0)  # population variance (numpy's default ddof 0, as gymnasium)
    delta = batch_mean - stats.mean
    total = stats.count + n
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / total
    return RunningMeanStd(mean=mean, var=m2 / total, count=total)


# ----------------------------------------------------------------------------------------------
# 2. Normalize with the statistics
# ----------------------------------------------------------------------------------------------


def normalize(stats: RunningMeanStd, x: jnp.ndarray, clip: Optional[float] = None,
              eps: float = EPSILON) -> jnp.ndarray:
    """(x - mean) / sqrt(var + eps), then clipped to [-clip, clip] when clip is given.

    The statistics are not changed: call running_stats_update first to reproduce the official
    wrapper (update, then normalize), or skip it to normalize with frozen statistics.
    """
    out = (jnp.asarray(x, jnp.float32) - stats.mean) / jnp.sqrt(stats.var + eps)
    return out if clip is None else jnp.clip(out, -clip, clip)


def denormalize(stats: RunningMeanStd, x: jnp.ndarray, eps: float = EPSILON) -> jnp.ndarray:
    """x * sqrt(var + eps) + mean: the inverse of normalize without clip (PPOROS `unnormalize`)."""
    return jnp.asarray(x, jnp.float32) * jnp.sqrt(stats.var + eps) + stats.mean


# ----------------------------------------------------------------------------------------------
# 3. Reward normalizer (gymnasium / PPOROS NormalizeReward)
# ----------------------------------------------------------------------------------------------


class RewardNormalizer(struct.PyTreeNode):
    """State of the reward normalizer for E environments stepped together."""

    return_stats: RunningMeanStd  # scalar statistics of the discounted returns G
    discounted_return: jnp.ndarray  # (E,) float32: each environment's running G


def reward_normalizer_init(num_envs: int) -> RewardNormalizer:
    """Fresh normalizer: return statistics at the prior, G = 0 for every environment."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return RewardNormalizer(return_stats=running_stats_init(()),
                            discounted_return=jnp.zeros((num_envs,), jnp.float32))


def reward_normalizer_step(norm: RewardNormalizer, rewards: jnp.ndarray, terminated: jnp.ndarray,
                           truncated: jnp.ndarray, gamma: float) -> Tuple[RewardNormalizer, jnp.ndarray]:
    """One environment step of NormalizeReward for all E environments (arrays of shape (E,)).

    G <- G * gamma * (1 - terminated) + r;  return statistics <- update with the batch G (E values);
    returns (new normalizer, r / sqrt(var + eps)) with the UPDATED variance, unclipped (the official
    +-10 clip is a separate wrapper: clip the result, or call scale_reward(norm, rewards, clip)).

    `truncated` is taken so call sites hand over both flags, and is deliberately unused: neither
    PPOROS nor gymnasium resets G at a time-limit truncation (module docstring).
    """
    del truncated  # a truncation does not reset the running return (PPOROS, gymnasium NormalizeReward)
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.shape != norm.discounted_return.shape:
        raise ValueError(f"rewards must have shape {norm.discounted_return.shape} (one per environment), "
                         f"got {rewards.shape}")
    not_terminated = 1.0 - jnp.asarray(terminated, jnp.float32)
    discounted_return = norm.discounted_return * gamma * not_terminated + rewards
    norm = RewardNormalizer(return_stats=running_stats_update(norm.return_stats, discounted_return),
                            discounted_return=discounted_return)
    return norm, scale_reward(norm, rewards)


def scale_reward(norm: RewardNormalizer, rewards: jnp.ndarray, clip: Optional[float] = None,
                 eps: float = EPSILON) -> jnp.ndarray:
    """r / sqrt(var(G) + eps), not centred (openai/baselines#538), then clipped to +-clip if given.

    With frozen statistics (no step) this re-normalizes stored raw rewards before an update (spec §8.1).
    """
    out = jnp.asarray(rewards, jnp.float32) / jnp.sqrt(norm.return_stats.var + eps)
    return out if clip is None else jnp.clip(out, -clip, clip)


def unscale_reward(norm: RewardNormalizer, scaled: jnp.ndarray, eps: float = EPSILON) -> jnp.ndarray:
    """scaled * sqrt(var(G) + eps): the inverse of scale_reward without clip (PPOROS `unnormalize`)."""
    return jnp.asarray(scaled, jnp.float32) * jnp.sqrt(norm.return_stats.var + eps)


def observe_reward(norm: RewardNormalizer, rewards: jnp.ndarray, terminated: jnp.ndarray, truncated: jnp.ndarray,
                   gamma: float, clip: Optional[float], enabled: bool = True
                   ) -> Tuple[RewardNormalizer, jnp.ndarray, jnp.ndarray]:
    """One step of the loops' reward normalization: (norm, the normalized clipped reward the agent trains
    on, its un-normalized copy that the ring buffer stores, spec §8.1). enabled=False: rewards as they are."""
    if not enabled:
        rewards = rewards.astype(jnp.float32)
        return norm, rewards, rewards
    norm, _ = reward_normalizer_step(norm, rewards, terminated, truncated, gamma)
    scaled = scale_reward(norm, rewards, clip=clip)
    return norm, scaled, unscale_reward(norm, scaled)


def observe_first(stats: RunningMeanStd, obs: jnp.ndarray, clip: Optional[float], enabled: bool = True
                  ) -> Tuple[RunningMeanStd, jnp.ndarray, jnp.ndarray]:
    """The first observations of a run, (E, obs_dim), into the statistics as one batch (as a vector
    wrapper sees them): (stats, normalized clipped obs, its un-normalized copy). enabled=False: as they are."""
    if not enabled:
        return stats, obs, obs
    stats = running_stats_update(stats, obs)
    norm = normalize(stats, obs, clip=clip)
    return stats, norm, denormalize(stats, norm)
