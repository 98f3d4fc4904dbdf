"""The coder review queue: encounters the rules (or validation) hold in ``needs_review``.

A coder (role ``coder`` or above) approves an encounter (it becomes ``ready`` and goes out with
the next sync), edits a charge line (code, modifiers, units, diagnosis pointers; the rules run
again on the edited encounter), or rejects it with a reason (``rejected``: never billed unless the
EHR re-exports it). Every decision and edit is in the audit trail with the encounter's
before/after hashes (never its content), and approvals and rejections are kept in ``reviews``,
tied to the content they were made on: a re-export that changes the encounter needs a new review.

Approval overrides rule findings (a coder's judgement) but not validation errors: a claim with no
NPI or an unreadable unit count would be refused by the RCM, so those are fixed first.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent import audit
from agent.repos import RULE_FINDINGS, merge_findings
from agent.rules import EncounterFacts, RuleSet
from agent.rules.apply import evaluate, store_one
from agent.rules.history import read_history
from agent.store import Store, now
from agent.validate import CPT_RE, HCPCS_RE, MAX_MODIFIERS, MAX_POINTERS, MODIFIER_RE, validate
from core.errors import ChargeBridgeError, Conflict, NotFound
from core.model import MAX_UNITS, UNITS_PLACES, BadValue, Encounter, content_hash, read_decimal, units_text
from core.states import EncounterKind, EncounterState, OutboxState

MAX_REASON = 500
_SPACE = re.compile(r"\s+")


class BadEdit(ChargeBridgeError):
    http_status = 422


def _row(store: Store, eid: int) -> tuple[Encounter, dict[str, Any]]:
    r = store.conn.execute(
        "SELECT id, kind, state, data, findings, content_hash, version, dos, source, source_id, "
        f"{RULE_FINDINGS.format(e='encounters')} FROM encounters WHERE id = ?", (eid,)).fetchone()
    if r is None:
        raise NotFound(f"there is no encounter {eid}", "reload the review queue")
    meta = {"id": int(r[0]), "kind": r[1], "state": r[2], "findings": merge_findings(r[4], r[10]),
            "content_hash": r[5],
            "version": int(r[6]), "dos": r[7], "source": r[8], "source_id": r[9]}
    return Encounter.from_dict(json.loads(r[3])), meta


def _item(enc: Encounter, meta: dict[str, Any]) -> dict[str, Any]:
    """An encounter as the review queue shows it: findings next to the lines they are about."""
    findings = meta["findings"]
    by_line: dict[int, list[dict[str, Any]]] = {}
    general: list[dict[str, Any]] = []
    for f in findings:
        m = re.match(r"lines\[(\d+)\]", f.get("field", ""))
        line = f.get("line", -1) if f.get("line", -1) >= 0 else int(m.group(1)) if m else -1
        (by_line.setdefault(line, []) if line >= 0 else general).append(f)
    p = enc.patient
    return {
        "id": meta["id"], "state": meta["state"], "version": meta["version"], "dos": meta["dos"],
        "source": meta["source"], "source_id": meta["source_id"], "mrn": p.mrn,
        "patient": ", ".join(x for x in (p.family, p.given) if x), "sex": p.sex, "dob": p.dob,
        "place_of_service": enc.place_of_service,
        "payer": next((c.payer_name for c in enc.coverages if c.payer_name), ""),
        "diagnoses": [d.code for d in enc.diagnoses],
        "lines": [{"index": i, "code": ln.code, "code_system": ln.code_system, "modifiers": list(ln.modifiers),
                   "units": ln.units, "dx_pointers": list(ln.dx_pointers), "unit_charge": ln.unit_charge,
                   "findings": by_line.get(i, [])} for i, ln in enumerate(enc.lines)],
        "findings": general,
        "holding": sum(1 for f in findings if f.get("severity") in ("error", "review")),
    }


def queue(store: Store, *, page: int, page_size: int) -> dict[str, Any]:
    conn = store.conn
    total = conn.execute("SELECT count(*) FROM encounters WHERE state = ? AND kind = ?",
                         (EncounterState.NEEDS_REVIEW, EncounterKind.CHARGE)).fetchone()[0]
    ids = [int(r[0]) for r in conn.execute(
        "SELECT id FROM encounters WHERE state = ? AND kind = ? ORDER BY dos, id LIMIT ? OFFSET ?",
        (EncounterState.NEEDS_REVIEW, EncounterKind.CHARGE, page_size, (page - 1) * page_size))]
    return {"total": int(total), "page": page, "page_size": page_size, "items": [detail(store, i) for i in ids]}


def detail(store: Store, eid: int) -> dict[str, Any]:
    enc, meta = _row(store, eid)
    return _item(enc, meta)


def opportunities(store: Store, *, page: int, page_size: int) -> dict[str, Any]:
    """Care-opportunity suggestions on encounters (never billed), newest visit first."""
    sql = ("FROM encounter_rules r JOIN encounters e ON e.id = r.encounter_id, json_each(r.findings) j "
           "JOIN rule_texts t ON t.id = j.value WHERE json_extract(t.body, '$.kind') = 'opportunity'")
    total = store.conn.execute(f"SELECT count(*) {sql}").fetchone()[0]
    items = [{"encounter_id": int(eid), "dos": dos, "mrn": mrn, "rule": rule, "message": msg, "fix": fix or "",
              "rule_version": ver or ""}
             for eid, dos, mrn, rule, msg, fix, ver in store.conn.execute(
                 "SELECT e.id, e.dos, e.mrn, json_extract(t.body, '$.code'), json_extract(t.body, '$.message'), "
                 f"json_extract(t.body, '$.fix'), json_extract(t.body, '$.rule_version') {sql} "
                 "ORDER BY e.dos DESC, e.id DESC LIMIT ? OFFSET ?", (page_size, (page - 1) * page_size))]
    return {"total": int(total), "page": page, "page_size": page_size, "items": items}


def _sent(store: Store, eid: int, version: int) -> bool:
    row = store.conn.execute("SELECT state FROM outbox WHERE encounter_id = ? AND version = ?",
                             (eid, version)).fetchone()
    return row is not None and row[0] in (OutboxState.SENDING, OutboxState.DELIVERED, OutboxState.REJECTED)


def _pending(meta: dict[str, Any]) -> None:
    if meta["kind"] != EncounterKind.CHARGE or meta["state"] != EncounterState.NEEDS_REVIEW:
        raise Conflict(f"encounter {meta['id']} is {meta['state']}, not waiting for review",
                       "reload the review queue; only encounters that need review can be approved, edited or rejected")


def _decide(store: Store, meta: dict[str, Any], decision: str, reason: str, actor: str, state: str) -> None:
    conn = store.conn
    conn.execute("INSERT INTO reviews (encounter_id, version, content_hash, decision, reason, actor, at) "
                 "VALUES (?,?,?,?,?,?,?)", (meta["id"], meta["version"], meta["content_hash"], decision, reason,
                                            actor, now()))
    conn.execute("UPDATE encounters SET state = ?, updated_at = ? WHERE id = ?", (state, now(), meta["id"]))
    store.event(f"encounter.{decision}", encounter_id=meta["id"], detail={"state": state})


def approve(store: Store, eid: int, *, actor: str, note: str = "") -> dict[str, Any]:
    with store.tx():
        meta = _row(store, eid)[1]
        _pending(meta)
        blocking = sorted({f["code"] for f in meta["findings"]
                           if f.get("severity") == "error" and "rule_version" not in f})
        if blocking:
            raise Conflict(f"encounter {eid} has validation errors the billing system would refuse "
                           f"({', '.join(blocking)})", "fix them first (edit the line, or correct the EHR and "
                           "export again); a coder can approve over rule findings, not over these")
        overridden = sorted({f["code"] for f in meta["findings"] if "rule_version" in f
                             and f.get("severity") in ("error", "review")})
        note = _SPACE.sub(" ", note).strip()[:MAX_REASON]
        _decide(store, meta, "approved", note, actor, EncounterState.READY)
        audit.record(store, actor=actor, action="review.approve", target=f"encounter:{eid}",
                     before=meta["content_hash"], after=meta["content_hash"],
                     detail={"version": meta["version"], "overridden": overridden})
    return {"id": eid, "state": EncounterState.READY, "version": meta["version"]}


def reject(store: Store, eid: int, *, actor: str, reason: str) -> dict[str, Any]:
    reason = _SPACE.sub(" ", reason or "").strip()
    if not reason:
        raise BadEdit("a rejection needs a reason", "say why it is not billed (e.g. duplicate visit)", key="reason")
    if len(reason) > MAX_REASON:
        raise BadEdit(f"the reason is over {MAX_REASON} characters", "shorten it", key="reason")
    with store.tx():
        meta = _row(store, eid)[1]
        _pending(meta)
        _decide(store, meta, "rejected", reason, actor, EncounterState.REJECTED)
        # the reason is free text a person typed: the trail keeps its hash, not its words
        audit.record(store, actor=actor, action="review.reject", target=f"encounter:{eid}",
                     before=meta["content_hash"], after=meta["content_hash"],
                     detail={"version": meta["version"], "reason_sha256": content_hash(reason)})
    return {"id": eid, "state": EncounterState.REJECTED, "version": meta["version"]}


def edit_line(store: Store, rules: RuleSet | None, eid: int, index: int, change: dict[str, Any], *,
              actor: str) -> dict[str, Any]:
    """Change one charge line (any of code, modifiers, units, dx_pointers), re-check the encounter
    and store it as a new version; the audit entry holds the before/after content hashes."""
    with store.tx():
        enc, meta = _row(store, eid)
        _pending(meta)
        if _sent(store, eid, meta["version"]):
            raise Conflict(f"encounter {eid} was already sent", "change it in the billing system")
        if not 0 <= index < len(enc.lines):
            raise NotFound(f"encounter {eid} has no line {index}", "reload the encounter", key="index")
        ln = enc.lines[index]
        before = enc.to_json()
        changed = _apply(enc, ln, change)
        if not changed:
            return detail(store, eid)
        after = enc.to_json()
        new_hash = content_hash(after)
        stored = [d for d in meta["findings"] if "rule_version" not in d]
        # validation again on the edited encounter: its old line findings may be fixed now
        fresh = [f.to_dict() for f in validate(enc)]
        history = read_history(store, {enc.patient.mrn})
        base = [*fresh, *(d for d in stored if d.get("code") in ("date.format",))]
        if rules is not None:  # a validation finding a rule owns yields to the rule, as at ingest
            base = [d for d in base if d.get("code") not in rules.owned]
        facts = EncounterFacts.of(enc) if rules is not None else None
        ruled = evaluate(rules, facts, history) if facts is not None else []
        base_holds = any(d.get("severity") in ("error", "review") for d in base)
        held = base_holds or any(d.get("severity") in ("error", "review") for d in ruled)
        state = EncounterState.NEEDS_REVIEW if held else EncounterState.READY
        version = meta["version"] + 1
        store.conn.execute("UPDATE encounters SET data = ?, findings = ?, content_hash = ?, version = ?, state = ?, "
                           "updated_at = ? WHERE id = ?",
                           (after, json.dumps(base), new_hash, version, state, now(), eid))
        store_one(store, eid, facts, new_hash, ruled, base_holds)
        store.event("encounter.edited", encounter_id=eid, detail={"line": index, "fields": changed,
                                                                 "version": version, "state": state})
        audit.record(store, actor=actor, action="review.edit", target=f"encounter:{eid}",
                     before=content_hash(before), after=new_hash,
                     detail={"line": index, "fields": changed, "version": version})
    return detail(store, eid)


def _apply(enc: Encounter, ln: Any, change: dict[str, Any]) -> list[str]:
    changed = []
    if change.get("code") is not None:
        code = str(change["code"]).strip().upper()
        if not (CPT_RE.match(code) or HCPCS_RE.match(code)):
            raise BadEdit("the code is not a CPT or HCPCS Level II code", "5 characters, e.g. 99213 or G0439",
                          key="code")
        if code != ln.code:
            ln.code, ln.code_system = code, "HCPCS" if HCPCS_RE.match(code) else "CPT"
            changed.append("code")
    if change.get("modifiers") is not None:
        mods = [str(m).strip().upper() for m in change["modifiers"] if str(m).strip()]
        if len(mods) > MAX_MODIFIERS or not all(MODIFIER_RE.match(m) for m in mods):
            raise BadEdit(f"modifiers are up to {MAX_MODIFIERS} codes of 2 letters/digits", "e.g. 25, 59, XS",
                          key="modifiers")
        if mods != ln.modifiers:
            ln.modifiers = mods
            changed.append("modifiers")
    if change.get("units") is not None:
        try:
            units = read_decimal(str(change["units"]), limit=MAX_UNITS, places=UNITS_PLACES, what="units")
        except BadValue as exc:
            raise BadEdit(str(exc), f"a number above 0 and at most {MAX_UNITS:,}", key="units") from None
        if units <= 0:
            raise BadEdit("units must be greater than 0", "e.g. 1", key="units")
        text = units_text(units)
        if text != ln.units:
            ln.units = text
            changed.append("units")
    if change.get("dx_pointers") is not None:
        ptrs = list(change["dx_pointers"])
        if len(ptrs) > MAX_POINTERS or not all(isinstance(p, int) and 1 <= p <= len(enc.diagnoses) for p in ptrs):
            raise BadEdit(f"diagnosis pointers are up to {MAX_POINTERS} numbers from 1 to {len(enc.diagnoses)}",
                          "point at the encounter's diagnoses by position", key="dx_pointers")
        if ptrs != ln.dx_pointers:
            ln.dx_pointers = ptrs
            changed.append("dx_pointers")
    return changed
