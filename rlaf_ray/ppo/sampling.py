"""The distribution the rollout sampled from, replayed on the learner's logits.

``generate`` does not sample from ``softmax(logits)``: it runs its logits processors first, and
PPO's ratio and KL are only right if the learner scores each response token under the same
processed distribution. This module builds the same transformers processors, in the order
transformers 5.24's ``GenerationMixin._get_logits_processor`` builds them (repetition penalty,
min-new-tokens EOS mask, then the sampling warpers temperature -> top-k -> top-p), and applies
them at every response position to the ids ``generate`` had seen there: the left-padded prompt
plus the response so far (causal), or the decoder ids so far (seq2seq).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlaf_ray.config import GenerationSettings
from rlaf_ray.ppo.batch import RolloutBatch


class SamplingDistribution:
    """Turns the model's logits over the response into the logits ``generate`` sampled from."""

    def __init__(self, generation: GenerationSettings, eos_token_id: int | None):
        self.g = generation
        self.eos_token_id = eos_token_id

    def truncates(self) -> bool:
        return self.g.top_k != 0 or self.g.top_p < 1.0

    def needs_prefix(self) -> bool:
        """Whether a position's processing depends on the ids before it (the repetition penalty
        does; temperature, top-k and top-p read only the position's own logits)."""
        return self.g.repetition_penalty != 1.0

    def __call__(self, logits: torch.Tensor, batch: RolloutBatch, truncate: bool = True) -> torch.Tensor:
        """``logits``: float ``[B, R, V]`` predicting the response tokens. ``truncate=False`` leaves
        out top-k/top-p (for the reference model: see ``PPOLearner``). Tokens the rules exclude get
        the most negative finite value, not -inf, so that entropy's ``p * log p`` stays 0, not NaN."""
        if not self.needs_prefix():
            return self._fast(logits, truncate)
        # The ids generate had seen, and where the response starts in them.
        seq2seq = "decoder_input_ids" in batch.inputs
        ids = batch.inputs["decoder_input_ids" if seq2seq else "input_ids"]
        mask = batch.inputs["decoder_attention_mask" if seq2seq else "attention_mask"]
        start = batch.logits_start + 1
        processors = self.processors(start, (mask != 0).int().argmax(dim=1), truncate)
        steps = [processors(ids[:, :start + t], logits[:, t]) for t in range(logits.shape[1])]
        return torch.stack(steps, dim=1).clamp(min=torch.finfo(logits.dtype).min)

    def _fast(self, logits: torch.Tensor, truncate: bool) -> torch.Tensor:
        """No repetition penalty: no loop over positions. The min-new-tokens rule and temperature
        on the whole tensor, then top-k/top-p on all positions at once (the warpers read one row
        of logits at a time, whatever the row's position)."""
        # Out-of-place division: a new tensor that the EOS mask may write into.
        logits = logits / self.g.temperature
        floor = torch.finfo(logits.dtype).min
        if self.g.min_new_tokens and self.eos_token_id is not None:
            logits[:, :self.g.min_new_tokens, self.eos_token_id] = floor
        if truncate and self.truncates():
            rows = logits.reshape(-1, logits.shape[-1])
            no_ids = rows.new_zeros((rows.shape[0], 0), dtype=torch.long)
            for warper in self.warpers():
                rows = warper(no_ids, rows)
            logits = rows.reshape(logits.shape).clamp(min=floor)
        return logits

    def processors(self, prompt_length: int, padding_lengths: torch.Tensor, truncate: bool) -> LogitsProcessorList:
        """generate's processors for these settings, in generate's order. ``padding_lengths``: the
        left padding of each row, which generate's repetition penalty ignores."""
        g, out = self.g, LogitsProcessorList()
        if g.repetition_penalty != 1.0:
            out.append(RepetitionPenaltyLogitsProcessor(g.repetition_penalty, prompt_ignore_length=padding_lengths))
        if g.min_new_tokens > 0 and self.eos_token_id is not None:
            out.append(MinNewTokensLengthLogitsProcessor(prompt_length, g.min_new_tokens, self.eos_token_id,
                                                         device=padding_lengths.device))
        if g.temperature != 1.0:
            out.append(TemperatureLogitsWarper(g.temperature))
        if truncate:
            out.extend(self.warpers())
        return out

    def warpers(self) -> list:
        """The truncating warpers, top-k before top-p as generate applies them."""
        out = []
        if self.g.top_k != 0:
            out.append(TopKLogitsWarper(top_k=self.g.top_k, min_tokens_to_keep=1))
        if self.g.top_p < 1.0:
            out.append(TopPLogitsWarper(top_p=self.g.top_p, min_tokens_to_keep=1))
        return out
