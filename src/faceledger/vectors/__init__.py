"""Vector stores: derived, searchable copies of the templates, chosen by configuration.

Nothing outside this package imports faiss (or any other vector engine).
"""

from __future__ import annotations

from pathlib import Path

from faceledger.errors import ConfigurationError
from faceledger.vectors.base import TemplateSource, VectorStore

STORES = ("faiss",)


def open_vector_store(name: str, *, source: TemplateSource, dim: int, directory: Path, cipher=None,
                      integrity_key: bytes | None = None, ivf_threshold: int = 200_000,
                      probe_fraction: float = 0.125) -> VectorStore:
    """The vector store the configuration names (``faiss``, the embedded default).

    ``integrity_key`` (a per-deployment secret kept outside ``directory``) authenticates the
    persisted index files when templates are not encrypted.
    """
    kind = name.split(":", 1)[0].lower()
    if kind == "faiss":
        from faceledger.vectors.faiss_store import FaissVectorStore

        return FaissVectorStore(source, dim, directory, cipher=cipher, integrity_key=integrity_key,
                                ivf_threshold=ivf_threshold, probe_fraction=probe_fraction)
    raise ConfigurationError(f"unknown vector store '{name}'; available: {', '.join(STORES)}", store=name)


__all__ = ["STORES", "TemplateSource", "VectorStore", "open_vector_store"]
