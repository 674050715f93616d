"""Classification. PLACEHOLDER: the triage issue (#8) replaces this with the lexicon and trained classifiers.

Contract every classifier keeps: ``classify(texts)`` takes a batch of normalised texts and returns one
:class:`Classification` per text, in order. Batches, because vectorising a batch is where speed is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Classification:
    category: str | None
    confidence: float


class Classifier(Protocol):
    name: str

    def classify(self, texts: Sequence[str]) -> list[Classification]: ...


class PlaceholderClassifier:
    """Knows no categories: every report is left for a person (confidence 0)."""

    name = "placeholder"

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        return [Classification(None, 0.0) for _ in texts]


def load_classifier(model_path: str | None = None) -> Classifier:
    return PlaceholderClassifier()
