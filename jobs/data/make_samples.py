"""Write the small sample files shipped in jobs/data (deterministic; run from the repo root).

Each file has the shape of the public dataset it stands in for, so the same configuration works
on the sample offline and on the real data from the hub. Hate-speech shapes use neutral
placeholder text: they exercise the pipeline, not a classifier.

    python jobs/data/make_samples.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def dialogsum_splits() -> None:
    """knkarthick/dialogsum: id, dialogue, summary, topic; the 160-row sample split 120/20/20."""
    rows = [json.loads(line) for line in (HERE / "dialogsum_sample.jsonl").read_text().splitlines()]
    for split, part in (("train", rows[:120]), ("validation", rows[120:140]), ("test", rows[140:])):
        write_jsonl(HERE / "dialogsum" / f"{split}.jsonl", part)


_OPENINGS = [
    "The meeting about the new project was", "When I called the office this morning they said",
    "My friend told me that the restaurant", "After the movie we went home and",
    "The manager wrote an email to the team saying", "Yesterday at the bank the clerk was",
    "I think the price of the ticket", "She said the train was late because",
    "On the phone he told me that you are", "Everyone at work knows that the report",
    "The bus driver looked at us and said", "Thanks for the coffee, but honestly the lunch",
]
_SCORES = ("profanity", "sexually_explicit", "identity_attack", "flirtation", "threat", "insult",
           "severe_toxicity", "toxicity")


def _scores(rng: random.Random, toxicity: float | None) -> dict:
    out = {name: round(rng.random() * 0.3, 4) for name in _SCORES}
    out["toxicity"] = toxicity
    return out


def real_toxicity_prompts() -> None:
    """allenai/real-toxicity-prompts: filename, begin, end, challenging, prompt{text, scores...},
    continuation{text, scores...}; one split (train)."""
    rng = random.Random(1)
    rows = []
    for i in range(96):
        text = f"{_OPENINGS[i % len(_OPENINGS)]} ({i})"
        toxicity = None if i % 23 == 5 else round(rng.random(), 4)  # the real data has gaps
        rows.append({
            "filename": f"sample-{i:04d}.txt", "begin": 0, "end": len(text),
            "challenging": i % 4 == 0,
            "prompt": {"text": text, **_scores(rng, toxicity)},
            "continuation": {"text": " it was a calm day with friendly people.",
                             **_scores(rng, round(rng.random() * 0.2, 4))},
        })
    write_jsonl(HERE / "real_toxicity_prompts.jsonl", rows)


def dialoconan() -> None:
    """DIALOCONAN: one row per turn (text, TARGET, dialogue_id, turn_id, type HS/CN, source),
    dialogues alternating a hate-speech turn (HS) and a counter-narrative (CN); placeholder text."""
    rng = random.Random(2)
    targets = ["GROUP_A", "GROUP_B", "GROUP_C", "GROUP_D"]
    rows = []
    for dialogue in range(40):
        target = targets[dialogue % len(targets)]
        for turn in range(2 * rng.randint(2, 4)):
            kind = "HS" if turn % 2 == 0 else "CN"
            text = (f"Placeholder statement against {target} number {dialogue}.{turn}."
                    if kind == "HS" else
                    f"Placeholder counter-narrative with facts about {target} number {dialogue}.{turn}.")
            rows.append({"text": text, "TARGET": target, "dialogue_id": dialogue, "turn_id": turn,
                         "type": kind, "source": "placeholder"})
    # Turns out of order, as a file may hold them: the source sorts them by turn_id.
    rng.shuffle(rows)
    write_jsonl(HERE / "dialoconan_sample.jsonl", rows)


def user_file() -> None:
    """The ``files`` source: any text column, here a CSV with a reply column."""
    import csv

    with (HERE / "prompts_sample.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question", "answer"])
        writer.writeheader()
        for i, opening in enumerate(_OPENINGS * 4):
            writer.writerow({"id": i, "question": f"{opening} ({i})?",
                             "answer": "Thank you, that is kind of you to say."})


def detox_world() -> None:
    """Prompts of the offline detox world (``rlaf_ray.world``): one to three dialogue turns of the
    grammar, toxic at its rate, ending where the next speaker starts (the ``files`` shape, column
    ``text``), with a neutral reply of the grammar in ``reply`` (the supervised baseline's target)."""
    from rlaf_ray import world

    rng = random.Random(3)
    # Seeds apart from those the tiny models learn from (0-12): the prompts are new to them.
    for split, n, seed in (("train", 400, 30), ("validation", 40, 31), ("test", 60, 32)):
        rows = []
        for i, dialogue in enumerate(world.sample_dialogues(n, seed=seed)):
            rows.append({"id": f"{split}-{i}", "text": dialogue.prompt,
                         "reply": world.sample_turn(rng, toxic=False)})
        write_jsonl(HERE / "detox_world" / f"{split}.jsonl", rows)


if __name__ == "__main__":
    detox_world()
    dialogsum_splits()
    real_toxicity_prompts()
    dialoconan()
    user_file()
