"""Eligibility for tomorrow's schedule: 270 out, 271 back, visits without active coverage flagged.

A claim denied for coverage is cheapest to fix before the visit. The engine runs this the
evening before (``[x12] eligibility_at``, agent/engine.py); ``chargebridge eligibility [--date D]``
runs it by hand.

1. :func:`ask` takes the day's scheduled visits (encounters of kind ``expected``: SIU or a
   database source), writes one row per visit in ``eligibility`` (migration 12) with a trace
   number, writes one 270 (connectors/rcm/x12/eligibility.py), checks it, and puts it in the
   outbound directory through the transport. A visit whose coverage cannot be asked about (no
   payer, no member id) is answered at once: ``no_coverage``. Asking again the same day re-sends
   the visits still waiting, under the same interchange control number (the ledger's batch key
   is the day and the traces), and does not ask again for visits already answered.
2. :func:`read_answers` takes 271 files from the inbound directory (other files are left for the
   claims importer), applies each answer to its visit by trace (idempotent: the same file twice
   changes nothing), and archives the file.
3. A visit whose latest answer is not ``active`` carries a warning finding
   (``eligibility.inactive`` / ``eligibility.unknown`` / ``eligibility.no_coverage``) that the
   encounter lists show, and :func:`flagged` lists them for the front desk. The charge rule
   ``coverage.inactive_on_dos`` (agent/rules/coverage.py) reads the latest answer by patient
   and date of service.

Nothing here logs patient data: counts, file names, trace numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from agent.store import Store, now
from connectors.rcm.base import TargetError
from connectors.rcm.x12 import eligibility as x270
from core.errors import ChargeBridgeError, ConfigError
from core.model import Encounter
from core.states import EligibilityStatus, EncounterKind, EncounterState

log = logging.getLogger("chargebridge.eligibility")

FINDING_PREFIX = "eligibility."
MAX_VISITS_PER_FILE = 5_000


class Outbound(Protocol):
    def put(self, name: str, data: bytes) -> None: ...


class Inbound(Protocol):
    def list(self) -> list[str]: ...

    def get(self, name: str) -> bytes: ...

    def archive(self, name: str) -> str: ...


class Ledger(Protocol):
    def interchange(self, batch_key: str, kind: str) -> int: ...

    def sent(self, control: int, file_name: str) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What a run needs from ``[practice]`` and ``[x12]``."""

    provider: x270.Provider
    sender_id: str
    receiver_id: str
    usage: str = "T"


def settings_of(cfg: Any) -> Settings:
    """From the loaded config's ``[practice]`` / ``[x12]`` sections (agent/config.py)."""
    practice = getattr(cfg, "practice", None)
    x12 = getattr(cfg, "x12", None)
    if practice is None or x12 is None or not getattr(x12, "sender_id", ""):
        raise ConfigError("eligibility needs the clearinghouse settings",
                          "fill in [practice] (name, npi, tax_id) and [x12] (sender_id, receiver_id, "
                          "outbound, inbound) in chargebridge.toml", key="x12")
    return Settings(x270.Provider(str(practice.name), str(practice.npi), str(practice.tax_id)),
                    str(x12.sender_id), str(x12.receiver_id), str(getattr(x12, "usage", "T") or "T"))


@dataclass
class AskResult:
    day: str
    visits: int = 0
    asked: int = 0
    already_answered: int = 0
    no_coverage: int = 0
    file: str = ""
    control: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReadResult:
    files: int = 0
    answers: int = 0
    matched: int = 0
    unmatched: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _day(value: str | date) -> str:
    try:
        return (value if isinstance(value, date) else date.fromisoformat(value)).isoformat()
    except ValueError:
        raise ConfigError(f"{value!r} is not a date", "a date like 2026-06-15", key="date") from None


def _inquiry(trace: str, enc: Encounter, day: str) -> x270.Inquiry:
    cov = next((c for c in enc.coverages if c.member_id), enc.coverages[0] if enc.coverages else None)
    p = enc.patient
    return x270.Inquiry(trace=trace, payer_name=cov.payer_name if cov else "", payer_id=cov.payer_id if cov else "",
                        member_id=cov.member_id if cov else "", family=p.family, given=p.given, dob=p.dob,
                        sex=p.sex, dos=day)


def ask(store: Store, settings: Settings, day: str | date, *, outbound: Outbound, ledger: Ledger,
        when: datetime | None = None) -> AskResult:
    """Send the 270 for ``day``'s scheduled visits (see the module doc)."""
    d = _day(day)
    res = AskResult(day=d)
    conn = store.conn
    visits = conn.execute(
        "SELECT id, business_key, mrn, data FROM encounters WHERE kind = ? AND state = ? AND dos = ? ORDER BY id",
        (EncounterKind.EXPECTED, EncounterState.EXPECTED, d)).fetchall()
    res.visits = len(visits)
    latest = {str(k): (str(s), str(t)) for k, s, t in conn.execute(
        "SELECT business_key, status, trace FROM eligibility e WHERE dos = ? AND id = "
        "(SELECT max(id) FROM eligibility e2 WHERE e2.business_key = e.business_key AND e2.dos = e.dos)", (d,))}
    inquiries: list[x270.Inquiry] = []
    new_rows: list[tuple[Any, ...]] = []
    answered_now: list[tuple[int, str, str]] = []
    ts = now()
    for eid, key, mrn, data in visits:
        prev = latest.get(str(key))
        if prev and prev[0] != EligibilityStatus.PENDING:
            res.already_answered += 1
            continue
        enc = Encounter.from_dict(json.loads(data))
        if not any(c.member_id for c in enc.coverages):
            enc.coverages = _known_coverage(store, str(mrn)) or enc.coverages
        trace = prev[1] if prev else f"CB{hashlib.sha256(f'{key}|{d}'.encode()).hexdigest()[:12].upper()}"
        q = _inquiry(trace, enc, d)
        problem = x270.check_inquiry(q)
        if problem:
            res.no_coverage += 1
            if not prev:
                new_rows.append((int(eid), str(key), str(mrn), d, trace, EligibilityStatus.NO_COVERAGE, ts, ts,
                                 json.dumps({"reasons": [problem]})))
                answered_now.append((int(eid), EligibilityStatus.NO_COVERAGE, problem))
            continue
        inquiries.append(q)
        if not prev:
            new_rows.append((int(eid), str(key), str(mrn), d, trace, EligibilityStatus.PENDING, ts, None, "{}"))
        if len(inquiries) >= MAX_VISITS_PER_FILE:
            break
    if new_rows:
        with store.tx():
            conn.executemany(
                "INSERT INTO eligibility (encounter_id, business_key, mrn, dos, trace, status, asked_at, checked_at, "
                "detail) VALUES (?,?,?,?,?,?,?,?,?)", new_rows)
            for eid, status, why in answered_now:
                _flag(store, eid, status, [why])
    if not inquiries:
        return res
    batch_key = "270:" + d + ":" + hashlib.sha256("|".join(sorted(q.trace for q in inquiries)).encode()).hexdigest()
    control = ledger.interchange(batch_key, "270")
    text = x270.write_270(inquiries, provider=settings.provider,
                          envelope=x270.Envelope(settings.sender_id, settings.receiver_id, control, settings.usage,
                                                 when))
    problems = x270.check_270(text)
    if problems:
        raise ChargeBridgeError("the eligibility file failed its check and was not sent: " + "; ".join(problems[:3]),
                                "this is a ChargeBridge bug: report it with the message")
    name = f"270-{control:09d}.x12"
    outbound.put(name, text.encode("ascii"))
    ledger.sent(control, name)
    with store.tx():
        conn.executemany("UPDATE eligibility SET control = ? WHERE trace = ? AND status = ?",
                         [(control, q.trace, EligibilityStatus.PENDING) for q in inquiries])
        store.event("eligibility.asked", detail={"day": d, "visits": len(inquiries), "control": control})
    res.asked, res.file, res.control = len(inquiries), name, control
    log.info("eligibility: asked about %d visits on %s in %s", res.asked, d, name)
    return res


def _known_coverage(store: Store, mrn: str) -> list[Any]:
    """The patient's coverage as last seen on a charge encounter (SIU visits often carry none)."""
    if not mrn:
        return []
    for (data,) in store.conn.execute("SELECT data FROM encounters WHERE mrn = ? AND kind = ? ORDER BY dos DESC, id "
                                      "DESC LIMIT 20", (mrn, EncounterKind.CHARGE)):
        covs = Encounter.from_dict(json.loads(data)).coverages
        if any(c.member_id for c in covs):
            return list(covs)
    return []


def _flag(store: Store, encounter_id: int, status: str, reasons: Sequence[str]) -> None:
    """Replace the visit's eligibility finding (none when active). Inside the caller's tx."""
    row = store.conn.execute("SELECT findings FROM encounters WHERE id = ?", (encounter_id,)).fetchone()
    if row is None:
        return
    findings = [f for f in json.loads(row[0] or "[]") if not str(f.get("code", "")).startswith(FINDING_PREFIX)]
    if status != EligibilityStatus.ACTIVE:
        what = {EligibilityStatus.INACTIVE: "the payer says the coverage is not active on the visit date",
                EligibilityStatus.NO_COVERAGE: "the visit has no coverage to check",
                }.get(EligibilityStatus(status), "the payer could not confirm the coverage")
        detail = "; ".join(reasons[:3])
        findings.append({"code": FINDING_PREFIX + str(status), "field": "coverages",
                         "message": what + (f" ({detail})" if detail else ""), "severity": "warning",
                         "fix": "front desk: confirm the patient's insurance (new card, other payer) or self-pay "
                                "before the visit"})
    store.conn.execute("UPDATE encounters SET findings = ?, updated_at = ? WHERE id = ?",
                       (json.dumps(findings), now(), encounter_id))


def apply_271(store: Store, data: bytes, ref: str) -> ReadResult:
    """Apply one 271 file's answers. ``ref``: where it came from (the file name)."""
    res = ReadResult(files=1)
    answers = x270.parse_271(data)
    res.answers = len(answers)
    conn = store.conn
    ts = now()
    with store.tx():
        for a in answers:
            row = conn.execute("SELECT id, encounter_id, detail FROM eligibility WHERE trace = ? ORDER BY id DESC "
                               "LIMIT 1", (a.trace,)).fetchone() if a.trace else None
            if row is None:
                res.unmatched += 1
                continue
            detail = json.loads(row[2] or "{}")
            if detail.get("fingerprint") == a.fingerprint:
                res.duplicates += 1
                continue
            status = {"active": EligibilityStatus.ACTIVE, "inactive": EligibilityStatus.INACTIVE}.get(
                a.status, EligibilityStatus.UNKNOWN)
            detail = {"fingerprint": a.fingerprint, "reasons": a.reasons, "plan_begin": a.plan_begin,
                      "plan_end": a.plan_end, "st_control": a.st_control}
            conn.execute("UPDATE eligibility SET status = ?, plan = ?, copay = ?, checked_at = ?, answer_ref = ?, "
                         "detail = ? WHERE id = ?",
                         (status, a.plan, a.copay, ts, f"{ref}#{a.st_control}", json.dumps(detail), int(row[0])))
            if row[1] is not None:
                _flag(store, int(row[1]), status, a.reasons)
                store.event(f"eligibility.{status}", encounter_id=int(row[1]), detail={"trace": a.trace})
            res.matched += 1
    return res


def read_answers(store: Store, inbound: Inbound, *, limit: int = 500) -> ReadResult:
    """Apply every 271 waiting in the inbound directory, then archive it. Files that are not 271s
    are left where they are (the claims importer reads them)."""
    out = ReadResult()
    for name in inbound.list()[:limit]:
        data = inbound.get(name)
        if not x270.is_271(data):
            continue
        try:
            r = apply_271(store, data, name)
        except x270.EligibilityError as exc:
            out.errors.append(f"{name}: {exc.title}")
            log.warning("eligibility answer %s could not be read: %s", name, exc.title)
            continue
        out.files += 1
        out.answers += r.answers
        out.matched += r.matched
        out.unmatched += r.unmatched
        out.duplicates += r.duplicates
        inbound.archive(name)
    return out


def flagged(store: Store, day: str | date | None = None, *, since: str | date | None = None) -> list[dict[str, Any]]:
    """Scheduled visits whose latest eligibility answer is not ``active`` (pending ones included:
    no answer yet is not a yes), for the front desk: of ``day``, or from ``since`` on, or all.
    No names: visit key, MRN, date, status, reasons."""
    where, args = ("AND e.dos = ?", [_day(day)]) if day else ("AND e.dos >= ?", [_day(since)]) if since else ("", [])
    rows = store.conn.execute(
        "SELECT e.business_key, e.encounter_id, e.dos, e.status, e.plan, e.copay, e.checked_at, e.detail, e.trace, "
        "e.mrn "
        "FROM eligibility e WHERE e.id = (SELECT max(id) FROM eligibility e2 WHERE e2.business_key = e.business_key "
        f"AND e2.dos = e.dos) AND e.status != ? {where} ORDER BY e.dos, e.business_key",
        (EligibilityStatus.ACTIVE, *args)).fetchall()
    return [{"visit": k, "encounter_id": eid, "dos": dos, "status": st, "plan": plan, "copay": copay,
             "checked_at": chk, "reasons": json.loads(det or "{}").get("reasons", []), "trace": tr, "mrn": mrn}
            for k, eid, dos, st, plan, copay, chk, det, tr, mrn in rows]


def listing(store: Store, day: str | date) -> list[dict[str, Any]]:
    """Every visit of ``day`` with its latest eligibility answer."""
    d = _day(day)
    rows = store.conn.execute(
        "SELECT e.business_key, e.status, e.plan, e.copay, e.checked_at, e.detail, e.mrn FROM eligibility e "
        "WHERE e.dos = ? "
        "AND e.id = (SELECT max(id) FROM eligibility e2 WHERE e2.business_key = e.business_key AND e2.dos = e.dos) "
        "ORDER BY e.business_key", (d,)).fetchall()
    return [{"visit": k, "dos": d, "status": st, "plan": plan, "copay": copay, "checked_at": chk,
             "reasons": json.loads(det or "{}").get("reasons", []), "mrn": mrn}
            for k, st, plan, copay, chk, det, mrn in rows]


def status_on(store: Store, mrn: str, dos: str) -> str | None:
    """The latest answered eligibility status for this patient on this date (None: never asked)."""
    if not mrn or not dos:
        return None
    row = store.conn.execute(
        "SELECT status FROM eligibility WHERE mrn = ? AND dos = ? AND status != ? ORDER BY id DESC LIMIT 1",
        (mrn, dos[:10], EligibilityStatus.PENDING)).fetchone()
    return str(row[0]) if row else None


def statuses(store: Store, mrns: Sequence[str]) -> dict[tuple[str, str], str]:
    """(mrn, dos) -> latest answered status, for the charge rule over a batch."""
    out: dict[tuple[str, str], str] = {}
    wanted = sorted({m for m in mrns if m})
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        try:
            rows = store.conn.execute(
                f"SELECT mrn, dos, status FROM eligibility WHERE status != ? AND mrn IN ({','.join('?' * len(chunk))}) "
                "ORDER BY id", (EligibilityStatus.PENDING, *chunk)).fetchall()
        except Exception:  # a store from before migration 12 (opened read-only elsewhere)
            return out
        for mrn, dos, status in rows:
            out[(str(mrn), str(dos))] = str(status)  # later rows win
    return out


# -- running it: the CLI, the API and the engine's evening job ------------------------------------
class _Unclosed:
    """The caller's store for :class:`agent.claims.StoreLedger`, which closes what it opens."""

    def __init__(self, store: Store) -> None:
        self._s = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def close(self) -> None:
        return None


def _transport(x12: Any, which: str, secret: str, timeout: float) -> Any:
    from connectors.rcm.x12.transport import open_transport

    opts: dict[str, Any] = {k: str(getattr(x12, k)) for k in ("host_key", "key_file") if getattr(x12, k, "")}
    mb = getattr(x12, "max_file_mb", 0)
    if isinstance(mb, (int, float)) and mb > 0:
        opts["max_bytes"] = int(mb * 1024 * 1024)
    return open_transport(str(getattr(x12, which)), secret=secret, known_hosts=str(getattr(x12, "known_hosts", "")),
                          timeout=timeout, key=f"x12.{which}", **opts)


class ClearinghouseUnavailable(ChargeBridgeError):
    """The inbound or outbound location could not be used (folder missing, SFTP down...)."""

    http_status = 502


def check_day(store: Store, cfg: Any, secret: str, day: str | date, *, ask_payer: bool = True,
              when: datetime | None = None) -> dict[str, Any]:
    try:
        return _check_day(store, cfg, secret, day, ask_payer=ask_payer, when=when)
    except TargetError as exc:  # str() is for people, no PHI
        raise ClearinghouseUnavailable(f"the clearinghouse location could not be used: {exc}",
                                       "check [x12] outbound / inbound and the connection, then try again "
                                       "(chargebridge eligibility)") from None


def _check_day(store: Store, cfg: Any, secret: str, day: str | date, *, ask_payer: bool = True,
               when: datetime | None = None) -> dict[str, Any]:
    """One eligibility run for ``day``: read the 271s waiting in ``[x12] inbound``, then (unless
    ``ask_payer`` is false) send the 270 for the day's visits not answered yet. ``secret``: the
    SFTP password / key passphrase ("" for folders). In test mode (``[mode] test``) the 270 says
    ISA15 = T whatever ``[x12] usage`` says: an inquiry bills nothing, but it is marked as test
    data until go-live. Returns ``{"day", "asked": AskResult, "read": ReadResult}`` as dicts."""
    d = _day(day)
    settings = settings_of(cfg)
    if getattr(getattr(cfg, "mode", None), "test", False):
        settings = Settings(settings.provider, settings.sender_id, settings.receiver_id, "T")
    x12 = cfg.x12
    timeout = float(getattr(getattr(cfg, "rcm", None), "timeout_seconds", 30.0) or 30.0)
    read = ReadResult()
    if str(getattr(x12, "inbound", "")).strip():
        inbound = _transport(x12, "inbound", secret, timeout)
        try:
            read = read_answers(store, inbound)
        finally:
            _close(inbound)
    asked = AskResult(day=d)
    if ask_payer:
        if not str(getattr(x12, "outbound", "")).strip():
            raise ConfigError("eligibility needs the clearinghouse's outbound location",
                              "set [x12] outbound (a folder path or sftp://user@host:port/dir)", key="x12.outbound")
        from agent.claims import StoreLedger

        outbound = _transport(x12, "outbound", secret, timeout)
        try:
            asked = ask(store, settings, d, outbound=outbound, ledger=StoreLedger(lambda: _Unclosed(store)),  # type: ignore[arg-type,return-value]
                        when=when)
        finally:
            _close(outbound)
    return {"day": d, "asked": asked.to_dict(), "read": read.to_dict()}


def _close(transport: Any) -> None:
    close = getattr(transport, "close", None)
    if callable(close):
        close()


def day_to_ask(today: date, clinic_days: set[int]) -> date | None:
    """The evening job's day: on a clinic day, the next clinic day (Friday evening asks about
    Monday when the practice is closed at the weekend); on a day the practice is closed, none —
    so a weekend does not send the same inquiry again."""
    if today.weekday() not in clinic_days:
        return None
    for n in range(1, 8):
        d = date.fromordinal(today.toordinal() + n)
        if d.weekday() in clinic_days:
            return d
    return None


def visits(store: Store, day: str | date) -> list[dict[str, Any]]:
    """Every scheduled visit of ``day`` with its latest eligibility answer (``status`` None: not
    asked yet), for the front desk: MRN and appointment id, no names."""
    d = _day(day)
    answers = {r["visit"]: r for r in listing(store, d)}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for eid, key, mrn in store.conn.execute(
            "SELECT id, business_key, mrn FROM encounters WHERE kind = ? AND dos = ? AND state = ? ORDER BY id",
            (EncounterKind.EXPECTED, d, EncounterState.EXPECTED)):
        a = answers.get(str(key), {})
        seen.add(str(key))
        out.append(_item(str(key), int(eid), str(mrn), d, a))
    for key, a in answers.items():  # asked about, since seen (arrived as a charge) or cancelled
        if key not in seen:
            out.append(_item(key, None, str(a.get("mrn", "")), d, a))
    return out


def _item(key: str, eid: int | None, mrn: str, d: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"visit": key, "appointment": key.split("|", 2)[-1], "encounter_id": eid, "mrn": mrn, "dos": d,
            "status": a.get("status"), "plan": a.get("plan", ""), "copay": a.get("copay", ""),
            "checked_at": a.get("checked_at") or "", "reasons": a.get("reasons", [])}


def summary(store: Store, today: date | None = None) -> dict[str, int]:
    """Counts of upcoming visits (today on) whose latest answer is not ``active``, by status —
    the status payload's ``eligibility`` (the tray and the Activity page show it)."""
    t = (today or date.today()).isoformat()
    try:
        rows = store.conn.execute(
            "SELECT e.status, count(*) FROM eligibility e WHERE e.dos >= ? AND e.id = (SELECT max(id) FROM "
            "eligibility e2 WHERE e2.business_key = e.business_key AND e2.dos = e.dos) AND e.status != ? "
            "GROUP BY e.status", (t, EligibilityStatus.ACTIVE)).fetchall()
    except Exception:  # a store from before migration 12
        return {}
    return {str(s): int(n) for s, n in rows}
