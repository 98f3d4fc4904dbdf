"""CLI verbs for charge rules and the coder review queue (H7):

``chargebridge review [--json]``, ``approve ID [--note N]``, ``reject ID --reason R``,
``rules list [--json]``, ``rules import-mue FILE``, ``rules rerun``.

With an engine running, review, approve and reject go through its API (with this machine's
saved token, so the role is checked there); without one they act on the store directly as the
operator of this machine (``cli:<os user>`` in the audit trail). ``rules import-mue`` and
``rules rerun`` work on the store, then the re-run updates findings on encounters not yet sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.cli_context import Context
from agent.cli_engine import _api, _cli_actor, _client
from core.errors import ChargeBridgeError


def register(sub: Any) -> None:
    s = sub.add_parser("review", help="the coder review queue: encounters held by rules or validation")
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=int, default=100)
    s.set_defaults(func=cmd_review)
    s = sub.add_parser("approve", help="approve a held encounter (coder): it is sent with the next sync")
    s.add_argument("id", type=int)
    s.add_argument("--note", default="")
    s.set_defaults(func=cmd_approve)
    s = sub.add_parser("reject", help="reject a held encounter with a reason (coder): it is not billed")
    s.add_argument("id", type=int)
    s.add_argument("--reason", required=True)
    s.set_defaults(func=cmd_reject)
    s = sub.add_parser("rules", help="charge rules: list | import-mue FILE | rerun")
    rs = s.add_subparsers(dest="action", required=True)
    rl = rs.add_parser("list", help="every rule: id, severity, on/off, version")
    rl.add_argument("--json", action="store_true")
    ri = rs.add_parser("import-mue", help="import the CMS MUE table (CSV as CMS publishes it, or JSON)")
    ri.add_argument("file", type=Path)
    rr = rs.add_parser("rerun", help="apply the rules again to encounters not yet sent")
    rr.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_rules)


def _print_item(it: dict[str, Any]) -> None:
    print(f"#{it['id']}  {it['dos']}  {it['source_id']}  {it['holding']} to review")
    for f in it["findings"]:
        print(f"    [{f['severity']}] {f['code']}: {f['message']}")
    for ln in it["lines"]:
        mods = "-".join(ln["modifiers"])
        print(f"  line {ln['index'] + 1}: {ln['code']}{'-' + mods if mods else ''} x{ln['units']} "
              f"dx {','.join(map(str, ln['dx_pointers'])) or '-'}")
        for f in ln["findings"]:
            print(f"    [{f['severity']}] {f['code']}: {f['message']}")


def cmd_review(ctx: Context, args: argparse.Namespace) -> int:
    limit = max(1, min(args.limit, 500))
    client = _client(ctx)
    if client is not None:
        out = _api(ctx, client, "GET", "/api/v1/review", params={"page_size": limit})
    else:
        from agent import review

        store = ctx.open_store(create=False)
        try:
            out = review.queue(store, page=1, page_size=limit)
        finally:
            store.close()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out["items"]:
        print("Nothing waits for review.")
    for it in out["items"]:
        _print_item(it)
    if out["total"] > len(out["items"]):
        print(f"... {out['total'] - len(out['items'])} more (--limit)")
    return 0


def _decide(ctx: Context, eid: int, verb: str, body: dict[str, str]) -> int:
    client = _client(ctx)
    if client is not None:
        out = _api(ctx, client, "POST", f"/api/v1/review/{eid}/{verb}", json=body)
    else:
        from agent import review

        store = ctx.open_store(create=False)
        try:
            if verb == "approve":
                out = review.approve(store, eid, actor=_cli_actor(), note=body.get("note", ""))
            else:
                out = review.reject(store, eid, actor=_cli_actor(), reason=body["reason"])
        finally:
            store.close()
    print(f"encounter {eid}: {out['state']}")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, "approve", {"note": args.note})


def cmd_reject(ctx: Context, args: argparse.Namespace) -> int:
    return _decide(ctx, args.id, "reject", {"reason": args.reason})


def cmd_rules(ctx: Context, args: argparse.Namespace) -> int:
    from agent.rules import RULES, RuleSet

    cfg = ctx.config.rules
    if args.action == "list":
        rows = RuleSet(disabled=cfg.disabled if cfg.enabled else frozenset(RULES), severity=cfg.severity).describe()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            state = 'on ' if r['enabled'] else 'off'
            print(f"{r['id']:<24} {r['severity']:<7} {state}  {r['version']}  {r['summary']}")
        return 0
    if args.action == "import-mue":
        from agent.rules.units import MueFileError, read_mue_file

        try:
            table = read_mue_file(args.file)
        except OSError as exc:
            raise ChargeBridgeError(f"{args.file} cannot be read ({type(exc).__name__})",
                                    "check the path and its permissions") from None
        except MueFileError as exc:
            raise ChargeBridgeError(f"{args.file.name} is not an MUE table: {exc}",
                                    "download the practitioner services MUE table from CMS (NCCI) and import its "
                                    "CSV") from None
        store = ctx.open_store()
        try:
            count = import_mue(store, table, actor=_cli_actor(), source=args.file.name)
            res = _rerun(ctx, store)
        finally:
            store.close()
        print(f"imported {count:,} MUE values; rules re-run: {res['changed']} encounters changed "
              f"({res['held']} now held, {res['released']} released, {res['skipped_sent']} already sent)")
        return 0
    store = ctx.open_store()
    try:
        res = _rerun(ctx, store)
    finally:
        store.close()
    if getattr(args, "json", False):
        print(json.dumps(res))
    else:
        print(f"rules re-run: {res['checked']} checked, {res['changed']} changed ({res['held']} now held, "
              f"{res['released']} released); {res['skipped_sent']} already sent, not touched")
    return 0


def _rerun(ctx: Context, store: Any) -> dict[str, int]:
    from agent.rules import RuleSet
    from agent.rules.apply import default_workers, rerun

    return rerun(store, RuleSet.for_config(store, ctx.config.rules), actor=_cli_actor(),
                 workers=default_workers()).to_dict()  # worker processes from 20,000 encounters


def import_mue(store: Any, table: dict[str, int], *, actor: str, source: str) -> int:
    """Replace the stored MUE table (one transaction, audited with the table's hash)."""
    from agent import audit

    with store.tx():
        store.conn.execute("DELETE FROM rule_mue")
        store.conn.executemany("INSERT INTO rule_mue (code, max_units) VALUES (?, ?)", sorted(table.items()))
        store.set_setting("rules.mue_source", source[:200])
        audit.record(store, actor=actor, action="rules.import_mue", target="rules:mue", after=sorted(table.items()),
                     detail={"codes": len(table)})
    return len(table)


