"""Shared fixtures. Tests that need real faces read them from the data folder setting.

Where that folder is missing they skip with the reason, except when FACELEDGER_REQUIRE_DATA=1 (set by
.ci/run), where a missing folder fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from faceledger.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    configured = os.environ.get("FACELEDGER_DATA_DIR")
    return Path(configured) if configured else (ROOT / ".." / "shared" / "data").resolve()


DATA_DIR = _data_dir()
# one embedding cache for the whole run (subprocesses inherit it): LFW is embedded once, not once per test;
# removed at the end unless the caller chose the folder
_OWN_CACHE = "FACELEDGER_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["FACELEDGER_CACHE"] = tempfile.mkdtemp(prefix="faceledger-test-cache-")
# the project's own switch (set by .ci/run): the face data must be there, a missing folder fails the run
REQUIRE_DATA = os.environ.get("FACELEDGER_REQUIRE_DATA", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _OWN_CACHE:
        shutil.rmtree(os.environ["FACELEDGER_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "README.md").is_file() and not (DATA_DIR / "lfw").is_dir():
        message = f"face data folder not found at {DATA_DIR} (set FACELEDGER_DATA_DIR)"
        if REQUIRE_DATA:
            pytest.fail(f"{message}: FACELEDGER_REQUIRE_DATA=1 demands it", pytrace=False)
        pytest.skip(message)
    return DATA_DIR


@pytest.fixture(scope="session")
def people(data_dir: Path) -> Path:
    return data_dir / "people"


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), data_dir=DATA_DIR, cache=Path(os.environ["FACELEDGER_CACHE"]))


@pytest.fixture(scope="session")
def engine(settings):
    from faceledger.pipeline.engine import FaceEngine

    return FaceEngine(settings, "fast")


@pytest.fixture(scope="session")
def accurate_engine(settings):
    from faceledger.pipeline.engine import FaceEngine

    return FaceEngine(settings, "accurate")


@pytest.fixture(scope="session")
def postgres():
    """The embedded PostgreSQL server of this test run (started on first use, removed at exit)."""
    from backends import Postgres

    return Postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Each backend's URL for one test: a SQLite file under the test's folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'faceledger.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def milvus():
    """The Milvus server of this test run (started on first use, stopped at exit)."""
    from backends import Milvus

    return Milvus()


@pytest.fixture(params=["sqlite", "postgresql", "pgvector", "milvus"])
def backend(request, tmp_path) -> dict:
    """Each backend's settings for one test (SQLite+FAISS, PostgreSQL+FAISS, PostgreSQL+pgvector, PostgreSQL+Milvus)."""
    from backends import backend_settings

    return backend_settings(request.param, tmp_path / "home", lambda: request.getfixturevalue("postgres"),
                            lambda: request.getfixturevalue("milvus"))
