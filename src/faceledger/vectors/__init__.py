"""Vector stores: derived, searchable copies of the templates, chosen by configuration.

Nothing outside this package imports faiss (or any other vector engine).
"""

from __future__ import annotations

from pathlib import Path

from faceledger.errors import ConfigurationError
from faceledger.vectors.base import TemplateSource, VectorStore

STORES = ("faiss", "pgvector", "milvus")


def open_vector_store(name: str, *, source: TemplateSource, dim: int, directory: Path, cipher=None,
                      integrity_key: bytes | None = None, ivf_threshold: int = 200_000,
                      probe_fraction: float | None = None, sync_interval: float = 0.0,
                      plaintext_accepted: bool = False) -> VectorStore:
    """The vector store the configuration names: ``faiss`` (the embedded default), ``pgvector`` (in the PostgreSQL
    database), ``milvus`` or ``milvus://host:port``.

    ``integrity_key`` (a per-deployment secret kept outside ``directory``) authenticates the
    persisted index files when templates are not encrypted.
    """
    kind = name.split(":", 1)[0].lower()
    if kind == "faiss":
        from faceledger.vectors.faiss_store import FaissVectorStore

        return FaissVectorStore(source, dim, directory, cipher=cipher, integrity_key=integrity_key,
                                ivf_threshold=ivf_threshold, probe_fraction=probe_fraction,
                                sync_interval=sync_interval)
    if kind in ("pgvector", "milvus") and cipher is not None and cipher.enabled and not plaintext_accepted:
        raise ConfigurationError(
            f"{kind} searches plaintext vectors and cannot use the template key: its copy of every template "
            "would be unencrypted. Unset FACELEDGER_TEMPLATE_KEY, use the faiss store, or set "
            "FACELEDGER_PLAINTEXT_VECTORS_ACCEPTED=true to accept that (see the README)", store=kind)
    if kind == "pgvector":
        from faceledger.vectors.pgvector_store import PgVectorStore

        # "pgvector" (IVFFlat, chosen by measurement at a million faces: README), "pgvector:ivfflat", "pgvector:hnsw"
        index = name.split(":", 1)[1] if ":" in name else "ivfflat"
        return PgVectorStore(source, dim, source.db, index=index, probe_fraction=probe_fraction)
    if kind == "milvus":  # "milvus" (127.0.0.1:19530) or "milvus://host:port"
        from faceledger.vectors.milvus_store import MilvusVectorStore

        uri = name.split(":", 1)[1] if ":" in name else "//127.0.0.1:19530"
        return MilvusVectorStore(source, dim, uri, source.deployment_id(), sync_interval=sync_interval)
    raise ConfigurationError(f"unknown vector store '{name}'; available: {', '.join(STORES)}", store=name)


__all__ = ["STORES", "TemplateSource", "VectorStore", "open_vector_store"]
