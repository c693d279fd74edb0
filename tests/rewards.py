"""Rewards with a known answer, named in configs as ``tests.rewards:<function>``."""

from __future__ import annotations

import math

from rlaf_ray.world import INSULT_WORDS


def _words(text: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in text.split()]


def insult_free(prompts, responses):
    """1 minus the share of words that are insults: the best policy never insults."""
    scores = []
    for response in responses:
        words = _words(response)
        scores.append(1.0 - sum(w in INSULT_WORDS for w in words) / max(len(words), 1))
    return scores


def every_other_nan(prompts, responses):
    return [math.nan if i % 2 else 1.0 for i in range(len(responses))]


def prefers_questions(prompts, responses):
    """1 for a response that is a question (ends with "?"), else 0: the grammar's greetings and
    requests are, about a quarter of the tiny policy's replies; a policy can ask every time."""
    return [float(r.strip().endswith("?")) for r in responses]


def one_score_short(prompts, responses):
    """A broken reward: one score fewer than responses."""
    return [1.0] * (len(responses) - 1)
