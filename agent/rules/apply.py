"""Running the rules where the store is: history rules on a batch before it is written, and a
re-run over stored encounters after a rule change or an MUE import.

Where rule results live (store migration 16): ``encounter_rules`` holds, per charge encounter, the
compact input the rules read (:class:`agent.rules.EncounterFacts` as JSON, with the content hash
it was read from), the rules' findings (each stamped with the pack version) and whether the
validation findings alone hold it. ``encounters.findings`` keeps the validation findings; readers
show both (:func:`agent.repos.merge_findings`). A re-run reads the narrow rows and an index of the
encounters, and writes only rows whose findings or state change: it never decodes nor rewrites a
wide encounter row, except to rebuild an input whose encounter changed since (or a store from
before migration 16).

A re-run touches only encounters *not yet sent*: a version the outbox is sending or has delivered
(or the RCM rejected) is never changed, and a coder's rejection stands. An encounter a coder
approved keeps its approval while its content is unchanged (the approval is tied to the content
hash); its findings are refreshed. An encounter the re-run newly holds leaves the outbox queue.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.rules import FACTS_FORMAT, EncounterFacts, History, RuleFinding, RuleSet, holds
from agent.rules.history import read_history
from agent.store import Store, now
from core.model import Encounter, Finding
from core.states import EncounterKind, EncounterState, OutboxState

log = logging.getLogger("chargebridge.rules")

SENT = (OutboxState.SENDING.value, OutboxState.DELIVERED.value, OutboxState.REJECTED.value)
UPSERT = ("INSERT INTO encounter_rules (encounter_id, input, input_hash, findings, base_holds) VALUES (?,?,?,?,?) "
          "ON CONFLICT(encounter_id) DO UPDATE SET input = excluded.input, input_hash = excluded.input_hash, "
          "findings = excluded.findings, base_holds = excluded.base_holds")


def split(findings: Sequence[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(validation findings, rule findings)."""
    base = [f for f in findings if not isinstance(f, RuleFinding)]
    return base, [f for f in findings if isinstance(f, RuleFinding)]


def history_rows(store: Store, rules: RuleSet, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The pipeline's encounter rows with the history rules' findings added (and the state they
    imply). Row layout: see ``Pipeline._encounter_row``; index 11 holds the
    :class:`EncounterFacts`, 12 the rule findings (dicts)."""
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
        state = r[4]
        if state == EncounterState.READY and holds(found):
            state = EncounterState.NEEDS_REVIEW
        out.append((*r[:4], state, *r[5:10], r[10] + len(found), f, r[12] + [x.to_dict() for x in found],
                    *r[13:]))
    return out


def evaluate(rules: RuleSet | None, enc: Encounter | EncounterFacts, history: History) -> list[dict[str, Any]]:
    """The rules' findings on one encounter now (none when the rules are off)."""
    if rules is None:
        return []
    facts = enc if isinstance(enc, EncounterFacts) else EncounterFacts.of(enc)
    fresh: list[Finding] = rules.apply_local(facts, [])
    fresh += rules.apply_history(facts, history)
    return [f.to_dict() for f in fresh]


def store_one(store: Store, eid: int, facts: EncounterFacts | None, chash: str, rule_findings: list[dict[str, Any]],
              base_holds: bool) -> None:
    """Write one encounter's rule row (inside the caller's tx); no facts: the rules are off, no row."""
    if facts is None:
        store.conn.execute("DELETE FROM encounter_rules WHERE encounter_id = ?", (eid,))
        return
    store.conn.execute(UPSERT, (eid, facts.to_json(), chash, json.dumps(rule_findings), int(base_holds)))


@dataclass
class RerunResult:
    checked: int = 0
    changed: int = 0
    held: int = 0  # newly needs_review
    released: int = 0  # newly ready
    skipped_sent: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def default_workers() -> int:
    """Worker processes for a whole re-run: two where there are two cores or more (the practice
    server), none on one core."""
    import os

    cpus = os.cpu_count() or 1
    return min(2, cpus) if cpus > 1 else 0


PARALLEL_MIN = 200_000  # below this many encounters, starting worker processes costs more than it saves
CHUNK = 20_000  # encounters per worker task (whole patients: history rules compare a patient's visits)

# one encounter to evaluate: id, MRN, input (JSON), sent (history only, not changed)
Item = tuple[int, str, str, bool]
Result = tuple[int, str, bool]  # id, rule findings (JSON), whether they hold it


@contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a re-run holds its ~10^5 small objects: the collector
    would walk all of them again and again (it doubled the time); reference counting still frees."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def evaluate_items(rules: RuleSet | None, items: list[Item], eligibility: dict[tuple[str, str], str]) -> list[Result]:
    """The rules over stored inputs that hold *every* stored encounter of their patients (sent ones
    count as history and get no result). Runs here or in a worker process."""
    history = History(eligibility=eligibility)
    visits = history.visits
    decoded: list[tuple[int, EncounterFacts]] = []
    from_json = EncounterFacts.from_json
    for eid, mrn, text, sent in items:
        f = from_json(text)
        if f is None:
            continue  # not produced by this version (the caller rebuilt every stale input first)
        visits.setdefault(mrn, []).append(f.visit())
        if not sent:
            decoded.append((eid, f))
    if rules is None:
        return [(eid, "[]", False) for eid, _ in decoded]
    run = rules.run
    return [(eid, *run(f, history)) for eid, f in decoded]


_WORKER_RULES: RuleSet | None = None


def _worker_init(rules: RuleSet | None) -> None:
    global _WORKER_RULES
    _WORKER_RULES = rules


def _worker_task(items: list[Item], eligibility: dict[tuple[str, str], str]) -> list[Result]:
    with _no_gc():
        return evaluate_items(_WORKER_RULES, items, eligibility)


def _chunks(items: list[Item]) -> list[tuple[list[Item], set[str]]]:
    """Items grouped into tasks of about :data:`CHUNK` encounters, whole patients each, with the MRNs."""
    by_mrn: dict[str, list[Item]] = {}
    for it in items:
        by_mrn.setdefault(it[1], []).append(it)
    out: list[tuple[list[Item], set[str]]] = [([], set())]
    for mrn, visits in by_mrn.items():
        if len(out[-1][0]) >= CHUNK:
            out.append(([], set()))
        out[-1][0].extend(visits)
        out[-1][1].add(mrn)
    return out


def _evaluate_parallel(rules: RuleSet | None, items: list[Item], eligibility: dict[tuple[str, str], str],
                       workers: int) -> list[Result]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # never fork the engine: it runs threads
    out: list[Result] = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(rules,)) as pool:
        futures = [pool.submit(_worker_task, chunk, {k: v for k, v in eligibility.items() if k[0] in mrns})
                   for chunk, mrns in _chunks(items)]
        for fut in futures:
            out += fut.result()
    return out


def _rebuild(store: Store, rules: RuleSet | None, ids: list[int]) -> dict[int, tuple[str, str, bool]]:
    """Inputs for encounters whose stored input is missing or stale (the encounter changed since,
    or was stored before migration 16, or with the rules off): id -> (input, content hash, base
    holds). Decodes those encounters (only those). A validation finding a rule owns yields to the
    rule, as at ingest."""
    out: dict[int, tuple[str, str, bool]] = {}
    conn = store.conn
    trimmed: list[tuple[str, int]] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for eid, data, fjson, chash in conn.execute(
                f"SELECT id, data, findings, content_hash FROM encounters WHERE id IN ({','.join('?' * len(chunk))})",
                chunk):
            facts = EncounterFacts.of(Encounter.from_dict(json.loads(data)))
            base = [d for d in json.loads(fjson or "[]") if "rule_version" not in d]
            if rules is not None and any(d.get("code") in rules.owned for d in base):
                base = [d for d in base if d.get("code") not in rules.owned]
                trimmed.append((json.dumps(base), eid))
            out[int(eid)] = (facts.to_json(), chash, any(d.get("severity") in ("error", "review") for d in base))
    if trimmed:
        with store.tx():
            conn.executemany("UPDATE encounters SET findings = ? WHERE id = ?", trimmed)
    return out


def rerun(store: Store, rules: RuleSet | None, *, actor: str = "engine", batch: int = 20_000,
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
    sent = {(int(e), int(v)) for e, v in conn.execute(
        f"SELECT encounter_id, version FROM outbox WHERE state IN ({','.join('?' * len(SENT))})", SENT)}
    with _no_gc():
        rows = conn.execute(
            "SELECT e.id, e.state, e.content_hash, e.version, e.mrn, r.input_hash, r.input, r.findings, r.base_holds "
            "FROM encounters e LEFT JOIN encounter_rules r ON r.encounter_id = e.id "
            "WHERE e.kind = ? AND e.state != ?" + only,
            (EncounterKind.CHARGE, EncounterState.REJECTED, *(() if mrns is None else (json.dumps(list(mrns)),)))
        ).fetchall()
        fresh = f"[{FACTS_FORMAT},"
        stale = [int(r[0]) for r in rows if r[5] != r[2] or not (r[6] or "").startswith(fresh)]
        rebuilt = _rebuild(store, rules, stale) if stale else {}
        items: list[Item] = []
        meta: dict[int, tuple[str, str, str, bool]] = {}  # id -> state, content hash, old findings, base holds
        for eid, state, chash, version, mrn, _ih, text, fjson, base_holds in rows:
            is_sent = (eid, version) in sent
            if eid in rebuilt:
                text, _h, holds_now = rebuilt[eid]
                base_holds = holds_now
            items.append((eid, mrn, text, is_sent))
            if is_sent:
                res.skipped_sent += 1
            else:
                meta[eid] = (state, chash, fjson if fjson is not None else "[]", bool(base_holds))
        del rows
        from agent.rules.coverage import read_eligibility  # the payer's answers (coverage.inactive_on_dos)

        eligibility = read_eligibility(store, {it[1] for it in items})
        results = None
        if workers > 0 and len(items) >= PARALLEL_MIN:
            try:
                results = _evaluate_parallel(rules, items, eligibility, workers)
            except Exception as exc:  # no worker processes here (a broken pool, no spawn): do it in-process
                log.warning("rules re-run workers failed (%s); evaluating in-process", type(exc).__name__)
        if results is None:
            results = evaluate_items(rules, items, eligibility)
        del items
        res.checked = len(results)
        findings: list[tuple[str, int]] = []  # (findings, id) of rows whose findings change
        inputs: list[tuple[int, str, str, str, int]] = []  # whole rows for rebuilt inputs
        states: list[tuple[str, int, str]] = []  # (new state, id, old state)
        for eid, new_json, hold in results:
            state, chash, old_json, base_holds = meta[eid]
            held = (hold or base_holds) and (eid, chash) not in approved
            new_state = EncounterState.NEEDS_REVIEW if held else EncounterState.READY
            if eid in rebuilt:
                inputs.append((eid, rebuilt[eid][0], chash, new_json, int(base_holds)))
            elif new_json != old_json:
                findings.append((new_json, eid))
            if new_json != old_json or new_state != state:
                res.changed += 1
            if new_state != state:
                states.append((new_state, eid, state))
                if new_state == EncounterState.NEEDS_REVIEW:
                    res.held += 1
                else:
                    res.released += 1
        for eid, (text, chash, base_holds) in rebuilt.items():
            if eid not in meta:  # a sent encounter: its input is refreshed (history), its findings stand
                inputs.append((eid, text, chash, "", int(base_holds)))
        del results, meta
    _write(store, inputs, findings, states, batch)
    from agent import audit

    with store.tx():
        audit.record(store, actor=actor, action="rules.rerun", target="rules", detail=res.to_dict())
    log.info("rules re-run: %d checked, %d changed, %d held, %d released, %d already sent",
             res.checked, res.changed, res.held, res.released, res.skipped_sent)
    return res


def _write(store: Store, inputs: list[tuple[int, str, str, str, int]], findings: list[tuple[str, int]],
           states: list[tuple[str, int, str]], batch: int) -> None:
    """The re-run's writes, in transactions of ``batch`` rows: narrow rule rows; the wide encounter
    rows only where the state changes (with an event each, and newly held ones leave the queue)."""
    conn = store.conn
    ts = now()
    keep_findings = [(eid, text, chash, int(bh)) for eid, text, chash, f, bh in inputs if f == ""]
    new_rows = [i for i in inputs if i[3] != ""]
    for i in range(0, max(len(new_rows), len(findings), len(states), len(keep_findings)), batch):
        with store.tx():
            conn.executemany(UPSERT, new_rows[i:i + batch])
            conn.executemany(
                "INSERT INTO encounter_rules (encounter_id, input, input_hash, base_holds) VALUES (?,?,?,?) "
                "ON CONFLICT(encounter_id) DO UPDATE SET input = excluded.input, input_hash = excluded.input_hash, "
                "base_holds = excluded.base_holds", keep_findings[i:i + batch])
            conn.executemany("UPDATE encounter_rules SET findings = ? WHERE encounter_id = ?", findings[i:i + batch])
            part = states[i:i + batch]
            conn.executemany("UPDATE encounters SET state = ?, updated_at = '" + ts + "' WHERE id = ?",
                             [(s, eid) for s, eid, _ in part])
            conn.executemany("DELETE FROM outbox WHERE encounter_id = ? AND state IN ('queued', 'failed')",
                             [(eid,) for s, eid, _ in part if s == EncounterState.NEEDS_REVIEW])
            conn.executemany("INSERT INTO events (at, kind, encounter_id, detail) VALUES (?, 'encounter.rules', ?, ?)",
                             [(ts, eid, json.dumps({"state": s, "was": old})) for s, eid, old in part])
