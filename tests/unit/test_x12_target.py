"""The x12 target on a real folder, a real store ledger and the real validator: a file that
fails validation never leaves; retries keep their control numbers."""

from __future__ import annotations

import os
import secrets

import pytest

from agent.claims import StoreLedger
from agent.store import Store
from connectors.rcm import make_target
from connectors.rcm.base import TargetError, TargetSettings
from connectors.rcm.x12 import target as tmod
from connectors.rcm.x12.transport import FolderTransport, open_transport
from connectors.rcm.x12.validate import validate
from core.errors import ConfigError
from tests.unit.test_x12_writer import enc

PRACTICE = {"name": "Springfield Family Medicine", "npi": "1234567893", "tax_id": "123456789",
            "taxonomy": "207Q00000X", "phone": "2175550100", "pos": "11",
            "address": {"street": "1 Clinic Way", "city": "Springfield", "state": "IL", "zip": "62704"}}


@pytest.fixture()
def ledger(paths):
    key = secrets.token_bytes(32)
    Store.open_with_key(paths, key).close()
    return StoreLedger(lambda: Store.open_with_key(paths, key))


def target(tmp_path, ledger, **x12):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    opts = {"sender_id": "CBSENDER", "receiver_id": "CLEARHOUSE", "usage": "T", "outbound": str(out), **x12}
    return make_target("x12", TargetSettings(base_url="", options={"practice": PRACTICE, "x12": opts},
                                             ledger=ledger), ""), out


def files(out):
    return sorted(p.name for p in out.iterdir() if p.is_file())


def test_push_writes_one_valid_interchange_with_remote_ids(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    res = t.push([enc(1), enc(2)])
    assert [r.delivered for r in res] == [True, True]
    assert files(out) == ["837P-000000001.x12"]
    assert validate((out / "837P-000000001.x12").read_bytes()) == []
    assert res[0].remote_ids == {"Claim": t.identifier(enc(1)), "isa": "000000001", "gs": "1", "st": "0001",
                                 "file": "837P-000000001.x12"}
    assert t.identifier(enc(1)) in (out / "837P-000000001.x12").read_text()
    # the same batch again (a retry): the same control number and file; another batch: a new one
    assert t.push([enc(1), enc(2)])[0].remote_ids["isa"] == "000000001"
    assert t.push([enc(3)])[0].remote_ids["isa"] == "000000002"
    assert files(out) == ["837P-000000001.x12", "837P-000000002.x12"]


def test_a_claim_that_fails_validation_never_leaves_and_says_why(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    res = t.push([enc(0), enc(1, dx=False), enc(2)])
    assert [r.delivered for r in res] == [True, False, True]
    assert "failed X12 validation" in res[1].reason and "HI" in res[1].reason
    assert "Doe" not in res[1].reason and "W000000001" not in res[1].reason
    [name] = files(out)
    text = (out / name).read_text()
    assert t.identifier(enc(1)) not in text and t.identifier(enc(0)) in text and validate(text) == []


def test_an_envelope_error_sends_nothing_and_rejects_the_whole_batch(tmp_path, ledger, monkeypatch) -> None:
    real = tmod.write_837

    def broken(*a, **kw):  # a defect in the writer: a wrong segment count in SE
        b = real(*a, **kw)
        b.text = b.text.replace("SE*", "SE*9", 1)
        return b

    monkeypatch.setattr(tmod, "write_837", broken)
    t, out = target(tmp_path, ledger)
    res = t.push([enc(0), enc(1)])
    assert [r.delivered for r in res] == [False, False] and "not sent" in res[0].reason
    assert files(out) == [] and os.listdir(out) == []


def test_writer_refusals_come_back_rejected_and_the_rest_go(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    bad = enc(1)
    bad.coverages = []
    res = t.push([enc(0), bad])
    assert res[0].delivered and not res[1].delivered and "coverage" in res[1].reason
    assert len(files(out)) == 1


def test_a_failed_upload_is_retried_with_the_same_control_number(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    out.rmdir()
    with pytest.raises(TargetError) as ei:
        t.push([enc(5)])
    assert ei.value.retryable
    out.mkdir()
    first = t.push([enc(6)])[0].remote_ids["isa"]  # another batch takes the next number
    assert t.push([enc(5)])[0].remote_ids["isa"] == "000000001" and first == "000000002"
    assert files(out) == ["837P-000000001.x12", "837P-000000002.x12"]


def test_a_correction_goes_out_as_frequency_7_with_the_payers_number(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    res = t.push([enc(1)], corrections={enc(1).business_key: "PCN-77"})
    text = (out / res[0].remote_ids["file"]).read_text()
    assert "*11:B:7*" in text and "REF*F8*PCN-77~" in text and validate(text) == []


def test_check_reports_the_folders(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger, inbound=str(tmp_path / "missing"))
    ok, why = t.check()
    assert not ok and "inbound" in why
    (tmp_path / "missing").mkdir()
    assert t.check()[0]


def test_folder_transport_is_atomic_budgeted_and_archives(tmp_path) -> None:
    ft = FolderTransport(tmp_path, max_bytes=10)
    ft.put("a.x12", b"12345")
    (tmp_path / ".hidden.part").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert ft.list() == ["a.x12"] and ft.get("a.x12") == b"12345"
    ft.put("a.x12", b"678")  # replaced in place
    assert ft.get("a.x12") == b"678"
    ft.put("big.x12", b"x" * 11)
    with pytest.raises(TargetError, match="larger than"):
        ft.get("big.x12")
    assert ft.archive("a.x12") == "a.x12" and (tmp_path / "processed" / "a.x12").read_bytes() == b"678"
    assert "a.x12" not in ft.list()
    with pytest.raises(TargetError):
        ft.put("../escape", b"x")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".a.x12")]


def test_open_transport_dispatches_by_parsed_url(tmp_path) -> None:
    assert isinstance(open_transport(str(tmp_path)), FolderTransport)
    ft = open_transport(f"file://{tmp_path}")
    assert isinstance(ft, FolderTransport) and ft.path == tmp_path
    with pytest.raises(ConfigError, match="another computer"):
        open_transport("file://server/share")
    with pytest.raises(ConfigError, match="not supported"):
        open_transport("ftp://host/dir")
    from connectors.rcm.x12.sftp import SftpTransport

    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    st = open_transport("sftp://me@127.0.0.1:2222/in", known_hosts=str(kh), timeout=1)
    assert isinstance(st, SftpTransport)



def _payer_number(paths_key, claim: str, number: str) -> None:
    """What an 835 (CLP07) or 277CA (REF*1K) leaves in the claims table."""
    store = paths_key()
    try:
        with store.tx():
            store.conn.execute("INSERT INTO claims (claim_id, target, state, payer_claim_id, first_submitted_at, "
                               "submitted_at, updated_at) VALUES (?, 'x12', 'paid', ?, '', '', '')", (claim, number))
    finally:
        store.close()


def test_a_void_is_a_valid_frequency_8_claim_with_the_payers_number(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    e = enc(1)
    claim = t.push([e])[0].remote_ids["Claim"]
    _payer_number(ledger._open, claim, "PAYER-0042")
    ok, why = t.cancel(claim, encounter=e)
    assert ok and "837P-000000002.x12" in why
    text = (out / "837P-000000002.x12").read_text()
    assert f"CLM*{claim}*" in text and "*11:B:8*" in text and "REF*F8*PAYER-0042~" in text
    assert validate(text) == []
    # sent again after a failure elsewhere: the same interchange number, the same file
    assert t.cancel(claim, encounter=e) == (True, why)
    assert files(out) == ["837P-000000001.x12", "837P-000000002.x12"]


def test_a_void_without_the_encounter_or_for_another_claim_is_refused(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    ok, why = t.cancel(t.identifier(enc(1)))
    assert not ok and "frequency 8" in why
    ok, why = t.cancel(t.identifier(enc(1)), encounter=enc(2))
    assert not ok and "does not belong" in why
    assert files(out) == []


def test_an_invalid_void_never_leaves(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    e = enc(3, dx=False)  # no diagnosis: pyx12 refuses the claim (HI missing)
    ok, why = t.cancel(t.identifier(e), encounter=e)
    assert not ok and "failed X12 validation" in why and "HI" in why
    assert files(out) == []


def test_render_builds_the_validated_files_sends_nothing_and_spends_no_production_number(tmp_path, ledger) -> None:
    t, out = target(tmp_path, ledger)
    bad = enc(2, dx=False)
    rendered = t.render([enc(0), bad, enc(1)])
    [(name, data)] = rendered
    # 000000001 went to the first try, with the claim pyx12 refused (no diagnosis)
    assert name == "837P-test-000000002.x12" and validate(data) == []
    text = data.decode()
    assert text.count("CLM*") == 2 and t.identifier(bad) not in text and "*000000002*0*T*:~" in text
    assert files(out) == []
    assert t.render([enc(0), bad, enc(1)]) == rendered  # the same batch: the same test number
    # the same claims for real: a number of their own, never the test file's
    res = t.push([enc(0), enc(1)])
    assert {r.remote_ids["isa"] for r in res} == {"000000003"} and files(out) == ["837P-000000003.x12"]
    assert t.render([]) == []


def test_a_big_push_is_split_into_interchanges_validated_side_by_side(tmp_path, ledger, monkeypatch) -> None:
    from connectors.rcm.x12 import validate as vmod

    monkeypatch.setattr(tmod, "CLAIMS_PER_FILE", 2)
    calls: list[int] = []
    real = vmod.validate_many

    def spy(texts, **kw):
        calls.append(len(texts))
        return real(texts, **kw)

    monkeypatch.setattr(tmod, "validate_many", spy)
    t, out = target(tmp_path, ledger)
    batch = [enc(0), enc(1), enc(2, dx=False), enc(3), enc(4)]
    try:
        res = t.push(batch)
    finally:
        vmod.shutdown_pool()
    assert [r.delivered for r in res] == [True, True, False, True, True]
    assert calls == [3, 1]  # three files at once; the one with the bad claim again without it
    by_file = {r.remote_ids["file"] for r in res if r.delivered}
    assert by_file == {"837P-000000001.x12", "837P-000000003.x12", "837P-000000004.x12"}
    assert files(out) == sorted(by_file)  # 000000002 (with the bad claim) never left
    for name in by_file:
        assert validate((out / name).read_bytes()) == []
    # the same push again (a retry): the same slices, the same numbers
    again = t.push(batch)
    assert [r.remote_ids.get("isa") for r in again] == [r.remote_ids.get("isa") for r in res]
