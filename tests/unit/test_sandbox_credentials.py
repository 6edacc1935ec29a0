"""Sandbox credentials: made once, kept private, reused, and never over real ones."""
from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from bot.sandbox import (
    CREDENTIAL_NAMES,
    SANDBOX_FILE,
    ensure_sandbox_credentials,
    load_sandbox_environment,
)
from bot.settings import Settings
from channels.wechat import make_crypto

pytestmark = pytest.mark.unit


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    # Point credentials.yml somewhere empty so a developer's own file cannot leak in.
    return {"LINLI_CREDENTIALS": str(tmp_path / "no-credentials.yml")}


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)  # the file must be private even when the umask is not
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_generates_credentials_shaped_like_the_providers(var_dir, environ):
    env = ensure_sandbox_credentials(var_dir, environ)

    assert set(CREDENTIAL_NAMES) <= set(env)
    assert re.fullmatch(r"[0-9a-f]{32}", env["WECHAT_TOKEN"])
    assert re.fullmatch(r"wxsandbox[0-9a-f]{9}", env["WECHAT_APP_ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", env["WECHAT_APP_SECRET"])
    assert re.fullmatch(r"[A-Za-z0-9]{43}", env["WECHAT_AES_KEY"])
    assert re.fullmatch(r"AC[0-9a-f]{32}", env["TWILIO_ACCOUNT_SID"])
    assert re.fullmatch(r"[0-9a-f]{32}", env["TWILIO_AUTH_TOKEN"])
    assert env["TWILIO_FROM_NUMBER"].startswith("+")
    assert env["WECHAT_API_BASE"] == env["TWILIO_API_BASE"] == "http://127.0.0.1:8000/sandbox"
    assert env["LINLI_SANDBOX"] == "1"
    # Usable as-is: the settings accept them, wechatpy builds its cipher, twilio signs.
    settings = Settings.from_env({**environ, **env})
    assert settings.wechat is not None and settings.twilio is not None
    assert settings.wechat.api_base == "http://127.0.0.1:8000/sandbox"
    make_crypto(token=env["WECHAT_TOKEN"], aes_key=env["WECHAT_AES_KEY"],
                app_id=env["WECHAT_APP_ID"])
    assert RequestValidator(env["TWILIO_AUTH_TOKEN"]).compute_signature("http://x/", {})


def test_two_installations_get_different_secrets(tmp_path, environ):
    first = ensure_sandbox_credentials(tmp_path / "a", environ)
    second = ensure_sandbox_credentials(tmp_path / "b", environ)
    for name in ("WECHAT_TOKEN", "WECHAT_APP_SECRET", "WECHAT_AES_KEY", "TWILIO_AUTH_TOKEN"):
        assert first[name] != second[name]


def test_the_file_is_private_even_with_an_open_umask(var_dir, environ, open_umask):
    ensure_sandbox_credentials(var_dir, environ)
    path = var_dir / SANDBOX_FILE
    assert mode(path) == 0o600
    assert not list(var_dir.glob("*.tmp")) and not list(var_dir.glob(".*.tmp"))


def test_later_starts_reuse_the_same_credentials_and_leave_the_file_alone(var_dir, environ):
    first = ensure_sandbox_credentials(var_dir, environ)
    path = var_dir / SANDBOX_FILE
    written = path.read_bytes()
    second = ensure_sandbox_credentials(var_dir, environ)
    assert second == first
    assert path.read_bytes() == written


def test_a_widened_file_is_reused_and_made_private_again(var_dir, environ):
    first = ensure_sandbox_credentials(var_dir, environ)
    path = var_dir / SANDBOX_FILE
    path.chmod(0o644)
    assert ensure_sandbox_credentials(var_dir, environ) == first
    assert mode(path) == 0o600


@pytest.mark.parametrize("content", ["not json", "[]", '{"WECHAT_TOKEN": "x"}'],
                         ids=["garbage", "list", "incomplete"])
def test_a_broken_file_is_replaced(var_dir, environ, content):
    var_dir.mkdir()
    path = var_dir / SANDBOX_FILE
    path.write_text(content)
    env = ensure_sandbox_credentials(var_dir, environ)
    stored = json.loads(path.read_text())
    assert {name: stored[name] for name in CREDENTIAL_NAMES} == {
        name: env[name] for name in CREDENTIAL_NAMES}
    assert mode(path) == 0o600


def test_the_api_bases_follow_the_hub_address(var_dir, environ):
    env = ensure_sandbox_credentials(var_dir, {**environ, "LINLI_HOST": "0.0.0.0",
                                               "LINLI_PORT": "8123"})
    assert env["WECHAT_API_BASE"] == "http://127.0.0.1:8123/sandbox"
    again = ensure_sandbox_credentials(var_dir, {**environ, "LINLI_PORT": "9000"})
    assert again["TWILIO_API_BASE"] == "http://127.0.0.1:9000/sandbox"
    assert again["TWILIO_AUTH_TOKEN"] == env["TWILIO_AUTH_TOKEN"]


@pytest.mark.parametrize("name", ["WECHAT_TOKEN", "WECHAT_AES_KEY", "TWILIO_ACCOUNT_SID",
                                  "TWILIO_FROM_NUMBER"])
def test_any_real_credential_in_the_environment_turns_the_sandbox_off(var_dir, environ, name):
    assert ensure_sandbox_credentials(var_dir, {**environ, name: "real-value"}) == {}
    assert not (var_dir / SANDBOX_FILE).exists()


def test_real_credentials_in_credentials_yml_turn_the_sandbox_off(tmp_path, var_dir):
    credentials = tmp_path / "credentials.yml"
    credentials.write_text("twilio:\n  account_sid: AC123\n  auth_token: real\n"
                           "  from_number: '+8657100000000'\n")
    assert ensure_sandbox_credentials(var_dir, {"LINLI_CREDENTIALS": str(credentials)}) == {}
    assert not (var_dir / SANDBOX_FILE).exists()


def test_an_unreadable_credentials_yml_is_not_papered_over(tmp_path, var_dir):
    credentials = tmp_path / "credentials.yml"
    credentials.write_text("wechat: [unclosed\n")
    assert ensure_sandbox_credentials(var_dir, {"LINLI_CREDENTIALS": str(credentials)}) == {}


def test_real_credentials_never_overwrite_or_mix_with_a_stored_sandbox(var_dir, environ):
    ensure_sandbox_credentials(var_dir, environ)
    path = var_dir / SANDBOX_FILE
    written = path.read_bytes()
    real = {**environ, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "real",
            "TWILIO_FROM_NUMBER": "+8657100000000"}
    assert ensure_sandbox_credentials(var_dir, real) == {}
    assert path.read_bytes() == written


def test_linli_sandbox_0_turns_it_off(var_dir, environ):
    assert ensure_sandbox_credentials(var_dir, {**environ, "LINLI_SANDBOX": "0"}) == {}
    assert not var_dir.exists()


def test_the_simulator_reads_but_never_creates_them(var_dir, environ):
    assert load_sandbox_environment(var_dir, environ) == {}
    assert not var_dir.exists()
    made = ensure_sandbox_credentials(var_dir, environ)
    assert load_sandbox_environment(var_dir, environ) == made
