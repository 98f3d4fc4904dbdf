"""835 import: an 835 with 10,000 claim payments (2 service lines each) imported into a real
encrypted store holding the 10,000 submitted claims it answers.

Run with ``make bench``. Prints claims/s (target >= 1,000/s) and two ratios against baselines
measured in the same run: the import against plain tokenizing of the same file (what reading the
X12 costs) and against parsing alone (what applying to the store costs). Asserts only
correctness (every claim matched and moved), never speed.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal
from pathlib import Path

from agent import claims, x12_inbound
from agent.store import Store, now
from connectors.rcm.x12.answers import parse
from connectors.rcm.x12.segments import tokenize
from core.paths import Paths
from core.states import ClaimState

N = 10_000


def _835(n: int) -> bytes:
    segs = ["ST*835*0001*005010X221A1", "BPR*I*0*C*CHK************20260310", "TRN*1*EFT1*1999999999",
            "DTM*405*20260310", "N1*PR*SIMULATED PAYER", "N1*PE*BILLING PROVIDER*XX*1234567893", "LX*1"]
    for i in range(n):
        kind = i % 4
        if kind == 3:  # denied
            segs += [f"CLP*CLM{i:06d}*4*150.00*0.00**12*PAY{i:08d}*11*1", "NM1*QC*1*DOE*JANE****MI*M1",
                     "SVC*HC:99213*100.00*0.00**1", "DTM*472*20260301", "CAS*CO*16*100.00", f"REF*6R*{i}-1",
                     "LQ*HE*N362", "SVC*HC:36415*50.00*0.00**1", "CAS*CO*16*50.00", f"REF*6R*{i}-2"]
        elif kind == 2:  # partially paid
            segs += [f"CLP*CLM{i:06d}*1*150.00*100.00*20.00*12*PAY{i:08d}*11*1", "NM1*QC*1*DOE*JANE****MI*M1",
                     "SVC*HC:99213*100.00*64.00**1", "DTM*472*20260301", "CAS*CO*45*20.00", "CAS*PR*2*16.00",
                     f"REF*6R*{i}-1", "SVC*HC:36415*50.00*36.00**1", "CAS*CO*45*10.00*PR*2*4.00", f"REF*6R*{i}-2"]
        else:  # paid
            segs += [f"CLP*CLM{i:06d}*1*150.00*130.00*20.00*12*PAY{i:08d}*11*1", "NM1*QC*1*DOE*JANE****MI*M1",
                     "SVC*HC:99213*100.00*80.00**1", "DTM*472*20260301", "CAS*PR*3*20.00", f"REF*6R*{i}-1",
                     "SVC*HC:36415*50.00*50.00**1", f"REF*6R*{i}-2"]
    segs.append(f"SE*{len(segs) + 1}*0001")
    isa = "ISA*00*          *00*          *ZZ*CLEARINGHOUSE  *ZZ*PRACTICE       *260310*1200*^*00501*000000777*0*T*:"
    return ("~\n".join([isa, "GS*HP*CLEARINGHOUSE*PRACTICE*20260310*1200*777*X*005010X221A1", *segs, "GE*1*777",
                        "IEA*1*000000777"]) + "~\n").encode()


def _seed(store: Store, n: int) -> None:
    ts = now()
    with store.tx():
        store.conn.executemany(
            "INSERT INTO claims (claim_id, encounter_id, version, target, state, billed, control, "
            "first_submitted_at, submitted_at, updated_at) VALUES (?, NULL, 1, 'x12', ?, '150.00', ?, ?, ?, ?)",
            [(f"CLM{i:06d}", ClaimState.SUBMITTED, '{"gs": "1"}', ts, ts, ts) for i in range(n)])


def test_835_import_10k_claims(tmp_path: Path) -> None:
    data = _835(N)
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    store = Store.open_with_key(paths, secrets.token_bytes(32))
    try:
        _seed(store, N)
        t0 = time.perf_counter()
        tokenize(data)
        t_tok = time.perf_counter() - t0
        t0 = time.perf_counter()
        parsed = parse(data)
        t_parse = time.perf_counter() - t0
        assert len(parsed.answers) == N
        t0 = time.perf_counter()
        res = x12_inbound.import_files(store, [("bench.835", data)]).to_dict()
        t_import = time.perf_counter() - t0
        assert res["835"] == N and res["matched"] == N and res["unmatched"] == 0 and res["failed"] == 0
        states = dict(store.conn.execute("SELECT state, count(*) FROM claims GROUP BY state").fetchall())
        assert states == {ClaimState.PAID: N // 2, ClaimState.PARTIALLY_PAID: N // 4, ClaimState.DENIED: N // 4}
        assert claims.get_claim(store, "CLM000003") is not None
        assert Decimal(store.conn.execute("SELECT sum(CAST(paid AS REAL)) FROM claims").fetchone()[0]) > 0
    finally:
        store.close()
    mb = len(data) / 1e6
    print(f"\n835 import, {N:,} claim payments ({mb:.1f} MB, 2 lines each) into an encrypted store:")
    print(f"  tokenize only (baseline)  {t_tok:7.2f} s  {N / t_tok:9,.0f} claims/s")
    print(f"  parse to answers          {t_parse:7.2f} s  {N / t_parse:9,.0f} claims/s")
    print(f"  import (parse + apply)    {t_import:7.2f} s  {N / t_import:9,.0f} claims/s   target >= 1,000/s")
    print(f"  ratio import/tokenize {t_import / t_tok:.1f}x, import/parse {t_import / t_parse:.1f}x")
