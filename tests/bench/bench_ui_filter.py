"""Encounters window at 100,000 encounters: time from applying a filter to the first rows shown.

A real engine (in-process, real store) holds 100,000 encounters; the window's EncountersModel
asks the engine for a filtered first page through the API. Baseline in the same run: the
unfiltered first page. Prints each time and its ratio to the baseline; asserts only row counts.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from agent import config as configmod
from agent.engine import Engine
from agent.pipeline import Pipeline
from agent.users import add_user
from core.paths import Paths
from tests.helpers import dft

N = 100_000


def _fill(eng: Engine) -> None:
    store = eng.store()
    Pipeline(store).ingest_bytes(dft(1).encode(), origin="seed.hl7")
    row = store.conn.execute("SELECT kind, source, document_id, data, findings, content_hash FROM encounters").fetchone()
    kind, source, doc, data, findings, chash = row
    base = json.loads(data)
    rows = []
    for i in range(2, N + 1):
        d = dict(base)
        d["patient"] = {**base["patient"], "mrn": f"MRN{i:07d}", "family": f"Family{i % 5000}"}
        d["source_id"] = f"V{i:07d}"
        dos = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}"
        state = "needs_review" if i % 50 == 0 else "ready"
        rows.append((f"charge|B|V{i:07d}", kind, source, f"V{i:07d}", doc, state, f"MRN{i:07d}", dos,
                     json.dumps(d), findings, chash))
    with store.tx():
        store.conn.executemany(
            "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, data,"
            " findings, content_hash, version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,'x','x')", rows)


def test_filter_first_rows_at_100k(tmp_path: Path, qtbot, keyring_ok) -> None:
    from ui.app import protect_none_refcount
    from ui.client import ApiClient
    from ui.models import EncountersModel

    protect_none_refcount()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n")
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    try:
        _fill(eng)
        token = add_user(eng.store(), "bench", "manager")
        client = ApiClient(f"http://127.0.0.1:{eng.port}", token)
        model = EncountersModel(client, page_size=200)

        def first_rows(q: str, state: str) -> tuple[float, int]:
            t = time.perf_counter()
            with qtbot.waitSignal(model.page_loaded, timeout=60_000):
                model.set_filter(q=q, state=state, force=True)
            return time.perf_counter() - t, model.rowCount()

        results: dict[str, list[float]] = {}
        cases = {"no filter (baseline)": ("", ""), "state = needs review": ("", "needs_review"),
                 "search by MRN": ("MRN0054321", ""), "search by name": ("Family4321", ""),
                 "search by code": ("9921", "")}
        for _ in range(3):
            for name, (q, state) in cases.items():
                secs, rows = first_rows(q, state)
                results.setdefault(name, []).append(secs)
                assert rows > 0, name
        base = statistics.median(results["no filter (baseline)"])
        for name, xs in results.items():
            m = statistics.median(xs)
            print(f"\n[bench] encounters at {N:,}: {name}: first rows in {m * 1000:.0f} ms "
                  f"(ratio to unfiltered {m / base:.2f}; target < 100 ms)", end="")
        print()
        client.close()
    finally:
        eng.stop()
