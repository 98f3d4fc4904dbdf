"""Where X12 files go and come from: a folder or an SFTP directory, behind one protocol.

A :class:`Transport` never shows a partial file under its real name (write to a hidden
temporary name, then rename), reads with a size budget, and archives what was read into a
``processed/`` subfolder so it is not read again. :func:`open_transport` picks the
implementation from the configured location: a plain path or a ``file:`` URL is a
:class:`FolderTransport`; ``sftp://user@host:port/dir`` is
:class:`connectors.rcm.x12.sftp.SftpTransport` (imported only when used). URLs are parsed with
:mod:`urllib.parse`, never by prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from connectors.rcm.base import TargetError
from core.errors import ConfigError
from core.states import TargetErrorKind

ARCHIVE_DIR = "processed"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_NAMES = 1000
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")  # one component, no dot file


@runtime_checkable
class Transport(Protocol):
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` atomically (same name again: replaced)."""
        ...

    def list(self) -> list[str]:
        """Names of the files waiting (sorted; no dot files, no folders)."""
        ...

    def get(self, name: str) -> bytes:
        """The bytes of ``name``, refused over the size budget."""
        ...

    def archive(self, name: str) -> str:
        """Move ``name`` into ``processed/``; the name it got there."""
        ...

    def close(self) -> None:
        ...


def _fail(title: str, kind: TargetErrorKind = TargetErrorKind.UNREACHABLE, **kw: bool) -> TargetError:
    return TargetError(title, kind=kind, **kw)


class FolderTransport:
    """A local or mounted folder (a clearinghouse agent picks files up from there)."""

    def __init__(self, path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_names: int = DEFAULT_MAX_NAMES) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = int(max_bytes)
        self.max_names = int(max_names)

    def _name(self, name: str) -> Path:
        if not _NAME.match(name):
            raise _fail("an X12 file name is not a plain file name", TargetErrorKind.CONNECTOR)
        return self.path / name

    def _dir(self) -> Path:
        if not self.path.is_dir():
            raise _fail(f"the X12 folder {self.path} does not exist or is not a folder")
        return self.path

    def put(self, name: str, data: bytes) -> None:
        final = self._name(name)
        folder = self._dir()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise _fail(f"the X12 folder {folder} is not writable ({type(exc).__name__})") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _fail(f"writing to the X12 folder {folder} failed ({type(exc).__name__})") from None
        with contextlib.suppress(OSError):  # the rename itself survives a crash
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def list(self) -> list[str]:
        folder = self._dir()
        names: list[str] = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False) and _NAME.match(entry.name):
                        names.append(entry.name)
        except OSError as exc:
            raise _fail(f"the X12 folder {folder} cannot be listed ({type(exc).__name__})") from None
        return sorted(names)[:self.max_names]

    def get(self, name: str) -> bytes:
        path = self._name(name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise _fail(f"the X12 file {name} cannot be opened ({type(exc).__name__})") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _fail(f"{name} is not a regular file", TargetErrorKind.PROTOCOL)
            if st.st_size > self.max_bytes:
                raise self._too_big(name)
            data = fh.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise self._too_big(name)
        return data

    def _too_big(self, name: str) -> TargetError:
        return _fail(f"the clearinghouse file {name} is larger than {self.max_bytes // (1024 * 1024)} MiB",
                     TargetErrorKind.PROTOCOL)

    def archive(self, name: str) -> str:
        src = self._name(name)
        dest_dir = self._dir() / ARCHIVE_DIR
        try:
            dest_dir.mkdir(exist_ok=True)
            dest = name
            if (dest_dir / dest).exists():
                dest = f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.{time.monotonic_ns() % 1_000_000:06d}"
            os.replace(src, dest_dir / dest)
        except OSError as exc:
            raise _fail(f"the X12 file {name} could not be moved to {ARCHIVE_DIR}/ ({type(exc).__name__})") from None
        return dest

    def close(self) -> None:
        return None

    def check(self, *, write: bool) -> tuple[bool, str]:
        """Reachable (and writable when ``write``): a probe file is created and removed."""
        if not self.path.is_dir():
            return False, f"the folder {self.path} does not exist"
        if not write:
            return (True, f"the folder {self.path} is readable") if os.access(self.path, os.R_OK | os.X_OK) \
                else (False, f"the folder {self.path} is not readable")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".chargebridge-probe.", dir=self.path)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            return False, f"the folder {self.path} is not writable ({type(exc).__name__})"
        return True, f"the folder {self.path} is writable"


def open_transport(url: str, *, secret: str = "", known_hosts: str = "", timeout: float = 30.0,
                   key: str = "x12.outbound", **options: object) -> Transport:
    """The transport for a configured location. ``options`` go to the SFTP transport
    (``host_key``, ``key_file``, ``max_bytes``...); a folder takes ``max_bytes`` only."""
    if not url or not url.strip():
        raise ConfigError(f"'{key}' is empty", "a folder path or sftp://user@host:port/dir", key=key)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    max_bytes = options.get("max_bytes")
    mb = int(max_bytes) if isinstance(max_bytes, int) else DEFAULT_MAX_BYTES
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a plain path (C:\... on Windows)
        return FolderTransport(url, max_bytes=mb)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"'{key}' names a file on another computer", "use a local or mounted folder path",
                              key=key)
        return FolderTransport(unquote(parts.path), max_bytes=mb)
    if scheme == "sftp":
        from connectors.rcm.x12.sftp import SftpTransport

        return SftpTransport(url, secret=secret, known_hosts=known_hosts, timeout=timeout,
                             **options)  # type: ignore[arg-type]
    raise ConfigError(f"'{key}' uses {scheme}:, which is not supported",
                      "a folder path, file:///path or sftp://user@host:port/dir", key=key)
