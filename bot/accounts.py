"""Console accounts: hashed passwords, roles, department scope and signed-in sessions.

Passwords are hashed with scrypt and a per-account salt. A session is a random token in
an HttpOnly, SameSite=Strict cookie; the table keeps only its SHA-256, so a leaked
database signs nobody in. Every state-changing request must also carry the session's
CSRF token in a header, which another site cannot read.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import ROLES, Account, WebSession

SESSION_TTL = timedelta(hours=12)
IDLE_TTL = timedelta(hours=2)
MIN_PASSWORD_CHARS = 10
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
# Compared against when the username is unknown, so both cases cost the same time.
_DUMMY_HASH = "scrypt$" + base64.b64encode(b"\0" * 16).decode() + "$" + "A" * 44


class AccountError(ValueError):
    """Bad account data; the message says what to change."""


@dataclass(frozen=True)
class Principal:
    """The signed-in person as the console needs them, detached from any DB session."""

    account_id: int
    username: str
    display_name: str
    role: str
    department: str | None
    staff_id: str | None
    csrf_token: str

    def can(self, *roles: str) -> bool:
        """Return whether the role is one of `roles` (admin can do everything)."""
        return self.role == "admin" or self.role in roles


def hash_password(password: str) -> str:
    """Return 'scrypt$salt$hash' for a password."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Compare a password with a stored hash in constant time."""
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest, expected)


def create_account(session: Session, *, username: str, password: str, role: str,
                   display_name: str, now: datetime, department: str | None = None,
                   staff_id: str | None = None, phone: str | None = None) -> Account:
    """Add an account; staff and supervisors belong to a department."""
    if not _USERNAME.match(username):
        raise AccountError("a username is 2-64 letters, digits or _.-")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if role in ("staff", "supervisor") and not department:
        raise AccountError(f"a {role} account needs a department")
    if not display_name.strip():
        raise AccountError("give the account a display name, e.g. 王小梅")
    account = Account(username=username, display_name=display_name.strip(),
                      password_hash=hash_password(password), role=role, department=department,
                      staff_id=staff_id, phone=phone, active=True, created_at=now)
    try:
        with session.begin_nested():
            session.add(account)
    except IntegrityError as exc:
        raise AccountError(f"username {username!r} is taken") from exc
    return account


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, *, username: str, password: str,
            now: datetime) -> tuple[str, Principal] | None:
    """Check the password; return (cookie token, principal) or None."""
    account = session.execute(
        select(Account).where(Account.username == username)).scalar_one_or_none()
    stored = account.password_hash if account is not None else _DUMMY_HASH
    if not check_password(password, stored) or account is None or not account.active:
        return None
    token = secrets.token_urlsafe(32)
    web_session = WebSession(token_hash=_token_hash(token), account_id=account.id,
                             csrf_token=secrets.token_urlsafe(24), created_at=now,
                             last_seen_at=now, expires_at=now + SESSION_TTL)
    session.add(web_session)
    return token, _principal(account, web_session)


def lookup(session: Session, *, token: str | None,
           now: datetime) -> tuple[Principal | None, str | None]:
    """Read who holds this cookie token, without writing.

    Returns (principal or None, what to write): "touch" when last_seen_at is over a
    minute old, "end" when the session expired or went idle, else None — so the common
    request is a pure read and the rare write is done by `resolve`.
    """
    if not token or len(token) > 128:
        return None, None
    web_session = session.get(WebSession, _token_hash(token))
    if web_session is None:
        return None, None
    if now >= web_session.expires_at or now - web_session.last_seen_at > IDLE_TTL:
        return None, "end"
    account = session.get(Account, web_session.account_id)
    if account is None or not account.active:
        return None, None
    stale = now - web_session.last_seen_at > timedelta(minutes=1)
    return _principal(account, web_session), "touch" if stale else None


def resolve(session: Session, *, token: str | None, now: datetime) -> Principal | None:
    """Return who holds this cookie token, or None if it is unknown, expired or idle."""
    principal, write = lookup(session, token=token, now=now)
    if write is not None:
        record_visit(session, token=token, now=now, end=write == "end")
    return principal


def record_visit(session: Session, *, token: str | None, now: datetime, end: bool) -> None:
    """Note that a session was used now (once a minute is enough), or end it."""
    web_session = session.get(WebSession, _token_hash(token)) if token else None
    if web_session is None:
        return
    if end:
        session.delete(web_session)
    else:
        web_session.last_seen_at = now


def sign_out(session: Session, *, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))


def agents_online(session: Session, *, now: datetime) -> int:
    """Count agents whose console was seen in the last few minutes."""
    rows = session.execute(
        select(WebSession.account_id).join(Account, Account.id == WebSession.account_id)
        .where(Account.role.in_(("agent", "supervisor", "admin")), Account.active.is_(True),
               WebSession.last_seen_at >= now - timedelta(minutes=5),
               WebSession.expires_at > now)
        .distinct()
    ).all()
    return len(rows)


def _principal(account: Account, web_session: WebSession) -> Principal:
    return Principal(account_id=account.id, username=account.username,
                     display_name=account.display_name, role=account.role,
                     department=account.department, staff_id=account.staff_id,
                     csrf_token=web_session.csrf_token)
