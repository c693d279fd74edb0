"""The shared rollout pool: 2 learner ranks served by 1, 2 and 3 rollout actors, each rank's
batch split over its routes, every chunk answered by the actor the route names (real actors)."""

from __future__ import annotations

import pytest
import ray

from rlaf_ray.config import RewardSettings, from_dict
from rlaf_ray.roles.calls import (
    CHUNK_SEED,
    RankRoles,
    collect_batch,
    rollout_routes,
    send_batch,
)
from rlaf_ray.roles.reward import RewardWorker
from rlaf_ray.roles.rollout import RolloutWorker

PROMPTS = [f"#Person1#: Hello {i}, how are you?\n#Person2#:" for i in range(6)]


@pytest.fixture(scope="module")
def pool(ray_local, policy_path):
    cfg = from_dict({"model": {"name_or_path": policy_path}, "generation": {"max_new_tokens": 6},
                     "lora": {"target_modules": ["q_proj", "v_proj"]},
                     "ppo": {"samples_per_prompt": 2, "estimator": "rloo", "batch_size": 12,
                             "num_minibatches": 1},
                     "resources": {"learner": {"num_workers": 2}}})
    rollout = [ray.remote(RolloutWorker).options(num_cpus=0).remote(cfg.model, cfg.lora, cfg.generation, i)
               for i in range(3)]
    reward = [ray.remote(RewardWorker).options(num_cpus=0).remote(RewardSettings(callable="tests.rewards:insult_free"),
                                                                   0)]
    yield cfg, rollout, reward
    for actor in rollout + reward:
        ray.kill(actor)


@pytest.mark.parametrize("n_rollout", [1, 2, 3])
def test_two_learners_share_any_number_of_rollout_actors(pool, n_rollout):
    cfg, rollout, reward = pool
    actors = rollout[:n_rollout]
    for rank in range(2):
        routes = rollout_routes(rank, 2, n_rollout, 1)
        batch = {"prompt": PROMPTS[rank * 3:rank * 3 + 3]}
        roles = RankRoles(actors, reward, routes)
        out, scored = collect_batch(cfg, roles, send_batch(cfg, roles, batch, seed=5), version=0,
                                    resync=lambda actor: None)
        # every prompt, twice side by side (its group), in order, and one score per response
        assert out["prompts"] == [p for p in batch["prompt"] for _ in range(2)]
        assert len(out["response_ids"]) == len(scored["scores"]) == 6
        # each chunk is what the route's actor samples for it with the chunk's seed
        size = -(-3 // len(routes))
        expected = []
        for c, (actor, _) in enumerate(routes):
            chunk = [p for p in batch["prompt"][c * size:(c + 1) * size] for _ in range(2)]
            if chunk:
                expected += ray.get(actors[actor].generate.remote(chunk, 5 + c * CHUNK_SEED))["response_ids"]
        assert out["response_ids"] == expected
