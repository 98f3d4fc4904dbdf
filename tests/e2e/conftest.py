"""Fixtures shared by the end-to-end tests of the built product.

``frozen_exe`` builds the PyInstaller bundle once per session (installer/build.sh through
installer/smoke.py), whichever test asks first — test_deb.py packs it into a .deb, test_frozen.py
runs it. ``CHARGEBRIDGE_REUSE_BUNDLE=1`` reuses an existing dist/chargebridge instead, and
``CHARGEBRIDGE_REUSE_BUNDLE=DIR`` the bundle in DIR (for local iteration; CI leaves it unset and
always builds from the tree under test).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from installer import smoke


@pytest.fixture(scope="session")
def frozen_exe() -> Path:
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (pip install -e '.[test]')")
    reuse = os.environ.get("CHARGEBRIDGE_REUSE_BUNDLE", "")
    if reuse:
        exe = smoke.EXE if reuse == "1" else Path(reuse) / smoke.EXE.name
        if not exe.is_file():
            pytest.fail(f"CHARGEBRIDGE_REUSE_BUNDLE: {exe} does not exist")
        return exe
    try:
        return smoke.build(quiet=True)
    except smoke.SmokeError as exc:
        pytest.fail(str(exc))
