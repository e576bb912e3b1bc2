"""Texts of several requests sent as one list, and the answers handed back per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def flatten(groups: Sequence[Sequence[str]]) -> list[str]:
    return [text for group in groups for text in group]


def count_texts(groups: Sequence[Sequence[str]]) -> int:
    return sum(len(group) for group in groups)


def regroup(answers: Sequence[T], groups: Sequence[Sequence[str]]) -> list[list[T]]:
    """Split answers to ``flatten(groups)`` back into one list per group, in order."""
    if len(answers) != count_texts(groups):
        raise RuntimeError(f"{len(answers)} answers for {count_texts(groups)} texts")
    out, start = [], 0
    for group in groups:
        out.append(list(answers[start : start + len(group)]))
        start += len(group)
    return out
