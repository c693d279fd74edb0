"""Tiny offline models of the detox world, built from configs with locally trained tokenizers and
cached on disk.

They let the whole pipeline run on a laptop CPU with no model hub, on the ground-truth world of
``rlaf_ray.world``: ``tiny:llama`` is a Llama-architecture causal policy trained to reply to a
dialogue with one turn of the grammar (mostly grammatical, toxic at about the grammar's rate);
``tiny:roberta-classifier`` a RoBERTa-architecture sequence classifier with the labels of the
real hate-speech model (``nothate``/``hate``), trained on the world's toxic label from text
alone, so it can be fooled as real classifiers are; ``tiny:judge-lm`` a GPT-2-architecture LM
trained on other dialogues with another seed, the held-out perplexity judge. ``tiny:llama-chat``
is the policy with a ChatML chat template (``<|im_start|>`` turns ending in ``<|im_end|>``), and
``tiny:gpt2``, ``tiny:gpt-neox``, ``tiny:bloom``, ``tiny:opt`` and ``tiny:t5`` (seq2seq) are
untrained members of the other families the package serves. Every build is seeded, so
identical; each is written with ``save_pretrained`` (safetensors) and loaded back by path
through the ordinary ``from_pretrained`` code. A trained build writes what it measured of
itself to ``world_card.json`` beside its weights.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)
from trl.trainer.utils import pad

from rlaf_ray import world
from rlaf_ray.config import TINY_PREFIX
from rlaf_ray.worker_setup import setup_worker

# Bump when a builder changes, so caches of older builds are not reused.
BUILD_VERSION = 4

# Sizes and steps: the smallest that reach the world's targets (>= 90% grammatical samples at
# temperature 1, toxic at about the grammar's rate) within the demo's time on 2 cores.
POLICY_STEPS = 800
CLASSIFIER_STEPS = 300
JUDGE_STEPS = 500
CARD = "world_card.json"


@contextmanager
def _one_thread():
    """Matrices this small train faster on one thread than on several (no sync per op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=1)
def _tokenizer_corpus() -> tuple[str, ...]:
    """What every tiny tokenizer learns from: the world's dialogues (sampled once per process,
    though several models are built)."""
    texts = [d.prompt + d.reply_text for d in world.sample_dialogues(5000, seed=0)]
    return tuple(texts + ["Summarize the following conversation. Summary:"])


def _train_bpe(specials: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return tokenizer


def _causal_tokenizer(extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    raw = _train_bpe(["<unk>", "<s>", "</s>", "<pad>", *extra_specials], vocab_size=600)
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>", model_max_length=1024,
                                   additional_special_tokens=list(extra_specials) or None)


def _llama(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _save(model, tokenizer, out_dir: Path) -> None:
    ids = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    model.generation_config = GenerationConfig(**{k: getattr(model.config, k, None) for k in ids})
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_tiny_llama(out_dir: Path) -> None:
    tokenizer = _causal_tokenizer()
    model = _llama(tokenizer)
    # Language modelling of the reply turn given the dialogue before it: the policy learns to
    # answer with one turn of the grammar and stop, toxic about as often as the grammar is.
    dialogues = world.sample_dialogues(20000, seed=1)
    loss = _fit_replies(model, tokenizer, [(d.prompt, d.reply_text) for d in dialogues], POLICY_STEPS, lr=5e-3)
    _save(model, tokenizer, out_dir)
    _write_card(out_dir, {"train_loss": loss, "steps": POLICY_STEPS, **sample_rates(model, tokenizer)})


def build_tiny_judge_lm(out_dir: Path) -> None:
    tokenizer = _causal_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(7)
    model = GPT2LMHeadModel(config)
    # Other dialogues, another seed, another architecture: the policy cannot fit its quirks.
    dialogues = world.sample_dialogues(20000, seed=7)
    loss = _fit_replies(model, tokenizer, [(d.prompt, d.reply_text) for d in dialogues], JUDGE_STEPS,
                        lr=5e-3, seed=7)
    _save(model, tokenizer, out_dir)
    _write_card(out_dir, {"train_loss": loss, "steps": JUDGE_STEPS})


@torch.no_grad()
def sample_rates(model, tokenizer, n: int = 400, seed: int = 99) -> dict[str, float]:
    """Grammatical, toxic and ended rates of one sample (temperature 1, no truncation) per
    held-out prompt, by the world's judges."""
    dialogues = world.sample_dialogues(n, seed=seed)
    tokenizer.padding_side = "left"
    texts, ended = [], 0
    for first in range(0, n, 50):
        enc = tokenizer([d.prompt for d in dialogues[first:first + 50]], return_tensors="pt", padding=True)
        torch.manual_seed(seed + first)
        out = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=24,
                             pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        ended += int((new == tokenizer.eos_token_id).any(dim=1).sum())
        texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    return {"grammatical_rate": sum(map(world.is_grammatical, texts)) / n,
            "toxic_rate": sum(map(world.is_toxic, texts)) / n, "ended_rate": ended / n}


def _write_card(out_dir: Path, card: dict) -> None:
    (out_dir / CARD).write_text(json.dumps(card, indent=1))


def read_card(path: str | os.PathLike) -> dict:
    """What a tiny build measured of itself (empty for untrained builds)."""
    card = Path(path) / CARD
    return json.loads(card.read_text()) if card.is_file() else {}


# TinyLlama chat's format (ChatML): a user turn, then the assistant's turn ended by <|im_end|>.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llama_chat(out_dir: Path) -> None:
    tokenizer = _causal_tokenizer(("<|im_start|>", "<|im_end|>"))
    tokenizer.chat_template = CHATML_TEMPLATE
    model = _llama(tokenizer)
    # Trained on ChatML exchanges so that it ends its turns with <|im_end|>, as a chat model does.
    pairs = []
    for d in world.sample_dialogues(4000, seed=3, min_context=0, max_context=0):
        turn = world.sample_turn(random.Random(len(pairs)), toxic=False)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": turn}], tokenize=False,
                                               add_generation_prompt=True)
        pairs.append((prompt, d.reply + "<|im_end|>\n"))
    _fit_replies(model, tokenizer, pairs, steps=300, lr=5e-3, add_eos=False)
    _save(model, tokenizer, out_dir)


def _untrained(model_cls, config_cls, **sizes):
    """A builder of a random (seeded) member of another causal family, same tokenizer."""

    def build(out_dir: Path) -> None:
        tokenizer = _causal_tokenizer()
        config = config_cls(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)
        torch.manual_seed(0)
        _save(model_cls(config), tokenizer, out_dir)

    return build


def build_tiny_t5(out_dir: Path) -> None:
    # T5's special-token order: <pad>=0 (also the decoder start), </s>=1, <unk>=2; inputs end in </s>.
    raw = _train_bpe(["<pad>", "</s>", "<unk>"], vocab_size=600)
    raw.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", model_max_length=512)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                      num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    _save(T5ForConditionalGeneration(config), tokenizer, out_dir)


def build_tiny_roberta_classifier(out_dir: Path) -> None:
    # RoBERTa's special-token order: <s>=0, <pad>=1, </s>=2, <unk>=3.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    raw = _train_bpe(specials, vocab_size=600)
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                        cls_token="<s>", sep_token="</s>", model_max_length=128)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=130, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        id2label={0: "nothate", 1: "hate"}, label2id={"nothate": 0, "hate": 1},
    )
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    # The world's label of each text, learned from the text alone: turns as the grammar writes
    # them and as a policy writes them (after a space, with slips), each labelled by the judge.
    texts = world.as_written([d.reply for d in world.sample_dialogues(8000, seed=2)], seed=3)
    _fit_classifier(model, tokenizer, texts, [int(world.is_toxic(t)) for t in texts], CLASSIFIER_STEPS, lr=3e-3)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    held_out = [d.reply for d in world.sample_dialogues(2000, seed=12)]
    _write_card(out_dir, {"steps": CLASSIFIER_STEPS,
                          "held_out_accuracy": _accuracy(model, tokenizer, held_out),
                          "held_out_accuracy_as_written": _accuracy(model, tokenizer,
                                                                    world.as_written(held_out, seed=13))})


@torch.no_grad()
def _accuracy(model, tokenizer, turns: list[str]) -> float:
    hits = 0
    for first in range(0, len(turns), 200):
        part = turns[first:first + 200]
        predicted = model(**tokenizer(part, return_tensors="pt", padding=True)).logits.argmax(-1)
        hits += sum(int(p) == int(world.is_toxic(t)) for p, t in zip(predicted, part))
    return hits / len(turns)


def _fit_replies(model, tokenizer, pairs: list[tuple[str, str]], steps: int, lr: float,
                 batch_size: int = 32, seed: int = 0, add_eos: bool = True) -> float:
    """Seeded language modelling of each reply given its prompt (the loss on reply tokens and
    the EOS after them only); returns the last step's loss."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    eos = [tokenizer.eos_token_id] if add_eos else []
    model.train()
    with _one_thread():
        for _ in range(steps):
            rows, targets = [], []
            for prompt, reply in rng.sample(pairs, batch_size):
                p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                r = tokenizer(reply, add_special_tokens=False)["input_ids"] + eos
                rows.append(torch.tensor(p + r))
                targets.append(torch.tensor([-100] * len(p) + r))
            ids = pad(rows, padding_value=tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=pad([torch.ones_like(r) for r in rows], padding_value=0),
                         labels=pad(targets, padding_value=-100)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return round(loss.item(), 4)


def _fit_classifier(model, tokenizer, texts: list[str], labels: list[int], steps: int, lr: float,
                    batch_size: int = 32) -> None:
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with _one_thread():
        for _ in range(steps):
            index = rng.sample(range(len(texts)), batch_size)
            enc = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True)
            loss = model(**enc, labels=torch.tensor([labels[i] for i in index])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


BUILDERS = {
    "llama": build_tiny_llama,
    "llama-chat": build_tiny_llama_chat,
    "roberta-classifier": build_tiny_roberta_classifier,
    "judge-lm": build_tiny_judge_lm,
    "gpt2": _untrained(GPT2LMHeadModel, GPT2Config, n_embd=64, n_layer=2, n_head=4, n_positions=1024),
    "gpt-neox": _untrained(GPTNeoXForCausalLM, GPTNeoXConfig, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024),
    "bloom": _untrained(BloomForCausalLM, BloomConfig, hidden_size=64, n_layer=2, n_head=4),
    "opt": _untrained(OPTForCausalLM, OPTConfig, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=64),
    "t5": build_tiny_t5,
}


def resolve_models(names: list[str], cache_dir: str | os.PathLike) -> list[str]:
    """``resolve_model`` for each name; the tiny models not yet in ``cache_dir`` are built side by
    side, one process per CPU core (each build runs on one thread), so a fresh cache costs the
    longest build rather than the sum of all."""
    missing = sorted({n for n in names if n.startswith(TINY_PREFIX) and not _is_built(_target(n, cache_dir))})
    workers = min(len(missing), os.cpu_count() or 1)
    if workers > 1:
        # setup_worker: as a run's processes (none of the builds is quantized; a quiet console)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=setup_worker) as pool:
            list(pool.map(resolve_model, missing, [cache_dir] * len(missing)))
    return [resolve_model(name, cache_dir) for name in names]


def _target(name: str, cache_dir: str | os.PathLike) -> Path:
    kind = name[len(TINY_PREFIX):]
    if kind not in BUILDERS:
        raise ValueError(f"model {name!r}: unknown tiny model; available: "
                         f"{', '.join(TINY_PREFIX + k for k in BUILDERS)}")
    return Path(cache_dir).expanduser() / "tiny" / f"{kind}-v{BUILD_VERSION}"


def _is_built(target: Path) -> bool:
    return (target / "config.json").is_file()


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike) -> str:
    """Return a loadable path: ``tiny:<kind>`` is built once into ``cache_dir``; others pass through."""
    if not name_or_path.startswith(TINY_PREFIX):
        return name_or_path
    kind = name_or_path[len(TINY_PREFIX):]
    target = _target(name_or_path, cache_dir)
    if _is_built(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent builders never see a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        BUILDERS[kind](staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_built(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
