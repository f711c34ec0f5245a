"""Physician ratings: what a rating says, and which ratings are of the same case (pure)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Rating:
    """One physician's score of one answer under a rubric."""

    item_id: str
    dataset: str
    dimension: str
    question: str
    reference: str
    key_points: tuple[str, ...]
    answer: str
    score: float
    rater_id: str
    rubric_id: str = ""
    criteria: tuple[tuple[str, float], ...] = ()
    """(criterion name, score on the rubric's scale) per criterion, or none."""


def rating_case(rubric_id: str, item_id: str, question: str, reference: str, answer: str) -> str:
    """Ratings of the same answer to the same item (by any physician) share a case id."""
    material = "\0".join((rubric_id, item_id, question, reference, answer))
    return hashlib.sha256(material.encode()).hexdigest()[:24]
