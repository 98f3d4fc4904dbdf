"""``chargebridge`` with no verb: the tray app (and the main window behind it).

Start-up, all without blocking the UI thread (every wait is a QTimer or an async API call):

1. resolve the home (``--home`` / ``CHARGEBRIDGE_HOME`` / the platform default);
2. find the engine: ``--engine-url`` (a remote engine: https, or http on loopback only), else
   ``engine.json`` in the home + ``GET /api/v1/health``; if no local engine answers, start one
   detached (``python -m agent.cli --home H engine``, or ``<frozen exe> --home H engine``) and
   wait for its ``engine.json``. On first run (no ``engine.json``, no ``chargebridge.toml``)
   this starts an engine with default settings, which is what the wizard talks to;
3. a local engine whose health says ``setup_needed`` (no user exists yet) → the first-run
   wizard (:mod:`ui.wizard`), which does all its work through the API with the engine's
   one-time setup token and creates the first account;
4. the API token from the OS keyring (``api-token``, what ``chargebridge users add --save`` and
   ``chargebridge login`` keep), else the sign-in dialog;
5. the tray (:class:`ui.tray.TrayController`) and, on demand, the main window.

Quit stops this process's watchers cleanly and leaves the engine running — both an engine
that was already running and one this app started. The engine is the practice's intake: files
keep arriving in the watched folders and charges keep syncing whether or not anybody has the
tray open, and an engine that survives the user's logout or a tray crash is the safe default.
Stop it with ``chargebridge`` service tooling or SIGTERM, never implicitly.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import shiboken6
from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QInputDialog, QLineEdit, QMessageBox, QWidget

from core.errors import ChargeBridgeError
from core.paths import Paths, holder_alive
from core.states import EngineState
from core.urls import check_url

log = logging.getLogger("chargebridge.ui")

STATE_FILE_ENV = "CHARGEBRIDGE_UI_STATE_FILE"
ENGINE_START_TIMEOUT_S = 60.0
# The change feed's long-poll length. A watcher can only stop between polls, so this bounds how
# long the (already hidden) process lingers after Quit; an idle poll every 10 s costs nothing.
WATCH_POLL_SECONDS = 10.0
QUIT_GRACE_MS = 45_000  # the most we wait for the watcher on quit before leaving anyway


def protect_none_refcount() -> bool:
    """Work around PySide6 6.12.0 on Python < 3.12, which returns ``None`` from void methods
    without a new reference: every ``widget.setX(...)`` drops one reference to ``None`` and a
    long-running tray would die with "deallocating None" after a few thousand calls.

    Applied only when the bug is measured (a void call that loses references), by giving
    ``None`` a reference count no process can exhaust — what Python 3.12 does by design
    (immortal ``None``). Returns True when it had to. Remove once PySide6 is pinned to a fixed
    release (6.11.x does not have the bug).
    """
    if sys.version_info >= (3, 12):
        return False
    from PySide6.QtCore import QObject as _Probe

    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(16):
        probe.setObjectName("probe")
    if before - sys.getrefcount(None) < 16:
        return False
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += 1 << 40
    return True


# -- arguments --------------------------------------------------------------------------------
def check_engine_url(url: str) -> str:
    """The engine base URL, or ValueError: https always, plain http only on this machine (the
    kernel's one URL rule, :func:`core.urls.check_url`)."""
    try:
        check_url(url.strip(), key="--engine-url", what="--engine-url")
    except ChargeBridgeError as exc:
        raise ValueError(f"{exc.title}; give {exc.fix}" if exc.fix else exc.title) from None
    parts = urlsplit(url.strip())
    base = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    return base[: -len("/api/v1")] if base.endswith("/api/v1") else base


def build_parser() -> argparse.ArgumentParser:
    """The tray's own options (``python -m ui.app``); the ``chargebridge`` launcher passes the
    same names from its parser."""
    p = argparse.ArgumentParser(prog="chargebridge", description="ChargeBridge tray and window.")
    p.add_argument("--home", help="directory for config, store, logs and lock (or CHARGEBRIDGE_HOME)")
    p.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    p.add_argument("--engine-url", metavar="URL", help="a remote engine (https; http only on loopback)")
    p.add_argument("--ca-bundle", metavar="PEM", help="with --engine-url: the practice CA's certificates")
    return p


def _parse(args: argparse.Namespace | list[str] | None) -> argparse.Namespace:
    if isinstance(args, argparse.Namespace):
        return args
    return build_parser().parse_args(args)


def _setup_logging(paths: Paths, verbose: bool) -> None:
    """The UI logs to its own file: the engine rotates chargebridge.log, and two processes
    rotating one file lose lines. States, counts and kinds only — never patient data."""
    root = logging.getLogger("chargebridge.ui")
    if root.handlers:
        return
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        paths.logs.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(paths.logs / "ui.log", maxBytes=2_000_000, backupCount=3,
                                                  encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
        root.addHandler(fh)
    except OSError:
        pass
    eh = logging.StreamHandler(sys.stderr)
    eh.setLevel(logging.DEBUG if verbose else logging.WARNING)
    eh.setFormatter(logging.Formatter("chargebridge-ui: %(message)s"))
    root.addHandler(eh)


def engine_command(home: Path) -> list[str]:
    """How to start this installation's engine: the frozen executable, or this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--home", str(home), "engine"]
    return [sys.executable, "-m", "agent.cli", "--home", str(home), "engine"]


def _lock_held(paths: Paths) -> bool:
    """Does a live process hold this home's engine lock? (never takes the lock: a probe must
    not make a starting engine fail)."""
    return holder_alive(paths)


def spawn_engine(home: Path) -> subprocess.Popen[bytes]:
    """Start the engine detached from this process: it must outlive the tray (see the module
    docstring) and must not get the tray's Ctrl-C or terminal hang-up."""
    kw: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                          "stderr": subprocess.DEVNULL, "cwd": str(home), "close_fds": True}
    if os.name == "nt":
        kw["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kw["start_new_session"] = True
    from core.procenv import clean_env

    # a frozen build's own library paths must not leak into the engine it starts
    return subprocess.Popen(engine_command(home), env=clean_env(self_child=True), **kw)


# -- the app ----------------------------------------------------------------------------------
class Bootstrap(QObject):
    """Start-up as a small state machine driven by async callbacks; then owns tray and window."""

    def __init__(self, app: QApplication, paths: Paths, *, remote_url: str = "", ca_bundle: str = "") -> None:
        super().__init__()
        self.setObjectName("chargebridge-bootstrap")
        self.app, self.paths, self.remote_url, self.ca_bundle = app, paths, remote_url, ca_bundle
        self.client: Any = None
        self.tray: Any = None
        self.window: QWidget | None = None
        self.role, self.user = "front_desk", ""  # least privilege until the engine says otherwise
        self.engine_proc: subprocess.Popen[bytes] | None = None
        self.started_engine = False
        self.exit_code = 0
        self._quitting = False
        self._probing = False
        self._deadline = 0.0
        self._poll = QTimer(self)
        self._poll.setObjectName("chargebridge-engine-wait")
        self._poll.setInterval(300)
        self._poll.timeout.connect(self._engine_tick)
        self._rediscover = QTimer(self)
        self._rediscover.setObjectName("chargebridge-engine-rediscover")
        self._rediscover.setInterval(10_000)
        self._rediscover.timeout.connect(self._check_engine_moved)
        self._keep: list[QObject] = []  # throw-away probe clients, alive until their answer
        self._wizard_token = ""

    # -- steps --------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.remote_url and not self.paths.engine_info.exists():
            from core.pairing import load_remote  # a front-desk PC paired with the practice server (H7)

            remote = load_remote(self.paths)
            if remote is not None:
                self.remote_url, self.ca_bundle = remote.url, str(remote.ca_file)
        if self.remote_url:
            self._have_engine(self.remote_url)
            return
        self._find_local()

    def _first_run(self, url: str) -> bool:
        """The wizard, against the engine at ``url`` (which has no user yet). False = cancelled."""
        try:
            from ui.wizard import FirstRunWizard
        except ImportError:
            self._note("ChargeBridge runs with default settings: the first-run setup is not part of this "
                       f"build. Use `chargebridge --home \"{self.paths.home}\" users add NAME --role admin --save`, "
                       f"then Settings, to add watched folders and the billing system.")
            return True
        wiz = FirstRunWizard(self.paths, url, ca_bundle=self.ca_bundle)
        accepted = wiz.exec() == QDialog.DialogCode.Accepted
        paired: Any = getattr(wiz, "connected", None)
        if paired is not None and paired.token:
            self._paired_instead(paired)
            return True
        # the wizard keeps the account it created in the keyring; its token is the fallback
        self._wizard_token = str(getattr(wiz, "token", "") or "")
        return accepted or bool(self._wizard_token)

    def _find_local(self) -> None:
        from ui.client import engine_url

        url = engine_url(self.paths.home)
        if not url:
            self._start_engine()
            return
        self._probe(url, lambda health: self._have_engine(url, health) if health else self._start_engine())

    def _probe(self, url: str, done: Callable[[dict[str, Any] | None], None]) -> None:
        """GET /health on a worker thread; ``done(health)`` when it answers 200, ``done(None)`` if not."""
        from ui.client import ApiClient

        probe = ApiClient(url, "", ca_bundle=self.ca_bundle, parent=self)
        self._keep.append(probe)

        def finish(health: dict[str, Any] | None) -> None:
            self._retire(probe)
            done(health)

        probe.call("GET", "/api/v1/health", timeout=3,
                   on_ok=lambda r: finish(dict(r) if isinstance(r, dict) and r else {"ok": True}),
                   on_error=lambda _f: finish(None))

    def _start_engine(self) -> None:
        log.info("no engine answers for this home; starting one")
        try:
            self.engine_proc = spawn_engine(self.paths.home)
        except OSError as exc:
            self._fail(f"The ChargeBridge engine could not be started ({type(exc).__name__}).")
            return
        self.started_engine = True
        self._deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
        self._poll.start()

    def _engine_tick(self) -> None:
        """Every 300 ms until the engine we started answers (or clearly will not)."""
        if self._probing:
            return
        from ui.client import engine_url

        url = engine_url(self.paths.home)
        code = self.engine_proc.poll() if self.engine_proc is not None else None
        # exit 2 with the lock held = another engine (a service, another tray) is starting up:
        # keep waiting for its engine.json until the deadline instead of failing
        exited = code is not None and not (code == 2 and _lock_held(self.paths))
        if url:
            self._probing = True

            def done(health: dict[str, Any] | None) -> None:
                self._probing = False
                if health and self._poll.isActive():
                    self._poll.stop()
                    self._have_engine(url, health)
                elif exited:  # a stale engine.json and our engine is gone
                    self._engine_failed()

            self._probe(url, done)
            return
        if exited or time.monotonic() > self._deadline:
            self._engine_failed()

    def _engine_failed(self) -> None:
        self._poll.stop()
        code = self.engine_proc.poll() if self.engine_proc is not None else None
        what = f"stopped right after starting (exit code {code})" if code is not None else "did not answer in time"
        self._fail(f"The ChargeBridge engine {what}. Its log is in {self.paths.logs}; "
                   f"`chargebridge --home \"{self.paths.home}\" doctor` lists what to fix.")

    def _have_engine(self, url: str, health: dict[str, Any] | None = None) -> None:
        setup = not self.remote_url and (health or {}).get("setup_needed") is True and not self._wizard_token
        if setup and not self._first_run(url):
            self.quit(0)  # the engine keeps running (see the module docstring); setup waits for next time
            return
        url = self.remote_url or url  # the wizard may have paired this PC with a practice server
        from core import secrets
        from core.secrets import API_TOKEN as TOKEN_SECRET

        try:
            token = secrets.get_secret(self.paths, TOKEN_SECRET) or ""
        except ChargeBridgeError as exc:
            log.warning("no token from the keyring: %s", exc.title)
            token = ""
        token = token or self._wizard_token
        if not token:
            self._sign_in(url)
            return
        self._verify(url, token)

    def _paired_instead(self, paired: Any) -> None:
        """The first-run wizard paired this PC with the practice server: use that engine, and stop
        the empty local engine started only for the wizard (no user, a live setup token) — a
        front-desk PC runs no engine. Next start, the saved pairing is used (see :meth:`start`)."""
        self.remote_url, self.ca_bundle = paired.url, paired.ca_bundle
        self._wizard_token = paired.token
        proc, self.engine_proc = self.engine_proc, None
        if self.started_engine and proc is not None and hasattr(proc, "terminate"):
            log.info("paired with a practice server; stopping the local engine started for setup")
            try:
                proc.terminate()
            except OSError:
                pass
        self.started_engine = False

    def _retire(self, client: Any) -> None:
        """Drop a throw-away API client once nothing of it can still run. Never from inside its
        own answer: the answer is delivered by that client's slot, and deleting the object (and
        its thread pool) while its slot and pool are still on the stack crashed the tray now and
        then. So: wait for its pool from the event loop, then delete it."""
        if client not in self._keep:
            self._keep.append(client)

        def drop() -> None:
            if shiboken6.isValid(client):
                client.pool.waitForDone(5000)
                client.deleteLater()
            if client in self._keep:
                self._keep.remove(client)

        QTimer.singleShot(0, drop)

    def _verify(self, url: str, token: str) -> None:
        """One /status call: learns the role for the window, and whether the token still works."""
        from ui.client import ApiClient

        client = ApiClient(url, token, ca_bundle=self.ca_bundle, parent=self)

        def ok(st: Any) -> None:
            user = (st or {}).get("user") or {}
            self.role, self.user = str(user.get("role") or self.role), str(user.get("name") or "")
            self._ready(client)

        def bad(failure: Any) -> None:
            if failure.status == 401:
                self._retire(client)
                self._sign_in(url, reason="The saved sign-in was not accepted by the engine; sign in again.")
            else:  # not reachable right now: the tray shows offline and its watcher keeps trying
                self._ready(client)

        client.call("GET", "/api/v1/status", timeout=15, on_ok=ok, on_error=bad)

    def _sign_in(self, url: str, reason: str = "") -> None:
        try:
            from ui.signin import SignInDialog
        except ImportError:
            token, ok = QInputDialog.getText(None, "Sign in to ChargeBridge",
                                             "API token (from chargebridge users add):", QLineEdit.EchoMode.Password)
            if not ok or not token.strip():
                self.quit(0)
                return
            self._verify(url, token.strip())
            return
        # "remember on this computer" is the dialog's own choice (it keeps the token in the
        # keyring entry the CLI uses); this app never saves a token silently
        dlg = SignInDialog(url, **_supported(SignInDialog, paths=None if self.remote_url else self.paths,
                                             ca_bundle=self.ca_bundle, reason=reason, pair_home=self.paths))
        if dlg.exec() != QDialog.DialogCode.Accepted or not dlg.token:
            self.quit(0)
            return
        if getattr(dlg, "connected", False):  # paired with a practice server from the sign-in dialog
            self.remote_url, self.ca_bundle, url = dlg.url, dlg.ca_bundle, dlg.url
        self.role, self.user = str(getattr(dlg, "role", "") or self.role), str(getattr(dlg, "user", "") or "")
        from ui.client import ApiClient

        self._ready(ApiClient(url, dlg.token, ca_bundle=self.ca_bundle, parent=self))

    def _ready(self, client: Any) -> None:
        from ui.client import ChangeWatcher
        from ui.tray import TrayController

        self.client = client
        self.tray = TrayController(
            client, lambda: ChangeWatcher(client.url, client.token, ca_bundle=self.ca_bundle,
                                          poll_timeout=WATCH_POLL_SECONDS),
            state_file=os.environ.get(STATE_FILE_ENV) or None,
            extra_state=lambda: {"window_visible": bool(self.window is not None and self.window.isVisible()),
                                 "engine_started_by_ui": self.started_engine},
            parent=self)
        self.tray.open_requested.connect(self.show_window)
        self.tray.quit_requested.connect(lambda: self.quit(0))
        self.tray.state_changed.connect(self._on_state)
        self.tray.notified.connect(self._on_notified)
        self.tray.start()
        log.info("tray running (engine %s)", "started by the UI" if self.started_engine else "already running")

    # -- window -------------------------------------------------------------------------------
    def show_window(self, page: str = "status") -> None:
        if self._quitting:
            return
        if self.window is None:
            self.window = self._make_window()
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()
        if hasattr(self.window, "show_page"):
            self.window.show_page(page)
        if hasattr(self.window, "refresh"):
            self.window.refresh()
        if self.tray is not None:
            self.tray.write_state()

    def _make_window(self) -> QWidget:
        if self.tray is not None and self.tray.role:
            self.role, self.user = self.tray.role, self.tray.user
        try:
            from ui.main_window import MainWindow
        except ImportError:
            box = QMessageBox(QMessageBox.Icon.Information, "ChargeBridge",
                              "ChargeBridge is running.\n\n" + (self.tray.tooltip_text if self.tray else ""))
            box.setModal(False)
            return box
        window = MainWindow(self.client, role=self.role, user=self.user,
                            **_supported(MainWindow, paths=None if self.remote_url else self.paths))
        if self.tray is not None and hasattr(window, "engine_changed"):
            self.tray.changed.connect(window.engine_changed)  # one change feed for tray and window
        return window

    def _on_notified(self, kind: str, title: str, body: str) -> None:
        """Without a tray there is no balloon: the open window's status bar carries it instead."""
        if self.tray is not None and not self.tray.tray_visible and self.window is not None:
            bar = getattr(self.window, "statusBar", None)
            if callable(bar):
                bar().showMessage(f"{title}: {body}", 15_000)

    # -- engine moved / gone ------------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        if state == EngineState.OFFLINE and not self.remote_url:
            self._rediscover.start()
        else:
            self._rediscover.stop()

    def _check_engine_moved(self) -> None:
        """A restarted local engine may listen on another port (``port = 0``): follow it."""
        from ui.client import engine_url

        url = engine_url(self.paths.home)
        if not url or self.client is None or url.rstrip("/") == self.client.url:
            return

        def done(health: dict[str, Any] | None) -> None:
            if health and self.client is not None and self.tray is not None:
                log.info("the engine moved to another port; following it")
                self.client.url = url.rstrip("/")
                self.tray.reconnect()

        self._probe(url, done)

    # -- messages and quitting ----------------------------------------------------------------
    def _note(self, text: str) -> None:
        """A non-modal note: the app goes on, the user reads it when they like."""
        box = QMessageBox(QMessageBox.Icon.Information, "ChargeBridge", text)
        box.setModal(False)
        self._keep.append(box)
        box.finished.connect(lambda _r: self._keep.remove(box) if box in self._keep else None)
        box.show()

    def _fail(self, text: str) -> None:
        """Start-up cannot continue: say what and what to do, then exit when it is read."""
        log.error("start-up failed: %s", text)
        box = QMessageBox(QMessageBox.Icon.Critical, "ChargeBridge", text)
        box.setModal(False)
        self._keep.append(box)
        box.finished.connect(lambda _r: self.quit(2))
        box.show()

    def quit(self, code: int = 0) -> None:
        """Stop the watchers (not the engine — see the module docstring) and leave."""
        if self._quitting:
            return
        self._quitting = True
        self.exit_code = code
        self._poll.stop()
        self._rediscover.stop()
        if self.window is not None:
            self.window.close()
        if self.tray is None:
            QTimer.singleShot(0, self._finish)
            return
        self.tray.stopped.connect(self._finish)
        QTimer.singleShot(QUIT_GRACE_MS, self._finish)
        self.tray.shutdown()

    def _finish(self) -> None:
        if self.client is not None:
            self.client.close()
        self.app.exit(self.exit_code)


def _supported(cls: type, **kw: Any) -> dict[str, Any]:
    """The keyword arguments ``cls`` accepts beyond the agreed interface (e.g. ``paths``), so
    this app works with a window or dialog that takes only what was agreed."""
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kw
    return {k: v for k, v in kw.items() if k in params}


def _route_signals(on_signal: Callable[[], None]) -> list[Any]:
    """SIGTERM / SIGINT → a clean quit. Python runs signal handlers only between bytecodes, and
    the Qt loop may sleep in C for hours, so the signal wakes the loop through a socket."""
    if os.name != "posix":
        return []
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    signal.set_wakeup_fd(wsock.fileno())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: None)  # the wake-up byte does the work
    notifier = QSocketNotifier(rsock.fileno(), QSocketNotifier.Type.Read)

    def readable() -> None:
        try:
            rsock.recv(64)
        except OSError:
            pass
        on_signal()

    notifier.activated.connect(readable)
    return [rsock, wsock, notifier]


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """The tray app. Returns the process exit code (0, or 2 for a usage or start-up problem)."""
    ns = _parse(args)
    remote = ""
    ca_bundle = getattr(ns, "ca_bundle", None) or ""
    try:
        if getattr(ns, "engine_url", None):
            remote = check_engine_url(ns.engine_url)
        if ca_bundle and not Path(ca_bundle).is_file():
            raise ValueError(f"--ca-bundle {ca_bundle} is not a file; give the practice CA's PEM file")
    except ValueError as exc:
        print(f"chargebridge: {exc}", file=sys.stderr)
        return 2
    paths = Paths.resolve(ns.home)
    _setup_logging(paths, bool(getattr(ns, "verbose", False)))
    protect_none_refcount()

    from ui.icons import state_icon

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "chargebridge"])
    assert isinstance(app, QApplication)
    app.setApplicationName("ChargeBridge")
    app.setApplicationDisplayName("ChargeBridge")
    app.setQuitOnLastWindowClosed(False)  # closing the window leaves the tray running
    app.setWindowIcon(state_icon(EngineState.IDLE))
    boot = Bootstrap(app, paths, remote_url=remote, ca_bundle=ca_bundle)
    keep = _route_signals(lambda: boot.quit(0))
    QTimer.singleShot(0, boot.start)
    try:
        return int(app.exec())
    finally:
        if keep:
            signal.set_wakeup_fd(-1)
        del keep


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
