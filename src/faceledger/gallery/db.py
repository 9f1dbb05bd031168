"""Opening the database: any SQLAlchemy URL; SQLite (WAL, one file under HOME) by default.

The schema is created and upgraded by Alembic on open, so every install runs the same
migrations from the first version on.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from faceledger.config import default_url  # noqa: F401  (re-exported: it used to live here)

MIGRATIONS = str(Path(__file__).with_name("migrations"))
BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another writer


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged enrolment survives a crash
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # erased templates are overwritten, not left in free pages
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)  # templates and audit records: readable by the service's user only (SQLite gives
        # its -wal and -shm files the same permissions)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def advisory_xact_lock(s: Session, key: int) -> None:
    """On PostgreSQL, take the transaction-level advisory lock ``key`` (held to commit or rollback): writers on every
    host queue there. Nothing on SQLite, whose write lock already serialises writers."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
