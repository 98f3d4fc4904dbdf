"""Reconciliation classification at 10,000 and 100,000 lines a side: time and linearity.

The fetch is not timed (it is the RCM's speed); this is the classification that follows it.
Prints both times and their ratio: linear means about 10x for 10x the lines.
"""

from __future__ import annotations

import time
from datetime import date

from agent.reconcile import LocalCharge, classify
from connectors.rcm.base import RemoteCharge, RemoteLine


def _sides(n_lines: int) -> tuple[list[LocalCharge], list[RemoteCharge]]:
    local, remote = [], []
    for i in range(n_lines // 2):  # two lines per encounter
        lines = [RemoteLine("99213", [], "1", "98.00", "2026-10-01", ["I10"]),
                 RemoteLine("93000", ["26"], "1", "35.00", "2026-10-01", ["I10"])]
        ident = f"FAC:V{i}"
        lc = LocalCharge(i, ident, "charge", f"M{i}", "Doe", "Jane", "1970-01-01", f"2026-10-{1 + i % 28:02d}",
                         "1234567893", ["I10"], lines)
        kind = i % 20
        if kind == 0:  # missing at the RCM
            local.append(lc)
            continue
        if kind == 1:  # orphan at the RCM
            remote.append(RemoteCharge(f"R{i}", "", f"X{i}", "Roe", "Ann", "1980-01-01", lc.dos, "", ["J02.9"], lines))
            continue
        rlines = [RemoteLine(**ln.__dict__) for ln in lines]
        if kind in (2, 3):  # a changed field
            rlines[0] = RemoteLine("99213", [], "2", "98.00", "2026-10-01", ["I10"])
        rident = "" if kind == 4 else ident  # keyed by the RCM itself: matched by patient + date
        local.append(lc)
        remote.append(RemoteCharge(f"R{i}", rident, f"M{i}", "Doe", "Jane", "1970-01-01", lc.dos, "1234567893",
                                   ["I10"], rlines))
    return local, remote


def test_classification_is_fast_and_linear() -> None:
    times = {}
    for n in (10_000, 100_000):
        local, remote = _sides(n)
        t = time.perf_counter()
        results = classify(local, remote, today=date(2026, 11, 27))
        times[n] = time.perf_counter() - t
        kinds = {k: sum(r.kind == k for r in results) for k in ("matched", "field_mismatch", "missing_in_rcm",
                                                                 "orphan_in_rcm")}
        enc = n // 2
        assert kinds == {"matched": enc * 16 // 20, "field_mismatch": enc * 2 // 20,
                         "missing_in_rcm": enc // 20, "orphan_in_rcm": enc // 20}, kinds
    print(f"\n[bench] reconcile classification: 10k lines a side {times[10_000]:.3f} s, 100k {times[100_000]:.3f} s; "
          f"ratio {times[100_000] / times[10_000]:.1f}x for 10x the lines (target < 2 s at 100k, linear)")
