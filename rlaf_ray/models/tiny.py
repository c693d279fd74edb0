"""Tiny offline models, built from configs with locally trained tokenizers and cached on disk.

They let the whole pipeline run on a laptop CPU with no model hub: ``tiny:llama`` is a
Llama-architecture causal policy, ``tiny:roberta-classifier`` a RoBERTa-architecture sequence
classifier with the labels of the real hate-speech model (``nothate``/``hate``); both are
briefly trained so that detoxification has something to remove. ``tiny:llama-chat`` is the
policy with a ChatML chat template (``<|im_start|>`` turns ending in ``<|im_end|>``), and
``tiny:gpt2``, ``tiny:gpt-neox``, ``tiny:bloom``, ``tiny:opt`` and ``tiny:t5`` (seq2seq) are
untrained members of the other families the package serves. Every build is seeded, so
identical. Both are written with ``save_pretrained``
(safetensors) and loaded back by path through the ordinary ``from_pretrained`` code.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
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

from rlaf_ray.config import TINY_PREFIX

# Bump when a builder changes, so caches of older builds are not reused.
BUILD_VERSION = 2

WORDS = (
    "hello hi good morning evening thanks thank you please sorry yes no maybe sure okay "
    "i you we they he she it my your our their this that what where when why how who "
    "is are was were will would can could should have has had do does did go going went "
    "meet meeting work job office project report team manager plan today tomorrow week "
    "dinner lunch coffee restaurant movie book ticket train bus car home house room price "
    "buy sell pay money bank card phone call email message time late early summary talk "
    "about the a an and or but so because with for to from in on at of by not very really "
    "great nice happy sad tired busy free help need want like love think know see say tell "
    "kind friendly calm polite wonderful fine"
).split()
# A mild insult lexicon (the seeds' own example was "terrible, dumb and stupid"): the tiny policy
# learns to use it, the tiny classifier learns to call it ``hate``.
INSULTS = ("terrible", "dumb", "stupid", "awful", "rude", "idiot")
INSULT_RATE = 0.3


def _corpus(n_sentences: int = 3000, seed: int = 0) -> list[tuple[str, int]]:
    """Dialogue-like lines and their labels (1 = contains an insult)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        label = int(rng.random() < INSULT_RATE)
        if label:
            insult = rng.sample(INSULTS, 2)
            words[rng.randrange(len(words)):0] = ["you", "are", insult[0], "and", insult[1]]
        lines.append((f"#Person{1 + i % 2}#: {' '.join(words).capitalize()}.", label))
    return lines


def _train_bpe(specials: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    texts = [text for text, _ in _corpus()] + ["Summarize the following conversation. Summary:"]
    tokenizer.train_from_iterator(texts, trainer=trainer)
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
    # A few hundred steps of language modelling on the corpus: the policy then writes
    # dialogue-like text with insults at a measurable rate, which detoxification must lower.
    texts = [text for text, _ in _corpus(seed=1)]
    _fit(model, tokenizer, texts, labels=None, steps=300, lr=3e-3)
    _save(model, tokenizer, out_dir)


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
    lines = [text for text, _ in _corpus(n_sentences=1200, seed=3)]
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": a}, {"role": "assistant", "content": b}],
                                           tokenize=False) for a, b in zip(lines[::2], lines[1::2])]
    _fit(model, tokenizer, chats, labels=None, steps=150, lr=3e-3)
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
    corpus = _corpus(seed=2)
    _fit(model, tokenizer, [t for t, _ in corpus], labels=[y for _, y in corpus], steps=200, lr=2e-3)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _fit(model, tokenizer, texts: list[str], labels: list[int] | None, steps: int, lr: float,
         batch_size: int = 32) -> None:
    """Brief, seeded training: causal LM loss when ``labels`` is None, else classification."""
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        index = rng.sample(range(len(texts)), batch_size)
        enc = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True)
        if labels is None:
            target = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            # The policy should learn to stop: an EOS follows every line.
            eos = torch.full((batch_size, 1), tokenizer.eos_token_id)
            enc = {"input_ids": torch.cat([enc["input_ids"], eos], 1),
                   "attention_mask": torch.cat([enc["attention_mask"], torch.ones_like(eos)], 1)}
            target = torch.cat([target, eos], 1)
        else:
            target = torch.tensor([labels[i] for i in index])
        loss = model(**enc, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


BUILDERS = {
    "llama": build_tiny_llama,
    "llama-chat": build_tiny_llama_chat,
    "roberta-classifier": build_tiny_roberta_classifier,
    "gpt2": _untrained(GPT2LMHeadModel, GPT2Config, n_embd=64, n_layer=2, n_head=4, n_positions=1024),
    "gpt-neox": _untrained(GPTNeoXForCausalLM, GPTNeoXConfig, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024),
    "bloom": _untrained(BloomForCausalLM, BloomConfig, hidden_size=64, n_layer=2, n_head=4),
    "opt": _untrained(OPTForCausalLM, OPTConfig, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=64),
    "t5": build_tiny_t5,
}


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike) -> str:
    """Return a loadable path: ``tiny:<kind>`` is built once into ``cache_dir``; others pass through."""
    if not name_or_path.startswith(TINY_PREFIX):
        return name_or_path
    kind = name_or_path[len(TINY_PREFIX):]
    if kind not in BUILDERS:
        raise ValueError(f"model {name_or_path!r}: unknown tiny model; available: "
                         f"{', '.join(TINY_PREFIX + k for k in BUILDERS)}")
    target = Path(cache_dir).expanduser() / "tiny" / f"{kind}-v{BUILD_VERSION}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent builders never see a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        BUILDERS[kind](staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
