"""Channel credentials: from the environment or credentials.yml with ${VAR}, all or nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

WECHAT = {"WECHAT_TOKEN": "tok-4f9e2", "WECHAT_APP_ID": "wx123", "WECHAT_APP_SECRET": "sec"}
TWILIO = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "auth",
          "TWILIO_FROM_NUMBER": "+8657188001234"}


def _no_file(tmp_path: Path) -> dict[str, str]:
    return {"LINLI_CREDENTIALS": str(tmp_path / "absent.yml")}


def test_no_credentials_means_channels_off_and_said_so(tmp_path: Path) -> None:
    settings = Settings.from_env(_no_file(tmp_path))
    assert settings.wechat is None and settings.twilio is None
    report = "\n".join(settings.channel_report())
    assert "WeChat: off" in report and "Twilio SMS + voice: off" in report


def test_environment_switches_channels_on(tmp_path: Path) -> None:
    settings = Settings.from_env({**_no_file(tmp_path), **WECHAT, **TWILIO,
                                  "PUBLIC_BASE_URL": "https://linli.example.org/"})
    assert settings.wechat is not None and settings.wechat.app_id == "wx123"
    assert settings.wechat.token.reveal() == "tok-4f9e2" and "4f9e2" not in repr(settings)
    assert settings.twilio is not None and settings.twilio.auth_token.reveal() == "auth"
    assert settings.public_base_url == "https://linli.example.org"
    report = "\n".join(settings.channel_report())
    assert "https://linli.example.org/webhooks/wechat" in report and "plaintext" in report


@pytest.mark.parametrize("partial", [
    {"WECHAT_TOKEN": "tok"},
    {"TWILIO_AUTH_TOKEN": "auth"},
    {**WECHAT, "WECHAT_AES_KEY": "too-short"},
    {**TWILIO, "TWILIO_ACCOUNT_SID": "SK123"},
    {**TWILIO, "TWILIO_API_BASE": "ftp://x"},
    {**WECHAT, "PUBLIC_BASE_URL": "linli.example.org"},
])
def test_half_configured_channels_are_refused_with_the_fix(
    tmp_path: Path, partial: dict[str, str]
) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**_no_file(tmp_path), **partial})
    assert any(word in str(error.value) for word in ("needs", "must", "starts with"))


def test_credentials_file_fills_placeholders_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yml"
    path.write_text(
        "rest:\n"
        "wechat:\n  token: ${MY_TOKEN}\n  app_id: wx999\n  app_secret: ${MY_SECRET}\n"
        "twilio:\n  account_sid: AC" + "2" * 32 + "\n  auth_token: ${TW}\n"
        "  from_number: '+8657100000000'\n",
        encoding="utf-8",
    )
    settings = Settings.from_env({"LINLI_CREDENTIALS": str(path), "MY_TOKEN": "t1",
                                  "MY_SECRET": "s1", "TW": "a1"})
    assert settings.wechat is not None and settings.wechat.token.reveal() == "t1"
    assert settings.wechat.app_id == "wx999" and settings.wechat.app_secret.reveal() == "s1"
    assert settings.twilio is not None and settings.twilio.auth_token.reveal() == "a1"


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yml"
    path.write_text("wechat:\n  token: from-file\n  app_id: wx1\n  app_secret: s\n",
                    encoding="utf-8")
    settings = Settings.from_env({"LINLI_CREDENTIALS": str(path), "WECHAT_TOKEN": "from-env"})
    assert settings.wechat is not None and settings.wechat.token.reveal() == "from-env"


@pytest.mark.parametrize(("content", "message"), [
    ("wechat:\n  token: ${UNSET_VAR}\n", "UNSET_VAR"),
    ("wechat:\n  tokn: x\n", "unknown"),
    ("wechat: [1, 2]\n", "mapping"),
    ("- a\n- b\n", "mapping"),
    ("wechat: {token: [\n", "YAML"),
])
def test_a_broken_credentials_file_is_explained(tmp_path: Path, content: str,
                                                message: str) -> None:
    path = tmp_path / "credentials.yml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"LINLI_CREDENTIALS": str(path)})
