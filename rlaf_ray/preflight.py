"""Everything checked and resolved before Ray starts any actor, shared by train and evaluation."""

from __future__ import annotations

import torch

from rlaf_ray.config import (
    MODEL_FIELDS,
    ConfigError,
    ModelSettings,
    RewardSettings,
    RLAFConfig,
    resolve_paths,
)
from rlaf_ray.data import check_data
from rlaf_ray.models.policy import (
    auto_class,
    check_init_adapter,
    check_precision,
    eos_token_id,
    format_prompts,
    is_seq2seq,
    load_tokenizer,
)
from rlaf_ray.models.source import check_model_source
from rlaf_ray.models.tiny import resolve_models
from rlaf_ray.roles.reward import check_reward


def check_evaluation(cfg: RLAFConfig) -> None:
    """The meter's classifiers have its toxic label (reads only their configs)."""
    ev = cfg.evaluation
    for name in (ev.classifier or cfg.reward.model_name_or_path, ev.holdout_classifier):
        if name is None:
            continue
        try:
            check_reward(RewardSettings(model_name_or_path=name, label=ev.toxic_label,
                                        trust_remote_code=cfg.reward.trust_remote_code))
        except ConfigError as err:
            raise ConfigError([line.replace("reward.label:", "evaluation.toxic_label:")
                               for line in err.problems])


def linear_layer_names(model: ModelSettings) -> list[str]:
    """Names (last part) of the model's linear layers, from its config on the meta device: no
    weights are read."""
    import torch
    from transformers import AutoConfig
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    with torch.device("meta"):
        net = auto_class(model).from_config(config, trust_remote_code=model.trust_remote_code)
    return sorted({name.rsplit(".", 1)[-1] for name, module in net.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D))})


def check_lora_targets(cfg: RLAFConfig) -> None:
    """Every lora.target_modules entry names a linear layer of the policy (peft matches names by
    their last part): a typo fails here, naming the layers there are."""
    if not cfg.lora.target_modules or cfg.lora.init_from is not None:  # an adapter to continue has its own
        return
    layers = linear_layer_names(cfg.model)
    missing = [t for t in cfg.lora.target_modules if t not in layers]
    if missing:
        raise ConfigError([f"lora.target_modules: {missing[0]!r} is not a linear layer of "
                           f"{cfg.model.name_or_path!r}; its linear layers: {', '.join(layers)}"])


def check_lora_init(cfg: RLAFConfig) -> None:
    """EVA reads each adapted layer's input over whole prompts; an encoder-decoder's decoder sees
    no prompt tokens, only what it generates, so its layers have nothing to read here."""
    if cfg.lora.init == "eva" and is_seq2seq(cfg.model):
        raise ConfigError([f"lora.init: 'eva' needs a causal LM, and {cfg.model.name_or_path!r} is an "
                           f"encoder-decoder; set lora.init to random"])


# Where a causal LM's config says how many positions it has (learned or trained-for).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def check_context(cfg: RLAFConfig) -> None:
    """The longest prompt plus the longest response fits the policy's context: beyond it, learned
    position embeddings fail inside the rollout actor and rotary ones run untrained positions."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    if getattr(config, "is_encoder_decoder", False):
        return  # the prompt goes to the encoder, the response to the decoder: relative positions (T5)
    key = next((k for k in CONTEXT_KEYS if isinstance(getattr(config, k, None), int)), None)
    if key is None:
        return  # no fixed context (ALiBi, e.g. BLOOM)
    new = cfg.generation.max_new_tokens
    longest_new = max(new) if isinstance(new, list) else new
    if cfg.model.max_prompt_length + longest_new > getattr(config, key):
        raise ConfigError([f"model.max_prompt_length: {cfg.model.max_prompt_length} prompt tokens + "
                           f"generation.max_new_tokens {longest_new} exceed the {getattr(config, key)}-token context "
                           f"of {cfg.model.name_or_path!r} (its {key}); lower one of them"])


def check_policy(cfg: RLAFConfig) -> None:
    """What the policy's roles would trip on after their actors started: the adapter to continue,
    the chat template and end token (reads the tokenizer only), and the precision, where every
    role runs on CPU like this process (with GPUs, each role checks its own device at load)."""
    check_init_adapter(cfg.lora)
    tokenizer = load_tokenizer(cfg.model)
    format_prompts(tokenizer, ["probe"], cfg.model.chat_template)
    eos_token_id(cfg.generation, tokenizer)
    roles = (cfg.resources.learner, cfg.resources.rollout, cfg.resources.reward)
    if all(role.num_gpus == 0 for role in roles):
        check_precision(cfg.model, torch.device("cpu"))


def prepare(cfg: RLAFConfig, splits: tuple[str, ...] = ("train",), evaluation: bool = False) -> RLAFConfig:
    """Absolute paths, offline tiny models built, data files/columns and reward label checked
    (and the meter's classifiers, with ``evaluation``)."""
    cfg = resolve_paths(cfg)
    check_data(cfg.data, splits)  # first: a wrong data path must not wait for a tiny model's build
    fields = [(section, attr, getattr(getattr(cfg, section), attr)) for section, attr in MODEL_FIELDS]
    fields = [(section, attr, name) for section, attr, name in fields if name is not None]
    paths = resolve_models([name for _, _, name in fields], cfg.run.cache_dir)
    for (section, attr, _), path in zip(fields, paths):
        cfg = cfg.replace(**{section: {attr: path}})
    check_model_source("model.name_or_path", cfg.model.name_or_path)
    check_context(cfg)
    check_lora_targets(cfg)
    check_lora_init(cfg)
    check_policy(cfg)
    check_reward(cfg.reward)
    if evaluation:
        check_evaluation(cfg)
    return cfg
