"""The reproduced defects of issue 14 through the real Pipeline and a real SQLCipher store:
one bad number must not block a home. The document is quarantined (or its encounter held
for review) with a clear reason, never left ``pending``; later files still go through; the
stored encounters still read back; ``recover()`` on the next start has nothing left to do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.pipeline import MAX_ATTEMPTS, Pipeline
from core.model import MAX_MONEY, MAX_UNITS, read_decimal
from core.states import DocumentStatus, EncounterState
from tests.helpers import dft
from tests.hostile.cases import BAD_NUMBERS, dft_with_ft1, fhir_bundle, is_sane_number


def _doc_status(store, doc_id: int) -> str:  # type: ignore[no-untyped-def]
    return store.conn.execute("SELECT status FROM documents WHERE id = ?", (doc_id,)).fetchone()[0]


def _all_lines_sane(store) -> None:  # type: ignore[no-untyped-def]
    """Every stored encounter reads back, and every number on it is a bounded plain decimal."""
    for enc in store.encounters(limit=10_000):
        for ln in enc["data"]["lines"]:
            assert is_sane_number(ln["units"], money=False), "a stored unit count is not a sane number"
            assert is_sane_number(ln["unit_charge"], money=True), "a stored charge is not a sane amount"
            if ln["units"]:
                read_decimal(ln["units"], limit=MAX_UNITS, places=4)
            if ln["unit_charge"]:
                read_decimal(ln["unit_charge"], limit=MAX_MONEY, places=4)


def test_baseline_documents_are_ready(fast_store) -> None:
    """The hostile cases below differ from these only in one number."""
    pipe = Pipeline(fast_store)
    assert pipe.ingest_bytes(dft_with_ft1().encode(), origin="ok.hl7").accepted == 1
    assert pipe.ingest_bytes(fhir_bundle(), origin="ok.json").accepted == 1
    assert [e["state"] for e in fast_store.encounters()] == [EncounterState.READY] * 2


@pytest.mark.parametrize("bad", BAD_NUMBERS)
@pytest.mark.parametrize("where", ["units", "price", "extended"])
def test_bad_hl7_number_is_held_not_blocking(fast_store, bad: str, where: str) -> None:
    pipe = Pipeline(fast_store)
    kw = {"units": "1", "price": "125.00", "extended": ""}
    if where == "extended":
        kw["price"] = ""
    kw[where] = bad
    out = pipe.ingest_bytes(dft_with_ft1(**kw).encode(), origin="bad.hl7")
    assert _doc_status(fast_store, out.document_id) != DocumentStatus.PENDING
    assert out.accepted == 1  # the visit is kept, held for a person to fix the number
    [enc] = fast_store.encounters()
    assert enc["state"] == EncounterState.NEEDS_REVIEW
    codes = {f["code"] for f in enc["findings"]}
    assert codes & {"units.format", "units.range", "charge.format", "charge.range"}
    for f in enc["findings"]:
        assert bad not in f["message"] or len(bad) < 3, "a finding quotes the bad value"
    _all_lines_sane(fast_store)
    # the home keeps working: the next file goes through, a restart has nothing to redo
    assert pipe.ingest_bytes(dft(2).encode(), origin="next.hl7").accepted == 1
    assert Pipeline(fast_store).recover() == []


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999999999", "-1e999999999", "1E400",
                                 "9" * 5000, '"sNaN"', '"1e999999999"', '"\u0661"', "true", '{"x": 1}',
                                 "0.000001", "-0"])
@pytest.mark.parametrize("where", ["quantity", "unit_price", "net", "total"])
def test_bad_fhir_number_is_quarantined_with_a_reason(fast_store, bad: str, where: str) -> None:
    pipe = Pipeline(fast_store)
    kw: dict[str, str] = {where: bad}
    out = pipe.ingest_bytes(fhir_bundle(**kw), origin="bad.json")
    assert _doc_status(fast_store, out.document_id) != DocumentStatus.PENDING
    rows = fast_store.conn.execute("SELECT reason FROM quarantine WHERE document_id = ?", (out.document_id,)).fetchall()
    if out.accepted:  # e.g. "-0" as quantity: read, then held by validation
        assert fast_store.encounters()[0]["state"] == EncounterState.NEEDS_REVIEW
    else:
        assert len(rows) == 1
        reason = rows[0][0]
        assert "unexpectedly" not in reason and "support" not in reason
        assert any(w in reason for w in ("number", "range", "decimal", "negative", "JSON"))
        assert "Testcase" not in reason and "HX-1" not in reason
    _all_lines_sane(fast_store)
    assert pipe.ingest_bytes(fhir_bundle(quantity="2"), origin="ok.json").accepted == 1
    assert Pipeline(fast_store).recover() == []


def test_cli_reads_still_work_after_hostile_numbers(tmp_path: Path, keyring_ok) -> None:
    """`chargebridge ingest` then `encounters --json` (the read GET /encounters serves) in a real
    home: a stored hostile document never makes a later read or a restart fail."""
    from tests.conftest import run_cli

    home = tmp_path / "home"
    src = tmp_path / "in"
    src.mkdir()
    for k, bad in enumerate(("NaN", "sNaN", "1e999999999")):
        (src / f"u{k}.hl7").write_text(dft_with_ft1(units=bad))
        (src / f"p{k}.hl7").write_text(dft_with_ft1(price=bad).replace("V0000001", f"V00000P{k}"))
    (src / "q.json").write_bytes(fhir_bundle(quantity="1e999999999"))
    r = run_cli("ingest", "--json", str(src), home=home)
    assert r.returncode in (0, 1), r.stderr
    r2 = run_cli("ingest", "--json", str(src), home=home)  # a second start: nothing pending, no crash
    assert r2.returncode in (0, 1), r2.stderr
    encs = json.loads(run_cli("encounters", "--json", home=home).stdout)
    assert encs and all(e["state"] == EncounterState.NEEDS_REVIEW for e in encs)
    q = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert any("quantity" in x["reason"] for x in q)


def test_unexpected_failure_in_validation_quarantines_that_encounter(fast_store, monkeypatch) -> None:
    """A bug in standardize/validate for one encounter is a quarantine entry, not an exception
    that leaves the document pending (and every later start retrying it)."""
    import agent.pipeline as pipeline_mod

    real = pipeline_mod.validate

    def flaky(enc, **kw):  # type: ignore[no-untyped-def]
        if enc.source_id == "V0000002":
            raise ZeroDivisionError("a bug")
        return real(enc, **kw)

    monkeypatch.setattr(pipeline_mod, "validate", flaky)
    out = Pipeline(fast_store).ingest_bytes((dft(1) + dft(2) + dft(3)).encode(), origin="three.hl7")
    assert (out.accepted, out.quarantined, out.status) == (2, 1, "partial")
    assert _doc_status(fast_store, out.document_id) == DocumentStatus.PROCESSED
    [(part, reason)] = fast_store.conn.execute("SELECT part, reason FROM quarantine").fetchall()
    assert part == "encounter 2" and "ZeroDivisionError" in reason


def test_document_that_kills_the_process_is_quarantined_after_bounded_attempts(paths) -> None:
    """Each attempt is committed before the work. A document whose processing kills the process
    (simulated: the parser calls os._exit, as an out-of-memory kill would end it) is retried by
    the next starts only MAX_ATTEMPTS times, then quarantined with that reason; the home goes on."""
    import secrets

    from agent.store import Store

    key = secrets.token_bytes(32)
    store = Store.open_with_key(paths, key)
    pipe = Pipeline(store)
    doc_id, _ = pipe.admit(dft(5).encode(), origin="killer.hl7", source="cli", fmt="hl7v2", profile="")
    store.close()
    crash = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from core.paths import Paths
        from agent.store import Store
        from agent.pipeline import Pipeline
        import connectors.ehr.hl7v2 as h
        def parse(data, *, name, options):
            os._exit(3)
        h.parse = parse
        store = Store.open_with_key(Paths.resolve(Path({str(paths.home)!r})), bytes.fromhex({key.hex()!r}))
        Pipeline(store).recover()
        sys.exit(0)
    """)
    for _ in range(MAX_ATTEMPTS):
        r = subprocess.run([sys.executable, "-c", crash], cwd=str(Path(__file__).parents[2]), timeout=120)
        assert r.returncode == 3  # died while reading it, leaving it pending
    store = Store.open_with_key(paths, key)
    try:
        assert _doc_status(store, doc_id) == DocumentStatus.PENDING
        [out] = Pipeline(store).recover()  # the parser works now, but the document has used its attempts
        assert out.status == "quarantined"
        [reason] = [r[0] for r in store.conn.execute("SELECT reason FROM quarantine WHERE document_id = ?", (doc_id,))]
        assert f"started {MAX_ATTEMPTS} times and never finished" in reason
        assert Pipeline(store).recover() == []
        assert Pipeline(store).ingest_bytes(dft(6).encode(), origin="next.hl7").accepted == 1
    finally:
        store.close()
