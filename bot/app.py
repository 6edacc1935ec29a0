"""Composition root: build the engine, session factory, catalogue and community once."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot.community import Community, load_community
from bot.db import make_engine, make_session_factory
from bot.settings import Settings
from routing.catalogue import Catalogue, load_catalogue
from routing.roster import Roster, load_roster


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class App:
    """Everything a process needs, built once and passed down explicitly."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker
    catalogue: Catalogue
    community: Community
    roster: Roster
    clock: Callable[[], datetime] = utc_now


def build_app(settings: Settings | None = None) -> App:
    """Build the application objects from settings (the environment by default)."""
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    catalogue = load_catalogue(settings.catalogue_path)
    community = load_community()
    roster = load_roster(settings.catalogue_path.parent / "roster.yml", catalogue=catalogue,
                         buildings=[building.number for building in community.buildings])
    return App(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        catalogue=catalogue,
        community=community,
        roster=roster,
    )


@lru_cache(maxsize=1)
def shared_app() -> App:
    """Return the process-wide App, built on first use (never at import time)."""
    return build_app()
