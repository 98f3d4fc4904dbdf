"""The mismatch queue: list findings, and resolve them — resend, accept the RCM's version, ignore.

Every resolution is written to the audit trail in the same transaction as the change it makes.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from agent import audit, claims
from agent.store import Store, now
from connectors.rcm.base import Target
from core.model import ChargeLine, Diagnosis, Encounter, content_hash
from core.states import FindingKind, FindingStatus, OutboxState, ResolveAction

RESEND, ACCEPT_RCM, IGNORE = ResolveAction.RESEND, ResolveAction.ACCEPT_RCM, ResolveAction.IGNORE
ALLOWED: dict[str, tuple[ResolveAction, ...]] = {
    FindingKind.MISSING_IN_RCM: (RESEND, IGNORE),
    FindingKind.FIELD_MISMATCH: (RESEND, ACCEPT_RCM, IGNORE),
    FindingKind.ORPHAN_IN_RCM: (ACCEPT_RCM, IGNORE),
    FindingKind.MISSING_CHARGE: (IGNORE,),
    FindingKind.CLAIM_REJECTED: (RESEND, IGNORE),
    FindingKind.CLAIM_DENIED: (RESEND, IGNORE),
}


class ResolveError(Exception):
    """The action cannot be done; ``str()`` says why, for people."""


def list_findings(store: Store, *, status: str | None = FindingStatus.OPEN,
                  kind: str | None = None, limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
    """The mismatch queue on a local store, oldest first, with the actions allowed on each
    (``limit`` -1: all of them)."""
    from agent.repos import FindingRepo

    actions = {k: [a.value for a in acts] for k, acts in ALLOWED.items()}
    return FindingRepo(store.conn).all(status=status, kind=kind, actions=actions, limit=limit, offset=offset)


def comment(store: Store, finding_id: int, *, actor: str, text: str, assignee: str | None = None) -> None:
    with store.tx():
        row = store.conn.execute("SELECT comments FROM findings WHERE id = ?", (finding_id,)).fetchone()
        if row is None:
            raise ResolveError(f"no mismatch {finding_id}")
        comments = [*json.loads(row[0]), {"at": now(), "by": actor, "text": text}]
        store.conn.execute("UPDATE findings SET comments = ? WHERE id = ?", (json.dumps(comments), finding_id))
        if assignee is not None:
            store.conn.execute("UPDATE findings SET assignee = ? WHERE id = ?", (assignee, finding_id))
        audit.record(store, actor=actor, action="mismatch.comment", target=f"finding:{finding_id}",
                     detail={"assignee": assignee or ""})


def resolve(store: Store, target: Target | None, finding_id: int, action: str, *, actor: str,
            reason: str = "") -> dict[str, Any]:
    row = store.conn.execute("SELECT kind, encounter_id, remote_id, status, remote FROM findings WHERE id = ?",
                             (finding_id,)).fetchone()
    if row is None:
        raise ResolveError(f"no mismatch {finding_id}; list them with chargebridge mismatches")
    kind, enc_id, remote_id, status, remote_json = row
    if status != FindingStatus.OPEN:
        raise ResolveError(f"mismatch {finding_id} is {status}, not open")
    if action not in ALLOWED.get(kind, ()):
        raise ResolveError(f"'{action}' does not apply to a {kind.replace('_', ' ')} finding; "
                           f"use one of: {', '.join(ALLOWED.get(kind, ()))}")
    if action == IGNORE:
        if not reason.strip():
            raise ResolveError("ignoring a mismatch needs a reason (e.g. --reason \"not billable\")")
        _close(store, finding_id, FindingStatus.IGNORED, f"ignored: {reason.strip()}", actor, action, enc_id)
        return {"id": finding_id, "status": FindingStatus.IGNORED.value}
    if action == RESEND:
        if target is None:
            raise ResolveError("no RCM is configured, so nothing can be re-sent")
        enc = _encounter(store, enc_id)
        # a denied claim is corrected (it exists at the payer); a rejected one never got there
        corrects = kind in (FindingKind.FIELD_MISMATCH, FindingKind.CLAIM_DENIED)
        corrections = {enc.business_key: remote_id} if corrects and remote_id else None
        result = target.push([enc], corrections=corrections)[0]
        if not result.delivered:
            raise ResolveError(f"the RCM refused the corrected claim: {result.reason}")
        _mark_delivered(store, enc_id, result.remote_ids,
                        claim=(target.identifier(enc), target.name, kind in _CLAIM_KINDS))
        _close(store, finding_id, FindingStatus.RESOLVED,
               "re-sent the EHR version" + (" as a correction" if corrections else ""),
               actor, action, enc_id, extra=result.remote_ids)
        return {"id": finding_id, "status": FindingStatus.RESOLVED.value, "remote_ids": result.remote_ids}
    # accept-rcm
    if kind == FindingKind.ORPHAN_IN_RCM:
        _close(store, finding_id, FindingStatus.RESOLVED,
               "accepted as billed by the RCM" + (f": {reason}" if reason else ""), actor, action, None)
        return {"id": finding_id, "status": FindingStatus.RESOLVED.value}
    _accept_remote(store, enc_id, json.loads(remote_json), actor=actor)
    _close(store, finding_id, FindingStatus.RESOLVED, "took the RCM's values locally", actor, action, enc_id)
    return {"id": finding_id, "status": FindingStatus.RESOLVED.value}


def _encounter(store: Store, enc_id: int) -> Encounter:
    row = store.conn.execute("SELECT data FROM encounters WHERE id = ?", (enc_id,)).fetchone()
    if row is None:
        raise ResolveError(f"encounter {enc_id} no longer exists")
    return Encounter.from_dict(json.loads(row[0]))


def _close(store: Store, finding_id: int, status: str, resolution: str, actor: str, action: str,
           enc_id: int | None, extra: dict[str, str] | None = None) -> None:
    with store.tx():
        before = store.conn.execute("SELECT status, resolution FROM findings WHERE id = ?", (finding_id,)).fetchone()
        store.conn.execute("UPDATE findings SET status = ?, resolution = ?, resolved_by = ?, resolved_at = ? "
                           "WHERE id = ?", (status, resolution, actor, now(), finding_id))
        audit.record(store, actor=actor, action=f"mismatch.{action}", target=f"finding:{finding_id}",
                     before=list(before), after=[status, resolution],
                     detail={"encounter_id": enc_id, "status": status, **(extra or {})})


_CLAIM_KINDS = (FindingKind.CLAIM_REJECTED, FindingKind.CLAIM_DENIED)


def _mark_delivered(store: Store, enc_id: int, remote_ids: dict[str, str],
                    claim: tuple[str, str, bool] | None = None) -> None:
    """The RCM now has this version: record it so sync does not send it again. ``claim``:
    (claim id, target name, re-submission) for the claim lifecycle."""
    ts = now()
    with store.tx():
        version = store.conn.execute("SELECT version FROM encounters WHERE id = ?", (enc_id,)).fetchone()[0]
        if claim is not None:
            claims.record_delivery(store, encounter_id=enc_id, version=int(version), claim_id=claim[0],
                                   target=claim[1], remote_ids=remote_ids, at=ts, resubmit=claim[2])
        store.conn.execute(
            "INSERT INTO outbox (encounter_id, version, state, next_attempt_at, remote_ids, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(encounter_id, version) DO UPDATE SET"
            " state = excluded.state, remote_ids = excluded.remote_ids, last_error = '',"
            " updated_at = excluded.updated_at",
            (enc_id, version, OutboxState.DELIVERED, ts, json.dumps(remote_ids), ts, ts))


def _accept_remote(store: Store, enc_id: int, remote: dict[str, Any], *, actor: str) -> None:
    """Rewrite the local encounter with the RCM's codes, units, charges, diagnoses and date."""

    enc = _encounter(store, enc_id)
    before = enc.to_dict()
    dx_codes = list(remote.get("diagnoses") or [d.code for d in enc.diagnoses])
    enc.diagnoses = [Diagnosis(code=c, system="ICD-10-CM") for c in dx_codes]
    enc.lines = [ChargeLine(code=ln["code"], code_system="HCPCS" if ln["code"][:1].isalpha() else "CPT",
                            modifiers=list(ln.get("modifiers") or []),
                            dx_pointers=[dx_codes.index(c) + 1 for c in ln.get("dx_codes") or [] if c in dx_codes],
                            units=ln.get("units") or "1", unit_charge=ln.get("unit_charge") or "",
                            service_date=ln.get("service_date") or "")
                 for ln in remote.get("lines") or []]
    if remote.get("dos"):
        enc.dos_start = enc.dos_end = remote["dos"]
    if remote.get("rendering_npi"):
        enc.rendering.npi = remote["rendering_npi"]
    data = enc.to_dict()
    blob = enc.to_json()
    with store.tx():
        version = store.conn.execute("SELECT version FROM encounters WHERE id = ?", (enc_id,)).fetchone()[0] + 1
        store.conn.execute("UPDATE encounters SET data = ?, content_hash = ?, version = ?, dos = ?, updated_at = ? "
                           "WHERE id = ?", (blob, content_hash(blob), version, enc.dos_start,
                                            now(), enc_id))
        store.event("encounter.accepted_rcm", encounter_id=enc_id, detail={"version": version})
        audit.record(store, actor=actor, action="encounter.accept_rcm", target=f"encounter:{enc_id}",
                     before=before, after=data, detail={"version": version})
    _mark_delivered(store, enc_id, {"Claim": str(remote.get("remote_id", ""))})


def default_window(today: date | None = None, days: int = 90) -> tuple[date, date]:
    from datetime import timedelta

    t = today or date.today()
    return t - timedelta(days=days), t
