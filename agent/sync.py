"""Outbox and the sync job: every ready encounter reaches the RCM once, whatever fails.

Outbox states: ``queued`` -> ``sending`` -> ``delivered`` | ``failed`` (retryable, with a next
attempt time) | ``rejected`` (the RCM's reason, for people). Rows are marked ``sending`` and
committed *before* the request; a crash leaves them ``sending``, and the next start puts them
back in the queue. Re-sending is harmless because the target creates conditionally on stable
identifiers — that is what turns at-least-once into exactly-once.
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent import claims
from agent.store import Store, now
from connectors.rcm.base import Target, TargetError
from core.model import Encounter
from core.states import EncounterKind, EncounterState, OutboxState, TargetErrorKind

log = logging.getLogger("chargebridge.sync")

BACKOFF_BASE = 30.0  # seconds; doubled per attempt, with jitter
BACKOFF_CAP = 3600.0


@dataclass
class SyncResult:
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    remaining: int = 0
    error: str = ""
    error_kind: TargetErrorKind | str = ""  # "" when the run had no error
    skipped: str = ""  # why the run did nothing (paused, breaker open, no RCM)
    rejections: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "rejected": self.rejected, "failed": self.failed,
                "remaining": self.remaining, "error": self.error, "error_kind": self.error_kind,
                "skipped": self.skipped, "rejections": self.rejections}


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    r = rng or random
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1)) * r.uniform(0.5, 1.5)


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue_ready(self) -> int:
        """Queue every ready charge encounter whose current version is not queued yet."""
        ts = now()
        with self.store.tx():
            cur = self.store.conn.execute(
                "INSERT INTO outbox (encounter_id, version, state, next_attempt_at, created_at, updated_at)"
                " SELECT e.id, e.version, ?, ?, ?, ? FROM encounters e"
                " WHERE e.state = ? AND e.kind = ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.encounter_id = e.id AND o.version = e.version)",
                (OutboxState.QUEUED, ts, ts, ts, EncounterState.READY, EncounterKind.CHARGE))
        return int(cur.rowcount or 0)

    def recover_sending(self) -> int:
        """After a crash: a batch that was in flight goes back to the queue (re-send is idempotent)."""
        with self.store.tx():
            cur = self.store.conn.execute("UPDATE outbox SET state = ?, updated_at = ? WHERE state = ?",
                                          (OutboxState.QUEUED, now(), OutboxState.SENDING))
        n = int(cur.rowcount or 0)
        if n:
            log.info("re-queued %d outbox item(s) left in flight by an earlier run", n)
        return n

    def due(self, limit: int, *, after_id: int = 0, now_too: bool = False) -> list[tuple[int, int, int]]:
        """Items to send, oldest first. ``now_too``: a person pressed "Sync now", so items waiting
        out a backoff go too (the server's Retry-After is still honoured by the caller)."""
        when = "9999" if now_too else now()
        return [(int(a), int(b), int(c)) for a, b, c in self.store.conn.execute(
            "SELECT id, encounter_id, attempts FROM outbox WHERE state IN (?, ?)"
            " AND next_attempt_at <= ? AND id > ? ORDER BY id LIMIT ?",
            (OutboxState.QUEUED, OutboxState.FAILED, when, after_id, limit))]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in OutboxState}
        for state, n in self.store.conn.execute("SELECT state, count(*) FROM outbox GROUP BY state"):
            out[str(state)] = int(n)
        return out


class Breaker:
    """After ``max_failures`` failed runs in a row, scheduled sync holds off for a while."""

    def __init__(self, store: Store, max_failures: int, cooldown_s: float) -> None:
        self.store = store
        self.max_failures = max_failures
        self.cooldown_s = cooldown_s

    @property
    def failures(self) -> int:
        return int(self.store.setting("sync.failures", "0"))

    def open_until(self) -> str:
        return self.store.setting("sync.breaker_until", "")

    def is_open(self) -> bool:
        until = self.open_until()
        return bool(until) and until > now()

    def record(self, ok: bool, error: str = "") -> None:
        with self.store.tx():
            if ok:
                self.store.set_setting("sync.failures", "0")
                self.store.set_setting("sync.breaker_until", "")
                self.store.set_setting("sync.last_error", "")
                return
            n = self.failures + 1
            self.store.set_setting("sync.failures", str(n))
            self.store.set_setting("sync.last_error", error)
            if n >= self.max_failures:
                until = _ts(datetime.now(UTC) + timedelta(seconds=self.cooldown_s))
                self.store.set_setting("sync.breaker_until", until)
                log.warning("sync paused by the circuit breaker after %d failed runs", n)


class SyncJob:
    """One sync run: queue, then push due items in batches until done or the RCM fails."""

    def __init__(self, store: Store, target: Target, *, batch_size: int = 100, breaker: Breaker | None = None,
                 stop: threading.Event | None = None) -> None:
        self.store = store
        self.target = target
        self.batch_size = batch_size
        self.outbox = Outbox(store)
        self.breaker = breaker
        self.stop = stop or threading.Event()

    def run(self, *, force: bool = False) -> SyncResult:
        res = SyncResult()
        if self.breaker and self.breaker.is_open() and not force:
            res.skipped = "circuit breaker open"
            return res
        not_before = self.store.setting("sync.not_before")
        if not_before and not_before > now():  # the RCM's Retry-After holds even for "Sync now"
            res.skipped = f"the RCM asked ChargeBridge to wait until {not_before}"
            return res
        self.outbox.enqueue_ready()
        last = 0
        while not self.stop.is_set():
            batch = self.outbox.due(self.batch_size, after_id=last, now_too=force)
            if not batch:
                break
            last = batch[-1][0]  # each item at most once per run, even when it fails again
            if not self._send(batch, res):
                break
        if not res.error:
            self._cancel_voids()
        res.remaining = sum(v for k, v in self.outbox.counts().items() if k in (OutboxState.QUEUED, OutboxState.FAILED))
        if self.breaker:
            self.breaker.record(not res.error, res.error)
        log.info("sync run: delivered %d, rejected %d, failed %d, remaining %d%s", res.delivered, res.rejected,
                 res.failed, res.remaining, f" ({res.error_kind})" if res.error_kind else "")
        return res

    def _send(self, batch: list[tuple[int, int, int]], res: SyncResult) -> bool:
        conn = self.store.conn
        ids = [b[0] for b in batch]
        qmarks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT o.id, e.business_key, e.data FROM outbox o JOIN encounters e ON e.id = o.encounter_id "
            f"WHERE o.id IN ({qmarks}) ORDER BY o.id", ids).fetchall()
        encounters = [Encounter.from_dict(json.loads(r[2])) for r in rows]
        by_key = {r[1]: int(r[0]) for r in rows}
        by_enc = {e.business_key: e for e in encounters}
        attempts = {b[0]: b[2] for b in batch}
        ts = now()
        with self.store.tx():  # committed before the request: a crash now means "re-send", never "lost"
            conn.execute(f"UPDATE outbox SET state = ?, attempts = attempts + 1, updated_at = ? "
                         f"WHERE id IN ({qmarks})", [OutboxState.SENDING, ts, *ids])
        corrections = self._corrections(by_key)
        try:
            results = self.target.push(encounters, corrections=corrections or None)
        except TargetError as exc:
            self._failed(ids, attempts, exc, res)
            return False
        except Exception as exc:  # a connector bug: keep the items, report, never crash the engine
            log.error("RCM connector failed with %s", type(exc).__name__)
            self._failed(ids, attempts, TargetError(f"the RCM connector failed ({type(exc).__name__})",
                                                    kind=TargetErrorKind.CONNECTOR), res)
            return False
        ts = now()
        with self.store.tx():
            for r in results:
                oid = by_key.get(r.business_key)
                if oid is None:
                    continue
                if r.delivered:
                    conn.execute("UPDATE outbox SET state = ?, remote_ids = ?, last_error = '', updated_at = ? "
                                 "WHERE id = ?", (OutboxState.DELIVERED, json.dumps(r.remote_ids), ts, oid))
                    enc_id = _enc_id(self.store, oid)
                    self.store.event("outbox.delivered", encounter_id=enc_id,
                                     detail={"outbox_id": oid, **r.remote_ids})
                    claims.record_delivery(self.store, encounter_id=enc_id, version=_version(self.store, oid),
                                           claim_id=self.target.identifier(by_enc[r.business_key]),
                                           target=self.target.name, remote_ids=r.remote_ids, at=ts)
                    res.delivered += 1
                else:
                    conn.execute("UPDATE outbox SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
                                 (OutboxState.REJECTED, r.reason, ts, oid))
                    self.store.event("outbox.rejected", encounter_id=_enc_id(self.store, oid),
                                     detail={"outbox_id": oid})
                    res.rejected += 1
                    res.rejections.append({"outbox_id": str(oid), "reason": r.reason})
        return True

    def _cancel_voids(self) -> int:
        """Encounters voided in the EHR after their Claim was delivered: cancel the Claim at the
        RCM (once per voided version; an event row records it). Targets without ``cancel`` leave
        them to reconciliation, which shows the Claim as not in the EHR. (H6)"""
        cancel = getattr(self.target, "cancel", None)
        if cancel is None:
            return 0
        # a target whose cancel takes the encounter (X12 writes a void claim from it) gets it
        wants_encounter = "encounter" in inspect.signature(cancel).parameters
        conn = self.store.conn
        rows = conn.execute(
            "SELECT e.id, e.version, e.data, (SELECT o.remote_ids FROM outbox o WHERE o.encounter_id = e.id "
            "AND o.state = ? ORDER BY o.version DESC LIMIT 1) AS remote FROM encounters e WHERE e.state = ? "
            "AND remote IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM events v WHERE v.encounter_id = e.id AND v.kind IN "
            "('encounter.cancelled', 'encounter.cancel_refused') AND json_extract(v.detail, '$.version') = e.version)",
            (OutboxState.DELIVERED, EncounterState.VOIDED)).fetchall()
        done = 0
        for enc_id, version, data, remote in rows:
            claim = json.loads(remote).get("Claim")
            if self.stop.is_set() or not isinstance(claim, str):
                continue
            try:
                ok, why = (cancel(claim, encounter=Encounter.from_dict(json.loads(data))) if wants_encounter
                           else cancel(claim))
            except TargetError as exc:
                log.warning("cancelling a voided claim failed (%s); the next sync tries again", exc.kind)
                break
            with self.store.tx():
                self.store.event("encounter.cancelled" if ok else "encounter.cancel_refused", encounter_id=enc_id,
                                 detail={"version": version, "Claim": claim, **({} if ok else {"reason": why})})
            done += int(ok)
        if done:
            log.info("cancelled %d claim(s) voided in the EHR", done)
        return done

    def _corrections(self, by_key: dict[str, int]) -> dict[str, str]:
        """business key -> the RCM's Claim id, for encounters whose earlier version was delivered: a
        revision (a corrected export, an edited line in an EHR database) is sent as a new version
        of that Claim, never as a second charge (H6)."""
        out: dict[str, str] = {}
        for key, oid in by_key.items():
            row = self.store.conn.execute(
                "SELECT p.remote_ids FROM outbox o JOIN outbox p ON p.encounter_id = o.encounter_id "
                "AND p.version < o.version AND p.state = ? WHERE o.id = ? ORDER BY p.version DESC LIMIT 1",
                (OutboxState.DELIVERED, oid)).fetchone()
            claim = json.loads(row[0]).get("Claim") if row else None
            if isinstance(claim, str) and claim:
                out[key] = claim
        return out

    def _failed(self, ids: list[int], attempts: dict[int, int], exc: TargetError, res: SyncResult) -> None:
        res.error, res.error_kind = str(exc), exc.kind
        conn = self.store.conn
        ts = now()
        with self.store.tx():
            if exc.retry_after is not None:
                self.store.set_setting("sync.not_before", _ts(datetime.now(UTC)
                                                              + timedelta(seconds=exc.retry_after)))
            for oid in ids:
                if exc.retryable:
                    delay = exc.retry_after if exc.retry_after is not None else backoff(attempts[oid] + 1)
                    nxt = _ts(datetime.now(UTC) + timedelta(seconds=delay))
                    conn.execute("UPDATE outbox SET state = ?, last_error = ?, next_attempt_at = ?, "
                                 "updated_at = ? WHERE id = ?", (OutboxState.FAILED, str(exc), nxt, ts, oid))
                else:  # a configuration problem (credentials, TLS): keep them queued for after the fix
                    conn.execute("UPDATE outbox SET state = ?, attempts = attempts - 1, last_error = ?, "
                                 "updated_at = ? WHERE id = ?", (OutboxState.QUEUED, str(exc), ts, oid))
        res.failed += len(ids) if exc.retryable else 0


def _version(store: Store, outbox_id: int) -> int:
    return int(store.conn.execute("SELECT version FROM outbox WHERE id = ?", (outbox_id,)).fetchone()[0])


def _enc_id(store: Store, outbox_id: int) -> int:
    return int(store.conn.execute("SELECT encounter_id FROM outbox WHERE id = ?", (outbox_id,)).fetchone()[0])
