"""Storage health: a full disk named as such (STORAGE_FULL, never a generic failure), and the check that
the database can take a write now (the service's readiness)."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from faceledger.errors import FaceledgerError, StorageFull, StorageUnavailable

MIN_FREE_BYTES = 16 * 1024 * 1024  # below this much free space, the service is not ready for writes


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    return "database or disk is full" in str(exc)


def storage_error(exc: BaseException) -> StorageFull | None:
    """A ``StorageFull`` when ``exc`` or what caused it (SQLAlchemy's ``orig``, ``__cause__``,
    ``__context__``) says the disk is full, else None. It keeps ``exc``'s ``audited`` mark, so that a refusal
    the service already recorded is not recorded again."""
    if isinstance(exc, FaceledgerError):
        return None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _is_full(e):
            full = StorageFull("the disk that holds faceledger's data is full; free space and retry")
            full.audited = getattr(exc, "audited", False)
            return full
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return None


def check_writable(engine: Engine, home: Path, *, busy_timeout_ms: int = 2000) -> None:
    """Refuse (StorageFull, StorageUnavailable) unless the database can take a write now: enough free space
    where the data lives, and on SQLite the write lock (``BEGIN IMMEDIATE; ROLLBACK``: nothing is written)."""
    paths = [Path(home)]
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        paths.append(Path(url.database).parent)
    for path in (p for p in paths if p.exists()):
        if shutil.disk_usage(path).free < MIN_FREE_BYTES:
            raise StorageFull(f"less than {MIN_FREE_BYTES // 2**20} MiB free where faceledger keeps its data",
                              min_free_bytes=MIN_FREE_BYTES)
    try:
        with engine.connect() as connection:
            if engine.dialect.name != "sqlite":
                connection.exec_driver_sql("SELECT 1")
                return
            waited = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                connection.exec_driver_sql("ROLLBACK")
            finally:
                connection.exec_driver_sql(f"PRAGMA busy_timeout={int(waited)}")
    except Exception as exc:
        full = storage_error(exc)
        if full is not None:
            raise full from exc
        raise StorageUnavailable(f"the database cannot take a write: {exc.__class__.__name__}") from exc
