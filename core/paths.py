"""Every path ChargeBridge writes, derived from one home directory.

``--home DIR`` or ``CHARGEBRIDGE_HOME`` moves all of them (tests, several practices on one
server); otherwise the platform's user data directory is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

ENGINE_INFO = "engine.json"


@dataclass(frozen=True)
class Paths:
    home: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Paths:
        chosen = home or os.environ.get("CHARGEBRIDGE_HOME")
        if chosen:
            root = Path(chosen).expanduser()
        else:
            root = Path(platformdirs.user_data_dir("ChargeBridge", appauthor=False))
        return cls(root.absolute())

    @property
    def config(self) -> Path:
        return self.home / "chargebridge.toml"

    @property
    def store(self) -> Path:
        return self.home / "store.db"

    @property
    def salt(self) -> Path:
        return self.home / "store.salt"

    @property
    def lock(self) -> Path:
        return self.home / "chargebridge.lock"

    @property
    def engine_info(self) -> Path:
        """``engine.json``: the running engine's pid and API URL (written by the engine, read by clients)."""
        return self.home / ENGINE_INFO

    @property
    def setup_token(self) -> Path:
        """One-time token (mode 0600) that lets the first-run wizard create the first user."""
        return self.home / "setup-token"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def ensure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if os.name == "posix":
            os.chmod(self.home, 0o700)


def lock_holder(paths: Paths) -> dict[str, object]:
    """Who holds the home's engine lock, as its lock file records (pid, purpose); {} if nobody
    wrote one. Reading never takes the lock, so a probe cannot make a starting engine fail."""
    try:
        data = json.loads(paths.lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return dict(data) if isinstance(data, dict) else {}


def holder_alive(paths: Paths) -> bool:
    """Does a live process other than this one hold the home's lock?"""
    try:
        pid = int(lock_holder(paths).get("pid", 0) or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True
