"""Supervised fine-tuning baseline: the same policy, LoRA and data as ``train``, learning the
prompts' reference replies (for DIALOCONAN: the counter-narratives) with TRL's ``SFTTrainer``.

Distributed with Ray Train: a ``TorchTrainer`` runs one ``SFTTrainer`` per learner (DDP through
``prepare_trainer``), Ray's ``RayTrainReportCallback`` reports metrics and checkpoints, and the
run resumes from its latest checkpoint when started again. Loss is on reply tokens only
(TRL's prompt-completion format with ``completion_only_loss``). The result is a standard PEFT
adapter in ``<run>/final/adapter``, like ``train``, so the two compare on equal terms.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import ray
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig
from ray.train.torch import TorchTrainer

from rlaf_ray.config import ConfigError, RLAFConfig
from rlaf_ray.console import init_ray, train_logging
from rlaf_ray.controller_settings import controller_settings
from rlaf_ray.data import PromptSplit, load_split
from rlaf_ray.determinism import use_deterministic_algorithms
from rlaf_ray.devices import default_device
from rlaf_ray.models.policy import (
    init_eva,
    is_seq2seq,
    load_base_model,
    load_policy,
    load_tokenizer,
    lora_config,
)
from rlaf_ray.placement import ensure_shared_output, placed, scaling_config
from rlaf_ray.preflight import prepare
from rlaf_ray.run_guard import check_run_dir, save_run_config
from rlaf_ray.storage import write_text_atomic
from rlaf_ray.worker_setup import policy_runtime_env


def count_references(split: PromptSplit) -> tuple[int, int]:
    """(rows, rows with a reference reply), in one streaming pass."""
    rows = with_reference = 0
    for batch in split.dataset.iter_batches(batch_size=4096, batch_format="pandas"):
        rows += len(batch)
        with_reference += int(batch["reference"].map(lambda r: isinstance(r, str) and r.strip() != "").sum())
    return rows, with_reference


def check_references(cfg: RLAFConfig, split: PromptSplit) -> None:
    rows, with_reference = count_references(split)
    where = f"the {split.name!r} split of data.path {cfg.data.path!r} (source {cfg.data.source!r})"
    if rows == 0:
        raise ConfigError([f"sft: no prompts in {where}"])
    if with_reference == 0:
        hint = "set data.reference_column to the column holding the replies" if cfg.data.source == "files" \
            else "this source gives no replies here"
        raise ConfigError([f"sft: no reference replies in {where}; supervised fine-tuning needs a "
                           f"'reference' for each prompt ({hint})"])


def to_hf_dataset(rows: pd.DataFrame):
    """Prompt-completion rows for TRL; prompts without a reply are left out."""
    import datasets

    rows = rows[rows["reference"].map(lambda r: isinstance(r, str) and r.strip() != "")]
    return datasets.Dataset.from_dict({"prompt": list(rows["prompt"]), "completion": list(rows["reference"])})


def build_sft_trainer(cfg: RLAFConfig, train_rows: pd.DataFrame, eval_rows: pd.DataFrame, output_dir: str):
    """The TRL trainer for one learner (also used directly by tests, without Ray)."""
    from trl import SFTConfig, SFTTrainer

    s = cfg.sft
    args = SFTConfig(
        output_dir=output_dir, num_train_epochs=s.num_epochs, learning_rate=s.learning_rate,
        per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=s.batch_size,
        eval_strategy="steps", eval_steps=s.eval_steps, logging_steps=s.eval_steps,
        save_strategy="steps", save_steps=s.save_steps, save_total_limit=cfg.run.keep_checkpoints,
        max_length=s.max_length, completion_only_loss=True, packing=False, seed=s.seed,
        bf16=cfg.model.dtype == "bf16" and default_device().type == "cuda",
        use_cpu=default_device().type == "cpu", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataset_num_proc=None)
    # Loaded onto its device: a quantized base cannot be moved there afterwards.
    device = default_device()
    tokenizer = load_tokenizer(cfg.model)
    if cfg.lora.init == "eva":  # as the RL run's, from the first prompts (rank 0's shard: DDP keeps rank 0's A)
        model, peft_config = load_policy(cfg.model, cfg.lora, device, for_training=True), None
        init_eva(model, tokenizer, [str(p) for p in train_rows["prompt"][:cfg.lora.eva_prompts]], cfg.model)
    else:  # SFTTrainer builds the adapter (and prepares a quantized base) itself
        model, peft_config = load_base_model(cfg.model, device), lora_config(cfg.lora)
    return SFTTrainer(model=model, args=args, train_dataset=to_hf_dataset(train_rows),
                      eval_dataset=to_hf_dataset(eval_rows), processing_class=tokenizer, peft_config=peft_config)


def _rows(name: str) -> pd.DataFrame:
    shard = ray.train.get_dataset_shard(name)
    parts = list(shard.iter_batches(batch_size=1024, batch_format="pandas"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["prompt", "reference"])


def sft_loop(loop_config: dict) -> None:
    from ray.train.huggingface.transformers import (
        RayTrainReportCallback,
        prepare_trainer,
    )

    cfg: RLAFConfig = loop_config["config"]
    use_deterministic_algorithms(cfg.run.deterministic)
    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_sft_trainer(cfg, _rows("train"), _rows("eval"), scratch)
        trainer.add_callback(RayTrainReportCallback())
        trainer = prepare_trainer(trainer)
        resume = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            resume = checkpoint.to_directory(str(Path(scratch) / "resume"))
            resume = str(Path(resume) / "checkpoint")
        initial = trainer.evaluate()["eval_loss"] if resume is None else None
        trainer.train(resume_from_checkpoint=resume)
        final = trainer.evaluate()["eval_loss"]
        if rank == 0:
            def fill(directory: Path) -> None:
                trainer.model.save_pretrained(directory / "adapter")
                trainer.processing_class.save_pretrained(directory / "adapter")

            storage = cfg.run_storage
            storage.write_whole("final", fill, last="adapter_config.json")  # as in train: never half-written
            summary = {"eval_loss_initial": initial, "eval_loss_final": final,
                       "log_history": trainer.state.log_history}
            write_text_atomic(storage.local / "sft_metrics.json", json.dumps(summary, indent=1))
            storage.push("sft_metrics.json")
            print(f"[rlaf] sft: held-out loss {initial if initial is not None else 'n/a'} -> {final:.4f}",
                  file=sys.__stdout__, flush=True)


def sft(cfg: RLAFConfig, address: str | None = None, resume: bool = False) -> Path:
    """Run supervised fine-tuning to completion (or resume it); returns the run directory.
    ``resume``: as for ``train`` (``rlaf_ray.run_guard``)."""
    cfg = prepare(cfg, ("train", cfg.sft.eval_split))
    if is_seq2seq(cfg.model):
        raise ConfigError([f"model.name_or_path: {cfg.model.name_or_path!r} is a seq2seq (encoder-decoder) "
                           "model; the SFT baseline uses TRL's SFTTrainer, which trains causal LMs only"])
    changes = check_run_dir(cfg, resume, command="sft")
    init_ray(address)
    with placed(cfg, roles=("learner",)):
        ensure_shared_output(cfg.run.output_dir)
        splits = {"train": load_split(cfg.data, cfg.model, "train"),
                  "eval": load_split(cfg.data, cfg.model, cfg.sft.eval_split)}
        for split in splits.values():
            check_references(cfg, split)

        run_dir = cfg.run_dir
        print(save_run_config(cfg, changes, command="sft"), flush=True)
        trainer = TorchTrainer(
            sft_loop,
            train_loop_config={"config": cfg},
            scaling_config=scaling_config(cfg.resources.learner),
            run_config=ray.train.RunConfig(
                name=cfg.run.name, storage_path=cfg.run.output_dir,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
                failure_config=FailureConfig(max_failures=cfg.run.max_failures), logging_config=train_logging(),
                worker_runtime_env=policy_runtime_env(cfg.model, cfg.run.deterministic)),
            datasets={"train": splits["train"].dataset, "eval": splits["eval"].dataset},
            # Each learner takes its share of train; every learner scores the whole held-out split.
            dataset_config=DataConfig(datasets_to_split=["train"]),
        )
        with controller_settings():
            trainer.fit()
        return run_dir

