"""Charge rules: all rules over 100,000 stored encounters, and ingest with rules on vs off.

Run with ``make bench``. Prints figures and ratios against baselines measured in the same run;
asserts only correctness (counts), never speed.

* Re-run: :func:`agent.rules.apply.rerun` with every rule on (and the MUE fixture imported) over
  100,000 stored charge encounters, against the floor any re-run pays: reading the same rows and
  decoding each encounter. Target from issue 11: >= 20,000 encounters/s.
* Ingest: the same HL7 DFT^P03 files into two fresh stores, rules off then on (target: rules on at
  no less than 80 % of rules off).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from agent.pipeline import Pipeline
from agent.rules import RuleSet
from agent.rules.apply import rerun
from agent.store import Store, now
from core.model import ChargeLine, Coverage, Diagnosis, Encounter, Patient, Provider, content_hash
from core.paths import Paths
from tests.helpers import dft

N_STORED = int(os.environ.get("BENCH_RULES_N", "100000"))
N_FILES, PER_FILE = 40, 250
DATA = Path(__file__).resolve().parents[1] / "data" / "rules" / "mue-sample.json"
CODES = ["99213", "99214", "20610", "36415", "85025", "93000", "97140", "97530", "99396", "G0439", "17999"]
DXS = ["I10", "E11.9", "J02.9", "M17.11", "E78.5", "Z00.00", "N40.0", "O80", "J02"]


def _store(root: Path, name: str) -> Store:
    p = Paths.resolve(root / name)
    p.ensure()
    return Store.open_with_key(p, secrets.token_bytes(32))


def _encounter(i: int) -> Encounter:
    n = 1 + i % 3
    return Encounter(
        source="hl7v2", source_id=f"V{i:07d}", source_system="EHR",
        patient=Patient(mrn=f"M{i // 4:06d}", family="Doe", given="Pat", dob=f"19{40 + i % 60:02d}-0{1 + i % 9}-15",
                        sex="MF"[i % 2]),
        coverages=[Coverage(payer_name="Medicare" if i % 5 == 0 else "Acme Health", member_id=f"X{i}")],
        rendering=Provider(npi="1234567893"), dos_start=f"2026-{1 + i % 12:02d}-{1 + i % 27:02d}",
        place_of_service="11", diagnoses=[Diagnosis(DXS[i % len(DXS)]), Diagnosis(DXS[(i + 3) % len(DXS)])],
        lines=[ChargeLine(CODES[(i + k) % len(CODES)], dx_pointers=[1] if (i + k) % 7 else [], units="1")
               for k in range(n)])


def _fill(store: Store, n: int) -> None:
    with store.tx():
        doc = store.conn.execute("INSERT INTO documents (sha256, origin, source, format, size, content, status, "
                                 "received_at) VALUES ('x', 'bench', 'cli', 'hl7v2', 0, x'', 'processed', ?)",
                                 (now(),)).lastrowid
    ts = now()
    for start in range(0, n, 5000):
        rows = []
        for i in range(start, min(n, start + 5000)):
            e = _encounter(i)
            blob = e.to_json()
            rows.append((e.business_key, "charge", e.source, e.source_id, doc, "ready", e.patient.mrn, e.dos_start,
                         blob, "[]", content_hash(blob), ts, ts))
        with store.tx():
            store.conn.executemany(
                "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, data,"
                " findings, content_hash, version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?,?)", rows)


def _timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def test_rules_rerun_over_stored_encounters(tmp_path: Path) -> None:
    store = _store(tmp_path, "rerun")
    _fill(store, N_STORED)
    mue = {k: v["maxUnits"] for k, v in json.loads(DATA.read_text()).items()}
    rules = RuleSet(mue=mue)
    workers = 2  # what `chargebridge rules rerun` uses on a 2-core machine (default_workers)

    # baseline: read and decode every stored encounter, the floor of a re-run that reads the encounters
    def read_all() -> int:
        n = 0
        for (data,) in store.conn.execute("SELECT data FROM encounters WHERE kind = 'charge'"):
            Encounter.from_dict(json.loads(data))
            n += 1
        return n

    decoded, base_s = _timed(read_all)
    # first run: stored with no rule rows (an upgraded store; ingest with the rules off): every
    # input is built from its encounter once
    first, first_s = _timed(lambda: rerun(store, rules, actor="bench", workers=workers))
    # a rule change (another pack version): every finding is new, every encounter's rule row is written
    bumped, bump_s = _timed(lambda: rerun(store, RuleSet(mue=mue, version="bench-next"), actor="bench"))
    parallel, parallel_s = _timed(lambda: rerun(store, RuleSet(mue=mue, version="bench-next2"), actor="bench",
                                                workers=workers))
    # a practice's rule change: one rule switched to another severity (holds / releases encounters)
    severity = RuleSet(mue=mue, version="bench-next2", severity={"dx.unsupported_line": "info"})
    sev, sev_s = _timed(lambda: rerun(store, severity, actor="bench", workers=workers))
    again, again_s = _timed(lambda: rerun(store, severity, actor="bench", workers=workers))  # nothing changed
    assert decoded == first.checked == bumped.checked == parallel.checked == sev.checked == again.checked == N_STORED
    assert first.changed > 0 and bumped.changed == parallel.changed == first.changed and again.changed == 0
    assert 0 < sev.changed < N_STORED and sev.released > 0
    findings: dict[str, int] = {}
    versions = set()
    for code, ver in store.conn.execute(
            "SELECT json_extract(t.body, '$.code'), json_extract(t.body, '$.rule_version') FROM encounter_rules r, "
            "json_each(r.findings) j JOIN rule_texts t ON t.id = j.value"):
        findings[code] = findings.get(code, 0) + 1
        versions.add(ver)
    assert versions == {"bench-next2"}
    texts = store.conn.execute("SELECT count(*) FROM rule_texts").fetchone()[0]
    store.close()
    print(f"\nrules re-run over {N_STORED:,} stored encounters ({len(rules.local) + len(rules.historic)} rules), "
          f"target >= 20,000/s:")
    print(f"  read + decode every encounter only (baseline): {N_STORED / base_s:,.0f}/s")

    def line(what: str, seconds: float) -> str:
        return f"  {what}: {N_STORED / seconds:,.0f}/s = {base_s / seconds:.2f} x baseline"

    print(line(f"first run, inputs built from the encounters ({first.changed:,} rows written, {workers} workers)",
               first_s))
    print(line(f"after a pack change, in-process ({bumped.changed:,} rows written)", bump_s))
    print(line(f"after a pack change, {workers} worker processes ({parallel.changed:,} rows written)", parallel_s))
    print(line(f"one rule's severity changed, {workers} workers ({sev.changed:,} rows, {sev.released:,} released)",
               sev_s))
    print(line(f"nothing changed, {workers} workers", again_s))
    print(f"  findings by rule: {dict(sorted(findings.items()))}; {texts:,} distinct finding texts stored")


def _dft_files(root: Path, repeat: bool) -> list[Path]:
    """The bench's DFT^P03 files: one visit per patient, or (``repeat``) four visits per patient in
    the month, in one file or across two (so every document refreshes earlier visits' rules)."""
    root.mkdir()
    files = []
    for f in range(N_FILES):
        p = root / f"dft-{f:03d}.hl7"
        msgs = []
        for i in range(f * PER_FILE, (f + 1) * PER_FILE):
            m = dft(i, lines=3)
            if repeat:  # patient i // 4 (i + 2 shifts the groups across the file boundary)
                m = m.replace(f"MRN{i:06d}", f"MRN{(i + 2) // 4:06d}")
            msgs.append(m)
        p.write_text("".join(msgs))
        files.append(p)
    return files


def test_ingest_rules_on_vs_off(tmp_path: Path) -> None:
    for repeat in (False, True):
        files = _dft_files(tmp_path / f"src-{repeat}", repeat)
        rates = {}
        for label in ("off", "on", "off2", "on2"):  # interleaved, so a warm cache favours neither
            store = _store(tmp_path, f"{label}-{repeat}")
            pipe = Pipeline(store, rules=RuleSet() if label.startswith("on") else None)
            t = time.perf_counter()
            n = sum(pipe.ingest_path(p).accepted for p in files)
            rates[label] = n / (time.perf_counter() - t)
            assert n == N_FILES * PER_FILE
            if repeat and label.startswith("on"):  # the refresh left what a full re-run would
                assert rerun(store, RuleSet(), actor="bench").changed == 0
            store.close()
        off = max(rates["off"], rates["off2"])
        on = max(rates["on"], rates["on2"])
        what = "4 visits per patient in the month" if repeat else "one visit per patient"
        print(f"\ningest of {N_FILES * PER_FILE:,} DFT^P03 encounters ({what}): rules off {off:,.0f}/s, "
              f"rules on {on:,.0f}/s = {on / off:.0%} of rules off")
