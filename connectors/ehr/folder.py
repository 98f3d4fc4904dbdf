"""Folder source: watch an EHR export folder and hand over files once they are complete.

Why it is shaped this way:

* EHRs write exports slowly and sometimes in several passes, so an event only marks a file as
  *pending*; it becomes *ready* once its size and mtime have not changed for ``settle_seconds``
  (longer for a file that is still empty), and on Windows once it can be renamed (i.e. no
  writer holds it open).
* Events can be missed (inotify overflow, the service was stopped): a catch-up scan runs at
  start and every ``rescan_seconds``.
* 25,000 files waiting must not stall anything: each call to :meth:`FolderWatcher.ready`
  looks at a bounded number of pending files and hands out at most ``limit`` of them.
* The caller commits a file's bytes to the store *before* calling :meth:`finish`, which is
  the only place a source file is deleted or moved.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("chargebridge.watch")
# watchdog logs an error when an observer is stopped mid-event; that is expected at shutdown.
logging.getLogger("watchdog").setLevel(logging.CRITICAL)

_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".lock", ".reason.txt")


class WatchError(Exception):
    """A folder cannot be watched. ``str()`` says why and what to do."""


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float  # monotonic time the current signature was first seen


def is_candidate(path: Path) -> bool:
    name = path.name
    return not (name.startswith(".") or name.startswith("~$") or name.lower().endswith(_SKIP_SUFFIXES))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind == "deleted":
            self.w._forget(Path(os.fsdecode(event.src_path)))
            return
        if kind == "moved":
            self.w._forget(Path(os.fsdecode(event.src_path)))
            self.w._note(Path(os.fsdecode(event.dest_path)))
            return
        if kind in ("created", "modified", "closed"):
            self.w._note(Path(os.fsdecode(event.src_path)))


class FolderWatcher:
    def __init__(self, folder: Path, *, processed: Path, quarantine: Path, after: str = "archive",
                 observer: str = "native", poll_seconds: float = 2.0, settle_seconds: float = 0.5,
                 rescan_seconds: float = 60.0, wakeup: threading.Event | None = None) -> None:
        self.folder = folder
        self.processed = processed
        self.quarantine = quarantine
        self.after = after
        self.observer_kind = observer
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self.rescan_seconds = rescan_seconds
        self.wakeup = wakeup or threading.Event()
        self._pending: OrderedDict[Path, _Pending | None] = OrderedDict()
        self._lock = threading.Lock()
        self._ignored: set[Path] = set()
        self._observer: BaseObserver | None = None
        self._last_scan = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if not self.folder.is_dir():
            raise WatchError(f"watched folder {self.folder} does not exist or is not a folder; "
                             "create it or correct [[folders]] path in chargebridge.toml")
        for d in (self.processed, self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        if self.observer_kind == "polling":
            obs: BaseObserver = PollingObserver(timeout=self.poll_seconds)
        else:
            obs = Observer()
        obs.name = f"chargebridge-watch-{self.folder.name}"
        obs.schedule(_Handler(self), str(self.folder), recursive=False)
        try:
            obs.start()
        except OSError as exc:
            raise WatchError(_os_limit_message(exc, self.folder)) from exc
        self._observer = obs
        self.scan()

    def stop(self) -> None:
        obs, self._observer = self._observer, None  # stop() may be called from two threads
        if obs is not None:
            obs.stop()
            if obs.is_alive() and obs is not threading.current_thread():
                obs.join(timeout=5)

    # -- pending set ----------------------------------------------------------------------
    def _note(self, path: Path) -> None:
        if path.parent != self.folder or not is_candidate(path) or path in self._ignored:
            return
        with self._lock:
            self._pending[path] = None  # signature is (re)taken at the next check
        self.wakeup.set()

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def scan(self) -> int:
        """Catch-up: note every file already in the folder (events may have been missed)."""
        self._last_scan = time.monotonic()
        n = 0
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        p = Path(entry.path)
                        if is_candidate(p) and p not in self._pending:
                            with self._lock:
                                self._pending.setdefault(p, None)
                            n += 1
        except OSError as exc:
            log.warning("scan of a watched folder failed: %s", type(exc).__name__)
        if n:
            self.wakeup.set()
        return n

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def ready(self, limit: int) -> list[Path]:
        """Up to ``limit`` files whose size and mtime have settled; looks at a bounded window."""
        now = time.monotonic()
        if now - self._last_scan > self.rescan_seconds:
            self.scan()
        out: list[Path] = []
        budget = max(limit * 4, 256)
        with self._lock:
            window = list(self._pending.items())[:budget]
        for path, prev in window:
            try:
                st = path.stat()
            except FileNotFoundError:
                self._forget(path)
                continue
            except OSError:
                continue
            sig_same = prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns
            if not sig_same:
                with self._lock:
                    if path in self._pending:
                        self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)
                        if prev is not None:  # still being written: let settled files go first
                            self._pending.move_to_end(path)
                continue
            assert prev is not None
            needed = self.settle_seconds if st.st_size else max(self.settle_seconds * 4, 2.0)
            if now - prev.since < needed or not _writer_gone(path):
                continue
            out.append(path)
            if len(out) >= limit:
                break
        return out

    def next_check_in(self) -> float:
        """How long the caller may sleep before pending files could become ready."""
        return min(0.1, self.settle_seconds / 4) if self._pending else self.rescan_seconds

    # -- after processing -----------------------------------------------------------------
    @contextmanager
    def ignore(self, path: Path) -> Iterator[None]:
        """Our own moves/deletes must not come back as new work."""
        self._ignored.add(path)
        try:
            yield
        finally:
            self._forget(path)
            threading.Timer(1.0, self._ignored.discard, args=(path,)).start()

    def finish(self, path: Path, *, quarantined: bool, vanished: bool = False,
               reasons: list[str] | None = None, document_id: int | None = None) -> None:
        """Apply the after-processing action. Call only after the bytes are committed."""
        if vanished:
            self._forget(path)
            return
        with self.ignore(path):
            try:
                if quarantined:
                    dest = _free_name(self.quarantine / path.name, document_id)
                    shutil.move(str(path), dest)
                    note = dest.with_name(dest.name + ".reason.txt")
                    head = f"ChargeBridge quarantine entry for stored document {document_id}\n"
                    note.write_text(head + "\n".join(reasons or []) + "\n", encoding="utf-8")
                elif self.after == "move":
                    shutil.move(str(path), _free_name(self.processed / path.name, document_id))
                else:
                    path.unlink()
            except FileNotFoundError:
                pass  # already gone: the store holds its bytes, nothing is lost


def _free_name(dest: Path, document_id: int | None) -> Path:
    if not dest.exists():
        return dest
    tag = document_id if document_id is not None else int(time.time())
    cand = dest.with_name(f"{dest.stem}.{tag}{dest.suffix}")
    i = 1
    while cand.exists():
        cand = dest.with_name(f"{dest.stem}.{tag}-{i}{dest.suffix}")
        i += 1
    return cand


def _writer_gone(path: Path) -> bool:
    """On Windows a file another process still has open cannot be renamed; elsewhere: True."""
    if sys.platform != "win32":
        return True
    try:  # pragma: no cover - Windows only
        os.rename(path, path)
        return True
    except OSError:
        return False


def _os_limit_message(exc: OSError, folder: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return ("the system's inotify watch limit is reached, so the folder cannot be watched; raise it with "
                "'sysctl fs.inotify.max_user_watches=524288' (and add it to /etc/sysctl.conf), or set "
                "observer = \"polling\" for this folder")
    if exc.errno == errno.EMFILE:
        return ("the system's inotify instance limit is reached; raise it with "
                "'sysctl fs.inotify.max_user_instances=1024', or set observer = \"polling\" for this folder")
    return f"cannot watch {folder}: {exc.strerror}; check the folder's permissions"
