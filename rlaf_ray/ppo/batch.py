"""A rollout as model inputs: prompt and response ids padded into one batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl.trainer.utils import pad


@dataclass
class RolloutBatch:
    """What the model reads (``inputs``) and which of its outputs score the response.

    Causal LM: the left-padded prompt and right-padded response as one ``[B, P + R]`` sequence;
    the logits at positions ``P - 1 .. P + R - 2`` predict the response. Seq2seq LM: the prompt
    is the encoder input; the decoder reads ``[start] + response`` and its logits at positions
    ``0 .. R - 1`` predict the response.
    """

    inputs: dict[str, torch.Tensor]
    response_ids: torch.Tensor  # [B, R]
    response_mask: torch.Tensor  # [B, R], float
    logits_start: int

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        return RolloutBatch({k: v[index] for k, v in self.inputs.items()}, self.response_ids[index],
                            self.response_mask[index], self.logits_start)


def _pad_rows(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids padded to the longest row, and the 0/1 mask of real tokens."""
    ids = [torch.tensor(r, dtype=torch.long) for r in rows]
    return (pad(ids, padding_value=pad_id, padding_side=side),
            pad([torch.ones_like(t) for t in ids], padding_value=0, padding_side=side))


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
            device: torch.device | str = "cpu", decoder_start_token_id: int | None = None) -> RolloutBatch:
    """A rollout as model inputs; ``decoder_start_token_id`` given: the seq2seq layout."""
    responses, response_mask = _pad_rows(response_ids, pad_id, "right")
    if decoder_start_token_id is not None:
        prompts, prompt_mask = _pad_rows(prompt_ids, pad_id, "right")
        start = torch.full((len(prompt_ids), 1), decoder_start_token_id, dtype=torch.long)
        inputs = {"input_ids": prompts, "attention_mask": prompt_mask,
                  "decoder_input_ids": torch.cat([start, responses], dim=1),
                  "decoder_attention_mask": torch.cat([torch.ones_like(start), response_mask], dim=1)}
        logits_start = 0
    else:
        prompts, prompt_mask = _pad_rows(prompt_ids, pad_id, "left")
        attention = torch.cat([prompt_mask, response_mask], dim=1)
        # Positions count real tokens only, as in generation from a left-padded batch.
        inputs = {"input_ids": torch.cat([prompts, responses], dim=1), "attention_mask": attention,
                  "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0)}
        logits_start = prompts.shape[1] - 1
    return RolloutBatch({k: v.to(device) for k, v in inputs.items()}, responses.to(device),
                        response_mask.float().to(device), logits_start)
