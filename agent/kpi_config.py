"""``[goals]`` and ``[alerts]`` in chargebridge.toml, and the catalog of KPIs a goal may name.

```toml
[goals]
baseline_from = "2024-01-01"      # the period each KPI is compared with ("" = none)
baseline_to = "2024-03-31"
missed_charge_days = 3            # an expected visit with no charge this many days later is missed
denial_rate = { target = 5.0 }                        # the KPI's own direction (lower is better)
auto_capture_rate = { target = 80.0, direction = "higher" }

[alerts]
enabled = true
repeat_hours = 24                 # an alert whose condition holds is repeated at most this often
queue_hours = 4                   # charges waiting in the outbox longer than this
no_export_hours = 4               # business hours with no export from the EHR (0 = off)
business_hours = "08:00-18:00"
business_days = "mon-fri"
sync_failures = 3                 # consecutive failed sync runs
denial_min_claims = 10            # the weekly denial-rate check needs at least this many claims
smtp_host = ""                    # "" = no email; STARTTLS is required, the certificate verified
smtp_port = 587
smtp_user = ""                    # the password is in the OS keyring: chargebridge alerts set-password
smtp_from = ""
smtp_to = ["manager@practice.example"]
smtp_ca_bundle = ""               # the practice's CA certificates, if its mail server uses one
```

Parsed here so :mod:`agent.config` only wires them in. The catalog lives here (not in
:mod:`agent.kpi`) so validating a config never imports the SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from core.states import GoalDirection

_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}$")


class KpiDef(NamedTuple):
    label: str
    unit: str  # percent | days | hours | count | dollars
    direction: GoalDirection
    formula: str


HIGHER, LOWER = GoalDirection.HIGHER, GoalDirection.LOWER

KPIS: dict[str, KpiDef] = {
    "clean_claim_rate": KpiDef(
        "Clean-claim rate", "percent", HIGHER,
        "answered claims submitted once, accepted or paid, whose encounter no person reviewed or edited "
        "÷ answered claims"),
    "first_pass_acceptance": KpiDef(
        "First-pass acceptance", "percent", HIGHER,
        "answered claims submitted once and not rejected ÷ answered claims"),
    "denial_rate": KpiDef(
        "Denial rate", "percent", LOWER, "denied claims ÷ adjudicated claims (paid, partially paid, denied)"),
    "denial_dollar_rate": KpiDef(
        "Denial rate (dollars)", "percent", LOWER, "billed dollars of denied claims ÷ billed dollars adjudicated"),
    "denied_dollars": KpiDef("Denied dollars", "dollars", LOWER, "billed dollars of denied claims"),
    "days_in_ar": KpiDef(
        "Days in A/R", "days", LOWER,
        "average days from first submission to adjudication (closed claims) or to today (open claims); "
        "rejected claims are not in A/R"),
    "charge_lag_days": KpiDef(
        "Charge lag", "days", LOWER, "average days from date of service to first delivery to the RCM"),
    "missed_charge_rate": KpiDef(
        "Missed-charge rate", "percent", LOWER,
        "expected visits at least missed_charge_days old with no charge for the same patient and date "
        "÷ expected visits at least that old"),
    "auto_capture_rate": KpiDef(
        "Auto-capture rate", "percent", HIGHER,
        "charge encounters that became ready with no review decision and no edit ÷ charge encounters "
        "(voided ones left out)"),
    "touch_rate": KpiDef(
        "Touch rate", "percent", LOWER,
        "charge encounters a person reviewed, edited or took the RCM's values for ÷ charge encounters"),
    "mismatch_resolution_hours": KpiDef(
        "Mismatch resolution time", "hours", LOWER,
        "average hours from a finding's first sighting to its resolution (resolved or ignored findings)"),
    "open_mismatches": KpiDef("Open mismatches", "count", LOWER, "findings still open or reopened"),
    "sync_uptime": KpiDef(
        "Sync health", "percent", HIGHER,
        "sync runs that ended without an error ÷ sync runs, by the day the run happened"),
    "sync_failures": KpiDef("Sync failures", "count", LOWER, "sync runs that ended with an error"),
}


@dataclass
class GoalsConfig:
    baseline_from: str = ""
    baseline_to: str = ""
    missed_charge_days: int = 3
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # kpi -> {target, direction}

    def target(self, kpi: str) -> tuple[float | None, GoalDirection]:
        t = self.targets.get(kpi)
        default = KPIS[kpi].direction if kpi in KPIS else HIGHER
        if not t:
            return None, default
        return float(t["target"]), GoalDirection(t.get("direction") or default)

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"baseline_from": self.baseline_from, "baseline_to": self.baseline_to,
                               "missed_charge_days": self.missed_charge_days}
        for k, t in self.targets.items():
            out[k] = {"target": float(t["target"]), **({"direction": t["direction"]} if t.get("direction") else {})}
        return out


@dataclass
class AlertsConfig:
    enabled: bool = True
    repeat_hours: float = 24.0
    check_minutes: float = 5.0
    queue_hours: float = 4.0
    no_export_hours: float = 4.0
    business_hours: str = "08:00-18:00"
    business_days: str = "mon-fri"
    sync_failures: int = 3
    denial_min_claims: int = 10
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_from: str = ""
    smtp_to: list[str] = field(default_factory=list)
    smtp_ca_bundle: str = ""
    smtp_timeout_seconds: float = 15.0


def _date(v: Any, key: str, text: str) -> None:
    if text:
        try:
            date.fromisoformat(text)
        except ValueError:
            v.fail(key, f"= {text!r} is not a date", '"2024-01-31" (YYYY-MM-DD) or ""')
        if len(text) != 10:
            v.fail(key, f"= {text!r} is not a date", '"2024-01-31" (YYYY-MM-DD) or ""')


def parse_goals(v: Any, t: dict[str, Any]) -> GoalsConfig:
    """``v`` is :class:`agent.config._Validator` (not imported: that module imports this one)."""
    g = GoalsConfig(baseline_from=v.string(t, "goals.baseline_from", ""),
                    baseline_to=v.string(t, "goals.baseline_to", ""),
                    missed_charge_days=int(v.number(t, "goals.missed_charge_days", 3, lo=0, hi=365, integer=True)))
    _date(v, "goals.baseline_from", g.baseline_from)
    _date(v, "goals.baseline_to", g.baseline_to)
    if bool(g.baseline_from) != bool(g.baseline_to):
        v.fail("goals.baseline_to" if g.baseline_from else "goals.baseline_from",
               "is needed too: a baseline period has a start and an end", '"2024-03-31"')
    if g.baseline_from and g.baseline_from > g.baseline_to:
        v.fail("goals.baseline_to", "is before goals.baseline_from", "a date on or after the start")
    for k, val in t.items():
        if k in ("baseline_from", "baseline_to", "missed_charge_days"):
            continue
        key = f"goals.{k}"
        if k not in KPIS:
            v.fail(key, "is not a KPI", ", ".join(["baseline_from", "baseline_to", "missed_charge_days", *KPIS]))
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            val = {"target": val}
        if not isinstance(val, dict):
            v.fail(key, "must be a number or { target = N, direction = \"higher\" | \"lower\" }",
                   "{ target = 5.0 }")
        v.known(val, key, {"target", "direction"})
        if "target" not in val:
            v.fail(f"{key}.target", "is required", "a number")
        target = v.number(val, f"{key}.target", 0.0, lo=-1e9, hi=1e9)
        direction = v.choice(val, f"{key}.direction", "", ("", *(d.value for d in GoalDirection)))
        g.targets[k] = {"target": target, **({"direction": direction} if direction else {})}
    return g


def parse_alerts(v: Any, t: dict[str, Any]) -> AlertsConfig:
    from agent.schedule import parse_days, parse_hours

    v.known(t, "alerts", set(AlertsConfig.__dataclass_fields__))
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        v.fail("alerts.enabled", "must be true or false", "true, false")
    to = t.get("smtp_to", [])
    if isinstance(to, str):
        to = [to] if to else []
    if not isinstance(to, list) or not all(isinstance(x, str) for x in to) or len(to) > 20:
        v.fail("alerts.smtp_to", "must be a list of up to 20 email addresses", '["manager@practice.example"]')
    a = AlertsConfig(
        enabled=enabled,
        repeat_hours=v.number(t, "alerts.repeat_hours", 24.0, lo=0.1, hi=24 * 30),
        check_minutes=v.number(t, "alerts.check_minutes", 5.0, lo=0.05, hi=1440),
        queue_hours=v.number(t, "alerts.queue_hours", 4.0, lo=0, hi=24 * 90),
        no_export_hours=v.number(t, "alerts.no_export_hours", 4.0, lo=0, hi=24 * 90),
        business_hours=v.string(t, "alerts.business_hours", "08:00-18:00"),
        business_days=v.string(t, "alerts.business_days", "mon-fri"),
        sync_failures=int(v.number(t, "alerts.sync_failures", 3, lo=0, hi=1000, integer=True)),
        denial_min_claims=int(v.number(t, "alerts.denial_min_claims", 10, lo=1, hi=1_000_000, integer=True)),
        smtp_host=v.string(t, "alerts.smtp_host", ""),
        smtp_port=int(v.number(t, "alerts.smtp_port", 587, lo=1, hi=65535, integer=True)),
        smtp_user=v.string(t, "alerts.smtp_user", ""),
        smtp_from=v.string(t, "alerts.smtp_from", ""),
        smtp_to=list(to),
        smtp_ca_bundle=v.string(t, "alerts.smtp_ca_bundle", ""),
        smtp_timeout_seconds=v.number(t, "alerts.smtp_timeout_seconds", 15.0, lo=1, hi=120),
    )
    try:
        parse_hours(a.business_hours)
    except ValueError:
        v.fail("alerts.business_hours", f"= {a.business_hours!r} is not a time range", '"08:00-18:00"')
    try:
        parse_days(a.business_days)
    except ValueError:
        v.fail("alerts.business_days", f"= {a.business_days!r} is not a day range", '"mon-fri"')
    if a.smtp_host:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", a.smtp_host):
            v.fail("alerts.smtp_host", "is not a host name", '"smtp.practice.example"')
        if not a.smtp_to:
            v.fail("alerts.smtp_to", "is required when alerts.smtp_host is set", '["manager@practice.example"]')
        if not a.smtp_from:
            v.fail("alerts.smtp_from", "is required when alerts.smtp_host is set", '"chargebridge@practice.example"')
    for key, addr in [("alerts.smtp_from", a.smtp_from), *(("alerts.smtp_to", x) for x in a.smtp_to)]:
        if addr and not _EMAIL.match(addr):
            v.fail(key, f"= {addr!r} is not an email address", '"manager@practice.example"')
    return a
