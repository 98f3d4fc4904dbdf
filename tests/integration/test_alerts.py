"""Alerts (agent/alerts.py) on a real store: each fires once per repeat window while it holds,
clears, and fires again when it comes back; the email reaches a real SMTP server (aiosmtpd)
over STARTTLS with a verified certificate and a password from the real keyring, and carries no
patient data; the running engine's status carries active alerts."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import alerts, audit
from agent.config import Config, FolderConfig
from agent.kpi_config import AlertsConfig, GoalsConfig
from agent.store import Store
from core.states import AlertKind
from tests.tls import _self_signed

T0 = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)  # a Wednesday
PATIENT = ("Zebediah", "Quartermaine", "MRN-SECRET-77", "1950-02-03")


def _ts(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def _setup(store: Store) -> None:
    with store.tx():
        store.conn.execute("INSERT INTO documents (id, sha256, origin, source, format, size, content, status, "
                           "received_at) VALUES (1, 'x', 'f', 'cli', 'hl7v2', 1, x'00', 'processed', ?)",
                           (_ts(T0 - timedelta(days=30)),))
        data = {"patient": {"given": PATIENT[0], "family": PATIENT[1], "mrn": PATIENT[2], "dob": PATIENT[3]},
                "dos_start": "2025-03-01"}
        store.conn.execute("INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, "
                           "mrn, dos, data, findings, content_hash, created_at, updated_at) VALUES "
                           "(1, 'k1', 'charge', 't', 'V1', 1, 'ready', ?, '2025-03-01', ?, '[]', 'h', ?, ?)",
                           (PATIENT[2], json.dumps(data), _ts(T0), _ts(T0)))


def _stale(store: Store, created: datetime, version: int = 1) -> None:
    with store.tx():
        store.conn.execute("INSERT INTO outbox (encounter_id, version, state, next_attempt_at, created_at, updated_at) "
                           "VALUES (1, ?, 'queued', ?, ?, ?)", (version, _ts(created), _ts(created), _ts(created)))


def _trail(store: Store, action: str) -> list[dict[str, Any]]:
    return audit.entries(store, limit=100, offset=0, action=action)


def test_an_alert_fires_once_per_window_clears_and_fires_again(fast_store: Store) -> None:
    s = fast_store
    _setup(s)
    cfg = Config(alerts=AlertsConfig(queue_hours=4, repeat_hours=24))
    assert alerts.evaluate(s, cfg, now=T0) == []  # nothing waits yet
    _stale(s, T0 - timedelta(hours=5))
    fired = alerts.evaluate(s, cfg, now=T0)
    assert [f["kind"] for f in fired] == [AlertKind.QUEUE_STALE]
    assert fired[0]["detail"] == {"charges": 1, "oldest_hours": 5.0}
    assert "resume" in fired[0]["fix"]
    # still holding, inside the window: said once only
    for later in (timedelta(minutes=5), timedelta(hours=12), timedelta(hours=23, minutes=59)):
        assert alerts.evaluate(s, cfg, now=T0 + later) == []
    assert len(_trail(s, "alert.queue_stale")) == 1
    assert [a["kind"] for a in alerts.active(s)] == ["queue_stale"]
    # a whole window later and still holding: said again
    assert [f["kind"] for f in alerts.evaluate(s, cfg, now=T0 + timedelta(hours=24))] == [AlertKind.QUEUE_STALE]
    assert len(_trail(s, "alert.queue_stale")) == 2
    # the charge goes out: cleared, no longer active, nothing fired
    with s.tx():
        s.conn.execute("UPDATE outbox SET state = 'delivered'")
    assert alerts.evaluate(s, cfg, now=T0 + timedelta(hours=25)) == []
    assert alerts.active(s) == []
    # it comes back within the window of the last firing: fires at once
    _stale(s, T0, version=2)
    fired = alerts.evaluate(s, cfg, now=T0 + timedelta(hours=26))
    assert [f["kind"] for f in fired] == [AlertKind.QUEUE_STALE]
    assert len(_trail(s, "alert.queue_stale")) == 3
    # nothing an alert recorded names the patient
    blob = json.dumps(_trail(s, "alert.queue_stale")) + json.dumps(alerts.active(s))
    assert not any(p in blob for p in PATIENT)


def test_each_condition(fast_store: Store, tmp_path: Path) -> None:
    s = fast_store
    _setup(s)
    now = T0
    goals = GoalsConfig(targets={"denial_rate": {"target": 10.0}}, missed_charge_days=3)
    cfg = Config(folders=[FolderConfig(path=tmp_path)], goals=goals,
                 alerts=AlertsConfig(no_export_hours=4, business_hours="08:00-18:00", business_days="mon-sun",
                                     sync_failures=3, denial_min_claims=4))
    # no export: the clock starts at the first check (the last document is older), so not yet
    with s.tx():
        s.set_setting("alerts.watch_since", _ts(now - timedelta(days=2)))
        s.set_setting("sync.failures", "3")
        # 4 claims adjudicated in the last 7 days, 2 denied = 50 % > 10 %
        for i, state in enumerate(("paid", "denied", "denied", "paid")):
            s.conn.execute("INSERT INTO claims (claim_id, target, state, dos, billed, first_submitted_at, submitted_at, "
                           "adjudicated_on, updated_at) VALUES (?, 'x12', ?, '2025-03-01', '10', ?, ?, ?, ?)",
                           (f"C{i}", state, _ts(now), _ts(now), "2025-03-10", _ts(now)))
        # a scheduled visit 5 days ago with no charge
        s.conn.execute("INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, mrn, "
                       "dos, data, findings, content_hash, created_at, updated_at) VALUES (2, 'k2', 'expected', 't', "
                       "'S2', 1, 'expected', 'MRN-OTHER', '2025-03-07', '{}', '[]', 'h', ?, ?)", (_ts(now), _ts(now)))
    kinds = {c.kind: c for c in alerts.conditions(s, cfg, now) if c.holds}
    assert set(kinds) == {AlertKind.NO_EXPORT, AlertKind.SYNC_FAILING, AlertKind.DENIAL_RATE,
                          AlertKind.MISSED_CHARGES}
    assert kinds[AlertKind.DENIAL_RATE].detail == {"denied": 2, "adjudicated": 4, "rate": 50.0, "target": 10.0}
    assert kinds[AlertKind.MISSED_CHARGES].detail == {"visits": 1, "days": 3}
    assert kinds[AlertKind.SYNC_FAILING].detail["failures"] == 3
    # the denial check needs enough claims; without a goal it is off
    cfg.alerts.denial_min_claims = 5
    cfg.goals = GoalsConfig()
    assert AlertKind.DENIAL_RATE not in {c.kind for c in alerts.conditions(s, cfg, now) if c.holds}


def test_business_hours_between() -> None:
    # Friday 17:00 local -> Monday 09:00 local, 08:00-18:00 Mon-Fri: 1 h Friday + 1 h Monday
    fri = datetime(2025, 3, 14, 17, 0).astimezone()
    mon = datetime(2025, 3, 17, 9, 0).astimezone()
    assert alerts.business_hours_between(fri, mon, "08:00-18:00", "mon-fri") == pytest.approx(2.0)
    assert alerts.business_hours_between(mon, fri, "08:00-18:00", "mon-fri") == 0.0


# -- email: a real SMTP server with STARTTLS and AUTH ---------------------------------------------
class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd hook)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def smtp_server(tmp_path: Path) -> Iterator[tuple[int, Path, _Inbox]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = _Inbox()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login, password = auth_data.login.decode(), auth_data.password.decode()
        inbox.logins.append((login, password))
        return AuthResult(success=(login, password) == ("alerts@practice.example", "s3cret-mail"))

    port = _free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=authenticator, auth_required=True, auth_require_tls=True)
    ctl.start()
    try:
        yield port, cert, inbox
    finally:
        ctl.stop()


def _mail_cfg(port: int, ca: Path | str) -> Config:
    return Config(alerts=AlertsConfig(queue_hours=1, smtp_host="127.0.0.1", smtp_port=port,
                                      smtp_user="alerts@practice.example", smtp_from="chargebridge@practice.example",
                                      smtp_to=["manager@practice.example"], smtp_ca_bundle=str(ca),
                                      smtp_timeout_seconds=10))


def test_alert_email_arrives_over_starttls_without_patient_data(fast_store: Store, smtp_server: Any,
                                                                 paths: Any, keyring_ok: None) -> None:
    from core.secrets import ALERT_SMTP_PASSWORD, get_secret, set_secret

    port, ca, inbox = smtp_server
    s = fast_store
    _setup(s)
    _stale(s, T0 - timedelta(hours=3))
    set_secret(paths, ALERT_SMTP_PASSWORD, "s3cret-mail")  # the real keyring, as the engine reads it
    fired = alerts.evaluate(s, _mail_cfg(port, ca), now=T0, password=get_secret(paths, ALERT_SMTP_PASSWORD))
    assert [f["kind"] for f in fired] == [AlertKind.QUEUE_STALE]
    assert inbox.logins == [("alerts@practice.example", "s3cret-mail")]
    assert len(inbox.messages) == 1
    mail_from, rcpts, raw = inbox.messages[0]
    assert mail_from == "chargebridge@practice.example" and rcpts == ["manager@practice.example"]
    msg = message_from_bytes(raw)
    body = msg.get_payload(decode=True).decode()
    assert msg["Subject"].startswith("ChargeBridge alert: 1 charge(s) have waited more than 1 hours")
    assert "What to do:" in body and "charges: 1" in body
    assert not any(p in raw.decode() for p in PATIENT)
    assert s.conn.execute("SELECT email_error FROM alerts").fetchone()[0] == ""
    # the same alert inside its window sends nothing more
    alerts.evaluate(s, _mail_cfg(port, ca), now=T0 + timedelta(hours=1), password="s3cret-mail")
    assert len(inbox.messages) == 1


def test_untrusted_mail_certificate_sends_nothing_and_says_why(fast_store: Store, smtp_server: Any) -> None:
    port, _ca, inbox = smtp_server
    s = fast_store
    _setup(s)
    _stale(s, T0 - timedelta(hours=3))
    fired = alerts.evaluate(s, _mail_cfg(port, ""), now=T0, password="s3cret-mail")  # system CAs only
    assert fired and inbox.messages == [] and inbox.logins == []  # the password never left
    err = s.conn.execute("SELECT email_error FROM alerts").fetchone()[0]
    assert "certificate could not be verified" in err
    assert len(_trail(s, "alert.queue_stale")) == 1  # the trail and the tray still have it


def test_engine_status_carries_active_alerts(tmp_path: Path) -> None:
    from tests.conftest import start_test_engine

    eng = start_test_engine(tmp_path)
    try:
        store = eng.store()
        _setup_engine_store(store)
        fired = alerts.run(eng)
        assert AlertKind.QUEUE_STALE in [f["kind"] for f in fired]
        r = requests.get(f"{eng.url}/status", headers={"Authorization": f"Bearer {eng.tokens['front_desk']}"},
                         timeout=10)
        assert r.status_code == 200
        shown = {a["kind"]: a for a in r.json()["alerts"]}
        assert shown["queue_stale"]["fix"] and shown["queue_stale"]["detail"]["charges"] == 1
        r = requests.get(f"{eng.url}/audit", params={"action": "alert.queue_stale"},
                         headers={"Authorization": f"Bearer {eng.tokens['manager']}"}, timeout=10)
        assert r.json()["total"] == 1  # the Activity page lists it
    finally:
        eng.stop()


def _setup_engine_store(store: Store) -> None:
    now = datetime.now(UTC)
    with store.tx():
        store.conn.execute("INSERT INTO documents (sha256, origin, source, format, size, content, status, "
                           "received_at) VALUES ('y', 'f', 'cli', 'hl7v2', 1, x'00', 'processed', ?)", (_ts(now),))
        doc = store.conn.execute("SELECT max(id) FROM documents").fetchone()[0]
        store.conn.execute("INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, "
                           "dos, data, findings, content_hash, created_at, updated_at) VALUES ('ke', 'charge', 't', "
                           "'V9', ?, 'ready', 'M9', '2025-03-01', '{}', '[]', 'h', ?, ?)", (doc, _ts(now), _ts(now)))
        enc = store.conn.execute("SELECT max(id) FROM encounters").fetchone()[0]
        old = _ts(now - timedelta(hours=30))
        store.conn.execute("INSERT INTO outbox (encounter_id, version, state, next_attempt_at, created_at, updated_at) "
                           "VALUES (?, 1, 'queued', ?, ?, ?)", (enc, old, old, old))
