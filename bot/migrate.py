"""Apply the Alembic migrations in bot/migrations from code, without an alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bot.db import make_engine
from bot.settings import Secret

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | Secret) -> Config:
    """Return an Alembic Config that targets this database and bot/migrations."""
    config = Config()
    # ConfigParser treats % as interpolation; escape it in the path.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    url = database_url.reveal() if isinstance(database_url, Secret) else database_url
    # Passed as an attribute, not an option: URLs may hold %-escapes that ConfigParser mangles.
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str | Secret, revision: str = "head") -> None:
    """Upgrade the database schema to `revision` (the latest by default)."""
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    """Return the newest revision id in bot/migrations."""
    config = alembic_config("sqlite://")
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(database_url: str | Secret) -> str | None:
    """Return the revision the database is at, or None if it was never migrated."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
