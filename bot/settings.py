"""Runtime settings read from the environment, validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_PATH = REPO_ROOT / "var" / "linli.db"
DEFAULT_CATALOGUE_PATH = REPO_ROOT / "data" / "catalogue.yml"
TIMEZONE = "Asia/Shanghai"

_DATABASE_SCHEMES = ("sqlite", "postgresql")


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message says how to fix each."""


class Secret:
    """Hold a sensitive string so that printing or logging it shows only asterisks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the real value; call only where it is handed to a client library."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return "********" if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def default_database_url() -> str:
    """Return the SQLite URL used when DATABASE_URL is unset."""
    return f"sqlite:///{DEFAULT_DATABASE_PATH}"


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by asterisks, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


@dataclass(frozen=True)
class Settings:
    database_url: Secret = field(default_factory=lambda: Secret(default_database_url()))
    host: str = "127.0.0.1"
    port: int = 8000
    rasa_url: str = "http://127.0.0.1:5005"
    actions_port: int = 5055
    catalogue_path: Path = DEFAULT_CATALOGUE_PATH
    timezone: str = TIMEZONE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build Settings from environment variables, reporting every bad one at once."""
        problems: list[str] = []

        database_url = environ.get("DATABASE_URL", "").strip() or default_database_url()
        scheme = database_url.split(":", 1)[0].split("+", 1)[0]
        if scheme == "postgres":
            database_url = "postgresql" + database_url[len("postgres") :]
        elif scheme not in _DATABASE_SCHEMES:
            problems.append(
                f"DATABASE_URL must start with sqlite:/// or postgresql://, got "
                f"{redact_url(database_url)!r}; e.g. DATABASE_URL=sqlite:////srv/linli/linli.db"
            )

        host = environ.get("LINLI_HOST", "").strip() or "127.0.0.1"
        port = _port(environ, "LINLI_PORT", 8000, problems)
        actions_port = _port(environ, "ACTIONS_PORT", 5055, problems)

        rasa_url = (environ.get("RASA_URL", "").strip() or "http://127.0.0.1:5005").rstrip("/")
        if urlsplit(rasa_url).scheme not in ("http", "https") or not urlsplit(rasa_url).netloc:
            problems.append(
                f"RASA_URL must be an http(s) URL, got {rasa_url!r}; "
                f"e.g. RASA_URL=http://127.0.0.1:5005"
            )

        catalogue_path = Path(environ.get("LINLI_CATALOGUE", "").strip() or DEFAULT_CATALOGUE_PATH)
        if not catalogue_path.is_absolute():
            # Relative to the repository, so the result does not depend on the cwd.
            catalogue_path = REPO_ROOT / catalogue_path

        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
        return cls(
            database_url=Secret(database_url),
            host=host,
            port=port,
            rasa_url=rasa_url,
            actions_port=actions_port,
            catalogue_path=catalogue_path,
        )

    @property
    def tz(self) -> ZoneInfo:
        """Return the display timezone."""
        try:
            return ZoneInfo(self.timezone)
        except ZoneInfoNotFoundError as exc:
            raise SettingsError(
                f"timezone {self.timezone!r} not found; install the tzdata package"
            ) from exc

    @property
    def database_url_redacted(self) -> str:
        """Return the database URL with its password masked, for logs."""
        return redact_url(self.database_url.reveal())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.reveal().startswith("sqlite")


def _port(environ: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        problems.append(f"{name} must be a port number 1-65535, got {raw!r}; e.g. {name}={default}")
        return default
    return value
