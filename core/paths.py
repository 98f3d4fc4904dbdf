"""Every path ChargeBridge writes, derived from one home directory.

``--home DIR`` or ``CHARGEBRIDGE_HOME`` moves all of them (tests, several practices on one
server); otherwise the platform's user data directory is used.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from core.errors import ConfigError

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
    def remote_engine(self) -> Path:
        """``remote-engine.json``: the practice engine this PC paired with (core/pairing.py)."""
        return self.home / "remote-engine.json"

    @property
    def pinned_ca(self) -> Path:
        """The paired engine's CA certificate: the only trust anchor for that engine."""
        return self.home / "tls" / "engine-ca.pem"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def ensure(self) -> None:
        """Create the home (0700) and its logs folder if missing. An existing home is never
        chmod-ed (it may be a shared folder whose mode matters to others, e.g. a sticky 1777
        one); if people other than its owner can reach and read or write it, refuse, naming
        the fix, rather than keep patient data there."""
        created = _make_private_dir(self.home, parents=True)
        if not created:
            _refuse_exposed(self.home)
        _make_private_dir(self.logs)


def _make_private_dir(path: Path, *, parents: bool = False) -> bool:
    """mkdir 0700; returns whether this call created it (only then is its mode ours to set)."""
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise ConfigError(f"{path} exists and is not a folder",
                              "choose another --home (or CHARGEBRIDGE_HOME)") from None
        return False
    if os.name == "posix":
        os.chmod(path, 0o700)  # the umask may have been wider than ours
    return True


def _refuse_exposed(home: Path) -> None:
    """Refuse a home that group or others can read or write. A folder counts as exposed only
    if they can also get to it: an ancestor they cannot enter (e.g. a 0700 parent) shields it."""
    if os.name != "posix":
        return
    mode = home.stat().st_mode
    others_in = group_in = True
    for parent in home.resolve().parents:
        try:
            pm = parent.stat().st_mode
        except OSError:
            break
        others_in = others_in and bool(pm & 0o001)
        group_in = group_in and bool(pm & 0o011)
    exposed = []
    if group_in and mode & 0o060:
        exposed.append("its group")
    if others_in and mode & 0o006:
        exposed.append("all users")
    if exposed:
        raise ConfigError(
            f"the ChargeBridge home {home} can be read or written by {' and '.join(exposed)} "
            f"(mode {stat.filemode(mode)}); patient data must not be kept there",
            f"run 'chmod 700 {home}' if the folder is ChargeBridge's alone, or choose another --home "
            "(or CHARGEBRIDGE_HOME) for a folder that is")


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
