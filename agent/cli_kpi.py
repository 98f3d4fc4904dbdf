"""``chargebridge kpi`` and ``chargebridge alerts``: KPIs against goals, and the alert settings.

Through the engine's API when one runs (a manager's token), in-process on the home otherwise.
Registered by :func:`agent.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

from core.errors import ChargeBridgeError

if TYPE_CHECKING:
    from agent.cli_context import Context

_UNIT = {"percent": "%", "days": " d", "hours": " h", "count": "", "dollars": ""}
_STATUS = {"met": "met", "not_met": "NOT MET", "no_data": "no data", "no_target": "-"}


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(sub: Any) -> None:
    s = sub.add_parser("kpi", help="KPIs for a window of dates of service, against the practice's goals")
    s.add_argument("--from", dest="from_", type=_date, metavar="DATE", help="first date of service (YYYY-MM-DD)")
    s.add_argument("--to", type=_date, metavar="DATE", help="last date of service (default: today)")
    s.add_argument("--by", choices=["provider", "payer"])
    s.add_argument("--provider", metavar="NPI", help="only this rendering provider's claims and encounters")
    s.add_argument("--payer", metavar="ID", help="only this payer's claims and encounters (payer id, or name)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_kpi)

    s = sub.add_parser("alerts", help="alerts: list the active ones | set-password (mail server) | check now")
    s.add_argument("action", choices=["list", "set-password", "check"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_alerts)


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "dollars":
        return f"${v:,.2f}"
    if unit == "count":
        return f"{v:,.0f}"
    return f"{v:,.1f}{_UNIT.get(unit, '')}"


def cmd_kpi(ctx: Context, args: argparse.Namespace) -> int:
    from agent.cli_engine import _api, _client

    client = _client(ctx)
    if client is not None:
        params = {k: v for k, v in (("from", args.from_), ("to", args.to), ("by", args.by),
                                    ("provider", args.provider), ("payer", args.payer)) if v}
        rep = _api(ctx, client, "GET", "/api/v1/kpi", params={k: str(v) for k, v in params.items()})
    else:
        from agent import kpi

        store = ctx.open_store(create=False)
        try:
            rep = json.loads(json.dumps(kpi.report(store, ctx.config.goals, start=args.from_, end=args.to, by=args.by,
                                                   provider=args.provider, payer=args.payer), default=str))
        finally:
            store.close()
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    print(f"KPIs for dates of service {rep['start']} to {rep['end']}"
          + "".join(f", {k} {rep[k]}" for k in ("provider", "payer") if rep.get(k))
          + (f" (baseline {rep['baseline_from']} to {rep['baseline_to']})" if rep.get("baseline_from") else ""))
    _table(rep["kpis"])
    if rep["denial_reasons"]:
        print("\nTop denial reasons")
        for r in rep["denial_reasons"]:
            code = f"{r['group']}-{r['code']}" if r["group"] else r["code"]
            print(f"  {code:<10} {r['claims']:>6} claims  ${float(r['amount']):>12,.2f}  {r['description'][:60]}")
    print("\nA/R (open claims by age): " + ", ".join(f"{b['label']} d: {b['count']}" for b in rep["ar_buckets"]))
    print("Charge lag (claims):      " + ", ".join(f"{b['label']} d: {b['count']}" for b in rep["charge_lag"]))
    for g in rep.get("groups", []):
        print(f"\n{rep['by']} {g['key'] or '(none)'}")
        _table(g["kpis"], baseline=False)
    return 0


def _table(kpis: list[dict[str, Any]], *, baseline: bool = True) -> None:
    head = f"  {'KPI':<26} {'value':>12} {'target':>12}" + (f" {'baseline':>12}" if baseline else "") + "  status"
    print(head)
    for k in kpis:
        target = _fmt(k["target"], k["unit"]) if k["target"] is not None else "-"
        if k["target"] is not None:
            target = ("≥ " if k["direction"] == "higher" else "≤ ") + target
        row = f"  {k['label']:<26} {_fmt(k['value'], k['unit']):>12} {target:>12}"
        if baseline:
            row += f" {_fmt(k['baseline'], k['unit']):>12}"
        print(row + f"  {_STATUS.get(k['status'], k['status'])}")


def cmd_alerts(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "set-password":
        from core.secrets import ALERT_SMTP_PASSWORD, set_secret

        if sys.stdin.isatty():
            import getpass

            secret = getpass.getpass("mail server password: ")
        else:
            secret = sys.stdin.readline().rstrip("\n")
        if not secret:
            raise ChargeBridgeError("the password is empty", "type the mail account's password (or pipe it in)")
        set_secret(ctx.paths, ALERT_SMTP_PASSWORD, secret)
        print("saved in the OS keyring")
        return 0
    from agent import alerts

    if args.action == "list":
        from agent.cli_engine import _api, _client

        client = _client(ctx)
        if client is not None:
            items = _api(ctx, client, "GET", "/api/v1/status").get("alerts", [])
        else:
            store = ctx.open_store(create=False)
            try:
                items = alerts.active(store)
            finally:
                store.close()
    else:  # check now, in-process (the engine checks on its own schedule)
        from core.secrets import ALERT_SMTP_PASSWORD, get_secret

        a = ctx.config.alerts
        password: str | None = get_secret(ctx.paths, ALERT_SMTP_PASSWORD) if a.smtp_host and a.smtp_user else None
        store = ctx.open_store(create=False)
        try:
            alerts.evaluate(store, ctx.config, password=password)
            items = alerts.active(store)
        finally:
            store.close()
    if args.json:
        print(json.dumps(items, indent=1, default=str))
        return 0
    if not items:
        print("no active alerts")
    for it in items:
        print(f"! {it['title']}\n  what to do: {it['fix']}\n  since {it['since']}")
    return 0
