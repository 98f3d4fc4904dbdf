"""Sign in with an API token: checked against the engine (GET /api/v1/status) off the UI thread.

The answer says exactly what failed — a token the engine does not know (401), no engine at
that address, a TLS problem — and what to do about it. "Remember on this computer" keeps the
token in the OS keyring (the same entry ``chargebridge login`` uses), never in a file.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from core.paths import Paths
from core.secrets import API_TOKEN as TOKEN_SECRET
from ui.client import ApiClient, ApiFailure
from ui.common import alive, role_label


class SignInDialog(QDialog):
    """On ``accepted``: ``.token``, ``.user`` and ``.role`` hold the verified identity."""

    def __init__(self, url: str, parent: QWidget | None = None, *, paths: Paths | None = None, reason: str = "",
                 user_hint: str = "", ca_bundle: str = "", pair_home: Paths | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in to ChargeBridge")
        self.url = url.rstrip("/")
        self.paths = paths
        self.token = ""
        self.user = ""
        self.role = ""
        self.ca_bundle = ca_bundle
        self.connected = False  # True: this PC paired with a practice server instead (url, ca_bundle changed)
        self.pair_home = pair_home
        self.connect_dialog: QDialog | None = None
        self.checks = 0  # requests sent (tests and diagnostics)
        self._attempt = 0
        self._client = ApiClient(self.url, "", ca_bundle=ca_bundle, parent=self)

        lay = QVBoxLayout(self)
        if reason:
            why = QLabel(reason)
            why.setWordWrap(True)
            why.setStyleSheet("font-weight: 600;")
            lay.addWidget(why)
        intro = QLabel(f"Paste your ChargeBridge token{f' ({user_hint})' if user_hint else ''}. An admin creates "
                       "tokens in Settings → Users or with <i>chargebridge users add</i>.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("cb_…")
        self.token_edit.setToolTip("Your personal API token; it starts with cb_")
        self.token_edit.setMinimumWidth(380)
        show = QAction("Show", self.token_edit)
        show.setCheckable(True)
        show.setToolTip("Show or hide the token")
        show.toggled.connect(lambda on: self.token_edit.setEchoMode(
            QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password))
        self.token_edit.addAction(show, QLineEdit.ActionPosition.TrailingPosition)
        form.addRow("&Token:", self.token_edit)
        engine = QLabel(self.url)
        engine.setToolTip("The ChargeBridge engine this window talks to")
        engine.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Engine:", engine)
        lay.addLayout(form)
        self.remember = QCheckBox("&Remember on this computer")
        if paths is None:
            self.remember.setEnabled(False)
            self.remember.setToolTip("Not available here: no ChargeBridge home on this computer")
        else:
            self.remember.setToolTip("Keep the token in this computer's keyring so you are not asked next time")
        lay.addWidget(self.remember)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setAccessibleName("Sign-in result")
        lay.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_btn = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_btn.setText("&Sign in")
        self.ok_btn.setToolTip("Check the token with the engine")
        self.buttons.accepted.connect(self.check)
        self.buttons.rejected.connect(self.reject)
        if pair_home is not None:  # a front-desk PC: pair with the practice server (H11)
            self.connect_btn = self.buttons.addButton("Connect to a practice &server…",
                                                      QDialogButtonBox.ButtonRole.ActionRole)
            self.connect_btn.setToolTip("Pair this PC with the practice server's ChargeBridge (address and pairing "
                                        "code from chargebridge pair) instead of pasting a token")
            self.connect_btn.clicked.connect(self.open_connect)
        lay.addWidget(self.buttons)
        self.token_edit.setFocus()

    def open_connect(self) -> None:
        """The pairing dialog, window-modal without a nested loop; a pairing signs in."""
        from ui.connect import ConnectDialog

        if self.pair_home is None:
            return
        if self.connect_dialog is not None:
            self.connect_dialog.raise_()
            return
        dlg = ConnectDialog(self.pair_home, self)
        self.connect_dialog = dlg

        def paired() -> None:
            self.url, self.ca_bundle, self.connected = dlg.url, dlg.ca_bundle, True
            self.token, self.user, self.role = dlg.token, dlg.user, dlg.role
            self.accept()

        def closed(_r: int) -> None:
            self.connect_dialog = None

        dlg.accepted.connect(paired)
        dlg.finished.connect(closed)
        dlg.open()

    def _say(self, html: str, color: str) -> None:
        self.status.setStyleSheet(f"color: {color};")
        self.status.setText(html)

    def check(self) -> None:
        """Verify the token with the engine; the dialog stays responsive while it asks."""
        token = self.token_edit.text().strip()
        if not token:
            self._say("Paste your token first.", "#c62828")
            self.token_edit.setFocus()
            return
        self._attempt += 1
        attempt = self._attempt
        self.checks += 1
        self.ok_btn.setEnabled(False)
        self._say("Checking with the engine…", "#555")
        self._client.token = token
        self._client.call("GET", "/api/v1/status", timeout=15,
                          on_ok=alive(self, lambda st: self._verified(attempt, token, st)),
                          on_error=alive(self, lambda f: self._failed(attempt, f)))

    def _verified(self, attempt: int, token: str, status: dict[str, Any]) -> None:
        if attempt != self._attempt:
            return
        self.ok_btn.setEnabled(True)
        who = status.get("user") or {}
        self.token, self.user, self.role = token, str(who.get("name", "")), str(who.get("role", ""))
        if self.remember.isChecked() and self.paths is not None:
            from core import secrets
            from core.errors import ChargeBridgeError

            try:
                secrets.set_secret(self.paths, TOKEN_SECRET, token)
            except ChargeBridgeError as exc:
                self._say(f"Signed in, but the token could not be remembered: {exc.title}. Fix: {exc.fix}. "
                          "Untick “Remember” to continue without saving it.", "#c62828")
                return
        self._say(f"Signed in as {self.user} ({role_label(self.role)}).", "#1b7f3b")
        self.accept()

    def _failed(self, attempt: int, failure: ApiFailure) -> None:
        if attempt != self._attempt:
            return
        self.ok_btn.setEnabled(True)
        if failure.status == 401:
            text = (f"<b>The engine at {self.url} did not accept this token (401).</b><br>Check that you pasted "
                    "the whole token (it starts with cb_), or ask an admin for a new one.")
        elif failure.status == 0:
            text = f"<b>No answer from {self.url}: {failure.title}.</b><br>What to do: {failure.fix}."
        else:
            text = (f"<b>The engine answered {failure.status}: {failure.title}.</b>"
                    + (f"<br>What to do: {failure.fix}." if failure.fix else ""))
        self._say(text, "#c62828")
        self.token_edit.setFocus()
        self.token_edit.selectAll()

    def done(self, result: int) -> None:
        self._attempt += 1  # an answer still in flight no longer matters
        super().done(result)
