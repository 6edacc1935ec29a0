"""Shared database fixtures.

Backends: a SQLite file under pytest's tmp dir, and PostgreSQL at LINLI_TEST_PG_URL
(default postgresql://postgres@127.0.0.1:5432/test). The PostgreSQL variants are
skipped, with the reason, when that server cannot be reached. Each backend's schema is
built once per run by the real Alembic migrations; PostgreSQL runs in a private schema
(linli_test_<pid>) that is dropped at the end, so runs never see each other's rows.

Fixtures (add new ones below, keep each documented):
  db_session        Session on both backends; all its work is rolled back after the test,
                    even if the code under test calls commit().
  db_session_factory  sessionmaker behind db_session, for code that opens its own
                    sessions (session_scope); same rollback guarantee.
  sqlite_engine     session-wide Engine on the migrated SQLite file.
  postgres_engine   session-wide Engine on the migrated PostgreSQL schema (skips if down).
  db_engine         the engine of the current backend param ("sqlite" / "postgresql").
  catalogue, roster the shipped data/catalogue.yml and data/roster.yml, loaded once.
Tests that need real commits (e.g. concurrency) use an engine fixture directly and must
delete what they wrote; they should use a day of their own for ticket numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.community import load_community
from bot.db import make_engine
from bot.migrate import upgrade
from routing.catalogue import Catalogue, default_catalogue
from routing.roster import Roster, load_roster

PG_URL = os.environ.get("LINLI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgres))


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Engine on a SQLite file migrated to head."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'linli-test.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    """Engine on a private PostgreSQL schema migrated to head; skip if the server is down."""
    admin = create_engine(PG_URL, future=True, connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        admin.dispose()
        first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.skip(
            f"PostgreSQL not reachable at {PG_URL} ({first_line}); start it or set "
            f"LINLI_TEST_PG_URL"
        )
    schema = f"linli_test_{os.getpid()}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    # search_path in the URL reaches every connection, Alembic's included.
    separator = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    engine: Engine | None = None
    try:
        upgrade(url)
        engine = make_engine(url)
        yield engine
    finally:
        if engine is not None:
            engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


_ENGINE_FIXTURES = {"sqlite": "sqlite_engine", "postgresql": "postgres_engine"}


@pytest.fixture(params=BACKENDS)
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """The migrated engine of each backend in turn."""
    return request.getfixturevalue(_ENGINE_FIXTURES[request.param])


@pytest.fixture
def db_session_factory(db_engine: Engine) -> Iterator[sessionmaker]:
    """A sessionmaker whose sessions share one connection rolled back after the test.

    Hand it to code that opens its own sessions (e.g. via bot.db.session_scope). Each
    session works in a SAVEPOINT that is reopened whenever it commits or rolls back, so
    commits are visible to the next session yet never reach the database. Use the
    sessions one after another, not at the same time.
    """
    connection = db_engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, future=True, expire_on_commit=False)
    savepoint = connection.begin_nested()

    @event.listens_for(factory, "after_transaction_end")
    def _reopen_savepoint(_session: Session, _transaction: object) -> None:
        nonlocal savepoint
        if not savepoint.is_active:
            savepoint = connection.begin_nested()

    try:
        yield factory
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def db_session(db_session_factory: sessionmaker) -> Iterator[Session]:
    """A Session on each backend whose work, commits included, is rolled back afterwards."""
    session: Session = db_session_factory()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    """The shipped dispatch catalogue, data/catalogue.yml."""
    return default_catalogue()


@pytest.fixture(scope="session")
def roster(catalogue: Catalogue) -> Roster:
    """The shipped roster, data/roster.yml, checked against the demo community's buildings."""
    return load_roster(catalogue=catalogue,
                       buildings=[building.number for building in load_community().buildings])
