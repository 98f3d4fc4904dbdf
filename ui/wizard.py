"""First-run wizard: export folders, the billing system (RCM) and the schedule, the manager account.

It writes ``chargebridge.toml`` only after :func:`agent.config.parse` accepts it — a bad value
is shown with its key and what is allowed, and the field is highlighted — and it puts secrets
(the RCM client secret, the manager's token) only in the OS keyring.

Slow work never runs on the UI thread: the connection test (``FhirTarget.check()``: a token
request and a capability request) and the account creation (keyring + opening the encrypted
store) run on a worker thread, and the window keeps painting.

The one exception to "the UI never opens the store": before any engine has run there is no API
to ask, so the wizard creates the manager account by opening the store itself and calling
:func:`agent.users.add_user` (which also records it in the audit trail). When an engine *is*
running for this home, the wizard uses its API instead (POST /api/v1/users, which needs an
admin token) — two writers racing on one store is exactly what the engine's lock is for.
"""

from __future__ import annotations

import getpass
import re
import tomllib
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
from core.secrets import API_TOKEN as TOKEN_SECRET
from core.secrets import RCM_SECRET
from ui.pages import Worker, alive
from ui.pages.settings import DAY_LABEL, FORMATS, days_spec, parse_days

_KEY = re.compile(r"'([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*)'")


def _error_label() -> QLabel:
    lab = QLabel("")
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    lab.setStyleSheet("color: #c62828;")
    lab.setAccessibleName("Problem")
    return lab


class FoldersPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Where does the EHR export to?")
        self.setSubTitle("Add each folder your EHR writes its billing exports into, and the format it writes. "
                         "ChargeBridge reads every new file there.")
        lay = QVBoxLayout(self)
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
        self.error = _error_label()
        lay.addWidget(self.error)

    def add_folder(self, path: str, fmt: str = "auto", profile: str = "") -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        self.table.setItem(r, 0, QTableWidgetItem(path))
        combo = QComboBox()
        for key, text in FORMATS:
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
        out = []
        for r in range(self.table.rowCount()):
            prof = self.table.item(r, 2)
            out.append({"path": self.table.item(r, 0).text().strip(),
                        "format": self.table.cellWidget(r, 1).currentData(),
                        "profile": prof.text().strip() if prof else ""})
        return out

    def isComplete(self) -> bool:  # noqa: N802 - Qt's name
        return self.table.rowCount() > 0

    def validatePage(self) -> bool:  # noqa: N802 - Qt's name
        self.error.setText("")
        for i, f in enumerate(self.folders()):
            if f["path"] and not Path(f["path"]).expanduser().is_dir():
                self.error.setText(f"'folders[{i}].path': the folder {f['path']} does not exist — create it (or "
                                   "choose the folder the EHR really exports into).")
                self.table.selectRow(i)
                return False
        return self.wiz.check(self.error, partial=True)


class RcmPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.wiz = wizard
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
        self.secret.setToolTip("Kept in this computer's keyring, never in the settings file")
        for label, w in (("Base &URL:", self.base_url), ("T&oken URL:", self.token_url),
                         ("&Client id:", self.client_id), ("Client s&ecret:", self.secret)):
            form.addRow(label, w)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.test_btn = QPushButton("&Test connection")
        self.test_btn.setToolTip("Get a token and ask the RCM for its capabilities with these values")
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
        self.hours = QLineEdit("07:00-19:00")
        self.hours.setToolTip("Local time, from-to, 24-hour clock (00:00-24:00 = all day)")
        sf.addRow("Business &hours:", self.hours)
        days = QHBoxLayout()
        self.day_boxes = []
        for i, label in enumerate(DAY_LABEL):
            cb = QCheckBox(label)
            cb.setChecked(i < 5)
            days.addWidget(cb)
            self.day_boxes.append(cb)
        sf.addRow("Business days:", days)
        lay.addWidget(sched)
        self.error = _error_label()
        lay.addWidget(self.error)
        self.worker = Worker(self)

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

    def test_connection(self) -> None:
        """FhirTarget.check() on a worker thread: it may wait on the network for many seconds."""
        base, token_url = self.base_url.text().strip(), self.token_url.text().strip()
        client_id, secret = self.client_id.text().strip(), self.secret.text()
        self.test_btn.setEnabled(False)
        self.test_result.setStyleSheet("")
        self.test_result.setText("Testing…")

        def check() -> tuple[bool, str]:
            from connectors.rcm.fhir import FhirTarget

            if not base:
                return False, "type the base URL first"
            try:
                target = FhirTarget(base, token_url=token_url, client_id=client_id, secret=secret, timeout=15)
            except ValueError as exc:
                return False, str(exc)
            return target.check()

        def done(result: Any, exc: BaseException | None) -> None:
            self.test_btn.setEnabled(True)
            ok, detail = result if exc is None else (False, f"the test itself failed ({type(exc).__name__})")
            self.test_result.setStyleSheet(f"color: {'#1b7f3b' if ok else '#c62828'};")
            self.test_result.setText(("✔ " if ok else "✖ Failed: ") + detail)

        self.worker.run(check, alive(self, done))

    def validatePage(self) -> bool:  # noqa: N802 - Qt's name
        self.error.setText("")
        if not any(cb.isChecked() for cb in self.day_boxes):
            self.error.setText("'sync.business_days': pick at least one business day.")
            return False
        if self.enabled.isChecked() and not self.secret.text().strip() and not self.wiz.secret_saved():
            self.error.setText("Type the client secret the RCM gave you (it is kept in this computer's keyring), "
                               "or untick “Send charges to a billing system” to set it up later.")
            self.secret.setFocus()
            return False
        if not self.wiz.check(self.error):
            return False
        return self.wiz.save(self.error, secret=self.secret.text().strip() if self.enabled.isChecked() else "")


class AccountPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.created = False
        self.token = ""
        self.engine_url = ""
        self.setTitle("Create the manager account")
        self.setSubTitle("Managers resolve mismatches, reprocess quarantined files and pause sync. You sign in to "
                         "ChargeBridge with the token created here.")
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.name = QLineEdit("manager")
        self.name.setToolTip("A name for the practice manager (1 to 64 characters)")
        form.addRow("Na&me:", self.name)
        self.admin_token = QLineEdit()
        self.admin_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.admin_token.setToolTip("The engine is running: creating a user then needs an admin's token")
        self.admin_label = QLabel("&Admin token:")
        self.admin_label.setBuddy(self.admin_token)
        form.addRow(self.admin_label, self.admin_token)
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
        lay.addWidget(self.result)
        self.skip = QCheckBox("I already have a manager account — &skip this step")
        self.skip.toggled.connect(lambda _: self.completeChanged.emit())
        lay.addWidget(self.skip)
        lay.addStretch(1)
        self.worker = Worker(self)
        self._set_engine("")

    def _set_engine(self, url: str) -> None:
        self.engine_url = url
        self.admin_token.setVisible(bool(url))
        self.admin_label.setVisible(bool(url))

    def initializePage(self) -> None:  # noqa: N802 - Qt's name
        """Is an engine running for this home? Asked on a worker (it is an HTTP request)."""
        from ui.client import engine_url

        url = engine_url(self.wiz.home)
        if not url:
            self._set_engine("")
            return

        def probe() -> bool:
            import requests

            try:
                return requests.get(f"{url}/api/v1/health", timeout=3).status_code == 200
            except requests.RequestException:
                return False

        def probed(up: Any, _exc: BaseException | None) -> None:
            self._set_engine(url if up else "")
            self.create_btn.setEnabled(True)

        self.create_btn.setEnabled(False)
        self.worker.run(probe, alive(self, probed))

    def isComplete(self) -> bool:  # noqa: N802 - Qt's name
        return self.created or self.skip.isChecked()

    def create_account(self) -> None:
        name = self.name.text().strip()
        if not name:
            self.result.setStyleSheet("color: #c62828;")
            self.result.setText("Type a name first.")
            return
        self.create_btn.setEnabled(False)
        self.result.setStyleSheet("")
        self.result.setText("Creating…")
        if self.engine_url:
            self._create_via_api(name)
        else:
            self._create_in_store(name)

    def _create_in_store(self, name: str) -> None:
        paths, key_source = self.wiz.paths, self.wiz.key_source()

        def work() -> str:
            # No engine yet: open the store directly (the documented exception, see the module doc).
            from agent.store import Store
            from agent.users import add_user
            from core import secrets

            store = Store.open(paths, key_source)
            try:
                token = add_user(store, name, "manager", actor=f"wizard:{getpass.getuser()}")
            finally:
                store.close()
            secrets.set_secret(paths, TOKEN_SECRET, token)
            return token

        self.worker.run(work, alive(self, self._created))

    def _create_via_api(self, name: str) -> None:
        from ui.client import ApiClient

        client = ApiClient(self.engine_url, self.admin_token.text().strip(), parent=self)

        def ok(out: dict[str, str]) -> None:
            def save() -> str:
                from core import secrets

                secrets.set_secret(self.wiz.paths, TOKEN_SECRET, out["token"])
                return out["token"]

            self.worker.run(save, alive(self, self._created))

        client.call("POST", "/api/v1/users", json={"name": name, "role": "manager"}, on_ok=alive(self, ok),
                    on_error=alive(self, lambda f: self._created(None, RuntimeError(str(f)))))

    def _created(self, token: Any, exc: BaseException | None) -> None:
        self.create_btn.setEnabled(not self.created)
        if exc is not None:
            detail = getattr(exc, "title", "") or str(exc)
            fix = getattr(exc, "fix", "")
            self.result.setStyleSheet("color: #c62828;")
            self.result.setText(f"The account was not created: {detail}" + (f". Fix: {fix}" if fix else ""))
            return
        self.created, self.token = True, str(token)
        self.wiz.token = self.token
        self.create_btn.setEnabled(False)
        self.token_out.setText(self.token)
        self.result.setStyleSheet("color: #1b7f3b;")
        self.result.setText("Account created. This token is shown only once: it is saved in this computer's "
                            "keyring; copy it somewhere safe to sign in on another computer.")
        self.completeChanged.emit()


class FirstRunWizard(QWizard):
    """Writes ``<home>/chargebridge.toml``; secrets go to the OS keyring only."""

    def __init__(self, home: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.home = Path(home)
        self.paths = Paths.resolve(self.home)
        self.token = ""
        self.saved = False
        self.setWindowTitle("Set up ChargeBridge")
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        self.setMinimumSize(720, 560)
        self.base = self._existing()
        self.folders_page = FoldersPage(self)
        self.rcm_page = RcmPage(self)
        self.account_page = AccountPage(self)
        for p in (self.folders_page, self.rcm_page, self.account_page):
            self.addPage(p)
        self._prefill()

    # -- config -----------------------------------------------------------------------------
    def _existing(self) -> dict[str, Any]:
        """A re-run starts from the current file (keeping keys the wizard does not ask about)."""
        from agent.api import config_to_dict
        from agent.config import Config, load
        from core.errors import ConfigError

        try:
            cfg = load(self.paths.config)
            self._sections = set(tomllib.loads(self.paths.config.read_text(encoding="utf-8"))) \
                if self.paths.config.exists() else set()
            return config_to_dict(cfg)
        except (ConfigError, OSError, tomllib.TOMLDecodeError):
            self._sections = set()
            return config_to_dict(Config())

    def _prefill(self) -> None:
        for f in self.base.get("folders", []):
            self.folders_page.add_folder(f["path"], f.get("format", "auto"), f.get("profile", ""))
        rcm, page = self.base.get("rcm", {}), self.rcm_page
        if rcm.get("type"):
            page.base_url.setText(rcm.get("base_url", ""))
            page.token_url.setText(rcm.get("token_url", ""))
            page.client_id.setText(rcm.get("client_id", ""))
        sync = self.base.get("sync", {})
        if "sync" in self._sections:  # otherwise the wizard's suggestion (weekdays 07:00-19:00)
            page.interval.setValue(float(sync.get("interval_minutes", 15)))
            page.hours.setText(sync.get("business_hours", "07:00-19:00"))
            on = parse_days(sync.get("business_days", "mon-fri"))
            for i, cb in enumerate(page.day_boxes):
                cb.setChecked(i in on)

    def key_source(self) -> str:
        return str(self.base.get("store", {}).get("key_source", "keyring"))

    def config_dict(self) -> dict[str, Any]:
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.base.items()}
        old = {f["path"]: f for f in self.base.get("folders", [])}
        cfg["folders"] = [{**old.get(f["path"], {}), **f} for f in self.folders_page.folders()]
        cfg["rcm"] = {**cfg.get("rcm", {}), **self.rcm_page.rcm()}
        cfg["sync"] = {**cfg.get("sync", {}), **self.rcm_page.sync()}
        return cfg

    def check(self, error: QLabel, *, partial: bool = False) -> bool:
        """Validate with the engine's own rules; on failure name the key, say what is allowed."""
        from agent.config import parse
        from core.errors import ConfigError

        cfg = self.config_dict()
        if partial:  # the folders page: the later pages' values are not chosen yet
            cfg = {"folders": cfg["folders"]}
        for w in self._fields().values():
            w.setStyleSheet("")
        try:
            parse(cfg, origin="chargebridge.toml")
        except ConfigError as exc:
            label = self._focus_key(exc.title)
            error.setText(f"{label + ': ' if label else ''}{exc.title.replace('chargebridge.toml: ', '')} — "
                          f"{exc.fix}")
            return False
        return True

    def _fields(self) -> dict[str, QWidget]:
        page = self.rcm_page
        return {"rcm.base_url": page.base_url, "rcm.token_url": page.token_url, "rcm.client_id": page.client_id,
                "sync.business_hours": page.hours, "sync.interval_minutes": page.interval}

    def _focus_key(self, title: str) -> str:
        """Put the cursor in (and outline) the field a config error names; returns its label."""
        m = _KEY.search(title)
        key = m.group(1) if m else ""
        w = self._fields().get(key)
        if w is not None:
            w.setStyleSheet("border: 2px solid #c62828;")
            w.setFocus()
            if isinstance(w, QLineEdit):
                w.selectAll()
            holder = w.parentWidget() or w
            buddy = next((lab for lab in holder.findChildren(QLabel) if lab.buddy() is w), None)
            return buddy.text().replace("&", "").rstrip(":") if buddy else ""
        if key.startswith("folders["):
            self.folders_page.table.selectRow(int(key[8:key.index("]")]))
        return ""

    def secret_saved(self) -> bool:
        from core import secrets
        from core.errors import ChargeBridgeError

        try:
            return bool(secrets.get_secret(self.paths, RCM_SECRET))
        except ChargeBridgeError:
            return False

    def save(self, error: QLabel, *, secret: str) -> bool:
        """Write the validated config atomically and the secret to the keyring."""
        from agent.api import write_config
        from core import secrets
        from core.errors import ChargeBridgeError

        try:
            if secret:
                secrets.set_secret(self.paths, RCM_SECRET, secret)
            self.paths.ensure()
            write_config(self.paths.config, self.config_dict())
        except ChargeBridgeError as exc:
            error.setText(f"Not saved: {exc.title} — {exc.fix}")
            return False
        except OSError as exc:
            error.setText(f"Not saved: {self.paths.config} cannot be written ({exc.strerror}) — check the "
                          "folder's permissions")
            return False
        self.saved = True
        return True

