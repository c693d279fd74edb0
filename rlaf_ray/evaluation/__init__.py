"""Measuring a model: the toxicity meter (RealToxicityPrompts protocol) and before/after reports."""

from pathlib import Path

# Directory of the `evaluate` toxicity measurement: ``evaluate.load(TOXICITY_MODULE, classifier)``.
TOXICITY_MODULE = str(Path(__file__).with_name("toxicity"))
