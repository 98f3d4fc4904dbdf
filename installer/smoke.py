"""Smoke test of the BUILT bundle (dist/chargebridge/chargebridge), not of the source tree.

    python installer/smoke.py [--build] [--exe PATH] [--skip-tray] [--screenshot PATH] [--keep]

Checks, in order (each one raises :class:`SmokeError` with what failed and the output to read):

1. ``--version``;
2. ``doctor`` on a fresh home: the OS keyring (Secret Service) works from the frozen build;
3. ``ingest`` of agent/demo_data/visit-20261120-0001.hl7 -> accepted 1, with an empty user cache
   dir so the ICD-10-CM table is built from the bundled simple-icd-10-cm data;
4. ``ingest`` of 20 files: the parse workers (multiprocessing "spawn" = the frozen executable
   started again) work;
5. ``demo``: bundled demo data, folder watchers (watchdog inotify);
6. ``engine``: starts, writes engine.json, answers GET /api/v1/health, stops on SIGTERM with 0;
7. the tray (``chargebridge --home H``) under Xvfb + trayer with QT_QPA_PLATFORM=xcb: it starts
   its own engine (the frozen executable again), its icon is embedded in the tray (the UI's
   CHARGEBRIDGE_UI_STATE_FILE hook and ``xwininfo -root -tree``), a screenshot shows it painted;
   then SIGTERM to the tray and to the engine it started, both must exit 0.

Needs the real keyring: outside ``scripts/with-keyring.sh`` the script re-runs itself inside it.
Standard library only; tests/e2e/test_frozen.py and tests/bench/bench_tray_start.py reuse these
functions.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist" / "chargebridge"
EXE = DIST / ("chargebridge.exe" if os.name == "nt" else "chargebridge")
SAMPLE_HL7 = ROOT / "agent" / "demo_data" / "visit-20261120-0001.hl7"
STATE_FILE_ENV = "CHARGEBRIDGE_UI_STATE_FILE"


class SmokeError(AssertionError):
    """A smoke check failed; the message says which and carries the output to read."""


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if not text:
        return "(no output)"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-lines:])


def _fail(what: str, proc: Any = None, extra: str = "") -> SmokeError:
    msg = what
    if proc is not None:
        msg += f"\n  exit code: {proc.returncode}\n  stdout:\n{_tail(proc.stdout)}\n  stderr:\n{_tail(proc.stderr)}"
    if extra:
        msg += "\n" + extra
    return SmokeError(msg)


# -- build and environment --------------------------------------------------------------------
def build(quiet: bool = False) -> Path:
    """Runs installer/build.sh; returns the executable."""
    proc = subprocess.run(["bash", str(ROOT / "installer" / "build.sh")], cwd=ROOT, text=True,
                          capture_output=quiet, timeout=900)
    if proc.returncode != 0:
        raise _fail("installer/build.sh failed", proc if quiet else None)
    if not EXE.exists():
        raise SmokeError(f"the build did not produce {EXE}")
    return EXE


def frozen_env(work: Path) -> dict[str, str]:
    """The environment for the frozen executable: ours minus anything that would make it use
    something other than the bundle (a venv, PYTHONPATH, a home), with an empty cache dir."""
    env = dict(os.environ)
    for var in ("CHARGEBRIDGE_HOME", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
                "QT_PLUGIN_PATH", "QML2_IMPORT_PATH", STATE_FILE_ENV):
        env.pop(var, None)
    cache = work / "xdg-cache"
    cache.mkdir(parents=True, exist_ok=True)
    env["XDG_CACHE_HOME"] = str(cache)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(exe: Path, *args: str, env: dict[str, str], timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SmokeError(f"`chargebridge {' '.join(args)}` did not finish in {timeout:.0f} s\n"
                         f"  stdout:\n{_tail(exc.stdout)}\n  stderr:\n{_tail(exc.stderr)}") from None


def new_home(work: Path, name: str, *, port: int = 0) -> Path:
    home = work / name
    home.mkdir(parents=True)
    (home / "chargebridge.toml").write_text(f"[api]\nport = {port}\n", encoding="utf-8")
    return home


# -- CLI checks -------------------------------------------------------------------------------
def check_version(exe: Path, env: dict[str, str]) -> str:
    proc = run(exe, "--version", env=env, timeout=60)
    if proc.returncode != 0 or not re.match(r"chargebridge \d+\.\d+", proc.stdout.strip()):
        raise _fail("`chargebridge --version` failed", proc)
    return proc.stdout.strip()


def check_doctor(exe: Path, home: Path, env: dict[str, str]) -> str:
    proc = run(exe, "--home", str(home), "doctor", env=env)
    if proc.returncode != 0 or "[FAIL]" in proc.stdout:
        raise _fail("`chargebridge doctor` failed from the frozen build (is this inside scripts/with-keyring.sh? "
                    "if the keyring line fails, the keyring backends were not bundled)", proc)
    if not re.search(r"\[ok\] (SecretService|Windows|macOS|libsecret|kwallet)\S* keyring is usable", proc.stdout):
        raise _fail("`chargebridge doctor` did not report a usable OS keyring", proc)
    return proc.stdout


def check_ingest(exe: Path, home: Path, env: dict[str, str], path: Path = SAMPLE_HL7) -> dict[str, int]:
    proc = run(exe, "--home", str(home), "ingest", "--json", str(path), env=env)
    try:
        totals = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise _fail("`chargebridge ingest --json` printed no totals", proc) from None
    if proc.returncode != 0 or totals.get("accepted") != 1 or totals.get("quarantined"):
        raise _fail(f"`chargebridge ingest {path.name}` should accept 1 encounter, got {totals}", proc)
    enc = run(exe, "--home", str(home), "encounters", "--json", env=env)
    rows = json.loads(enc.stdout) if enc.returncode == 0 else None
    if not rows or rows[0]["state"] != "ready":
        raise _fail("the ingested encounter is not 'ready' (ICD-10-CM data or validation broken in the bundle?)", enc)
    return totals


def check_bulk_ingest(exe: Path, home: Path, env: dict[str, str], work: Path, n: int = 20) -> dict[str, int]:
    """>= 16 files make `ingest` parse in spawn worker processes (the frozen exe started again)."""
    src = Path(tempfile.mkdtemp(prefix="bulk-exports-", dir=work))
    text = SAMPLE_HL7.read_text(encoding="utf-8")
    for i in range(n):
        (src / f"visit-{i:03d}.hl7").write_text(text.replace("0001", f"9{i:03d}"), encoding="utf-8")
    proc = run(exe, "--home", str(home), "ingest", "--json", str(src), env=env, timeout=300)
    try:
        totals = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise _fail("bulk `ingest --json` printed no totals", proc) from None
    if proc.returncode != 0 or totals.get("files") != n or totals.get("accepted") != n:
        raise _fail(f"bulk ingest of {n} files (parse workers) should accept {n}, got {totals}", proc)
    return totals


def check_demo(exe: Path, env: dict[str, str]) -> str:
    proc = run(exe, "demo", env=env, timeout=180)
    if proc.returncode != 0 or "nothing lost" not in proc.stdout:
        raise _fail("`chargebridge demo` failed (bundled demo data or folder watchers)", proc)
    return proc.stdout


# -- engine -----------------------------------------------------------------------------------
def read_engine_json(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / "engine.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_engine(home: Path, pid: int | None, proc: subprocess.Popen[Any] | None, timeout: float = 60) -> dict[str, Any]:
    """engine.json of the engine with ``pid`` (any pid if None), once /health answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise _fail("the engine exited during start-up", subprocess.CompletedProcess(proc.args, proc.returncode,
                                                                                         out, err))
        info = read_engine_json(home)
        if info and (pid is None or info.get("pid") == pid):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/api/v1/health", timeout=3) as r:
                    health = json.loads(r.read())
                if health.get("ok"):
                    info["health"] = health
                    return info
            except OSError:
                pass
        time.sleep(0.1)
    raise SmokeError(f"the engine did not answer /api/v1/health within {timeout:.0f} s (home {home})")


def stop(proc: subprocess.Popen[Any], timeout: float = 60, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    """Signal ``proc`` and wait; (exit code, stdout, stderr). Kills it (and says so) on timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
        raise _fail(f"{name} did not exit within {timeout:.0f} s of SIGTERM",
                    subprocess.CompletedProcess(proc.args, proc.returncode, out, err)) from None
    return proc.returncode, out or "", err or ""


def check_engine(exe: Path, home: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.Popen([str(exe), "--home", str(home), "engine"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_engine(home, proc.pid, proc)
    except BaseException:
        stop(proc, timeout=20, sig=signal.SIGKILL)
        raise
    code, out, err = stop(proc)
    if code != 0 or "engine stopped" not in out:
        raise _fail("the engine did not stop cleanly on SIGTERM",
                    subprocess.CompletedProcess(proc.args, code, out, err))
    return info


# -- X display with a system tray --------------------------------------------------------------
@dataclass
class Window:
    wid: str
    name: str
    klass: tuple[str, ...]
    x: int
    y: int
    w: int
    h: int
    depth: int
    children: list[Window] = field(default_factory=list)

    def walk(self) -> Iterator[Window]:
        yield self
        for c in self.children:
            yield from c.walk()


# e.g. '     0x400007 "ChargeBridge": ("chargebridge" "ChargeBridge")  22x22+0+0  +1001+1'
_WIN = re.compile(r'^(\s*)(0x[0-9a-f]+) (?:"(.*)"|\(has no name\)): \(([^)]*)\)\s+'
                  r'(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)')


def window_tree(display: str) -> list[Window]:
    """Top-level windows (with children) from ``xwininfo -root -tree``, absolute geometry."""
    out = subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True, text=True,
                         timeout=10).stdout
    roots: list[Window] = []
    stack: list[Window] = []
    for line in out.splitlines():
        m = _WIN.match(line)
        if not m:
            continue
        indent, wid, name, klass, w, h, x, y = m.groups()
        win = Window(wid, name or "", tuple(re.findall(r'"([^"]*)"', klass)), int(x), int(y), int(w), int(h),
                     len(indent))
        while stack and stack[-1].depth >= win.depth:
            stack.pop()
        (stack[-1].children if stack else roots).append(win)
        stack.append(win)
    return roots


def tray_panel(display: str) -> Window | None:
    for w in window_tree(display):
        if w.klass[-1:] == ("trayer",) and w.name == "panel":
            return w
    return None


def embedded_icons(display: str) -> list[Window]:
    """Client windows embedded in trayer's panel (an XEmbed tray icon is a classed window in it)."""
    panel = tray_panel(display)
    if panel is None:
        return []
    return [w for w in panel.walk() if w is not panel and w.klass and w.w > 1 and w.h > 1]


class TrayDisplay:
    """Xvfb + trayer (an XEmbed system tray), torn down on exit."""

    def __init__(self, size: str = "1024x768x24") -> None:
        self.size = size
        self.display = ""
        self.procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> TrayDisplay:
        for tool in ("Xvfb", "trayer", "xwininfo", "import"):
            if shutil.which(tool) is None:
                raise SmokeError(f"{tool} is not installed (apt-get install xvfb trayer x11-utils imagemagick)")
        r, w = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", self.size, "-nolisten", "tcp"],
                                pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self.procs.append(xvfb)
        try:
            buf = b""
            deadline = time.monotonic() + 20
            while not buf.endswith(b"\n") and time.monotonic() < deadline:
                chunk = os.read(r, 16)
                if not chunk:
                    break
                buf += chunk
        finally:
            os.close(r)
        if not buf.strip().isdigit():
            self.__exit__(None, None, None)
            raise SmokeError("Xvfb did not start (no display number)")
        self.display = f":{buf.strip().decode()}"
        env = dict(os.environ, DISPLAY=self.display)
        self.procs.append(subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "24",
             "--SetDockType", "true", "--transparent", "false", "--tint", "0xdddddd"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while tray_panel(self.display) is None:
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                self.__exit__(None, None, None)
                raise SmokeError("trayer did not show its panel on Xvfb")
            time.sleep(0.1)
        time.sleep(0.3)  # the panel owns _NET_SYSTEM_TRAY_S0 right after mapping
        return self

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return dict(base, DISPLAY=self.display, QT_QPA_PLATFORM="xcb")

    def screenshot(self, path: Path) -> Path:
        subprocess.run(["import", "-display", self.display, "-window", "root", str(path)], check=True,
                       capture_output=True, timeout=30)
        return path

    def __exit__(self, *exc: Any) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()


def colours_in(image: Path, x: int, y: int, w: int, h: int) -> int:
    """How many distinct colours the screenshot has in that rectangle (a painted icon has many)."""
    tool = shutil.which("magick") or shutil.which("convert")
    out = subprocess.run([tool or "convert", str(image), "-crop", f"{w}x{h}+{x}+{y}", "+repage", "-format", "%k",
                          "info:"], capture_output=True, text=True, timeout=30)
    try:
        return int(out.stdout.strip())
    except ValueError:
        return 0


@contextlib.contextmanager
def child_subreaper() -> Iterator[bool]:
    """Linux: become the parent of orphaned descendants while inside, so the exit code of the
    engine that the tray starts detached (and leaves running) can be collected with waitpid."""
    libc = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(None, use_errno=True)
    ok = bool(libc is not None and libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield ok
    finally:
        if ok and libc is not None:
            libc.prctl(36, 0, 0, 0, 0)


def wait_pid(pid: int, timeout: float) -> int | None:
    """Exit code of ``pid`` (our child or reparented to us), None if it did not exit in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours: wait for it to disappear
            if not Path(f"/proc/{pid}").exists():
                return -999
            time.sleep(0.1)
            continue
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    return None


def prepare_tray_home(exe: Path, home: Path, env: dict[str, str]) -> None:
    """A configured home (no first-run wizard) whose API token is in the keyring (no sign-in)."""
    proc = run(exe, "--home", str(home), "users", "add", "smoke-admin", "--role", "admin", "--save", env=env)
    if proc.returncode != 0:
        raise _fail("`chargebridge users add --save` failed (keyring from the frozen build?)", proc)


def launch_tray(cmd: list[str], env: dict[str, str], state_file: Path | None) -> subprocess.Popen[str]:
    e = dict(env)
    if state_file is not None:
        e[STATE_FILE_ENV] = str(state_file)
    return subprocess.Popen(cmd, env=e, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_tray_icon(proc: subprocess.Popen[str], display: str, state_file: Path | None,
                   timeout: float = 60, before: set[str] | None = None,
                   poll: float = 0.05) -> tuple[float, dict[str, Any], Window]:
    """Seconds until the icon is embedded in the tray; (seconds, UI state or {}, icon window).

    Embedded = a new classed client window inside trayer's panel (xwininfo) and, when the UI
    writes the state file, ``tray_visible`` true there as well."""
    t0 = time.monotonic()
    before = before if before is not None else {w.wid for w in embedded_icons(display)}
    state: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise _fail("the tray exited before its icon appeared",
                        subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        new = [w for w in embedded_icons(display) if w.wid not in before]
        if state_file is not None and state_file.exists():
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_file.read_text(encoding="utf-8"))
        hook_ok = state_file is None or not state_file.exists() or bool(state.get("tray_visible"))
        if new and hook_ok:
            return time.monotonic() - t0, state, new[0]
        time.sleep(poll)
    raise SmokeError(f"no tray icon was embedded in trayer within {timeout:.0f} s; UI state: {state or 'none'}; "
                     f"panel: {[(w.name, w.klass) for w in embedded_icons(display)]}")


def wait_ui_state(state_file: Path, ok, timeout: float, what: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if ok(state):
                return state
        time.sleep(0.1)
    raise SmokeError(f"timed out after {timeout:.0f} s waiting for {what}; last UI state: {state or 'none'}")


def check_tray(exe: Path, home: Path, env: dict[str, str], work: Path, *, screenshot: Path | None = None,
               timeout: float = 90) -> dict[str, Any]:
    """The tray from the frozen build: starts its engine, shows its icon, exits 0 on SIGTERM."""
    prepare_tray_home(exe, home, env)
    state_file = work / "ui-state.json"
    state_file.unlink(missing_ok=True)
    shot = screenshot or (work / "tray.png")
    with TrayDisplay() as disp, child_subreaper() as reaper:
        tray = launch_tray([str(exe), "--home", str(home)], disp.env(env), state_file)
        engine_pid = None
        try:
            secs, state, icon = wait_tray_icon(tray, disp.display, state_file, timeout=timeout)
            info = wait_engine(home, None, None, timeout=30)
            engine_pid = int(info["pid"])
            # the icon may show before the UI has written its first state (or reached its engine):
            # wait for the state file rather than skipping the check when it is not there yet
            state = wait_ui_state(state_file, lambda st: st.get("state") not in (None, "offline"), 30,
                                  "the tray to reach its engine (state other than offline)")
            time.sleep(0.5)  # let the icon paint
            disp.screenshot(shot)
            n = colours_in(shot, icon.x, icon.y, icon.w, icon.h)
            if n < 3:
                raise SmokeError(f"the tray icon area {icon.w}x{icon.h}+{icon.x}+{icon.y} in {shot} is blank "
                                 f"({n} colour(s)); the icon was embedded but not painted")
        except BaseException:
            if tray.poll() is None:
                stop(tray, timeout=20, sig=signal.SIGKILL)
            left = read_engine_json(home)
            if left and left.get("pid"):
                with contextlib.suppress(OSError):
                    os.kill(int(left["pid"]), signal.SIGKILL)
                wait_pid(int(left["pid"]), 10)
            raise
        code, out, err = stop(tray, timeout=60)
        if code != 0:
            raise _fail("the tray did not exit cleanly on SIGTERM", subprocess.CompletedProcess(tray.args, code, out,
                                                                                               err))
        # the tray leaves the engine running (by design); stop it like a service manager would
        os.kill(engine_pid, signal.SIGTERM)
        ecode = wait_pid(engine_pid, 60)
        if ecode is None:
            os.kill(engine_pid, signal.SIGKILL)
            wait_pid(engine_pid, 10)
            raise SmokeError("the engine started by the tray did not exit within 60 s of SIGTERM")
        if reaper and ecode != 0:
            raise SmokeError(f"the engine started by the tray exited with {ecode} on SIGTERM; see "
                             f"{home / 'logs' / 'chargebridge.log'}")
    return {"seconds_to_icon": round(secs, 2), "state": state.get("state"), "tooltip": state.get("tooltip"),
            "engine_started_by_ui": state.get("engine_started_by_ui"), "icon": (icon.w, icon.h),
            "icon_colours": n, "screenshot": str(shot), "engine_exit": ecode if reaper else "not observable"}


# -- all of it --------------------------------------------------------------------------------
def run_all(exe: Path, work: Path, *, tray: bool = True, screenshot: Path | None = None,
            log=print) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    env = frozen_env(work)
    results: dict[str, Any] = {}

    def step(name: str, fn, *a: Any, **kw: Any) -> Any:  # type: ignore[no-untyped-def]
        t = time.monotonic()
        try:
            res = fn(*a, **kw)
        except SmokeError as exc:
            log(f"FAIL  {name}: {exc}")
            raise SmokeError(f"{name}: {exc}") from None
        results[name] = res
        log(f"ok    {name} ({time.monotonic() - t:.1f} s)")
        return res

    step("version", check_version, exe, env)
    home = new_home(work, "home")
    step("doctor", check_doctor, exe, home, env)
    step("ingest", check_ingest, exe, home, env)
    step("bulk-ingest", check_bulk_ingest, exe, home, env, work)
    step("demo", check_demo, exe, env)
    step("engine", check_engine, exe, home, env)
    if tray:
        res = step("tray", check_tray, exe, new_home(work, "tray-home"), env, work, screenshot=screenshot)
        log(f"      tray icon after {res['seconds_to_icon']} s, state {res['state']!r}, "
            f"screenshot {res['screenshot']}")
    return results


def _in_keyring_session() -> bool:
    return os.environ.get("CHARGEBRIDGE_IN_KEYRING_SESSION") == "1" or os.name == "nt" or sys.platform == "darwin"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="store_true", help="run installer/build.sh first")
    ap.add_argument("--exe", type=Path, default=EXE, help=f"the built executable (default {EXE})")
    ap.add_argument("--skip-tray", action="store_true", help="skip the tray check (no X tools here)")
    ap.add_argument("--screenshot", type=Path, help="where to keep the tray screenshot")
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = ap.parse_args(argv)
    if not _in_keyring_session():  # the keyring must be real: re-run inside a keyring session
        script = ROOT / "scripts" / "with-keyring.sh"
        os.execvp("bash", ["bash", str(script), sys.executable, str(Path(__file__).resolve()),
                           *(argv if argv is not None else sys.argv[1:])])
    try:
        exe = build() if args.build else args.exe
        if not exe.exists():
            raise SmokeError(f"{exe} does not exist; build it with: bash installer/build.sh")
        work = Path(tempfile.mkdtemp(prefix="chargebridge-smoke-"))
        try:
            shot = args.screenshot or (ROOT / "build" / "smoke-tray.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            run_all(exe, work, tray=not args.skip_tray, screenshot=shot)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    except SmokeError as exc:
        print(f"\nSMOKE FAILED: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print("\nsmoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
