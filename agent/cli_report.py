"""``chargebridge report --month YYYY-MM --pdf FILE``: the monthly KPI report as a PDF.

The engine layer may not import Qt, so this verb only gathers the figures — from the running
engine's API (``GET /kpi``, ``/kpi/series``), or from the store when no engine runs — and hands
them as JSON on stdin to ``chargebridge render-report --pdf FILE``, which the launcher
(``installer.entry``) sends to the UI layer's renderer (``ui.report``: the dashboard's own
chart widgets drawn into a QPdfWriter). The figures are aggregates: no patient data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from calendar import monthrange
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent.cli_context import Context
from core.errors import ChargeBridgeError, ConfigError

TREND_KPIS = ("denial_rate", "clean_claim_rate", "charge_lag_days", "days_in_ar")
TREND_MONTHS = 12  # the trend charts show the year up to the report's month
RENDER_TIMEOUT_S = 120


def register(sub: Any) -> None:
    s = sub.add_parser("report", help="the monthly KPI report as a PDF (needs the tray app: chargebridge[ui])")
    s.add_argument("--month", required=True, help="YYYY-MM: the month of the dates of service")
    s.add_argument("--pdf", required=True, help="the PDF file to write")
    s.set_defaults(func=cmd_report)


def month_window(text: str) -> tuple[date, date]:
    try:
        first = datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise ConfigError(f"--month {text!r} is not a month", "give it as YYYY-MM, e.g. 2026-03",
                          key="month") from None
    return first, first.replace(day=monthrange(first.year, first.month)[1])


def trend_start(first: date) -> date:
    y, m = first.year, first.month - (TREND_MONTHS - 1)
    while m < 1:
        y, m = y - 1, m + 12
    return date(y, m, 1)


def gather(ctx: Context, first: date, last: date) -> dict[str, Any]:
    """The report's figures: through the engine when one runs, else from the store."""
    from agent.cli_engine import _api, _client

    since = trend_start(first)
    client = _client(ctx)
    if client is not None:
        report = _api(ctx, client, "GET", "/api/v1/kpi", params={"from": first.isoformat(), "to": last.isoformat()})
        series = [_api(ctx, client, "GET", "/api/v1/kpi/series",
                       params={"kpi": k, "from": since.isoformat(), "to": last.isoformat(), "grain": "month"})
                  for k in TREND_KPIS]
    else:
        from agent import kpi

        store = ctx.open_store(create=False)
        try:
            goals = ctx.config.goals
            report = kpi.report(store, goals, start=first, end=last)
            series = [kpi.series(store, goals, k, start=since, end=last, grain="month") for k in TREND_KPIS]
        finally:
            store.close()
    return {"title": f"ChargeBridge monthly report — {first:%B %Y}", "period": f"{first:%Y-%m}",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "report": report,
            "series": series}


def renderer_command() -> list[str]:
    """The launcher, asked to render: the frozen executable itself, or ``python -m installer.entry``."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "render-report"]
    return [sys.executable, "-m", "installer.entry", "render-report"]


def cmd_report(ctx: Context, args: argparse.Namespace) -> int:
    first, last = month_window(args.month)
    out = Path(args.pdf).expanduser()
    if not out.parent.is_dir():
        raise ConfigError(f"the folder {out.parent} does not exist", "create it or choose another --pdf path",
                          key="pdf")
    payload = gather(ctx, first, last)
    env = dict(os.environ)
    if sys.platform.startswith("linux") and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"  # a server without a desktop still gets its PDF
    try:
        done = subprocess.run([*renderer_command(), "--pdf", str(out)], input=json.dumps(payload).encode(),
                              capture_output=True, timeout=RENDER_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ChargeBridgeError("drawing the report took too long",
                                "try again; if it keeps happening, see the engine log") from None
    if done.returncode != 0:
        msg = done.stderr.decode(errors="replace").strip().splitlines()
        raise ChargeBridgeError("the report could not be drawn: " + (msg[-1] if msg else f"exit {done.returncode}"),
                                "install the tray app (chargebridge[ui]) on this machine, or run the report "
                                "where ChargeBridge's window runs")
    try:
        pages = int(json.loads(done.stdout.decode().strip().splitlines()[-1])["pages"])
    except (ValueError, KeyError, IndexError):
        pages = 0
    print(f"wrote {out} ({pages} page{'s' if pages != 1 else ''}; dates of service {first} to {last})")
    return 0
