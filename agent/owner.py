"""Local owner access: the OS user who owns the home uses the CLI without creating a user first.

At every start the engine makes a fresh token (role **admin**), keeps it in *this* OS user's
keyring (entry ``owner-token`` of the home) and only its SHA-256 in memory. ``chargebridge
status`` and the other verbs use it when no login is saved and the engine is the local one
(:meth:`core.client.EngineClient.discover`). That user can already read the store key from the
same keyring, so this adds no exposure; other OS users (another keyring) and LAN clients do not
have it and still need a token of their own. The token dies with the engine process: the next
start replaces it. It does not end first-run setup (it is not a user).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from core.errors import ChargeBridgeError
from core.paths import Paths
from core.secrets import OWNER_TOKEN, set_secret

log = logging.getLogger("chargebridge.owner")

OWNER_USER = "local-owner"  # how the audit trail names calls made with it: api:local-owner


def issue(paths: Paths) -> str | None:
    """A new owner token into the keyring; returns its SHA-256 (None when there is no keyring:
    e.g. a service with a passphrase key, whose operators use tokens)."""
    token = "cbown_" + secrets.token_urlsafe(32)
    try:
        set_secret(paths, OWNER_TOKEN, token)
    except ChargeBridgeError as exc:
        log.info("no local owner token (%s); the CLI needs a saved login", exc.title)
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def check(expected_sha256: str | None, token: str) -> bool:
    if not expected_sha256 or not token.startswith("cbown_"):
        return False
    return hmac.compare_digest(expected_sha256, hashlib.sha256(token.encode()).hexdigest())
