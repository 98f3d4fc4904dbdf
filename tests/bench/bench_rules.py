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
from agent.rules.apply import PARALLEL_MIN, rerun
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


def test_rules_rerun_over_stored_encounters(tmp_path: Path) -> None:
    store = _store(tmp_path, "rerun")
    _fill(store, N_STORED)
    mue = {k: v["maxUnits"] for k, v in json.loads(DATA.read_text()).items()}
    rules = RuleSet(mue=mue)

    t = time.perf_counter()  # baseline: read and decode every row, as any re-run must
    decoded = sum(1 for (data,) in store.conn.execute("SELECT data FROM encounters WHERE kind = 'charge'")
                  if Encounter.from_dict(json.loads(data)))
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    res = rerun(store, rules, actor="bench")  # stored without findings: every row grows
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = rerun(store, rules, actor="bench")  # nothing changed
    second_s = time.perf_counter() - t
    # after a rule change (another pack version): every finding is new, rows keep their size
    changed = RuleSet(mue=mue, version="bench-next")
    t = time.perf_counter()
    bumped = rerun(store, changed, actor="bench")
    bump_s = time.perf_counter() - t
    t = time.perf_counter()  # the same, over two worker processes (the CLI's and the API's re-run)
    parallel = rerun(store, RuleSet(mue=mue, version="bench-next2"), actor="bench", workers=2)
    parallel_s = time.perf_counter() - t
    assert decoded == res.checked == again.checked == bumped.checked == parallel.checked == N_STORED
    assert res.changed > 0 and again.changed == 0 and bumped.changed == parallel.changed == res.changed
    rerun(store, changed, actor="bench")  # back to "bench-next" for the count below
    findings: dict[str, int] = {}
    versions = set()
    for code, ver in store.conn.execute("SELECT json_extract(f.value, '$.code'), "
                                        "json_extract(f.value, '$.rule_version') FROM encounters e, "
                                        "json_each(e.findings) f"):
        findings[code] = findings.get(code, 0) + 1
        versions.add(ver)
    assert versions == {"bench-next"}
    store.close()
    print(f"\nrules re-run over {N_STORED:,} stored encounters ({len(rules.local) + len(rules.historic)} rules):")
    print(f"  read + decode only (baseline): {N_STORED / base_s:,.0f}/s")
    print(f"  first run (stored without findings; writes {res.changed:,} rows): {N_STORED / first_s:,.0f}/s "
          f"= {base_s / first_s:.2f} x baseline")
    print(f"  after a rule change (writes {bumped.changed:,} rows): {N_STORED / bump_s:,.0f}/s "
          f"= {base_s / bump_s:.2f} x baseline")
    print(f"  after a rule change, 2 worker processes{'' if N_STORED >= PARALLEL_MIN else ' (too few: in-process)'}: "
          f"{N_STORED / parallel_s:,.0f}/s = {base_s / parallel_s:.2f} x baseline")
    print(f"  nothing changed: {N_STORED / second_s:,.0f}/s = {base_s / second_s:.2f} x baseline")
    print(f"  findings by rule: {dict(sorted(findings.items()))}")


def test_ingest_rules_on_vs_off(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for f in range(N_FILES):
        p = src / f"dft-{f:03d}.hl7"
        p.write_text("".join(dft(f * PER_FILE + i, lines=3) for i in range(PER_FILE)))
        files.append(p)
    rates = {}
    for label in ("off", "on", "off2", "on2"):  # interleaved, so a warm cache favours neither
        store = _store(tmp_path, label)
        pipe = Pipeline(store, rules=RuleSet() if label.startswith("on") else None)
        t = time.perf_counter()
        n = sum(pipe.ingest_path(p).accepted for p in files)
        rates[label] = n / (time.perf_counter() - t)
        assert n == N_FILES * PER_FILE
        store.close()
    off = max(rates["off"], rates["off2"])
    on = max(rates["on"], rates["on2"])
    print(f"\ningest of {N_FILES * PER_FILE:,} DFT^P03 encounters: rules off {off:,.0f}/s, rules on {on:,.0f}/s "
          f"= {on / off:.0%} of rules off")
