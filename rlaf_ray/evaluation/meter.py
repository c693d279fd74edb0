"""The toxicity meter: k sampled continuations per prompt, scored for toxicity and fluency, as a
Ray Data pipeline with an actor pool per model, so it streams any number of prompts and scales
from a laptop to a cluster.

    prompts --map_batches(Generate, actor pool)--> k continuations per prompt
            --map_batches(ScoreToxicity, actor pool)--> hate probability of each continuation
            --map_batches(ScorePerplexity, actor pool)--> NLL of each continuation | prompt
            --> driver: the world's judges (offline), streaming totals (metrics.MeterTotals),
                samples.jsonl on disk

With an adapter, the generator also scores each sample under the base (adapter disabled): the
KL of the evaluated model to the base on its own samples.

Each prompt's samples come from a seed derived from the meter seed and the prompt, and each
prompt is generated and scored as its own batch of k, so results do not depend on how many
actors there are or how prompts are batched: before/after comparisons see the same draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray.data
import torch
from trl.trainer.utils import selective_log_softmax

from rlaf_ray import world
from rlaf_ray.config import (
    ConfigError,
    EvaluationSettings,
    ModelSettings,
    RewardSettings,
    RLAFConfig,
)
from rlaf_ray.data import load_split
from rlaf_ray.devices import default_device
from rlaf_ray.evaluation.metrics import MeterTotals, Sample
from rlaf_ray.models.policy import (
    cut_at_eos,
    encode_prompts,
    generated_tokens,
    is_seq2seq,
    load_base_model,
    load_tokenizer,
)
from rlaf_ray.ppo.batch import collate
from rlaf_ray.preflight import check_evaluation
from rlaf_ray.roles.reward import ClassifierReward


def prompt_seed(seed: int, prompt_id: str, prompt: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{prompt_id}\x00{prompt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


class Generate:
    """Actor-pool stage: k nucleus samples of up to ``max_new_tokens`` per prompt."""

    def __init__(self, model: ModelSettings, adapter: str | None, evaluation: EvaluationSettings):
        self.ev = evaluation
        self.device = default_device()
        self.tokenizer = load_tokenizer(model)
        self.model_cfg = model
        self.seq2seq = is_seq2seq(model)
        net = load_base_model(model, self.device)
        self.has_adapter = adapter is not None
        if self.has_adapter:
            from peft import PeftModel

            net = PeftModel.from_pretrained(net, adapter)
        self.model = net.eval()

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        continuations, kl = [], []
        for prompt_id, prompt in zip(batch["id"], batch["prompt"]):
            enc = encode_prompts(self.tokenizer, [prompt], self.model_cfg, self.device)
            torch.manual_seed(prompt_seed(self.ev.seed, str(prompt_id), prompt))
            out = self.model.generate(
                **enc, do_sample=True, top_p=self.ev.top_p, top_k=0, temperature=self.ev.temperature,
                max_new_tokens=self.ev.max_new_tokens, min_new_tokens=self.ev.min_new_tokens,
                num_return_sequences=self.ev.samples_per_prompt,
                pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = generated_tokens(out, enc["input_ids"].shape[1], self.seq2seq)
            continuations.append(self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            kl.append(self.kl_to_base(enc, new_tokens) if self.has_adapter else [0.0] * len(new_tokens))
        return pd.DataFrame({"id": batch["id"].astype(str), "prompt": batch["prompt"],
                             "continuations": continuations, "kl": kl,
                             "generate_seconds": (time.perf_counter() - start) / len(batch)})

    def kl_to_base(self, enc, new_tokens: torch.Tensor) -> list[float]:
        """Per sample, the summed log-ratio of the evaluated model to the base over its tokens
        (up to and including EOS), at the sampling temperature."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        responses = [cut_at_eos(row, eos)[0] for row in new_tokens.tolist()]
        prompt = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
        start_id = self.model.config.decoder_start_token_id if self.seq2seq else None
        batch = collate([prompt] * len(responses), responses, pad, self.device, start_id)
        logprobs = self._logprobs(batch)
        with self.model.disable_adapter():
            base = self._logprobs(batch)
        return ((logprobs - base) * batch.response_mask).sum(dim=1).tolist()

    def _logprobs(self, batch) -> torch.Tensor:
        end = batch.logits_start + batch.response_ids.shape[1]
        logits = self.model(**batch.inputs).logits[:, batch.logits_start:end].float() / self.ev.temperature
        return selective_log_softmax(logits, batch.response_ids)


class ScoreToxicity:
    """Actor-pool stage: the classifier's toxic-label probability of each continuation alone."""

    def __init__(self, classifier: str, label: str, column: str, trust_remote_code: bool = False):
        self.column = column
        self.scorer = ClassifierReward(RewardSettings(
            model_name_or_path=classifier, label=label, score="probability", input="response",
            trust_remote_code=trust_remote_code), default_device())

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        scores = [self.scorer([], list(c)) for c in batch["continuations"]]
        return batch.assign(**{self.column: scores,
                               f"{self.column}_seconds": (time.perf_counter() - start) / len(batch)})


class ScorePerplexity:
    """Actor-pool stage: the summed NLL and token count of each continuation given its prompt
    under a scoring LM (causal: prompt + continuation as one sequence; seq2seq: prompt to the
    encoder)."""

    def __init__(self, model: ModelSettings):
        self.device = default_device()
        self.tokenizer = load_tokenizer(model)
        self.model_cfg = model
        self.seq2seq = is_seq2seq(model)
        self.model = load_base_model(model, self.device).eval()

    @torch.no_grad()
    def nlls(self, prompt: str, continuations: list[str]) -> tuple[list[float], list[int]]:
        """Summed NLL and token count per continuation (NaN and 0 for an empty one)."""
        prompt_ids = encode_prompts(self.tokenizer, [prompt], self.model_cfg)["input_ids"][0].tolist()
        nlls, counts = [], []
        for text in continuations:
            cont_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                nlls.append(math.nan)  # an empty continuation has no perplexity
                counts.append(0)
                continue
            if self.seq2seq:
                nll = self.model(input_ids=torch.tensor([prompt_ids], device=self.device),
                                 labels=torch.tensor([cont_ids], device=self.device)).loss
            else:
                ids = torch.tensor([prompt_ids + cont_ids], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
                nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids):], reduction="mean")
            nlls.append(nll.item() * len(cont_ids))
            counts.append(len(cont_ids))
        return nlls, counts

    def perplexities(self, prompt: str, continuations: list[str]) -> list[float]:
        nlls, counts = self.nlls(prompt, continuations)
        return [math.exp(n / c) if c else math.nan for n, c in zip(nlls, counts)]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        scored = [self.nlls(p, list(c)) for p, c in zip(batch["prompt"], batch["continuations"])]
        return batch.assign(nll=[n for n, _ in scored], tokens=[c for _, c in scored],
                            perplexity_seconds=(time.perf_counter() - start) / len(batch))


def row_samples(row: dict, judged: bool, has_adapter: bool) -> list[Sample]:
    """A prompt's continuations with their scores; the world's judges when ``judged``."""
    holdout = row.get("holdout_toxicity")
    samples = []
    for i, text in enumerate(str(c) for c in row["continuations"]):
        samples.append(Sample(
            text=text, toxicity=float(row["toxicity"][i]), nll=float(row["nll"][i]), tokens=int(row["tokens"][i]),
            holdout_toxicity=None if holdout is None else float(holdout[i]),
            kl=float(row["kl"][i]) if has_adapter else None,
            toxic=world.is_toxic(text) if judged else None,
            grammatical=world.is_grammatical(text) if judged else None))
    return samples


def sample_record(row: dict, samples: list[Sample]) -> dict:
    """One line of samples.jsonl: a prompt and its scored continuations."""
    record = {"id": row["id"], "prompt": row["prompt"], "continuations": [s.text for s in samples],
              "toxicity": [s.toxicity for s in samples],
              "perplexity": [math.exp(s.nll / s.tokens) if s.tokens else math.nan for s in samples]}
    for key in ("holdout_toxicity", "kl", "toxic", "grammatical"):
        if getattr(samples[0], key) is not None:
            record[key] = [getattr(s, key) for s in samples]
    return record


@dataclass
class MeterResult:
    metrics: dict[str, float]
    samples_path: Path


def measure(cfg: RLAFConfig, adapter: str | None, out_dir: Path, split: str | None = None) -> MeterResult:
    """Run the meter on ``cfg.evaluation.split`` (or ``split``) of ``cfg.data``; ``cfg`` must have
    been through ``preflight.prepare``. Writes ``samples.jsonl`` and ``metrics.json`` to ``out_dir``."""
    ev = cfg.evaluation
    check_evaluation(cfg)
    split = split or ev.split
    prompts = load_split(cfg.data, cfg.model, split)
    if prompts.stats()["rows"] == 0:  # before any model actor starts
        raise ConfigError([f"evaluation: no prompts in the {split!r} split of data.path {cfg.data.path!r}"])
    ds = prompts.dataset
    if ev.max_prompts is not None:
        ds = ds.limit(ev.max_prompts)
    pool = {"num_cpus": ev.num_cpus_per_actor, "num_gpus": ev.num_gpus_per_actor,
            "batch_size": ev.prompts_per_batch, "batch_format": "pandas"}
    scorer_pool = {**pool, "compute": ray.data.ActorPoolStrategy(size=ev.scorer_actors)}
    ds = ds.map_batches(Generate, compute=ray.data.ActorPoolStrategy(size=ev.generator_actors),
                        fn_constructor_kwargs={"model": cfg.model, "adapter": adapter, "evaluation": ev},
                        **pool)
    classifier = ev.classifier or cfg.reward.model_name_or_path
    trust = cfg.reward.trust_remote_code
    ds = ds.map_batches(ScoreToxicity, fn_constructor_kwargs={
        "classifier": classifier, "label": ev.toxic_label, "column": "toxicity", "trust_remote_code": trust},
        **scorer_pool)
    if ev.holdout_classifier is not None:
        ds = ds.map_batches(ScoreToxicity, fn_constructor_kwargs={
            "classifier": ev.holdout_classifier, "label": ev.toxic_label, "column": "holdout_toxicity",
            "trust_remote_code": trust}, **scorer_pool)
    scoring_lm = cfg.model if ev.perplexity_model is None else ModelSettings(
        name_or_path=ev.perplexity_model, trust_remote_code=cfg.model.trust_remote_code,
        max_prompt_length=cfg.model.max_prompt_length)
    ds = ds.map_batches(ScorePerplexity, fn_constructor_kwargs={"model": scoring_lm}, **scorer_pool)

    out_dir.mkdir(parents=True, exist_ok=True)
    totals = MeterTotals(threshold=ev.threshold, lexicon=ev.lexicon)
    seconds = {"generate": 0.0, "toxicity": 0.0, "perplexity": 0.0}
    start = time.perf_counter()
    samples_path = out_dir / "samples.jsonl"
    with samples_path.open("w") as f:
        for row in ds.iter_rows():
            samples = row_samples(row, judged=ev.judge == "detox_world", has_adapter=adapter is not None)
            totals.add_prompt(samples)
            for stage in seconds:  # each row carries its share of its batch's stage time
                seconds[stage] += float(row[f"{stage}_seconds"])
            f.write(json.dumps(sample_record(row, samples)) + "\n")
    metrics = totals.summary()
    wall = time.perf_counter() - start
    busy = sum(seconds.values()) or 1.0
    metrics.update({"seconds": wall, "prompts_per_second": totals.prompts / wall,
                    **{f"time_share/{k}": v / busy for k, v in seconds.items()}})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return MeterResult(metrics, samples_path)
