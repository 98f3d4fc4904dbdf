"""Test mode and go-live verbs (H8): ``testmode list | show ID | export ID --out FILE |
set-secret`` and ``golive [--check] [--json] [--force --reason TEXT] [--resend-test]``.

Registered by :func:`agent.cli.build_parser` through :func:`register`. ``golive`` asks the
running engine (it owns the config it runs with and re-applies the RCM target at once); with
none, it works on the home under the home lock. ``testmode`` reads the encrypted store of the
home directly (an export is audited and written 0600: it is patient data).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from agent.cli_context import Context


def register(sub: Any) -> None:
    s = sub.add_parser("testmode", help="test mode: list | show ID | export ID --out FILE | set-secret")
    acts = s.add_subparsers(dest="action", required=True)
    ls = acts.add_parser("list", help="what test mode recorded instead of sending, newest first")
    ls.add_argument("--limit", type=int, default=50, choices=range(1, 501), metavar="1-500")
    ls.add_argument("--json", action="store_true")
    sh = acts.add_parser("show", help="one recorded send and its files")
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true")
    ex = acts.add_parser("export", help="write a recorded send's payload to a new file (0600; a ZIP for several)")
    ex.add_argument("id", type=int)
    ex.add_argument("--out", required=True, metavar="FILE")
    acts.add_parser("set-secret", help="save the sandbox RCM's secret in the OS keyring (prompt or stdin)")
    s.set_defaults(func=cmd_testmode)

    s = sub.add_parser("golive", help="what is missing before go-live (--check), or switch test mode off")
    s.add_argument("--check", action="store_true", help="only list the items; change nothing")
    s.add_argument("--json", action="store_true")
    s.add_argument("--force", action="store_true", help="go live although items are missing (needs --reason)")
    s.add_argument("--reason", default="", help="why, for the audit trail (with --force)")
    s.add_argument("--resend-test", action="store_true",
                   help="send what dry runs 'delivered' to the RCM after go-live")
    s.set_defaults(func=cmd_golive)


def _actor() -> str:
    from agent.cli_engine import _cli_actor

    return _cli_actor()


def cmd_testmode(ctx: Context, args: argparse.Namespace) -> int:
    from agent import keys, testmode

    if args.action == "set-secret":
        import getpass

        secret = getpass.getpass("Sandbox RCM secret: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        if not secret:
            raise ConfigError("no secret given", "type or pipe the sandbox RCM's client secret")
        keys.set_secret(ctx.paths, testmode.SANDBOX_SECRET, secret)
        print("sandbox RCM secret saved in the OS keyring (the production secret is never sent to the sandbox)")
        return 0
    store = ctx.open_store(create=False)
    try:
        if args.action == "list":
            page = testmode.sends(store, page=1, page_size=args.limit)
            if args.json:
                print(json.dumps(page))
                return 0
            mode = "on" if ctx.config.mode.test else "off"
            print(f"test mode is {mode}; {page['total']} recorded send(s)")
            for it in page["items"]:
                print(f"  #{it['id']}  {it['at']}  {it['route']:<8} {it['target']:<5} {it['action']:<6} "
                      f"{it['encounters']} encounter(s), {it['files']} file(s), {it['bytes']:,} bytes")
            return 0
        if args.action == "show":
            d = testmode.send(store, args.id)
            if args.json:
                print(json.dumps(d))
                return 0
            print(f"send #{d['id']} at {d['at']}: {d['route']} to {d['target']} — {d['encounters']} encounter(s), "
                  f"{d['delivered']} delivered, {d['rejected']} rejected")
            for f in d["file_list"]:
                print(f"  {f['seq']}. {f['name']}  {f['size']:,} bytes  sha256 {f['sha256'][:16]}…")
            return 0
        out = testmode.export(store, args.id, Path(args.out), actor=_actor())
        print(f"send #{args.id}: {out['bytes']:,} bytes written to {out['file']} ({out['name']}; "
              "readable by this account only)")
        return 0
    finally:
        store.close()


def _print_checks(state: dict[str, Any]) -> None:
    print(f"test mode is {'on' if state['test_mode'] else 'off'}; "
          + ("ready to go live" if state["ready"] else f"missing: {', '.join(state['missing'])}"))
    for it in state["items"]:
        mark = "ok  " if it["ok"] else ("MISS" if it["required"] else "note")
        print(f"  [{mark}] {it['title']}")
        if not it["ok"] and it["fix"]:
            print(f"         Fix: {it['fix']}")


def cmd_golive(ctx: Context, args: argparse.Namespace) -> int:
    from agent.cli_engine import _api, _client

    if args.reason and not args.force:
        raise ConfigError("--reason goes with --force", "add --force, or drop --reason")
    client = _client(ctx)
    if args.check:
        if client is not None:
            state = _api(ctx, client, "GET", "/api/v1/golive", timeout=120)
        else:
            from agent import golive

            store = ctx.open_store(create=False)
            try:
                state = golive.check(ctx.paths, store, ctx.config)
            finally:
                store.close()
        if args.json:
            print(json.dumps(state))
        else:
            _print_checks(state)
        return 0 if state["ready"] else 1
    body = {"force": args.force, "reason": args.reason, "resend_test": args.resend_test}
    if client is not None:
        out = _api(ctx, client, "POST", "/api/v1/golive", json=body, timeout=120)
    else:
        from agent import golive

        with ctx.lock("chargebridge golive"):
            store = ctx.open_store(create=False)
            try:
                out = golive.go_live(ctx.paths, store, ctx.config, actor=_actor(), force=args.force,
                                     reason=args.reason, resend_test=args.resend_test)
            finally:
                store.close()
    print(json.dumps(out) if args.json else out["message"])
    return 0
