"""Alerts: conditions a practice must hear about, said once (per ``repeat_hours``), with what to do.

The engine checks every ``[alerts] check_minutes`` (:func:`schedule`). Each kind
(:class:`core.states.AlertKind`) is either holding or not:

* it **fires** when it starts to hold, and again after every ``repeat_hours`` while it keeps
  holding — never more often;
* when it stops holding it is **cleared**; if it comes back later it fires at once.

A firing goes to the audit trail (action ``alert.<kind>``: the Activity page lists it), to the
status payload while active (``alerts``: the tray shows them), and — when ``smtp_host`` is set —
to an email sent with STARTTLS and a verified certificate (the password is in the OS keyring:
``chargebridge alerts set-password``). Nothing an alert says names a patient: counts, ages, and
the names of sources only. State lives in the ``alerts`` table (store migration 11).
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from agent import audit
from agent.config import Config
from agent.kpi_config import AlertsConfig
from agent.schedule import parse_days, parse_hours
from agent.store import Store
from core.states import AlertKind

log = logging.getLogger("chargebridge.alerts")

Mailer = Callable[[AlertsConfig, str | None, list[dict[str, Any]]], None]


@dataclass
class Condition:
    kind: AlertKind
    holds: bool
    title: str = ""
    fix: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def _parse(ts: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def business_hours_between(a: datetime, b: datetime, hours: str, days: str) -> float:
    """Hours of ``a`` … ``b`` that fall inside the business hours (local time) of business days."""
    if b <= a:
        return 0.0
    if (b - a).days > 400:
        return float("inf")
    start_t, end_t = parse_hours(hours)
    open_days = parse_days(days)
    a, b = a.astimezone(), b.astimezone()
    total = 0.0
    d = a.date()
    while d <= b.date():
        if d.weekday() in open_days:
            lo = max(a, datetime.combine(d, start_t, tzinfo=a.tzinfo))
            hi = min(b, datetime.combine(d, end_t, tzinfo=a.tzinfo))
            if hi > lo:
                total += (hi - lo).total_seconds()
        d += timedelta(days=1)
    return total / 3600


# -- the conditions --------------------------------------------------------------------------------
def _queue(store: Store, cfg: Config, now: datetime) -> Condition:
    a = cfg.alerts
    c = Condition(AlertKind.QUEUE_STALE, False)
    if a.queue_hours <= 0:
        return c
    cutoff = _iso(now - timedelta(hours=a.queue_hours))
    n, oldest = store.conn.execute(
        "SELECT count(*), min(created_at) FROM outbox WHERE state IN ('queued', 'sending', 'failed') "
        "AND created_at < ?", (cutoff,)).fetchone()
    if n:
        first = _parse(oldest or "")
        age = round((now - first).total_seconds() / 3600, 1) if first else None
        c.holds = True
        c.title = f"{n} charge(s) have waited more than {a.queue_hours:g} hours to reach the RCM"
        c.fix = ("open the Status page: if sync is paused, resume it; if the RCM connection fails, run "
                 "'chargebridge rcm test' and correct the RCM settings or secret")
        c.detail = {"charges": int(n), "oldest_hours": age}
    return c


def _no_export(store: Store, cfg: Config, now: datetime) -> Condition:
    a = cfg.alerts
    c = Condition(AlertKind.NO_EXPORT, False)
    if a.no_export_hours <= 0 or not (cfg.folders or getattr(cfg, "databases", [])):
        return c
    last = store.conn.execute("SELECT max(received_at) FROM documents").fetchone()[0] or ""
    since = store.setting("alerts.watch_since")
    if not since:  # the first check starts the clock for a home that has never seen an export
        with store.tx():
            store.set_setting("alerts.watch_since", _iso(now))
        since = _iso(now)
    ref = max(_parse(last) or datetime.min.replace(tzinfo=UTC), _parse(since) or now)
    gap = business_hours_between(ref, now, a.business_hours, a.business_days)
    if gap >= a.no_export_hours:
        c.holds = True
        c.title = f"no export has arrived from the EHR for {a.no_export_hours:g} business hours"
        c.fix = ("check that the EHR is still exporting into the watched folders (or that its database can be "
                 "read), and that ChargeBridge's folders in Settings point at the right place")
        c.detail = {"last_export": last[:16] if last else "never",
                    "business_hours": None if gap == float("inf") else round(gap, 1)}
    return c


def _sync(store: Store, cfg: Config, now: datetime) -> Condition:
    a = cfg.alerts
    c = Condition(AlertKind.SYNC_FAILING, False)
    failures = int(store.setting("sync.failures", "0") or 0)
    breaker = store.setting("sync.breaker_until", "")
    if (a.sync_failures and failures >= a.sync_failures) or (breaker and breaker > _iso(now)):
        last = json.loads(store.setting("sync.last", "{}") or "{}")
        c.holds = True
        c.title = f"sync to the RCM has failed {failures} time(s) in a row"
        c.fix = ("run 'chargebridge rcm test' (or Settings → Test connection) and fix what it names; "
                 "charges wait safely in the outbox until then")
        c.detail = {"failures": failures, "error_kind": str(last.get("error_kind", "")),
                    "paused_until": breaker if breaker > _iso(now) else ""}
    return c


def _denials(store: Store, cfg: Config, now: datetime) -> Condition:
    c = Condition(AlertKind.DENIAL_RATE, False)
    target, _ = cfg.goals.target("denial_rate")
    if target is None:
        return c
    since = (now.astimezone().date() - timedelta(days=7)).isoformat()
    adj, denied = store.conn.execute(
        "SELECT count(*), coalesce(sum(state = 'denied'), 0) FROM claims WHERE state IN ('paid', 'partially_paid', "
        "'denied') AND adjudicated_on != '' AND substr(adjudicated_on, 1, 10) > ?", (since,)).fetchone()
    if adj and adj >= cfg.alerts.denial_min_claims:
        rate = round(100 * denied / adj, 1)
        if rate > target:
            c.holds = True
            c.title = f"the denial rate of the last 7 days is {rate:g}%, above the goal of {target:g}%"
            c.fix = ("open Mismatches (claims denied) and the KPI page's top denial reasons; correct and resend "
                     "the claims, and fix the cause the reasons point at")
            c.detail = {"denied": int(denied), "adjudicated": int(adj), "rate": rate, "target": target}
    return c


def _missed(store: Store, cfg: Config, now: datetime) -> Condition:
    c = Condition(AlertKind.MISSED_CHARGES, False)
    days = cfg.goals.missed_charge_days
    today = now.astimezone().date()
    hi = (today - timedelta(days=days)).isoformat()
    lo = (today - timedelta(days=days + 30)).isoformat()
    n = store.conn.execute(
        "SELECT count(*) FROM encounters e WHERE e.kind = 'expected' AND e.dos >= ? AND e.dos <= ? AND NOT EXISTS "
        "(SELECT 1 FROM encounters c WHERE c.mrn = e.mrn AND c.dos = e.dos AND c.kind = 'charge' "
        "AND c.state != 'voided')", (lo, hi)).fetchone()[0]
    if n:
        c.holds = True
        c.title = f"{n} scheduled visit(s) of the last 30 days have no charge {days} day(s) later"
        c.fix = ("run a reconcile and look at Mismatches → visits without a charge: ask the provider to "
                 "finish the visit's charges in the EHR, or ignore the visit if it did not happen")
        c.detail = {"visits": int(n), "days": days}
    return c


def _databases(store: Store, cfg: Config, now: datetime) -> Condition:
    c = Condition(AlertKind.DATABASE_DOWN, False)
    if not getattr(cfg, "databases", []):
        return c
    from agent import dbpoll

    down = [str(x["name"]).removeprefix("database ") for x in dbpoll.connectors(store, cfg) if not x["healthy"]]
    if down:
        c.holds = True
        c.title = f"the EHR database{'s' if len(down) > 1 else ''} {', '.join(down)} cannot be read"
        c.fix = ("check that the database server is running and reachable from this machine, then run "
                 "'chargebridge db test NAME'; charges from it wait until it can be read")
        c.detail = {"databases": down}
    return c


CHECKS = (_queue, _no_export, _sync, _denials, _missed, _databases)


def conditions(store: Store, cfg: Config, now: datetime | None = None) -> list[Condition]:
    now = now or datetime.now(UTC)
    out = []
    for check in CHECKS:
        try:
            out.append(check(store, cfg, now))
        except Exception as exc:  # one broken check must not silence the others
            log.warning("alert check %s failed: %s", check.__name__, type(exc).__name__)
    return out


# -- firing ----------------------------------------------------------------------------------------
def evaluate(store: Store, cfg: Config, *, now: datetime | None = None, password: str | None = None,
             mailer: Mailer | None = None) -> list[dict[str, Any]]:
    """Check every condition, fire what is due (rate-limited), clear what stopped holding.
    Returns the alerts fired by this call."""
    now = now or datetime.now(UTC)
    conds = conditions(store, cfg, now)
    fired: list[dict[str, Any]] = []
    ts = _iso(now)
    repeat = timedelta(hours=cfg.alerts.repeat_hours)
    with store.tx():
        for c in conds:
            row = store.conn.execute("SELECT active, since, last_fired_at FROM alerts WHERE kind = ?",
                                     (c.kind,)).fetchone()
            was_active = bool(row and row[0])
            if not c.holds:
                if was_active:
                    store.conn.execute("UPDATE alerts SET active = 0, cleared_at = ? WHERE kind = ?", (ts, c.kind))
                    store.event("alert.cleared", detail={"kind": c.kind.value})
                continue
            last = _parse(row[2]) if row and row[2] else None
            due = not was_active or last is None or now - last >= repeat
            since = row[1] if was_active and row and row[1] else ts
            store.conn.execute(
                "INSERT INTO alerts (kind, active, since, title, fix, detail) VALUES (?, 1, ?, ?, ?, ?) "
                "ON CONFLICT(kind) DO UPDATE SET active = 1, since = excluded.since, title = excluded.title, "
                "fix = excluded.fix, detail = excluded.detail",
                (c.kind, since, c.title, c.fix, json.dumps(c.detail)))
            if not due:
                continue
            store.conn.execute("UPDATE alerts SET last_fired_at = ?, fired = fired + 1 WHERE kind = ?", (ts, c.kind))
            audit.record(store, actor="engine", action=f"alert.{c.kind.value}", target="alerts",
                         detail={"title": c.title, "fix": c.fix, **c.detail})
            fired.append({"kind": c.kind, "title": c.title, "fix": c.fix, "since": since, "last_fired_at": ts,
                          "detail": c.detail})
    if fired and cfg.alerts.smtp_host:
        try:
            (mailer or send_email)(cfg.alerts, password, fired)
            error = ""
        except (OSError, smtplib.SMTPException, ssl.SSLError, ValueError) as exc:
            error = f"{type(exc).__name__}: {_smtp_reason(exc)}"
            log.warning("alert email not sent: %s", error)
        with store.tx():
            store.conn.executemany("UPDATE alerts SET email_error = ? WHERE kind = ?",
                                   [(error, f["kind"]) for f in fired])
    return fired


def _smtp_reason(exc: BaseException) -> str:
    """A short reason that cannot carry patient data (the server's code, or the error's class)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"server answered {exc.smtp_code}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the mail server's certificate could not be verified"
    return str(exc)[:120] if isinstance(exc, ValueError) else type(exc).__name__


def active(store: Store) -> list[dict[str, Any]]:
    """The alerts holding now (the status payload's ``alerts``)."""
    rows = store.conn.execute("SELECT kind, title, fix, since, last_fired_at, detail FROM alerts WHERE active = 1 "
                              "ORDER BY since").fetchall()
    return [{"kind": k, "title": t, "fix": f, "since": s, "last_fired_at": lf, "detail": json.loads(d)}
            for k, t, f, s, lf, d in rows]


# -- email -----------------------------------------------------------------------------------------
def message(a: AlertsConfig, fired: list[dict[str, Any]]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = a.smtp_from
    msg["To"] = ", ".join(a.smtp_to)
    first = fired[0]["title"]
    msg["Subject"] = f"ChargeBridge alert: {first}" if len(fired) == 1 else f"ChargeBridge: {len(fired)} alerts"
    parts = []
    for f in fired:
        facts = ", ".join(f"{k}: {v}" for k, v in f["detail"].items() if v not in ("", None, []))
        parts.append(f"* {f['title']}\n  What to do: {f['fix']}" + (f"\n  ({facts})" if facts else ""))
    msg.set_content("ChargeBridge needs attention:\n\n" + "\n\n".join(parts)
                    + "\n\nThis message holds no patient data. Open ChargeBridge for the details.\n")
    return msg


def send_email(a: AlertsConfig, password: str | None, fired: list[dict[str, Any]]) -> None:
    """One message to every ``smtp_to``: STARTTLS is required and the certificate verified
    (``smtp_ca_bundle`` for a practice CA); a server that offers no STARTTLS gets nothing."""
    ctx = ssl.create_default_context(cafile=a.smtp_ca_bundle or None)
    with smtplib.SMTP(a.smtp_host, a.smtp_port, timeout=a.smtp_timeout_seconds) as smtp:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            raise ValueError("the mail server does not offer STARTTLS; alerts are never mailed in clear text")
        smtp.starttls(context=ctx)
        smtp.ehlo()
        if a.smtp_user:
            if not password:
                raise ValueError("no mail password in the keyring: run 'chargebridge alerts set-password'")
            smtp.login(a.smtp_user, password)
        smtp.send_message(message(a, fired))


# -- in the engine ---------------------------------------------------------------------------------
def run(engine: Any) -> list[dict[str, Any]]:
    """One check on the engine's scheduler thread (its own store connection)."""
    cfg: Config = engine.config
    if not cfg.alerts.enabled:
        return []
    password = None
    if cfg.alerts.smtp_host and cfg.alerts.smtp_user:
        from core.secrets import ALERT_SMTP_PASSWORD, get_secret

        try:
            password = get_secret(engine.paths, ALERT_SMTP_PASSWORD)
        except Exception as exc:  # the alert still reaches the trail and the tray
            log.warning("alert mail password unavailable: %s", type(exc).__name__)
    try:
        return evaluate(engine.store(), cfg, password=password)
    except Exception as exc:
        log.error("alert check failed: %s", type(exc).__name__)
        return []


def schedule(engine: Any, sched: Any) -> None:
    """Add the alert check to the engine's scheduler (first run shortly after start)."""
    sched.add_job(lambda: run(engine), "interval", minutes=engine.config.alerts.check_minutes, id="alerts",
                  next_run_time=datetime.now(UTC) + timedelta(seconds=20))


