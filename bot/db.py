"""Engine and session helpers for SQLite (single host) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from bot.settings import Secret

SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str | Secret, *, echo: bool = False) -> Engine:
    """Create an engine; for SQLite also create the file's folder and set the pragmas."""
    raw = url.reveal() if isinstance(url, Secret) else url
    parsed = make_url(raw)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(raw, future=True, echo=echo, pool_pre_ping=True)

    database = parsed.database or ""
    on_disk = bool(database) and database != ":memory:" and not database.startswith("file:")
    if on_disk:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        raw,
        future=True,
        echo=echo,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        # SQLAlchemy 1.4 gives file databases a NullPool: a new connection, its pragmas and
        # a WAL checkpoint on every transaction (measured ~3.3 ms). Keep connections instead,
        # as SQLAlchemy 2.0 does by default.
        **({"poolclass": QueuePool, "pool_size": 5, "max_overflow": 10} if on_disk else {}),
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own implicit BEGIN breaks SAVEPOINT and delays the write lock;
    # switch it off and let _on_sqlite_begin start every transaction explicitly.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


READ_ONLY = "linli_read_only"


def _on_sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock up front: a transaction that reads and then writes
    # (e.g. ticket numbering) can never fail half-way with SQLITE_BUSY on lock upgrade;
    # waiting writers queue for up to busy_timeout instead. Read-only work (read_scope)
    # takes no lock at all: in WAL mode readers never wait for writers.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker:
    """Return a factory of 2.0-style sessions bound to the engine."""
    return sessionmaker(bind=engine, future=True, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any error."""
    session: Session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(factory: sessionmaker) -> Iterator[Session]:
    """Yield a session for reading only; it never takes SQLite's write lock.

    Use it for lists and lookups that many people refresh at once (the agents' queue,
    session checks): under IMMEDIATE they would queue behind every writer. Whatever is
    changed in it is rolled back.
    """
    bind = factory.kw.get("bind")
    session: Session = (factory(bind=bind.execution_options(**{READ_ONLY: True}))
                        if isinstance(bind, Engine) else factory())
    try:
        yield session
    finally:
        session.rollback()
        session.close()
