"""KPIs from the payers' real answers, end to end: from FHIR ClaimResponses on the real Medplum
peer (read by the engine after a sync), and from the clearinghouse's 999 / 277CA / 835 files
(written by the simulator, imported through the inbound folder). Expected values are worked out
by hand below; tests/unit/test_kpi.py covers every formula on a hand-built store.

Both practices bill five visits of October 2026 (tests/helpers.dft: DOS 2026-10-01 .. 05):

=======  ====================  =========================================================
claim    answer                counts as
=======  ====================  =========================================================
paid     paid in full          answered, adjudicated, clean, first pass
partial  partly (CO-151)       answered, adjudicated, clean, first pass (not a denial)
denied   denied                answered, adjudicated, first pass, denied (its billed $)
rejects  rejected              answered, not first pass, left out of A/R
open     none / accepted       (FHIR: no answer — not answered; X12: paid with PR-2)
=======  ====================  =========================================================
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent import claims, kpi, x12_inbound
from agent.kpi_config import GoalsConfig
from agent.store import Store
from connectors.rcm.fhir_outcomes import CARC
from connectors.rcm.x12.transport import FolderTransport
from tests.clearinghouse import Clearinghouse, Outcome
from tests.conftest import run_cli
from tests.integration.test_claims_outcomes import _amount, _cli_json, _home, _post, _response
from tests.unit.test_x12_answers_import import _837, _deliver

OCTOBER = (date(2026, 10, 1), date(2026, 10, 31))


def _values(rep: dict[str, Any]) -> dict[str, Any]:
    return {k["key"]: k["value"] for k in rep["kpis"]}


def test_kpis_from_fhir_claim_responses_on_the_real_peer(tmp_path: Path, clean_peer: Any,
                                                         keyring_ok: None) -> None:
    peer = clean_peer
    home = _home(tmp_path, peer, 4)
    assert _cli_json(home, "sync")["delivered"] == 4
    listed = {c["claim_id"]: c for c in _cli_json(home, "claims")["items"]}
    paid, denied, rejected, silent = sorted(listed)
    remote = {cid: peer.fhir("GET", f"Claim/{listed[cid]['control']['Claim']}").json() for cid in listed}
    billed = {cid: Decimal(c["billed"]) for cid, c in listed.items()}
    _post(peer, _response(remote[paid], "complete", paid_on="2026-11-21",
                          items=[_amount("submitted", billed[paid]), _amount("benefit", billed[paid])]))
    _post(peer, _response(remote[denied], "complete", paid_on="2026-11-23",
                          items=[_amount("submitted", billed[denied]),
                                 _amount("benefit", Decimal(0), (CARC, "CO-50"))]))
    _post(peer, _response(remote[rejected], "error", errors=("A7-562",)))
    assert _cli_json(home, "sync")["delivered"] == 0  # reads the outcomes

    r = run_cli("kpi", "--from", "2026-10-01", "--to", "2026-10-31", "--json", home=home, timeout=180)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    v = _values(rep)
    # answered: paid, denied, rejected (3); the silent claim is still submitted
    assert v["clean_claim_rate"] == 33.33  # only the paid one: accepted/paid, once, untouched
    assert v["first_pass_acceptance"] == 66.67  # paid + denied were not rejected
    assert v["denial_rate"] == 50.0  # adjudicated: paid + denied
    assert Decimal(str(v["denied_dollars"])) == billed[denied]
    assert [(d["group"], d["code"], d["claims"]) for d in rep["denial_reasons"]] == [("CO", "50", 1)]


def test_kpis_from_clearinghouse_files(fast_store: Store, tmp_path: Path) -> None:
    sent = _deliver(fast_store, 5)  # CLM0 .. CLM4, DOS 2026-10-01 .. 05
    out, inbound = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inbound.mkdir()
    (out / "batch1.837").write_bytes(_837(sent))
    Clearinghouse(out, inbound, reject={"CLM1": "562"},
                  outcomes={"CLM2": Outcome("partial"), "CLM3": Outcome("denied"),
                            "CLM4": Outcome("paid", patient=("2", Decimal("10.00")))}).run()
    res = x12_inbound.poll(fast_store, FolderTransport(inbound)).to_dict()
    assert (res["999"], res["277CA"], res["835"], res["unmatched"]) == (1, 5, 4, 0)
    states = {c["claim_id"]: c["state"] for c in claims.list_claims(fast_store)[1]}
    assert states == {"CLM0": "paid", "CLM1": "rejected", "CLM2": "partially_paid", "CLM3": "denied",
                      "CLM4": "paid"}

    rep = kpi.report(fast_store, GoalsConfig(), start=OCTOBER[0], end=OCTOBER[1], today=date(2026, 11, 29))
    v = _values(rep)
    billed = {cid: sum(ch, Decimal(0)) for cid, ch in sent}
    # answered: all five; clean: CLM0, CLM2, CLM4 (accepted/paid/partially paid, once, untouched)
    assert v["clean_claim_rate"] == 60.0
    assert v["first_pass_acceptance"] == 80.0  # all but the rejected CLM1
    assert v["denial_rate"] == 25.0  # adjudicated: CLM0, CLM2, CLM3, CLM4; denied: CLM3
    assert Decimal(str(v["denied_dollars"])) == billed["CLM3"]
    adjudicated = billed["CLM0"] + billed["CLM2"] + billed["CLM3"] + billed["CLM4"]
    assert v["denial_dollar_rate"] == float(round(billed["CLM3"] / adjudicated * 100, 2))
    # the 835's CO-16 is the denial reason; its RARC N362 is not counted as a reason
    assert [(d["group"], d["code"], d["claims"]) for d in rep["denial_reasons"]] == [("CO", "16", 1)]
    # nothing is open: every claim got its final answer, so the A/R buckets are empty
    assert sum(b["count"] for b in rep["ar_buckets"]) == 0
