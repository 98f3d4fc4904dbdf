"""Budgets: small inputs must not cause huge work. The bomb cases run in a child process under
``resource.setrlimit(RLIMIT_AS)`` (never in the pytest process itself), so a regression shows
as a clean failure (MemoryError / a killed child) instead of taking the machine down. The
child analyses the document through the real ``Pipeline.analyze`` (parse, standardize,
validate) and prints what came out; nothing here measures time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.pipeline import Pipeline
from connectors.ehr.limits import Budgets
from tests.helpers import CSV_HEADER, csv_row, dft
from tests.hostile.cases import dft_with_ft1, fhir_bundle, zip_of

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 1024 * 1024 * 1024  # 1 GiB of address space for the child: the bombs took 2.4-3 GB

_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from agent.pipeline import Pipeline
data = open(sys.argv[1], "rb").read()
a = Pipeline(None).analyze(data, sys.argv[2], "", sys.argv[3])
print(json.dumps({{"reason": a.file_reason, "rows": len(a.rows), "others": len(a.others),
                  "rejected": [getattr(o, "reason", "") for o in a.others[:3]],
                  "lines": max((len(json.loads(r[7])["lines"]) for r in a.rows), default=0)}}))
"""


def analyze_bounded(tmp_path: Path, data: bytes, fmt: str, name: str) -> dict:
    f = tmp_path / name
    f.write_bytes(data)
    r = subprocess.run([sys.executable, "-c", _CHILD.format(limit=MEMORY_LIMIT), str(f), fmt, name],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the child failed under a {MEMORY_LIMIT >> 20} MiB limit: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_zip_of_one_character_rows_is_refused_by_ratio(tmp_path: Path) -> None:
    """Issue 14: a ~395 KB ZIP holding 20 MiB of one-character rows under a CSV header made
    10.5 million quarantine rows. Now: one reason, naming the ratio."""
    body = b"Id,START\n" + b"x\n" * (10 * 1024 * 1024)
    data = zip_of({"encounters.csv": body})
    assert len(data) < 400_000
    out = analyze_bounded(tmp_path, data, "csv", "bomb.zip")
    assert out["rows"] == 0 and out["others"] == 0
    assert "times its packed size" in out["reason"] and "ZIP bomb" in out["reason"]


def test_zip_of_many_rows_is_refused_by_row_budget(tmp_path: Path) -> None:
    """The same flood, packed at a ratio under the limit: the row budget stops it while reading."""
    from connectors.ehr.synthea import REQUIRED_TABLES

    tables = {name: (",".join(cols) + "\n").encode() for name, cols in REQUIRED_TABLES.items()}
    tables["encounters.csv"] += b"x\n" * 1_200_000
    data = zip_of(tables, level=0)  # stored, ratio 1
    out = analyze_bounded(tmp_path, data, "csv", "rows.zip")
    assert out["rows"] == 0 and "more than 1,000,000 data rows" in out["reason"]


def test_zip_declaring_a_huge_unpacked_size_is_refused_before_unpacking(tmp_path: Path) -> None:
    """Sizes come from the archive's directory: a member declaring 3 GiB is refused unread."""
    data = bytearray(zip_of({"patients.csv": b"Id\n1\n"}, level=0))
    cd = data.rfind(b"PK\x01\x02")  # central directory entry: uncompressed size at offset 24
    data[cd + 24:cd + 28] = (3 * 1024 ** 3).to_bytes(4, "little")
    out = analyze_bounded(tmp_path, bytes(data), "csv", "huge.zip")
    assert "MiB limit" in out["reason"] and "max_unpacked_mb" in out["reason"]


def test_encrypted_zip_says_it_is_encrypted(tmp_path: Path) -> None:
    src = tmp_path / "set"
    src.mkdir()
    (src / "patients.csv").write_text("Id,BIRTHDATE,FIRST,LAST,GENDER\n1,2000-01-01,A,B,F\n")
    z = tmp_path / "enc.zip"
    subprocess.run(["zip", "-q", "-j", "-P", "secret", str(z), str(src / "patients.csv")], check=True)
    out = analyze_bounded(tmp_path, z.read_bytes(), "csv", "enc2.zip")
    assert "password-protected" in out["reason"]
    assert "unexpectedly" not in out["reason"]


def test_million_ft1_lines_do_not_become_one_claim(tmp_path: Path) -> None:
    """Issue 14: an HL7 file with a million FT1 lines became one ready claim with 1,000,000 lines."""
    msg = dft_with_ft1()
    ft1 = next(s for s in msg.split("\r") if s.startswith("FT1|"))
    head, _, tail = msg.partition(ft1 + "\r")
    data = (head + (ft1 + "\r") * 1_000_000 + tail).encode()
    out = analyze_bounded(tmp_path, data, "hl7v2", "million.hl7")
    assert out["rows"] == 0 and out["lines"] == 0
    assert "FT1" in out["rejected"][0] and "max_lines_per_encounter" in out["rejected"][0]


def test_deep_json_says_it_is_nested_too_deeply(tmp_path: Path) -> None:
    data = b'{"resourceType": "Bundle", "entry": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    out = analyze_bounded(tmp_path, data, "fhir", "deep.json")
    assert "nested too deeply" in out["reason"]
    assert "unexpectedly" not in out["reason"]


def test_fhir_huge_exponent_is_not_expanded(tmp_path: Path) -> None:
    """Issue 14: a 6.7 KB FHIR file with quantity 1e999999999 took 2.4 GB (a billion-digit string)."""
    data = fhir_bundle(quantity="1e999999999", unit_price="1e999999999", total="1e999999999")
    out = analyze_bounded(tmp_path, data, "fhir", "exp.json")
    assert out["rows"] == 0 and "quantity" in out["rejected"][0]


def test_hl7_huge_exponent_is_not_expanded(tmp_path: Path) -> None:
    data = dft_with_ft1(units="1e999999999", price="", extended="1e999999999").encode()
    out = analyze_bounded(tmp_path, data, "hl7v2", "exp.hl7")
    assert out["rows"] == 1 and out["reason"] == ""


def test_quarantine_entries_per_file_are_capped_with_a_summary(fast_store) -> None:
    """5,000 unreadable rows -> the first 100 entries and one 'N more parts like this' entry."""
    bad_rows = "".join(f"CSV-{i:07d},only,three\n" for i in range(5_000))
    out = Pipeline(fast_store).ingest_bytes((CSV_HEADER + bad_rows).encode(), origin="bad.csv", fmt="csv")
    rows = fast_store.conn.execute("SELECT part, reason FROM quarantine ORDER BY id").fetchall()
    assert len(rows) == 101
    part, reason = rows[-1]
    assert part == "4,900 more parts"
    assert "4,900 more parts of this file could not be used" in reason and "columns" in reason
    assert out.quarantined == 5_000


def test_budgets_are_configurable_per_pipeline(fast_store) -> None:
    """A tighter lines-per-encounter budget applies to the reader and the pipeline."""
    pipe = Pipeline(fast_store, budgets=Budgets(max_lines_per_encounter=2, max_quarantine_per_file=1))
    out = pipe.ingest_bytes((dft(1, lines=3) + dft(2, lines=3) + dft(3, lines=2)).encode(), origin="l.hl7")
    assert out.accepted == 1
    rows = fast_store.conn.execute("SELECT part, reason FROM quarantine ORDER BY id").fetchall()
    assert rows[0][0] == "message 1" and "more than 2 FT1" in rows[0][1]
    assert rows[1][0] == "1 more parts"


def test_headerless_csv_does_not_echo_its_first_row(fast_store) -> None:
    """Issue 14: a CSV without its header row put the first row's patient data in the reason."""
    rows = "".join(csv_row(i) for i in range(3))
    out = Pipeline(fast_store).ingest_bytes(rows.encode(), origin="noheader.csv", fmt="csv")
    assert out.status == "quarantined"
    [reason] = out.reasons
    first = rows.splitlines()[0].split(",")
    for cell in first:
        if len(cell) > 2:
            assert cell not in reason, "the reason quotes a cell of the first row"
    assert "encounter_id" in reason and "header row may be missing" in reason


def test_configured_budgets_reach_the_engines_watcher(tmp_path: Path) -> None:
    """[ingest] budgets in chargebridge.toml apply to files the running engine's watcher takes,
    not only to the CLI: one Pipeline.for_config builds every pipeline."""
    from agent import config as configmod
    from agent.engine import Engine
    from core.paths import Paths
    from tests.conftest import wait_until

    export = tmp_path / "export"
    export.mkdir()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text(f'[api]\nport = 0\n[ingest]\nmax_lines_per_encounter = 2\n'
                            f'[[folders]]\npath = "{export}"\nsettle_seconds = 0.2\n')
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    try:
        (export / "visits.hl7").write_text(dft(1, lines=3) + dft(2, lines=2))
        store = eng.store()

        def done() -> bool:
            return store.conn.execute("SELECT count(*) FROM documents WHERE status != 'pending'").fetchone()[0] == 1

        assert wait_until(done)
        assert store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == 1
        reasons = [r[0] for r in store.conn.execute("SELECT reason FROM quarantine")]
        assert len(reasons) == 1 and "more than 2 FT1" in reasons[0]
    finally:
        eng.stop()
