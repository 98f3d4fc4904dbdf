"""API users: a bearer token per user, a role per user. The store keeps only the token's hash.

First-run setup: while no user exists, the engine writes a one-time token to ``Paths.setup_token``
(mode 0600) and accepts it with the admin role under the name ``setup``, so the first-run wizard
can configure the engine and create the first account. The first user ends setup: the file is
deleted and the token refused from then on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from agent import audit
from agent.repos import UserRepo
from agent.store import Store, now
from core.paths import Paths
from core.states import Role

ROLES = tuple(r.value for r in Role)
RANK = {r.value: r.rank for r in Role}
SETUP_USER = "setup"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(store: Store, name: str, role: str, *, actor: str = "cli") -> str:
    """Create a user; returns the token (shown once, never stored in clear). ``actor`` is who
    did it, for the audit trail (e.g. ``cli:<os user>`` or ``api:<user name>``)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise ValueError("a user name is 1 to 64 characters")
    if name == SETUP_USER:
        raise ValueError(f"{SETUP_USER!r} is reserved for the first-run setup")
    token = "cb_" + secrets.token_urlsafe(32)
    repo = UserRepo(store.conn)
    with store.tx():
        if repo.exists(name):
            raise ValueError(f"a user named {name!r} already exists (or was revoked); pick another name")
        repo.insert(name, role, _hash(token), now())
        store.event("user.added", detail={"name": name, "role": role})
        audit.record(store, actor=actor, action="user.add", target=f"user:{name}",
                     after={"name": name, "role": role}, detail={"role": role})
    end_setup(store.paths)
    return token


def revoke_user(store: Store, name: str, *, actor: str = "cli") -> bool:
    """Disable a user's token at once (the next request with it is refused). False if no active
    user has that name."""
    repo = UserRepo(store.conn)
    with store.tx():
        role = repo.active_role(name)
        if role is None or not repo.disable(name, now()):
            return False
        store.event("user.revoked", detail={"name": name})
        audit.record(store, actor=actor, action="user.revoke", target=f"user:{name}",
                     before={"name": name, "role": role}, detail={"role": role})
    return True


def authenticate(store: Store, token: str) -> tuple[str, str] | None:
    """(name, role) for a valid token, else None. Compares hashes, so timing leaks nothing useful."""
    if not token:
        return None
    return UserRepo(store.conn).by_token(_hash(token))


def list_users(store: Store) -> list[dict[str, str]]:
    return UserRepo(store.conn).rows()


# -- first-run setup token ---------------------------------------------------------------------------
def setup_needed(store: Store) -> bool:
    return not UserRepo(store.conn).any()


def begin_setup(store: Store) -> str | None:
    """At engine start: with no user yet, write a fresh setup token (0600) and return it; else
    make sure no old token file is left and return None."""
    if not setup_needed(store):
        end_setup(store.paths)
        return None
    token = "cbsetup_" + secrets.token_urlsafe(32)
    path = store.paths.setup_token
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    # O_EXCL + 0600 at creation: the token is never readable by others, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def end_setup(paths: Paths) -> None:
    try:
        paths.setup_token.unlink()
    except FileNotFoundError:
        pass


def check_setup_token(store: Store, expected: str | None, token: str) -> bool:
    """Is ``token`` the setup token, and is setup still open (no user exists)?"""
    if not expected or not token or not hmac.compare_digest(expected.encode(), token.encode()):
        return False
    if setup_needed(store):
        return True
    end_setup(store.paths)
    return False
