"""Test mode: what sync would have sent (the dry-run sends), one send's files, a read-only view
of a file, export to a file, and the go-live checklist with the switch.

Everything comes from the engine's API (H8): ``GET /testmode/sends`` (paged), ``GET
/testmode/sends/{id}`` (the files' names and sizes), ``GET /testmode/sends/{id}/export`` (the
payload: the file itself, or a ZIP when a send had several — the engine audits every fetch),
``GET /golive`` (the checks) and ``POST /golive`` (admin). A file is shown by fetching the export
once per selected send and reading the file out of it here; nothing is written to disk unless
the person exports. The payload is patient data: the engine gives it to managers and admins
only, and this page keeps it in memory only while its send is selected.

When the tab shows (:class:`TestModeGate`): while the engine is in test mode, and after go-live
for managers and admins as long as test sends are kept, so the record stays reachable.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure, unreadable_answer
from ui.common import Worker
from ui.models import Column, RecordsModel
from ui.pages import Page, Session, alive, gate, needs_role_text, record_table, short_date, when, with_empty_state
from ui.pages.quarantine import display_text

EXPORT_CAP = 16 * 1024 * 1024  # the engine hands out at most this much of a send (agent/testmode.py)
VIEW_CAP = 4 * 1024 * 1024  # the most of one file the viewer shows (the export has it all)
MAX_FILES = 50  # files in one send (the engine's budget)
ROUTE = {"dry-run": "Dry run (recorded only)", "sandbox": "RCM sandbox"}
EMPTY = ("No test sends yet. In test mode every sync records here exactly what it would send to the "
         "billing system — run a sync (tray → Sync now) once encounters are ready.")
OK, MISSING, INFO = "✓", "✕", "ℹ"


def _size(n: Any) -> str:
    try:
        v = float(n)
    except (TypeError, ValueError):
        return "—"
    for unit in ("bytes", "KB", "MB"):
        if v < 1024 or unit == "MB":
            return f"{int(v):,} {unit}" if unit == "bytes" else f"{v:,.1f} {unit}"
        v /= 1024
    return "—"


def _esc(s: Any) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(answer: Any) -> tuple[str, bytes]:
    """(name, bytes) of an export answer ``{id, name, size, content_base64}``, checked: shape,
    size budget, base64, and that the size matches. ValueError for anything else."""
    if not isinstance(answer, dict):
        raise ValueError("not an export")
    name, size, data = answer.get("name"), answer.get("size"), answer.get("content_base64")
    if not isinstance(name, str) or not isinstance(size, int) or not isinstance(data, str):
        raise ValueError("not an export")
    if not 0 <= size <= EXPORT_CAP or len(data) > (EXPORT_CAP // 3 + 1) * 4:
        raise ValueError("the export is larger than the window accepts")
    try:
        body = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the export is not base64") from None
    if len(body) != size:
        raise ValueError("the export's size does not match")
    return os.path.basename(name.replace("\\", "/")) or "test-send", body


def file_bytes(name: str, body: bytes, seq: int, count: int) -> bytes:
    """File ``seq`` (1-based) of a send with ``count`` files, out of its export: the export is the
    file itself when there is one, else a ZIP whose n-th entry is file n. Budgets: entries,
    declared size (read no more than :data:`VIEW_CAP` + 1 bytes)."""
    if count == 1:
        return body[:VIEW_CAP + 1]
    if not name.lower().endswith(".zip"):
        raise ValueError("the export of a send with several files is not a ZIP")
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_FILES or not 1 <= seq <= len(infos):
            raise ValueError("the export does not hold this file")
        with zf.open(infos[seq - 1]) as fh:
            return fh.read(VIEW_CAP + 1)


def readable(name: str, data: bytes) -> str:
    """A payload file as text to read: JSON indented, X12 one segment per line, control bytes
    shown as <1B> (quarantine's rule), and a note when it was cut at :data:`VIEW_CAP`."""
    cut = len(data) > VIEW_CAP
    text = data[:VIEW_CAP].decode("utf-8", errors="replace")
    if not cut and name.lower().endswith(".json"):
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    elif text.startswith("ISA") and len(text) > 105:
        term = text[105]  # the segment terminator follows the 106-character ISA segment
        if not term.isalnum():
            text = text.replace(term + "\n", term).replace(term + "\r\n", term).replace(term, term + "\n")
    text = display_text(text)
    return text + (f"\n\n[… the first {VIEW_CAP // (1024 * 1024)} MB are shown; export the send for the rest]"
                   if cut else "")


def ask_confirm(parent: QWidget, title: str, text: str) -> bool:
    box = QMessageBox(QMessageBox.Icon.Warning, title, text,
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, parent)
    box.button(QMessageBox.StandardButton.Yes).setText("&Go live")
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    return box.exec() == QMessageBox.StandardButton.Yes


class TestModeGate(QObject):
    """Whether the engine is in test mode (``GET /health``: no token needed) and whether the Test
    mode tab should show. ``changed(test_mode, show_tab)`` after every check."""

    __test__ = False
    changed = Signal(bool, bool)

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.test_mode: bool | None = None  # unknown until the engine answers
        self.sends_kept = False
        self._asked_sends = False

    def check(self) -> None:
        self.session.client.call("GET", "/api/v1/health", timeout=10, on_ok=alive(self, self._health),
                                 on_error=alive(self, lambda _f: None))  # the pages say when it is unreachable

    def _health(self, h: Any) -> None:
        on = isinstance(h, dict) and h.get("test_mode") is True
        was, self.test_mode = self.test_mode, on
        if not on and was is not False and not self._asked_sends and self.session.at_least(Role.MANAGER):
            self._asked_sends = True  # live: are there test sends worth keeping the tab for? (once)
            self.session.client.call("GET", "/api/v1/testmode/sends", params={"page": 1, "page_size": 1},
                                     timeout=10, on_ok=alive(self, self._sends), on_error=alive(self, lambda _f: None))
        self.changed.emit(on, on or self.sends_kept)

    def _sends(self, answer: Any) -> None:
        self.sends_kept = isinstance(answer, dict) and isinstance(answer.get("total"), int) and answer["total"] > 0
        self.changed.emit(bool(self.test_mode), bool(self.test_mode) or self.sends_kept)

    def sends_seen(self, total: int) -> None:
        """The page listed the sends: keep the tab while any exist."""
        if total > 0 and not self.sends_kept:
            self.sends_kept = True
            self.changed.emit(bool(self.test_mode), True)


class TestModePage(Page):
    __test__ = False
    name = "testmode"
    title = "Test mode"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.gate = TestModeGate(session, self)
        self.model = RecordsModel([
            Column("When", lambda r: short_date(r.get("at", "")), lambda r: when(r.get("at", ""))),
            Column("Target", lambda r: str(r.get("target", "")), lambda r: "The billing system it was meant for"),
            Column("Route", lambda r: ROUTE.get(r.get("route", ""), str(r.get("route", ""))),
                   lambda r: "Recorded only: nothing left this machine" if r.get("route") == "dry-run"
                   else "Sent to the billing system's sandbox (test) address, not the real one"),
            Column("Claims", lambda r: f"{r.get('delivered', 0)} of {r.get('encounters', 0)}",
                   lambda r: f"{r.get('delivered', 0)} encounter(s) accepted as sent, {r.get('rejected', 0)} refused",
                   align_right=True),
            Column("Files", lambda r: str(r.get("files", 0)), align_right=True),
            Column("Size", lambda r: _size(r.get("bytes")), lambda r: f"{r.get('bytes', 0):,} bytes",
                   align_right=True),
        ], parent=self)
        self.current: dict[str, Any] | None = None
        self.detail: dict[str, Any] | None = None
        self.checks: dict[str, Any] | None = None
        self.confirm: Callable[[QWidget, str, str], bool] = ask_confirm  # tests answer it
        self.shown_file: tuple[int, int] | None = None  # (send id, seq) in the viewer
        self.last_export: Path | None = None
        self._payload: tuple[int, str, bytes] | None = None  # (send id, name, bytes) of the selected send
        self._request = 0
        self._writer = Worker(self)

        # -- the go-live checklist ---------------------------------------------------------
        box = QGroupBox("Before going live")
        bl = QVBoxLayout(box)
        self.mode_label = QLabel("Asking the engine…")
        self.mode_label.setWordWrap(True)
        self.mode_label.setTextFormat(Qt.TextFormat.RichText)
        bl.addWidget(self.mode_label)
        self.items = QTableWidget(0, 3)
        self.items.setHorizontalHeaderLabels(["", "Item", "What to do"])
        self.items.verticalHeader().hide()
        self.items.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.items.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.items.setWordWrap(True)
        hh = self.items.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.items.setAccessibleName("Go-live checklist")
        self.items.setMaximumHeight(190)
        bl.addWidget(self.items)
        row = QHBoxLayout()
        self.checks_btn = QPushButton("Check &again")
        self.checks_btn.setToolTip("Ask the engine again (the RCM connection test runs each time)")
        self.checks_btn.clicked.connect(self.load_checks)
        row.addWidget(self.checks_btn)
        row.addStretch(1)
        self.golive_btn = QPushButton("Go &live…")
        self.golive_btn.clicked.connect(self._golive_clicked)
        row.addWidget(self.golive_btn)
        bl.addLayout(row)
        self._outer.addWidget(box)

        # -- the sends ----------------------------------------------------------------------
        self.table = record_table(self.model, "Test sends", self._selected)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.empty, self.stack = with_empty_state(self.table, EMPTY)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.head = QLabel("Select a send to see its files.")
        self.head.setWordWrap(True)
        rl.addWidget(self.head)
        self.files = QTableWidget(0, 3)
        self.files.setHorizontalHeaderLabels(["#", "File", "Size"])
        self.files.verticalHeader().hide()
        self.files.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.files.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.files.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        fh = self.files.horizontalHeader()
        fh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        fh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        fh.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.files.setAccessibleName("Files of the send")
        self.files.setMaximumHeight(150)
        self.files.itemSelectionChanged.connect(self._file_selected)
        rl.addWidget(self.files)
        self.viewer = QPlainTextEdit()
        self.viewer.setReadOnly(True)
        self.viewer.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.viewer.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.viewer.setAccessibleName("File content")
        self.viewer.setPlaceholderText("Select a file to read what would have been sent.")
        rl.addWidget(self.viewer, 1)
        brow = QHBoxLayout()
        self.note = QLabel("")
        self.note.setStyleSheet("color: #555;")
        brow.addWidget(self.note, 1)
        self.export_btn = QPushButton("&Export…")
        self.export_btn.clicked.connect(self._export_clicked)
        brow.addWidget(self.export_btn)
        rl.addLayout(brow)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([520, 660])
        self._outer.addWidget(split, 1)
        self.apply_role()

    # -- roles ------------------------------------------------------------------------------
    def apply_role(self) -> None:
        live = self.checks is not None and not self.checks.get("test_mode", True)
        gate(self.golive_btn, self.session, Role.ADMIN,
             "Switch test mode off: from now on sync sends to the real billing system (asks first)",
             extra_ok=self.checks is not None and not live,
             extra_tip="ChargeBridge is live already" if live else "Waiting for the go-live checks")
        gate(self.export_btn, self.session, Role.MANAGER,
             "Save this send's files (one file, or a ZIP of several) — patient data: keep it safe",
             extra_ok=self.current is not None, extra_tip="Select a send first")
        gate(self.checks_btn, self.session, Role.MANAGER, "Ask the engine again")
        if not self.session.at_least(Role.MANAGER):
            self.mode_label.setText("The test sends and the go-live checklist: "
                                    + _esc(needs_role_text(Role.MANAGER, self.session.role)))

    # -- data -------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.session.at_least(Role.MANAGER):
            self.apply_role()
            self.stack.setCurrentWidget(self.empty)
            self.empty.setText(needs_role_text(Role.MANAGER, self.session.role))
            return
        self.client.call("GET", "/api/v1/testmode/sends", params=RecordsModel.PARAMS,
                         on_ok=alive(self, self._loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the test sends")))
        self.load_checks()

    def load_checks(self) -> None:
        self.checks_btn.setEnabled(False)
        self.client.call("GET", "/api/v1/golive", timeout=90, on_ok=alive(self, self._checks_loaded),
                         on_error=alive(self, self._checks_failed))

    def _loaded(self, answer: Any) -> None:
        keep = self.current["id"] if self.current else None
        try:
            self.model.set_page(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the test sends")
            return
        rows = self.model.rows
        self.gate.sends_seen(self.model.total)
        self.empty.setText(EMPTY)
        self.stack.setCurrentWidget(self.table if rows else self.empty)
        i = next((n for n, r in enumerate(rows) if r.get("id") == keep), 0 if rows else None)
        if i is None:
            self.show_send(None)
        else:
            self.table.selectRow(i)
            if self.current is None or self.current.get("id") != rows[i].get("id"):
                self.show_send(rows[i])

    def _checks_loaded(self, c: Any) -> None:
        self.checks_btn.setEnabled(True)
        if not isinstance(c, dict) or not isinstance(c.get("items"), list):
            self._checks_failed(unreadable_answer())
            return
        self.checks = c
        items = [i for i in c["items"] if isinstance(i, dict)]
        self.items.setRowCount(len(items))
        for n, it in enumerate(items):
            mark = OK if it.get("ok") else (MISSING if it.get("required", True) else INFO)
            color = "#1b7f3b" if it.get("ok") else ("#c62828" if it.get("required", True) else "#0d47a1")
            cells = (mark, str(it.get("title", "")), "" if it.get("ok") else str(it.get("fix", "")))
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(text)
                if col == 0:
                    cell.setForeground(QBrush(QColor(color)))
                    cell.setToolTip({OK: "Done", MISSING: "Missing: needed before go-live",
                                     INFO: "For information; does not block go-live"}[mark])
                self.items.setItem(n, col, cell)
        self.items.resizeRowsToContents()
        missing = [str(m) for m in c.get("missing") or []]
        if not c.get("test_mode"):
            self.mode_label.setText("<b style='color:#1b7f3b'>ChargeBridge is live</b>: sync sends to the real "
                                    "billing system. The test sends below are kept for reference.")
        elif c.get("ready"):
            self.mode_label.setText("<b style='color:#b26a00'>Test mode.</b> Every required item is done: an admin "
                                    "can go live.")
        else:
            self.mode_label.setText(f"<b style='color:#b26a00'>Test mode.</b> {len(missing)} required item"
                                    f"{'s' if len(missing) != 1 else ''} missing before go-live.")
        self.apply_role()

    def _checks_failed(self, f: ApiFailure) -> None:
        self.checks_btn.setEnabled(self.session.at_least(Role.MANAGER))
        self.banner.show_failure(f, "load the go-live checks")

    def _selected(self, *_: Any) -> None:
        rows = self.table.selectionModel().selectedRows()
        self.show_send(self.model.row(rows[0].row()) if rows else None)

    def show_send(self, send: dict[str, Any] | None) -> None:
        self.current, self.detail, self._payload, self.shown_file = send, None, None, None
        self._request += 1
        self.files.setRowCount(0)
        self.viewer.clear()
        self.note.setText("")
        self.apply_role()
        if send is None:
            self.head.setText("Select a send to see its files.")
            return
        route = ROUTE.get(send.get("route", ""), send.get("route", ""))
        self.head.setText(f"Send <b>#{send.get('id')}</b> · {_esc(when(send.get('at', '')))} · "
                          f"{_esc(route)} · {_esc(send.get('action', ''))}"
                          f"<br>{send.get('encounters', 0)} encounter(s): {send.get('delivered', 0)} accepted as sent, "
                          f"{send.get('rejected', 0)} refused")
        req = self._request
        self.client.call("GET", f"/api/v1/testmode/sends/{int(send['id'])}",
                         on_ok=alive(self, lambda d: self._detail(req, d)),
                         on_error=alive(self, lambda f: self._failed(req, f, "load the send")))

    def _detail(self, req: int, d: Any) -> None:
        if req != self._request:
            return
        if not isinstance(d, dict) or not isinstance(d.get("file_list"), list):
            self._failed(req, unreadable_answer(), "load the send")
            return
        self.detail = d
        files = [f for f in d["file_list"] if isinstance(f, dict)][:MAX_FILES]
        self.files.setRowCount(len(files))
        for n, f in enumerate(files):
            for col, text in enumerate((str(f.get("seq", n + 1)), str(f.get("name", "")), _size(f.get("size")))):
                cell = QTableWidgetItem(text)
                cell.setToolTip(f"SHA-256 {f.get('sha256', '')}" if col == 1 else text)
                if col != 1:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.files.setItem(n, col, cell)
        total = sum(int(f.get("size") or 0) for f in files)
        self.note.setText(f"{len(files)} file{'s' if len(files) != 1 else ''}, {_size(total)}")

    def _failed(self, req: int, f: ApiFailure, doing: str) -> None:
        if req == self._request:
            self.note.setText("")
            self.banner.show_failure(f, doing)

    # -- one file in the viewer --------------------------------------------------------------
    def _file_selected(self) -> None:
        rows = self.files.selectionModel().selectedRows()
        if rows and self.detail is not None:
            self.show_file(rows[0].row() + 1)

    def show_file(self, seq: int) -> None:
        """File ``seq`` of the selected send in the viewer (fetches the send's export once)."""
        if self.current is None or self.detail is None:
            return
        send_id = int(self.current["id"])
        files = self.detail.get("file_list") or []
        if not 1 <= seq <= len(files):
            return
        name = str(files[seq - 1].get("name", ""))

        def show(pname: str, body: bytes) -> None:
            try:
                data = file_bytes(pname, body, seq, len(files))
            except (ValueError, zipfile.BadZipFile, OSError):
                self.banner.show_failure(unreadable_answer(), "show the file")
                return
            self.viewer.setPlainText(readable(name, data))
            self.shown_file = (send_id, seq)
            self.note.setText(f"{name} · {_size(files[seq - 1].get('size'))}")

        self.note.setText("Loading the file…")
        self._with_payload(send_id, show, "show the file")

    def _with_payload(self, send_id: int, then: Callable[[str, bytes], None], doing: str) -> None:
        if self._payload is not None and self._payload[0] == send_id:
            then(self._payload[1], self._payload[2])
            return
        req = self._request

        def got(answer: Any) -> None:
            if req != self._request:
                return  # another send was selected meanwhile
            try:
                name, body = payload(answer)
            except ValueError:
                self._failed(req, unreadable_answer(), doing)
                return
            self._payload = (send_id, name, body)
            then(name, body)

        self.client.call("GET", f"/api/v1/testmode/sends/{send_id}/export", timeout=120, on_ok=alive(self, got),
                         on_error=alive(self, lambda f: self._failed(req, f, doing)))

    # -- export -----------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        if self.current is None:
            return
        send_id = int(self.current["id"])
        count = int(self.current.get("files") or 0)
        suggested = f"test-send-{send_id}.zip" if count > 1 else f"test-send-{send_id}"
        path, _filter = QFileDialog.getSaveFileName(self, "Export the test send", suggested)
        if path:
            self.session.guard(lambda: self.export_to(send_id, Path(path)), "export the test send")

    def export_to(self, send_id: int, path: Path) -> None:
        """Fetch the send's payload and write it to ``path`` (0600: patient data), off the UI thread."""
        self.export_btn.setEnabled(False)

        def write(name: str, body: bytes) -> None:
            def job() -> int:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_BINARY", 0), 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                return len(body)

            def done(n: Any, exc: BaseException | None) -> None:
                self.apply_role()
                if exc is not None:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                    self.banner.show_failure(ApiFailure(0, f"{path.name} could not be written ({why})",
                                                        "choose a folder you can write to"), "export the send")
                    return
                self.last_export = path
                self.banner.show_text(f"Exported send #{send_id} ({name}, {n:,} bytes) to {_esc(path)}. It holds "
                                      "patient data: keep it safe, delete it when done.", "ok")

            self._writer.run(job, alive(self, done))

        self._with_payload(send_id, write, "export the send")

    # -- go live ----------------------------------------------------------------------------
    def _golive_clicked(self) -> None:
        self.session.guard(self.go_live, "go live")

    def go_live(self) -> None:
        c = self.checks
        if c is None:
            return
        if not c.get("ready"):
            missing = [i for i in c.get("items") or [] if isinstance(i, dict) and i.get("required", True)
                       and not i.get("ok")]
            lines = "".join(f"<br>{MISSING} {_esc(i.get('title', ''))} — {_esc(i.get('fix', ''))}" for i in missing)
            self.banner.show_text(f"<b>Not ready to go live: {len(missing)} required item"
                                  f"{'s' if len(missing) != 1 else ''} missing.</b>{lines}<br>Fix them and check "
                                  "again (an admin can still go live with a reason: <i>chargebridge golive --force "
                                  "--reason \"…\"</i>).", "error")
            self.load_checks()
            return
        if not self.confirm(self, "Go live?", "From now on every sync sends charges to the real billing system. "
                            "Test mode cannot be switched back on from the window.\n\nGo live now?"):
            return
        self.golive_btn.setEnabled(False)

        def done(out: Any) -> None:
            msg = out.get("message") if isinstance(out, dict) else ""
            self.banner.show_text(f"<b>ChargeBridge is live.</b> {_esc(msg or '')}", "ok")
            self.gate.check()  # the banners go
            self.load_checks()

        def failed(f: ApiFailure) -> None:
            self.apply_role()
            self.banner.show_failure(f, "go live")
            self.load_checks()

        self.client.call("POST", "/api/v1/golive", json={}, timeout=120, on_ok=alive(self, done),
                         on_error=alive(self, failed))

