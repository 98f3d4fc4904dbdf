"""Where rule results live (store migration 16): the compact rule inputs, each distinct finding
text once, an encounter's findings as ids; readers see validation + rule findings together.

Real SQLCipher stores throughout."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from agent.pipeline import Pipeline
from agent.repos import RULE_FINDINGS
from agent.rules import FACTS_FORMAT, EncounterFacts, RuleSet
from agent.rules.apply import rerun
from agent.store import MIGRATIONS, Store
from core.paths import Paths
from tests.helpers import dft


def _store(root: Path, name: str = "s", key: bytes | None = None) -> tuple[Store, bytes, Paths]:
    p = Paths.resolve(root / name)
    p.ensure()
    key = key or secrets.token_bytes(32)
    return Store.open_with_key(p, key), key, p


def _codes(store: Store) -> dict[str, tuple[str, list[str], list[str]]]:
    """source id -> (state, validation finding codes, rule finding codes)."""
    out = {}
    for sid, state, base, ruled in store.conn.execute(
            f"SELECT source_id, state, findings, {RULE_FINDINGS.format(e='encounters')} FROM encounters"):
        out[sid] = (state, [f["code"] for f in json.loads(base)], [f["code"] for f in json.loads(ruled or "[]")])
    return out


def test_ingest_keeps_rule_findings_beside_the_encounter_and_readers_see_both(fast_store: Store) -> None:
    pipe = Pipeline(fast_store, rules=RuleSet())
    assert pipe.ingest_bytes(_category(), origin="a.hl7").accepted == 1
    (eid, data, base), = fast_store.conn.execute("SELECT id, data, findings FROM encounters").fetchall()
    assert all("rule_version" not in f for f in json.loads(base))  # the wide row: validation findings only
    text, = fast_store.conn.execute("SELECT input FROM rule_inputs WHERE encounter_id = ?", (eid,)).fetchone()
    facts = EncounterFacts.from_json(text)
    assert facts is not None and facts.codes == [ln["code"] for ln in json.loads(data)["lines"]]
    assert json.loads(text)[0] == FACTS_FORMAT
    patient = json.loads(data)["patient"]
    assert patient["family"] and patient["family"] not in text  # the rules' input carries no names
    shown = fast_store.encounters()[0]["findings"]  # what the API and the CLI show
    assert any(f["code"] == "dx.not_billable" and f["rule_version"] for f in shown)
    ids = json.loads(fast_store.conn.execute("SELECT findings FROM encounter_rules").fetchone()[0])
    assert ids and all(isinstance(i, int) for i in ids)


def test_a_finding_text_is_stored_once_and_old_texts_go_after_a_pack_change(fast_store: Store) -> None:
    pipe = Pipeline(fast_store, rules=RuleSet())
    for i in range(6):  # the same finding (no pointer on line 1) on six encounters
        pipe.ingest_bytes(dft(i, lines=1).encode(), origin=f"{i}.hl7")
    n_before = fast_store.conn.execute("SELECT count(*) FROM rule_texts").fetchone()[0]
    refs = fast_store.conn.execute("SELECT count(*) FROM encounter_rules r, json_each(r.findings)").fetchone()[0]
    assert 0 < n_before < refs  # shared
    rerun(fast_store, RuleSet(version="next"), actor="t")
    versions = {v for (v,) in fast_store.conn.execute("SELECT json_extract(body, '$.rule_version') FROM rule_texts")}
    assert versions == {"next"}  # the old pack's texts, referenced no more, are gone


def test_rules_off_on_a_revision_removes_the_old_rule_rows(fast_store: Store) -> None:
    Pipeline(fast_store, rules=RuleSet()).ingest_bytes(dft(1, lines=1).encode(), origin="a.hl7")
    assert fast_store.conn.execute("SELECT count(*) FROM encounter_rules").fetchone()[0] == 1
    revised = dft(1, lines=2)  # the same visit, re-exported with another line, rules now off
    assert Pipeline(fast_store, rules=None).ingest_bytes(revised.encode(), origin="b.hl7").accepted == 1
    assert fast_store.conn.execute("SELECT count(*) FROM encounter_rules").fetchone()[0] == 0
    assert fast_store.conn.execute("SELECT count(*) FROM rule_inputs").fetchone()[0] == 0
    assert _codes(fast_store)["V0000001"][2] == []  # no stale rule findings shown
    res = rerun(fast_store, RuleSet(), actor="t")  # rules back on: the input is built from the encounter
    assert res.checked == 1 and _codes(fast_store)["V0000001"][2] == ["coverage.missing"]
    assert fast_store.conn.execute("SELECT count(*) FROM rule_inputs").fetchone()[0] == 1


def test_an_unreadable_stored_input_is_rebuilt_not_lost(fast_store: Store) -> None:
    Pipeline(fast_store, rules=RuleSet()).ingest_bytes(dft(1, lines=1).encode(), origin="a.hl7")
    with fast_store.tx():
        fast_store.conn.execute(f"UPDATE rule_inputs SET input = '[{FACTS_FORMAT},\"broken'")
    first = rerun(fast_store, RuleSet(version="v2"), actor="t")
    assert first.checked == 0  # could not be read: marked stale, said in the log
    assert fast_store.conn.execute("SELECT input_hash FROM rule_inputs").fetchone()[0] == ""
    again = rerun(fast_store, RuleSet(version="v2"), actor="t")
    assert again.checked == 1 and again.changed == 1
    assert EncounterFacts.from_json(fast_store.conn.execute("SELECT input FROM rule_inputs").fetchone()[0])


def test_migration_16_moves_rule_findings_out_of_the_wide_rows(tmp_path: Path) -> None:
    store, key, paths = _store(tmp_path)
    Pipeline(store, rules=RuleSet()).ingest_bytes(_category(), origin="a.hl7")
    before = _codes(store)["V0000000"]
    assert before[2]  # rule findings to move
    # the store as migration 15 left it: rule findings inside encounters.findings, no rule tables
    merged = json.dumps(store.encounters()[0]["findings"])
    with store.tx():
        store.conn.execute("UPDATE encounters SET findings = ?", (merged,))
        for table in ("encounter_rules", "rule_inputs", "rule_texts"):
            store.conn.execute(f"DROP TABLE {table}")
        store.conn.execute("DROP INDEX encounters_rules")
        store.conn.execute("DELETE FROM schema_migrations WHERE version = 16")
    store.close()
    store = Store.open_with_key(paths, key)  # migrates to 16
    assert store.schema_version == max(v for v, _ in MIGRATIONS)
    after = _codes(store)["V0000000"]
    assert after == before  # the same findings, validation ones in the wide row, rule ones beside it
    res = rerun(store, RuleSet(), actor="t")  # the input is built on the first re-run; nothing changes
    assert res.checked == 1 and res.changed == 0 and _codes(store)["V0000000"] == before
    store.close()


def _category() -> bytes:
    """A visit whose first diagnosis is J02, a category (dx.not_billable holds it)."""
    msg = dft(0, lines=2)
    assert "DG1|1|I10|I10^^I10" in msg
    return msg.replace("DG1|1|I10|I10^^I10", "DG1|1|I10|J02^^I10").encode()


def test_a_later_visit_updates_the_earlier_ones_findings_at_ingest(fast_store: Store) -> None:
    """A duplicate is a pair: when the second visit arrives, the first (not yet sent) is held too,
    as a full re-run would do; a re-run right after ingest then changes nothing."""
    pipe = Pipeline(fast_store, rules=RuleSet())
    first = dft(0, lines=1)  # 99213 for MRN000000 on 2026-10-01
    second = first.replace("V0000000", "V0000999").replace("C00000000", "C00000999")
    pipe.ingest_bytes(first.encode(), origin="a.hl7")
    assert "line.duplicate" not in _codes(fast_store)["V0000000"][2]
    pipe.ingest_bytes(second.encode(), origin="b.hl7")
    found = _codes(fast_store)
    assert "line.duplicate" in found["V0000999"][2] and "line.duplicate" in found["V0000000"][2]
    assert found["V0000000"][0] == found["V0000999"][0] == "needs_review"
    audits = fast_store.conn.execute("SELECT count(*) FROM audit WHERE action = 'rules.rerun'").fetchone()[0]
    assert audits == 0  # the refresh after a document is not a person's re-run
    again = rerun(fast_store, RuleSet(), actor="t")
    assert again.checked == 2 and again.changed == 0
    other_day = dft(1, lines=1)  # another patient: nothing to refresh, the first pair stands
    pipe.ingest_bytes(other_day.encode(), origin="c.hl7")
    assert _codes(fast_store)["V0000000"] == found["V0000000"]


def test_the_refresh_never_changes_a_visit_already_sent(fast_store: Store) -> None:
    pipe = Pipeline(fast_store, rules=RuleSet())
    first = dft(0, lines=1)
    pipe.ingest_bytes(first.encode(), origin="a.hl7")
    eid, = fast_store.conn.execute("SELECT id FROM encounters").fetchone()
    with fast_store.tx():  # delivered to the RCM: its findings and state stand
        fast_store.conn.execute("INSERT INTO outbox (encounter_id, version, state, attempts, next_attempt_at, "
                                "created_at, updated_at) VALUES (?, 1, 'delivered', 1, 'x', 'x', 'x')", (eid,))
    before = _codes(fast_store)["V0000000"]
    pipe.ingest_bytes(first.replace("V0000000", "V0000999").replace("C00000000", "C00000999").encode(),
                      origin="b.hl7")
    found = _codes(fast_store)
    assert found["V0000000"] == before and "line.duplicate" not in before[2]
    assert "line.duplicate" in found["V0000999"][2]
