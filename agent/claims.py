"""The claim lifecycle: what happened to each delivered claim at the clearinghouse and the payer.

A claim is born when sync delivers an encounter (:func:`record_delivery`, in the same
transaction as the outbox update) with state ``submitted``. Answers move it:

=========================  ==========================================================
answer                     effect
=========================  ==========================================================
999 (file acknowledgment)  every claim of the acknowledged group: accepted / rejected
277CA (claim ack)          that claim: accepted / rejected (STC codes kept)
835 (remittance)           paid / partially_paid / denied with CARC/RARC codes, amounts
FHIR ClaimResponse         the same, from the RCM's adjudication
=========================  ==========================================================

An answer never moves a claim back to an earlier stage (a late 999 after the 835 changes
nothing), a re-submission (correction, resend) starts the claim's stages again, and the same
answer applied twice changes nothing (each is kept once, by fingerprint). An answer that
matches no claim is kept and listed (:func:`unmatched`), never dropped. A rejected or denied
claim opens a mismatch-queue finding with its reasons, where a manager corrects and resends.

Amounts are decimal text, as everywhere in the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from agent.store import Store, now
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState, FindingKind, FindingStatus

__all__ = ["Answer", "ApplyResult", "Reason", "StoreLedger", "apply_answers", "get_claim", "list_claims",
           "open_claims", "record_delivery", "unmatched"]


@dataclass
class ApplyResult:
    counts: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in AnswerKind})
    matched: int = 0
    unmatched: int = 0
    duplicates: int = 0
    changed: list[str] = field(default_factory=list)  # claim ids whose state changed

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts, "matched": self.matched, "unmatched": self.unmatched,
                "duplicates": self.duplicates}


def _reasons(ans: Answer) -> list[dict[str, str]]:
    """The answer's reasons as plain dicts (``dataclasses.asdict`` deep-copies: 10x slower)."""
    return [{"kind": r.kind, "code": r.code, "group": r.group, "amount": r.amount, "text": r.text}
            for r in ans.reasons]


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _money(value: Iterable[Any]) -> str:
    total = sum((Decimal(str(v)) for v in value if str(v) not in ("", "None")), Decimal(0))
    return f"{total:.2f}"


# -- birth --------------------------------------------------------------------------------------

def record_delivery(store: Store, *, encounter_id: int, version: int, claim_id: str, target: str,
                    remote_ids: dict[str, str], at: str | None = None, resubmit: bool = False) -> None:
    """Sync delivered ``encounter_id`` (``version``) as ``claim_id``: the claim is ``submitted``.
    Call inside the transaction that marks the outbox item delivered. A later version of the same
    claim (a correction, a resend) counts as a re-submission and starts its stages again."""
    if not claim_id:
        return
    ts = at or now()
    conn = store.conn
    row = conn.execute("SELECT data FROM encounters WHERE id = ?", (encounter_id,)).fetchone()
    data = json.loads(row[0]) if row else {}
    lines = data.get("lines") or []
    billed = _money(Decimal(str(ln.get("unit_charge") or 0)) * Decimal(str(ln.get("units") or 1)) for ln in lines)
    coverages = data.get("coverages") or []
    payer = (coverages[0].get("payer_id") or coverages[0].get("payer_name") or "") if coverages else ""
    npi = (data.get("rendering") or {}).get("npi", "")
    dos = data.get("dos_start", "")
    control = json.dumps({k: v for k, v in remote_ids.items() if isinstance(v, str)}, sort_keys=True)
    old = conn.execute("SELECT id, version FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
    if old is None:
        conn.execute(
            "INSERT INTO claims (claim_id, encounter_id, version, target, state, stage, dos, provider_npi, payer, "
            "billed, control, first_submitted_at, submitted_at, updated_at) VALUES (?,?,?,?,?,0,?,?,?,?,?,?,?,?)",
            (claim_id, encounter_id, version, target, ClaimState.SUBMITTED, dos, npi, payer, billed, control,
             ts, ts, ts))
        return
    if int(old[1]) == version and not resubmit:  # the same version again (a retried batch): nothing new
        conn.execute("UPDATE claims SET control = ?, updated_at = ? WHERE id = ?", (control, ts, old[0]))
        return
    conn.execute(
        "UPDATE claims SET encounter_id = ?, version = ?, target = ?, state = ?, stage = 0, dos = ?, "
        "provider_npi = ?, payer = ?, billed = ?, control = ?, submissions = submissions + 1, reasons = '[]', "
        "submitted_at = ?, updated_at = ? WHERE id = ?",
        (encounter_id, version, target, ClaimState.SUBMITTED, dos, npi, payer, billed, control, ts, ts, old[0]))


# -- answers ------------------------------------------------------------------------------------

def apply_answers(store: Store, answers: Iterable[Answer]) -> ApplyResult:
    """Apply answers in one transaction; see the module text for the rules."""
    res = ApplyResult()
    conn = store.conn
    with store.tx():
        for ans in answers:
            kind = AnswerKind(ans.kind)
            res.counts[kind.value] += 1
            if conn.execute("SELECT 1 FROM claim_answers WHERE fingerprint = ?", (ans.fingerprint,)).fetchone():
                res.duplicates += 1
                continue
            targets = _match(store, ans)
            reasons = _reasons(ans)
            detail = {**ans.detail, "reasons": reasons,
                      **{k: v for k, v in (("paid", ans.paid), ("adjusted", ans.adjusted),
                                           ("patient_resp", ans.patient_resp),
                                           ("payer_claim_id", ans.payer_claim_id),
                                           ("group_control", ans.group_control)) if v}}
            ts = now()
            if not targets:
                res.unmatched += 1
                conn.execute("INSERT INTO claim_answers (fingerprint, kind, claim_ref, claim, state, detail, "
                             "answered_on, received_at) VALUES (?,?,?,NULL,?,?,?,?)",
                             (ans.fingerprint, kind, ans.claim_ref or ans.group_control, ans.state or "",
                              json.dumps(detail), ans.answered_on, ts))
                continue
            res.matched += 1
            for cid in targets:
                conn.execute("INSERT INTO claim_answers (fingerprint, kind, claim_ref, claim, state, detail, "
                             "answered_on, received_at) VALUES (?,?,?,?,?,?,?,?)",
                             (ans.fingerprint if cid == targets[0] else fingerprint(ans.fingerprint, str(cid)),
                              kind, ans.claim_ref or ans.group_control, cid, ans.state or "", json.dumps(detail),
                              ans.answered_on, ts))
                changed = _move(store, cid, kind, ans, ts, reasons)
                if changed:
                    res.changed.append(changed)
    return res


def _match(store: Store, ans: Answer) -> list[int]:
    conn = store.conn
    if ans.claim_ref:
        row = conn.execute("SELECT id FROM claims WHERE claim_id = ?", (ans.claim_ref,)).fetchone()
        return [int(row[0])] if row else []
    if ans.group_control:
        st = str(ans.detail.get("acknowledged_set") or "")
        if st:  # a partly accepted group: this answer is about one transaction set of it
            rows = conn.execute("SELECT id FROM claims WHERE json_extract(control, '$.gs') = ? AND "
                                "json_extract(control, '$.st') = ? ORDER BY id", (ans.group_control, st)).fetchall()
        else:
            rows = conn.execute("SELECT id FROM claims WHERE json_extract(control, '$.gs') = ? ORDER BY id",
                                (ans.group_control,)).fetchall()
        return [int(r[0]) for r in rows]
    return []


def _move(store: Store, cid: int, kind: AnswerKind, ans: Answer, ts: str,
          reasons: list[dict[str, str]]) -> str | None:
    """Apply one answer to one claim; the claim id when its state changed."""
    conn = store.conn
    claim_id, state, stage, answered_at, accepted_at = conn.execute(
        "SELECT claim_id, state, stage, answered_at, accepted_at FROM claims WHERE id = ?", (cid,)).fetchone()
    sets: dict[str, Any] = {"updated_at": ts}
    if not answered_at:
        sets["answered_at"] = ans.answered_on or ts
    if ans.payer_claim_id:
        sets["payer_claim_id"] = ans.payer_claim_id
    new_state = ans.state
    if new_state is None or kind.rank < int(stage):
        # an earlier stage's answer (a late 999): kept in claim_answers, the state stays
        conn.execute(f"UPDATE claims SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                     [*sets.values(), cid])
        return None
    sets["state"] = new_state
    sets["stage"] = kind.rank
    if new_state == ClaimState.ACCEPTED and not accepted_at:
        sets["accepted_at"] = ans.answered_on or ts
    if kind.rank >= 3:
        for col in ("paid", "adjusted", "patient_resp"):
            val = getattr(ans, col)
            if val is not None:
                sets[col] = _money([val])
        if ans.answered_on:
            sets["adjudicated_on"] = ans.answered_on
    if ans.reasons or new_state in (ClaimState.REJECTED, ClaimState.DENIED, ClaimState.PAID):
        sets["reasons"] = json.dumps(reasons)
    conn.execute(f"UPDATE claims SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                 [*sets.values(), cid])
    if new_state in (ClaimState.REJECTED, ClaimState.DENIED):
        _open_finding(store, cid, claim_id, ClaimState(new_state), ans, ts, reasons)
    return str(claim_id) if new_state != state else None


def _open_finding(store: Store, cid: int, claim_id: str, state: ClaimState, ans: Answer, ts: str,
                  reasons: list[dict[str, str]]) -> None:
    """A rejected / denied claim waits in the mismatch queue, once per submission."""
    conn = store.conn
    enc_id, submissions, dos, remote = conn.execute(
        "SELECT encounter_id, submissions, dos, payer_claim_id FROM claims WHERE id = ?", (cid,)).fetchone()
    kind = FindingKind.CLAIM_REJECTED if state == ClaimState.REJECTED else FindingKind.CLAIM_DENIED
    fp = f"{kind}:{claim_id}:{submissions}"
    conn.execute(
        "INSERT INTO findings (fingerprint, kind, encounter_id, remote_id, dos, remote, diff, status, first_seen, "
        "last_seen) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(fingerprint) DO UPDATE SET "
        "last_seen = excluded.last_seen, remote = excluded.remote, diff = excluded.diff",
        (fp, kind, enc_id, remote or claim_id, dos,
         json.dumps({"claim_id": claim_id, "answer": ans.kind.value, "state": state.value}),
         json.dumps(reasons), FindingStatus.OPEN, ts, ts))


# -- reading ------------------------------------------------------------------------------------

_COLUMNS = ("claim_id", "encounter_id", "version", "target", "state", "dos", "provider_npi", "payer", "billed",
            "paid", "adjusted", "patient_resp", "payer_claim_id", "control", "submissions", "reasons",
            "first_submitted_at", "submitted_at", "answered_at", "accepted_at", "adjudicated_on", "updated_at")

Describe = Callable[[str, str], str]  # (kind, code) -> description, "" when unknown


def _row(r: tuple[Any, ...], describe: Describe | None) -> dict[str, Any]:
    d = dict(zip(_COLUMNS, r, strict=True))
    d["control"] = json.loads(d["control"])
    reasons = json.loads(d["reasons"])
    if describe:
        for rs in reasons:
            rs["text"] = rs.get("text") or describe(rs.get("kind", ""), rs.get("code", ""))
    d["reasons"] = reasons
    return d


def list_claims(store: Store, *, state: str | None = None, limit: int = 100, offset: int = 0,
                describe: Describe | None = None, states: Iterable[str] = (), reason: str = "", age_sql: str = "",
                lag_days: tuple[int | None, int | None] | None = None, dos_from: date | None = None,
                dos_to: date | None = None, provider: str = "", payer: str = "",
                today: date | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(total, one page of claims, newest first). The filters (H15) open exactly the claims behind a
    KPI figure: ``states`` (any of), ``reason`` (a reason code on the claim, ``16`` or ``CO-16``;
    RARCs left out, as the denial-reason table does), ``age_sql`` (an A/R bucket's condition as
    :func:`agent.kpi.ar_bucket_sql` gives it, ``:today`` filled from ``today``), ``lag_days`` (a
    charge-lag bucket's (lo, hi) days, either None for open), ``dos_from`` / ``dos_to`` (dates of
    service, both included), ``provider`` (rendering NPI), ``payer``. :mod:`agent.claim_filters`
    turns bucket labels into these (agent.kpi is not imported here: it would close an import circle)."""
    where, args = _claim_filter(state=state, states=states, reason=reason, age_sql=age_sql, lag_days=lag_days,
                                dos_from=dos_from, dos_to=dos_to, provider=provider, payer=payer, today=today)
    total = store.conn.execute(f"SELECT count(*) FROM claims c {where}", args).fetchone()[0]
    rows = store.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM claims c {where} "
                              "ORDER BY id DESC LIMIT :limit OFFSET :offset",
                              {**args, "limit": limit, "offset": offset}).fetchall()
    return int(total), [_row(r, describe) for r in rows]


def _claim_filter(*, state: str | None, states: Iterable[str], reason: str, age_sql: str,
                  lag_days: tuple[int | None, int | None] | None, dos_from: date | None, dos_to: date | None,
                  provider: str, payer: str, today: date | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (claims alias ``c``) and named arguments of :func:`list_claims`' filters."""
    conds: list[str] = []
    args: dict[str, Any] = {}
    wanted = [*([state] if state else []), *states]
    if wanted:
        conds.append("c.state IN (" + ", ".join(f":s{i}" for i in range(len(wanted))) + ")")
        args.update({f"s{i}": str(s) for i, s in enumerate(wanted)})
    if reason:
        group, _, code = reason.rpartition("-")
        args["r_code"] = code
        conds.append("EXISTS (SELECT 1 FROM json_each(c.reasons) r WHERE json_extract(r.value, '$.code') = :r_code "
                     "AND coalesce(json_extract(r.value, '$.kind'), '') != 'rarc'"
                     + (" AND json_extract(r.value, '$.group') = :r_group" if group else "") + ")")
        if group:
            args["r_group"] = group
    if age_sql:
        conds.append(f"({age_sql})")
        args["today"] = (today or date.today()).toordinal() - date(1970, 1, 1).toordinal()
    if lag_days is not None:
        lo, hi = lag_days
        days = "max(0, c.sub_day - c.dos_day)"  # NULL when a date is unreadable: in no bucket, as the KPI
        conds += [f"{days} >= {int(lo)}"] if lo is not None else [f"{days} IS NOT NULL"]
        conds += [f"{days} <= {int(hi)}"] if hi is not None else []
    if dos_from:
        conds.append("c.dos >= :dos_lo")
        args["dos_lo"] = dos_from.isoformat()
    if dos_to:  # exclusive upper bound: a DOS with a time part still falls in its day
        conds.append("c.dos < :dos_hi")
        args["dos_hi"] = (dos_to + timedelta(days=1)).isoformat()
    for col, v in (("provider_npi", provider), ("payer", payer)):
        if v:
            conds.append(f"c.{col} = :{col}")
            args[col] = v
    return ("WHERE " + " AND ".join(conds)) if conds else "", args


def get_claim(store: Store, claim_id: str, *, describe: Describe | None = None) -> dict[str, Any] | None:
    """One claim with every answer it received (oldest first)."""
    r = store.conn.execute(f"SELECT {', '.join(_COLUMNS)}, id FROM claims WHERE claim_id = ?",
                           (claim_id,)).fetchone()
    if r is None:
        return None
    d = _row(r[:-1], describe)
    d["answers"] = [{"kind": k, "state": s, "answered_on": a, "received_at": t, "detail": json.loads(x)}
                    for k, s, a, t, x in store.conn.execute(
                        "SELECT kind, state, answered_on, received_at, detail FROM claim_answers WHERE claim = ? "
                        "ORDER BY id", (r[-1],))]
    return d


def unmatched(store: Store, *, limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Answers that matched no claim: kept, listed, never dropped."""
    total = store.conn.execute("SELECT count(*) FROM claim_answers WHERE claim IS NULL").fetchone()[0]
    rows = store.conn.execute("SELECT id, kind, claim_ref, state, answered_on, received_at, detail FROM "
                              "claim_answers WHERE claim IS NULL ORDER BY id LIMIT ? OFFSET ?",
                              (limit, offset)).fetchall()
    return int(total), [{"id": i, "kind": k, "claim_ref": c, "state": s, "answered_on": a, "received_at": t,
                         "detail": json.loads(x)} for i, k, c, s, a, t, x in rows]


def open_claims(store: Store, target: str, *, limit: int = 1000) -> list[tuple[str, dict[str, str]]]:
    """(claim id, the delivery's remote ids) of ``target``'s claims still waiting for a final
    answer — what an outcome poll (FHIR ClaimResponse) asks about."""
    rows = store.conn.execute("SELECT claim_id, control FROM claims WHERE target = ? AND state IN (?, ?) "
                              "ORDER BY id LIMIT ?", (target, ClaimState.SUBMITTED, ClaimState.ACCEPTED,
                                                      limit)).fetchall()
    return [(c, json.loads(x)) for c, x in rows]


# -- X12 interchange control numbers ------------------------------------------------------------

class StoreLedger:
    """:class:`connectors.rcm.base.ControlLedger` over the store: ``open_store`` gives a store
    to use for one call (closed afterwards), so the ledger works from any thread."""

    FIRST = 1  # ISA13 is 9 digits, 000000001 .. 999999999

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store

    def interchange(self, batch_key: str, kind: str) -> int:
        store = self._open()
        try:
            with store.tx():
                row = store.conn.execute("SELECT control FROM x12_interchanges WHERE batch_key = ?",
                                         (batch_key,)).fetchone()
                if row:
                    return int(row[0])
                last = store.conn.execute("SELECT max(control) FROM x12_interchanges").fetchone()[0]
                control = int(last or self.FIRST - 1) + 1
                if control > 999_999_999:
                    raise RuntimeError("X12 interchange control numbers are exhausted")
                store.conn.execute("INSERT INTO x12_interchanges (control, batch_key, kind, created_at) "
                                   "VALUES (?,?,?,?)", (control, batch_key, kind, now()))
                return control
        finally:
            store.close()

    def payer_claim_id(self, claim_id: str) -> str:
        """The payer's number for our claim (835 CLP07 / 277CA REF*1K), "" when none came yet:
        a correction (frequency 7) or void (8) references it in REF*F8."""
        store = self._open()
        try:
            row = store.conn.execute("SELECT payer_claim_id FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
            return str(row[0]) if row and row[0] else ""
        finally:
            store.close()

    def sent(self, control: int, file_name: str) -> None:
        store = self._open()
        try:
            with store.tx():
                store.conn.execute("UPDATE x12_interchanges SET sent_at = ?, file_name = ? WHERE control = ?",
                                   (now(), file_name, control))
        finally:
            store.close()
