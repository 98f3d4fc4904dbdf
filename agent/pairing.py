"""Pairing codes on the engine side: made by ``chargebridge pair``, redeemed by ``POST /pair``.

A code is 8 base32 characters (40 bits) from :mod:`secrets`, valid :data:`CODE_MINUTES`
minutes and once, kept only as its SHA-256 (store migration 10). It carries the role and the
user name chosen at ``pair`` time; redeeming it creates that user (audited, like ``users add``)
and returns its token. What a person reads out is the code followed by the CA pin
(:func:`core.pairing.pairing_code`).

Guessing is bounded twice: each client address may try :data:`TRIES_PER_ADDRESS` codes per
minute, and after :data:`FAILURES_BEFORE_LOCK` wrong codes in :data:`LOCK_WINDOW_S` seconds all
open codes are withdrawn (a new ``chargebridge pair`` is needed) — with 40 bits and at most 30
guesses per code, an attacker's chance is below one in 30 billion.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agent import audit
from agent.store import Store, now
from agent.users import SETUP_USER, add_user
from core.errors import ChargeBridgeError, ConfigError
from core.pairing import ALPHABET, CODE_LEN, normalize_secret
from core.states import Role

CODE_MINUTES = 10
MAX_OPEN_CODES = 20
TRIES_PER_ADDRESS = 10  # per minute
FAILURES_BEFORE_LOCK = 30
LOCK_WINDOW_S = 600.0


class CodeRefused(ChargeBridgeError):
    http_status = 403


class TooManyTries(ChargeBridgeError):
    http_status = 429


@dataclass(frozen=True)
class NewCode:
    code: str  # the one-time part (8 characters)
    name: str
    role: str
    expires_at: str


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _at(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds")


def create_code(store: Store, role: str, name: str = "", *, actor: str) -> NewCode:
    """A new one-time code for a user ``name`` (default ``pc-XXXX``) with ``role``."""
    if role not in {r.value for r in Role}:
        raise ConfigError(f"{role!r} is not a role", ", ".join(r.value for r in Role), key="role")
    name = name.strip() or f"pc-{''.join(secrets.choice(ALPHABET) for _ in range(4)).lower()}"
    if len(name) > 64 or name == SETUP_USER or any(ord(c) < 32 or c == "/" for c in name):
        raise ConfigError(f"{name!r} cannot be a user name", "1 to 64 characters, no '/' (and not 'setup')",
                          key="name")
    code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LEN))
    expires = _at(timedelta(minutes=CODE_MINUTES))
    with store.tx():
        c = store.conn
        if c.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() or c.execute(
                "SELECT 1 FROM pairing_codes WHERE name = ? AND used_at IS NULL AND expires_at > ?",
                (name, now())).fetchone():
            raise ConfigError(f"a user named {name!r} already exists (or a code for it is open)",
                              "pick another --name (see chargebridge users list)", key="name")
        open_codes = c.execute("SELECT count(*) FROM pairing_codes WHERE used_at IS NULL AND expires_at > ?",
                               (now(),)).fetchone()[0]
        if open_codes >= MAX_OPEN_CODES:
            raise ConfigError(f"{open_codes} pairing codes are already open",
                              f"wait until they are used or expire ({CODE_MINUTES} minutes)", key="code")
        c.execute("INSERT INTO pairing_codes (code_sha256, role, name, created_by, created_at, expires_at) "
                  "VALUES (?,?,?,?,?,?)", (_hash(code), role, name, actor, now(), expires))
        audit.record(store, actor=actor, action="pairing.code", target=f"user:{name}",
                     detail={"role": role, "expires_at": expires})
    return NewCode(code, name, role, expires)


def redeem(store: Store, code_text: str, *, client: str) -> tuple[str, str, str]:
    """(name, role, token) for a valid code, which is used up; :class:`CodeRefused` otherwise."""
    code = normalize_secret(code_text)
    fix = "run `chargebridge pair` on the practice server for a new code and type it within 10 minutes"
    with store.tx():
        row = store.conn.execute("SELECT id, role, name, expires_at, used_at FROM pairing_codes "
                                 "WHERE code_sha256 = ?", (_hash(code),)).fetchone()
        if row is None:
            raise CodeRefused("this pairing code is not valid", fix, key="code")
        cid, role, name, expires_at, used_at = row
        if used_at is not None:
            raise CodeRefused("this pairing code was already used (a code works once)", fix, key="code")
        if str(expires_at) <= now():
            raise CodeRefused("this pairing code has expired", fix, key="code")
        store.conn.execute("UPDATE pairing_codes SET used_at = ?, used_from = ? WHERE id = ?", (now(), client, cid))
    try:
        token = add_user(store, str(name), str(role), actor=f"pair:{client}")
    except ValueError as exc:
        raise CodeRefused(f"pairing could not create the user: {exc}", fix, key="code") from None
    with store.tx():
        audit.record(store, actor=f"pair:{client}", action="pairing.redeem", target=f"user:{name}",
                     detail={"role": role, "from": client})
    return str(name), str(role), token


def withdraw_open(store: Store, *, actor: str) -> int:
    """End every open code (too many wrong guesses)."""
    with store.tx():
        n = store.conn.execute("UPDATE pairing_codes SET expires_at = ? WHERE used_at IS NULL AND expires_at > ?",
                               (now(), now())).rowcount
        if n:
            audit.record(store, actor=actor, action="pairing.withdraw", target="pairing", detail={"codes": n})
    return int(n)


def paired_users(store: Store) -> dict[str, dict[str, str]]:
    """name → {paired_at, from} for users created by pairing."""
    return {str(n): {"paired_at": str(at), "from": str(frm)} for n, at, frm in store.conn.execute(
        "SELECT name, used_at, used_from FROM pairing_codes WHERE used_at IS NOT NULL")}


class Limiter:
    """In-memory tries per client address and wrong codes overall (one engine process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tries: dict[str, deque[float]] = {}
        self._failures: deque[float] = deque()

    def attempt(self, client: str) -> None:
        t = time.monotonic()
        with self._lock:
            q = self._tries.setdefault(client, deque())
            while q and t - q[0] > 60:
                q.popleft()
            if len(q) >= TRIES_PER_ADDRESS:
                raise TooManyTries("too many pairing attempts from this computer",
                                   "wait a minute, then type the code again", key="code")
            q.append(t)
            if len(self._tries) > 10_000:  # bounded memory: forget the quietest addresses
                for k in [k for k, v in self._tries.items() if not v or t - v[-1] > 60]:
                    del self._tries[k]

    def failed(self) -> bool:
        """Record a wrong code; True when open codes must now be withdrawn."""
        t = time.monotonic()
        with self._lock:
            self._failures.append(t)
            while self._failures and t - self._failures[0] > LOCK_WINDOW_S:
                self._failures.popleft()
            if len(self._failures) >= FAILURES_BEFORE_LOCK:
                self._failures.clear()
                return True
            return False
