"""Test mode (``[mode] test = true``): sync runs as usual, the RCM receives nothing.

The configured target is wrapped (:class:`connectors.rcm.dryrun.TestModeTarget`): it renders
the exact payload it would send (FHIR Bundles, 837 files) and this module keeps it in the
encrypted store (it is patient data), with each claim as sent. A dry run's claims count as
delivered, and reconciliation reads them back as the RCM's view, so the mismatch queue, the
claim lifecycle and the KPIs work before go-live. With ``[mode] sandbox_url`` the same push
also goes to the RCM's sandbox (its own secret, never the production one).

``chargebridge testmode list | show ID | export ID --out FILE | set-secret``, ``GET
/api/v1/testmode`` and the window's "Test mode" page read what is kept here; go-live
(agent/golive.py) switches test mode off.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from agent import audit, keys
from agent.config import Config, RcmConfig
from agent.reconcile import local_from_row
from agent.store import Store, now
from connectors.rcm.base import PushResult, RemoteCharge, Target
from connectors.rcm.dryrun import TestModeTarget
from core.errors import ConfigError, NotFound
from core.model import Encounter
from core.paths import Paths

SANDBOX_SECRET = "rcm-sandbox-secret"  # keyring entry: the sandbox RCM's client secret / token
MAX_FILES = 50  # payload files kept per send (a push renders 1-3 FHIR Bundles or one 837)
MAX_FILE_BYTES = 64 * 1024 * 1024  # one rendered payload; a bigger one is a connector defect
EXPORT_CAP = 16 * 1024 * 1024  # the API hands out at most this much of a send (the CLI: all)


class StoreRecorder:
    """Keeps test-mode sends in the encrypted store. ``store`` gives the calling thread's
    connection (the engine's per-thread store); without one, each thread opens its own."""

    def __init__(self, paths: Paths, cfg: Config, store: Callable[[], Store] | None = None) -> None:
        self._paths = paths
        self._key_source = cfg.key_source
        self._store = store
        self._local = threading.local()

    def store(self) -> Store:
        if self._store is not None:
            return self._store()
        s: Store | None = getattr(self._local, "store", None)
        if s is None:
            s = Store.open_with_key(self._paths, keys.store_key(self._paths, self._key_source, create=False))
            self._local.store = s
        return s

    def record(self, *, target: str, route: str, action: str, files: list[tuple[str, bytes]],
               sent: list[tuple[Encounter, str, PushResult]]) -> int:
        if len(files) > MAX_FILES or any(len(body) > MAX_FILE_BYTES for _, body in files):
            raise ValueError("a rendered payload is over test mode's budget")  # a connector defect
        store = self.store()
        ts = now()
        delivered = sum(1 for *_, r in sent if r.delivered)
        with store.tx() as conn:
            cur = conn.execute(
                "INSERT INTO testmode_sends (at, target, route, action, encounters, delivered, rejected, files, bytes, "
                "detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (ts, target, route, action, len(sent), delivered, len(sent) - delivered, len(files),
                 sum(len(b) for _, b in files),
                 json.dumps({"rejections": [r.reason for *_, r in sent if not r.delivered][:20]})))
            send_id = int(cur.lastrowid or 0)
            for seq, (name, body) in enumerate(files, start=1):
                conn.execute("INSERT INTO testmode_files (send_id, seq, name, body, sha256) VALUES (?,?,?,?,?)",
                             (send_id, seq, _safe_name(name, seq), body, hashlib.sha256(body).hexdigest()))
            for enc, identifier, res in sent:
                if not res.delivered:
                    continue
                conn.execute(
                    "INSERT INTO testmode_claims (identifier, business_key, send_id, remote_id, dos, data, cancelled,"
                    " updated_at) VALUES (?,?,?,?,?,?,0,?) ON CONFLICT(identifier) DO UPDATE SET "
                    "business_key = excluded.business_key, send_id = excluded.send_id, remote_id = excluded.remote_id,"
                    " dos = excluded.dos, data = excluded.data, cancelled = 0, updated_at = excluded.updated_at",
                    (identifier, enc.business_key, send_id, str(res.remote_ids.get("Claim", "")), enc.dos_start,
                     json.dumps(enc.to_dict()), ts))
            store.event("testmode.send", detail={"send": send_id, "route": route, "encounters": len(sent),
                                                 "files": len(files)})
        return send_id

    def cancelled(self, remote_id: str) -> bool:
        store = self.store()
        with store.tx() as conn:
            cur = conn.execute("UPDATE testmode_claims SET cancelled = 1, updated_at = ? WHERE remote_id = ?",
                               (now(), remote_id))
        return bool(cur.rowcount)

    def charges(self, start: date, end: date) -> list[RemoteCharge]:
        out = []
        for identifier, remote_id, data in self.store().conn.execute(
                "SELECT identifier, remote_id, data FROM testmode_claims WHERE cancelled = 0 AND dos BETWEEN ? AND ?"
                " ORDER BY dos, identifier", (start.isoformat(), end.isoformat())):
            lc = local_from_row(0, "charge", json.loads(data), str(identifier))
            out.append(RemoteCharge(remote_id=str(remote_id), identifier=lc.identifier, patient_mrn=lc.mrn,
                                    patient_family=lc.family, patient_given=lc.given, patient_dob=lc.dob,
                                    dos=lc.dos, rendering_npi=lc.rendering_npi, diagnoses=list(lc.diagnoses),
                                    lines=list(lc.lines)))
        return out


def _safe_name(name: str, seq: int) -> str:
    """A rendered file's name as a plain file name (it becomes one in an export)."""
    base = os.path.basename(name.replace("\\", "/")).strip().lstrip(".")
    keep = "".join(c for c in base if c.isalnum() or c in "-_.")[:100]
    return keep or f"payload-{seq}"


def wrap(target: Target, paths: Paths, cfg: Config, store: Callable[[], Store] | None = None, *,
         build: Callable[[RcmConfig, str], Target]) -> TestModeTarget:
    """``target`` in test mode: a dry run, or the same vendor on ``[mode] sandbox_url``, made by
    ``build`` (:func:`agent.rcm.build_target`; passed in, so this module never imports agent.rcm)."""
    sandbox = None
    if cfg.mode.sandbox_url:
        secret = keys.get_secret(paths, SANDBOX_SECRET) or ""
        if not secret:
            raise ConfigError("test mode sends to a sandbox RCM, but its secret is not in the OS keyring",
                              "run: chargebridge testmode set-secret (the production secret never goes to "
                              "the sandbox address)", key="mode.sandbox_url")
        rc = replace(cfg.rcm, base_url=cfg.mode.sandbox_url, token_url=cfg.mode.sandbox_token_url)
        sandbox = build(rc, secret)
    return TestModeTarget(target, StoreRecorder(paths, cfg, store), sandbox=sandbox)


# -- reading what was kept ----------------------------------------------------------------------
_SEND_COLS = ("id", "at", "target", "route", "action", "encounters", "delivered", "rejected", "files", "bytes")


def _send_row(row: Any) -> dict[str, Any]:
    return dict(zip(_SEND_COLS, row, strict=True))


def sends(store: Store, *, page: int = 1, page_size: int = 50) -> dict[str, Any]:
    """The recorded sends, newest first, as an API page (counts only: no patient data)."""
    total = int(store.conn.execute("SELECT count(*) FROM testmode_sends").fetchone()[0])
    rows = store.conn.execute(f"SELECT {', '.join(_SEND_COLS)} FROM testmode_sends ORDER BY id DESC LIMIT ? OFFSET ?",
                              (page_size, (page - 1) * page_size)).fetchall()
    return {"total": total, "page": page, "page_size": page_size, "items": [_send_row(r) for r in rows]}


def send(store: Store, send_id: int) -> dict[str, Any]:
    """One send with its files' names, sizes and digests."""
    row = store.conn.execute(f"SELECT {', '.join(_SEND_COLS)} FROM testmode_sends WHERE id = ?",
                             (send_id,)).fetchone()
    if row is None:
        raise NotFound(f"test-mode send {send_id} does not exist", "list them: chargebridge testmode list")
    out = _send_row(row)
    out["file_list"] = [{"seq": int(s), "name": str(n), "size": int(z), "sha256": str(h)} for s, n, z, h in
                        store.conn.execute("SELECT seq, name, length(body), sha256 FROM testmode_files "
                                           "WHERE send_id = ? ORDER BY seq", (send_id,))]
    return out


def export_bytes(store: Store, send_id: int) -> tuple[str, bytes]:
    """A send's payload as one file: the file itself when there is one, else a ZIP of them."""
    send(store, send_id)  # NotFound when there is no such send
    files = [(str(n), bytes(b)) for n, b in store.conn.execute(
        "SELECT name, body FROM testmode_files WHERE send_id = ? ORDER BY seq", (send_id,))]
    if len(files) == 1:
        return files[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, body) in enumerate(files, start=1):
            zf.writestr(f"{i:02d}-{name}", body)
    return f"test-send-{send_id}.zip", buf.getvalue()


def export(store: Store, send_id: int, out: Path, *, actor: str) -> dict[str, Any]:
    """Write a send's payload to ``out`` (0600: it is patient data), audited."""
    name, body = export_bytes(store, send_id)
    try:  # a new file only: never through a link, never over someone's file
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        raise ConfigError(f"{out} already exists", "choose a new file name for --out") from None
    except OSError as exc:
        raise ConfigError(f"{out} cannot be created ({exc.strerror})", "choose a folder you can write to") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
    except OSError as exc:
        out.unlink(missing_ok=True)
        raise ConfigError(f"{out} could not be written ({exc.strerror})", "free some space or choose another "
                          "folder for --out") from None
    with store.tx():
        audit.record(store, actor=actor, action="testmode.export", target=f"testmode:{send_id}",
                     detail={"bytes": len(body)})
    return {"id": send_id, "file": str(out), "name": name, "bytes": len(body)}


def requeue_dry_run(store: Store) -> int:
    """At go-live, on request: encounters a dry run 'delivered' go back to the queue, so the
    first live sync sends them to the RCM. Call inside a transaction."""
    cur = store.conn.execute(
        "UPDATE outbox SET state = 'queued', remote_ids = '{}', attempts = 0, last_error = '', next_attempt_at = ?, "
        "updated_at = ? WHERE state = 'delivered' AND json_extract(remote_ids, '$.Claim') LIKE 'dryrun-%'",
        (now(), now()))
    return int(cur.rowcount or 0)


def summary(store: Store) -> dict[str, int]:
    """Counts for go-live and the status page: sends, and claims delivered only in test mode."""
    n_sends = int(store.conn.execute("SELECT count(*) FROM testmode_sends").fetchone()[0])
    n_claims = int(store.conn.execute("SELECT count(*) FROM testmode_claims WHERE cancelled = 0").fetchone()[0])
    return {"sends": n_sends, "claims": n_claims}


def dry_run_delivered(store: Store) -> int:
    """Outbox items 'delivered' by a dry run (nothing reached the RCM; their made-up claim ids
    come from :func:`connectors.rcm.dryrun.dry_run_id`)."""
    return int(store.conn.execute(
        "SELECT count(*) FROM outbox WHERE state = 'delivered' AND json_extract(remote_ids, '$.Claim') LIKE ?",
        ("dryrun-%",)).fetchone()[0])
