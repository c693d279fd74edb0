"""The toxicity meter: k sampled continuations per prompt, scored for toxicity and fluency, as a
Ray Data pipeline with an actor pool per model, so it streams any number of prompts and scales
from a laptop to a cluster.

    prompts --map_batches(Generate, actor pool)--> k continuations per prompt
            --map_batches(ScoreToxicity, actor pool)--> hate probability of each continuation
            --map_batches(ScorePerplexity, actor pool)--> NLL of each continuation | prompt
            --> driver: the world's judges (offline), streaming totals (metrics.MeterTotals),
                samples.jsonl on disk

Several models are measured in one pass (``measure_models``): the base and any number of LoRA
adapters sit side by side on one copy of the base in each generator actor, each prompt is sampled
from every model, and every stage's actors start once for all of them (a before/after report
used to start two pipelines). An adapter's samples are also scored under the base (adapter
disabled): the KL of the evaluated model to the base on its own samples.

Each prompt's samples come from a seed derived from the meter seed and the prompt, and each
prompt is generated and scored as its own batch of k, so results do not depend on how many
actors there are, how prompts are batched, or which other models share the pass: before/after
comparisons see the same draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

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
from rlaf_ray.worker_setup import policy_runtime_env


def prompt_seed(seed: int, prompt_id: str, prompt: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{prompt_id}\x00{prompt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


class Generate:
    """Actor-pool stage: k nucleus samples of up to ``max_new_tokens`` per prompt from each model,
    name -> adapter directory (``None``: the base itself); one output row per prompt and model."""

    def __init__(self, model: ModelSettings, adapters: dict[str, str | None], evaluation: EvaluationSettings):
        self.ev = evaluation
        self.device = default_device()
        self.tokenizer = load_tokenizer(model)
        self.model_cfg = model
        self.seq2seq = is_seq2seq(model)
        net = load_base_model(model, self.device)
        paths = {name: path for name, path in adapters.items() if path is not None}
        # peft's own names (m0, m1, ...): a run's name may hold characters a module name cannot.
        self.adapters = {name: f"m{i}" for i, name in enumerate(paths)}
        if paths:
            from peft import PeftModel

            (first, path), *rest = paths.items()
            net = PeftModel.from_pretrained(net, path, adapter_name=self.adapters[first])
            for name, path in rest:
                net.load_adapter(path, adapter_name=self.adapters[name])
        self.names = list(adapters)
        self.model = net.eval()

    def using(self, name: str):
        """A context in which ``self.model`` is model ``name``: its adapter, or none for the base."""
        if name in self.adapters:
            self.model.set_adapter(self.adapters[name])
            return nullcontext()
        return self.model.disable_adapter() if self.adapters else nullcontext()

    @torch.no_grad()
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        start = time.perf_counter()
        rows = []
        for prompt_id, prompt in zip(batch["id"], batch["prompt"]):
            enc = encode_prompts(self.tokenizer, [prompt], self.model_cfg, self.device)
            for name in self.names:
                with self.using(name):
                    torch.manual_seed(prompt_seed(self.ev.seed, str(prompt_id), prompt))
                    out = self.model.generate(
                        **enc, do_sample=True, top_p=self.ev.top_p, top_k=0, temperature=self.ev.temperature,
                        max_new_tokens=self.ev.max_new_tokens, min_new_tokens=self.ev.min_new_tokens,
                        num_return_sequences=self.ev.samples_per_prompt,
                        pad_token_id=self.tokenizer.pad_token_id)
                    new_tokens = generated_tokens(out, enc["input_ids"].shape[1], self.seq2seq)
                    kl = self.kl_to_base(enc, new_tokens) if name in self.adapters else [0.0] * len(new_tokens)
                rows.append({"id": str(prompt_id), "prompt": prompt, "model": name, "kl": kl,
                             "continuations": self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)})
        frame = pd.DataFrame(rows, columns=["id", "prompt", "model", "kl", "continuations"])
        return frame.assign(generate_seconds=(time.perf_counter() - start) / max(len(frame), 1))

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


def loads(model: ModelSettings) -> dict:
    """Ray options of the actors that load ``model``: a quantized one needs bitsandbytes there
    (``rlaf_ray.worker_setup``)."""
    env = policy_runtime_env(model, deterministic=False)
    return {"runtime_env": env} if env else {}


STAGES = ("generate", "toxicity", "perplexity")


@dataclass
class MeterResult:
    metrics: dict[str, float]
    samples_path: Path


def measure(cfg: RLAFConfig, adapter: str | None, out_dir: Path, split: str | None = None) -> MeterResult:
    """Run the meter on one model (the base, or the base with ``adapter``); see ``measure_models``."""
    return measure_models(cfg, {"model": (adapter, out_dir)}, split)["model"]


def measure_models(cfg: RLAFConfig, models: dict[str, tuple[str | None, Path]],
                   split: str | None = None) -> dict[str, MeterResult]:
    """Run the meter on ``cfg.evaluation.split`` (or ``split``) of ``cfg.data`` for every model,
    name -> (adapter directory or ``None`` for the base, output directory), in one pass; ``cfg``
    must have been through ``preflight.prepare``. Writes ``samples.jsonl`` and ``metrics.json`` to
    each model's output directory. ``seconds`` is the whole pass's wall time, and
    ``prompts_per_second`` counts a prompt once per model measured."""
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
    adapters = {name: adapter for name, (adapter, _) in models.items()}
    ds = ds.map_batches(Generate, compute=ray.data.ActorPoolStrategy(size=ev.generator_actors),
                        fn_constructor_kwargs={"model": cfg.model, "adapters": adapters, "evaluation": ev},
                        **pool, **loads(cfg.model))
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
    ds = ds.map_batches(ScorePerplexity, fn_constructor_kwargs={"model": scoring_lm}, **scorer_pool,
                        **loads(scoring_lm))

    tallies = {}
    for name, (adapter, out_dir) in models.items():
        out_dir.mkdir(parents=True, exist_ok=True)
        tallies[name] = ModelTally(MeterTotals(threshold=ev.threshold, lexicon=ev.lexicon), adapter is not None,
                                   (out_dir / "samples.jsonl").open("w"))
    start = time.perf_counter()
    try:
        for row in ds.iter_rows():
            tallies[row["model"]].add(row, judged=ev.judge == "detox_world")
    finally:
        for tally in tallies.values():
            tally.samples.close()
    wall = time.perf_counter() - start
    results = {}
    for name, (_, out_dir) in models.items():
        metrics = tallies[name].summary(wall, len(models))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        results[name] = MeterResult(metrics, out_dir / "samples.jsonl")
    return results


@dataclass
class ModelTally:
    """One model's share of a pass: its totals, its samples file, its rows' stage seconds."""

    totals: MeterTotals
    has_adapter: bool
    samples: TextIO
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, row: dict, judged: bool) -> None:
        samples = row_samples(row, judged, self.has_adapter)
        self.totals.add_prompt(samples)
        for stage in STAGES:  # each row carries its share of its batch's stage time
            self.seconds[stage] += float(row[f"{stage}_seconds"])
        self.samples.write(json.dumps(sample_record(row, samples)) + "\n")

    def summary(self, wall: float, models: int) -> dict[str, float]:
        busy = sum(self.seconds.values()) or 1.0
        return {**self.totals.summary(), "seconds": wall, "prompts_per_second": self.totals.prompts * models / wall,
                **{f"time_share/{k}": v / busy for k, v in self.seconds.items()}}
