"""A real X display (Xvfb) with a real XEmbed system tray (trayer) for the tray's end-to-end tests.

Missing tools FAIL the tests instead of skipping them: CI installs them (scripts/setup.sh), so a
skip would only hide that the tray was never tested against a real tray.

Every wait has a deadline and every process is stopped in a ``finally``.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

TOOLS = ("Xvfb", "trayer", "xwininfo", "import", "convert")
TRAYER_ARGS = ["--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32",
               "--transparent", "false", "--tint", "0x303030", "--SetDockType", "true"]


def require_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the tray end-to-end tests need {', '.join(missing)} "
                    "(Debian: xvfb trayer x11-utils imagemagick; run scripts/setup.sh)")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.1,
              diagnose: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on the deadline.

    Polling is the only way to watch another process's X windows and state file; the interval
    is short and the deadline hard.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any] | None, *, timeout: float = 30, sig: int = signal.SIGTERM) -> int | None:
    """SIGTERM, wait, then SIGKILL: never leaves a process behind."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    return proc.wait(timeout=10)


def stop_pid(pid: int, *, timeout: float = 30) -> None:
    """The same for a process we did not start (the engine the tray app started, detached)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def xvfb(log: Path, *, timeout: float = 20) -> Iterator[str]:
    """Xvfb on a free display; yields its name (":N").

    ``-displayfd`` lets the server pick the first free display number itself and tell us which,
    so two test runs (or a developer's own X server) never race for the same number.
    """
    rfd, wfd = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1280x800x24",
                                     "-nolisten", "tcp"], pass_fds=(wfd,), stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        os.close(wfd)
        wfd = -1
        ready, _, _ = select.select([rfd], [], [], timeout)
        number = os.read(rfd, 32).decode().strip() if ready else ""
        if not number.isdigit():
            pytest.fail(f"Xvfb did not report a display within {timeout:.0f}s: {log.read_text()[-2000:]}")
        display = f":{number}"
        wait_for(lambda: _x_ok(display), timeout, f"Xvfb {display} to accept connections")
        yield display
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)
        stop_process(proc, timeout=10)


def _x_ok(display: str) -> bool:
    r = subprocess.run(["xwininfo", "-root", "-display", display], capture_output=True, timeout=10)
    return r.returncode == 0


def x_env(display: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DISPLAY": display, "QT_QPA_PLATFORM": "xcb", **extra})
    env.pop("WAYLAND_DISPLAY", None)
    return env


def selection_owner(display: str, selection: str = "_NET_SYSTEM_TRAY_S0") -> int:
    """The X window owning ``selection`` (0 = none) — exactly what a tray client checks."""
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XGetSelectionOwner.restype = ctypes.c_ulong
    x11.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        return 0
    try:
        return int(x11.XGetSelectionOwner(dpy, x11.XInternAtom(dpy, selection.encode(), 0)))
    finally:
        x11.XCloseDisplay(dpy)


@contextmanager
def trayer(display: str, log: Path, *, timeout: float = 20) -> Iterator[subprocess.Popen[bytes]]:
    """trayer as the system tray of ``display``; ready once it owns _NET_SYSTEM_TRAY_S0."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(["trayer", *TRAYER_ARGS], env=x_env(display), stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        wait_for(lambda: selection_owner(display), timeout, "trayer to own the system tray selection",
                 diagnose=lambda: log.read_text()[-2000:])
        yield proc
    finally:
        stop_process(proc, timeout=10)


def window_tree(display: str) -> str:
    return subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True, text=True,
                          timeout=10).stdout


_WIN = re.compile(r"^(\s*)(0x[0-9a-f]+) (.*)$")


def embedded_in_tray(display: str, name: str) -> str:
    """The xwininfo line of a window named ``name`` inside trayer's panel ("" when none): the
    proof that the icon was really embedded (XEmbed), not merely created."""
    lines = window_tree(display).splitlines()
    for i, line in enumerate(lines):
        m = _WIN.match(line)
        if not m or '"panel"' not in m.group(3) or '"trayer"' not in m.group(3):
            continue
        indent = len(m.group(1))
        for sub in lines[i + 1:]:
            s = _WIN.match(sub)
            if s is None:
                if sub.strip() and len(sub) - len(sub.lstrip()) <= indent:
                    break
                continue
            if len(s.group(1)) <= indent:
                break
            if f'"{name}"' in s.group(3):
                return sub.strip()
    return ""


def screenshot(display: str, path: Path, *, crop: tuple[int, int, int, int] | None = None) -> list[Path]:
    """The whole screen to ``path``; with ``crop`` (x, y, w, h) also a 4x zoom of that area
    beside it (``*-zoom.png``), so a person can see the 22-px icon."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["import", "-display", display, "-window", "root", str(path)], check=True, timeout=30,
                   capture_output=True)
    out = [path]
    if crop is not None:
        x, y, w, h = crop
        zoom = path.with_name(path.stem + "-zoom.png")
        subprocess.run(["convert", str(path), "-crop", f"{w}x{h}+{x}+{y}", "+repage", "-filter", "point",
                        "-resize", "400%", str(zoom)], check=True, timeout=30, capture_output=True)
        out.append(zoom)
    return out
