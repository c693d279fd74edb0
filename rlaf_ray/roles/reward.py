"""Reward role: a sequence classifier's score for one label (default: ``nothate``), or any callable.

``RewardWorker`` is the Ray actor; the scorers are plain classes so they can be tested and reused
(e.g. by evaluation) without Ray.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable, Sequence

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rlaf_ray.config import ConfigError, RewardSettings
from rlaf_ray.devices import default_device, peak_memory_mib
from rlaf_ray.models.source import check_model_source
from rlaf_ray.roles.actor import RoleActor

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def label_index(id2label: dict, label: str, model_name: str) -> int:
    for index, name in id2label.items():
        if name == label:
            return int(index)
    labels = ", ".join(str(v) for v in id2label.values())
    raise ConfigError([f"reward.label: {label!r} is not a label of {model_name!r}; its labels: {labels}"])


# What a reward callable is probed with before any actor starts.
PROBE_PROMPTS, PROBE_RESPONSES = ["Hello.", "How are you?"], [" Fine, thanks.", " I am well."]


def check_callable(spec: str) -> None:
    """The callable (its form and import already checked with the config) returns one number per
    response for a two-response probe: its mistakes are one line here, not a traceback from inside
    a Ray worker after the first batch."""
    try:
        scores = [float(s) for s in load_callable(spec)(list(PROBE_PROMPTS), list(PROBE_RESPONSES))]
    except Exception as err:  # the user's code: any failure is reported the same way
        raise ConfigError([f"reward.callable: {spec!r} failed on a probe of 2 responses "
                           f"({type(err).__name__}: {err}); expected one number per response"]) from None
    if len(scores) != len(PROBE_RESPONSES):
        raise ConfigError([f"reward.callable: {spec!r} returned {len(scores)} score(s) for {len(PROBE_RESPONSES)} "
                           "responses; expected one number per response, in order"])


def check_reward(cfg: RewardSettings) -> None:
    """Before actors start: the classifier has the rewarded label (reads only its config), or the
    callable answers a probe with one score per response."""
    if cfg.callable is not None:
        check_callable(cfg.callable)
        return
    check_model_source("reward.model_name_or_path", cfg.model_name_or_path)
    try:
        model_config = AutoConfig.from_pretrained(cfg.model_name_or_path,
                                                  trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError([f"reward.model_name_or_path: cannot load {cfg.model_name_or_path!r} "
                           f"({str(err).splitlines()[0]})"])
    label_index(model_config.id2label, cfg.label, cfg.model_name_or_path)


class ClassifierReward:
    """Scores texts with a sequence classifier: the rewarded label's logit or probability."""

    def __init__(self, cfg: RewardSettings, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path,
                                                       trust_remote_code=cfg.trust_remote_code)
        # Prompt + response may be long: keep the end, where the response is.
        self.tokenizer.truncation_side = "left"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            cfg.model_name_or_path, trust_remote_code=cfg.trust_remote_code, use_safetensors=True
        ).to(self.device).eval()
        self.index = label_index(self.model.config.id2label, cfg.label, cfg.model_name_or_path)
        self.max_length = self._max_length()

    def _max_length(self) -> int:
        limit = self.tokenizer.model_max_length
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None:
            # RoBERTa-style models reserve padding_idx + 1 position ids.
            offset = self.model.config.pad_token_id + 1 if self.model.config.model_type in (
                "roberta", "xlm-roberta", "camembert") else 0
            limit = min(limit, positions - offset)
        return int(limit)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        texts = list(responses) if self.cfg.input == "response" else [
            p + r for p, r in zip(prompts, responses)]
        scores: list[float] = []
        for start in range(0, len(texts), self.cfg.batch_size):
            chunk = texts[start:start + self.cfg.batch_size]
            # Dynamic padding: each chunk is padded to its own longest text, not to max_length.
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits.float()
            if self.cfg.score == "probability":
                logits = torch.softmax(logits, dim=-1)
            scores.extend(logits[:, self.index].tolist())
        return scores


def load_callable(spec: str) -> RewardFn:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def make_reward_fn(cfg: RewardSettings, device: str | torch.device = "cpu") -> RewardFn:
    if cfg.callable is not None:
        return load_callable(cfg.callable)
    return ClassifierReward(cfg, device)


class RewardWorker(RoleActor):
    """Ray actor: scores a rollout (passed as an ObjectRef straight from the rollout worker)."""

    def __init__(self, reward: RewardSettings, worker_index: int = 0):
        self.reward_fn = make_reward_fn(reward, default_device())
        self.worker_index = worker_index

    def score(self, rollout: dict) -> dict:
        start = time.perf_counter()
        scores = [float(s) for s in self.reward_fn(rollout["prompts"], rollout["responses"])]
        if len(scores) != len(rollout["responses"]):  # passed the probe, but not this batch
            raise ValueError(f"reward: {len(scores)} scores for {len(rollout['responses'])} responses from "
                             f"reward actor {self.worker_index}; expected one score per response")
        return {"scores": scores, "seconds": time.perf_counter() - start, "peak_memory_mib": peak_memory_mib()}
