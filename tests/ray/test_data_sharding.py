"""The train split streams to 2 learner ranks through get_dataset_shard: disjoint shards that
cover the split every epoch, and a resumed position that continues exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray.train
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from rlaf_ray.config import DataSettings, ModelSettings
from rlaf_ray.controller_settings import controller_settings
from rlaf_ray.data import load_split
from rlaf_ray.roles.checkpoints import LoopState
from rlaf_ray.roles.learner import prompt_batches
from rlaf_ray.train import prompt_data_config
from tests.conftest import SAMPLE_DATA

WORLD, PER_RANK, ROWS = 2, 4, 120  # 60 rows per rank: 15 batches per epoch


def record_batches(config: dict) -> None:
    """Each pass reads the rank's shard afresh from a given position, as a restarted learner does
    from its checkpoint's: one Ray Train run for both passes (a worker group each would cost ~15 s),
    so the second reads a later round of the same split, where a restarted learner gets a new one."""
    rank = ray.train.get_context().get_world_rank()
    seen = []
    for epoch, skip, n_batches in config["passes"]:
        state = LoopState(epoch=epoch, batches_in_epoch=skip)
        batches = prompt_batches(ray.train.get_dataset_shard("train"), PER_RANK, state, seed=7 + rank)
        seen.append([])
        for _ in range(n_batches):
            epoch_now, done, batch = next(batches)
            seen[-1].append([epoch_now, done, [str(i) for i in batch["id"]]])
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(seen))


def run_ranks(dataset, tmp_path: Path, passes: list[tuple[int, int, int]]) -> list[list]:
    """Per pass (epoch, batches already done, batches to read), per rank: [epoch, done, ids] per batch."""
    out = tmp_path / "batches"
    out.mkdir()
    trainer = TorchTrainer(
        record_batches,
        train_loop_config={"passes": passes, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=WORLD, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="shards", storage_path=str(tmp_path / "results")),
        datasets={"train": dataset},
        dataset_config=prompt_data_config(),
    )
    with controller_settings():  # as a run's learner group
        trainer.fit()
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return [[rank[i] for rank in ranks] for i in range(len(passes))]


@pytest.mark.slow
def test_shards_are_disjoint_cover_the_split_and_resume_exactly(ray_local, policy_path, tmp_path):
    cfg = DataSettings(path=str(SAMPLE_DATA), min_chars=200, max_chars=1000, max_rows={"train": ROWS})
    split = load_split(cfg, ModelSettings(name_or_path=policy_path, max_prompt_length=512))
    all_ids = sorted(str(r["id"]) for r in split.dataset.take_all())
    assert len(all_ids) == ROWS == len(set(all_ids))

    # 20 batches per rank: the whole of epoch 0 (15) and the start of epoch 1; then started again
    # from (epoch 0, 10 batches done).
    full, resumed = run_ranks(split.dataset, tmp_path, [(0, 0, 20), (0, 10, 10)])
    for epoch in (0,):
        shards = [[i for e, _, ids in rank if e == epoch for i in ids] for rank in full]
        assert all(len(s) == ROWS // WORLD == len(set(s)) for s in shards)
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == all_ids
    assert [b[:2] for b in full[0][14:16]] == [[0, 15], [1, 1]]  # the epoch rolls over

    # The restarted reading gives the same batches as the uninterrupted one.
    for rank in range(WORLD):
        assert resumed[rank] == full[rank][10:20]
