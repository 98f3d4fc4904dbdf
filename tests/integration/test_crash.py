"""Nothing lost, nothing doubled: SIGKILL the watching process at random points, restart it.

500 files (450 good visits, 50 malformed) wait in a watched folder; ``chargebridge watch`` is
killed with SIGKILL at random moments and restarted until the folder is drained. In the end
every file must be exactly one encounter or exactly one quarantine entry.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.helpers import dft

GOOD, BAD = 450, 50


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, keyring_ok) -> None:
    seed = int(os.environ.get("CB_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed {seed}")
    home = tmp_path / "home"
    home.mkdir()
    export = tmp_path / "export"
    export.mkdir()
    (home / "chargebridge.toml").write_text(
        f'[ingest]\nbatch_files = 40\n[[folders]]\npath = "{export}"\nsettle_seconds = 0.05\n'
        f'quarantine_dir = "{tmp_path / "quarantine"}"\n')  # IT's opt-in plaintext copy: moved, not deleted
    names = [f"visit-{i:04d}.hl7" for i in range(GOOD)] + [f"broken-{i:03d}.hl7" for i in range(BAD)]
    rng.shuffle(names)
    for n in names:
        i = int(n.split("-")[1].split(".")[0])
        body = dft(i) if n.startswith("visit") else f"MSH|^~\\&|EHR|F|CB|B|2026||DFT^P03|X{i}|P|2.5.1\rPID|1||M{i}"
        (export / n).write_text(body)

    def remaining() -> int:
        return sum(1 for p in export.iterdir() if p.is_file())

    kills = 0
    deadline = time.monotonic() + 600
    while remaining() and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "watch"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if rng.random() < 0.15:  # sometimes during start-up / recovery
            time.sleep(rng.uniform(0.05, 0.6))
        else:  # mostly in the middle of a batch: after a random amount of progress
            target = remaining() - rng.randint(1, 40)
            until = time.monotonic() + 20
            while remaining() > target and time.monotonic() < until and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode(errors="replace")[-2000:]
    # one last clean run to finish anything a kill left pending in the store
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "watch"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert kills >= 10, f"only {kills} kills; the test did not exercise crashes"
    assert remaining() == 0

    encs = json.loads(run_cli("encounters", "--json", "--limit", "10000", home=home).stdout)
    quar = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    ids = sorted(e["source_id"] for e in encs)
    assert len(ids) == GOOD, f"seed {seed}: {len(ids)} encounters"
    assert ids == sorted(f"V{i:07d}" for i in range(GOOD))  # each exactly once
    assert all(e["version"] == 1 for e in encs)
    broken = sorted(Path(q["file"]).name for q in quar)
    assert broken == sorted(n for n in names if n.startswith("broken")), f"seed {seed}"
    assert len(list((tmp_path / "quarantine").glob("broken-*.hl7"))) == BAD
    print(f"crash test: {kills} SIGKILLs, {GOOD} encounters, {BAD} quarantined — none lost or doubled")
