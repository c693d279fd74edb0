"""The shared rollout pool's routes (rlaf_ray.roles.calls.rollout_routes): pure arithmetic."""

import pytest

from rlaf_ray.roles.calls import rollout_routes


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n_rollout", [1, 2, 3, 4, 6])
def test_rollout_routes_share_the_pool_evenly(world, n_rollout):
    """Every rank's chunks on distinct rollout actors; every actor the same number of chunks."""
    routes = [rollout_routes(rank, world, n_rollout, 2) for rank in range(world)]
    for mine in routes:
        actors = [a for a, _ in mine]
        assert len(set(actors)) == len(actors)
    load = [sum(a == actor for mine in routes for a, _ in mine) for actor in range(n_rollout)]
    assert len(set(load)) == 1 and load[0] >= 1
    assert all(r in (0, 1) for mine in routes for _, r in mine)
