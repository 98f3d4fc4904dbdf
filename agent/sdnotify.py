"""systemd's notify protocol (sd_notify(3)), written here: no dependency for one datagram.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET`` (a unix datagram socket path, or
``@name`` for the abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``). The engine sends ``READY=1`` once its API answers, ``WATCHDOG=1`` at half
the watchdog interval while it is alive — so a hung engine is restarted by systemd — and
``STOPPING=1`` on the way out. Without ``$NOTIFY_SOCKET`` (a terminal, the user unit, Windows,
macOS) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("chargebridge.sdnotify")

MIN_INTERVAL = 0.05  # seconds between watchdog pings, whatever WATCHDOG_USEC says


def _address(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    path = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):  # abstract namespace (Linux): a leading NUL byte
        return "\0" + path[1:]
    if not path.startswith("/"):
        return None  # not a socket path systemd would give (e.g. vsock: not for us)
    return path


def notify(message: str) -> bool:
    """Send ``message`` (``"READY=1"``, ``"WATCHDOG=1"``, ``"STATUS=..."``, lines joined by
    ``\\n``); True when it went out. Never raises: a missing manager is not an engine error."""
    addr = _address()
    if addr is None or not hasattr(socket, "AF_UNIX"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0)) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed: %s", type(exc).__name__)
        return False


def watchdog_interval(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec``), or None when systemd
    watches no watchdog for this process."""
    e = env if env is not None else os.environ
    usec = e.get("WATCHDOG_USEC", "")
    pid = e.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (e.g. a parent that exec'd us differently)
    return max(MIN_INTERVAL, int(usec) / 1_000_000 / 2)


class Watchdog:
    """Pings ``WATCHDOG=1`` every :func:`watchdog_interval` seconds while ``alive()`` says the
    engine works; when it does not, pings stop and systemd restarts the service."""

    def __init__(self, alive: Callable[[], bool], interval: float) -> None:
        self.alive = alive
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chargebridge-watchdog", daemon=True)

    @classmethod
    def start_if_wanted(cls, alive: Callable[[], bool]) -> Watchdog | None:
        interval = watchdog_interval()
        if interval is None or _address() is None:
            return None
        dog = cls(alive, interval)
        dog._thread.start()
        return dog

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ok = self.alive()
            except Exception as exc:  # a failing check means "not alive", never a dead thread
                log.warning("watchdog check failed: %s", type(exc).__name__)
                ok = False
            if ok:
                notify("WATCHDOG=1")
            else:
                log.warning("engine check failed; not pinging the systemd watchdog")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
