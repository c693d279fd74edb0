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
from rlaf_ray.data import load_split
from rlaf_ray.roles.checkpoints import LoopState
from rlaf_ray.roles.learner import prompt_batches
from rlaf_ray.train import prompt_data_config
from tests.conftest import SAMPLE_DATA

WORLD, PER_RANK, ROWS = 2, 4, 120  # 60 rows per rank: 15 batches per epoch


def record_batches(config: dict) -> None:
    rank = ray.train.get_context().get_world_rank()
    state = LoopState(epoch=config["epoch"], batches_in_epoch=config["skip"])
    batches = prompt_batches(ray.train.get_dataset_shard("train"), PER_RANK, state, seed=7 + rank)
    seen = []
    for _ in range(config["n_batches"]):
        epoch, done, batch = next(batches)
        seen.append([epoch, done, [str(i) for i in batch["id"]]])
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(seen))


def run_ranks(dataset, tmp_path: Path, name: str, epoch: int, skip: int, n_batches: int) -> list[list]:
    out = tmp_path / name
    out.mkdir()
    TorchTrainer(
        record_batches,
        train_loop_config={"epoch": epoch, "skip": skip, "n_batches": n_batches, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=WORLD, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name=name, storage_path=str(tmp_path / "results")),
        datasets={"train": dataset},
        dataset_config=prompt_data_config(),
    ).fit()
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
def test_shards_are_disjoint_cover_the_split_and_resume_exactly(ray_local, policy_path, tmp_path):
    cfg = DataSettings(path=str(SAMPLE_DATA), min_chars=200, max_chars=1000, max_rows={"train": ROWS})
    split = load_split(cfg, ModelSettings(name_or_path=policy_path, max_prompt_length=512))
    all_ids = sorted(str(r["id"]) for r in split.dataset.take_all())
    assert len(all_ids) == ROWS == len(set(all_ids))

    # 20 batches per rank: the whole of epoch 0 (15) and the start of epoch 1.
    full = run_ranks(split.dataset, tmp_path, "full", epoch=0, skip=0, n_batches=20)
    for epoch in (0,):
        shards = [[i for e, _, ids in rank if e == epoch for i in ids] for rank in full]
        assert all(len(s) == ROWS // WORLD == len(set(s)) for s in shards)
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == all_ids
    assert [b[:2] for b in full[0][14:16]] == [[0, 15], [1, 1]]  # the epoch rolls over

    # Started again from (epoch 0, 10 batches done): the same batches as the uninterrupted run.
    resumed = run_ranks(split.dataset, tmp_path, "resumed", epoch=0, skip=10, n_batches=10)
    for rank in range(WORLD):
        assert resumed[rank] == full[rank][10:20]
