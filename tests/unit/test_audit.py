"""The audit trail: a hash chain over the ``audit`` table that shows where it was tampered with.

Every tampering test edits the table BY HAND with SQL, the way someone with the store open in a
SQLCipher shell would, and then checks that :func:`agent.audit.verify` names exactly the entry
and the kind of tampering.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import audit
from agent import config as configmod
from agent.audit import GENESIS, Problem
from agent.pipeline import Pipeline
from agent.store import Store
from agent.users import add_user
from core.paths import Paths
from tests.conftest import run_cli

COLS = ("seq", "at", "actor", "action", "target", "before_sha256", "after_sha256", "detail", "prev_hash", "hash")


def chain(store: Store, n: int = 10) -> None:
    """n entries, each in its own transaction as real callers do."""
    for i in range(1, n + 1):
        with store.tx():
            audit.record(store, actor="cli:tester", action="test.step", target=f"step:{i}",
                         before={"step": i - 1}, after={"step": i}, detail={"n": i})


def row(store: Store, seq: int) -> tuple[Any, ...]:
    return store.conn.execute(f"SELECT {', '.join(COLS)} FROM audit WHERE seq = ?", (seq,)).fetchone()


def problems(store: Store) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in audit.verify(store)]


# -- the chain --------------------------------------------------------------------------------
def test_chain_links_and_documented_hash(fast_store: Store) -> None:
    chain(fast_store, 10)
    assert audit.verify(fast_store) == []
    prev = GENESIS
    for seq in range(1, 11):
        r = dict(zip(COLS, row(fast_store, seq)))
        assert r["prev_hash"] == prev
        # the serialization the module documents, recomputed independently of its code
        payload = json.dumps([r[c] for c in COLS[:-1]], separators=(",", ":"), ensure_ascii=False)
        assert r["hash"] == hashlib.sha256(payload.encode("utf-8")).hexdigest()
        prev = r["hash"]
    assert json.loads(fast_store.setting("audit.head")) == {"seq": 10, "hash": prev}


def test_before_and_after_are_stored_only_as_hashes(fast_store: Store) -> None:
    before = {"mrn": "MRN-77421", "family": "Wuckert", "dob": "1961-04-02"}
    after = {**before, "family": "Wuckert-Smith"}
    with fast_store.tx():
        audit.record(fast_store, actor="api:bob", action="patient.edit", target="patient:12",
                     before=before, after=after, detail={"fields": 1})
    stored = json.dumps(fast_store.conn.execute("SELECT * FROM audit").fetchall())
    assert "MRN-77421" not in stored and "Wuckert" not in stored and "1961" not in stored
    canon = json.dumps(after, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    e = audit.entries(fast_store)[0]
    assert e["after_sha256"] == hashlib.sha256(canon.encode()).hexdigest() == audit.digest(after)
    assert e["before_sha256"] == audit.digest(before) != e["after_sha256"]
    # a whole record dropped into detail is refused (detail is stored in clear)
    with pytest.raises(TypeError):
        audit.record(fast_store, actor="x", action="y", detail={"patient": before})


def test_entry_commits_or_rolls_back_with_the_change(fast_store: Store) -> None:
    with pytest.raises(RuntimeError):
        with fast_store.tx():
            fast_store.set_setting("demo", "changed")
            audit.record(fast_store, actor="cli:tester", action="demo.change")
            raise RuntimeError("the change fails after its audit entry was written")
    assert fast_store.setting("demo") == "" and audit.count(fast_store) == 0
    assert fast_store.setting("audit.head") == ""
    # outside a transaction it opens (and commits) its own
    assert audit.record(fast_store, actor="cli:tester", action="demo.change") == 1
    assert not fast_store.conn.in_transaction and audit.verify(fast_store) == []


def test_entries_newest_first_with_filter(fast_store: Store) -> None:
    chain(fast_store, 5)
    audit.record(fast_store, actor="engine", action="sync.pause", target="sync")
    assert [e["seq"] for e in audit.entries(fast_store, limit=3)] == [6, 5, 4]
    assert [e["seq"] for e in audit.entries(fast_store, limit=2, offset=4)] == [2, 1]
    only = audit.entries(fast_store, action="sync.pause")
    assert [(e["seq"], e["actor"], e["detail"]) for e in only] == [(6, "engine", {})]


def test_real_keyring_store(store: Store) -> None:
    chain(store, 4)
    other = Store.open(store.paths, "keyring", create=False)  # a second connection, key from the keyring
    try:
        assert audit.verify(other) == [] and audit.count(other) == 4
        other.conn.execute("UPDATE audit SET actor = 'api:mallory' WHERE seq = 2")
    finally:
        other.close()
    assert audit.verify(store) == [
        Problem(2, "edited", "entry 2 was edited: its content no longer matches its hash")]


# -- tampering by hand, one kind per fresh chain -------------------------------------------------
def test_edited_detail(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("""UPDATE audit SET detail = '{"n":33}' WHERE seq = 3""")
    assert audit.verify(fast_store) == [
        Problem(3, "edited", "entry 3 was edited: its content no longer matches its hash")]


def test_deleted_middle_entry(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("DELETE FROM audit WHERE seq = 5")
    assert audit.verify(fast_store) == [
        Problem(5, "deleted", "entry 5 is missing (deleted): entry 6 follows entry 4")]


def test_deleted_last_entry(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("DELETE FROM audit WHERE seq = 10")
    assert audit.verify(fast_store) == [
        Problem(10, "deleted", "the last entry (entry 10) was deleted: the trail ends at entry 9")]
    # a later append does not paper over it: it continues from the head pointer, leaving the gap
    assert audit.record(fast_store, actor="cli:tester", action="test.step") == 11
    assert audit.verify(fast_store) == [
        Problem(10, "deleted", "entry 10 is missing (deleted): entry 11 follows entry 9")]


def test_truncated_tail(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("DELETE FROM audit WHERE seq > 7")
    assert audit.verify(fast_store) == [
        Problem(8, "deleted", "the last 3 entries (entries 8 to 10) were deleted: the trail ends at entry 7")]


def test_swapped_rows_including_seq(fast_store: Store) -> None:
    chain(fast_store)
    conn = fast_store.conn
    r7, r8 = row(fast_store, 7), row(fast_store, 8)
    sets = ", ".join(f"{c} = ?" for c in COLS)
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 7")  # seq is UNIQUE: park one first
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = 8", r7)
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = -1", r8)
    assert [r[0] for r in conn.execute("SELECT seq FROM audit ORDER BY id")] == [1, 2, 3, 4, 5, 6, 8, 7, 9, 10]
    found = audit.verify(fast_store)
    assert [(p.seq, p.kind) for p in found] == [(7, "reordered")]
    assert found[0].message.startswith("entries 7 and 8 are out of order")


def test_swapped_contents_with_seq_left_in_place(fast_store: Store) -> None:
    chain(fast_store)
    r7, r8 = row(fast_store, 7), row(fast_store, 8)
    sets = ", ".join(f"{c} = ?" for c in COLS[1:])
    fast_store.conn.execute(f"UPDATE audit SET {sets} WHERE seq = 7", r8[1:])
    fast_store.conn.execute(f"UPDATE audit SET {sets} WHERE seq = 8", r7[1:])
    found = audit.verify(fast_store)
    assert [(p.seq, p.kind) for p in found] == [(7, "reordered")]
    assert found[0].message.startswith("entries 7 and 8 are out of order")


def test_edited_hash_column(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("UPDATE audit SET hash = ? WHERE seq = 6", ("f" * 64,))
    found = audit.verify(fast_store)
    assert [(p.seq, p.kind) for p in found] == [(6, "edited")]
    assert found[0].message.startswith("entry 6 was edited: its stored hash was changed")


def test_rewritten_entry_with_recomputed_hash(fast_store: Store) -> None:
    chain(fast_store)
    r = dict(zip(COLS, row(fast_store, 4)))
    r["actor"] = "api:mallory"
    new_hash = audit.entry_hash(*(r[c] for c in COLS[:-1]))
    fast_store.conn.execute("UPDATE audit SET actor = ?, hash = ? WHERE seq = 4", (r["actor"], new_hash))
    found = audit.verify(fast_store)
    assert [(p.seq, p.kind) for p in found] == [(5, "chain")]
    assert "between entries 4 and 5" in found[0].message


def test_first_entry_deleted_and_several_problems_in_order(fast_store: Store) -> None:
    chain(fast_store)
    fast_store.conn.execute("DELETE FROM audit WHERE seq IN (1, 8)")
    fast_store.conn.execute("UPDATE audit SET target = 'step:x' WHERE seq = 3")
    assert problems(fast_store) == [(1, "deleted"), (3, "edited"), (8, "deleted")]
    assert audit.verify(fast_store)[0].message == "entry 1 is missing (deleted): the trail starts at entry 2"


def test_removed_head_pointer(fast_store: Store) -> None:
    chain(fast_store, 3)
    fast_store.conn.execute("DELETE FROM settings WHERE key = 'audit.head'")
    assert problems(fast_store) == [(3, "chain")]


# -- wired into the places that change things ----------------------------------------------------
def test_user_add_and_reprocess_are_recorded(fast_store: Store) -> None:
    add_user(fast_store, "alice", "manager", actor="cli:ops")
    pipe = Pipeline(fast_store)
    out = pipe.ingest_bytes(b"\x00\x01 not an export", origin="/x/garbage.bin")
    assert out.status == "quarantined"
    qid = fast_store.quarantine_list()[0]["id"]
    pipe.reprocess(qid, actor="api:alice")
    got = [(e["seq"], e["actor"], e["action"], e["target"], e["detail"]) for e in audit.entries(fast_store)]
    assert got == [(2, "api:alice", "quarantine.reprocess", f"quarantine:{qid}", {"document_id": out.document_id}),
                   (1, "cli:ops", "user.add", "user:alice", {"role": "manager"})]
    assert audit.verify(fast_store) == []


def test_api_records_the_caller_and_lists_the_trail(tmp_path: Path, keyring_ok) -> None:
    from agent.engine import Engine

    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n")
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    try:
        tokens = {r: add_user(eng.store(), f"{r}-user", r) for r in ("front_desk", "manager", "admin")}
        url = f"http://127.0.0.1:{eng.port}/api/v1"

        def call(method: str, path: str, role: str, **kw: Any) -> requests.Response:
            return requests.request(method, url + path, headers={"Authorization": f"Bearer {tokens[role]}"},
                                    timeout=30, **kw)

        assert call("POST", "/pause", "manager").status_code == 200
        assert call("POST", "/resume", "manager").status_code == 200
        assert call("POST", "/users", "admin", json={"name": "carol", "role": "front_desk"}).status_code == 200
        assert call("GET", "/audit", "front_desk").status_code == 403
        r = call("GET", "/audit", "manager", params={"page_size": 3})
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 6
        assert [(e["actor"], e["action"], e["target"]) for e in body["items"]] == [
            ("api:admin-user", "user.add", "user:carol"),
            ("api:manager-user", "sync.resume", "sync"),
            ("api:manager-user", "sync.pause", "sync"),
        ]
        assert audit.verify(eng.store()) == []
    finally:
        eng.stop()


def test_cli_verify_and_list(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    for name in ("alice", "bob", "carol"):
        r = run_cli("users", "add", name, "--role", "manager", home=home)
        assert r.returncode == 0, r.stderr
    r = run_cli("audit", "verify", home=home)
    assert r.returncode == 0 and "audit trail intact: 3 entries" in r.stdout, r.stdout + r.stderr
    listed = json.loads(run_cli("audit", "list", "--json", "--limit", "2", home=home).stdout)
    assert [(e["seq"], e["actor"], e["target"]) for e in listed] == [
        (3, f"cli:{getpass.getuser()}", "user:carol"), (2, f"cli:{getpass.getuser()}", "user:bob")]

    store = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        store.conn.execute("""UPDATE audit SET detail = '{"role":"admin"}' WHERE seq = 2""")
    finally:
        store.close()
    r = run_cli("audit", "verify", home=home)
    assert r.returncode == 1
    assert "[edited] entry 2 was edited: its content no longer matches its hash" in r.stdout
    assert "entry 1 " not in r.stdout and "entry 3 " not in r.stdout

