"""Retention prune on a store of 100,000 old, delivered and reconciled encounters (each with its
raw document): store file size before and after, and the prune's time against the time it took
to write the same rows (the baseline, measured in the same run). Prints, never asserts on speed.

Part of ``make bench`` (``CB_PRUNE_N`` changes the count).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path


def test_prune_100k_old_encounters() -> None:
    from agent import retention
    from agent.store import Store
    from core.paths import Paths
    from tests.integration.test_data_care import seed_old_encounters

    n = int(os.environ.get("CB_PRUNE_N", "100000"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths.resolve(Path(tmp) / "home")
        paths.ensure()
        store = Store.open_with_key(paths, secrets.token_bytes(32))
        try:
            t0 = time.perf_counter()
            seed_old_encounters(store, n, blob=1024, held=n // 100)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            dry = retention.prune(store, 400, dry_run=True)
            dry_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rep = retention.prune(store, 400)
            prune_s = time.perf_counter() - t0
        finally:
            store.close()
    mb = 1024 * 1024
    print(f"prune bench: {n} old encounters (+{n // 100} held), 1 KiB raw document each")
    print(f"  write (baseline) {write_s:.1f} s; dry run {dry_s:.1f} s; prune {prune_s:.1f} s "
          f"(prune/write ratio {prune_s / write_s:.2f})")
    print(f"  pruned {rep.encounters} encounters, {rep.documents} documents (dry run said {dry.encounters}/"
          f"{dry.documents}); vacuum: {rep.vacuum}")
    print(f"  store file {rep.size_before / mb:.1f} MiB -> {rep.size_after / mb:.1f} MiB "
          f"(after/before ratio {rep.size_after / rep.size_before:.3f})")


if __name__ == "__main__":
    test_prune_100k_old_encounters()
