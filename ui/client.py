"""The tray's and windows' only way to the engine: its HTTP API, never on the UI thread.

``ApiClient.call`` runs the request on a ``QThreadPool`` worker and delivers the result (or an
:class:`ApiFailure` that says what happened and what to do) back on the UI thread through a
queued signal. ``ChangeWatcher`` long-polls ``/api/v1/changes`` on its own thread and emits
``changed`` whenever the engine commits something — the UI never busy-polls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from core.paths import ENGINE_INFO


@dataclass
class ApiFailure:
    """For people: ``title`` what happened, ``fix`` what to do. ``key`` names the setting or
    request field at fault when the engine says so (e.g. ``"rcm.base_url"``), for the form to
    highlight. ``status`` 0 = no answer at all."""

    status: int
    title: str
    fix: str = ""
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.title} — {self.fix}" if self.fix else self.title


def unreadable_answer() -> ApiFailure:
    """A 2xx answer whose shape this UI does not know (an engine of another version)."""
    return ApiFailure(0, "the engine's answer could not be read",
                      "update ChargeBridge so this window and the engine are the same version")


def _error_body(r: requests.Response) -> tuple[str, str, str | None]:
    """The engine's error body ``{title, fix, key, request_id}``, checked field by field: a
    proxy's HTML page or any other shape gives empty strings, never an exception."""
    try:
        body = r.json()
    except ValueError:
        return "", "", None
    if not isinstance(body, dict):
        return "", "", None
    title, fix, key = body.get("title"), body.get("fix"), body.get("key")
    return (title.strip() if isinstance(title, str) else "", fix.strip() if isinstance(fix, str) else "",
            key if isinstance(key, str) and key else None)


def describe(exc_or_response: Any) -> ApiFailure:
    if isinstance(exc_or_response, requests.Response):
        r = exc_or_response
        title, fix, key = _error_body(r)
        if r.status_code == 401:
            return ApiFailure(401, title or "ChargeBridge did not accept your sign-in",
                              fix or "sign in again with your token", key)
        if r.status_code == 403:
            return ApiFailure(403, title or "your role may not do this", fix or "ask a practice manager", key)
        return ApiFailure(r.status_code, title or f"the engine answered {r.status_code}",
                          fix or "try again; if it keeps happening, see the engine log", key)
    if isinstance(exc_or_response, requests.exceptions.SSLError):
        return ApiFailure(0, "the engine's TLS certificate is not trusted",
                          "install the practice's CA certificate or check the engine address")
    if isinstance(exc_or_response, requests.exceptions.Timeout):
        return ApiFailure(0, "the engine did not answer in time", "it may be busy; try again")
    return ApiFailure(0, "the ChargeBridge engine is not running or cannot be reached",
                      "start it (chargebridge engine) or check the engine address in Settings")


class _Bridge(QObject):
    done = Signal(object, object, object)  # callback, result, failure


class _Job(QRunnable):
    def __init__(self, bridge: _Bridge, session: requests.Session, method: str, url: str, kw: dict[str, Any],
                 on_ok: Callable[[Any], None] | None, on_error: Callable[[ApiFailure], None] | None) -> None:
        super().__init__()
        self.bridge, self.session, self.method, self.url, self.kw = bridge, session, method, url, kw
        self.on_ok, self.on_error = on_ok, on_error

    def run(self) -> None:
        try:
            r = self.session.request(self.method, self.url, **self.kw)
            if r.status_code >= 400:
                self.bridge.done.emit(self.on_error, None, describe(r))
            else:
                self.bridge.done.emit(self.on_ok, r.json() if r.content else None, None)
        except requests.RequestException as exc:
            self.bridge.done.emit(self.on_error, None, describe(exc))


class ApiClient(QObject):
    """Async calls to the engine API. Create it on the UI thread."""

    def __init__(self, url: str, token: str, *, ca_bundle: str = "", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.url = url.rstrip("/")
        self.token = token
        self.session = requests.Session()
        self.session.verify = ca_bundle or True  # TLS to a remote engine is always verified
        self.session.trust_env = not ca_bundle  # a pinned CA: REQUESTS_CA_BUNDLE must not override it
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(4)
        self._bridge = _Bridge()
        self._bridge.done.connect(self._deliver)

    def call(self, method: str, path: str, *, on_ok: Callable[[Any], None] | None = None,
             on_error: Callable[[ApiFailure], None] | None = None, timeout: float = 30, **kw: Any) -> None:
        kw.setdefault("headers", {})["Authorization"] = f"Bearer {self.token}"
        kw["timeout"] = timeout
        self.pool.start(_Job(self._bridge, self.session, method, f"{self.url}{path}", kw, on_ok, on_error))

    @Slot(object, object, object)
    def _deliver(self, callback: Any, result: Any, failure: Any) -> None:
        if callback is not None:
            callback(failure if failure is not None else result)

    def close(self) -> None:
        self.pool.waitForDone(5000)


class ChangeWatcher(QThread):
    """Long-polls the change feed; emits ``changed`` on any engine commit, ``offline`` when the
    engine stops answering (with a reason), and keeps retrying with a gentle backoff."""

    changed = Signal(int)
    offline = Signal(object)  # ApiFailure
    online = Signal()

    def __init__(self, url: str, token: str, *, ca_bundle: str = "", poll_timeout: float = 25.0) -> None:
        super().__init__()
        self.setObjectName("chargebridge-ui-changes")
        self.url, self.token, self.poll_timeout = url.rstrip("/"), token, poll_timeout
        self.session = requests.Session()
        self.session.verify = ca_bundle or True
        self.session.trust_env = not ca_bundle  # a pinned CA: REQUESTS_CA_BUNDLE must not override it
        self._stop = False
        self.seq = 0

    def stop(self) -> None:
        self._stop = True
        self.session.close()
        self.wait(int((self.poll_timeout + 5) * 1000))

    def run(self) -> None:
        was_online: bool | None = None
        backoff = 1.0
        while not self._stop:
            try:
                r = self.session.get(f"{self.url}/api/v1/changes", params={"after": self.seq,
                                                                         "timeout": self.poll_timeout},
                                     headers={"Authorization": f"Bearer {self.token}"},
                                     timeout=self.poll_timeout + 10)
                if r.status_code != 200:
                    raise _Bad(r)
                seq = int(r.json()["seq"])
                if was_online is not True:
                    was_online = True
                    self.online.emit()
                    self.changed.emit(seq)
                elif seq != self.seq:
                    self.changed.emit(seq)
                self.seq = seq
                backoff = 1.0
            except (requests.RequestException, _Bad, ValueError, KeyError) as exc:
                if self._stop:
                    return
                if was_online is not False:
                    was_online = False
                    self.offline.emit(describe(exc.response if isinstance(exc, _Bad) else exc))
                self.msleep(int(backoff * 1000))
                backoff = min(backoff * 2, 15.0)


class _Bad(Exception):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def engine_url(home: Path) -> str:
    """The local engine's API URL from ``engine.json`` in the home ("" if none is running)."""
    try:
        return str(json.loads((home / ENGINE_INFO).read_text())["url"])
    except (OSError, ValueError, KeyError):
        return ""
