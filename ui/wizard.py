"""First-run wizard: export folders, the billing system (RCM) and the schedule, the first account.

Everything goes through the running engine's API — the wizard never reads or writes
``chargebridge.toml``, never opens the store and never talks to the RCM itself:

* On first run the app starts the local engine before showing the wizard. While no user
  exists the engine writes a one-time *setup token* to ``Paths.setup_token`` (mode 0600) and
  accepts it as an admin; the wizard reads that file and uses it for ``GET/PATCH /config``,
  ``POST /config/validate``, ``POST /rcm/secret``, ``POST /rcm/test`` and ``POST /users``.
  Creating the first account ends setup: the engine deletes the file and refuses the token.
* Run again on a configured install, it uses the signed-in admin's token instead.

Validation is the engine's: each page asks ``POST /config/validate`` (the folders page with
``partial``), and a refusal comes back as ``{title, fix, key}``; the field named by ``key``
(``rcm.base_url``, ``folders[0].path``…) is outlined and focused. Nothing parses message text.

Every request runs off the UI thread (:class:`ui.client.ApiClient`), so a page's "Next"
starts the check and returns; when the engine says yes the wizard moves on by itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from core.paths import Paths
from core.secrets import API_TOKEN
from core.states import Role
from ui.client import ApiClient, ApiFailure
from ui.common import DAY_LABEL, EXPORT_FORMATS, Worker, alive, days_from_spec, days_spec, folder_rows

RED, GREEN = "#c62828", "#1b7f3b"
BAD_FIELD = f"border: 2px solid {RED};"
_FOLDER_KEY = re.compile(r"^(?:body\.)?(?:config\.)?folders\[(\d+)\]")
SUGGESTED_SYNC = {"business_hours": "07:00-19:00", "business_days": "mon-fri"}  # and every 15 minutes


def read_setup_token(paths: Paths) -> str:
    """The engine's one-time setup token ("" when there is none: setup is over, or no engine
    has started for this home yet)."""
    try:
        text = paths.setup_token.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text if 0 < len(text) <= 200 and text.isprintable() else ""


def failure_text(f: ApiFailure) -> str:
    """Title and fix as the engine sent them (verbatim), as one plain sentence pair."""
    title = f.title or "The engine refused this"
    return f"{title.rstrip('.')}." + (f" What to do: {f.fix.rstrip('.')}." if f.fix else "")


def fit(label: QLabel) -> None:
    """A wrapped label inside a QWizard page does not grow by itself when its text gets longer
    (the wizard sizes pages once): ask for the height the text needs at the current width."""
    label.setMinimumHeight(label.heightForWidth(label.width()) if label.text() and label.width() > 0 else 0)


def _error_label() -> QLabel:
    lab = QLabel("")
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    lab.setStyleSheet(f"color: {RED};")
    lab.setAccessibleName("Problem")
    return lab


class _AsyncPage(QWizardPage):
    """A page whose "Next" needs the engine's yes: ``validatePage`` starts the check and says
    no; when the answer is yes for the values still on screen, the wizard moves on."""

    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.busy = False
        self._passed: Any = None
        self.error = _error_label()

    def snapshot(self) -> Any:  # the values the check is about
        raise NotImplementedError

    def check(self, done: Callable[[bool], None]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def validatePage(self) -> bool:  # noqa: N802 - Qt's name
        if self.wiz.connected is not None:  # this PC paired with the practice server: nothing to set up here
            return True
        if self.busy:
            return False
        if self._passed is not None and self._passed == self.snapshot():
            return True
        self.wiz.clear_marks()
        self.error.setStyleSheet("color: #555;")
        self.error.setText("Checking with the engine…")
        self.busy = True
        self.wiz.button(QWizard.WizardButton.NextButton).setEnabled(False)

        def finished(ok: bool) -> None:
            self.busy = False
            self.wiz.button(QWizard.WizardButton.NextButton).setEnabled(True)
            if ok:
                self.error.setText("")
                fit(self.error)
                # what is on screen now (saving may have cleared the secret field): a later
                # "Next" with nothing changed moves on without asking again
                self._passed = self.snapshot()
                if self.wiz.currentPage() is self:
                    self.wiz.next()

        self.check(finished)
        return False

    def show_failure(self, f: ApiFailure) -> None:
        self.error.setStyleSheet(f"color: {RED};")
        self.error.setText(failure_text(f))
        fit(self.error)
        self.wiz.mark(f.key)


class FoldersPage(_AsyncPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Where does the EHR export to?")
        self.setSubTitle("Add each folder your EHR writes its billing exports into, and the format it writes. "
                         "ChargeBridge reads every new file there.")
        lay = QVBoxLayout(self)
        # a front-desk PC needs no folders: it pairs with the practice server instead (H11)
        self.connect_btn = QPushButton("This PC is a front-desk PC: &connect to the practice server…")
        self.connect_btn.setFlat(True)
        self.connect_btn.setStyleSheet("QPushButton { color: #0d47a1; text-decoration: underline; text-align: left; }")
        self.connect_btn.setToolTip("Use the ChargeBridge engine on the practice's server (address and pairing code "
                                    "from chargebridge pair) instead of setting this PC up")
        self.connect_btn.clicked.connect(wizard.open_connect)
        lay.addWidget(self.connect_btn, 0, Qt.AlignmentFlag.AlignLeft)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Folder", "Format", "CSV profile"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(1, 170)
        self.table.setColumnWidth(2, 130)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAccessibleName("Export folders")
        lay.addWidget(self.table, 1)
        row = QHBoxLayout()
        add = QPushButton("&Add folder…")
        add.setToolTip("Choose a folder the EHR exports into")
        add.clicked.connect(self._browse)
        rm = QPushButton("&Remove")
        rm.setToolTip("Remove the selected folder from the list")
        rm.clicked.connect(self._remove)
        row.addWidget(add)
        row.addWidget(rm)
        row.addStretch(1)
        lay.addLayout(row)
        hint = QLabel("CSV exports need a profile: <i>generic</i>, <i>synthea</i>, or the path of your EHR's "
                      "mapping file (.toml).")
        hint.setWordWrap(True)
        lay.addWidget(hint)
        lay.addWidget(self.error)

    def add_folder(self, path: str, fmt: str = "auto", profile: str = "", extra: dict[str, Any] | None = None) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        item = QTableWidgetItem(path)
        item.setData(Qt.ItemDataRole.UserRole, extra or {})  # keys the wizard does not ask about, kept
        self.table.setItem(r, 0, item)
        combo = QComboBox()
        for key, text in EXPORT_FORMATS:
            combo.addItem(text, key)
        combo.setCurrentIndex(max(combo.findData(fmt), 0))
        combo.setToolTip("The format of the files in this folder; “Detect automatically” reads the extension "
                         "and content")
        self.table.setCellWidget(r, 1, combo)
        prof = QTableWidgetItem(profile)
        prof.setToolTip("CSV only: generic, synthea, or a path to a .toml mapping")
        self.table.setItem(r, 2, prof)
        self.completeChanged.emit()

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose an EHR export folder")
        if path:
            self.add_folder(path)

    def _remove(self) -> None:
        for r in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(r)
        self.completeChanged.emit()

    def folders(self) -> list[dict[str, Any]]:
        return folder_rows(self.table)

    def isComplete(self) -> bool:  # noqa: N802 - Qt's name
        return self.table.rowCount() > 0

    def snapshot(self) -> Any:
        return self.folders()

    def check(self, done: Callable[[bool], None]) -> None:
        folders = self.folders()
        # This wizard runs on the engine's own computer: a folder that is not there is a typo,
        # said at once (the file chooser's job, not a rule about what the engine accepts).
        for i, f in enumerate(folders):
            if f["path"] and not Path(f["path"]).expanduser().is_dir():
                self.show_failure(ApiFailure(0, f"the folder {f['path']} does not exist",
                                             "create it, or choose the folder the EHR really exports into",
                                             f"folders[{i}].path"))
                done(False)
                return
        self.wiz.validate({"folders": folders}, partial=True, page=self, done=done)


class RcmPage(_AsyncPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Connect the billing system")
        self.setSubTitle("ChargeBridge sends ready charges to your RCM / practice-management system over FHIR R4. "
                         "Your RCM vendor gives you these values. You can also do this later in Settings.")
        lay = QVBoxLayout(self)
        self.enabled = QCheckBox("Send charges to a billing s&ystem")
        self.enabled.setChecked(True)
        self.enabled.setToolTip("Untick to only read and check exports for now")
        lay.addWidget(self.enabled)
        form = QFormLayout()
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("e.g. https://rcm.example/fhir/R4")
        self.base_url.setToolTip("The RCM's FHIR base URL (https)")
        self.token_url = QLineEdit()
        self.token_url.setPlaceholderText("e.g. https://rcm.example/oauth2/token")
        self.token_url.setToolTip("The RCM's OAuth2 token URL")
        self.client_id = QLineEdit()
        self.client_id.setToolTip("The client id the RCM issued to your practice")
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret.setToolTip("Kept in the engine computer's keyring, never in the settings file")
        for label, w in (("Base &URL:", self.base_url), ("T&oken URL:", self.token_url),
                         ("&Client id:", self.client_id), ("Client s&ecret:", self.secret)):
            form.addRow(label, w)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.test_btn = QPushButton("&Test connection")
        self.test_btn.setToolTip("Ask the engine to get a token and the RCM's capabilities with these values")
        self.test_btn.clicked.connect(self.test_connection)
        row.addWidget(self.test_btn)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.test_result.setAccessibleName("Connection test result")
        row.addWidget(self.test_result, 1)
        lay.addLayout(row)
        self.enabled.toggled.connect(self._toggle)

        sched = QGroupBox("When to send")
        sf = QFormLayout(sched)
        self.interval = QDoubleSpinBox()
        self.interval.setRange(1, 1440)
        self.interval.setDecimals(0)
        self.interval.setValue(15)
        self.interval.setSuffix(" minutes")
        self.interval.setToolTip("How often ready charges are sent, inside business hours")
        sf.addRow("Sync e&very:", self.interval)
        self.hours = QLineEdit(str(SUGGESTED_SYNC["business_hours"]))
        self.hours.setToolTip("Local time, from-to, 24-hour clock (00:00-24:00 = all day)")
        sf.addRow("Business &hours:", self.hours)
        days = QHBoxLayout()
        self.day_boxes: list[QCheckBox] = []
        for i, label in enumerate(DAY_LABEL):
            cb = QCheckBox(label)
            cb.setChecked(i < 5)
            days.addWidget(cb)
            self.day_boxes.append(cb)
        sf.addRow("Business days:", days)
        lay.addWidget(sched)
        lay.addWidget(self.error)

    def _toggle(self, on: bool) -> None:
        for w in (self.base_url, self.token_url, self.client_id, self.secret, self.test_btn):
            w.setEnabled(on)

    def rcm(self) -> dict[str, Any]:
        if not self.enabled.isChecked():
            return {"type": ""}
        return {"type": "fhir", "base_url": self.base_url.text().strip(), "token_url": self.token_url.text().strip(),
                "client_id": self.client_id.text().strip(), "auth": "client_credentials"}

    def sync(self) -> dict[str, Any]:
        return {"interval_minutes": float(self.interval.value()), "business_hours": self.hours.text().strip(),
                "business_days": days_spec([i for i, cb in enumerate(self.day_boxes) if cb.isChecked()])}

    def set_sync(self, sync: dict[str, Any]) -> None:
        try:
            self.interval.setValue(float(sync.get("interval_minutes") or 15))
        except (TypeError, ValueError):
            self.interval.setValue(15)
        self.hours.setText(str(sync.get("business_hours") or SUGGESTED_SYNC["business_hours"]))
        on = days_from_spec(str(sync.get("business_days") or "")) or days_from_spec("mon-fri") or set()
        for i, cb in enumerate(self.day_boxes):
            cb.setChecked(i in on)

    def test_connection(self) -> None:
        """The engine runs the test (a token request and a capability request) on its side."""
        self.wiz.clear_marks()
        rcm = self.rcm()
        body = {"base_url": rcm.get("base_url", ""), "token_url": rcm.get("token_url", ""),
                "client_id": rcm.get("client_id", ""), "auth": "client_credentials", "ca_bundle": "",
                "timeout_seconds": 15, "secret": self.secret.text().strip()}
        self.test_btn.setEnabled(False)
        self.test_result.setStyleSheet("")
        self.test_result.setText("Testing…")

        def done(out: Any) -> None:
            self.test_btn.setEnabled(self.enabled.isChecked())
            ok = isinstance(out, dict) and out.get("ok") is True
            detail = str(out.get("detail", "")) if isinstance(out, dict) else ""
            self.test_result.setStyleSheet(f"color: {GREEN if ok else RED};")
            self.test_result.setText(("✔ " if ok else "✖ Failed: ") + detail)
            fit(self.test_result)

        def failed(f: ApiFailure) -> None:
            self.test_btn.setEnabled(self.enabled.isChecked())
            self.test_result.setStyleSheet(f"color: {RED};")
            self.test_result.setText("✖ " + failure_text(f))
            fit(self.test_result)
            self.wiz.mark(f.key)

        self.wiz.client.call("POST", "/api/v1/rcm/test", json=body, timeout=75, on_ok=alive(self, done),
                             on_error=alive(self, failed))

    def snapshot(self) -> Any:
        return (self.wiz.folders_page.folders(), self.rcm(), self.sync(), self.secret.text().strip())

    def check(self, done: Callable[[bool], None]) -> None:
        if not any(cb.isChecked() for cb in self.day_boxes):
            self.show_failure(ApiFailure(0, "no business day is ticked", "tick at least one day to send charges on",
                                         "sync.business_days"))
            done(False)
            return
        secret = self.secret.text().strip() if self.enabled.isChecked() else ""
        if self.enabled.isChecked() and not secret and not self.wiz.secret_set:
            self.show_failure(ApiFailure(0, "the client secret is missing",
                                         "type the secret the RCM gave you (it is kept in the engine computer's "
                                         "keyring), or untick “Send charges to a billing system” to set it up "
                                         "later", "secret"))
            done(False)
            return
        self.wiz.save(self, secret=secret, done=done)


class AccountPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.created = False
        self.token = ""
        self.setTitle("Create your account")
        self.setSubTitle("You sign in to ChargeBridge with the token created here. The first account is an "
                         "administrator, so that someone can change these settings and add the rest of the team.")
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.name = QLineEdit("manager")
        self.name.setToolTip("A name for the person (1 to 64 characters)")
        form.addRow("Na&me:", self.name)
        self.role = QComboBox()
        for key, text in ((Role.ADMIN, "Admin — settings, users, and everything a manager does"),
                          (Role.MANAGER, "Manager — resolve mismatches, reprocess, pause"),
                          (Role.CODER, "Coder — review queue: approve, edit lines, reject"),
                          (Role.FRONT_DESK, "Front desk — view only")):
            self.role.addItem(text, str(key))
        self.role.setToolTip("What this account may do")
        self.role_label = QLabel("&Role:")
        self.role_label.setBuddy(self.role)
        form.addRow(self.role_label, self.role)
        lay.addLayout(form)
        self.create_btn = QPushButton("&Create account")
        self.create_btn.setToolTip("Create the account and show its token once")
        self.create_btn.clicked.connect(self.create_account)
        lay.addWidget(self.create_btn, 0, Qt.AlignmentFlag.AlignLeft)
        trow = QHBoxLayout()
        self.token_out = QLineEdit()
        self.token_out.setReadOnly(True)
        self.token_out.setPlaceholderText("The token appears here, once")
        self.token_out.setAccessibleName("New token")
        copy = QPushButton("Cop&y")
        copy.setToolTip("Copy the token to the clipboard")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.token_out.text()))
        trow.addWidget(self.token_out, 1)
        trow.addWidget(copy)
        lay.addLayout(trow)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.result)
        self.skip = QCheckBox("I already have an account — &skip this step")
        self.skip.toggled.connect(lambda _: self.completeChanged.emit())
        lay.addWidget(self.skip)
        lay.addStretch(1)
        self.worker = Worker(self)

    def initializePage(self) -> None:  # noqa: N802 - Qt's name
        # during setup there is no account yet: the first one is needed, and it is an admin
        self.skip.setVisible(not self.wiz.setup_mode)
        self.role_label.setVisible(not self.wiz.setup_mode)
        self.role.setVisible(not self.wiz.setup_mode)
        if self.wiz.setup_mode:
            self.role.setCurrentIndex(self.role.findData(str(Role.ADMIN)))

    def isComplete(self) -> bool:  # noqa: N802 - Qt's name
        return self.created or (self.skip.isChecked() and not self.wiz.setup_mode)

    def create_account(self) -> None:
        name = self.name.text().strip()
        if not name:
            self._say("Type a name first.", RED)
            self.name.setFocus()
            return
        self.create_btn.setEnabled(False)
        self._say("Creating…", "")
        role = str(self.role.currentData())

        def ok(out: Any) -> None:
            token = str(out.get("token", "")) if isinstance(out, dict) else ""
            if not token:
                self.create_btn.setEnabled(True)
                self._say("The engine's answer had no token: the account may exist without one. Remove it with "
                          "`chargebridge users revoke` and try again.", RED)
                return
            self._created(token, role)

        def failed(f: ApiFailure) -> None:
            self.create_btn.setEnabled(True)
            self._say("The account was not created. " + failure_text(f), RED)
            if f.key and f.key.endswith("name"):
                self.name.setStyleSheet(BAD_FIELD)
                self.name.setFocus()

        self.name.setStyleSheet("")
        self.wiz.client.call("POST", "/api/v1/users", json={"name": name, "role": role},
                             on_ok=alive(self, ok), on_error=alive(self, failed))

    def _created(self, token: str, role: str) -> None:
        self.created, self.token = True, token
        self.wiz.token = token
        if role == Role.ADMIN:  # setup is over: the setup token is refused from now on
            self.wiz.client.token = token
            self.wiz.setup_mode = False
        self.create_btn.setEnabled(False)
        self.token_out.setText(token)
        self.completeChanged.emit()
        self._say("Account created. This token is shown only once; copy it somewhere safe to sign in on "
                  "another computer. Saving it in this computer's keyring…", GREEN)
        paths = self.wiz.paths

        def remember() -> None:
            from core import secrets

            secrets.set_secret(paths, API_TOKEN, token)

        def remembered(_r: Any, exc: BaseException | None) -> None:
            if exc is None:
                self._say("Account created. This token is shown only once: it is saved in this computer's keyring; "
                          "copy it somewhere safe to sign in on another computer.", GREEN)
            else:
                fix = getattr(exc, "fix", "") or "copy the token now: you will be asked for it when ChargeBridge starts"
                self._say(f"Account created, but the token could not be saved in the keyring "
                          f"({getattr(exc, 'title', type(exc).__name__)}). What to do: {fix}.", RED)

        self.worker.run(remember, alive(self, remembered))

    def _say(self, text: str, color: str) -> None:
        self.result.setStyleSheet(f"color: {color};" if color else "")
        self.result.setText(text)
        fit(self.result)


class FirstRunWizard(QWizard):
    """Sets ChargeBridge up through the engine at ``url``. ``token``: the signed-in admin's
    (a re-run); empty = the engine's one-time setup token from ``Paths.setup_token``."""

    def __init__(self, home: str | Path | Paths, url: str, token: str = "", *, ca_bundle: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paths = home if isinstance(home, Paths) else Paths.resolve(home)
        self.home = self.paths.home
        self.setup_mode = not token
        self.client = ApiClient(url, token or read_setup_token(self.paths), ca_bundle=ca_bundle, parent=self)
        self.token = ""  # the account created here
        self.saved = False
        self.loaded: dict[str, Any] | None = None  # GET /api/v1/config's answer
        self.load_failure: ApiFailure | None = None
        self.secret_set = False
        self.connect_dialog: Any = None  # "connect to a practice server", while open
        self.connected: Any = None  # its result (url, token, ca_bundle, user, role) when this PC paired instead
        self._marked: list[QWidget] = []
        self.setWindowTitle("Set up ChargeBridge")
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        self.setMinimumSize(720, 560)
        self.folders_page = FoldersPage(self)
        self.rcm_page = RcmPage(self)
        self.account_page = AccountPage(self)
        for p in (self.folders_page, self.rcm_page, self.account_page):
            self.addPage(p)
        self.reload()

    # -- the engine's current settings ----------------------------------------------------------
    def reload(self) -> None:
        if not self.client.token:
            self.load_failure = ApiFailure(401, "there is no setup token for this ChargeBridge",
                                           "someone already set it up: sign in with an admin's token and open "
                                           "Settings, or ask your administrator")
            self.folders_page.show_failure(self.load_failure)
            return
        self.client.call("GET", "/api/v1/config", on_ok=alive(self, self._loaded),
                         on_error=alive(self, self._load_failed))

    def _loaded(self, answer: Any) -> None:
        if not isinstance(answer, dict) or not isinstance(answer.get("config"), dict):
            self._load_failed(ApiFailure(0, "the engine's answer could not be read",
                                         "update ChargeBridge so this window and the engine are the same version"))
            return
        self.loaded, self.load_failure = answer, None
        self.secret_set = bool(answer.get("rcm_secret_set"))
        cfg = answer["config"]
        fp, rp = self.folders_page, self.rcm_page
        if fp.table.rowCount() == 0:
            for f in cfg.get("folders") or []:
                if isinstance(f, dict):
                    fp.add_folder(str(f.get("path", "")), str(f.get("format", "auto")), str(f.get("profile", "")), f)
        rcm = cfg.get("rcm") or {}
        if rcm.get("type"):
            rp.base_url.setText(str(rcm.get("base_url", "")))
            rp.token_url.setText(str(rcm.get("token_url", "")))
            rp.client_id.setText(str(rcm.get("client_id", "")))
        if self.secret_set:
            rp.secret.setPlaceholderText("saved — type a new one to replace it")
        if not self.setup_mode:  # a re-run shows what is set; a first run suggests weekdays 07:00-19:00
            rp.set_sync(cfg.get("sync") or {})
        if fp.error.text():
            fp.error.setText("")

    def _load_failed(self, f: ApiFailure) -> None:
        self.load_failure = f
        self.folders_page.show_failure(f)

    # -- fields named by an error's key ---------------------------------------------------------
    def _fields(self) -> dict[str, QWidget]:
        rp = self.rcm_page
        return {"rcm.base_url": rp.base_url, "rcm.token_url": rp.token_url, "rcm.client_id": rp.client_id,
                "base_url": rp.base_url, "token_url": rp.token_url, "client_id": rp.client_id,
                "secret": rp.secret, "sync.business_hours": rp.hours, "sync.interval_minutes": rp.interval,
                "sync.business_days": rp.day_boxes[0], "name": self.account_page.name}

    def mark(self, key: str | None) -> QWidget | None:
        """Outline and focus the field the engine named (``key``); a folder key selects its row."""
        if not key:
            return None
        k = key
        for prefix in ("body.", "config."):  # request-validation keys carry their location
            k = k.removeprefix(prefix)
        m = _FOLDER_KEY.match(key)
        if m:
            row = int(m.group(1))
            table = self.folders_page.table
            if row < table.rowCount():
                table.selectRow(row)
            table.setStyleSheet(BAD_FIELD)
            self._marked.append(table)
            return table
        w = self._fields().get(k)
        if w is None:
            return None
        w.setStyleSheet(BAD_FIELD)
        w.setFocus(Qt.FocusReason.OtherFocusReason)
        if isinstance(w, QLineEdit):
            w.selectAll()
        self._marked.append(w)
        return w

    def clear_marks(self) -> None:
        for w in self._marked:
            w.setStyleSheet("")
        self._marked = []

    # -- talking to the engine ------------------------------------------------------------------
    def changes(self) -> dict[str, Any]:
        """The sections this wizard sets, merged over what the engine has (keys it does not ask
        about are kept)."""
        cfg = (self.loaded or {}).get("config") or {}
        return {"folders": self.folders_page.folders(),
                "rcm": {**(cfg.get("rcm") or {}), **self.rcm_page.rcm()},
                "sync": {**(cfg.get("sync") or {}), **self.rcm_page.sync()}}

    def _need_loaded(self, page: _AsyncPage, done: Callable[[bool], None]) -> bool:
        if self.loaded is not None:
            return True
        page.show_failure(self.load_failure or ApiFailure(0, "the current settings are still loading",
                                                          "wait a moment and press Next again"))
        if self.load_failure is not None and self.load_failure.status != 401:
            self.reload()
        done(False)
        return False

    def validate(self, config: dict[str, Any], *, partial: bool, page: _AsyncPage,
                 done: Callable[[bool], None]) -> None:
        """``POST /config/validate``: yes, or the engine's title, fix and key shown on ``page``."""
        if not self._need_loaded(page, done):
            return

        def failed(f: ApiFailure) -> None:
            page.show_failure(f)
            done(False)

        self.client.call("POST", "/api/v1/config/validate", json={"config": config, "partial": partial},
                         on_ok=alive(self, lambda _r: done(True)), on_error=alive(self, failed))

    def save(self, page: _AsyncPage, *, secret: str, done: Callable[[bool], None]) -> None:
        """Validate, then ``PATCH /config`` with the sections the wizard sets, then the secret."""
        if not self._need_loaded(page, done):
            return
        changes = self.changes()

        def failed(f: ApiFailure) -> None:
            page.show_failure(f)
            done(False)

        def saved_secret(_out: Any) -> None:
            self.secret_set = True
            self.rcm_page.secret.clear()
            self.rcm_page.secret.setPlaceholderText("saved — type a new one to replace it")
            done(True)

        def saved(out: Any) -> None:
            self.saved = True
            if isinstance(out, dict) and isinstance(out.get("config"), dict) and self.loaded is not None:
                self.loaded["config"] = out["config"]
            if secret:
                self.client.call("POST", "/api/v1/rcm/secret", json={"secret": secret},
                                 on_ok=alive(self, saved_secret), on_error=alive(self, failed))
            else:
                done(True)

        def valid(_r: Any) -> None:
            self.client.call("PATCH", "/api/v1/config", json=changes, on_ok=alive(self, saved),
                             on_error=alive(self, failed))

        self.client.call("POST", "/api/v1/config/validate", json={"config": changes, "partial": True},
                         on_ok=alive(self, valid), on_error=alive(self, failed))

    def open_connect(self) -> None:
        """A front-desk PC: pair with the practice server instead of setting up this one. Opened
        window-modal without a nested event loop; a successful pairing ends the wizard."""
        from ui.connect import ConnectDialog

        if self.connect_dialog is not None:
            self.connect_dialog.raise_()
            return
        dlg = ConnectDialog(self.paths, self)
        self.connect_dialog = dlg

        def paired() -> None:
            self.connected = dlg
            self.accept()  # the page on screen lets it through (_AsyncPage.validatePage)

        def closed(_r: int) -> None:
            self.connect_dialog = None

        dlg.accepted.connect(paired)
        dlg.finished.connect(closed)
        dlg.open()

    def done(self, result: int) -> None:
        self.client.close()
        super().done(result)
