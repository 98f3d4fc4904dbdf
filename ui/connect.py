""""Connect to a practice server": pair this front-desk PC with the practice's engine.

The person types the engine's address and the pairing code ``chargebridge pair`` printed on the
server. Off the UI thread, :func:`core.pairing.connect` fetches the practice CA, accepts it only
if it matches the pin inside the code, and redeems the code over TLS verified against that CA;
then the CA is pinned in this PC's home (the only trust anchor for that engine), the token goes
to the keyring, and one ``GET /api/v1/status`` through the pinned connection confirms who we
are. Every failure says what happened and what to do (:class:`core.errors.ChargeBridgeError`).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from core.errors import ChargeBridgeError
from core.paths import Paths
from ui.client import ApiClient, ApiFailure
from ui.common import alive, role_label


class _Bridge(QObject):
    done = Signal(int, object, object)  # attempt, Paired | None, (title, fix) | None


class _PairJob(QRunnable):
    def __init__(self, bridge: _Bridge, attempt: int, url: str, code: str, home: Paths) -> None:
        super().__init__()
        self.bridge, self.attempt, self.url, self.code, self.paths = bridge, attempt, url, code, home

    def run(self) -> None:
        from core import pairing

        try:
            paired = pairing.connect(self.url, self.code, home=self.paths.home)
            pairing.save(self.paths, paired)
        except ChargeBridgeError as exc:
            self.bridge.done.emit(self.attempt, None, (exc.title, exc.fix))
        except Exception as exc:  # never leave the dialog hanging
            self.bridge.done.emit(self.attempt, None, (f"pairing failed ({type(exc).__name__})",
                                                       "try again; if it keeps failing, tell IT"))
        else:
            self.bridge.done.emit(self.attempt, paired, None)


class ConnectDialog(QDialog):
    """On ``accepted``: ``url``, ``token``, ``ca_bundle`` (the pinned CA file), ``user``, ``role``."""

    def __init__(self, paths: Paths, parent: QWidget | None = None, *, url: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to a practice server")
        self.paths = paths
        self.url = self.token = self.ca_bundle = self.user = self.role = ""
        self._attempt = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._bridge = _Bridge()
        self._bridge.done.connect(self._paired)
        self._client: ApiClient | None = None

        lay = QVBoxLayout(self)
        intro = QLabel("On the practice server, IT runs <i>chargebridge pair</i>. It prints the server's "
                       "address and a pairing code that works once, for 10 minutes. Type both here.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.url_edit = QLineEdit(url)
        self.url_edit.setPlaceholderText("https://192.168.1.10:8765")
        self.url_edit.setMinimumWidth(380)
        self.url_edit.setAccessibleName("Server address")
        form.addRow("Server &address:", self.url_edit)
        self.code_edit = QLineEdit()
        self.code_edit.setPlaceholderText("XXXX-XXXX-XXXX-XXXX-XXXX-XXXX")
        self.code_edit.setAccessibleName("Pairing code")
        self.code_edit.setToolTip("The 24-character code; it also lets this PC check it reached the real server")
        form.addRow("Pairing &code:", self.code_edit)
        lay.addLayout(form)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setAccessibleName("Connection result")
        lay.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_btn = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_btn.setText("&Connect")
        self.buttons.accepted.connect(self.connect_now)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        (self.code_edit if url else self.url_edit).setFocus()

    def _say(self, html: str, color: str) -> None:
        self.status.setStyleSheet(f"color: {color};")
        self.status.setText(html)

    def connect_now(self) -> None:
        url, code = self.url_edit.text().strip(), self.code_edit.text().strip()
        if not url or not code:
            self._say("Type the server address and the pairing code.", "#c62828")
            (self.url_edit if not url else self.code_edit).setFocus()
            return
        self._attempt += 1
        self.ok_btn.setEnabled(False)
        self._say("Checking the server's certificate and pairing…", "#555")
        self._pool.start(_PairJob(self._bridge, self._attempt, url, code, self.paths))

    @Slot(int, object, object)
    def _paired(self, attempt: int, paired: Any, problem: Any) -> None:
        if attempt != self._attempt:
            return
        if paired is None:
            self.ok_btn.setEnabled(True)
            title, fix = problem
            self._say(f"<b>{title}.</b><br>What to do: {fix}.", "#c62828")
            return
        self.url, self.token, self.ca_bundle = paired.url, paired.token, str(self.paths.pinned_ca)
        # the first call through the pinned connection: the API says who we are now
        self._client = ApiClient(self.url, self.token, ca_bundle=self.ca_bundle, parent=self)
        self._client.call("GET", "/api/v1/status", timeout=15,
                          on_ok=alive(self, lambda st: self._verified(attempt, st)),
                          on_error=alive(self, lambda f: self._unverified(attempt, f)))

    def _verified(self, attempt: int, status: dict[str, Any]) -> None:
        if attempt != self._attempt:
            return
        who = status.get("user") or {}
        self.user, self.role = str(who.get("name", "")), str(who.get("role", ""))
        self._say(f"Connected to {self.url} as {self.user} ({role_label(self.role)}).", "#1b7f3b")
        self.accept()

    def _unverified(self, attempt: int, failure: ApiFailure) -> None:
        if attempt != self._attempt:
            return
        self.ok_btn.setEnabled(True)
        self._say(f"<b>Paired, but the server then refused: {failure.title}.</b><br>What to do: {failure.fix}.",
                  "#c62828")

    def done(self, result: int) -> None:
        self._attempt += 1  # an answer still in flight no longer matters
        self._pool.waitForDone(35_000)
        if self._client is not None:
            self._client.close()
        super().done(result)
