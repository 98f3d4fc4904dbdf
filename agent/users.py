"""API users: a bearer token per user, a role per user. The store keeps only the token's hash."""

from __future__ import annotations

import hashlib
import secrets

from agent import audit
from agent.store import Store, now

ROLES = ("front_desk", "manager", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(store: Store, name: str, role: str, *, actor: str = "cli") -> str:
    """Create a user; returns the token (shown once, never stored in clear). ``actor`` is who
    did it, for the audit trail (e.g. ``cli:<os user>`` or ``api:<user name>``)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise ValueError("a user name is 1 to 64 characters")
    token = "cb_" + secrets.token_urlsafe(32)
    with store.tx():
        if store.conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise ValueError(f"a user named {name!r} already exists")
        store.conn.execute("INSERT INTO users (name, role, token_sha256, created_at) VALUES (?,?,?,?)",
                           (name, role, _hash(token), now()))
        store.event("user.added", detail={"name": name, "role": role})
        audit.record(store, actor=actor, action="user.add", target=f"user:{name}",
                     after={"name": name, "role": role}, detail={"role": role})
    return token


def authenticate(store: Store, token: str) -> tuple[str, str] | None:
    """(name, role) for a valid token, else None. Compares hashes, so timing leaks nothing useful."""
    if not token:
        return None
    row = store.conn.execute("SELECT name, role FROM users WHERE token_sha256 = ? AND disabled_at IS NULL",
                             (_hash(token),)).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def list_users(store: Store) -> list[dict[str, str]]:
    return [{"name": n, "role": r, "created_at": c} for n, r, c in
            store.conn.execute("SELECT name, role, created_at FROM users WHERE disabled_at IS NULL ORDER BY id")]
