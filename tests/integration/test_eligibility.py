"""Eligibility 270/271 through real files: a folder transport (connectors/rcm/x12/transport.py),
a real SQLCipher store, scheduled visits ingested from SIU^S12 messages, and a payer simulator
that reads each 270 and answers with a 271 (active / inactive / rejected by member id)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from agent import eligibility
from agent.claims import StoreLedger
from agent.pipeline import Pipeline
from agent.repos import RULE_FINDINGS, merge_findings
from agent.store import Store
from connectors.rcm.x12 import eligibility as x270
from connectors.rcm.x12.transport import FolderTransport
from core.states import EligibilityStatus
from tests.conftest import run_cli
from tests.helpers import dft

DAY = "2026-06-15"
SETTINGS = eligibility.Settings(x270.Provider("Good Clinic", "1234567893", "12-3456789"), "CBSENDER", "CLEARHOUSE")

# member id prefix -> what the simulated payer says
#   A...: active, plan + $25 copay;  I...: inactive (EB*6);  X...: AAA*72 (invalid member id)


def simulate_payer(outbound: Path, inbound: Path) -> int:
    """Answer every 270 in ``outbound`` with a 271 in ``inbound`` (one per 270). Reads the file
    as a payer would: each 2000C loop's TRN, NM1*IL member id and DTP*291, echoing the trace."""
    answered = 0
    for f in sorted(outbound.glob("270-*.x12")):
        segs = [s.strip().split("*") for s in f.read_text().split("~") if s.strip()]
        isa13 = segs[0][13]
        out = [f"ISA*00*          *00*          *ZZ*CLEARHOUSE     *ZZ*CBSENDER       *260614*2000*^*00501*{isa13}*0*T*:",
               f"GS*HB*CLEARHOUSE*CBSENDER*20260614*2000*{int(isa13)}*X*005010X279A1",
               "ST*271*0001*005010X279A1", "BHT*0022*11*R1*20260614*2000"]
        hl = 0
        trace = member = ""
        subscribers: list[tuple[str, str, str]] = []
        for s in segs:
            if s[0] == "TRN":
                trace = s[2]
            elif s[0] == "NM1" and s[1] == "IL":
                member = s[9]
            elif s[0] == "DTP" and s[1] == "291":
                subscribers.append((trace, member, s[3]))
        hl += 1
        out += [f"HL*{hl}**20*1", "NM1*PR*2*ACME HEALTH*****PI*ACME1"]
        hl += 1
        out += [f"HL*{hl}*1*21*1", "NM1*1P*2*GOOD CLINIC*****XX*1234567893"]
        for trace, member, dos in subscribers:
            hl += 1
            out += [f"HL*{hl}*2*22*0", f"TRN*2*{trace}*1123456789", f"NM1*IL*1*SOMEONE*ANY****MI*{member}"]
            if member.startswith("X"):
                out += ["AAA*Y**72*C"]
                continue
            out += [f"DTP*346*D8*{dos[:4]}0101"]
            if member.startswith("A"):
                out += ["EB*1**30**GOLD PPO 500", "EB*B**98****15", "EB*B**30****25", "REF*18*PLAN77"]
            else:
                out += ["EB*6**30"]
        out.append(f"SE*{len(out) - 1}*0001")
        out += [f"GE*1*{int(isa13)}", f"IEA*1*{isa13}"]
        (inbound / f"271-{isa13}.x12").write_text("~\n".join(out) + "~\n")
        answered += 1
        f.rename(f.with_suffix(".sent"))
    return answered


def siu(appt: str, mrn: str, member: str, when: str = "20260615093000", payer: str = "ACME1") -> bytes:
    f = [""] * 37
    f[:5] = ["IN1", "1", "PLAN1", payer, "ACME HEALTH"]
    f[36] = member  # IN1-36 policy number (the member id)
    in1 = "|".join(f) if member else ""
    segs = ["MSH|^~\\&|EHR|TESTFAC|CB|BILL|202606100800||SIU^S12|M" + appt + "|P|2.5.1",
            f"SCH|{appt}|{appt}|||||Visit||15|min|^^15^{when}^{when}",
            f"PID|1||{mrn}^^^TESTFAC^MR||Tester^Pat||19800101|F"]
    if in1:
        segs.append(in1)
    segs += ["RGS|1", f"AIS|1||99213^Office visit^C4|{when}"]
    return "\r".join(segs).encode() + b"\r"


@pytest.fixture()
def day_of_visits(fast_store: Store, tmp_path: Path):  # type: ignore[no-untyped-def]
    pipe = Pipeline(fast_store)
    for appt, mrn, member in (("AP1", "MRN1", "A100"), ("AP2", "MRN2", "I200"), ("AP3", "MRN3", "X300"),
                              ("AP4", "MRN4", "")):
        pipe.ingest_bytes(siu(appt, mrn, member), origin=f"{appt}.hl7")
    pipe.ingest_bytes(siu("AP5", "MRN5", "A500", when="20260616100000"), origin="AP5.hl7")  # another day
    rows = fast_store.conn.execute("SELECT kind, dos FROM encounters ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["expected"] * 5 and rows[0][1] == DAY, rows
    out, inb = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inb.mkdir()
    ledger = StoreLedger(lambda: _Borrowed(fast_store))  # type: ignore[arg-type,return-value]
    return fast_store, out, inb, ledger


class _Borrowed:
    """The test's store for the ledger, which closes what it opens: closing is a no-op here."""

    def __init__(self, store: Store) -> None:
        self._s = store

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._s, name)

    def close(self) -> None:
        return None


def test_270_written_per_visit_and_271_flags_visits_without_active_coverage(day_of_visits) -> None:  # type: ignore[no-untyped-def]
    store, out, inb, ledger = day_of_visits
    when = datetime(2026, 6, 14, 18, 0)
    res = eligibility.ask(store, SETTINGS, DAY, outbound=FolderTransport(out), ledger=ledger, when=when)
    assert (res.visits, res.asked, res.no_coverage) == (4, 3, 1)
    text = (out / res.file).read_text()
    assert x270.check_270(text) == []
    assert text.count("HL*") == 5 and text.count("EQ*30~") == 3 and "DTP*291*D8*20260615~" in text
    assert "MRN" not in text  # the MRN is ours, the payer gets the member id
    # a second run before the answer re-sends the same visits under the same control number
    again = eligibility.ask(store, SETTINGS, DAY, outbound=FolderTransport(out), ledger=ledger, when=when)
    assert (again.control, again.asked) == (res.control, 3)
    assert (out / again.file).read_text() == text

    assert simulate_payer(out, inb) == 1
    (inb / "999-unrelated.x12").write_text("ISA*00*...not for us")  # a claims answer: left alone
    got = eligibility.read_answers(store, FolderTransport(inb))
    assert (got.files, got.answers, got.matched, got.unmatched) == (1, 3, 3, 0)
    assert sorted(p.name for p in inb.iterdir()) == ["999-unrelated.x12", "processed"]

    rows = {r["visit"].split("|")[-1]: r for r in eligibility.listing(store, DAY)}
    assert rows["AP1"]["status"] == EligibilityStatus.ACTIVE
    assert (rows["AP1"]["plan"], rows["AP1"]["copay"]) == ("GOLD PPO 500", "25.00")  # service type 30 copay wins
    assert rows["AP2"]["status"] == EligibilityStatus.INACTIVE
    assert rows["AP3"]["status"] == EligibilityStatus.UNKNOWN
    assert rows["AP3"]["reasons"] == ["AAA 72: invalid/missing subscriber/insured id"]
    assert rows["AP4"]["status"] == EligibilityStatus.NO_COVERAGE
    flagged = {r["visit"].split("|")[-1]: r["status"] for r in eligibility.flagged(store, DAY)}
    assert flagged == {"AP2": "inactive", "AP3": "unknown", "AP4": "no_coverage"}
    # the flag is visible on the encounter itself (the encounter lists show findings)
    f = dict(store.conn.execute("SELECT source_id, findings FROM encounters").fetchall())
    assert [x["code"] for x in json.loads(f["AP2"])] == ["eligibility.inactive"]
    assert not any(x["code"].startswith("eligibility.") for x in json.loads(f["AP1"]))
    # the same 271 imported twice changes nothing; the next day's visit was never asked about
    archived = next((inb / "processed").iterdir())
    dup = eligibility.apply_271(store, archived.read_bytes(), archived.name)
    assert (dup.matched, dup.duplicates) == (0, 3)
    assert eligibility.listing(store, "2026-06-16") == []
    # answered visits are not asked again
    third = eligibility.ask(store, SETTINGS, DAY, outbound=FolderTransport(out), ledger=ledger, when=when)
    assert (third.asked, third.already_answered) == (0, 4)


def test_271_parser_statuses_and_rejections() -> None:
    text = ("ISA*00*          *00*          *ZZ*P              *ZZ*S              *260614*2000*^*00501*000000001*0*T*:~"
            "GS*HB*P*S*20260614*2000*1*X*005010X279A1~ST*271*0001*005010X279A1~BHT*0022*11*R*20260614*2000~"
            "HL*1**20*1~NM1*PR*2*P*****PI*1~AAA*Y**42*R~HL*2*1*21*1~NM1*1P*2*C*****XX*1234567893~"
            "HL*3*2*22*0~TRN*2*T1*1123456789~TRN*1*PAYERS-OWN*9999999999~NM1*IL*1*A*B****MI*M~"
            "EB*1*IND*30:1*HM*HMO SILVER~EB*B**1****40~EB*6**88~"
            "SE*11*0001~GE*1*1~IEA*1*000000001~")
    a = x270.parse_271(text)
    assert len(a) == 1 and a[0].trace == "T1" and a[0].status == "active" and a[0].plan == "HMO SILVER"
    assert a[0].copay == "40.00"
    assert "AAA 42: unable to respond at current time" in a[0].reasons  # a payer-level AAA applies below
    with pytest.raises(x270.EligibilityError):
        x270.parse_271(text.replace("ST*271", "ST*835"))
    with pytest.raises(x270.EligibilityError):
        x270.parse_271(b"not x12 at all")
    assert x270.is_271(text) and not x270.is_271(text.replace("ST*271", "ST*999"))


def test_270_refuses_bad_practice_and_checks_structure() -> None:
    q = x270.Inquiry("T1", "ACME", "ACME1", "M1", "Doe", "Jane", "1980-01-01", "F", DAY)
    env = x270.Envelope("S", "R", 5)
    with pytest.raises(x270.EligibilityError) as e:
        x270.write_270([q], provider=x270.Provider("C", "1234567890", "123456789"), envelope=env)
    assert "NPI" in e.value.title
    text = x270.write_270([q], provider=SETTINGS.provider, envelope=env)
    assert x270.check_270(text) == []
    broken = text.replace("EQ*30~\n", "")
    assert any("EQ" in p for p in x270.check_270(broken))
    assert x270.check_inquiry(x270.Inquiry("T2", "ACME", "ACME1", "", "Doe", "", "", "", DAY)) \
        == "the visit's coverage has no member id"


# -- H9: the rule, the inbound routing, the CLI, the API and the evening job ------------------------
def charge(mrn: str, dos8: str, visit: str, member: str = "A100") -> bytes:
    """A DFT^P03 for ``mrn`` on ``dos8`` (YYYYMMDD) with an IN1 carrying ``member``."""
    f = ["IN1", "1", "PLAN1", "ACME1", "ACME HEALTH"] + [""] * 45
    f[17], f[36] = "SEL", member
    return (dft(0, visit=visit).replace("MRN000000", mrn).replace("20261001", dos8) + "|".join(f) + "\r").encode()


def _findings(store: Store, source_id: str) -> tuple[str, list[str]]:
    state, fj, ruled = store.conn.execute(
        f"SELECT state, findings, {RULE_FINDINGS.format(e='encounters')} FROM encounters "
        "WHERE source_id = ? AND kind = 'charge'", (source_id,)).fetchone()
    return str(state), [str(x["code"]) for x in merge_findings(fj, ruled)]


def test_271_through_the_inbound_poll_updates_the_charge_rule(day_of_visits) -> None:  # type: ignore[no-untyped-def]
    """A charge ingested before the answer gets ``coverage.inactive_on_dos`` once the 271 says
    inactive for that date; the same patient on another date and an active patient do not."""
    from agent import eligibility_job, x12_inbound
    from agent.config import parse as parse_config

    store, out, inb, ledger = day_of_visits
    cfg = parse_config({})
    pipe = Pipeline.for_config(store, cfg)
    pipe.ingest_bytes(charge("MRN2", "20260615", "CV2", "I200"), origin="cv2.hl7")
    pipe.ingest_bytes(charge("MRN2", "20260616", "CV2B", "I200"), origin="cv2b.hl7")  # the next day
    pipe.ingest_bytes(charge("MRN1", "20260615", "CV1"), origin="cv1.hl7")
    assert all(RULE not in _findings(store, v)[1] for v in ("CV2", "CV2B", "CV1"))

    eligibility.ask(store, SETTINGS, DAY, outbound=FolderTransport(out), ledger=ledger)
    assert simulate_payer(out, inb) == 1
    res = x12_inbound.poll(store, FolderTransport(inb))  # the claims poll: a 271 is routed, not quarantined
    assert [(f.ok, f.kinds, f.matched) for f in res.files] == [(True, ["271"], 3)]
    assert store.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert eligibility.status_on(store, "MRN2", DAY) == EligibilityStatus.INACTIVE

    rerun = eligibility_job.after_answers(store, cfg)
    assert rerun is not None and rerun["changed"] >= 1
    state, codes = _findings(store, "CV2")
    assert RULE in codes and state == "needs_review"
    assert RULE not in _findings(store, "CV2B")[1]  # an answer for another date
    assert RULE not in _findings(store, "CV1")[1]  # active
    assert eligibility_job.after_answers(store, cfg) is None  # nothing new since
    # a charge arriving after the answer is checked at ingest
    pipe.ingest_bytes(charge("MRN2", "20260615", "CV3", "I200"), origin="cv3.hl7")
    assert RULE in _findings(store, "CV3")[1]
    # with the rule off, a late answer changes nothing
    off = parse_config({"rules": {"off": [RULE]}})
    assert eligibility_job.after_answers(store, off) is None


RULE = "coverage.inactive_on_dos"
PRACTICE = '''[practice]
name = "Good Clinic"
npi = "1234567893"
tax_id = "12-3456789"
'''


def _x12_config(out: Path, inb: Path) -> str:
    return (PRACTICE + f'[x12]\nsender_id = "CBSENDER"\nreceiver_id = "CLEARHOUSE"\noutbound = "{out}"\n'
            f'inbound = "{inb}"\neligibility_at = "18:00"\neligibility_days = "mon-fri"\n')


@pytest.mark.keyring
def test_cli_asks_reads_and_prints_per_visit(tmp_path: Path) -> None:
    home, out, inb = tmp_path / "home", tmp_path / "out", tmp_path / "in"
    for d in (out, inb):
        d.mkdir()
    home.mkdir(mode=0o700)
    (home / "chargebridge.toml").write_text(_x12_config(out, inb))
    for appt, mrn, member in (("AP1", "MRN1", "A100"), ("AP2", "MRN2", "I200"), ("AP3", "MRN3", "X300"),
                              ("AP4", "MRN4", "")):
        (tmp_path / f"{appt}.hl7").write_bytes(siu(appt, mrn, member))
    r = run_cli("ingest", *(str(tmp_path / f"AP{i}.hl7") for i in range(1, 5)), home=home)
    assert r.returncode == 0, r.stderr

    r = run_cli("eligibility", "--date", DAY, "--json", home=home)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert (first["run"]["asked"]["asked"], first["run"]["asked"]["no_coverage"]) == (3, 1)
    assert {v["appointment"]: v["status"] for v in first["visits"]} == {
        "AP1": "pending", "AP2": "pending", "AP3": "pending", "AP4": "no_coverage"}

    assert simulate_payer(out, inb) == 1
    r = run_cli("eligibility", "--date", DAY, home=home)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "answers read: 3" in text and "no 270 sent" in text
    lines = {ln.split()[2]: ln for ln in text.splitlines() if ln.startswith(DAY)}
    assert "active" in lines["AP1"] and "GOLD PPO 500" in lines["AP1"] and "$25.00" in lines["AP1"]
    assert "MRN1" in lines["AP1"]
    assert "INACTIVE" in lines["AP2"] and "unknown" in lines["AP3"] and "NO COVERAGE" in lines["AP4"]
    assert "invalid/missing subscriber/insured id" in text
    assert "Tester" not in text and "Pat " not in text  # MRN and appointment, never the name
    assert "3 visit(s) without active coverage" in text

    r = run_cli("eligibility", "--date", DAY, "--flagged", "--json", home=home)
    flagged = json.loads(r.stdout)
    assert flagged["run"] is None
    assert sorted((v["appointment"], v["status"]) for v in flagged["visits"]) == [
        ("AP2", "inactive"), ("AP3", "unknown"), ("AP4", "no_coverage")]
    assert list(out.glob("270-*.x12")) == []  # --flagged sent nothing

    r = run_cli("audit", "list", "--json", home=home)  # the runs are in the audit trail, counts only
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("eligibility.check") == 2


MONDAY, FRIDAY = "2099-06-15", datetime(2099, 6, 12, 18, 5)


@pytest.fixture()
def x12_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    from agent import config as configmod
    from agent.engine import Engine
    from agent.users import add_user
    from core.paths import Paths

    out, inb = tmp_path / "out", tmp_path / "in"
    for d in (out, inb):
        d.mkdir()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n" + _x12_config(out, inb))
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    try:
        eng.tokens = {r: add_user(eng.store(), f"{r}-user", r) for r in ("front_desk", "admin")}
        eng.url = f"http://127.0.0.1:{eng.port}/api/v1"
        pipe = Pipeline.for_config(eng.store(), eng.config)
        for appt, mrn, member in (("AP1", "MRN1", "A100"), ("AP2", "MRN2", "I200"), ("AP3", "MRN3", "X300"),
                                  ("AP4", "MRN4", "")):
            pipe.ingest_bytes(siu(appt, mrn, member, when="20990615093000"), origin=f"{appt}.hl7")
        yield eng, out, inb
    finally:
        eng.stop()


@pytest.mark.keyring
def test_api_check_list_flagged_and_status(x12_engine) -> None:  # type: ignore[no-untyped-def]
    import requests

    eng, out, inb = x12_engine
    c = requests.Session()
    c.headers["Authorization"] = f"Bearer {eng.tokens['front_desk']}"
    u = eng.url
    before = c.get(f"{u}/eligibility", params={"date": MONDAY}, timeout=30).json()
    assert before["total"] == 4 and {v["status"] for v in before["items"]} == {None}  # not asked yet
    r = c.post(f"{u}/eligibility/check", json={"date": MONDAY}, timeout=30)
    assert r.status_code == 200, r.text
    assert (r.json()["asked"]["asked"], r.json()["asked"]["file"]) == (3, "270-000000001.x12")
    assert c.get(f"{u}/status", timeout=30).json()["eligibility"] == {"pending": 3, "no_coverage": 1}
    assert simulate_payer(out, inb) == 1
    r = c.post(f"{u}/eligibility/check", json={"date": MONDAY, "ask": False}, timeout=30)
    assert r.json()["read"]["matched"] == 3 and r.json()["asked"]["file"] == ""
    page = c.get(f"{u}/eligibility", params={"date": MONDAY, "page_size": 2}, timeout=30).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    flagged = c.get(f"{u}/eligibility", params={"date": MONDAY, "flagged": "true"}, timeout=30).json()
    assert sorted(v["appointment"] for v in flagged["items"]) == ["AP2", "AP3", "AP4"]
    assert c.get(f"{u}/status", timeout=30).json()["eligibility"] == {"inactive": 1, "unknown": 1, "no_coverage": 1}
    assert c.get(f"{u}/eligibility", params={"date": "2099-13-01"}, timeout=30).status_code == 422
    assert c.post(f"{u}/eligibility/check", json={"date": "2099-02-30"}, timeout=30).status_code == 422
    assert requests.get(f"{u}/eligibility", timeout=10).status_code == 401
    # the clearinghouse's inbound folder gone: 502 with what to do
    inb.rename(inb.with_name("gone"))
    r = c.post(f"{u}/eligibility/check", json={"date": MONDAY}, timeout=30)
    assert r.status_code == 502 and r.json()["fix"], r.text


@pytest.mark.keyring
def test_evening_job_asks_for_the_next_clinic_day_once(x12_engine) -> None:  # type: ignore[no-untyped-def]
    from agent import eligibility_job

    eng, out, inb = x12_engine
    assert eligibility_job.tick(eng, at=FRIDAY.replace(hour=17, minute=59)) is None  # before eligibility_at
    assert list(out.iterdir()) == []
    ran = eligibility_job.tick(eng, at=FRIDAY)  # Friday evening: Monday's visits
    assert ran is not None and (ran["day"], ran["asked"]["asked"]) == (MONDAY, 3)
    assert len(list(out.glob("270-*.x12"))) == 1
    assert eligibility_job.tick(eng, at=FRIDAY.replace(hour=21)) is None  # once per evening
    assert eligibility_job.tick(eng, at=datetime(2099, 6, 13, 18, 5)) is None  # Saturday: closed, nothing
    assert len(list(out.glob("270-*.x12"))) == 1
    assert eligibility.day_to_ask(datetime(2099, 6, 15).date(), {0, 1, 2, 3, 4}).isoformat() == "2099-06-16"
