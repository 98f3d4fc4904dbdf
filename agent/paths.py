"""Every path ChargeBridge writes, derived from one home directory.

``--home DIR`` or ``CHARGEBRIDGE_HOME`` moves all of them (tests, several practices on one
server); otherwise the platform's user data directory is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


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
    def logs(self) -> Path:
        return self.home / "logs"

    def ensure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if os.name == "posix":
            os.chmod(self.home, 0o700)
