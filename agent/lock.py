"""One writer per home: an OS file lock that dies with its process (kill -9 included).

The lock file also records who holds it, so a second writer can say which process to stop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import TracebackType

from core.errors import LockHeld

if sys.platform == "win32":  # pragma: no cover - exercised on Windows builds
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False


class HomeLock:
    def __init__(self, path: Path, purpose: str) -> None:
        self.path = path
        self.purpose = purpose
        self.fd: int | None = None

    def acquire(self) -> HomeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            holder = self.holder()
            who = f"process {holder.get('pid')} ({holder.get('purpose', '?')})" if holder else "another process"
            raise LockHeld(
                f"the ChargeBridge home {self.path.parent} is in use by {who}",
                "stop that process first, or use another --home; only one writer may own a store",
            )
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "purpose": self.purpose}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def holder(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return dict(data) if isinstance(data, dict) else {}

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> HomeLock:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
