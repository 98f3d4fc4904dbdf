"""Sync throughput against the real FHIR peer, and the engine's footprint at rest.

* 5,000 encounters pushed as transaction Bundles (the shipped client) against a naive client
  that sends one conditional create per resource, in the same run and to the same peer. The
  naive client is timed on a 500-encounter slice (it is the slow one) and compared by rate.
* ``chargebridge engine`` with 3 watched folders and the API up, left alone for 60 s: CPU time
  and RSS, against an idle Python interpreter measured the same way in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from connectors.ehr import hl7v2
from connectors.rcm.fhir import FhirTarget, build_transaction
from core.model import standardize
from tests.conftest import ROOT, run_cli
from tests.helpers import dft

N = 5000
NAIVE_N = 500


def _encounters(n: int, offset: int = 0):  # type: ignore[no-untyped-def]
    encs = hl7v2.parse("".join(dft(offset + i) for i in range(n)).encode(), name="b.hl7", options={})
    for e in encs:
        standardize(e)
    return encs


def test_sync_batched_vs_naive(fhir_peer) -> None:
    fhir_peer.reset()
    target = FhirTarget(fhir_peer.base_url, token_url=fhir_peer.token_url, client_id=fhir_peer.client_id,
                        secret=fhir_peer.client_secret)
    encs = _encounters(N)
    t = time.perf_counter()
    delivered = 0
    for i in range(0, N, 250):
        delivered += sum(r.delivered for r in target.push(encs[i:i + 250]))
    batched = N / (time.perf_counter() - t)
    assert delivered == N and fhir_peer.count("Claim") == N

    fhir_peer.reset()
    naive_encs = _encounters(NAIVE_N, offset=100_000)
    token = target._bearer(refresh=True)
    s = target.session
    t = time.perf_counter()
    for enc in naive_encs:  # one request per resource, conditional create each
        bundle, _ = build_transaction([enc])
        ids: dict[str, str] = {}
        for entry in bundle["entry"]:
            res = dict(entry["resource"])
            for field in ("beneficiary", "subject", "patient", "provider"):
                if isinstance(res.get(field), dict) and res[field].get("reference") in ids:
                    res[field] = {"reference": ids[res[field]["reference"]]}
            _relink(res, ids)
            r = s.post(f"{fhir_peer.base_url}/{res['resourceType']}", json=res, timeout=30,
                       headers={"Authorization": f"Bearer {token}", "If-None-Exist": entry["request"]["ifNoneExist"],
                                "Content-Type": "application/fhir+json"})
            assert r.status_code in (200, 201), r.text[:300]
            ids[entry["fullUrl"]] = f"{res['resourceType']}/{r.json()['id']}"
    naive = NAIVE_N / (time.perf_counter() - t)
    assert fhir_peer.count("Claim") == NAIVE_N
    print(f"\n[bench] sync to the FHIR peer: batched Bundles (3 batch requests per 250 encounters) {batched:,.0f} encounters/s; one request per "
          f"resource {naive:,.0f} encounters/s; ratio {batched / naive:.1f}x (targets >= 5x and >= 500/s)")


def _relink(obj, ids):  # type: ignore[no-untyped-def]
    if isinstance(obj, dict):
        ref = obj.get("reference")
        if isinstance(ref, str) and ref in ids:
            obj["reference"] = ids[ref]
        for v in obj.values():
            _relink(v, ids)
    elif isinstance(obj, list):
        for v in obj:
            _relink(v, ids)


def _cpu_rss(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) * 1024
    return cpu, rss


def test_engine_at_rest(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    home.mkdir()
    folders = []
    for i in range(3):
        d = tmp_path / f"export-{i}"
        d.mkdir()
        folders.append(f'[[folders]]\npath = "{d}"\n')
    (home / "chargebridge.toml").write_text("[api]\nport = 0\n" + "".join(folders))
    run_cli("ingest", str(ROOT / "agent" / "demo_data" / "visit-20261120-0001.hl7"), home=home)
    seconds = float(os.environ.get("CB_REST_SECONDS", "60"))
    engine = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "engine"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        assert engine.stdout is not None and "engine running" in engine.stdout.readline().decode()
        time.sleep(3)  # let start-up work finish
        c0, _ = _cpu_rss(engine.pid)
        i0, _ = _cpu_rss(idle.pid)
        time.sleep(seconds)
        c1, rss = _cpu_rss(engine.pid)
        i1, idle_rss = _cpu_rss(idle.pid)
    finally:
        engine.terminate()
        engine.communicate(timeout=60)
        idle.kill()
        idle.wait()
    cpu_pct = 100 * (c1 - c0) / seconds
    print(f"\n[bench] engine at rest ({seconds:.0f} s, 3 folders, API up): CPU {cpu_pct:.3f} % of a core "
          f"(idle python {100 * (i1 - i0) / seconds:.3f} %); RSS {rss / 2**20:.1f} MB (idle python "
          f"{idle_rss / 2**20:.1f} MB, ratio {rss / idle_rss:.1f}x); targets < 0.2 % and < 120 MB")
