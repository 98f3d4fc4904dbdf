"""Running the rules where the store is: history rules on a batch before it is written, and a
re-run over stored encounters after a rule change or an MUE import.

Where rule results live (store migration 16): ``rule_inputs`` holds, per charge encounter, the
compact input the rules read (:class:`agent.rules.EncounterFacts` as JSON) with the content hash
it was read from and whether the validation findings alone hold it; ``encounter_rules`` its rule
findings as a list of ids of ``rule_texts``, where each distinct finding (JSON, stamped with the
pack version) is kept once. ``encounters.findings`` keeps the validation findings; readers show
both (:data:`agent.repos.RULE_FINDINGS`). A re-run reads these narrow rows and an index of the
encounters, and writes only rows whose findings or state change: it never decodes nor rewrites a
wide encounter row, except to rebuild an input whose encounter changed since (or one stored with
the rules off, or before migration 16).

A re-run touches only encounters *not yet sent*: a version the outbox is sending or has delivered
(or the RCM rejected) is never changed, and a coder's rejection stands. An encounter a coder
approved keeps its approval while its content is unchanged (the approval is tied to the content
hash); its findings are refreshed. An encounter the re-run newly holds leaves the outbox queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agent.rules import FACTS_FORMAT, EncounterFacts, History, RuleFinding, RuleSet, body, holds
from agent.rules.history import read_history
from agent.store import Store, now
from connectors.ehr.csvio import gc_paused  # a re-run holds ~10^5 small objects: the collector doubled its time
from core.model import Encounter, Finding
from core.states import EncounterKind, EncounterState, OutboxState

log = logging.getLogger("chargebridge.rules")

SENT = (OutboxState.SENDING.value, OutboxState.DELIVERED.value, OutboxState.REJECTED.value)
INPUT_UPSERT = ("INSERT INTO rule_inputs (encounter_id, input_hash, base_holds, input) VALUES (?,?,?,?) "
                "ON CONFLICT(encounter_id) DO UPDATE SET input_hash = excluded.input_hash, "
                "base_holds = excluded.base_holds, input = excluded.input")
FINDINGS_UPSERT = ("INSERT INTO encounter_rules (encounter_id, findings) VALUES (?,?) "
                   "ON CONFLICT(encounter_id) DO UPDATE SET findings = excluded.findings")


def ids_json(ids: Sequence[int]) -> str:
    """An encounter's rule findings as stored: the JSON array of their rule_texts ids."""
    return "[" + ",".join(map(str, ids)) + "]"


class Texts:
    """rule_texts ids by finding text, adding new texts as they come (inside the caller's tx)."""

    def __init__(self, conn: Any, *, preload: bool = False) -> None:
        self.conn = conn
        self.ids: dict[str, int] = dict(conn.execute("SELECT body, id FROM rule_texts")) if preload else {}
        self.added = 0
        self.seen: dict[tuple[tuple[str, Any], ...], int] = {}

    def id(self, text: str) -> int:
        i = self.ids.get(text)
        if i is None:
            row = self.conn.execute("SELECT id FROM rule_texts WHERE body = ?", (text,)).fetchone()
            if row:
                i = int(row[0])
            else:
                i = int(self.conn.execute("INSERT INTO rule_texts (body) VALUES (?)", (text,)).lastrowid)
                self.added += 1
            self.ids[text] = i
        return i

    def of(self, findings: Sequence[dict[str, Any]]) -> str:
        out = []
        for d in findings:  # the same finding on many encounters of a document: its JSON made once
            key = tuple(d.items())
            i = self.seen.get(key)
            if i is None:
                i = self.seen[key] = self.id(body(d))
            out.append(i)
        return ids_json(out)


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


def refresh_after_ingest(store: Store, rules: RuleSet, rows: list[tuple[Any, ...]]) -> RerunResult | None:
    """History rules also speak about the *other* visit: a new visit can change the findings of an
    earlier one not yet sent (``line.duplicate`` on the same day, ``opportunity.ccm`` in the month),
    which was checked before the new one existed. Re-run the rules for the patients of ``rows``
    (the pipeline's rows, just stored) with another visit in the same month, so ingest leaves the
    same findings a full re-run would. None when no patient has one."""
    pairs: dict[tuple[str, str], int] = {}
    keys = []
    for r in rows:
        f = r[11] if len(r) > 11 else None
        if f is not None and f.mrn and f.dos:
            pairs[(f.mrn, f.dos[:7])] = pairs.get((f.mrn, f.dos[:7]), 0) + 1
            keys.append(r[0])
    if not pairs:
        return None
    mrns = {m for (m, _), n in pairs.items() if n > 1}  # two visits of one patient in this document's month
    mrns.update(m for (m,) in store.conn.execute(
        # CROSS JOIN: the document's (patient, month) pairs drive, each an index search by MRN
        "SELECT DISTINCT e.mrn FROM json_each(?) p CROSS JOIN encounters e ON e.mrn = json_extract(p.value, '$[0]') "
        "AND substr(e.dos, 1, 7) = json_extract(p.value, '$[1]') WHERE e.kind = ? AND e.state != ? "
        "AND e.business_key NOT IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(pairs)), EncounterKind.CHARGE, EncounterState.REJECTED, json.dumps(keys))))
    if not mrns:
        return None
    return rerun(store, rules, actor="engine", mrns=mrns, audit_entry=False)


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
    """Write one encounter's rule rows (inside the caller's tx); no facts: the rules are off, no rows."""
    conn = store.conn
    if facts is None:
        conn.execute("DELETE FROM rule_inputs WHERE encounter_id = ?", (eid,))
        conn.execute("DELETE FROM encounter_rules WHERE encounter_id = ?", (eid,))
        return
    conn.execute(INPUT_UPSERT, (eid, chash, int(base_holds), facts.to_json()))
    conn.execute(FINDINGS_UPSERT, (eid, Texts(conn).of(rule_findings)))


def store_new(store: Store, rows: list[tuple[str, EncounterFacts, str, list[dict[str, Any]], bool]]) -> None:
    """The rule rows of encounters just inserted (business key, facts, content hash, findings,
    validation holds), inside the caller's tx."""
    if not rows:
        return
    conn = store.conn
    texts = Texts(conn)
    conn.executemany("INSERT INTO rule_inputs (encounter_id, input_hash, base_holds, input) "
                     "SELECT id, ?, ?, ? FROM encounters WHERE business_key = ?",
                     [(chash, int(bh), f.to_json(), key) for key, f, chash, _, bh in rows])
    conn.executemany("INSERT INTO encounter_rules (encounter_id, findings) SELECT id, ? FROM encounters "
                     "WHERE business_key = ?", [(texts.of(found), key) for key, _, _, found, _ in rows])


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


PARALLEL_MIN = 20_000  # below this many encounters, starting worker processes costs more than it saves

# one encounter to evaluate: id, MRN, input (JSON), sent (history only, not changed)
Item = tuple[int, str, str, bool]
Result = tuple[int, tuple[int, ...], bool]  # id, rule findings (indexes into the texts), whether they hold it
Evaluated = tuple[list[Result], list[str]]  # results, and the finding texts their indexes point to


def evaluate_items(rules: RuleSet | None, items: list[Item], eligibility: dict[tuple[str, str], str]) -> Evaluated:
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
        return [(eid, (), False) for eid, _ in decoded], []
    run = rules.run
    return [(eid, *run(f, history)) for eid, f in decoded], rules.bodies


_WORKER_RULES: RuleSet | None = None


def _worker_init(rules: RuleSet | None) -> None:
    global _WORKER_RULES
    _WORKER_RULES = rules


def _worker_task(items: list[Item], eligibility: dict[tuple[str, str], str]) -> Evaluated:
    rules = _WORKER_RULES
    if rules is not None:  # indexes local to this task
        rules.bodies = []
        for index in rules._index.values():
            index.clear()
    with gc_paused():
        return evaluate_items(rules, items, eligibility)


def _chunks(items: list[Item], n: int) -> list[tuple[list[Item], set[str]]]:
    """Items in ``n`` tasks of about the same number of encounters (the work per encounter is
    even, so the workers finish together), whole patients each, with their MRNs."""
    by_mrn: dict[str, list[Item]] = {}
    for it in items:
        by_mrn.setdefault(it[1], []).append(it)
    size = -(-len(items) // max(1, n))
    out: list[tuple[list[Item], set[str]]] = [([], set())]
    for mrn, visits in by_mrn.items():
        if len(out[-1][0]) >= size:
            out.append(([], set()))
        out[-1][0].extend(visits)
        out[-1][1].add(mrn)
    return out


def _warm() -> None:
    """A worker's first task: load the code tables the rules read, while the re-run still reads the store."""
    from agent.rules.dx import edits
    from agent.validate import icd10_table

    edits()
    icd10_table()


def _start_pool(rules: RuleSet | None, workers: int) -> Any:
    """Worker processes, started now so their start overlaps the reading (spawned, never forked:
    the engine runs threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(rules,))
    for _ in range(workers):
        pool.submit(_warm)
    return pool


TASKS_PER_WORKER = 3  # smaller tasks: the results of one are taken in while the workers go on


def _evaluate_parallel(pool: Any, items: list[Item], eligibility: dict[tuple[str, str], str],
                       workers: int) -> Iterator[Evaluated]:
    """The tasks' results as they complete."""
    from concurrent.futures import as_completed

    futures = [pool.submit(_worker_task, chunk, {k: v for k, v in eligibility.items() if k[0] in mrns})
               for chunk, mrns in _chunks(items, workers * TASKS_PER_WORKER)]
    for fut in as_completed(futures):
        yield fut.result()


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
          mrns: Collection[str] | None = None, workers: int = 0, audit_entry: bool = True) -> RerunResult:
    """Re-apply the rules to every charge encounter not yet sent (only these patients' when
    ``mrns`` is given: history rules compare a patient's own encounters). Returns counts.

    ``workers`` > 0 spreads the evaluation over that many processes (spawned, never forked) when
    there are at least :data:`PARALLEL_MIN` encounters: whole patients per task, the writes here."""
    conn = store.conn
    res = RerunResult()
    only = "" if mrns is None else " AND e.mrn IN (SELECT value FROM json_each(?))"
    t0 = time.perf_counter()
    pool = None
    if workers > 0 and mrns is None and conn.execute(
            "SELECT count(*) FROM encounters WHERE kind = ? AND state != ?",
            (EncounterKind.CHARGE, EncounterState.REJECTED)).fetchone()[0] >= PARALLEL_MIN:
        try:
            pool = _start_pool(rules, workers)
        except Exception as exc:  # no worker processes here (no spawn, no semaphores): do it in-process
            log.warning("rules re-run workers did not start (%s); evaluating in-process", type(exc).__name__)
    # the coders' approvals and the versions sent (only these patients' when mrns is given: the
    # refresh after each document must not read a mature store's whole outbox)
    mine = "" if mrns is None else (" AND encounter_id IN (SELECT e.id FROM encounters e WHERE e.kind = 'charge'"
                                    + only + ")")
    margs = () if mrns is None else (json.dumps(list(mrns)),)
    approved = {(int(e), str(h)) for e, h in conn.execute(
        "SELECT encounter_id, content_hash FROM reviews r WHERE decision = 'approved' AND id = "
        "(SELECT max(id) FROM reviews r2 WHERE r2.encounter_id = r.encounter_id)" + mine, margs)}
    sent = {(int(e), int(v)) for e, v in conn.execute(
        f"SELECT encounter_id, version FROM outbox WHERE state IN ({','.join('?' * len(SENT))})" + mine,
        (*SENT, *margs))}
    try:
        res = _rerun(store, rules, res, only, approved, sent, mrns, pool, workers, batch, t0)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if audit_entry:  # a person's or a job's re-run (not the refresh after each document)
        from agent import audit

        with store.tx():
            audit.record(store, actor=actor, action="rules.rerun", target="rules", detail=res.to_dict())
    return res


def _rerun(store: Store, rules: RuleSet | None, res: RerunResult, only: str, approved: set[tuple[int, str]],
           sent: set[tuple[int, int]], mrns: Collection[str] | None, pool: Any, workers: int, batch: int,
           t0: float) -> RerunResult:
    conn = store.conn
    with gc_paused():
        # three scans joined here (an index of the encounters, the narrow rule rows): 3x faster
        # than SQLite looking up each encounter's rule rows
        args = (EncounterKind.CHARGE, EncounterState.REJECTED, *(() if mrns is None else (json.dumps(list(mrns)),)))
        encs = conn.execute("SELECT e.id, e.state, e.content_hash, e.version, e.mrn FROM encounters e "
                            "WHERE e.kind = ? AND e.state != ?" + only, args).fetchall()
        if mrns is None:
            inputs_now = {r[0]: r[1:] for r in conn.execute(
                "SELECT encounter_id, input_hash, input, base_holds FROM rule_inputs")}
            found_now = dict(conn.execute("SELECT encounter_id, findings FROM encounter_rules"))
        else:
            inputs_now = {r[0]: r[1:] for r in conn.execute(
                "SELECT r.encounter_id, r.input_hash, r.input, r.base_holds FROM encounters e "
                "JOIN rule_inputs r ON r.encounter_id = e.id WHERE e.kind = ? AND e.state != ?" + only, args)}
            found_now = dict(conn.execute(
                "SELECT r.encounter_id, r.findings FROM encounters e JOIN encounter_rules r "
                "ON r.encounter_id = e.id WHERE e.kind = ? AND e.state != ?" + only, args))
        fresh = f"[{FACTS_FORMAT},"
        none = ("", "", False)
        stale = [eid for eid, _, chash, _, _ in encs
                 if (r := inputs_now.get(eid, none))[0] != chash or not r[1].startswith(fresh)]
        rebuilt = _rebuild(store, rules, stale) if stale else {}
        items: list[Item] = []
        meta: dict[int, tuple[str, str, str, bool]] = {}  # id -> state, content hash, old findings, base holds
        for eid, state, chash, version, mrn in encs:
            _ih, text, base_holds = inputs_now.get(eid, none)
            is_sent = (eid, version) in sent
            if eid in rebuilt:
                text, _h, base_holds = rebuilt[eid]
            items.append((eid, mrn, text, is_sent))
            if is_sent:
                res.skipped_sent += 1
            else:
                meta[eid] = (state, chash, found_now.get(eid, "[]"), bool(base_holds))
        del encs, inputs_now, found_now
        from agent.rules.coverage import read_eligibility  # the payer's answers (coverage.inactive_on_dos)

        eligibility = read_eligibility(store, {it[1] for it in items})
        t1 = time.perf_counter()
        texts = Texts(conn, preload=True)
        findings: list[tuple[str, int]] = []  # (findings, id) of rows whose findings change
        states: list[tuple[str, int, str]] = []  # (new state, id, old state)
        evaluated_ids: set[int] = set()

        def take(evaluated: Evaluated) -> None:
            """One task's results: their finding texts stored first (the rows point at them), then
            what changes."""
            results, bodies = evaluated
            with store.tx():
                local = [str(texts.id(t)) for t in bodies]
            res.checked += len(results)
            evaluated_ids.update([r[0] for r in results])
            for eid, found, hold in results:
                state, chash, old_json, base_holds = meta[eid]
                held = (hold or base_holds) and (eid, chash) not in approved
                new_state = EncounterState.NEEDS_REVIEW if held else EncounterState.READY
                new_json = "[" + ",".join([local[i] for i in found]) + "]" if found else "[]"
                if new_json != old_json:
                    findings.append((new_json, eid))
                if new_json != old_json or new_state != state:
                    res.changed += 1
                if new_state != state:
                    states.append((new_state, eid, state))
                    if new_state == EncounterState.NEEDS_REVIEW:
                        res.held += 1
                    else:
                        res.released += 1

        done = False
        if pool is not None:
            try:
                for evaluated in _evaluate_parallel(pool, items, eligibility, workers):
                    take(evaluated)  # while the workers go on with the other tasks
                done = True
            except Exception as exc:  # no worker processes here (a broken pool, no spawn): do it in-process
                log.warning("rules re-run workers failed (%s); evaluating in-process", type(exc).__name__)
                findings.clear()
                states.clear()
                evaluated_ids.clear()
                res.checked = res.changed = res.held = res.released = 0
        if not done:
            take(evaluate_items(rules, items, eligibility))
        del items
        if res.checked < len(meta):  # an input that did not decode (not as this version writes them)
            lost = [eid for eid in meta if eid not in evaluated_ids]
            log.warning("rules re-run: %d stored rule inputs could not be read; they are rebuilt on the next run",
                        len(meta) - res.checked)
            with store.tx():  # stale now: the next re-run builds them again from their encounters
                conn.executemany("UPDATE rule_inputs SET input_hash = '' WHERE encounter_id = ?", [(e,) for e in lost])
        inputs = [(eid, chash, int(base_holds), text) for eid, (text, chash, base_holds) in rebuilt.items()]
    t2 = time.perf_counter()
    _write(store, inputs, findings, states, batch)
    if texts.added and mrns is None and rules is not None:
        # an older pack's texts no finding points at any more (only older packs': a refresh after a
        # document, running meanwhile, adds texts of this pack before its rows point at them)
        with store.tx():
            conn.execute("DELETE FROM rule_texts WHERE json_extract(body, '$.rule_version') IS NOT ? AND id NOT IN "
                         "(SELECT j.value FROM encounter_rules r, json_each(r.findings) j)", (rules.version,))
    log.info("rules re-run: %d checked, %d changed, %d held, %d released, %d already sent "
             "(read %.1f s, rules %.1f s, write %.1f s)", res.checked, res.changed, res.held, res.released,
             res.skipped_sent, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return res


def _write(store: Store, inputs: list[tuple[int, str, int, str]], findings: list[tuple[str, int]],
           states: list[tuple[str, int, str]], batch: int) -> None:
    """The re-run's writes, in transactions of ``batch`` rows: narrow rule rows; the wide encounter
    rows only where the state changes (with an event each, and newly held ones leave the queue)."""
    conn = store.conn
    ts = now()
    for i in range(0, max(len(inputs), len(findings), len(states)), batch):
        with store.tx():
            conn.executemany(INPUT_UPSERT, inputs[i:i + batch])
            conn.executemany(FINDINGS_UPSERT, [(eid, f) for f, eid in findings[i:i + batch]])
            part = states[i:i + batch]
            conn.executemany("UPDATE encounters SET state = ?, updated_at = '" + ts + "' WHERE id = ?",
                             [(s, eid) for s, eid, _ in part])
            conn.executemany("DELETE FROM outbox WHERE encounter_id = ? AND state IN ('queued', 'failed')",
                             [(eid,) for s, eid, _ in part if s == EncounterState.NEEDS_REVIEW])
            conn.executemany("INSERT INTO events (at, kind, encounter_id, detail) VALUES (?, 'encounter.rules', ?, ?)",
                             [(ts, eid, json.dumps({"state": s, "was": old})) for s, eid, old in part])
