"""``chargebridge eligibility``: is the coverage of the day's scheduled visits active? (H9)

``eligibility [--date D] [--json]`` reads the 271 answers waiting at the clearinghouse, sends
the 270 for that day's scheduled visits not answered yet (default: today), and prints each
visit: active / inactive / unknown / no coverage / pending, with plan and copay when the payer
gave them. ``--list`` prints without sending or reading anything; ``--flagged`` lists every
visit from that day on whose answer is not active (what the front desk calls about).

Through the engine's API when one runs (the same code path, audited there); in-process on the
home otherwise. The output names visits by MRN and appointment id, never by patient name.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from typing import Any

from agent.cli_context import Context

_LABEL = {"active": "active", "inactive": "INACTIVE", "unknown": "unknown", "no_coverage": "NO COVERAGE",
          "pending": "pending", None: "not asked"}


def _date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(sub: Any) -> None:
    s = sub.add_parser("eligibility", help="insurance eligibility (270/271) of a day's scheduled visits")
    s.add_argument("--date", type=_date, help="the visits' day, YYYY-MM-DD (default: today)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="only print what is known; send and read nothing")
    g.add_argument("--flagged", action="store_true", help="visits from that day on without active coverage")
    s.add_argument("--no-ask", action="store_true", help="read the answers waiting, send no 270")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eligibility)


def _page_all(ctx: Context, client: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    from agent.cli_engine import _api

    items: list[dict[str, Any]] = []
    page = 1
    while True:
        out = _api(ctx, client, "GET", "/api/v1/eligibility", params={**params, "page": page, "page_size": 500})
        items += out["items"]
        if not out["items"] or len(items) >= int(out["total"]):
            return items
        page += 1


def cmd_eligibility(ctx: Context, args: argparse.Namespace) -> int:
    from agent.cli_engine import _api, _client

    day = args.date or date.today().isoformat()
    run: dict[str, Any] | None = None
    client = _client(ctx)
    if client is not None:
        if not (args.list or args.flagged):
            run = _api(ctx, client, "POST", "/api/v1/eligibility/check", json={"date": day, "ask": not args.no_ask})
        params: dict[str, Any] = {"date": day, **({"flagged": "true"} if args.flagged else {})}
        items = _page_all(ctx, client, params)
    else:
        from agent import eligibility, eligibility_job

        store = ctx.open_store(create=False)
        try:
            if not (args.list or args.flagged):
                run = eligibility_job.run_check(store, ctx.config, ctx.paths, day, ask_payer=not args.no_ask)
            if args.flagged:
                items = [{**r, "appointment": r["visit"].split("|", 2)[-1]}
                         for r in eligibility.flagged(store, since=day)]
            else:
                items = eligibility.visits(store, day)
        finally:
            store.close()
    if args.json:
        print(json.dumps({"day": day, "run": run, "visits": items}, indent=1, default=str))
        return 0
    if run is not None:
        a, r = run["asked"], run["read"]
        print(f"answers read: {r['matched']} ({r['files']} files" + (f", {r['unmatched']} unmatched" if r["unmatched"]
                                                                       else "") + ")")
        for e in r["errors"]:
            print(f"  ! {e}")
        if a["file"]:
            print(f"asked about {a['asked']} of {a['visits']} visits on {a['day']} in {a['file']} "
                  f"(control {a['control']})")
        else:
            print(f"no 270 sent for {a['day']}: {a['visits']} visits, {a['already_answered']} already answered, "
                  f"{a['no_coverage']} without coverage to ask about")
    if not items:
        print("no flagged visits" if args.flagged else f"no scheduled visits on {day}")
        return 0
    print(f"{'date':<10}  {'MRN':<14} {'appointment':<16} {'coverage':<12} {'plan':<22} {'copay':>8}")
    for it in items:
        copay = f"${it['copay']}" if it.get("copay") else ""
        print(f"{it['dos']:<10}  {it.get('mrn') or ''!s:<14} {it['appointment'][:16]:<16} "
              f"{_LABEL.get(it.get('status'), str(it.get('status'))):<12} {(it.get('plan') or '')[:22]:<22} {copay:>8}")
        if it.get("status") not in ("active", "pending", None) and it.get("reasons"):
            print(f"{'':<12}  why: {'; '.join(it['reasons'][:3])}")
    flagged = sum(1 for it in items if it.get("status") not in ("active", None))
    if flagged and not args.flagged:
        print(f"\n{flagged} visit(s) without active coverage: confirm the patient's insurance before the visit")
    return 0
