"""A watched folder is hostile ground: pipes, links, unreadable files, odd names, huge sparse
files and writers that pause must neither block, kill nor fool the watcher.

Everything runs through the real :class:`WatchService` / :class:`FolderWatcher` (watchdog's
inotify observer) and the real SQLCipher store in the OS keyring. Settle times are small so that
nothing sleeps longer than it must; waits are bounded only to stop a hang, never timed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import config as configmod
from agent.pipeline import Pipeline
from agent.watch import WatchService
from connectors.ehr.folder import FolderWatcher
from core.errors import ConfigError
from core.paths import Paths
from tests.conftest import ROOT, run_cli, wait_until
from tests.helpers import dft

SETTLE = 0.2
SECRET = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


def make_service(store, folder: Path, **opts: object) -> WatchService:
    body = ""
    for k, v in {"settle_seconds": SETTLE, **opts}.items():
        body += f"{k} = {json.dumps(v)}\n"
    cfg = configmod.parse(configmod.tomllib.loads(
        f'[ingest]\nbatch_files = 50\nmax_file_mb = 1\n[[folders]]\npath = "{folder}"\n{body}'))
    return WatchService(Pipeline(store, max_file_bytes=cfg.max_file_bytes), cfg, rescan_seconds=2.0)


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


@pytest.fixture()
def running(store, export: Path) -> Iterator[Callable[..., WatchService]]:
    started: list[tuple[WatchService, threading.Thread]] = []

    def start(**opts: object) -> WatchService:
        svc = make_service(store, export, **opts)
        t = threading.Thread(target=svc.run, name="chargebridge-watch-test", daemon=True)
        t.start()
        assert wait_until(lambda: all(w._observer is not None for _, w in svc.watchers))
        started.append((svc, t))
        return svc

    yield start
    for svc, t in started:
        svc.stop()
        t.join(timeout=10)
        assert not t.is_alive(), "the watcher did not stop"


def reasons(store) -> dict[str, str]:
    return {q["file"]: q["reason"] for q in store.quarantine_list()}


def stored_contents(store) -> list[bytes]:
    return [bytes(c) for (c,) in store.conn.execute("SELECT content FROM documents WHERE content IS NOT NULL")]


def drop_good(export: Path, n: int, store) -> None:
    """A good visit dropped after the hostile entry: proves the watcher is still alive."""
    (export / f"good-{n}.hl7").write_text(dft(n))
    assert wait_until(lambda: any(e["source_id"] == f"V{n:07d}" for e in store.encounters()))


# -- pipes, devices, folders -----------------------------------------------------------------
def test_fifo_does_not_block_the_watcher_and_is_refused_with_a_reason(running, store, export: Path) -> None:
    fifo = export / "pipe.hl7"
    os.mkfifo(fifo)
    svc = running()
    drop_good(export, 1, store)
    assert wait_until(lambda: str(fifo) in reasons(store))
    assert "named pipe" in reasons(store)[str(fifo)] and "remove it" in reasons(store)[str(fifo)]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not ours to remove
    assert wait_until(lambda: svc.handled == 2)
    svc.watchers[0][1].scan()  # a rescan does not make a second entry for the same pipe
    drop_good(export, 2, store)
    assert wait_until(lambda: svc.handled == 3)
    assert len(store.quarantine_list()) == 1


def test_sigterm_stops_watch_with_a_fifo_present(tmp_path: Path, keyring_ok) -> None:
    home, export = tmp_path / "home", tmp_path / "export"
    home.mkdir()
    export.mkdir()
    os.mkfifo(export / "a-pipe.hl7")  # there before start: the catch-up scan meets it first
    (home / "chargebridge.toml").write_text(f'[[folders]]\npath = "{export}"\nsettle_seconds = {SETTLE}\n')
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "watch"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "watching 1 folder" in proc.stdout.readline()
        (export / "after.hl7").write_text(dft(3))
        assert wait_until(lambda: not (export / "after.hl7").exists())  # not stuck in open() on the pipe
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "2 file(s) handled" in out  # the pipe (refused) and the visit
    quar = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert [Path(q["file"]).name for q in quar] == ["a-pipe.hl7"]


# -- symbolic links --------------------------------------------------------------------------
def test_links_are_not_followed_by_default(running, store, export: Path, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    (tmp_path / "somedir").mkdir()
    (export / "shadow.hl7").symlink_to(secret)
    (export / "dir.hl7").symlink_to(tmp_path / "somedir")
    (export / "dangling.hl7").symlink_to(tmp_path / "nothing-here")
    running()
    drop_good(export, 4, store)
    assert wait_until(lambda: len(reasons(store)) == 3)
    for name in ("shadow.hl7", "dir.hl7", "dangling.hl7"):
        r = reasons(store)[str(export / name)]
        assert "symbolic link" in r and "follow_links" in r, r
        assert os.path.islink(export / name)  # left alone
    assert not any(b"root:" in c for c in stored_contents(store))


def test_follow_links_reads_only_links_that_stay_inside_the_folder(running, store, export: Path,
                                                                   tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    inner = export / "inbox"
    inner.mkdir()
    (inner / "visit.hl7").write_text(dft(5))
    (export / "outside.hl7").symlink_to(secret)
    (export / "sneaky.hl7").symlink_to(Path("inbox") / ".." / ".." / "shadow")  # relative escape
    (export / "inside.hl7").symlink_to(inner / "visit.hl7")
    running(follow_links=True)
    assert wait_until(lambda: len(store.encounters()) == 1 and len(reasons(store)) == 2)
    assert store.encounters()[0]["source_id"] == "V0000005"
    for name in ("outside.hl7", "sneaky.hl7"):
        assert "outside the watched folder" in reasons(store)[str(export / name)]
    assert not any(b"root:" in c for c in stored_contents(store))
    assert not os.path.lexists(export / "inside.hl7")  # the link went, once its target was stored
    assert (inner / "visit.hl7").exists()  # the target is not ours to delete
    assert secret.read_bytes() == SECRET


# -- names, sizes, permissions ---------------------------------------------------------------
def test_a_name_that_is_not_utf8_is_kept_and_quarantined_escaped(running, store, export: Path) -> None:
    raw_name = os.path.join(os.fsencode(export), b"visit-\xff\xfe.hl7")
    with open(raw_name, "wb") as fh:
        fh.write(dft(6).encode())
    running()
    assert wait_until(lambda: len(store.quarantine_list()) == 1)
    (q,) = store.quarantine_list()
    assert q["file"] == f"{export}/visit-\\xff\\xfe.hl7"  # escaped text, not a crash
    assert "UTF-8" in q["reason"] and "reprocess" in q["reason"]
    assert wait_until(lambda: not os.path.lexists(raw_name))  # removed: its bytes are in the store
    out = Pipeline(store).reprocess(q["id"])  # and they are all there
    assert out.status == "accepted" and store.encounters()[0]["source_id"] == "V0000006"


def test_huge_sparse_file_is_refused_by_stat_and_left_in_place(running, store, export: Path) -> None:
    huge = export / "huge.hl7"
    with open(huge, "wb") as fh:
        fh.truncate(5 * 1024 ** 4)  # 5 TB, sparse: reading or hashing it would take hours
    running()
    drop_good(export, 7, store)
    assert wait_until(lambda: str(huge) in reasons(store))
    r = reasons(store)[str(huge)]
    assert "over the 1 MB limit" in r and "max_file_mb" in r
    assert huge.stat().st_size == 5 * 1024 ** 4  # not lost: its bytes were never stored
    size, content = store.conn.execute("SELECT size, content FROM documents WHERE origin = ?", (str(huge),)).fetchone()
    assert size == 5 * 1024 ** 4 and content is None


def _take_as_nobody(folder: Path, name: str) -> dict[str, object]:
    """Run FolderWatcher.take in a forked child that dropped root (root reads any file)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os calls and take()
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            t = FolderWatcher(folder, processed=folder / "processed").take(folder / name, max_bytes=1 << 20)
            os.write(w, json.dumps({"kind": t.refusal_kind, "reason": t.refusal,
                                    "data": t.data is not None}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        got = fh.read()
    os.waitpid(pid, 0)
    return json.loads(got)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to create a file nobody may read")
def test_unreadable_file_becomes_a_refusal_a_person_can_act_on() -> None:
    folder = Path(tempfile.mkdtemp(prefix="cb-unreadable-"))
    try:
        os.chmod(folder, 0o755)
        f = folder / "locked.hl7"
        f.write_text(dft(8))
        os.chmod(f, 0o000)
        got = _take_as_nobody(folder, "locked.hl7")
        assert got["kind"] == "unreadable" and not got["data"]
        assert "permission denied" in str(got["reason"]) and "read access" in str(got["reason"])
        os.chmod(f, 0o644)  # and a readable one is read by the same unprivileged watcher
        assert _take_as_nobody(folder, "locked.hl7") == {"kind": "", "reason": "", "data": True}
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_a_refused_socket_is_recorded_once_across_restarts(running, store, export: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(export / "sock.hl7"))
        svc = running()
        drop_good(export, 9, store)
        assert wait_until(lambda: str(export / "sock.hl7") in reasons(store))
        assert "socket" in reasons(store)[str(export / "sock.hl7")]
        svc.stop()
    finally:
        sock.close()
    # a restart (new watcher, same store) records nothing new for the same entry
    svc2 = running()
    drop_good(export, 10, store)
    assert wait_until(lambda: svc2.handled == 2)  # it looked at the socket again ...
    assert len(store.quarantine_list()) == 1  # ... and knew it


# -- writers that pause ----------------------------------------------------------------------
def test_writer_pausing_longer_than_settle_time_is_read_once_complete(running, store, export: Path) -> None:
    svc = running()
    msg = dft(11, lines=4)
    half = len(msg) // 2
    with open(export / "slow.hl7", "w") as fh:
        fh.write(msg[:half])
        fh.flush()
        time.sleep(SETTLE * 5)  # the EHR stops mid-file for longer than the settle time
        assert svc.handled == 0 and store.encounters() == []  # not read half-written
        fh.write(msg[half:])
    assert wait_until(lambda: svc.handled == 1)
    (enc,) = store.encounters()
    assert len(enc["data"]["lines"]) == 4 and store.quarantine_list() == []
    assert store.conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 1


def test_a_file_that_changes_after_it_was_read_is_left_and_read_again(export: Path) -> None:
    """The re-check right before removal (the only guard on a polling share, which reports no
    close events): written to after it was read, the file stays, and comes back complete."""
    w = FolderWatcher(export, processed=export / "processed", observer="polling", settle_seconds=0.05)
    f = export / "visit.hl7"
    f.write_text("MSH|first half")
    w.scan()
    assert w.ready(10) == []
    assert wait_until(lambda: w.ready(10) == [f], timeout=10)
    t = w.take(f, max_bytes=1 << 20)
    assert t.data == b"MSH|first half"
    with open(f, "a") as fh:  # the writer resumes before the file is removed
        fh.write("|second half")
    assert w.finish(t, quarantined=False) is False
    assert f.exists()
    assert wait_until(lambda: w.ready(10) == [f], timeout=10)
    t2 = w.take(f, max_bytes=1 << 20)
    assert t2.data == b"MSH|first half|second half"
    assert w.finish(t2, quarantined=False) is True and not f.exists()


def test_a_file_that_changed_after_it_settled_is_not_read(export: Path) -> None:
    w = FolderWatcher(export, processed=export / "processed", settle_seconds=0.05)
    f = export / "visit.hl7"
    f.write_text("MSH|v1")
    w.scan()
    w.ready(10)
    assert wait_until(lambda: w.ready(10) == [f], timeout=10)
    f.write_text("MSH|v2 is longer")
    t = w.take(f, max_bytes=1 << 20)
    assert t.again and t.data is None and w.pending_count == 1


# -- the home folder -------------------------------------------------------------------------
@pytest.fixture()
def reachable_dir() -> Iterator[Path]:
    """A folder other users can reach (under /tmp, not pytest's private 0700 tree)."""
    d = Path(tempfile.mkdtemp(prefix="cb-home-"))
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_home_shared_with_others_is_refused_and_never_chmodded(reachable_dir: Path) -> None:
    shared = reachable_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(ConfigError) as ei:
        Paths(shared).ensure()
    assert f"chmod 700 {shared}" in ei.value.fix and "--home" in ei.value.fix
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # the sticky bit survives
    r = run_cli("status", home=shared)
    assert r.returncode == 2 and "can be read or written by" in r.stderr and "chmod 700" in r.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_home_created_private_and_a_private_existing_one_left_alone(reachable_dir: Path) -> None:
    new = reachable_dir / "a" / "home"
    Paths(new).ensure()
    assert stat.S_IMODE(new.stat().st_mode) == 0o700 and stat.S_IMODE((new / "logs").stat().st_mode) == 0o700
    mine = reachable_dir / "mine"
    mine.mkdir()
    os.chmod(mine, 0o710)  # group may enter, not list: still private enough, and kept as it is
    Paths(mine).ensure()
    assert stat.S_IMODE(mine.stat().st_mode) == 0o710


# -- quarantine export -----------------------------------------------------------------------
def test_quarantine_export_writes_the_stored_file_0600(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(b"\x00\x01binary junk")
    assert run_cli("ingest", str(bad), home=home).returncode == 1
    (q,) = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    out = tmp_path / "exported.bin"
    r = run_cli("quarantine", "export", str(q["id"]), "--out", str(out), home=home)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"\x00\x01binary junk" and stat.S_IMODE(out.stat().st_mode) == 0o600
    again = run_cli("quarantine", "export", str(q["id"]), "--out", str(out), home=home)
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwrites
    missing = run_cli("quarantine", "export", "999", "--out", str(tmp_path / "x"), home=home)
    assert missing.returncode == 1 and "no quarantine entry 999" in missing.stderr
    audit = json.loads(run_cli("audit", "list", "--json", home=home).stdout)
    assert any(a.get("action") == "quarantine.export" for a in audit)
