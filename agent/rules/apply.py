"""Running the rules where the store is: history rules on a batch before it is written, and a
re-run over stored encounters after a rule change or an MUE import.

A re-run touches only encounters *not yet sent*: a version the outbox is sending or has delivered
(or the RCM rejected) is never changed, and a coder's rejection stands. An encounter a coder
approved keeps its approval while its content is unchanged (the approval is tied to the content
hash); its findings are refreshed. An encounter the re-run newly holds leaves the outbox queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from agent.rules import EncounterFacts, History, RuleSet, holds
from agent.rules.history import read_history
from agent.store import Store, now
from core.model import Encounter
from core.states import EncounterKind, EncounterState, OutboxState

log = logging.getLogger("chargebridge.rules")

SENT = (OutboxState.SENDING.value, OutboxState.DELIVERED.value, OutboxState.REJECTED.value)


def history_rows(store: Store, rules: RuleSet, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The pipeline's encounter rows with the history rules' findings added (and the state they
    imply). Row layout: see ``Pipeline._encounter_row``; index 11 holds the :class:`EncounterFacts`."""
    facts = [r[11] if len(r) > 11 else None for r in rows]
    charge = [f for r, f in zip(rows, facts, strict=True) if f is not None and r[1] == EncounterKind.CHARGE]
    if not charge:
        return rows
    history = read_history(store, {f.mrn for f in charge})
    for f in charge:  # encounters earlier in the same file count too
        history.visits.setdefault(f.mrn, []).append(f.visit())
    out = []
    for r, f in zip(rows, facts, strict=True):
        if f is None or r[1] != EncounterKind.CHARGE:
            out.append(r)
            continue
        found = rules.apply_history(f, history)
        if not found:
            out.append(r)
            continue
        findings = json.loads(r[8]) + [x.to_dict() for x in found]
        state = r[4]
        if state == EncounterState.READY and holds(found):
            state = EncounterState.NEEDS_REVIEW
        out.append((*r[:4], state, *r[5:8], json.dumps(findings), r[9], len(findings), *r[11:]))
    return out


@dataclass
class RerunResult:
    checked: int = 0
    changed: int = 0
    held: int = 0  # newly needs_review
    released: int = 0  # newly ready
    skipped_sent: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def evaluate(rules: RuleSet | None, enc: Encounter, stored: list[dict[str, Any]],
             history: History, facts: EncounterFacts | None = None) -> list[dict[str, Any]]:
    """New findings for a stored encounter: its stored validation findings, plus the rules' now."""
    base = [d for d in stored if "rule_version" not in d]
    if rules is None:
        return base
    kept = [d for d in base if d.get("code") not in rules.owned]
    fresh = rules.apply_local(enc, [])
    fresh += rules.apply_history(facts or EncounterFacts.of(enc), history)
    return kept + [f.to_dict() for f in fresh]


def _holds(findings: list[dict[str, Any]]) -> bool:
    return any(d.get("severity") in ("error", "review") for d in findings)


Row = tuple[int, str, str, str, str, str | None]  # id, data, findings, state, content hash, outbox state
Change = tuple[str, str, int, str, str | None]  # new state, new findings json, id, old state, outbox state
def default_workers() -> int:
    """Worker processes for a whole re-run: two where there are two cores or more (the practice
    server), none on one core."""
    import os

    cpus = os.cpu_count() or 1
    return min(2, cpus) if cpus > 1 else 0


PARALLEL_MIN = 20_000  # below this many encounters, starting worker processes costs more than it saves
CHUNK = 5_000  # encounters per worker task (whole patients: history rules compare a patient's visits)


def evaluate_rows(rules: RuleSet | None, rows: list[Row], eligibility: dict[tuple[str, str], str],
                  approved: set[tuple[int, str]]) -> tuple[list[Change], int, int]:
    """The rules over stored rows that hold *every* stored encounter of their patients (sent ones
    count as history, and are not changed): the rows whose findings or state change, and the
    counts checked / skipped as already sent. Runs here or in a worker process."""
    decoded: list[tuple[int, Encounter, EncounterFacts, str, str, str, str | None]] = []
    history = History(eligibility=eligibility)
    loads = json.loads
    for eid, data, fjson, state, chash, ostate in rows:
        enc = Encounter.from_dict(loads(data))
        f = EncounterFacts.of(enc)
        history.visits.setdefault(f.mrn, []).append(f.visit())
        decoded.append((eid, enc, f, fjson, state, chash, ostate))
    changes: list[Change] = []
    checked = skipped = 0
    for eid, enc, facts, fjson, state, chash, ostate in decoded:
        if ostate in SENT:
            skipped += 1
            continue
        checked += 1
        stored = loads(fjson) if fjson != "[]" else []
        new = evaluate(rules, enc, stored, history, facts)
        held = _holds(new) and (eid, chash) not in approved
        new_state = EncounterState.NEEDS_REVIEW if held else EncounterState.READY
        new_json = json.dumps(new)
        if new_json != fjson or new_state != state:
            changes.append((new_state, new_json, eid, state, ostate))
    return changes, checked, skipped


_WORKER_RULES: RuleSet | None = None


def _worker_init(rules: RuleSet | None) -> None:
    global _WORKER_RULES
    _WORKER_RULES = rules


def _worker_task(rows: list[Row], eligibility: dict[tuple[str, str], str],
                 approved: set[tuple[int, str]]) -> tuple[list[Change], int, int]:
    return evaluate_rows(_WORKER_RULES, rows, eligibility, approved)


def _chunks(rows: list[tuple[Any, ...]]) -> list[tuple[list[Row], set[str]]]:
    """Rows (mrn last) grouped into tasks of about :data:`CHUNK` encounters, whole patients each,
    with the patients' MRNs."""
    by_mrn: dict[str, list[Row]] = {}
    for r in rows:
        by_mrn.setdefault(r[-1], []).append(r[:-1])
    out: list[tuple[list[Row], set[str]]] = [([], set())]
    for mrn, visits in by_mrn.items():
        if len(out[-1][0]) >= CHUNK:
            out.append(([], set()))
        out[-1][0].extend(visits)
        out[-1][1].add(mrn)
    return out


def _evaluate_parallel(rules: RuleSet | None, rows: list[tuple[Any, ...]], eligibility: dict[tuple[str, str], str],
                       approved: set[tuple[int, str]], workers: int) -> tuple[list[Change], int, int]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # never fork the engine: it runs threads
    changes: list[Change] = []
    checked = skipped = 0
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(rules,)) as pool:
        futures = []
        for chunk, mrns in _chunks(rows):
            ids = {r[0] for r in chunk}
            futures.append(pool.submit(_worker_task, chunk, {k: v for k, v in eligibility.items() if k[0] in mrns},
                                       {a for a in approved if a[0] in ids}))
        for fut in futures:
            c, n, k = fut.result()
            changes += c
            checked += n
            skipped += k
    return changes, checked, skipped


def rerun(store: Store, rules: RuleSet | None, *, actor: str = "engine", batch: int = 2000,
          mrns: Collection[str] | None = None, workers: int = 0) -> RerunResult:
    """Re-apply the rules to every charge encounter not yet sent (only these patients' when
    ``mrns`` is given: history rules compare a patient's own encounters). Returns counts.

    ``workers`` > 0 spreads the evaluation over that many processes (spawned, never forked) when
    there are at least :data:`PARALLEL_MIN` encounters: whole patients per task, the writes here."""
    conn = store.conn
    res = RerunResult()
    only = "" if mrns is None else " AND e.mrn IN (SELECT value FROM json_each(?))"
    approved = {(int(e), str(h)) for e, h in conn.execute(
        "SELECT encounter_id, content_hash FROM reviews r WHERE decision = 'approved' AND id = "
        "(SELECT max(id) FROM reviews r2 WHERE r2.encounter_id = r.encounter_id)")}
    rows = conn.execute(
        "SELECT e.id, e.data, e.findings, e.state, e.content_hash, "
        "(SELECT o.state FROM outbox o WHERE o.encounter_id = e.id AND o.version = e.version), e.mrn "
        "FROM encounters e WHERE e.kind = ? AND e.state != ?" + only,
        (EncounterKind.CHARGE, EncounterState.REJECTED, *(() if mrns is None else (json.dumps(list(mrns)),)))
    ).fetchall()
    from agent.rules.coverage import read_eligibility  # the payer's answers (coverage.inactive_on_dos)

    eligibility = read_eligibility(store, {r[6] for r in rows})
    done = None
    if workers > 0 and len(rows) >= PARALLEL_MIN:
        try:
            done = _evaluate_parallel(rules, rows, eligibility, approved, workers)
        except Exception as exc:  # no worker processes here (a broken pool, no spawn): do it in-process
            log.warning("rules re-run workers failed (%s); evaluating in-process", type(exc).__name__)
    if done is None:
        done = evaluate_rows(rules, [r[:6] for r in rows], eligibility, approved)
    changes, res.checked, res.skipped_sent = done
    del rows
    updates: list[tuple[str, str, int]] = []
    dequeue: list[tuple[int]] = []
    for new_state, new_json, eid, state, ostate in changes:
        res.changed += 1
        if new_state != state:
            if new_state == EncounterState.NEEDS_REVIEW:
                res.held += 1
                if ostate is not None:
                    dequeue.append((eid,))
            else:
                res.released += 1
        updates.append((new_state, new_json, eid))
    ts = now()
    for i in range(0, len(updates), batch):
        part = updates[i:i + batch]
        ids = {u[2] for u in part}
        with store.tx():
            conn.executemany("UPDATE encounters SET state = ?, findings = ?, updated_at = '" + ts + "' WHERE id = ?",
                             part)
            conn.executemany("DELETE FROM outbox WHERE encounter_id = ? AND state IN ('queued', 'failed')",
                             [d for d in dequeue if d[0] in ids])
            conn.executemany("INSERT INTO events (at, kind, encounter_id, detail) VALUES (?, 'encounter.rules', ?, ?)",
                             [(ts, u[2], json.dumps({"state": u[0]})) for u in part])
    from agent import audit

    with store.tx():
        audit.record(store, actor=actor, action="rules.rerun", target="rules", detail=res.to_dict())
    log.info("rules re-run: %d checked, %d changed, %d held, %d released, %d already sent",
             res.checked, res.changed, res.held, res.released, res.skipped_sent)
    return res
