"""Errors people see. Each carries a ``title`` (what happened), a ``fix`` (what to do) and,
where one setting or field is at fault, its ``key`` (``rcm.base_url``, ``folders[0].path``) so
a form can put the cursor there without parsing the text.

Messages never quote patient data: they name files by their place in the store, fields by
their path, and codes only where a code is not tied to a person.
"""

from __future__ import annotations

from typing import Any


class ChargeBridgeError(Exception):
    exit_code = 1
    http_status = 400

    def __init__(self, title: str, fix: str = "", *, key: str = "") -> None:
        super().__init__(title if not fix else f"{title}\n  Fix: {fix}")
        self.title = title
        self.fix = fix
        self.key = key

    def to_dict(self) -> dict[str, Any]:
        """The API's error body (:class:`core.schemas.ErrorBody`)."""
        return {"title": self.title, "fix": self.fix, "key": self.key or None}


class ConfigError(ChargeBridgeError):
    exit_code = 2
    http_status = 422


class KeyringUnavailable(ChargeBridgeError):
    exit_code = 2
    http_status = 503


class StoreKeyError(ChargeBridgeError):
    exit_code = 2
    http_status = 503


class LockHeld(ChargeBridgeError):
    exit_code = 2
    http_status = 409


class NotFound(ChargeBridgeError):
    http_status = 404


class Conflict(ChargeBridgeError):
    """The request is well formed but the thing is not in a state that allows it."""

    http_status = 409
