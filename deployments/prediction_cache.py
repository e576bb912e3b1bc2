"""A small per-replica LRU cache of predictions, keyed by normalized text."""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


def normalize_text(text: str) -> str:
    """The cache key, and the text the model sees: NFC, whitespace runs collapsed.

    Case is kept: a user-supplied cased model may score "GOOD" and "good" differently.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


class PredictionCache(Generic[V]):
    """Least-recently-used mapping with a size limit; size 0 stores nothing."""

    def __init__(self, max_size: int) -> None:
        self._items: OrderedDict[str, V] = OrderedDict()
        self._max_size = max_size
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        if self._max_size == 0:
            return None
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: V) -> None:
        if self._max_size == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._max_size:
            self._items.popitem(last=False)

    def resize(self, max_size: int) -> None:
        self._max_size = max_size
        while len(self._items) > max_size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        return {"size": len(self._items), "max_size": self._max_size,
                "hits": self.hits, "misses": self.misses}
