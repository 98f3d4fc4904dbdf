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
    from agent.paths import Paths

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


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "agent.cli", "--home", str(home), *args],
                          capture_output=True, text=True, env=e, timeout=timeout, input=input)
from tests.peer_fixture import clean_peer, fhir_peer  # noqa: E402,F401  (real FHIR peer)
