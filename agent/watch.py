"""Runs the configured folder watchers and feeds ready files through the pipeline.

All store writes happen on the thread that calls :meth:`WatchService.run`; watchdog's
observer threads only mark files as pending. One writer, no locking games.

The watcher reads each file itself (:meth:`FolderWatcher.take`: regular files only, size by
``stat``) and hands the pipeline bytes, never a path to open. A file that is refused without
being read (too large, a link, a pipe, unreadable) becomes a quarantine entry with no stored
content and stays where it is; one file can never stop the loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from agent.config import Config, FolderConfig
from agent.pipeline import Analysis, Outcome, Pipeline
from agent.store import now
from connectors.ehr.folder import FolderWatcher, Taken
from core.states import DocumentStatus

log = logging.getLogger("chargebridge.watch")


class WatchService:
    def __init__(self, pipeline: Pipeline, config: Config, *, rescan_seconds: float = 60.0) -> None:
        self.pipeline = pipeline
        self.config = config
        self.wakeup = threading.Event()
        self.stop_event = threading.Event()
        self.watchers: list[tuple[FolderConfig, FolderWatcher]] = []
        for fc in config.folders:
            w = FolderWatcher(fc.path, processed=fc.processed, quarantine=fc.quarantine_dir, after=fc.after,
                              observer=fc.observer, poll_seconds=fc.poll_seconds,
                              settle_seconds=fc.settle_seconds, rescan_seconds=rescan_seconds,
                              wakeup=self.wakeup, follow_links=fc.follow_links)
            self.watchers.append((fc, w))
        self.handled = 0  # files read and committed, or refused with a quarantine entry

    def start(self) -> None:
        self.pipeline.recover()
        for _, w in self.watchers:
            w.start()
        log.info("watching %d folder(s)", len(self.watchers))

    def stop(self) -> None:
        self.stop_event.set()
        self.wakeup.set()
        for _, w in self.watchers:
            w.stop()

    def step(self) -> int:
        """Process at most one batch per folder; returns how many files were handled."""
        n = 0
        for fc, w in self.watchers:
            for path in w.ready(self.config.batch_files):
                if self.stop_event.is_set():
                    return n
                try:
                    n += self._handle(fc, w, path)
                except Exception as exc:  # the watcher never dies of one file
                    log.error("a file in a watched folder could not be handled (%s); it stays in the folder "
                              "and is tried again later", type(exc).__name__)
                    w.defer(path)
        self.handled += n
        return n

    def _handle(self, fc: FolderConfig, w: FolderWatcher, path: Path) -> int:
        t = w.take(path, max_bytes=self.pipeline.max_file_bytes)
        if t.vanished:
            log.info("a file vanished before it could be read; nothing to do")
            w.finish(t, quarantined=False, vanished=True)
            return 0
        if t.again:
            return 0  # changed while being read: it comes back once it settles
        if t.refusal:
            out = self._refuse(fc, t)
            log.warning("a file in a watched folder was refused (%s); quarantine entry for document %s",
                        t.refusal_kind, out.document_id)
            w.refused(t)
            return 1
        assert t.data is not None
        if t.name_problem:
            out = self._admit_quarantined(fc, t)
        else:
            out = self.pipeline.ingest_bytes(t.data, origin=t.origin, source=str(fc.path), fmt=fc.format,
                                             profile=fc.profile)
        w.finish(t, quarantined=out.file_quarantined, reasons=out.reasons, document_id=out.document_id)
        return 1

    def _admit_quarantined(self, fc: FolderConfig, t: Taken) -> Outcome:
        """Keep the bytes, but quarantine them with ``t.name_problem`` instead of reading them."""
        assert t.data is not None
        pipe = self.pipeline
        doc_id, status = pipe.admit(t.data, origin=t.origin, source=str(fc.path), fmt=fc.format, profile=fc.profile)
        if status != DocumentStatus.PENDING:
            return Outcome(document_id=doc_id, status="duplicate", duplicates=1,
                           seen_quarantined=status == DocumentStatus.QUARANTINED)
        return pipe.commit(doc_id, Analysis(fmt=fc.format, file_reason=t.name_problem))

    def _refuse(self, fc: FolderConfig, t: Taken) -> Outcome:
        """A quarantine entry for a file that was not read: no content is stored. The same
        entry (same kind, name, inode, size and mtime) is recorded once, across restarts."""
        store = self.pipeline.store
        ident = t.origin
        try:
            st = os.lstat(t.path)
            ident += f"\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            pass
        key = hashlib.sha256(f"refused\0{t.refusal_kind}\0{ident}".encode("utf-8", "backslashreplace")).hexdigest()
        conn = store.conn
        row = conn.execute("SELECT id FROM documents WHERE sha256 = ?", (key,)).fetchone()
        if row:
            return Outcome(document_id=int(row[0]), status="duplicate", duplicates=1, seen_quarantined=True)
        out = Outcome(status=DocumentStatus.QUARANTINED, quarantined=1, reasons=[t.refusal])
        ts = now()
        with store.tx():
            cur = conn.execute(
                "INSERT INTO documents (sha256, origin, source, format, profile, size, content, status, received_at,"
                " processed_at) VALUES (?,?,?,?,?,?,NULL,?,?,?)",
                (key, t.origin, str(fc.path), fc.format, fc.profile, t.size, DocumentStatus.QUARANTINED, ts, ts))
            out.document_id = int(cur.lastrowid)
            q = conn.execute("INSERT INTO quarantine (document_id, part, reason, created_at) VALUES (?,?,?,?)",
                             (out.document_id, "", t.refusal, ts))
            store.event("document.quarantined", document_id=out.document_id,
                        detail={"quarantine_id": q.lastrowid, "refused": t.refusal_kind})
        return out

    def run(self) -> None:
        """Loop until :meth:`stop`. Sleeps on an event, never busy-polls."""
        self.start()
        try:
            while not self.stop_event.is_set():
                if self.step():
                    continue
                timeout = min((w.next_check_in() for _, w in self.watchers), default=60.0)
                self.wakeup.wait(timeout)
                self.wakeup.clear()
        finally:
            for _, w in self.watchers:
                w.stop()
