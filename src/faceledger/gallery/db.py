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


def write_lock(s: Session, key: int | None) -> None:
    """Serialise a read-then-write transaction across processes, taken before its first read.

    On PostgreSQL, the transaction-level advisory lock ``key`` (None: none, where row locks suffice and
    ids are never reused). On SQLite, ``BEGIN IMMEDIATE``
    (the database's write lock, now): Python's sqlite3 otherwise runs a SELECT outside any
    transaction and begins one only at the first write, so two processes could both read the
    same last row and write the same next one. The session must not have run a statement yet.
    """
    if s.get_bind().dialect.name == "sqlite":
        s.connection().exec_driver_sql("BEGIN IMMEDIATE")
    elif key is not None:
        advisory_xact_lock(s, key)


def upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class ProcessLock:
    """A lock one process of a deployment holds for as long as it runs (the one that resumes live streams after a
    restart, so that several workers or hosts never watch the same camera twice). On PostgreSQL a session-level
    advisory lock on a connection kept open (every host shares it); on SQLite a file lock beside the database (the
    processes of one host)."""

    def __init__(self, engine: Engine, key: int, lock_file) -> None:
        self.engine, self.key, self.lock_file = engine, key, lock_file
        self._conn = None
        self._fd = None

    def acquire(self) -> bool:
        """True when this process now holds the lock (never blocks)."""
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        import fcntl
        import os

        from pathlib import Path

        Path(self.lock_file).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            finally:
                self._conn.close()
                self._conn = None
        if self._fd is not None:
            import os

            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
