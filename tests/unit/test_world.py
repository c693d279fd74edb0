"""The ground-truth world: the recognizer accepts exactly what the grammar writes; toxicity is exact."""

from __future__ import annotations

import random

import pytest

from rlaf_ray import world


def test_every_sampled_turn_is_grammatical_and_toxic_exactly_when_it_holds_an_insult():
    rng = random.Random(0)
    for toxic in (False, True) * 1000:
        turn = world.sample_turn(rng, toxic)
        assert world.is_grammatical(turn), turn
        assert world.is_toxic(turn) == toxic, turn


def test_toxic_rate_of_replies_is_the_markov_chains():
    # Replies follow 1-3 context turns: between the first turn's rate (0.2) and the stationary
    # rate 0.2 / 0.7 = 0.286; over 20000 dialogues the binomial spread is 0.003.
    replies = [d.reply for d in world.sample_dialogues(20000, seed=5)]
    rate = sum(map(world.is_toxic, replies)) / len(replies)
    assert 0.24 < rate < 0.286
    # and toxicity begets toxicity: replies to a toxic turn are toxic far more often
    dialogues = world.sample_dialogues(20000, seed=6)
    after_toxic = [world.is_toxic(d.reply) for d in dialogues if world.is_toxic(d.context[-1])]
    after_neutral = [world.is_toxic(d.reply) for d in dialogues if not world.is_toxic(d.context[-1])]
    assert sum(after_toxic) / len(after_toxic) > 0.45 > 0.25 > sum(after_neutral) / len(after_neutral)


@pytest.mark.parametrize("text", [
    "",                                            # nothing
    "Could you send the report",                   # no end
    "could you send the report?",                  # no capital
    "Could you send the the report?",              # a repeated word
    "Could you send the report.",                  # the wrong end for a question
    "Hi, how are you today? Hi.",                  # two turns
    "You are so stupid",                           # an insult without its end
    "Could you send report?",                      # a missing article
    "Could you send the report, idiot?",           # a vocative out of the grammar
    "Could you send the report?\n#Person2#: Hi.",  # the next speaker's turn too
])
def test_broken_turns_are_not_grammatical(text):
    assert not world.is_grammatical(text)


def test_grammatical_turns_with_and_without_an_insult():
    assert world.is_grammatical(" Could you send the report tomorrow, you idiot?\n")  # surrounding space ignored
    assert world.is_grammatical("Anna said the budget is clear.")
    assert world.is_grammatical("I am going to have lunch.")
    assert world.is_toxic("what an IDIOT") and not world.is_toxic("idiotic ideas")  # whole words, any case


def test_dialogues_are_seeded_and_prompts_end_with_the_next_speaker():
    first, again = world.sample_dialogues(50, seed=3), world.sample_dialogues(50, seed=3)
    assert first == again
    for d in first:
        turns = d.prompt.split("\n")
        assert len(turns) == len(d.context) + 1
        assert turns[-1] == world.SPEAKERS[len(d.context) % 2] + ":"
        assert d.reply_text == " " + d.reply


def test_as_written_gives_turns_after_a_space_or_with_slips_repeatably():
    turns = [d.reply for d in world.sample_dialogues(400, seed=5)]
    written = world.as_written(turns, seed=1)
    assert written == world.as_written(turns, seed=1) and written != world.as_written(turns, seed=2)
    spaced = sum(w.startswith(" ") for w in written) / len(written)
    slipped = sum(w.strip() != t for w, t in zip(written, turns)) / len(written)
    assert 0.4 < spaced < 0.6 and 0.3 < slipped < 0.6  # half after a space; about half with a slip
