"""What the gallery needs from a vector store, whatever engine holds the templates.

The SQL store is the source of truth; a vector store holds a derived copy of each
collection's templates for search. It reads the truth through ``TemplateSource`` (the
SQL store implements it) to rebuild or reconcile itself at start-up and on demand.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np


class TemplateSource(Protocol):
    """Read access to the templates of record (implemented by the SQL store)."""

    def collection_ids(self) -> list[int]: ...

    def face_ids(self, collection_id: int) -> np.ndarray: ...

    def all_vectors(self, collection_id: int) -> tuple[np.ndarray, np.ndarray]: ...

    def feed_head(self) -> int:
        """The last change feed number committed."""

    def changes_since(self, seq: int, limit: int = 10_000) -> list[tuple[int, int, int | None, str]]:
        """(seq, collection id, face id, op) after ``seq`` in commit order; op: "add", "remove", "drop"."""

    def existing_vectors(self, collection_id: int, face_ids) -> tuple[np.ndarray, np.ndarray]:
        """(ids, templates) of those of ``face_ids`` the collection still holds, in one read."""


class VectorStore(Protocol):
    """Templates by face id, searchable within one collection (the filter every search carries)."""

    name: str
    dim: int

    def startup(self) -> dict[int, dict]:
        """Load every collection and reconcile it with the source; returns what was repaired per collection id."""

    def load(self, collection_id: int) -> None:
        """Make sure the collection is loaded (before a write, so new faces are added exactly once)."""

    def sync(self, *, force: bool = False) -> int:
        """Catch up with changes made by other processes (the SQL change feed); returns the changes read."""

    def add(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def bulk_load(self) -> AbstractContextManager[None]:
        """A block of many ``add`` calls: the store may defer index work until the block ends (searches inside it
        stay correct, perhaps slower)."""

    def remove(self, collection_id: int, ids: np.ndarray) -> None: ...

    def drop(self, collection_id: int) -> None:
        """Forget a deleted collection, persisted copies included."""

    def search(self, collection_id: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (len(vectors), k') with k' <= k; id -1 pads a short answer."""

    def count(self, collection_id: int) -> int: ...

    def contains(self, collection_id: int, ids: np.ndarray) -> np.ndarray:
        """A boolean per id: whether the store holds it (erasure checks)."""

    def check(self, collection_id: int) -> dict:
        """Reload from persistence and reconcile with the source; returns what was repaired."""

    def rebuild(self, collection_id: int) -> dict:
        """Rebuild from the source alone."""

    def reset(self) -> None:
        """Forget everything held and persisted (after templates were re-encrypted)."""

    def erasure_pending(self) -> list[str]:
        """What still holds erased templates after ``remove`` (for erasure receipts); [] when nothing does."""

    def health(self) -> dict: ...

    def close(self) -> None:
        """Persist what changed and release resources."""
