"""Critic-free group advantages (rloo, grpo) against values computed by hand."""

import math

import pytest
import torch

from rlaf_ray.ppo.groups import group_advantages, sequence_rewards

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 5.0])
ALL = torch.ones(8, dtype=torch.bool)


def test_rloo_subtracts_the_mean_of_the_other_responses():
    # group 1: 1 - (0 + 0 + 1)/3 = 2/3 and 0 - (1 + 0 + 1)/3 = -2/3; group 2: 2 - 3 = -1, 5 - 2 = 3
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, -1.0, -1.0, -1.0, 3.0]
    assert group_advantages(REWARDS, ALL, 4, "rloo").tolist() == pytest.approx(expected)


def test_rloo_advantages_of_a_group_sum_to_zero():
    rewards = torch.randn(20, generator=torch.Generator().manual_seed(0))
    sums = group_advantages(rewards, torch.ones(20, dtype=torch.bool), 5, "rloo").view(4, 5).sum(dim=1)
    assert sums.abs().max() < 1e-5


def test_grpo_standardizes_within_the_group():
    # group 1: mean 1/2, unbiased std sqrt(1/3); group 2: mean 11/4, std sqrt(27/4 / 3) = 1.5
    a, b = 0.5 / math.sqrt(1 / 3), 0.75 / 1.5
    expected = [a, -a, -a, a, -b, -b, -b, 2.25 / 1.5]
    assert group_advantages(REWARDS, ALL, 4, "grpo").tolist() == pytest.approx(expected, rel=1e-3)


def test_grpo_without_the_groups_std_only_centres_each_group():
    # Dr. GRPO (none), and Lite PPO (batch, whose std over all learners the update divides by)
    expected = [0.5, -0.5, -0.5, 0.5, -0.75, -0.75, -0.75, 2.25]
    for scale in ("none", "batch"):
        assert group_advantages(REWARDS, ALL, 4, "grpo", scale).tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="scale: expected one of group, batch, none, got 'std'"):
        group_advantages(REWARDS, ALL, 4, "grpo", "std")


def test_responses_without_a_reward_are_left_out_of_the_baseline():
    valid = torch.tensor([True, True, False, True, True, False, False, False])
    # group 1 without its third response: 1 - (0 + 1)/2, 0 - (1 + 1)/2, 1 - (1 + 0)/2;
    # group 2 has one valid response: nothing to compare with
    expected = [0.5, -1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert group_advantages(REWARDS, valid, 4, "rloo").tolist() == pytest.approx(expected)
    assert group_advantages(REWARDS, valid, 4, "grpo")[4:].tolist() == [0.0] * 4


def test_a_batch_must_hold_whole_groups():
    with pytest.raises(ValueError, match="7 responses are not whole groups of 2"):
        group_advantages(torch.zeros(7), torch.ones(7, dtype=torch.bool), 2, "rloo")


def test_sequence_reward_is_the_score_less_the_summed_kl():
    kl = torch.tensor([[0.5, 0.5, 9.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # padding's KL does not count
    assert sequence_rewards(torch.tensor([1.0, 2.0]), kl, mask, 0.5).tolist() == [0.5, 1.5]

