"""837P generation + pyx12 validation for 10,000 claims (issue 10's target: >= 1,000 claims/s,
validation <= 3x generation). Prints rates and ratios measured in this run; never asserts on
speed.

- before: pyx12's own entry point (``x12n_document``: its XML maps parsed again on every call);
- after, one process: our driver of the same pyx12 steps with the maps parsed once per process
  (connectors/rcm/x12/validate.py);
- after, parallel: what the X12 target does with a big push — one interchange per
  ``CLAIMS_PER_FILE`` claims, validated side by side in worker processes (cold: the workers start
  and parse their maps; warm: a second push);
- a sync-sized batch (100 claims, ``[rcm] batch_size``'s default): before and after.

    make bench   (or: .venv/bin/python -m tests.bench.bench_x12 [N])
"""

from __future__ import annotations

import io
import sys
import time

from connectors.rcm.x12 import writer837 as w
from connectors.rcm.x12.target import CLAIMS_PER_FILE
from connectors.rcm.x12.validate import default_workers, shutdown_pool, validate, validate_many, warm
from tests.unit.test_x12_writer import PRACTICE, enc


def pyx12_entry_point(text: str) -> bool:
    import pyx12.params
    import pyx12.x12n_document

    return bool(pyx12.x12n_document.x12n_document(pyx12.params.ParamsBase(), io.StringIO(text), None, None,
                                                  fd_json=io.StringIO()))


def timed(fn, *a):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def main(n: int = 10_000) -> None:
    claims = [w.ClaimInput(e, w.claim_id(e.business_key)) for e in (enc(i) for i in range(n))]
    batch, gen = timed(w.write_837, claims, PRACTICE, w.Envelope("CBSENDER", "CLEARHOUSE", 1))
    print(f"837P: {n} claims, {len(batch.text) / 1e6:.1f} MB, {len(batch.st_controls)} transaction(s); "
          f"{default_workers()} validation worker(s) on this machine")
    print(f"generation                 {gen:7.2f} s  {n / gen:8.0f} claims/s")
    ok, before = timed(pyx12_entry_point, batch.text)
    print(f"before: pyx12 x12n_document {before:6.2f} s  {n / before:8.0f} claims/s  valid={ok}  "
          f"ratio to generation {before / gen:.1f}")
    _, load = timed(warm)
    issues, after = timed(validate, batch.text)
    print(f"after, one process          {after:6.2f} s  {n / after:8.0f} claims/s  issues={len(issues)}  "
          f"ratio {after / gen:.1f}  (maps parsed once: {load:.2f} s, not counted)")
    # as the target sends a big push: interchanges of CLAIMS_PER_FILE, validated in parallel
    size = CLAIMS_PER_FILE
    files, gen_split = timed(lambda: [w.write_837(claims[i:i + size], PRACTICE,
                                                  w.Envelope("CBSENDER", "CLEARHOUSE", 2 + i // size)).text
                                      for i in range(0, n, size)])
    try:
        found, cold = timed(validate_many, files)
        found2, hot = timed(validate_many, files)
    finally:
        shutdown_pool()
    bad = sum(len(f) for f in found) + sum(len(f) for f in found2)
    print(f"after, parallel ({len(files)} files of {size}): generation {n / gen_split:.0f} claims/s; validation "
          f"cold {n / cold:.0f} claims/s (ratio {cold / gen_split:.1f}), warm {n / hot:.0f} claims/s "
          f"(ratio {hot / gen_split:.1f}); generation + validation {n / (gen_split + hot):.0f} claims/s "
          f"(target >= 1000, ratio <= 3); {bad} issue(s)")
    # one sync batch ([rcm] batch_size = 100): the map parsing dominated before
    small = w.write_837(claims[:100], PRACTICE, w.Envelope("CBSENDER", "CLEARHOUSE", 99)).text
    _, b = timed(pyx12_entry_point, small)
    _, a = timed(validate, small)
    print(f"one 100-claim sync batch: before {b:.2f} s, after {a:.2f} s  (x{b / a:.1f})")
    print(f"speed-up of validation, one process: x{before / after:.1f}; parallel warm: x{before / hot:.1f}")


def test_bench_x12_837() -> None:
    print()
    main()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
