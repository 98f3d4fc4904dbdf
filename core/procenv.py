"""The environment and command line for processes ChargeBridge starts.

A frozen (PyInstaller) build changes its own environment so the bundled libraries are found:
the bootloader prepends the bundle to ``LD_LIBRARY_PATH`` (keeping the user's value in
``LD_LIBRARY_PATH_ORIG``), runtime hooks point ``QT_PLUGIN_PATH``, ``QML2_IMPORT_PATH`` and
``OPENSSL_MODULES`` into the bundle, and ``_PYI_*`` variables tell a re-executed bundle that it
is a child of this one. Passed on unchanged, they make another program (``xdg-open`` -> a file
manager, a browser, Node) load *our* Qt plugins and shared libraries and crash, or make a second
ChargeBridge process believe it belongs to the first one. So every ``subprocess`` call takes its
``env`` from here::

    subprocess.Popen(["xdg-open", folder], env=clean_env())                  # another program
    subprocess.Popen(self_command("--home", h, "engine"), env=clean_env(self_child=True))

Qt's own launchers (``QDesktopServices.openUrl``, ``QProcess``) pass the process environment
as it is: in a frozen build start the opener with ``subprocess`` and ``clean_env()`` instead.

Outside a frozen build both are no-ops (a copy of ``os.environ``; ``sys.executable -m agent.cli``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# Variables a PyInstaller build (bootloader or runtime hooks) sets or rewrites for itself.
_LIBRARY_VARS = ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "LIBPATH")
_BUNDLE_VARS = ("QT_PLUGIN_PATH", "QML2_IMPORT_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH", "OPENSSL_MODULES", "PATH")


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def _bundle_dir() -> str:
    return os.path.normcase(os.path.abspath(getattr(sys, "_MEIPASS", os.path.dirname(sys.executable))))


def _without_bundle(value: str) -> str:
    """``value`` (a path list) minus the entries that point into the bundle."""
    root = _bundle_dir()
    keep = []
    for p in value.split(os.pathsep):
        norm = os.path.normcase(os.path.abspath(p)) if p else ""
        if p and norm != root and not norm.startswith(root + os.sep):
            keep.append(p)
    return os.pathsep.join(keep)


def _strip_bundle(env: dict[str, str], var: str) -> None:
    """Drop the bundle's entries from the path list ``env[var]`` (and the variable if empty)."""
    if var in env:
        rest = _without_bundle(env[var])
        if rest:
            env[var] = rest
        else:
            del env[var]


def clean_env(env: Mapping[str, str] | None = None, *, self_child: bool = False) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) as it was before the frozen build changed it.

    ``self_child=True`` is for starting this same executable again (the tray starting the
    engine): it also sets ``PYINSTALLER_RESET_ENVIRONMENT=1`` so the child is an independent
    top-level instance that sets its own bundle paths up and may outlive the parent.
    """
    out = dict(os.environ if env is None else env)
    if not is_frozen():
        return out
    for var in _LIBRARY_VARS:
        orig = out.pop(f"{var}_ORIG", None)
        if orig is not None:
            out[var] = orig
        else:
            _strip_bundle(out, var)
    before = getattr(sys, "_chargebridge_env_at_start", None)  # saved by installer/rthook_env.py
    for var in _BUNDLE_VARS:
        if var != "PATH" and isinstance(before, dict):
            if var in before:
                out[var] = before[var]
            else:
                out.pop(var, None)
        else:
            _strip_bundle(out, var)
    for var in [k for k in out if k.startswith("_PYI_") or k == "_MEIPASS2"]:
        del out[var]
    if self_child:
        out["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    else:
        out.pop("PYINSTALLER_RESET_ENVIRONMENT", None)
    return out


def self_command(*args: str) -> list[str]:
    """argv that runs the ``chargebridge`` command line with ``args`` in a new process."""
    if is_frozen():
        return [sys.executable, *args]
    return [sys.executable, "-m", "agent.cli", *args]
