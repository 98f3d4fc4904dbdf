"""837P generation + pyx12 validation for 10,000 claims (issue 10's target: >= 1,000 claims/s,
validation <= 3x generation). Prints rates and the validation/generation ratio measured in this
run; never asserts on speed.

    make bench   (or: .venv/bin/python -m tests.bench.bench_x12 [N])
"""

from __future__ import annotations

import sys
import time

from connectors.rcm.x12 import writer837 as w
from connectors.rcm.x12.validate import validate
from tests.unit.test_x12_writer import PRACTICE, enc


def main(n: int = 10_000) -> None:
    claims = [w.ClaimInput(e, w.claim_id(e.business_key)) for e in (enc(i) for i in range(n))]
    t0 = time.perf_counter()
    batch = w.write_837(claims, PRACTICE, w.Envelope("CBSENDER", "CLEARHOUSE", 1))
    t1 = time.perf_counter()
    issues = validate(batch.text)
    t2 = time.perf_counter()
    gen, val = t1 - t0, t2 - t1
    print(f"837P: {n} claims, {len(batch.text) / 1e6:.1f} MB, {len(batch.st_controls)} transaction(s), "
          f"{len(issues)} validation issue(s)")
    print(f"generation  {gen:7.2f} s  {n / gen:9.0f} claims/s")
    print(f"validation  {val:7.2f} s  {n / val:9.0f} claims/s  (pyx12)")
    print(f"together    {gen + val:7.2f} s  {n / (gen + val):9.0f} claims/s  (target >= 1000)")
    print(f"ratio validation/generation = {val / gen:.1f}  (target <= 3)")
    # as sync sends them: one interchange per batch ([rcm] batch_size); pyx12's cost per claim
    # grows with the file, so batches validate faster than one big file
    size = 500
    t0 = time.perf_counter()
    batches = [w.write_837(claims[i:i + size], PRACTICE, w.Envelope("CBSENDER", "CLEARHOUSE", 2 + i // size))
               for i in range(0, n, size)]
    t1 = time.perf_counter()
    bad = sum(len(validate(b.text)) for b in batches)
    t2 = time.perf_counter()
    gen, val = t1 - t0, t2 - t1
    print(f"in {len(batches)} interchanges of {size}: generation {n / gen:.0f} claims/s, validation "
          f"{n / val:.0f} claims/s, together {n / (gen + val):.0f} claims/s, ratio {val / gen:.1f} ({bad} issues)")


def test_bench_x12_837() -> None:
    print()
    main()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
