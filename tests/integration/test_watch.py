"""The folder watcher with watchdog's real observers, feeding the real encrypted store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import config as configmod
from agent.pipeline import Pipeline
from agent.watch import WatchService
from connectors.ehr.folder import FolderWatcher, WatchError
from tests.conftest import wait_until
from tests.helpers import dft

WAIT = 30.0


def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Wait for a condition with a hard timeout (it only bounds a hang; not a timed assertion)."""
    return wait_until(cond, timeout)


def make_service(store, folder: Path, **folder_opts: object) -> WatchService:
    opts = {"after": "archive", "settle_seconds": 0.3, **folder_opts}
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
                   for k, v in opts.items())
    cfg = configmod.parse(configmod.tomllib.loads(f'[ingest]\nbatch_files = 50\n[[folders]]\npath = "{folder}"\n{body}'))
    return WatchService(Pipeline(store), cfg, rescan_seconds=2.0)


@pytest.fixture()
def running(store, tmp_path: Path) -> Iterator[Callable[..., WatchService]]:
    started: list[tuple[WatchService, threading.Thread]] = []

    def start(**opts: object) -> WatchService:
        folder = tmp_path / "export"
        folder.mkdir(exist_ok=True)
        svc = make_service(store, folder, **opts)
        t = threading.Thread(target=svc.run, name="chargebridge-watch-test", daemon=True)
        t.start()
        assert wait_for(lambda: all(w._observer is not None for _, w in svc.watchers))
        started.append((svc, t))
        return svc

    yield start
    for svc, t in started:
        svc.stop()
        t.join(timeout=10)
        assert not t.is_alive()


def encounters(store) -> list[dict]:
    return store.encounters()


def test_drop_is_committed_then_source_deleted(running, store, tmp_path: Path) -> None:
    svc = running()
    f = tmp_path / "export" / "visit.hl7"
    f.write_text(dft(1))
    assert wait_for(lambda: svc.handled == 1)
    assert not f.exists()  # archive: the bytes live in the store now
    assert len(encounters(store)) == 1
    row = store.conn.execute("SELECT status, length(content) FROM documents").fetchone()
    assert row == ("processed", len(dft(1)))


def test_move_mode_and_quarantined_file_leaves_the_folder_for_the_store(running, store, tmp_path: Path) -> None:
    svc = running(after="move")
    export = tmp_path / "export"
    (export / "good.hl7").write_text(dft(2))
    (export / "bad.hl7").write_bytes(b"\x00\x01\x02binary junk")
    assert wait_for(lambda: svc.handled == 2)
    assert (export / "processed" / "good.hl7").exists()
    assert not (export / "good.hl7").exists() and not (export / "bad.hl7").exists()
    # no plaintext copy and no reason file anywhere near the export folder: the store keeps it
    assert not (export / "quarantine").exists()
    assert [p.name for p in export.rglob("*") if p.is_file()] == ["good.hl7"]
    (q,) = store.quarantine_list()
    assert "binary" in q["reason"]
    content = store.conn.execute("SELECT content FROM documents WHERE id = ?", (q["document_id"],)).fetchone()[0]
    assert bytes(content) == b"\x00\x01\x02binary junk"


def test_opt_in_plaintext_quarantine_dir_is_private(running, store, tmp_path: Path) -> None:
    qdir = tmp_path / "it-quarantine"
    svc = running(quarantine_dir=str(qdir))
    export = tmp_path / "export"
    (export / "bad.hl7").write_bytes(b"\x00\x01\x02binary junk")
    assert wait_for(lambda: svc.handled == 1)
    assert not (export / "bad.hl7").exists()
    assert (qdir.stat().st_mode & 0o777) == 0o700
    moved, note = qdir / "bad.hl7", qdir / "bad.hl7.reason.txt"
    assert moved.read_bytes() == b"\x00\x01\x02binary junk"
    assert (moved.stat().st_mode & 0o777) == 0o600 and (note.stat().st_mode & 0o777) == 0o600
    assert "binary" in note.read_text()


def test_file_still_being_written_is_read_once_complete(running, store, tmp_path: Path) -> None:
    svc = running()
    f = tmp_path / "export" / "slow.hl7"
    msg = dft(3, lines=5)
    segs = msg.split("\r")
    with open(f, "w") as fh:  # the EHR appends segments for ~3 s
        for seg in segs:
            fh.write(seg + "\r")
            fh.flush()
            time.sleep(3.0 / len(segs))
    assert wait_for(lambda: svc.handled >= 1)
    assert not wait_for(lambda: svc.handled > 1, timeout=0.5)  # and read only once
    encs = encounters(store)
    assert svc.handled == 1 and len(encs) == 1
    assert len(encs[0]["data"]["lines"]) == 5
    assert store.quarantine_list() == []


def test_catch_up_scan_and_same_file_twice(store, tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for i in range(5):
        (export / f"waiting-{i}.hl7").write_text(dft(i))
    (export / "copy-of-0.hl7").write_text(dft(0))  # the same file dropped twice
    (export / ".hidden.tmp").write_text("ignored")
    svc = make_service(store, export)
    t = threading.Thread(target=svc.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: svc.handled == 6)
    finally:
        svc.stop()
        t.join(10)
    assert len(encounters(store)) == 5
    assert (export / ".hidden.tmp").exists()
    assert sorted(p.name for p in export.iterdir() if p.is_file()) == [".hidden.tmp"]


def test_file_deleted_before_it_settles_and_engine_keeps_going(running, store, tmp_path: Path) -> None:
    running()
    export = tmp_path / "export"
    doomed = export / "doomed.hl7"
    doomed.write_text(dft(4))
    doomed.unlink()
    (export / "after.hl7").write_text(dft(5))
    assert wait_for(lambda: len(encounters(store)) == 1)
    assert encounters(store)[0]["source_id"] == "V0000005"


def test_polling_observer(running, store, tmp_path: Path) -> None:
    svc = running(observer="polling", poll_seconds=0.2)
    (tmp_path / "export" / "share.hl7").write_text(dft(6))
    assert wait_for(lambda: svc.handled == 1)
    assert len(encounters(store)) == 1


def test_bounded_batches_over_many_waiting_files(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for i in range(3000):
        (export / f"f{i:05d}.hl7").write_text("x")
    w = FolderWatcher(export, processed=export / "processed", quarantine=export / "quarantine",
                      settle_seconds=0.05, rescan_seconds=3600)
    w.scan()
    assert w.pending_count == 3000
    assert w.ready(50) == []  # first look only records size/mtime
    time.sleep(0.1)
    got = w.ready(50)
    assert len(got) == 50  # never more than asked for, however many are waiting


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    w = FolderWatcher(tmp_path / "nope", processed=tmp_path / "p", quarantine=tmp_path / "q")
    with pytest.raises(WatchError) as ei:
        w.start()
    assert "does not exist" in str(ei.value) and "chargebridge.toml" in str(ei.value)


def test_inotify_limit_message_names_the_setting() -> None:
    import errno

    from connectors.ehr.folder import _os_limit_message

    msg = _os_limit_message(OSError(errno.ENOSPC, "No space left on device"), Path("/x"))
    assert "fs.inotify.max_user_watches" in msg and "polling" in msg


def test_watch_cli_runs_until_sigterm(tmp_path: Path, keyring_ok) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    home = tmp_path / "home"
    home.mkdir()
    export = tmp_path / "export"
    export.mkdir()
    (home / "chargebridge.toml").write_text(f'[[folders]]\npath = "{export}"\nsettle_seconds = 0.2\n')
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "watch"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "watching 1 folder" in proc.stdout.readline()
        (export / "a.hl7").write_text(dft(8))
        assert wait_for(lambda: not (export / "a.hl7").exists())
        second = subprocess.run([sys.executable, "-m", "agent.cli", "--home", str(home), "watch"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"process {proc.pid}" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "1 file(s) handled" in out


def test_a_quarantined_file_dropped_again_goes_back_to_quarantine(running, store, tmp_path: Path) -> None:
    # e.g. the engine died after committing a bad file but before moving it to quarantine_dir
    qdir = tmp_path / "it-quarantine"
    svc = running(quarantine_dir=str(qdir))
    export = tmp_path / "export"
    (export / "bad.hl7").write_bytes(b"\x00binary")
    assert wait_for(lambda: svc.handled == 1)
    (export / "bad-again.hl7").write_bytes(b"\x00binary")
    assert wait_for(lambda: svc.handled == 2)
    assert (qdir / "bad-again.hl7").exists()  # not deleted as a "duplicate"
    assert "binary" in (qdir / "bad-again.hl7.reason.txt").read_text()
    assert len(store.quarantine_list()) == 1  # one entry: the same document


BAD_FILES = {
    "empty.hl7": (b"", "empty"),
    "xxe.xml": (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<ClinicalDocument>&x;</ClinicalDocument>", "DTD"),
    "laughs.xml": (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
                   b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><ClinicalDocument>&c;</ClinicalDocument>', "DTD"),
    "nocol.csv": (b"\xef\xbb\xbfVisit ID;Last Name;First Name\r\nV1;Doe;Jane\r\n", "MRN"),
    "weird.json": (b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Frobnicate"}}]}',
                   "no Encounter"),
    "trunc.hl7": (b"MSH|^~\\&|EHR|F|CB|B|2026||DFT^P03|X1|P|2.5.1\rPID|1||M1", "FT1"),
}


def test_every_kind_of_bad_file_is_quarantined_and_the_watcher_keeps_going(running, store, tmp_path: Path) -> None:
    svc = running()
    export = tmp_path / "export"
    for name, (content, _) in BAD_FILES.items():
        (export / name).write_bytes(content)
    (export / "good.hl7").write_text(dft(9))
    assert wait_for(lambda: svc.handled == len(BAD_FILES) + 1)
    assert len(encounters(store)) == 1
    assert sorted(p.name for p in export.iterdir()) == []  # all left for the store
    reasons = {Path(q["file"]).name: q["reason"] for q in store.quarantine_list()}
    assert sorted(reasons) == sorted(BAD_FILES)
    for name, (_, needle) in BAD_FILES.items():
        reason = reasons[name]
        assert needle.lower() in reason.lower(), (name, reason)
        assert "root:" not in reason and "lollol" not in reason
