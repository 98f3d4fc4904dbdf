"""Runs the configured folder watchers and feeds ready files through the pipeline.

All store writes happen on the thread that calls :meth:`WatchService.run`; watchdog's
observer threads only mark files as pending. One writer, no locking games.
"""

from __future__ import annotations

import logging
import threading

from agent.config import Config, FolderConfig
from agent.pipeline import Outcome, Pipeline
from connectors.ehr.folder import FolderWatcher

log = logging.getLogger("chargebridge.watch")


class WatchService:
    def __init__(self, pipeline: Pipeline, config: Config, *, rescan_seconds: float = 60.0) -> None:
        self.pipeline = pipeline
        self.config = config
        self.wakeup = threading.Event()
        self.stop_event = threading.Event()
        self.watchers: list[tuple[FolderConfig, FolderWatcher]] = []
        for fc in config.folders:
            w = FolderWatcher(fc.path, processed=fc.processed, quarantine=fc.quarantine, after=fc.after,
                              observer=fc.observer, poll_seconds=fc.poll_seconds,
                              settle_seconds=fc.settle_seconds, rescan_seconds=rescan_seconds,
                              wakeup=self.wakeup)
            self.watchers.append((fc, w))
        self.handled = 0

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
                out: Outcome = self.pipeline.ingest_path(path, source=str(fc.path), fmt=fc.format,
                                                         profile=fc.profile)
                w.finish(path, quarantined=out.file_quarantined, vanished=out.status == "vanished",
                         reasons=out.reasons, document_id=out.document_id)
                n += 1
        self.handled += n
        return n

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
