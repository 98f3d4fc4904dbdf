"""Shared fixtures. Tests run inside scripts/with-keyring.sh, so the real Secret Service is there."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture()
def paths(tmp_path: Path):
    from core.paths import Paths

    p = Paths.resolve(tmp_path / "home")
    p.ensure()
    return p


@pytest.fixture()
def keyring_ok() -> None:
    """Fail loudly (not skip) when the real keyring is missing: the suite must prove it."""
    from agent import keys

    ok, desc = keys.keyring_status()
    assert ok, f"real OS keyring needed (run the suite via `make test`): {desc}"


@pytest.fixture()
def store(paths, keyring_ok):
    from agent.store import Store

    s = Store.open(paths, "keyring")
    yield s
    s.close()


@pytest.fixture()
def fast_store(paths):
    """A real SQLCipher store with a random key, for tests not about key handling."""
    from agent.store import Store

    s = Store.open_with_key(paths, secrets.token_bytes(32))
    yield s
    s.close()


def wait_until(cond, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    """Wait for ``cond`` with a hard timeout, waking on the engine's in-process change signal
    (every store commit bumps it) rather than sleeping. The short cap on each wait covers state
    that changes right after a commit (a file moved out of a watched folder, a counter)."""
    import time

    from agent import notify

    end = time.monotonic() + timeout
    seq = notify.seq()
    while not cond():
        left = end - time.monotonic()
        if left <= 0:
            return bool(cond())
        seq = notify.wait(seq, min(left, 0.25))
    return True


def start_test_engine(tmp_path: Path, *, roles=("front_desk", "manager", "admin"),  # type: ignore[no-untyped-def]
                      folder_format: str = ""):
    """A real engine in-process on a temp home: API on a free port, one watched folder, one user
    per role. The engine carries ``tokens``, ``export``, ``base`` and ``url`` for tests."""
    from agent import config as configmod
    from agent.engine import Engine
    from agent.users import add_user
    from core.paths import Paths

    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    fmt = f'format = "{folder_format}"\n' if folder_format else ""
    paths.config.write_text(f'[api]\nport = 0\n[[folders]]\npath = "{export}"\n{fmt}settle_seconds = 0.2\n')
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    eng.tokens = {r: add_user(eng.store(), f"{r}-user", r) for r in roles}
    eng.export = export
    eng.base = f"http://127.0.0.1:{eng.port}"
    eng.url = f"{eng.base}/api/v1"
    return eng


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "agent.cli", "--home", str(home), *args],
                          capture_output=True, text=True, env=e, timeout=timeout, input=input)
from tests.peer_fixture import clean_peer, fhir_peer  # noqa: E402,F401  (real FHIR peer)
