"""Ingest throughput and watcher latency, each against a baseline measured in the same run.

Run with ``make bench``. Prints figures; asserts only correctness (counts), never speed.

* Throughput: 20,000 HL7 DFT^P03 messages (200 files x 100) and 20,000 CSV encounter rows
  (20 files x 1,000) from files to committed encounters in the real encrypted store, against
  a raw SQLCipher batched insert (1,000 rows a transaction) of the same number of rows with the
  same payload size.
* Latency: file dropped into a watched folder -> encounter committed, p50 / p95, against the
  watcher's own settle time (the floor any "is the file complete?" check must pay).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import threading
import time
from pathlib import Path

from agent import config as configmod
from agent.pipeline import Pipeline
from agent.store import Store
from agent.watch import WatchService
from core.paths import Paths
from tests.helpers import CSV_HEADER, csv_row, dft

N_HL7_FILES, HL7_PER_FILE = 200, 100
N_CSV_FILES, CSV_PER_FILE = 20, 1000


def _raw_baseline(paths: Paths, rows: int, payload: int) -> float:
    """rows/s for a plain batched insert of ``payload``-byte JSON blobs into SQLCipher."""
    raw_paths = Paths.resolve(paths.home / "raw")
    raw_paths.ensure()
    store = Store.open_with_key(raw_paths, secrets.token_bytes(32))
    store.conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, k TEXT UNIQUE, data TEXT)")
    blob = "x" * payload
    t = time.perf_counter()
    for start in range(0, rows, 1000):
        with store.tx():
            store.conn.executemany("INSERT INTO raw (k, data) VALUES (?, ?)",
                                   ((f"k{i}", blob) for i in range(start, min(rows, start + 1000))))
    elapsed = time.perf_counter() - t
    store.close()
    return rows / elapsed


def test_ingest_throughput(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in range(N_HL7_FILES):
        (src / f"dft-{f:04d}.hl7").write_text("".join(dft(f * HL7_PER_FILE + i) for i in range(HL7_PER_FILE)))
    for f in range(N_CSV_FILES):
        (src / f"rows-{f:03d}.csv").write_text(
            CSV_HEADER + "".join(csv_row(f * CSV_PER_FILE + i) for i in range(CSV_PER_FILE)))
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    store = Store.open_with_key(paths, secrets.token_bytes(32))
    pipe = Pipeline(store)
    from agent.validate import icd10_status

    icd10_status("I10")  # load the ICD-10-CM table outside the timing
    results = {}
    for workers in (0, 2):
        for kind, pattern, expected in (("hl7", "*.hl7", N_HL7_FILES * HL7_PER_FILE),
                                        ("csv", "*.csv", N_CSV_FILES * CSV_PER_FILE)):
            if workers:  # same files again into a fresh store
                store.close()
                paths = Paths.resolve(tmp_path / f"home-{kind}-{workers}")
                paths.ensure()
                store = Store.open_with_key(paths, secrets.token_bytes(32))
                pipe = Pipeline(store)
            jobs = [(p, "auto", "") for p in sorted(src.glob(pattern))]
            t = time.perf_counter()
            accepted = sum(o.accepted for _, o in pipe.ingest_many(jobs, workers=workers))
            elapsed = time.perf_counter() - t
            assert accepted == expected
            results[f"{kind}_{workers}"] = expected / elapsed
    payload = int(store.conn.execute("SELECT avg(length(data)) FROM encounters").fetchone()[0])
    n_ready = store.conn.execute("SELECT count(*) FROM encounters WHERE state = 'ready'").fetchone()[0]
    n_total = store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0]
    assert n_total == N_CSV_FILES * CSV_PER_FILE
    store.close()
    raw = _raw_baseline(paths, 40_000, payload)
    print(f"\n[bench] raw SQLCipher batched insert ({payload} B rows, 1,000 per commit): {raw:,.0f} rows/s")
    for workers in (0, 2):
        h, c = results[f"hl7_{workers}"], results[f"csv_{workers}"]
        label = "single process" if not workers else f"{workers} parse workers"
        print(f"[bench] ingest, {label}: HL7 DFT {h:,.0f} encounters/s (ratio to raw {h / raw:.3f}); "
              f"CSV rows {c:,.0f} encounters/s (ratio {c / raw:.3f})")
    print(f"[bench] target >= 5,000 encounters/s; {n_ready} of {n_total} CSV encounters ready")
    _save({"ingest_hl7_per_s": results["hl7_2"], "ingest_csv_per_s": results["csv_2"],
           "ingest_hl7_single_per_s": results["hl7_0"], "ingest_csv_single_per_s": results["csv_0"],
           "raw_rows_per_s": raw, "payload_bytes": payload})


def test_watch_latency(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    store = Store.open_with_key(paths, secrets.token_bytes(32))
    settle = 0.5  # the shipped default
    cfg = configmod.parse({"folders": [{"path": str(export), "settle_seconds": settle}]})
    committed: dict[str, float] = {}

    class Timed(Pipeline):
        def ingest_bytes(self, data: bytes, **kw):  # type: ignore[no-untyped-def]  # the watcher reads, then hands bytes
            out = super().ingest_bytes(data, **kw)
            committed[Path(kw["origin"]).name] = time.perf_counter()
            return out

    svc = WatchService(Timed(store), cfg)
    t = threading.Thread(target=svc.run, name="chargebridge-watch", daemon=True)
    t.start()
    time.sleep(0.5)
    dropped: dict[str, float] = {}
    n = 40
    for i in range(n):
        tmp = export / f".{i}.tmp"
        tmp.write_text(dft(i))
        name = f"drop-{i:03d}.hl7"
        dropped[name] = time.perf_counter()
        os.rename(tmp, export / name)
        time.sleep(0.15)
    end = time.monotonic() + 30
    while len(committed) < n and time.monotonic() < end:
        time.sleep(0.05)
    svc.stop()
    t.join(10)
    store.close()
    assert len(committed) == n
    lat = sorted(committed[k] - dropped[k] for k in dropped)
    p50 = statistics.median(lat)
    p95 = lat[int(0.95 * (n - 1))]
    print(f"\n[bench] drop -> committed through the watcher: p50 {p50:.3f} s, p95 {p95:.3f} s "
          f"(target p95 < 1.5 s); settle floor {settle:.2f} s; p95/settle = {p95 / settle:.2f}")
    _save({"watch_p50_s": p50, "watch_p95_s": p95, "settle_s": settle})


def _save(d: dict[str, float]) -> None:
    out = Path(__file__).resolve().parents[2] / ".bench" / "results.json"
    out.parent.mkdir(exist_ok=True)
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev.update(d)
    out.write_text(json.dumps(prev, indent=1))
