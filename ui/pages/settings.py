"""Settings (admin): watched folders, the billing system connection, the sync schedule, users.

Everything goes through the engine's API: it validates with the same rules as its own start-up
(a bad value comes back naming the key and what is allowed, and that field is highlighted
here), writes chargebridge.toml atomically and records who changed it. The RCM secret goes to
the OS keyring through its own endpoint; it is never in the config or shown again.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure, unreadable_answer
from ui.common import (
    DAY_LABEL,
    EXPORT_FORMATS,
    PAGE_SIZE_MAX,
    days_from_spec,
    days_spec,
    folder_rows,
    page_items,
)
from ui.pages import Page, Session, alive, empty_label, needs_role_text, role_label, short_date


class SettingsPage(Page):
    name = "settings"
    title = "Settings"
    refresh_on_show = False

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.loaded: dict[str, Any] | None = None  # GET /api/v1/config's answer
        self.secret_set = False
        self.last_token = ""
        self._bad_widget: QWidget | None = None

        self.tabs = QTabWidget()
        self.tabs.addTab(self._folders_tab(), "Watched folders")
        self.tabs.addTab(self._rcm_tab(), "Billing system")
        self.tabs.addTab(self._schedule_tab(), "Schedule")
        self.tabs.addTab(self._users_tab(), "Users")
        body = QWidget()
        bl = QVBoxLayout(body)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(self.tabs, 1)
        bottom = QHBoxLayout()
        self.where = QLabel("")
        self.where.setStyleSheet("color: #555;")
        bottom.addWidget(self.where, 1)
        self.revert_btn = QPushButton("&Revert")
        self.revert_btn.setToolTip("Throw away unsaved changes and show the saved settings")
        self.revert_btn.clicked.connect(lambda: self.refresh(force=True))
        self.save_btn = QPushButton("Sa&ve settings")
        self.save_btn.setToolTip("Check and save (Ctrl+S). Schedule and billing system changes apply at once; "
                                 "folder changes when the engine restarts.")
        self.save_btn.clicked.connect(lambda: self.session.guard(self.save, "save the settings"))
        self.save_btn.setDefault(True)
        bottom.addWidget(self.revert_btn)
        bottom.addWidget(self.save_btn)
        bl.addLayout(bottom)
        save = QShortcut(QKeySequence(QKeySequence.StandardKey.Save), self)
        save.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)  # only while Settings is the visible page
        save.activated.connect(self.save_btn.click)

        self.no_role = empty_label("")
        self.stack = QStackedWidget()
        self.stack.addWidget(body)
        self.stack.addWidget(self.no_role)
        self.body = body
        self._outer.addWidget(self.stack, 1)
        self.apply_role()

    # -- tabs -------------------------------------------------------------------------------
    def _folders_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addWidget(QLabel("ChargeBridge reads every file the EHR exports into these folders. Pick the format "
                             "the EHR writes; CSV exports need a profile (a column mapping)."))
        self.folders = QTableWidget(0, 3)
        self.folders.setHorizontalHeaderLabels(["Folder", "Format", "CSV profile"])
        self.folders.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.folders.setColumnWidth(1, 180)
        self.folders.setColumnWidth(2, 160)
        self.folders.verticalHeader().hide()
        self.folders.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.folders.setAccessibleName("Watched folders")
        self.folders.setToolTip("Double-click a folder or profile to edit it")
        lay.addWidget(self.folders, 1)
        row = QHBoxLayout()
        add = QPushButton("A&dd folder…")
        add.setToolTip("Choose another folder the EHR exports into")
        add.clicked.connect(self._browse_folder)
        rm = QPushButton("Remove fo&lder")
        rm.setToolTip("Stop watching the selected folder (its files are not touched)")
        rm.clicked.connect(self._remove_folder)
        row.addWidget(add)
        row.addWidget(rm)
        row.addStretch(1)
        lay.addLayout(row)
        self.folders_note = QLabel("Folder changes take effect when the engine restarts.")
        self.folders_note.setStyleSheet("color: #555;")
        lay.addWidget(self.folders_note)
        return w

    def add_folder(self, path: str, fmt: str = "auto", profile: str = "", extra: dict[str, Any] | None = None) -> None:
        r = self.folders.rowCount()
        self.folders.insertRow(r)
        item = QTableWidgetItem(path)
        item.setToolTip(path)
        item.setData(Qt.ItemDataRole.UserRole, extra or {})  # keys this page does not edit, kept as they were
        self.folders.setItem(r, 0, item)
        combo = QComboBox()
        for key, text in EXPORT_FORMATS:
            combo.addItem(text, key)
        combo.setCurrentIndex(max(combo.findData(fmt), 0))
        combo.setToolTip("The format of the files in this folder")
        self.folders.setCellWidget(r, 1, combo)
        prof = QTableWidgetItem(profile)
        prof.setToolTip("CSV only: a built-in profile name (generic, synthea) or the path of a .toml mapping")
        self.folders.setItem(r, 2, prof)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose an EHR export folder")
        if path:
            self.add_folder(path)

    def _remove_folder(self) -> None:
        rows = sorted({i.row() for i in self.folders.selectedIndexes()}, reverse=True)
        for r in rows:
            self.folders.removeRow(r)

    def _rcm_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.rcm_on = QCheckBox("Se&nd charges to a billing system (FHIR R4)")
        self.rcm_on.setToolTip("Off: ChargeBridge only reads and checks exports; nothing is sent")
        lay.addWidget(self.rcm_on)
        form = QFormLayout()
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("e.g. https://rcm.example/fhir/R4")
        self.base_url.setToolTip("The billing system's FHIR base URL (https; plain http only on this computer)")
        self.token_url = QLineEdit()
        self.token_url.setPlaceholderText("e.g. https://rcm.example/oauth2/token")
        self.token_url.setToolTip("Where ChargeBridge gets an access token (OAuth2 client credentials)")
        self.client_id = QLineEdit()
        self.client_id.setToolTip("The client id the billing system issued to this practice")
        self.auth = QComboBox()
        self.auth.addItem("OAuth2 client credentials", "client_credentials")
        self.auth.addItem("Static bearer token", "bearer")
        self.auth.setToolTip("How ChargeBridge signs in to the billing system")
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret.setToolTip("Stored in this computer's keyring, never in the settings file. Leave empty to keep "
                               "the saved one.")
        self.ca_bundle = QLineEdit()
        self.ca_bundle.setPlaceholderText("optional: the practice's CA certificates (.pem)")
        self.ca_bundle.setToolTip("Only if the billing system uses a certificate from the practice's own CA")
        for label, widget in (("&Base URL:", self.base_url), ("T&oken URL:", self.token_url),
                              ("&Client id:", self.client_id), ("Sign-in met&hod:", self.auth),
                              ("C&lient secret:", self.secret), ("CA certificates:", self.ca_bundle)):
            form.addRow(label, widget)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.test_btn = QPushButton("Test connect&ion")
        self.test_btn.setToolTip("Ask the billing system for a token and its capabilities, with the values above")
        self.test_btn.clicked.connect(self.test_connection)
        row.addWidget(self.test_btn)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.test_result, 1)
        lay.addLayout(row)
        lay.addStretch(1)
        self.rcm_on.toggled.connect(self._rcm_enabled)
        return w

    def _rcm_enabled(self, on: bool) -> None:
        for wdg in (self.base_url, self.token_url, self.client_id, self.auth, self.secret, self.ca_bundle,
                    self.test_btn):
            wdg.setEnabled(on)

    def _schedule_tab(self) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.interval = QDoubleSpinBox()
        self.interval.setRange(0.05, 1440)
        self.interval.setDecimals(0)
        self.interval.setSuffix(" minutes")
        self.interval.setToolTip("How often ready charges are sent, inside business hours")
        form.addRow("S&ync every:", self.interval)
        self.hours = QLineEdit()
        self.hours.setPlaceholderText("07:00-19:00")
        self.hours.setToolTip("Local time, from-to, 24-hour clock (00:00-24:00 = all day)")
        form.addRow("Business &hours:", self.hours)
        days = QHBoxLayout()
        self.day_boxes = []
        for label in DAY_LABEL:
            cb = QCheckBox(label)
            cb.setToolTip(f"Send charges on {label}")
            days.addWidget(cb)
            self.day_boxes.append(cb)
        days.addStretch(1)
        form.addRow("Business days:", days)
        note = QLabel("Outside business hours nothing is sent automatically; “Sync now” on the Status page "
                      "always works.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #555;")
        form.addRow(note)
        return w

    def _users_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.users = QTableWidget(0, 3)
        self.users.setHorizontalHeaderLabels(["Name", "Role", "Added"])
        self.users.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.users.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.users.verticalHeader().hide()
        self.users.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.users.setAccessibleName("Users")
        lay.addWidget(self.users, 1)
        row = QHBoxLayout()
        nl = QLabel("&Name:")
        self.new_name = QLineEdit()
        self.new_name.setPlaceholderText("e.g. frontdesk-2")
        self.new_name.setToolTip("A name for the person or computer; 1 to 64 characters")
        nl.setBuddy(self.new_name)
        rl = QLabel("R&ole:")
        self.new_role = QComboBox()
        for key, text in ((Role.FRONT_DESK, "Front desk — view only"),
                          (Role.CODER, "Coder — review queue: approve, edit lines, reject"),
                          (Role.MANAGER, "Manager — resolve, reprocess, pause"),
                          (Role.ADMIN, "Admin — also settings and users")):
            self.new_role.addItem(text, key)
        rl.setBuddy(self.new_role)
        self.add_user_btn = QPushButton("Add &user")
        self.add_user_btn.setToolTip("Create the user and show their sign-in token once")
        self.add_user_btn.clicked.connect(lambda: self.session.guard(self.add_user, "add a user"))
        for wdg in (nl, self.new_name, rl, self.new_role, self.add_user_btn):
            row.addWidget(wdg)
        lay.addLayout(row)
        trow = QHBoxLayout()
        self.token_out = QLineEdit()
        self.token_out.setReadOnly(True)
        self.token_out.setPlaceholderText("The new user's token appears here, once")
        self.token_out.setToolTip("Give this to the user; it is not shown again (only its hash is kept)")
        copy_btn = QPushButton("Cop&y")
        copy_btn.setToolTip("Copy the token to the clipboard")
        copy_btn.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.token_out.text()))
        trow.addWidget(self.token_out, 1)
        trow.addWidget(copy_btn)
        lay.addLayout(trow)
        return w

    # -- roles --------------------------------------------------------------------------------
    def apply_role(self) -> None:
        if self.session.at_least(Role.ADMIN):
            self.stack.setCurrentWidget(self.body)
        else:
            txt = needs_role_text(Role.ADMIN, self.session.role)
            self.no_role.setText("Changing settings " + txt[0].lower() + txt[1:])
            self.stack.setCurrentWidget(self.no_role)

    # -- load ---------------------------------------------------------------------------------
    def dirty(self) -> bool:
        """Unsaved edits on the page (a refresh must not silently throw them away)."""
        if self.loaded is None:
            return False
        return self.collect() != self.loaded["config"] or bool(self.secret.text().strip())

    def refresh(self, force: bool = False) -> None:
        self.apply_role()
        if not self.session.at_least(Role.ADMIN):
            return
        if not force and self.dirty():
            self.banner.show_text("You have unsaved changes: Save them, or Revert to see the saved settings.")
            return
        self.banner.hide()
        self.client.call("GET", "/api/v1/config", on_ok=alive(self, self.load),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the settings")))
        self.load_users()

    def load_users(self) -> None:
        self.client.call("GET", "/api/v1/users", params={"page": 1, "page_size": PAGE_SIZE_MAX},
                         on_ok=alive(self, self._users_loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the users")))

    def load(self, answer: dict[str, Any]) -> None:
        self.loaded = answer
        cfg = answer["config"]
        self._clear_bad()
        self.folders.setRowCount(0)
        for f in cfg.get("folders", []):
            self.add_folder(f["path"], f.get("format", "auto"), f.get("profile", ""), f)
        rcm = cfg.get("rcm", {})
        self.rcm_on.setChecked(bool(rcm.get("type")))
        self._rcm_enabled(bool(rcm.get("type")))
        self.base_url.setText(rcm.get("base_url", ""))
        self.token_url.setText(rcm.get("token_url", ""))
        self.client_id.setText(rcm.get("client_id", ""))
        self.auth.setCurrentIndex(max(self.auth.findData(rcm.get("auth", "client_credentials")), 0))
        self.ca_bundle.setText(rcm.get("ca_bundle", ""))
        self.secret.clear()
        self.secret_set = bool(answer.get("rcm_secret_set"))
        self.secret.setPlaceholderText("saved in the keyring — type a new one to replace it" if self.secret_set
                                       else "not set yet")
        sync = cfg.get("sync", {})
        self.interval.setValue(float(sync.get("interval_minutes", 15)))
        self.hours.setText(sync.get("business_hours", ""))
        on = days_from_spec(str(sync.get("business_days") or "mon-sun"))
        if on is None:  # text the boxes cannot show: say so rather than silently tick other days
            self.banner.show_text(f"The business days in the settings file ({sync.get('business_days')!r}) cannot "
                                  "be shown as check boxes; tick the days you want and save.", "error")
            on = set()
        for i, cb in enumerate(self.day_boxes):
            cb.setChecked(i in on)
        restart = answer.get("restart_required") or []
        self.where.setText(f"Saved in {answer.get('path', '')}"
                           + (f" — restart the engine to apply: {', '.join(restart)}" if restart else ""))
        if answer.get("problem"):
            self.banner.show_text(f"The settings file has a problem, so these are the running settings: "
                                  f"{answer['problem']}", "error")

    def _users_loaded(self, answer: Any) -> None:
        try:
            users, _total = page_items(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the users")
            return
        self.users.setRowCount(len(users))
        for i, u in enumerate(users):
            for col, text in enumerate((str(u.get("name", "")), role_label(str(u.get("role", ""))),
                                        short_date(str(u.get("created_at", ""))))):
                self.users.setItem(i, col, QTableWidgetItem(text))

    # -- save ---------------------------------------------------------------------------------
    def collect(self) -> dict[str, Any]:
        """The config to PUT: what was loaded, with this page's fields written over it."""
        cfg = copy.deepcopy((self.loaded or {}).get("config") or {})
        cfg["folders"] = folder_rows(self.folders)
        rcm = dict(cfg.get("rcm") or {})
        rcm.update(type="fhir" if self.rcm_on.isChecked() else "", base_url=self.base_url.text().strip(),
                   token_url=self.token_url.text().strip(), client_id=self.client_id.text().strip(),
                   auth=self.auth.currentData(), ca_bundle=self.ca_bundle.text().strip())
        cfg["rcm"] = rcm
        sync = dict(cfg.get("sync") or {})
        sync.update(interval_minutes=float(self.interval.value()), business_hours=self.hours.text().strip(),
                    business_days=days_spec([i for i, cb in enumerate(self.day_boxes) if cb.isChecked()]))
        cfg["sync"] = sync
        return cfg

    def save(self) -> None:
        self._clear_bad()
        if not any(cb.isChecked() for cb in self.day_boxes):
            self._mark_bad(self.day_boxes[0], "Pick at least one business day.")
            return
        self.save_btn.setEnabled(False)
        secret = self.secret.text().strip()

        def saved(out: dict[str, Any]) -> None:
            if secret:
                self.client.call("POST", "/api/v1/rcm/secret", json={"secret": secret},
                                 on_ok=alive(self, lambda _: finish(out, " The RCM secret is saved in the keyring.")),
                                 on_error=alive(self, lambda f: failed(f, "save the RCM secret")))
            else:
                finish(out, "")

        def finish(out: dict[str, Any], extra: str) -> None:
            self.save_btn.setEnabled(True)
            kind = "info" if out.get("restart_required") else "ok"
            self.banner.show_text(out.get("message", "Saved.") + extra, kind)
            self.session.message.emit("Settings saved")
            self.refresh_keep_banner()

        def failed(f: ApiFailure, doing: str) -> None:
            self.save_btn.setEnabled(True)
            self.show_invalid(f, doing)

        config = self.collect()

        def valid(_r: Any) -> None:
            self.client.call("PUT", "/api/v1/config", json=config, on_ok=alive(self, saved),
                             on_error=alive(self, lambda f: failed(f, "save the settings")))

        # the engine's own rules (the same as at its start-up); PUT checks again before writing
        self.client.call("POST", "/api/v1/config/validate", json={"config": config, "partial": False},
                         on_ok=alive(self, valid), on_error=alive(self, lambda f: failed(f, "save the settings")))

    def refresh_keep_banner(self) -> None:
        self.client.call("GET", "/api/v1/config", on_ok=alive(self, self.load))

    def show_invalid(self, f: ApiFailure, doing: str = "save the settings") -> None:
        """The engine's title and fix as it sent them; the field its ``key`` names gets the cursor
        and a red outline (its tab is brought to the front)."""
        if f.status == 422:
            self.banner.show_text(f"<b>Not saved: {_esc(f.title.rstrip('.'))}.</b>"
                                  + (f"<br>What to do: {_esc(f.fix.rstrip('.'))}." if f.fix else ""), "error")
        else:
            self.banner.show_failure(f, doing)
        widget = self._widget_for(f.key or "")
        if widget is not None:
            self._mark_bad(widget, "")

    def _widget_for(self, key: str) -> QWidget | None:
        for prefix in ("body.", "config."):  # request-validation keys carry their location
            key = key.removeprefix(prefix)
        simple = {"rcm.base_url": (1, self.base_url), "rcm.token_url": (1, self.token_url),
                  "rcm.client_id": (1, self.client_id), "rcm.ca_bundle": (1, self.ca_bundle),
                  "sync.interval_minutes": (2, self.interval), "sync.business_hours": (2, self.hours),
                  "sync.business_days": (2, self.day_boxes[0])}
        if key in simple:
            tab, w = simple[key]
            self.tabs.setCurrentIndex(tab)
            return w
        if key == "secret":
            self.tabs.setCurrentIndex(1)
            return self.secret
        if key == "folders" or key.startswith("folders["):
            self.tabs.setCurrentIndex(0)
            row = key[len("folders["):].partition("]")[0]
            if row.isdigit() and int(row) < self.folders.rowCount():
                self.folders.selectRow(int(row))
            return self.folders
        return None

    def _mark_bad(self, widget: QWidget, message: str) -> None:
        self._clear_bad()
        widget.setStyleSheet("border: 2px solid #c62828;")
        widget.setFocus(Qt.FocusReason.OtherFocusReason)
        self._bad_widget = widget
        if message:
            self.banner.show_text(f"<b>{message}</b>", "error")

    def _clear_bad(self) -> None:
        if self._bad_widget is not None:
            self._bad_widget.setStyleSheet("")
            self._bad_widget = None

    # -- RCM test and users -------------------------------------------------------------------
    def test_connection(self) -> None:
        self._clear_bad()
        self.test_btn.setEnabled(False)
        self.test_result.setStyleSheet("")
        self.test_result.setText("Testing… (up to 30 seconds)")
        body = {"base_url": self.base_url.text().strip(), "token_url": self.token_url.text().strip(),
                "client_id": self.client_id.text().strip(), "auth": self.auth.currentData(),
                "ca_bundle": self.ca_bundle.text().strip(), "secret": self.secret.text().strip()}

        def done(out: dict[str, Any]) -> None:
            self.test_btn.setEnabled(True)
            ok = bool(out.get("ok"))
            self.test_result.setStyleSheet(f"color: {'#1b7f3b' if ok else '#c62828'};")
            self.test_result.setText(("✔ " if ok else "✖ Failed: ") + str(out.get("detail", "")))

        def fail(f: ApiFailure) -> None:
            self.test_btn.setEnabled(True)
            self.test_result.setStyleSheet("color: #c62828;")
            self.test_result.setText(f"✖ Could not run the test: {f.title.rstrip('.')}."
                                     + (f" What to do: {f.fix.rstrip('.')}." if f.fix else ""))
            widget = self._widget_for(f.key or "")
            if widget is not None:
                self._mark_bad(widget, "")

        self.client.call("POST", "/api/v1/rcm/test", json=body, on_ok=alive(self, done), on_error=alive(self, fail),
                         timeout=75)

    def add_user(self) -> None:
        name = self.new_name.text().strip()
        if not name:
            self._mark_bad(self.new_name, "Type a name for the new user.")
            return
        self._clear_bad()
        self.add_user_btn.setEnabled(False)

        def done(out: dict[str, str]) -> None:
            self.add_user_btn.setEnabled(True)
            self.last_token = out["token"]
            self.token_out.setText(out["token"])
            self.new_name.clear()
            self.banner.show_text(f"User {out['name']} added. Give them the token below now — it is shown only "
                                  "once.", "ok")
            self.load_users()

        def fail(f: ApiFailure) -> None:
            self.add_user_btn.setEnabled(True)
            self.banner.show_failure(f, "add the user")
            if f.key and f.key.endswith("name"):
                self._mark_bad(self.new_name, "")

        self.client.call("POST", "/api/v1/users", json={"name": name, "role": self.new_role.currentData()},
                         on_ok=alive(self, done), on_error=alive(self, fail))


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
