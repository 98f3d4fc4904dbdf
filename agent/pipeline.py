"""The ingest pipeline: raw document -> parse -> standardize -> validate -> encounter state.

Crash safety comes from two commits per file. First the raw bytes are committed to the store
(``documents.status = 'pending'``); only then may a caller touch the source file. Then the
parse results, quarantine entries and the document's final status commit together. A crash
between the two leaves a pending document that :meth:`Pipeline.recover` finishes on restart;
a crash before the first leaves the source file where it was. Dedupe by sha256 makes a
re-read of the same file a no-op; dedupe by business key makes a re-export of the same
encounter a no-op (or a revision when its content changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import audit
from agent.rules import EncounterFacts, RuleSet, holds
from agent.rules.apply import refresh_after_ingest, split, store_new, store_one
from agent.store import Store, now
from agent.validate import has_errors, validate
from connectors.ehr.limits import DEFAULT as DEFAULT_BUDGETS
from connectors.ehr.limits import Budgets
from core.model import Encounter, Finding, PatientUpdate, Rejected, content_hash, standardize, standardize_patient
from core.states import DocumentStatus, EncounterKind, EncounterState

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger("chargebridge.pipeline")

CHUNK = 1024 * 1024
# A document whose processing was started this many times without finishing (the process died,
# e.g. out of memory, or an unexpected error escaped) is quarantined instead of tried again.
MAX_ATTEMPTS = 3
_DIGITS = re.compile(r"\d+")


@dataclass
class Outcome:
    """What happened to one file (or one stored document)."""

    document_id: int | None = None
    status: str = ""  # accepted | duplicate | partial | quarantined | vanished
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)
    seen_quarantined: bool = False  # a duplicate of a file quarantined earlier

    @property
    def file_quarantined(self) -> bool:
        """Nothing usable came out of the file: it belongs in the quarantine folder."""
        return self.status == DocumentStatus.QUARANTINED or self.seen_quarantined


@dataclass
class Analysis:
    """A parsed document, ready to commit: encounter rows, rejections and patient updates."""

    fmt: str = ""
    file_reason: str = ""
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)


@dataclass
class Totals:
    files: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, o: Outcome) -> None:
        if o.status == "vanished":
            return
        self.files += 1
        self.accepted += o.accepted
        self.duplicates += o.duplicates
        self.quarantined += o.quarantined

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": self.quarantined}


class Pipeline:
    def __init__(self, store: Store | None, *, max_file_bytes: int = 50 * 1024 * 1024,
                 chargemaster: str = "", budgets: Budgets | None = None, rules: RuleSet | None = None) -> None:
        self.rules = rules  # charge capture rules (agent/rules/); None = validation only
        self.store: Store = store  # type: ignore[assignment]  # None only inside parse workers
        self.max_file_bytes = max_file_bytes
        self.budgets = budgets or DEFAULT_BUDGETS
        self._chargemaster_name = chargemaster
        self._chargemasters: dict[str, Any] = {}
        self._events: list[tuple[Any, ...]] = []
        if chargemaster:  # a bad crosswalk is a configuration error: report it now, not per file
            self._chargemaster(chargemaster)

    @classmethod
    def for_config(cls, store: Store | None, cfg: Config, *, chargemaster: str | None = None) -> Pipeline:
        """The pipeline a home's configuration asks for (file cap, crosswalk, budgets): the one
        way the engine, the watcher, the CLI and the demo build it."""
        cm = cfg.chargemaster if chargemaster is None else chargemaster
        return cls(store, max_file_bytes=cfg.max_file_bytes, chargemaster=cm, budgets=cfg.budgets,
                   rules=RuleSet.for_config(store, cfg.rules))

    # -- entry points --------------------------------------------------------------------
    def ingest_path(self, path: Path, *, source: str = "cli", fmt: str = "auto",
                    profile: str = "") -> Outcome:
        """Store, then process, one file. Safe to call again for the same file at any time."""
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                return self._refuse_oversize(path, size, source, fmt, profile)
            data = path.read_bytes()
        except FileNotFoundError:
            log.info("a file vanished before it could be read; nothing to do")
            return Outcome(status="vanished")
        return self.ingest_bytes(data, origin=str(path), source=source, fmt=fmt, profile=profile)

    def ingest_bytes(self, data: bytes, *, origin: str, source: str = "cli", fmt: str = "auto",
                     profile: str = "") -> Outcome:
        doc_id, status = self.admit(data, origin=origin, source=source, fmt=fmt, profile=profile)
        if status != DocumentStatus.PENDING:
            log.debug("document %d already %s (same sha256)", doc_id, status)
            return self._seen_before(doc_id, status)
        return self.process(doc_id)

    def _seen_before(self, doc_id: int, status: str) -> Outcome:
        """Same bytes again. A file quarantined before still belongs in the quarantine folder
        (e.g. the engine died between committing it and moving it there)."""
        out = Outcome(document_id=doc_id, status="duplicate", duplicates=1)
        if status == DocumentStatus.QUARANTINED:
            out.seen_quarantined = True
            out.reasons = [f"{p}: {r}" if p else r for p, r in self.store.conn.execute(
                "SELECT part, reason FROM quarantine WHERE document_id = ? ORDER BY id", (doc_id,))]
        return out

    def ingest_many(self, jobs: Iterable[tuple[Path, str, str]], *, workers: int = 0) -> Iterator[tuple[Path, Outcome]]:
        """Bulk ingest of (path, format, profile): each file's bytes are committed here, in order,
        while up to ``workers`` processes parse the files already committed (two cores, two jobs).
        Results commit in submission order; a worker failure falls back to parsing in-process."""
        if workers < 1:
            for path, fmt, profile in jobs:
                yield path, self.ingest_path(path, fmt=fmt, profile=profile)
            return
        import multiprocessing
        from collections import deque
        from concurrent.futures import Future, ProcessPoolExecutor

        window: deque[tuple[Path, int, Future[Analysis]]] = deque()
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may run watcher threads
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(self.max_file_bytes, self._chargemaster_name, self.budgets,
                                           self.rules)) as pool:

            def drain(limit: int) -> Iterator[tuple[Path, Outcome]]:
                while len(window) > limit:
                    path, doc_id, fut = window.popleft()
                    try:
                        analysis = fut.result()
                    except Exception as exc:  # broken worker: do the work here instead
                        log.warning("parse worker failed (%s); parsing in-process", type(exc).__name__)
                        yield path, self.process(doc_id)  # counted: a file that kills us is not retried forever
                        continue
                    yield path, self.commit(doc_id, analysis)

            for path, fmt, profile in jobs:
                try:
                    size = path.stat().st_size
                    if size > self.max_file_bytes:
                        yield path, self._refuse_oversize(path, size, "cli", fmt, profile)
                        continue
                    data = path.read_bytes()
                except FileNotFoundError:
                    yield path, Outcome(status="vanished")
                    continue
                doc_id, status = self.admit(data, origin=str(path), source="cli", fmt=fmt, profile=profile)
                if status != DocumentStatus.PENDING:
                    yield path, self._seen_before(doc_id, status)
                    continue
                args = (data, fmt, profile, path.name)
                window.append((path, doc_id, pool.submit(_worker_analyze, *args)))
                yield from drain(workers * 2)
            yield from drain(0)

    def admit(self, data: bytes, *, origin: str, source: str, fmt: str, profile: str) -> tuple[int, str]:
        """Commit the raw bytes. Returns (document id, its status); status != 'pending' = seen before."""
        sha = hashlib.sha256(data).hexdigest()
        conn = self.store.conn
        row = conn.execute("SELECT id, status FROM documents WHERE sha256 = ?", (sha,)).fetchone()
        if row:
            return int(row[0]), str(row[1])
        with self.store.tx():
            cur = conn.execute(
                "INSERT INTO documents (sha256, origin, source, format, profile, size, content, status, received_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (sha, origin, source, fmt, profile, len(data), data, DocumentStatus.PENDING, now()),
            )
            doc_id = int(cur.lastrowid)
            self.store.event("document.received", document_id=doc_id, detail={"size": len(data)})
        return doc_id, DocumentStatus.PENDING

    def recover(self) -> list[Outcome]:
        """Finish documents committed by a run that crashed before processing them."""
        ids = [r[0] for r in self.store.conn.execute("SELECT id FROM documents WHERE status = ? ORDER BY id",
                                                     (DocumentStatus.PENDING,))]
        if ids:
            log.info("recovering %d document(s) left pending by an earlier run", len(ids))
        return [self.process(i) for i in ids]

    def reprocess(self, quarantine_id: int, *, fmt: str | None = None, profile: str | None = None,
                  actor: str = "cli") -> Outcome:
        """Run a quarantined document through the pipeline again (e.g. after fixing a profile).
        ``actor`` is who asked, for the audit trail."""
        conn = self.store.conn
        row = conn.execute("SELECT document_id, resolved_at FROM quarantine WHERE id = ?", (quarantine_id,)).fetchone()
        if row is None:
            raise KeyError(quarantine_id)
        doc_id = int(row[0])
        content = conn.execute("SELECT content IS NULL FROM documents WHERE id = ?", (doc_id,)).fetchone()[0]
        if content:
            raise ValueError("this file was refused before it was stored (too large); drop it again after "
                             "raising ingest.max_file_mb")
        with self.store.tx():
            if fmt:
                conn.execute("UPDATE documents SET format = ? WHERE id = ?", (fmt, doc_id))
            if profile is not None:
                conn.execute("UPDATE documents SET profile = ? WHERE id = ?", (profile, doc_id))
            conn.execute(
                "UPDATE quarantine SET resolved_at = ?, resolution = 'reprocessed' "
                "WHERE document_id = ? AND resolved_at IS NULL", (now(), doc_id))
            conn.execute("UPDATE documents SET status = ?, attempts = 0 WHERE id = ?", (DocumentStatus.PENDING, doc_id))
            self.store.event("document.reprocess", document_id=doc_id, detail={"quarantine_id": quarantine_id})
            audit.record(self.store, actor=actor, action="quarantine.reprocess", target=f"quarantine:{quarantine_id}",
                         detail={"document_id": doc_id})
        return self.process(doc_id)

    # -- processing ----------------------------------------------------------------------
    def process(self, doc_id: int) -> Outcome:
        """Analyse and commit one stored document. The attempt is counted (and committed) first,
        so a document that kills the process every time it is read -- out of memory, a crash in
        a library -- is quarantined after :data:`MAX_ATTEMPTS` instead of blocking every start."""
        conn = self.store.conn
        with self.store.tx():
            conn.execute("UPDATE documents SET attempts = attempts + 1 WHERE id = ?", (doc_id,))
        origin, fmt, profile, content, attempts = conn.execute(
            "SELECT origin, format, profile, content, attempts FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if attempts > MAX_ATTEMPTS:
            log.error("document %d: %d attempts did not finish; quarantining it", doc_id, attempts - 1)
            return self.commit(doc_id, Analysis(fmt=fmt, file_reason=(
                f"reading this file was started {attempts - 1} times and never finished (the engine stopped "
                "or ran out of memory while reading it); it is kept in the store and not read again - check "
                "that the export is a normal file of its format, then reprocess it or report it to support")))
        return self.commit(doc_id, self.analyze(bytes(content or b""), fmt, profile, Path(origin).name))

    def analyze(self, content: bytes, fmt: str, profile: str, name: str) -> Analysis:
        """Parse, standardize, validate and serialize one document. Touches no store, so it can
        run in a worker process while the main process commits the previous file.

        Never raises: whatever goes wrong becomes the file's quarantine reason."""
        try:
            return self._analyze(content, fmt, profile, name)
        except Exception as exc:  # MemoryError, RecursionError, a bug: quarantine, don't block the home
            log.error("analysing a %s file failed with %s", fmt, type(exc).__name__)
            return Analysis(fmt=fmt, file_reason=_unexpected(fmt or "input", exc))

    def _analyze(self, content: bytes, fmt: str, profile: str, name: str) -> Analysis:
        from connectors.ehr import detect_format, get_parser
        from connectors.ehr.base import ParseError

        a = Analysis(fmt=fmt)
        items: list[Any] = []
        if not content:
            a.file_reason = "file is empty; the EHR export may have failed — export the visit again"
            return a
        if fmt in ("", "auto"):
            a.fmt = fmt = detect_format(name, content[:512])
        if not fmt:
            a.file_reason = ("could not tell the file's format from its name or first bytes (HL7 v2, CSV, "
                             "FHIR JSON or C-CDA XML expected); set the folder's format in chargebridge.toml")
            return a
        try:
            parser = get_parser(fmt)
            items = list(parser.parse(content, name=name, options={"profile": profile, "budgets": self.budgets}))
        except ParseError as exc:
            a.file_reason = str(exc)
        except Exception as exc:  # a reader bug must not stop the engine or lose the file
            log.error("a %s reader failed with %s", fmt, type(exc).__name__)
            a.file_reason = _unexpected(fmt, exc)
        if not a.file_reason and not items:
            a.file_reason = f"no encounters, charges or patient updates found in this {fmt} file"
        max_lines = self.budgets.max_lines_per_encounter
        n = 0
        for item in items:
            if isinstance(item, Encounter):
                n += 1
                if len(item.lines) > max_lines:
                    a.others.append(Rejected(f"encounter {n}", (
                        f"the encounter has {len(item.lines):,} charge lines, over the limit of {max_lines:,} per "
                        "encounter (ingest.max_lines_per_encounter); check the export - one visit is not billed "
                        "with that many lines")))
                    continue
                try:
                    a.rows.append(self._encounter_row(item))
                except Exception as exc:  # one encounter must not sink the file, nor escape
                    log.error("checking encounter %d of a %s file failed with %s", n, fmt, type(exc).__name__)
                    a.others.append(Rejected(f"encounter {n}", (
                        f"the encounter could not be checked ({type(exc).__name__}); the file is kept in the "
                        "store - report this to ChargeBridge support, then reprocess it")))
            elif isinstance(item, (Rejected, PatientUpdate)):
                a.others.append(item)
        return a

    def commit(self, doc_id: int, a: Analysis) -> Outcome:
        """Write one analysed document's results and final status in one transaction."""
        conn = self.store.conn
        out = Outcome(document_id=doc_id)
        fmt = a.fmt
        self._events = []
        file_reason, items, rows = a.file_reason, a.others, a.rows
        cap = max(1, self.budgets.max_quarantine_per_file)
        overflow: list[Rejected] = []
        with self.store.tx():
            if file_reason:
                self._quarantine(doc_id, "", file_reason, out)
            for item in items:
                if isinstance(item, Rejected):
                    if out.quarantined < cap:
                        self._quarantine(doc_id, item.part, item.reason, out)
                    else:
                        overflow.append(item)
                elif isinstance(item, PatientUpdate):
                    self._upsert_patient(doc_id, item, out)
            if overflow:
                self._quarantine(doc_id, f"{len(overflow):,} more parts", _overflow_reason(overflow, cap), out)
                out.quarantined += len(overflow) - 1
            if self.rules is not None and self.rules.historic and rows:
                from agent.rules.apply import history_rows

                rows = history_rows(self.store, self.rules, rows)
            self._store_encounters(doc_id, rows, out)
            if out.accepted:
                out.status = "partial" if out.quarantined else "accepted"
            elif out.duplicates:
                out.status = "partial" if out.quarantined else "duplicate"
            else:
                out.status = DocumentStatus.QUARANTINED
            if self._events:
                conn.executemany("INSERT INTO events (at, kind, encounter_id, document_id, detail) VALUES (?,?,?,?,?)",
                                 self._events)
            quarantined = out.status == DocumentStatus.QUARANTINED
            doc_status = DocumentStatus.QUARANTINED if quarantined else DocumentStatus.PROCESSED
            conn.execute("UPDATE documents SET status = ?, processed_at = ?, format = ? WHERE id = ?",
                         (doc_status, now(), fmt or "auto", doc_id))
        if self.rules is not None and self.rules.historic and out.accepted:
            try:  # the patients' earlier visits, which the new ones may change (a duplicate, the month)
                refresh_after_ingest(self.store, self.rules, rows)
            except Exception as exc:  # the document is stored; the next re-run catches up
                log.warning("document %d: refreshing the rules of earlier visits failed (%s)", doc_id,
                            type(exc).__name__)
        log.info("document %d: %s (accepted %d, duplicates %d, quarantined %d)",
                 doc_id, out.status, out.accepted, out.duplicates, out.quarantined)
        return out

    def _quarantine(self, doc_id: int, part: str, reason: str, out: Outcome) -> None:
        cur = self.store.conn.execute(
            "INSERT INTO quarantine (document_id, part, reason, created_at) VALUES (?,?,?,?)",
            (doc_id, part, reason, now()))
        self.store.event("document.quarantined", document_id=doc_id, detail={"quarantine_id": cur.lastrowid})
        out.quarantined += 1
        out.reasons.append(f"{part}: {reason}" if part else reason)

    def _chargemaster(self, name: str):  # type: ignore[no-untyped-def]
        if name not in self._chargemasters:
            from agent.chargemaster import Chargemaster

            self._chargemasters[name] = Chargemaster.load(name)
        return self._chargemasters[name]

    def prepare(self, enc: Encounter) -> tuple[str, list[Finding]]:
        """Chargemaster, standardize, validate, the encounter rules; returns (state, findings)."""
        state, findings, _ = self._prepare(enc)
        return state, findings

    def _prepare(self, enc: Encounter) -> tuple[str, list[Finding], EncounterFacts | None]:
        """:meth:`prepare`, with the rules' input (:class:`EncounterFacts`) of a charge encounter
        when the rules are on."""
        findings: list[Finding] = []
        facts = None
        if self._chargemaster_name:
            findings += self._chargemaster(self._chargemaster_name).apply(enc)
        findings += standardize(enc)
        findings += validate(enc)
        if len(findings) > 1:  # standardize and validate may both report one unreadable value
            unique: dict[tuple[str, str], Finding] = {}
            for f in findings:
                unique.setdefault((f.code, f.field), f)
            findings = list(unique.values())
        if self.rules is not None:  # charge rules: their review/error findings hold the encounter too
            facts = EncounterFacts.of(enc) if enc.kind == EncounterKind.CHARGE else None
            findings = self.rules.apply_local(enc if facts is None else facts, findings)
        if enc.kind == EncounterKind.EXPECTED:
            return EncounterState.EXPECTED, findings, facts
        held = has_errors(findings) or (self.rules is not None and holds(findings))
        return (EncounterState.NEEDS_REVIEW if held else EncounterState.READY), findings, facts

    def _encounter_row(self, enc: Encounter) -> tuple[Any, ...]:
        """Everything the store needs for one encounter, computed outside the write transaction."""
        state, findings, facts = self._prepare(enc)
        blob = enc.to_json()
        chash = content_hash(blob)
        ruled: list[dict[str, Any]] = []
        if facts is not None:  # rule findings go to their own row
            findings, found = split(findings)
            ruled = [f.to_dict() for f in found]
        fjson = json.dumps([f.to_dict() for f in findings]) if findings else "[]"
        return (enc.business_key, enc.kind, enc.source, enc.source_id, state, enc.patient.mrn, enc.dos_start,
                blob, fjson, chash, len(findings) + len(ruled), facts, ruled, holds(findings))

    def _store_encounters(self, doc_id: int, rows: list[tuple[Any, ...]], out: Outcome) -> None:
        """Insert new encounters in bulk; identical re-exports are duplicates, changed ones revisions."""
        conn = self.store.conn
        existing: dict[str, list[Any]] = {}
        keys = list({r[0] for r in rows})
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            sql = ("SELECT business_key, id, content_hash, version FROM encounters WHERE business_key IN (%s)"
                   % ",".join("?" * len(chunk)))
            for k, enc_id, h, v in conn.execute(sql, chunk):
                existing[k] = [enc_id, h, v]
        ts = now()
        inserts: dict[str, tuple[Any, ...]] = {}
        for r in rows:
            key, state, chash = r[0], r[4], r[9]
            if key in existing:
                enc_id, old_hash, version = existing[key]
                if old_hash == chash:
                    out.duplicates += 1
                    continue
                version += 1
                conn.execute(
                    "UPDATE encounters SET document_id=?, state=?, mrn=?, dos=?, data=?, findings=?, content_hash=?,"
                    " version=?, updated_at=? WHERE id=?",
                    (doc_id, state, r[5], r[6], r[7], r[8], chash, version, ts, enc_id))
                store_one(self.store, enc_id, r[11], chash, r[12], r[13])
                existing[key] = [enc_id, chash, version]
                self._events.append((ts, "encounter.revised", enc_id, doc_id,
                                     json.dumps({"state": state, "version": version})))
                out.accepted += 1
            elif key in inserts and inserts[key][9] == chash:
                out.duplicates += 1  # the same encounter twice in one file
            else:
                if key not in inserts:
                    out.accepted += 1
                inserts[key] = r  # a later copy in the same file supersedes an earlier one
        if not inserts:
            return
        conn.executemany(
            "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, data,"
            " findings, content_hash, version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?,?)",
            [(r[0], r[1], r[2], r[3], doc_id, r[4], r[5], r[6], r[7], r[8], r[9], ts, ts) for r in inserts.values()])
        # the rules' input and findings (agent/rules/apply.py), beside the wide rows
        store_new(self.store, [(r[0], r[11], r[9], r[12], r[13]) for r in inserts.values() if r[11]])
        conn.executemany(
            "INSERT INTO events (at, kind, encounter_id, document_id, detail)"
            " SELECT ?, 'encounter.created', id, ?, ? FROM encounters WHERE business_key = ?",
            [(ts, doc_id, f'{{"state":"{r[4]}","findings":{r[10]}}}', r[0]) for r in inserts.values()])

    def _upsert_patient(self, doc_id: int, upd: PatientUpdate, out: Outcome) -> None:
        conn = self.store.conn
        standardize_patient(upd.patient)
        if not upd.patient.mrn:
            self._quarantine(doc_id, "", f"ADT^{upd.event or '?'} message has no patient identifier (PID-3)", out)
            return
        pdata = _asdict(upd.patient)
        blob = json.dumps({"patient": pdata, "event": upd.event}, sort_keys=True)
        chash = content_hash(json.dumps(pdata, sort_keys=True))
        key = upd.business_key
        row = conn.execute("SELECT content_hash FROM patients WHERE business_key = ?", (key,)).fetchone()
        if row is not None and row[0] == chash:
            out.duplicates += 1
            return
        conn.execute(
            "INSERT INTO patients (business_key, document_id, data, content_hash, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(business_key) DO UPDATE SET document_id=excluded.document_id, data=excluded.data,"
            " content_hash=excluded.content_hash, updated_at=excluded.updated_at",
            (key, doc_id, blob, chash, now()))
        self.store.event("patient.updated", document_id=doc_id, detail={"event": upd.event})
        out.accepted += 1

    def _refuse_oversize(self, path: Path, size: int, source: str, fmt: str, profile: str) -> Outcome:
        """Too large to keep: record the refusal (by sha256) without storing the bytes."""
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return Outcome(status="vanished")
        sha = h.hexdigest()
        conn = self.store.conn
        row = conn.execute("SELECT id, status FROM documents WHERE sha256 = ?", (sha,)).fetchone()
        if row:
            return self._seen_before(int(row[0]), str(row[1]))
        limit_mb = self.max_file_bytes / 1024 / 1024
        reason = (f"file is {size / 1024 / 1024:.1f} MB, over the {limit_mb:g} MB limit (ingest.max_file_mb); "
                  "split the export or raise the limit, then drop it again")
        out = Outcome(status=DocumentStatus.QUARANTINED)
        with self.store.tx():
            cur = conn.execute(
                "INSERT INTO documents (sha256, origin, source, format, profile, size, content, status, received_at,"
                " processed_at) VALUES (?,?,?,?,?,?,NULL,?,?,?)",
                (sha, str(path), source, fmt, profile, size, DocumentStatus.QUARANTINED, now(), now()))
            out.document_id = int(cur.lastrowid)
            self._quarantine(out.document_id, "", reason, out)
        return out


_WORKER: Pipeline | None = None


def _worker_init(max_file_bytes: int, chargemaster: str, budgets: Budgets, rules: RuleSet | None = None) -> None:
    global _WORKER
    _WORKER = Pipeline(None, max_file_bytes=max_file_bytes, chargemaster=chargemaster, budgets=budgets, rules=rules)


def _worker_analyze(content: bytes, fmt: str, profile: str, name: str) -> Analysis:
    assert _WORKER is not None
    return _WORKER.analyze(content, fmt, profile, name)


def _asdict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(obj)


def _unexpected(fmt: str, exc: BaseException) -> str:
    """A quarantine reason for a failure no reader anticipated, naming the problem when known."""
    if isinstance(exc, RecursionError):
        return (f"the {fmt} file is nested too deeply to read (elements inside elements, thousands of "
                "levels); no EHR export looks like that - export it again")
    if isinstance(exc, MemoryError):
        return (f"the {fmt} file needs more memory to read than this computer has; split the export into "
                "smaller files and drop them again")
    return (f"the {fmt} reader failed unexpectedly ({type(exc).__name__}); the file is kept in the store - "
            "report this to ChargeBridge support, then reprocess it")


def _overflow_reason(rest: list[Rejected], shown: int) -> str:
    """One entry for the parts over the per-file quarantine budget: how many, and the usual reason
    (reasons hold no data values, only positions, so the most common one is safe to repeat)."""
    counts: dict[str, int] = {}
    for r in rest[:10_000]:
        key = _DIGITS.sub("#", r.reason)
        counts[key] = counts.get(key, 0) + 1
    common = max(counts, key=counts.__getitem__)
    example = next(r.reason for r in rest if _DIGITS.sub("#", r.reason) == common)
    return (f"{len(rest):,} more parts of this file could not be used, beyond the {shown} listed separately "
            f"(ingest.max_quarantine_per_file); most are like this: {example}")
