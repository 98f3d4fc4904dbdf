"""In-process change signal: every commit bumps it, so the API's change feed waits on a
condition instead of polling the database."""

from __future__ import annotations

import threading

_cond = threading.Condition()
_seq = 0


def bump() -> None:
    global _seq
    with _cond:
        _seq += 1
        _cond.notify_all()


def seq() -> int:
    return _seq


def wait(after: int, timeout: float) -> int:
    """Block until the sequence passes ``after`` or ``timeout`` elapses; returns the sequence."""
    with _cond:
        _cond.wait_for(lambda: _seq > after, timeout=timeout)
        return _seq
