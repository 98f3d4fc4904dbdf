"""CLI listings come a page at a time (issue 14: every list in the API and the CLI is paged)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_quarantine_and_mismatches_list_a_page_at_a_time(tmp_path: Path, keyring_ok) -> None:
    home, drop = tmp_path / "home", tmp_path / "drop"
    drop.mkdir()
    for i in range(5):
        (drop / f"bad-{i}.hl7").write_bytes(b"MSH|not really hl7 " + str(i).encode())
    assert run_cli("ingest", str(drop), home=home).returncode == 1
    everything = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert len(everything) == 5
    page = json.loads(run_cli("quarantine", "--json", "--limit", "2", "--offset", "2", home=home).stdout)
    assert [q["id"] for q in page] == [q["id"] for q in everything[2:4]]
    text = run_cli("quarantine", "--limit", "2", home=home).stdout
    assert "showing 1-2 of 5; the next page: --offset 2" in text
    bad = run_cli("quarantine", "--limit", "0", home=home)
    assert bad.returncode == 2 and "give 1 to 100000" in bad.stderr
    assert json.loads(run_cli("mismatches", "--json", "--limit", "1", home=home).stdout) == []
