"""Errors people see. Each carries a ``title`` (what happened) and a ``fix`` (what to do).

Messages never quote patient data: they name files by their place in the store, fields by
their path, and codes only where a code is not tied to a person.
"""

from __future__ import annotations


class ChargeBridgeError(Exception):
    exit_code = 1

    def __init__(self, title: str, fix: str = "") -> None:
        super().__init__(title if not fix else f"{title}\n  Fix: {fix}")
        self.title = title
        self.fix = fix


class ConfigError(ChargeBridgeError):
    exit_code = 2


class KeyringUnavailable(ChargeBridgeError):
    exit_code = 2


class StoreKeyError(ChargeBridgeError):
    exit_code = 2


class LockHeld(ChargeBridgeError):
    exit_code = 2
