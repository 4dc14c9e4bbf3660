"""HUBL relabeling (spec §6) against hand-computed values and a brute-force Monte-Carlo sum."""

from __future__ import annotations

import types

import numpy as np
import pytest

from data import hubl

GAMMA = 0.5
# Two logged trajectories: B = 3 steps ending in a truncation, then A = 3 steps ending in a terminal
# (B first, so nothing of A may leak into B's last transition).
REWARDS = np.array([4.0, 5.0, 6.0, 1.0, 2.0, 3.0])
TERMINALS = np.array([0, 0, 0, 0, 0, 1], np.float32)
EPISODE_IDS = np.array([0, 0, 0, 1, 1, 1])
# By hand, γ = 0.5: B: h2 = 6 (the sum stops at the cut), h1 = 5 + 3 = 8, h0 = 4 + 4 = 8.
#                   A: h5 = 3, h4 = 2 + 0.5·3 = 3.5, h3 = 1 + 0.5·3.5 = 2.75.
MC_BY_HAND = np.array([8.0, 8.0, 6.0, 2.75, 3.5, 3.0])


def test_monte_carlo_returns_by_hand():
    np.testing.assert_allclose(hubl.monte_carlo_returns(REWARDS, TERMINALS, EPISODE_IDS, GAMMA), MC_BY_HAND)


def test_monte_carlo_returns_against_brute_force():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 8, size=12)
    episode_ids = np.repeat(np.arange(12), lengths)
    rewards = rng.normal(size=episode_ids.size)
    terminals = np.zeros(episode_ids.size)
    ends = np.cumsum(lengths) - 1
    terminals[ends[rng.random(12) < 0.5]] = 1.0  # about half of the trajectories end in a terminal
    gamma = 0.9
    expected = np.array([
        sum(gamma ** (k - t) * rewards[k] for k in range(t, ends[episode_ids[t]] + 1)) for t in range(rewards.size)
    ])
    np.testing.assert_allclose(hubl.monte_carlo_returns(rewards, terminals, episode_ids, gamma), expected, rtol=1e-12)


def test_a_terminal_masks_what_follows_it():
    # A terminal inside a block (not produced by our loader, but the function is general): h stops there.
    h = hubl.monte_carlo_returns(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]), np.array([0, 0, 0]), GAMMA)
    np.testing.assert_allclose(h, [1.0 + 0.5 * 2.0, 2.0, 3.0])


def test_relabel_by_hand():
    lambdas = np.array([0.25, 0.5])  # λ_B, λ_A
    rewards, discounts = hubl.relabel(REWARDS, TERMINALS, EPISODE_IDS, GAMMA, lambdas)
    # r̃_t = r_t + γ·λ·h_{t+1}·(1 − term_t); h_{t+1} = 0 at each trajectory's last transition.
    expected_rewards = [
        4.0 + 0.5 * 0.25 * 8.0,  # B0: h1 = 8
        5.0 + 0.5 * 0.25 * 6.0,  # B1: h2 = 6
        6.0,                     # B2: truncated, h after the cut is 0 (the sum stops; not bootstrapped, not A's h3)
        1.0 + 0.5 * 0.5 * 3.5,   # A0: h4 = 3.5
        2.0 + 0.5 * 0.5 * 3.0,   # A1: h5 = 3
        3.0,                     # A2: terminal
    ]
    np.testing.assert_allclose(rewards, expected_rewards, rtol=1e-6)
    np.testing.assert_allclose(discounts, [0.375, 0.375, 0.375, 0.25, 0.25, 0.25], rtol=1e-6)  # γ·(1 − λ)
    assert rewards.dtype == np.float32 and discounts.dtype == np.float32


def test_lambda_zero_is_the_identity():
    rewards, discounts = hubl.relabel(REWARDS, TERMINALS, EPISODE_IDS, 0.99, np.zeros(2))
    np.testing.assert_array_equal(rewards, REWARDS.astype(np.float32))
    np.testing.assert_allclose(discounts, np.full(6, 0.99), rtol=1e-7)


def test_blend_factors_by_hand():
    scores = np.array([3.0, 1.0, 2.0, 2.0])
    # #{scores ≤ s}: 3 → 4, 1 → 1, 2 → 3 (both tied entries count), so λ = 0.4·[4, 1, 3, 3]/4.
    np.testing.assert_allclose(hubl.blend_factors(scores, "rank", 0.4), [0.4, 0.1, 0.3, 0.3])
    np.testing.assert_allclose(hubl.blend_factors(scores, "constant", 0.4), [0.4] * 4)
    with pytest.raises(ValueError, match="valid designs: \\('constant', 'rank'\\)"):
        hubl.blend_factors(scores, "sigmoid", 0.4)
    with pytest.raises(ValueError, match="alpha must be in"):
        hubl.blend_factors(scores, "rank", 1.5)


def test_trajectory_scores_are_mean_monte_carlo_returns():
    scores = hubl.trajectory_scores(MC_BY_HAND, EPISODE_IDS)
    np.testing.assert_allclose(scores, [(8.0 + 8.0 + 6.0) / 3, (2.75 + 3.5 + 3.0) / 3])


def test_relabel_dataset_rank_design():
    dataset = types.SimpleNamespace(rewards=REWARDS, terminals=TERMINALS, episode_ids=EPISODE_IDS)
    rewards, discounts, lambdas = hubl.relabel_dataset(dataset, gamma=GAMMA, design="rank", alpha=0.5)
    np.testing.assert_allclose(lambdas, [0.5, 0.25])  # B (score 22/3) ranks above A (score 9.25/3)
    np.testing.assert_allclose(discounts, [0.25] * 3 + [0.375] * 3, rtol=1e-6)
    np.testing.assert_allclose(rewards[[0, 3]], [4.0 + 0.5 * 0.5 * 8.0, 1.0 + 0.5 * 0.25 * 3.5], rtol=1e-6)


def test_layout_errors():
    with pytest.raises(ValueError, match="contiguous"):
        hubl.monte_carlo_returns(REWARDS, TERMINALS, np.array([0, 1, 0, 1, 1, 1]), GAMMA)
    with pytest.raises(ValueError, match=r"one value per trajectory, shape \(2,\)"):
        hubl.relabel(REWARDS, TERMINALS, EPISODE_IDS, GAMMA, np.array([0.1]))
