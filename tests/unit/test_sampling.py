"""The response length drawn per batch from a [low, high] range."""

from rlaf_ray.roles.rollout import sample_max_new_tokens


def test_length_range_sampled_per_batch():
    draws = {sample_max_new_tokens([3, 6], seed) for seed in range(200)}
    assert draws == {3, 4, 5, 6}
    assert sample_max_new_tokens(7, 123) == 7
