"""Typed run configuration: YAML file + ``key.sub=value`` overrides + validation.

Everything a run needs is one :class:`RunConfig`. It is built from plain dicts so that the same
code path serves YAML files, command-line overrides and Ray Tune search spaces. All problems are
collected and raised together as one :class:`ConfigError`, one line per problem, before any Ray
actor starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

# The offline tiny models are named with this prefix; ``rlaf_ray.models.tiny`` builds them.
TINY_PREFIX = "tiny:"


class ConfigError(ValueError):
    """Bad configuration. ``str(error)`` is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


QUANTIZED_DTYPES = ("8bit", "4bit")


@dataclass
class ModelConfig:
    # A hub name, a local directory, or ``tiny:llama`` for the offline tiny policy. Causal or
    # seq2seq (T5) is read from the model's own config, not chosen here.
    name_or_path: str = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    # Weights of the frozen base: a float type, or a bitsandbytes quantization (QLoRA). The
    # adapter and the value head stay in float32 either way.
    dtype: Literal["fp32", "bf16", "fp16", "8bit", "4bit"] = "fp32"
    # 4bit only (the QLoRA recipe: NF4, bf16 compute, double quantization).
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_compute_dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    bnb_4bit_use_double_quant: bool = True
    # Recompute activations in the backward pass: less memory, about a third more learner time.
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    # Prompts longer than this (in policy tokens) are truncated from the left.
    max_prompt_length: int = 512
    # Wrap each prompt as a user turn with the tokenizer's chat template (chat models such as
    # TinyLlama chat); pair with generation.eos_token set to the template's end-of-turn token.
    chat_template: bool = False


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    bias: Literal["none", "all", "lora_only"] = "none"
    # None: peft's default for the architecture (q_proj/v_proj for Llama and OPT, q/v for T5,
    # query_key_value for GPT-NeoX and Bloom, c_attn for GPT-2).
    target_modules: list[str] | None = None
    # A saved PEFT adapter directory to continue training from (its own r, alpha and targets
    # apply; the settings above are then unused). None: a fresh adapter.
    init_from: str | None = None


@dataclass
class GenerationConfig:
    # A fixed number, or [low, high] sampled once per batch (inclusive).
    max_new_tokens: int | list[int] = 32
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    # The token that ends a response, by id or by its text (e.g. "<|im_end|>" for ChatML chat
    # templates). Neither: the tokenizer's EOS token.
    eos_token_id: int | None = None
    eos_token: str | None = None


@dataclass
class RewardConfig:
    model_name_or_path: str = "facebook/roberta-hate-speech-dynabench-r4-target"
    # ``package.module:function(prompts, responses) -> list[float]``; replaces the classifier.
    callable: str | None = None
    label: str = "nothate"
    score: Literal["logit", "probability"] = "logit"
    input: Literal["response", "prompt_response"] = "response"
    batch_size: int = 32
    trust_remote_code: bool = False


SPLITS = ("train", "eval", "test")


@dataclass
class DataConfig:
    # dialogsum | real_toxicity_prompts | dialoconan | files (see rlaf_ray.data.SOURCES)
    source: str = "dialogsum"
    # A local .jsonl/.json/.csv/.parquet file in the source's shape ("{split}" in the name: one
    # file per split), or a dataset-hub name; null: the source's usual hub dataset.
    path: str | None = "jobs/data/dialogsum/{split}.jsonl"
    # Our split -> the dataset's own split name (hub splits and "{split}" files).
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "eval": "validation",
                                                            "test": "test"})
    # Seeded held-out shares carved from the train split (for datasets with one split). Above 0
    # they replace the dataset's own eval/test split; a prompt always lands in the same split.
    eval_fraction: float = 0.0
    test_fraction: float = 0.0
    # Row caps per split after the seeded shuffle, e.g. {train: 1000, eval: 100, test: 100}.
    max_rows: dict[str, int] = field(default_factory=dict)
    shuffle: bool = True
    seed: int = 0
    # null: the source's default (dialogsum: "dialogue", files: "text").
    text_column: str | None = None
    # Column holding the reference reply (files source; the others know theirs).
    reference_column: str | None = None
    # Prompt template with {column} placeholders; null: the source's default.
    template: str | None = None
    # Length filter on the source text in characters (the seeds kept dialogues of 200..1000).
    min_chars: int = 0
    max_chars: int | None = None
    # real_toxicity_prompts: keep only the challenging subset / filter on prompt.toxicity.
    challenging_only: bool = False
    min_prompt_toxicity: float | None = None
    max_prompt_toxicity: float | None = None
    # Prompts longer than model.max_prompt_length tokens: truncated from the left, or dropped.
    too_long: Literal["truncate", "drop"] = "truncate"
    # Keep the prepared prompts in Ray's object store (spilled to disk beyond its size) after the
    # first pass, so epochs do not read, shuffle and tokenize again. Off: every epoch re-runs
    # the streaming pipeline (for splits larger than the cluster's object store and disk).
    cache_in_object_store: bool = True
    # CPUs per Ray Data task: Ray Data defaults to 1, which stalls a small machine whose CPUs are
    # all reserved by the actors.
    num_cpus_per_task: float = 0.25


@dataclass
class PPOConfig:
    num_iterations: int = 20
    # Global number of prompts per iteration, over all learners.
    batch_size: int = 16
    num_minibatches: int = 2
    ppo_epochs: int = 4
    learning_rate: float = 1.41e-5
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    max_grad_norm: float | None = 1.0
    kl_coef: float = 0.2
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    adaptive_kl: bool = False
    target_kl: float = 6.0
    kl_horizon: int = 10000
    # Added to the score of responses that hit max_new_tokens without EOS (None: no penalty).
    missing_eos_penalty: float | None = None
    seed: int = 0


@dataclass
class SupervisedConfig:
    """``rlaf-ray sft``: the supervised baseline on the prompts' reference replies."""

    num_epochs: float = 3.0
    learning_rate: float = 2.0e-4
    # Per learner; the global batch is this times resources.learner.num_workers.
    batch_size: int = 8
    # Held-out split whose loss is reported (before training, every eval_steps, at the end).
    eval_split: str = "eval"
    eval_steps: int = 10
    save_steps: int = 50
    # Prompt + reply tokens per example (longer ones are cut).
    max_length: int = 512
    seed: int = 0


@dataclass
class EvaluationConfig:
    """The toxicity meter (RealToxicityPrompts protocol) and the before/after report."""

    # Held-out split of the data section the report measures on.
    split: str = "test"
    max_prompts: int | None = 100
    samples_per_prompt: int = 25
    max_new_tokens: int = 20
    # 0 in the RealToxicityPrompts protocol; set it to the training value to compare like with like.
    min_new_tokens: int = 0
    top_p: float = 0.9
    temperature: float = 1.0
    # Toxicity classifier and its toxic label; null: reward.model_name_or_path.
    classifier: str | None = None
    toxic_label: str = "hate"
    threshold: float = 0.5
    # A second classifier scoring the same outputs: a gap between the two shows reward hacking.
    holdout_classifier: str | None = None
    # LM that scores fluency (perplexity of continuation given prompt); null: the base policy.
    perplexity_model: str | None = None
    # Words whose rate in continuations is reported (e.g. an insult lexicon).
    lexicon: list[str] = field(default_factory=list)
    prompts_per_batch: int = 4
    # Ray Data actor pools: generator, and each scorer.
    generator_actors: int = 1
    scorer_actors: int = 1
    num_cpus_per_actor: float = 0.5
    num_gpus_per_actor: float = 0.0
    seed: int = 0
    # Write the before/after report at the end of every train run.
    after_train: bool = True


@dataclass
class RoleResources:
    num_workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # Custom Ray resources, e.g. {"inference_node": 0.01}, to pin a role to a node type.
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class ResourcesConfig:
    learner: RoleResources = field(default_factory=lambda: RoleResources(num_workers=2))
    rollout: RoleResources = field(default_factory=RoleResources)
    reward: RoleResources = field(default_factory=RoleResources)


@dataclass
class RunSettings:
    name: str = "rlaf"
    output_dir: str = "results"
    checkpoint_every: int = 5
    keep_checkpoints: int | None = 2
    max_failures: int = 0
    # Seconds to wait for an autoscaling cluster to add the nodes the roles need before failing
    # (0: fail at once when no node can host a role).
    resource_wait_s: float = 0.0
    # Where the small offline models are cached after their first build.
    cache_dir: str = "~/.cache/rlaf_ray"


@dataclass
class TuneSettings:
    """``rlaf-ray tune``: a Ray Tune search in which every trial is a full PPO run."""

    # Dotted config field -> one spec: {choice: [...]}, {grid: [...]} (every value, in order),
    # {uniform: [low, high]} or {loguniform: [low, high]}; e.g. {lora.r: {choice: [4, 8, 16]}}.
    # Checked by rlaf_ray.tune_space (it knows the fields and the metrics a run reports).
    search_space: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 4
    # random (Tune's BasicVariantGenerator), optuna or hyperopt (when installed).
    search_alg: Literal["random", "optuna", "hyperopt"] = "random"
    seed: int | None = 0
    # A metric the run reports each iteration (reward/mean, kl/mean, ppo/..., ...).
    metric: str = "reward/mean"
    mode: Literal["max", "min"] = "max"
    # asha: stop trials whose metric trails at a rung; fifo: run every trial to the end.
    scheduler: Literal["asha", "fifo"] = "asha"
    # ASHA: PPO iterations before a trial can be stopped, and the rung spacing / kept share 1/rf.
    grace_period: int = 2
    reduction_factor: float = 2.0
    # Trials at once; null: as many as the cluster can host completely (see rlaf_ray.tune).
    max_concurrent_trials: int | None = None
    # CPUs held by each trial's driver (the Tune function that starts the roles and the learners).
    driver_num_cpus: float = 0.25


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    sft: SupervisedConfig = field(default_factory=SupervisedConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    run: RunSettings = field(default_factory=RunSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


# --------------------------------------------------------------------------------------------
# Building from dicts


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ValueError naming ``where`` and the expectation."""
    if tp is Any:  # checked by the section's own validation (tune.search_space)
        return value
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ValueError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ValueError(f"{where}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "4e-3" (no dot) as a string: accept it where a number is expected.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            problems.append(
                f"{where}: unknown key; {hint}valid keys in {prefix.rstrip('.') or 'the top level'}: "
                f"{', '.join(names)}"
            )
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{where}.", problems)
            continue
        try:
            kwargs[key] = _coerce(value, tp, where)
        except ValueError as err:
            problems.append(str(err))
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["ppo.batch_size=8", "lora.target_modules=[q_proj,v_proj]"]`` -> nested dict.

    Values are parsed as YAML, so numbers, booleans, null and lists work as on the command line.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"override {item!r}: expected key.sub=value"])
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Load YAML (optional), apply dict ``extra`` then ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"config file {str(p)!r}: not found"])
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError([f"config file {str(p)!r}: not valid YAML ({err})".replace("\n", " ")])
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"config file {str(p)!r}: expected a mapping at the top level"])
        data = loaded or {}
    if extra:
        data = merge(data, extra)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> RunConfig:
    problems: list[str] = []
    config = _build(RunConfig, data, "", problems)
    if not problems:
        problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


# --------------------------------------------------------------------------------------------
# Validation of values (types were checked while building)


def _range(problems: list[str], where: str, value: Any, low=None, high=None, low_open=False,
           high_open=False) -> None:
    if value is None:
        return
    bad = (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high))
    )
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        problems.append(
            f"{where}: {value!r} is out of range; allowed {lo}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}{hi}"
        )


def validate(c: RunConfig) -> list[str]:
    p: list[str] = []
    _range(p, "model.max_prompt_length", c.model.max_prompt_length, 1)
    _range(p, "lora.r", c.lora.r, 1)
    _range(p, "lora.alpha", c.lora.alpha, 1)
    _range(p, "lora.dropout", c.lora.dropout, 0.0, 1.0, high_open=True)
    if c.lora.target_modules is not None and not c.lora.target_modules:
        p.append("lora.target_modules: empty list; give module names or null for the default")

    g = c.generation
    if isinstance(g.max_new_tokens, list):
        if len(g.max_new_tokens) != 2 or g.max_new_tokens[0] > g.max_new_tokens[1]:
            p.append(f"generation.max_new_tokens: expected an integer or [low, high] with low <= high, "
                     f"got {g.max_new_tokens!r}")
        else:
            _range(p, "generation.max_new_tokens[0]", g.max_new_tokens[0], 1)
    else:
        _range(p, "generation.max_new_tokens", g.max_new_tokens, 1)
    low_new = g.max_new_tokens[0] if isinstance(g.max_new_tokens, list) and g.max_new_tokens else g.max_new_tokens
    _range(p, "generation.min_new_tokens", g.min_new_tokens, 0)
    if isinstance(low_new, int) and g.min_new_tokens > low_new:
        p.append(f"generation.min_new_tokens: {g.min_new_tokens} exceeds the smallest max_new_tokens "
                 f"({low_new})")
    _range(p, "generation.temperature", g.temperature, 0.0, low_open=True)
    _range(p, "generation.top_k", g.top_k, 0)
    _range(p, "generation.top_p", g.top_p, 0.0, 1.0, low_open=True)
    _range(p, "generation.repetition_penalty", g.repetition_penalty, 0.0, low_open=True)
    if g.eos_token_id is not None and g.eos_token is not None:
        p.append("generation.eos_token: set together with generation.eos_token_id; give one of them")
    if g.eos_token is not None and not g.eos_token:
        p.append("generation.eos_token: empty; give the end token's text or null")

    r = c.reward
    _range(p, "reward.batch_size", r.batch_size, 1)
    if r.callable is not None:
        p.extend(_check_callable(r.callable))

    d = c.data
    # data.source is checked against the registered sources by rlaf_ray.data (layers point up).
    for key in d.splits:
        if key not in SPLITS:
            p.append(f"data.splits.{key}: unknown split; expected {', '.join(SPLITS)}")
    for key, value in d.max_rows.items():
        if key not in SPLITS:
            p.append(f"data.max_rows.{key}: unknown split; expected {', '.join(SPLITS)}")
        _range(p, f"data.max_rows.{key}", value, 1)
    _range(p, "data.eval_fraction", d.eval_fraction, 0.0, 1.0, high_open=True)
    _range(p, "data.test_fraction", d.test_fraction, 0.0, 1.0, high_open=True)
    if d.eval_fraction + d.test_fraction >= 1.0:
        p.append(f"data.eval_fraction + data.test_fraction: {d.eval_fraction + d.test_fraction} "
                 "leaves no train rows; expected a sum below 1")
    _range(p, "data.min_chars", d.min_chars, 0)
    _range(p, "data.max_chars", d.max_chars, 1)
    if d.max_chars is not None and d.min_chars > d.max_chars:
        p.append(f"data.min_chars: {d.min_chars} is above data.max_chars ({d.max_chars})")
    _range(p, "data.min_prompt_toxicity", d.min_prompt_toxicity, 0.0, 1.0)
    _range(p, "data.max_prompt_toxicity", d.max_prompt_toxicity, 0.0, 1.0)
    _range(p, "data.num_cpus_per_task", d.num_cpus_per_task, 0.0, low_open=True)

    e = c.evaluation
    if e.split not in SPLITS:
        p.append(f"evaluation.split: {e.split!r} is not a split; expected {', '.join(SPLITS)}")
    _range(p, "evaluation.max_prompts", e.max_prompts, 1)
    _range(p, "evaluation.samples_per_prompt", e.samples_per_prompt, 1)
    _range(p, "evaluation.max_new_tokens", e.max_new_tokens, 1)
    _range(p, "evaluation.min_new_tokens", e.min_new_tokens, 0, e.max_new_tokens)
    _range(p, "evaluation.top_p", e.top_p, 0.0, 1.0, low_open=True)
    _range(p, "evaluation.temperature", e.temperature, 0.0, low_open=True)
    _range(p, "evaluation.threshold", e.threshold, 0.0, 1.0)
    _range(p, "evaluation.prompts_per_batch", e.prompts_per_batch, 1)
    _range(p, "evaluation.generator_actors", e.generator_actors, 1)
    _range(p, "evaluation.scorer_actors", e.scorer_actors, 1)
    _range(p, "evaluation.num_cpus_per_actor", e.num_cpus_per_actor, 0.0)
    _range(p, "evaluation.num_gpus_per_actor", e.num_gpus_per_actor, 0.0)

    f = c.sft
    if f.eval_split not in SPLITS:
        p.append(f"sft.eval_split: {f.eval_split!r} is not a split; expected {', '.join(SPLITS)}")
    _range(p, "sft.num_epochs", f.num_epochs, 0.0, low_open=True)
    _range(p, "sft.learning_rate", f.learning_rate, 0.0, 1.0, low_open=True)
    _range(p, "sft.batch_size", f.batch_size, 1)
    _range(p, "sft.eval_steps", f.eval_steps, 1)
    _range(p, "sft.save_steps", f.save_steps, 1)
    _range(p, "sft.max_length", f.max_length, 2)

    o = c.ppo
    _range(p, "ppo.num_iterations", o.num_iterations, 1)
    _range(p, "ppo.batch_size", o.batch_size, 1)
    _range(p, "ppo.num_minibatches", o.num_minibatches, 1)
    _range(p, "ppo.ppo_epochs", o.ppo_epochs, 1)
    _range(p, "ppo.learning_rate", o.learning_rate, 0.0, 1.0, low_open=True)
    _range(p, "ppo.cliprange", o.cliprange, 0.0, 1.0, low_open=True)
    _range(p, "ppo.cliprange_value", o.cliprange_value, 0.0, low_open=True)
    _range(p, "ppo.vf_coef", o.vf_coef, 0.0)
    _range(p, "ppo.gamma", o.gamma, 0.0, 1.0)
    _range(p, "ppo.lam", o.lam, 0.0, 1.0)
    _range(p, "ppo.max_grad_norm", o.max_grad_norm, 0.0, low_open=True)
    _range(p, "ppo.kl_coef", o.kl_coef, 0.0)
    _range(p, "ppo.target_kl", o.target_kl, 0.0, low_open=True)
    _range(p, "ppo.kl_horizon", o.kl_horizon, 1)

    for role in ("learner", "rollout", "reward"):
        res: RoleResources = getattr(c.resources, role)
        _range(p, f"resources.{role}.num_workers", res.num_workers, 1)
        _range(p, f"resources.{role}.num_cpus", res.num_cpus, 0.0)
        _range(p, f"resources.{role}.num_gpus", res.num_gpus, 0.0)
        if res.num_gpus > 1 and res.num_gpus != int(res.num_gpus):
            p.append(f"resources.{role}.num_gpus: {res.num_gpus} must be a whole number when above 1")

    learners = c.resources.learner.num_workers
    if o.batch_size >= 1 and learners >= 1 and o.num_minibatches >= 1:
        if o.batch_size % learners:
            p.append(f"ppo.batch_size: {o.batch_size} does not divide across "
                     f"resources.learner.num_workers={learners} learners")
        elif (o.batch_size // learners) % o.num_minibatches:
            p.append(f"ppo.batch_size: {o.batch_size // learners} prompts per learner "
                     f"({o.batch_size}/{learners}) do not divide into "
                     f"ppo.num_minibatches={o.num_minibatches} minibatches")

    run = c.run
    if not run.name or "/" in run.name or run.name.strip() != run.name:
        p.append(f"run.name: {run.name!r} must be a non-empty name without '/' or surrounding spaces")
    _range(p, "run.checkpoint_every", run.checkpoint_every, 1)
    _range(p, "run.keep_checkpoints", run.keep_checkpoints, 1)
    _range(p, "run.max_failures", run.max_failures, -1)
    _range(p, "run.resource_wait_s", run.resource_wait_s, 0.0)

    t = c.tune
    _range(p, "tune.num_samples", t.num_samples, 1)
    _range(p, "tune.grace_period", t.grace_period, 1)
    _range(p, "tune.reduction_factor", t.reduction_factor, 1.0, low_open=True)
    _range(p, "tune.max_concurrent_trials", t.max_concurrent_trials, 1)
    _range(p, "tune.driver_num_cpus", t.driver_num_cpus, 0.0, low_open=True)
    return p


def _check_callable(spec: str) -> list[str]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        return [f"reward.callable: {spec!r} must look like package.module:function"]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return [f"reward.callable: cannot import module {module_name!r} ({err})"]
    if not callable(getattr(module, attr, None)):
        return [f"reward.callable: module {module_name!r} has no function {attr!r}"]
    return []


# Every field naming a model: hub name, local directory or tiny offline model.
MODEL_FIELDS = (("model", "name_or_path"), ("reward", "model_name_or_path"),
                ("evaluation", "classifier"), ("evaluation", "holdout_classifier"),
                ("evaluation", "perplexity_model"))
LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def is_local_path(path: str) -> bool:
    """A data file (by its suffix) rather than a dataset-hub name such as ``knkarthick/dialogsum``."""
    return path.lower().endswith(LOCAL_DATA_SUFFIXES) or path.startswith((".", "/", "~"))


def resolve_paths(c: RunConfig) -> RunConfig:
    """Make file paths absolute: Ray Train workers run in another working directory."""
    c = dataclasses.replace(c)
    c.run = dataclasses.replace(c.run, output_dir=str(Path(c.run.output_dir).expanduser().resolve()),
                                cache_dir=str(Path(c.run.cache_dir).expanduser().resolve()))
    if c.data.path is not None and is_local_path(c.data.path):
        c.data = dataclasses.replace(c.data, path=str(Path(c.data.path).expanduser().resolve()))
    if c.lora.init_from is not None:
        c.lora = dataclasses.replace(c.lora, init_from=str(Path(c.lora.init_from).expanduser().resolve()))
    for section, attr in MODEL_FIELDS:
        sub = getattr(c, section)
        value = getattr(sub, attr)
        if value is not None and not value.startswith(TINY_PREFIX) and Path(value).expanduser().exists():
            setattr(c, section, dataclasses.replace(sub, **{attr: str(Path(value).expanduser().resolve())}))
    return c


def dump_yaml(c: RunConfig) -> str:
    return yaml.safe_dump(c.to_dict(), sort_keys=False)
