"""`chargebridge ingest` over the public sample corpus (copies in tests/data, see ATTRIBUTION.md).

Billing-relevant documents are accepted; the rest are quarantined with reasons; and the store
file holds none of the sample patients' names in plaintext.
"""

from __future__ import annotations

import json
from pathlib import Path

from connectors.ehr import detect_format, get_parser
from core.model import Encounter, PatientUpdate
from tests.conftest import DATA, run_cli


def corpus_names() -> set[str]:
    """Every patient family/given name the parsers find in the corpus copies (>= 6 letters: the
    store is ciphertext, and a 4-letter name turns up in ~5 MB of random bytes by chance — one run
    found "duck" there, case-folded, between two encrypted bytes — while 6 letters do so about
    once in a million runs)."""
    names: set[str] = set()
    for folder in ("hl7v2", "fhir", "ccda"):
        for f in sorted((DATA / folder).iterdir()):
            if f.name == "ATTRIBUTION.md":
                continue
            fmt = detect_format(f.name, f.read_bytes()[:512])
            try:
                items = get_parser(fmt).parse(f.read_bytes(), name=f.name, options={})
            except Exception:
                continue
            for it in items:
                if isinstance(it, (Encounter, PatientUpdate)):
                    names |= {it.patient.family, it.patient.given}
    import csv

    with open(DATA / "synthea-csv" / "patients.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            names |= {row["FIRST"], row["LAST"]}
    return {n for n in names if n and len(n) >= 6}


def test_corpus_ingest(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    r = run_cli("ingest", "--json", "--chargemaster", "synthea-demo", str(DATA / "hl7v2"), str(DATA / "fhir"), str(DATA / "ccda"),
                str(DATA / "synthea-csv"), home=home, timeout=300)
    totals = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 1, r.stderr  # some corpus documents are not billing-relevant
    assert totals["accepted"] > 100 and totals["quarantined"] >= 2, totals

    encs = json.loads(run_cli("encounters", "--json", "--limit", "100000", home=home).stdout)
    by_source: dict[str, int] = {}
    for e in encs:
        by_source[e["source"]] = by_source.get(e["source"], 0) + 1
    assert set(by_source) == {"hl7v2", "fhir", "ccda", "csv"}, by_source
    # DFT^P03 samples bill CPT 71045 and 73630; SIU^S12 samples become expected visits
    hl7 = [e for e in encs if e["source"] == "hl7v2"]
    assert {ln["code"] for e in hl7 for ln in e["lines"]} >= {"71045", "73630"}
    assert any(e["kind"] == "expected" for e in hl7)
    # the Synthea sets (CSV and FHIR) reach CPT/ICD-10-CM through the demo chargemaster
    synthea = [e for e in encs if e["source"] == "csv"]
    assert synthea and all(ln["code_system"] in ("CPT", "HCPCS") for e in synthea for ln in e["lines"])
    assert sum(e["state"] == "ready" for e in synthea) > len(synthea) // 2
    fhir = [e for e in encs if e["source"] == "fhir"]
    assert len(fhir) == 23
    # Synthea's FHIR claim items point at no diagnosis: the charge rules hold those visits for a
    # coder (dx.unsupported_line, severity review) instead of sending lines a payer would deny
    unsupported = [e for e in fhir if any(f["code"] == "dx.unsupported_line" for f in e["findings"])]
    assert unsupported and all(e["state"] == "needs_review" for e in unsupported)
    for e in fhir:
        if e["state"] != "ready":
            assert any(f["severity"] in ("review", "error") for f in e["findings"]), e["findings"]
    ccda_codes = {ln["code"] for e in encs if e["source"] == "ccda" for ln in e["lines"]}
    assert "99213" in ccda_codes

    quarantine = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    reasons = {Path(q["file"]).name: q["reason"] for q in quarantine}
    assert "not billing-relevant" in reasons["ORU-R01-01.hl7"]
    assert "practitionerInformation1714182814995.json" in reasons
    for q in quarantine:
        assert q["reason"].strip(), q

    names = corpus_names()
    assert len(names) > 20
    for p in home.iterdir():
        if p.name.startswith("store"):
            blob = p.read_bytes().lower()
            leaked = [n for n in names if n.lower().encode() in blob]
            assert not leaked, f"plaintext names in {p.name}: {len(leaked)}"
    log = (home / "logs" / "chargebridge.log").read_text().lower()
    assert not [n for n in names if n.lower() in log]
