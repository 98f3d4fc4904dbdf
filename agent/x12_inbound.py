"""Clearinghouse answers in: 999 / 277CA / 835 files -> the claim lifecycle (agent/claims.py).

Two ways in, one code path: ``chargebridge x12 import FILE...`` (:func:`import_files`) and the
engine's poll of the ``[x12] inbound`` folder or SFTP directory (:func:`poll`), which runs on
the sync schedule when ``[rcm] type = "x12"``.

For each file, in this order (a crash between any two steps loses nothing and doubles nothing):

1. parse it whole (:func:`connectors.rcm.x12.answers.parse`); a file that cannot be read is kept
   encrypted in the store and put in the quarantine with the reason (``chargebridge quarantine``
   lists it, ``quarantine export`` gives it back) — nothing else stops;
2. apply its answers in one transaction (:func:`agent.claims.apply_answers`: idempotent by each
   answer's fingerprint, so a file imported twice changes nothing);
3. keep the raw file encrypted in the store (a processed document, by sha256, once);
4. only then does the poll move the file out of the inbound directory (``transport.archive``).

Nothing here logs file contents or patient data: file names, counts and error titles only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent import claims
from agent.store import Store, now
from connectors.rcm.x12.answers import ParsedFile, X12FormatError, parse
from core.errors import ChargeBridgeError, ConfigError
from core.states import AnswerKind, DocumentStatus

log = logging.getLogger("chargebridge.x12")

__all__ = ["FileResult", "ImportResult", "InboundTransport", "import_bytes", "import_files", "poll"]

KINDS = (AnswerKind.ACK_999, AnswerKind.CA_277, AnswerKind.RA_835)
SOURCE = "x12-inbound"


class InboundTransport(Protocol):
    """What the poll needs from an inbound folder / SFTP directory (connectors.rcm.x12)."""

    def list(self) -> list[str]: ...

    def get(self, name: str) -> bytes: ...

    def archive(self, name: str) -> str: ...


@dataclass
class FileResult:
    name: str
    ok: bool
    kinds: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    unmatched: int = 0
    duplicates: int = 0
    error: str = ""
    fix: str = ""
    quarantine_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "ok": self.ok, "kinds": self.kinds, **self.counts,
                             "matched": self.matched, "unmatched": self.unmatched, "duplicates": self.duplicates}
        if not self.ok:
            d.update(error=self.error, fix=self.fix, quarantine_id=self.quarantine_id)
        if self.warnings:
            d["warnings"] = self.warnings
        return d


@dataclass
class ImportResult:
    files: list[FileResult] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # claim ids whose state changed
    error: str = ""  # the inbound directory could not be read (poll only)

    def total(self, key: str) -> int:
        return sum(f.counts.get(key, 0) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k.value: self.total(k.value) for k in KINDS}
        d.update(matched=sum(f.matched for f in self.files), unmatched=sum(f.unmatched for f in self.files),
                 duplicates=sum(f.duplicates for f in self.files), failed=sum(1 for f in self.files if not f.ok),
                 files=[f.to_dict() for f in self.files])
        if self.error:
            d["error"] = self.error
        return d


def _doc_format(parsed: ParsedFile) -> str:
    return "x12-" + "+".join(parsed.kinds)


def _keep_document(store: Store, *, sha: str, name: str, data: bytes, fmt: str, status: DocumentStatus) -> int:
    """The raw file, encrypted in the store, once (by sha256). Call inside a transaction."""
    row = store.conn.execute("SELECT id FROM documents WHERE sha256 = ?", (sha,)).fetchone()
    if row:
        return int(row[0])
    ts = now()
    cur = store.conn.execute(
        "INSERT INTO documents (sha256, origin, source, format, profile, size, content, status, received_at, "
        "processed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (sha, name, SOURCE, fmt, "", len(data), data, status, ts, ts))
    return int(cur.lastrowid or 0)


def import_bytes(store: Store, name: str, data: bytes) -> FileResult:
    """Parse one file and apply its answers (see the module text). Never raises for a bad file:
    the result says what was wrong, and the file is in the quarantine."""
    from connectors.rcm.x12 import eligibility as x270

    if x270.is_271(data):  # an eligibility answer (270/271, agent/eligibility.py), not a claims answer
        return _import_271(store, name, data)
    sha = hashlib.sha256(data).hexdigest()
    try:
        parsed = parse(data)
    except X12FormatError as exc:
        with store.tx():
            doc_id = _keep_document(store, sha=sha, name=name, data=data, fmt="x12", status=DocumentStatus.QUARANTINED)
            old = store.conn.execute("SELECT id FROM quarantine WHERE document_id = ? AND resolved_at IS NULL",
                                     (doc_id,)).fetchone()
            if old:
                qid = int(old[0])
            else:
                cur = store.conn.execute(
                    "INSERT INTO quarantine (document_id, part, reason, created_at) VALUES (?,?,?,?)",
                    (doc_id, "x12", f"clearinghouse file: {exc.title}. Fix: {exc.fix}", now()))
                qid = int(cur.lastrowid or 0)
                store.event("document.quarantined", document_id=doc_id, detail={"quarantine_id": qid, "x12": True})
        log.warning("clearinghouse file %s could not be read: %s (quarantine %d)", name, exc.title, qid)
        return FileResult(name=name, ok=False, error=exc.title, fix=exc.fix, quarantine_id=qid)
    res = claims.apply_answers(store, parsed.answers)
    with store.tx():
        doc_id = _keep_document(store, sha=sha, name=name, data=data, fmt=_doc_format(parsed),
                                status=DocumentStatus.PROCESSED)
        store.event("x12.imported", document_id=doc_id,
                    detail={"kinds": parsed.kinds, **res.to_dict(), "changed": len(res.changed)})
    log.info("clearinghouse file %s: %s answers, %d matched, %d unmatched, %d already known", name,
             len(parsed.answers), res.matched, res.unmatched, res.duplicates)
    return FileResult(name=name, ok=True, kinds=parsed.kinds,
                      counts={k.value: res.counts.get(k.value, 0) for k in KINDS},
                      matched=res.matched, unmatched=res.unmatched, duplicates=res.duplicates,
                      warnings=parsed.warnings)


def _import_271(store: Store, name: str, data: bytes) -> FileResult:
    """A 271 goes to the eligibility answers (by trace, idempotent); one that cannot be read is
    quarantined like any unreadable clearinghouse file."""
    from agent import eligibility
    from connectors.rcm.x12.eligibility import EligibilityError

    try:
        r = eligibility.apply_271(store, data, name)
    except EligibilityError as exc:
        sha = hashlib.sha256(data).hexdigest()
        with store.tx():
            doc_id = _keep_document(store, sha=sha, name=name, data=data, fmt="x12-271",
                                    status=DocumentStatus.QUARANTINED)
            old = store.conn.execute("SELECT id FROM quarantine WHERE document_id = ? AND resolved_at IS NULL",
                                     (doc_id,)).fetchone()
            qid = int(old[0]) if old else int(store.conn.execute(
                "INSERT INTO quarantine (document_id, part, reason, created_at) VALUES (?,?,?,?)",
                (doc_id, "x12", f"eligibility answer: {exc.title}. Fix: {exc.fix}", now())).lastrowid or 0)
        log.warning("eligibility answer file %s could not be read: %s (quarantine %d)", name, exc.title, qid)
        return FileResult(name=name, ok=False, kinds=["271"], error=exc.title, fix=exc.fix, quarantine_id=qid)
    log.info("eligibility answer file %s: %d answers, %d matched, %d unmatched, %d already known", name,
             r.answers, r.matched, r.unmatched, r.duplicates)
    return FileResult(name=name, ok=True, kinds=["271"], counts={"271": r.answers}, matched=r.matched,
                      unmatched=r.unmatched, duplicates=r.duplicates)


MAX_IMPORT_BYTES = 64 * 1024 * 1024


def import_files(store: Store, items: Iterable[Path | str | bytes | tuple[str, bytes]]) -> ImportResult:
    """Import files (paths, raw bytes, or (name, bytes) pairs), each in its own transaction."""
    out = ImportResult()
    for n, item in enumerate(items):
        if isinstance(item, tuple):
            name, data = item
        elif isinstance(item, bytes):
            name, data = f"file {n + 1}", item
        else:
            path = Path(item)
            if not path.is_file():
                raise ConfigError(f"{path} is not a file", "give the path of a 999, 277CA or 835 file")
            if path.stat().st_size > MAX_IMPORT_BYTES:
                out.files.append(FileResult(name=path.name, ok=False, error=f"{path.name} is larger than "
                                            f"{MAX_IMPORT_BYTES // (1024 * 1024)} MiB",
                                            fix="ask the clearinghouse for smaller files"))
                continue
            name, data = path.name, path.read_bytes()
        out.files.append(import_bytes(store, name, data))
    return out


def poll(store: Store, transport: InboundTransport, *, limit: int = 500) -> ImportResult:
    """Import what waits in the inbound directory, then archive each file — only after its
    answers (or its quarantine entry) are committed. A file that cannot be fetched or archived
    stops this round (it is tried again next time); a file that cannot be *read* does not."""
    out = ImportResult()
    try:
        names = transport.list()[:limit]
    except ChargeBridgeError as exc:
        out.error = exc.title
        return out
    except Exception as exc:  # a TargetError from the transport (str() is for people, no PHI)
        out.error = str(exc) or type(exc).__name__
        return out
    for name in names:
        try:
            data = transport.get(name)
        except Exception as exc:
            out.error = getattr(exc, "title", "") or str(exc) or type(exc).__name__
            log.warning("clearinghouse file %s could not be fetched: %s", name, out.error)
            break
        res = import_bytes(store, name, data)
        out.files.append(res)
        try:
            transport.archive(name)
        except Exception as exc:
            out.error = getattr(exc, "title", "") or str(exc) or type(exc).__name__
            log.warning("clearinghouse file %s could not be archived: %s", name, out.error)
            break
    return out


def inbound_transport(target: Any) -> InboundTransport | None:
    """The ``[x12] inbound`` transport of an X12 target (the same options and secret as its
    outbound side), or None when the target is not X12 or no inbound location is set."""
    x12 = getattr(target, "x12", None)
    if not isinstance(x12, Mapping) or not str(x12.get("inbound") or "").strip():
        return None
    from connectors.rcm.x12.transport import open_transport

    opts: dict[str, Any] = {k: str(x12[k]) for k in ("host_key", "key_file") if x12.get(k)}
    mb = x12.get("max_file_mb")
    if isinstance(mb, (int, float)) and mb > 0:
        opts["max_bytes"] = int(mb * 1024 * 1024)
    transport: InboundTransport = open_transport(
        str(x12["inbound"]), secret=str(getattr(target, "secret", "") or ""),
        known_hosts=str(x12.get("known_hosts") or ""), timeout=float(getattr(target, "timeout", 30.0)),
        key="x12.inbound", **opts)
    return transport


def poll_target(store: Store, target: Any) -> ImportResult | None:
    """The engine's hook after each sync run (``[rcm] type = "x12"``): import the inbound
    directory; the outcome is kept in the ``x12.last_inbound`` setting for status. None when
    there is nothing to poll."""
    try:
        transport = inbound_transport(target)
    except ChargeBridgeError as exc:
        res = ImportResult(error=exc.title)
        transport = None
    else:
        if transport is None:
            return None
        try:
            res = poll(store, transport)
        finally:
            close = getattr(transport, "close", None)
            if callable(close):
                close()
    summary = {k: v for k, v in res.to_dict().items() if k != "files"}
    with store.tx():
        store.set_setting("x12.last_inbound", json.dumps({"at": now(), **summary}))
    return res
