"""Shared pytest fixtures."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backends import BACKENDS
from feedserver import FeedServer
from pgserver import PostgresServer

from aggregator.store.database import migrations


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A started local HTTP server (see tests/feedserver.py), stopped after the test."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def data_dir() -> Path:
    """Directory of hand-written fixture feeds (listed in tests/data/README.md)."""
    return Path(__file__).parent / "data"


@pytest.fixture
def older_schema(tmp_path: Path) -> Callable[[int], tuple[Path, Path]]:
    """make(version) -> (database path, migrations folder holding only the migrations up
    to `version`): open the database with that folder to get an older schema, then with
    the real one to test the upgrade."""

    def make(version: int) -> tuple[Path, Path]:
        folder = tmp_path / f"migrations_{version}"
        folder.mkdir()
        for number, path in migrations():
            if number <= version:
                shutil.copy(path, folder)
        return tmp_path / f"schema_{version}.db", folder

    return make


@pytest.fixture
def rig(tmp_path: Path, feed_server: FeedServer):
    """A daemon rig (tests/test_daemon.py: Rig): served feeds, a feeds.yaml, the database,
    the daemon processes and their HTTP port, cleaned up after the test."""
    from test_daemon import Rig

    r = Rig(tmp_path, feed_server)
    try:
        yield r
    finally:
        r.close()


# PostgreSQL (tests/pgserver.py): one throwaway server per test session, a database per test.
# Never skipped: without PostgreSQL the tests that need it fail, saying how to install it.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's started PostgreSQL server, stopped at the end whatever happened (a
    failed start is reported to every test that asks for it)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh empty database (postgresql://postgres@/test_N?host=...), dropped
    after the test so a long session does not fill the disk (an empty one takes 7 MB)."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


# The two store backends. A test that takes `db_target` runs once on each: an SQLite file
# in its tmp_path, then a fresh PostgreSQL database (--db / Store.open take either).


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where the test's database lives: a file path (SQLite) or a postgresql:// URL."""
    if backend == "sqlite":
        return tmp_path / "agg.db"
    return request.getfixturevalue("postgres_url")


# #17 part 2 (the write path on PostgreSQL): the daemon rig on each backend.


@pytest.fixture
def backend_rig(tmp_path: Path, feed_server: FeedServer, db_target: Path | str):
    """`rig` (tests/test_daemon.py: Rig) with its database on `db_target`: the test runs
    once on an SQLite file, once on a fresh PostgreSQL database."""
    from test_daemon import Rig

    r = Rig(tmp_path, feed_server, db_target)
    try:
        yield r
    finally:
        r.close()
