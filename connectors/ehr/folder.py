"""Folder source: watch an EHR export folder and hand over files once they are complete.

Why it is shaped this way:

* EHRs write exports slowly and sometimes in several passes, so an event only marks a file as
  *pending*; it becomes *ready* once its size and mtime have not changed for ``settle_seconds``
  (longer for a file that is still empty), and on Windows once it can be renamed (i.e. no
  writer holds it open). With Linux's inotify observer a file that was written to and not yet
  closed also waits (up to ``writer_grace`` seconds of silence), so a writer that pauses longer
  than the settle time is not cut off mid-file.
* A watched folder is a place other programs (and people) write to, so it is hostile ground:
  :meth:`FolderWatcher.take` only ever opens regular files (``lstat`` first, then
  ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` on the open descriptor), follows a symbolic link
  only when the folder opts in and the target stays inside the folder, checks size with
  ``stat`` (never by reading), and turns every problem with one file into a :class:`Taken`
  with a refusal a person can act on, never an exception that stops the watcher.
* The bytes handed out carry the :class:`Signature` they were read at; :meth:`finish`
  re-checks it right before the file is removed, so a file that changed after it was read is
  left in place and read again once it settles.
* Events can be missed (inotify overflow, the service was stopped): a catch-up scan runs at
  start and every ``rescan_seconds``.
* 25,000 files waiting must not stall anything: each call to :meth:`FolderWatcher.ready`
  looks at a bounded number of pending files and hands out at most ``limit`` of them.
* The caller commits a file's bytes to the store *before* calling :meth:`finish`, which is
  the only place a source file is deleted or moved. A quarantined file is deleted too (its
  bytes are in the encrypted store) unless IT opted into a plaintext ``quarantine_dir``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
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
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0))
_BACKOFF_SECONDS = 30.0


class WatchError(Exception):
    """A folder cannot be watched. ``str()`` says why and what to do."""


@dataclass(frozen=True)
class Signature:
    """What identifies one version of a file: same inode, same size, same mtime."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Pending:
    sig: Signature
    since: float  # monotonic time the current signature was first seen


@dataclass
class Taken:
    """One ready file, as :meth:`FolderWatcher.take` found it. Exactly one of: ``data`` (read
    whole and unchanged), ``refusal`` (not read; why, for a person), ``vanished``, ``again``
    (it changed while being read: it stays pending and comes back once it settles)."""

    path: Path
    origin: str  # the path as text; a name that is not UTF-8 is shown escaped (\\xff)
    data: bytes | None = None
    sig: Signature | None = None  # of the file that was read (a link's target when following)
    link_sig: Signature | None = None  # of the link itself, when a link was followed
    refusal: str = ""
    refusal_kind: str = ""  # oversize | link | link_outside | not_regular | unreadable | error
    size: int = 0
    name_problem: str = ""  # set when the bytes were read but the name is not valid UTF-8
    vanished: bool = False
    again: bool = False


def display_path(path: Path | str | bytes) -> tuple[str, bool]:
    """``(text, ok)``: the path as printable text, and whether its bytes were valid UTF-8.
    A name that is not UTF-8 is shown with ``\\xNN`` escapes, so it can be stored and logged."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def is_candidate(path: Path) -> bool:
    name = path.name
    return not (name.startswith((".", "~$")) or name.lower().endswith(_SKIP_SUFFIXES))


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
        if kind in ("created", "modified"):
            self.w._note(Path(os.fsdecode(event.src_path)), writing=True)
        elif kind == "closed":  # IN_CLOSE_WRITE: the writer let go of the file
            self.w._note(Path(os.fsdecode(event.src_path)), writing=False)
        elif kind == "attrib":  # e.g. an unreadable file made readable: look again
            self.w._note(Path(os.fsdecode(event.src_path)))


class FolderWatcher:
    def __init__(self, folder: Path, *, processed: Path, quarantine: Path | None = None, after: str = "archive",
                 observer: str = "native", poll_seconds: float = 2.0, settle_seconds: float = 0.5,
                 rescan_seconds: float = 60.0, wakeup: threading.Event | None = None,
                 follow_links: bool = False, writer_grace: float | None = None) -> None:
        self.folder = folder
        self.processed = processed
        self.quarantine = quarantine  # None: quarantined files leave the folder (the store keeps them)
        self.after = after
        self.observer_kind = observer
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self.rescan_seconds = rescan_seconds
        self.follow_links = follow_links
        # How long a file that was written to and never closed may stay silent before it is read
        # anyway (a hard link, or a writer that hung). Only used with the inotify observer.
        self.writer_grace = writer_grace if writer_grace is not None else max(30.0, settle_seconds * 10)
        self.wakeup = wakeup or threading.Event()
        self._pending: OrderedDict[Path, _Pending | None] = OrderedDict()
        self._lock = threading.Lock()
        self._ignored: set[Path] = set()
        self._observer: BaseObserver | None = None
        self._last_scan = 0.0
        self._tracks_writers = False  # the observer reports IN_CLOSE_WRITE (Linux inotify)
        self._open_writes: dict[Path, float] = {}  # written to, not closed since: last event time
        self._refused: dict[Path, tuple[int, ...]] = {}  # left in the folder: lstat fingerprint then
        self._backoff: dict[Path, float] = {}  # handling failed: not before this monotonic time
        self._folder_real: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if not self.folder.is_dir():
            raise WatchError(f"watched folder {self.folder} does not exist or is not a folder; "
                             "create it or correct [[folders]] path in chargebridge.toml")
        self._folder_real = Path(os.path.realpath(self.folder))
        if self.after == "move":
            self.processed.mkdir(parents=True, exist_ok=True)
        if self.quarantine is not None:
            _private_dir(self.quarantine)
        if self.observer_kind == "polling":
            obs: BaseObserver = PollingObserver(timeout=self.poll_seconds)
        else:
            obs = Observer()
        self._tracks_writers = type(obs).__name__ == "InotifyObserver"
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
    def _note(self, path: Path, *, writing: bool | None = None) -> None:
        if path.parent != self.folder or not is_candidate(path) or path in self._ignored:
            return
        with self._lock:
            self._pending[path] = None  # signature is (re)taken at the next check
            if writing is not None and self._tracks_writers:
                if writing:
                    self._open_writes[path] = time.monotonic()
                else:
                    self._open_writes.pop(path, None)
        self.wakeup.set()

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._open_writes.pop(path, None)
            self._refused.pop(path, None)
            self._backoff.pop(path, None)

    def scan(self) -> int:
        """Catch-up: note every entry already in the folder (events may have been missed).
        Sub-folders are not ours to read; anything else (links, pipes, devices included) is
        noted so that :meth:`take` can say why it is refused."""
        self._last_scan = time.monotonic()
        n = 0
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            continue
                    except OSError:
                        pass
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
        """Up to ``limit`` files whose size and mtime have settled; looks at a bounded window.
        Anything that is not a regular file (or a link the folder follows) is ready at once, to
        be refused by :meth:`take`; a file refused before is skipped until it changes."""
        now = time.monotonic()
        if now - self._last_scan > self.rescan_seconds:
            self.scan()
        out: list[Path] = []
        budget = max(limit * 4, 256)
        with self._lock:
            window = list(self._pending.items())[:budget]
        for path, prev in window:
            try:
                lst = os.lstat(path)
            except FileNotFoundError:
                self._forget(path)
                continue
            except OSError:  # cannot even look at it: take() says why
                out.append(path)
                if len(out) >= limit:
                    break
                continue
            refused = self._refused.get(path)
            if refused is not None:
                if refused == _fingerprint(lst):
                    with self._lock:
                        self._pending.pop(path, None)
                    continue
                self._refused.pop(path, None)  # changed since it was refused: look again
            if self._backoff.get(path, 0.0) > now:
                continue
            st = lst
            if stat.S_ISLNK(lst.st_mode) and self.follow_links:
                try:
                    st = os.stat(path)  # stat never opens: a link to a pipe cannot block here
                except OSError:
                    st = lst
            if not stat.S_ISREG(st.st_mode):
                out.append(path)
                if len(out) >= limit:
                    break
                continue
            sig = Signature.of(st)
            if prev is None or prev.sig != sig:
                with self._lock:
                    if path in self._pending:
                        self._pending[path] = _Pending(sig, now)
                        if prev is not None:  # still being written: let settled files go first
                            self._pending.move_to_end(path)
                continue
            needed = self.settle_seconds if st.st_size else max(self.settle_seconds * 4, 2.0)
            if now - prev.since < needed or not _writer_gone(path):
                continue
            last_write = self._open_writes.get(path)
            if last_write is not None and now - last_write < self.writer_grace:
                continue  # written to and not closed yet: the writer may only be pausing
            out.append(path)
            if len(out) >= limit:
                break
        return out

    def next_check_in(self) -> float:
        """How long the caller may sleep before pending files could become ready."""
        return min(0.1, self.settle_seconds / 4) if self._pending else self.rescan_seconds

    # -- reading --------------------------------------------------------------------------
    def take(self, path: Path, *, max_bytes: int) -> Taken:
        """Read one ready file safely, or say why it is not read. Never raises for one file,
        never blocks on one (pipes and devices are refused from ``lstat``, before any open)."""
        origin, name_ok = display_path(path)
        t = Taken(path=path, origin=origin)
        try:
            self._take(t, max_bytes)
        except FileNotFoundError:
            t.vanished = True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                t.refusal_kind = "unreadable"
                t.refusal = ("ChargeBridge is not allowed to read this file (permission denied); give the "
                             "account the ChargeBridge service runs as read access to the export folder's "
                             "files (and write access to the folder, so read files can be removed)")
            elif exc.errno == errno.ELOOP:  # it became a link between lstat and open
                t.again = True
            else:
                t.refusal_kind = "error"
                t.refusal = (f"the file could not be read ({errno.errorcode.get(exc.errno or 0, 'OS error')}); "
                             "check the disk or share it is on, then drop the file again")
        if t.again:
            with self._lock:
                self._pending[path] = None
                self._pending.move_to_end(path)
        elif t.data is not None and not name_ok:
            t.name_problem = ("the file's name is not valid UTF-8 text (it is shown with \\x escapes); its "
                              "content is kept in the store: reprocess this entry to read it, and have the EHR "
                              "export use UTF-8 file names")
        return t

    def _take(self, t: Taken, max_bytes: int) -> None:
        path = t.path
        lst = os.lstat(path)
        target = path
        st = lst
        if stat.S_ISLNK(lst.st_mode):
            if not self.follow_links:
                t.refusal_kind = "link"
                t.refusal = ("this is a symbolic link, and links are not followed in this folder; put the file "
                             "itself in the folder (or set follow_links = true for this folder: then only links "
                             "to files inside it are read)")
                return
            try:
                target = Path(os.path.realpath(path, strict=True))
            except (OSError, RuntimeError):
                t.refusal_kind = "link"
                t.refusal = "this symbolic link points to nothing (a broken link); remove it or fix its target"
                return
            base = self._folder_real or Path(os.path.realpath(self.folder))
            if target == base or not target.is_relative_to(base):
                t.refusal_kind = "link_outside"
                t.refusal = ("this symbolic link points outside the watched folder, so it is not read; put the "
                             "file itself in the folder")
                return
            st = os.lstat(target)
            t.link_sig = Signature.of(lst)
        if not stat.S_ISREG(st.st_mode):
            t.refusal_kind = "not_regular"
            t.refusal = (f"this is not a regular file (it is a {_kind_name(st.st_mode)}); ChargeBridge reads "
                         "only ordinary files: remove it from the export folder")
            return
        t.size = st.st_size
        if st.st_size > max_bytes:
            t.refusal_kind = "oversize"
            t.refusal = _oversize_reason(st.st_size, max_bytes)
            return
        with self._lock:
            settled = self._pending.get(path)
        fd = os.open(target, _OPEN_FLAGS)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                t.again = True  # swapped between lstat and open: look again
                return
            sig = Signature.of(fst)
            if settled is not None and settled.sig != sig:
                t.again = True  # changed since it settled
                return
            if fst.st_size > max_bytes:
                t.refusal_kind = "oversize"
                t.refusal = _oversize_reason(fst.st_size, max_bytes)
                t.size = fst.st_size
                return
            chunks: list[bytes] = []
            left = fst.st_size + 1  # one byte more than stat says: notices a file that grew
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if len(data) != fst.st_size or Signature.of(os.fstat(fd)) != sig:
                t.again = True  # written to while being read: leave it until it settles again
                return
        finally:
            os.close(fd)
        t.data, t.sig, t.size = data, sig, len(data)

    def refused(self, t: Taken) -> None:
        """A refused entry stays where it is (its bytes are not in the store, or it is not a file
        at all); it is not looked at again until it changes. With a plaintext ``quarantine_dir``
        an oversize or unreadable regular file is moved there instead."""
        path = t.path
        if self.quarantine is not None and t.refusal_kind in ("oversize", "unreadable"):
            with self.ignore(path):
                try:
                    _move_private(path, _free_name(self.quarantine / path.name, None))
                    _write_reason(self.quarantine / (path.name + ".reason.txt"), None, [t.refusal])
                    return
                except OSError as exc:
                    log.warning("a refused file could not be moved to the quarantine folder (%s); it stays",
                                type(exc).__name__)
        try:
            fp = _fingerprint(os.lstat(path))
        except OSError:
            self._forget(path)
            return
        with self._lock:
            self._pending.pop(path, None)
            self._refused[path] = fp

    def defer(self, path: Path) -> None:
        """Handling this file failed for a reason outside it (e.g. the store): try again later."""
        with self._lock:
            self._backoff[path] = time.monotonic() + _BACKOFF_SECONDS
            self._pending[path] = None
            self._pending.move_to_end(path)

    # -- after processing -----------------------------------------------------------------
    @contextmanager
    def ignore(self, path: Path) -> Iterator[None]:
        """Our own moves/deletes must not come back as new work."""
        self._ignored.add(path)
        try:
            yield
        finally:
            self._forget(path)
            timer = threading.Timer(1.0, self._ignored.discard, args=(path,))
            timer.daemon = True
            timer.start()

    def finish(self, path: Path | Taken, *, quarantined: bool, vanished: bool = False,
               reasons: list[str] | None = None, document_id: int | None = None) -> bool:
        """Apply the after-processing action. Call only after the bytes are committed.

        Given the :class:`Taken` that was read, the file's signature is checked again right
        before it is removed: if it changed since it was read (a writer resumed), it is left in
        the folder and read again once it settles. Returns whether the file left the folder."""
        taken = path if isinstance(path, Taken) else None
        p = taken.path if taken is not None else path
        assert isinstance(p, Path)
        if vanished:
            self._forget(p)
            return False
        if taken is not None and not self._unchanged(taken):
            log.info("a file changed after it was read; it stays in the folder and is read again once it settles")
            with self._lock:
                self._pending[p] = None
                self._pending.move_to_end(p)
            self.wakeup.set()
            return False
        with self.ignore(p):
            try:
                if quarantined and self.quarantine is not None:
                    dest = _free_name(self.quarantine / p.name, document_id)
                    _move_private(p, dest)
                    _write_reason(dest.with_name(dest.name + ".reason.txt"), document_id, reasons or [])
                elif not quarantined and self.after == "move":
                    shutil.move(str(p), _free_name(self.processed / p.name, document_id))
                else:
                    os.unlink(p)  # the store holds the bytes (a link: only the link goes)
            except FileNotFoundError:
                pass  # already gone: the store holds its bytes, nothing is lost
        return True

    def _unchanged(self, t: Taken) -> bool:
        try:
            if t.link_sig is not None:
                if Signature.of(os.lstat(t.path)) != t.link_sig:
                    return False
                return Signature.of(os.stat(t.path)) == t.sig
            return Signature.of(os.lstat(t.path)) == t.sig
        except FileNotFoundError:
            return True  # gone already: nothing to leave behind
        except OSError:
            return False


def _fingerprint(st: os.stat_result) -> tuple[int, ...]:
    """Identity of an entry as refused: a change of content, owner or mode makes it a new one."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _kind_name(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _oversize_reason(size: int, max_bytes: int) -> str:
    limit_mb = max_bytes / 1024 / 1024
    return (f"file is {size / 1024 / 1024:,.1f} MB, over the {limit_mb:g} MB limit (ingest.max_file_mb); "
            "split the export or raise the limit, then drop it again")


def _private_dir(path: Path) -> None:
    """IT's plaintext quarantine folder: created 0700; an existing folder keeps its mode."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise WatchError(f"quarantine_dir {path} exists and is not a folder; correct [[folders]] "
                             "quarantine_dir in chargebridge.toml") from None
        return
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    if os.name == "posix":
        os.chmod(path, 0o700)  # we created it: umask must not widen it


def _move_private(src: Path, dest: Path) -> None:
    """Move into the plaintext quarantine folder, readable by the service account only."""
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fd_in = os.open(src, _OPEN_FLAGS)
        try:
            fd_out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
            try:
                while chunk := os.read(fd_in, 1 << 20):
                    os.write(fd_out, chunk)
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)
        os.unlink(src)
    if os.name == "posix":
        try:
            os.chmod(dest, 0o600)
        except OSError as exc:
            log.warning("could not make a quarantined file private (%s)", type(exc).__name__)


def _write_reason(note: Path, document_id: int | None, reasons: list[str]) -> None:
    """The reason file next to a plaintext quarantined file: reasons only (they never quote data)."""
    head = (f"ChargeBridge quarantine entry for stored document {document_id}\n" if document_id is not None
            else "ChargeBridge refused this file\n")
    body = (head + "\n".join(reasons) + "\n").encode("utf-8", "backslashreplace")
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)


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
