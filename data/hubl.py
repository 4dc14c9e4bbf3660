"""HUBL (Heuristic Blending, Geng et al., ICLR'24) dataset relabeling, spec §6. Runs once, on the host.

For a logged trajectory τ with base discount γ and blending factor λ_τ ∈ [0, 1]:
  heuristic   h_t = Σ_{k≥t} γ^{k−t} r_k, the Monte-Carlo return-to-go inside τ. It is 0 after a true
              terminal; at a time-limit truncation (or where the log stops) the sum just stops: it is
              not bootstrapped.
  relabeled   r̃_t = r_t + γ·λ_τ·h_{t+1}·(1 − term_t),   γ̃_t = γ·(1 − λ_τ)
so the TD target r̃_t + γ̃_t·(1 − term_t)·V(s_{t+1}) = r_t + γ·(1 − term_t)·[λ_τ·h_{t+1} + (1 − λ_τ)·V(s_{t+1})]
blends the Monte-Carlo heuristic with the bootstrapped value; λ = 0 gives back the base algorithm.

The base learner takes the relabeled rewards and a PER-SAMPLE discount γ̃ in place of its global γ
(TD3+BC: y = r̃ + γ̃·(1 − done)·min Q'); it still multiplies by (1 − terminal) itself: γ̃ does not
contain the terminal mask.

Edge case, the last transition of a truncated (or unfinished) trajectory: h_{t+1} = 0 there because the
logged sum stops at the cut, so r̃_t = r_t and the target is r_t + γ(1 − λ_τ)·V(s_{t+1}): the λ share of
the future is dropped rather than estimated. This follows the spec (truncation is not bootstrapped in h).

λ designs (§6.2; both are [UNVERIFIED] as the paper's named variants):
  "constant": λ_τ = α for every trajectory.
  "rank":     λ_τ = α · #{τ' : score(τ') ≤ score(τ)} / N over the N trajectories, with score(τ) the mean of
              the Monte-Carlo returns h_t over τ (`trajectory_scores`), or any other score the caller passes.
Arrays are flat over transitions in dataset order, each trajectory a contiguous block with episode id
0 .. E−1 (the layout of `data.datasets.OfflineDataset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLEND_DESIGNS = ("constant", "rank")


def _check_layout(rewards: np.ndarray, terminals: np.ndarray, episode_ids: np.ndarray) -> int:
    """Number of episodes E, after checking that ids are 0..E-1, each one contiguous block."""
    if not (rewards.ndim == 1 and rewards.shape == terminals.shape == episode_ids.shape):
        raise ValueError(
            f"rewards, terminals and episode_ids must be 1-D arrays of the same length, got shapes "
            f"{rewards.shape}, {terminals.shape}, {episode_ids.shape}."
        )
    if rewards.size == 0:
        raise ValueError("HUBL relabeling needs at least one transition.")
    if not np.all(np.isin(terminals, (0, 1))):
        raise ValueError(f"terminals must be 0/1, got values {np.unique(terminals)[:5]}.")
    block_ids = episode_ids[np.r_[True, episode_ids[1:] != episode_ids[:-1]]]
    num_episodes = len(block_ids)
    if not np.array_equal(block_ids, np.arange(num_episodes)):
        raise ValueError(
            "episode_ids must number the trajectories 0, 1, ..., E-1 in order, each trajectory one contiguous "
            f"block of transitions; got blocks with ids {block_ids[:10]}..."
        )
    return num_episodes


def monte_carlo_returns(rewards: np.ndarray, terminals: np.ndarray, episode_ids: np.ndarray, gamma: float) -> np.ndarray:
    """h_t = r_t + γ·(1 − term_t)·h_{t+1} inside each trajectory, h after a trajectory's last transition = 0.

    So the sum stops at a terminal (nothing after it) and at a truncation / end of the log (not bootstrapped).
    Returns float64 (N,)."""
    rewards, terminals, episode_ids = np.asarray(rewards, np.float64), np.asarray(terminals), np.asarray(episode_ids)
    _check_layout(rewards, terminals, episode_ids)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
    # Multiplier of h_{t+1} in h_t: γ inside a trajectory, 0 at a terminal or at the trajectory's last transition.
    continues = np.r_[episode_ids[1:] == episode_ids[:-1], False] & (terminals == 0)
    carry = np.where(continues, gamma, 0.0).tolist()
    rewards_list = rewards.tolist()
    returns = [0.0] * len(rewards_list)
    next_return = 0.0
    for t in range(len(rewards_list) - 1, -1, -1):  # one backward pass; plain floats are fastest here
        next_return = rewards_list[t] + carry[t] * next_return
        returns[t] = next_return
    return np.asarray(returns, np.float64)


def trajectory_scores(mc_returns: np.ndarray, episode_ids: np.ndarray) -> np.ndarray:
    """score(τ) = mean over t ∈ τ of the Monte-Carlo returns h_t, (E,) for episode ids 0..E-1."""
    mc_returns, episode_ids = np.asarray(mc_returns, np.float64), np.asarray(episode_ids)
    num_episodes = _check_layout(mc_returns, np.zeros_like(episode_ids), episode_ids)
    return np.bincount(episode_ids, weights=mc_returns, minlength=num_episodes) / np.bincount(episode_ids, minlength=num_episodes)


def blend_factors(scores: np.ndarray, design: str, alpha: float) -> np.ndarray:
    """λ per trajectory (E,) from per-trajectory scores: "constant" α, or "rank" α·#{scores ≤ score(τ)}/N."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array (one per trajectory), got shape {scores.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (λ = α·fraction must stay in [0, 1]), got {alpha}.")
    if design == "constant":
        return np.full(scores.shape, alpha)
    if design == "rank":
        # Count of trajectories whose score is <= each score (ties all get the highest rank of their group).
        at_or_below = np.searchsorted(np.sort(scores), scores, side="right")
        return alpha * at_or_below / scores.size
    raise ValueError(f"Unknown HUBL blend design {design!r}; valid designs: {BLEND_DESIGNS}.")


def relabel(
    rewards: np.ndarray, terminals: np.ndarray, episode_ids: np.ndarray, gamma: float, lambdas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relabeled (rewards, discounts), each float32 (N,): r̃_t = r_t + γ·λ_τ·h_{t+1}·(1 − term_t), γ̃_t = γ·(1 − λ_τ).

    lambdas: one λ per trajectory, (E,), indexed by episode id. h_{t+1} is 0 at a trajectory's last
    transition (terminal, truncation or end of the log; module docstring). The learner multiplies γ̃ by
    (1 − terminal) itself."""
    rewards, terminals, episode_ids = np.asarray(rewards, np.float64), np.asarray(terminals), np.asarray(episode_ids)
    lambdas = np.asarray(lambdas, np.float64)
    num_episodes = _check_layout(rewards, terminals, episode_ids)
    if lambdas.shape != (num_episodes,):
        raise ValueError(f"lambdas must hold one value per trajectory, shape ({num_episodes},), got {lambdas.shape}.")
    if np.any((lambdas < 0) | (lambdas > 1)):
        raise ValueError(f"every λ must be in [0, 1], got range [{lambdas.min()}, {lambdas.max()}].")
    mc_returns = monte_carlo_returns(rewards, terminals, episode_ids, gamma)
    same_episode_next = np.r_[episode_ids[1:] == episode_ids[:-1], False]
    next_mc_return = np.where(same_episode_next, np.r_[mc_returns[1:], 0.0], 0.0)
    lam = lambdas[episode_ids]
    relabeled_rewards = rewards + gamma * lam * next_mc_return * (1.0 - terminals)
    discounts = gamma * (1.0 - lam)
    return relabeled_rewards.astype(np.float32), discounts.astype(np.float32)


def relabel_dataset(dataset: Any, *, gamma: float, design: str, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HUBL on an OfflineDataset (anything with rewards, terminals, episode_ids): (rewards, discounts, lambdas).

    Scores for the "rank" design are the mean Monte-Carlo return of each trajectory (`trajectory_scores`)."""
    mc_returns = monte_carlo_returns(dataset.rewards, dataset.terminals, dataset.episode_ids, gamma)
    lambdas = blend_factors(trajectory_scores(mc_returns, dataset.episode_ids), design, alpha)
    rewards, discounts = relabel(dataset.rewards, dataset.terminals, dataset.episode_ids, gamma, lambdas)
    return rewards, discounts, lambdas
