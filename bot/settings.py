"""Runtime settings read from the environment, validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

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
class WeChatSettings:
    """An Official Account: the server-configuration token, app id/secret and AES key."""

    token: Secret
    app_id: str
    app_secret: Secret
    aes_key: Secret = field(default_factory=lambda: Secret(""))  # empty: plaintext mode
    api_base: str = "https://api.weixin.qq.com"


@dataclass(frozen=True)
class TwilioSettings:
    """A Twilio account and number; voice and SMS share them."""

    account_sid: str
    auth_token: Secret
    from_number: str
    transfer_number: str = ""  # the staff phone a hotline caller is put through to
    api_base: str = "https://api.twilio.com"


@dataclass(frozen=True)
class Settings:
    database_url: Secret = field(default_factory=lambda: Secret(default_database_url()))
    host: str = "127.0.0.1"
    port: int = 8000
    rasa_url: str = "http://127.0.0.1:5005"
    actions_port: int = 5055
    catalogue_path: Path = DEFAULT_CATALOGUE_PATH
    timezone: str = TIMEZONE
    # The address providers call, as they see it (before any reverse proxy); Twilio
    # signs this URL, so it must match what is configured in the Twilio console.
    public_base_url: str = ""
    wechat: WeChatSettings | None = None
    twilio: TwilioSettings | None = None
    # Shared state for several hub processes (today: WeChat's access token); unset = in-process.
    redis_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build Settings from environment variables, reporting every bad one at once.

        Channel credentials may also come from credentials.yml (LINLI_CREDENTIALS), whose
        `${VAR}` placeholders are filled from the environment; a variable set in the
        environment wins over the file.
        """
        problems: list[str] = []
        environ = {**credentials_file_values(environ, problems), **environ}

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

        public_base_url = environ.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
        if public_base_url and (urlsplit(public_base_url).scheme not in ("http", "https")
                                or not urlsplit(public_base_url).netloc):
            problems.append(
                f"PUBLIC_BASE_URL must be the https URL providers call, got {public_base_url!r}; "
                f"e.g. PUBLIC_BASE_URL=https://linli.example.org"
            )
        wechat = _wechat(environ, problems)
        twilio = _twilio(environ, problems)
        redis_url = environ.get("REDIS_URL", "").strip()
        if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            problems.append(f"REDIS_URL must be a redis:// URL, got {redact_url(redis_url)!r}; "
                            f"e.g. REDIS_URL=redis://127.0.0.1:6379/0")
        if (wechat or twilio) and not public_base_url:
            public_base_url = f"http://{host}:{port}"

        if problems:
            raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
        return cls(
            public_base_url=public_base_url,
            redis_url=redis_url,
            wechat=wechat,
            twilio=twilio,
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

    def channel_report(self) -> list[str]:
        """Say which channels are on, one line each, for the start-up log."""
        lines = ["web chat: on"]
        if self.wechat:
            mode = "safe mode (AES)" if self.wechat.aes_key else "plaintext mode"
            lines.append(f"WeChat: on, app id {self.wechat.app_id}, {mode}, "
                         f"server URL {self.public_base_url}/webhooks/wechat")
        else:
            lines.append("WeChat: off (set WECHAT_TOKEN, WECHAT_APP_ID, WECHAT_APP_SECRET)")
        if self.twilio:
            lines.append(f"Twilio SMS + voice: on, number {self.twilio.from_number}, "
                         f"webhooks {self.public_base_url}/twilio/sms, /twilio/voice and "
                         f"/twilio/voice/status (call status callback)")
        else:
            lines.append("Twilio SMS + voice: off (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "
                         "TWILIO_FROM_NUMBER)")
        return lines


# credentials.yml section -> key -> environment variable it stands for.
CREDENTIAL_KEYS: dict[str, dict[str, str]] = {
    "wechat": {"token": "WECHAT_TOKEN", "app_id": "WECHAT_APP_ID",
               "app_secret": "WECHAT_APP_SECRET", "aes_key": "WECHAT_AES_KEY"},
    "twilio": {"account_sid": "TWILIO_ACCOUNT_SID", "auth_token": "TWILIO_AUTH_TOKEN",
               "from_number": "TWILIO_FROM_NUMBER", "transfer_number": "TWILIO_TRANSFER_NUMBER"},
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def credentials_path(environ: Mapping[str, str]) -> Path:
    """Return where credentials.yml is read from (LINLI_CREDENTIALS, else the repository)."""
    raw = environ.get("LINLI_CREDENTIALS", "").strip()
    path = Path(raw) if raw else REPO_ROOT / "credentials.yml"
    return path if path.is_absolute() else REPO_ROOT / path


def credentials_file_values(environ: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """Read the wechat/twilio sections of credentials.yml as environment-style names."""
    path = credentials_path(environ)
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path} is not readable YAML ({exc}); fix it or remove it")
        return {}
    if not isinstance(document, dict):
        problems.append(f"{path} must be a mapping of sections such as wechat: and twilio:")
        return {}
    values: dict[str, str] = {}
    for section, keys in CREDENTIAL_KEYS.items():
        body = document.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"{path}: section {section} must be a mapping of {', '.join(keys)}")
            continue
        for key, raw in body.items():
            if key not in keys:
                problems.append(f"{path}: {section}.{key} is unknown; use {', '.join(keys)}")
                continue
            text = "" if raw is None else str(raw)
            missing = [name for name in _PLACEHOLDER.findall(text) if name not in environ]
            if missing:
                problems.append(f"{path}: {section}.{key} uses ${{{missing[0]}}}, "
                                f"which is not set in the environment")
                continue
            values[keys[key]] = _PLACEHOLDER.sub(lambda m: environ[m.group(1)], text)
    return values


def _api_base(environ: Mapping[str, str], name: str, default: str, problems: list[str]) -> str:
    value = environ.get(name, "").strip().rstrip("/") or default
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        problems.append(f"{name} must be an http(s) URL, got {value!r}; leave it unset normally")
    return value


def _required(environ: Mapping[str, str], provider: str, names: tuple[str, ...],
              optional: tuple[str, ...], problems: list[str]) -> dict[str, str] | None:
    """Read a provider's variables: all required ones, or none at all (the channel is off)."""
    values = {name: environ.get(name, "").strip() for name in names + optional}
    if not any(values.values()):
        return None
    missing = [name for name in names if not values[name]]
    if missing:
        problems.append(f"{provider} needs {', '.join(missing)} as well; set all of "
                        f"{', '.join(names)} or none")
        return None
    return values


def _wechat(environ: Mapping[str, str], problems: list[str]) -> WeChatSettings | None:
    values = _required(environ, "WeChat", ("WECHAT_TOKEN", "WECHAT_APP_ID", "WECHAT_APP_SECRET"),
                       ("WECHAT_AES_KEY",), problems)
    if values is None:
        return None
    aes_key = values["WECHAT_AES_KEY"]
    if aes_key and len(aes_key) != 43:
        problems.append("WECHAT_AES_KEY must be the 43-character EncodingAESKey from the "
                        "Official Account console")
    return WeChatSettings(
        token=Secret(values["WECHAT_TOKEN"]),
        app_id=values["WECHAT_APP_ID"],
        app_secret=Secret(values["WECHAT_APP_SECRET"]),
        aes_key=Secret(aes_key),
        api_base=_api_base(environ, "WECHAT_API_BASE", "https://api.weixin.qq.com", problems),
    )


def _twilio(environ: Mapping[str, str], problems: list[str]) -> TwilioSettings | None:
    values = _required(environ, "Twilio",
                       ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER"),
                       ("TWILIO_TRANSFER_NUMBER",), problems)
    if values is None:
        return None
    if not values["TWILIO_ACCOUNT_SID"].startswith("AC"):
        problems.append("TWILIO_ACCOUNT_SID starts with AC; copy it from the Twilio console")
    return TwilioSettings(
        account_sid=values["TWILIO_ACCOUNT_SID"],
        auth_token=Secret(values["TWILIO_AUTH_TOKEN"]),
        from_number=values["TWILIO_FROM_NUMBER"],
        transfer_number=values["TWILIO_TRANSFER_NUMBER"],
        api_base=_api_base(environ, "TWILIO_API_BASE", "https://api.twilio.com", problems),
    )


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
