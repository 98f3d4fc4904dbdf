"""EHR database verbs: ``db set-password NAME``, ``db test NAME``, ``poll [NAME] [--json]``.

Registered by :func:`agent.cli.build_parser` through :func:`register`. ``poll`` runs in this
process under the home lock when no engine runs, and asks the running engine otherwise (the
engine owns the store).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from agent.cli_context import Context


def register(sub: Any) -> None:
    s = sub.add_parser("db", help="EHR databases: set-password NAME | test NAME")
    dbs = s.add_subparsers(dest="action", required=True)
    dbs.add_parser("set-password", help="save a database's password in the OS keyring (prompt or stdin)"
                   ).add_argument("name")
    t = dbs.add_parser("test", help="connect, check the profile's tables and columns, warn if the login can write")
    t.add_argument("name")
    t.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("poll", help="poll the configured EHR databases (or one) now")
    s.add_argument("name", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_poll)


def cmd_db(ctx: Context, args: argparse.Namespace) -> int:
    from agent import dbpoll

    db = dbpoll.find(ctx.config, args.name)
    if args.action == "set-password":
        import getpass

        pw = getpass.getpass(f"Password for database {db.name}: ") if sys.stdin.isatty() \
            else sys.stdin.readline().rstrip("\r\n")
        if not pw:
            raise ConfigError("no password given", "type or pipe the database password")
        dbpoll.set_password(ctx.paths, db, pw)
        print(f"password for database {db.name!r} saved in the OS keyring (not in chargebridge.toml)")
        return 0
    source = dbpoll.make_source(ctx.paths, db)
    try:
        res = source.check()
    finally:
        source.close()
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(("ok: " if res.ok else "FAILED: ") + (res.server or f"database {db.name}"))
        for p in res.problems:
            print(f"  problem: {p}")
        for w in res.warnings:
            print(f"  warning: {w}")
    return 0 if res.ok else 1


def cmd_poll(ctx: Context, args: argparse.Namespace) -> int:
    from agent import dbpoll

    names = [dbpoll.find(ctx.config, args.name).name] if args.name else [d.name for d in ctx.config.databases]
    if not names:
        raise ConfigError("no EHR database is configured", f"add a [[databases]] table to {ctx.paths.config}")
    from agent.cli_engine import _api, _client

    client = _client(ctx)
    results: list[dict[str, Any]] = []
    if client is not None:
        for n in names:
            results.append(_api(ctx, client, "POST", f"/api/v1/databases/{n}/poll", timeout=900))
    else:
        with ctx.lock("chargebridge poll"):
            store = ctx.open_store()
            try:
                for n in names:
                    db = dbpoll.find(ctx.config, n)
                    poller = dbpoll.Poller(store, ctx.config, db)
                    try:
                        results.append(poller.run().to_dict())
                    finally:
                        poller.source.close()
            finally:
                store.close()
    failed = any(r.get("error") for r in results)
    if args.json:
        keys = ("new", "changed", "voided", "unchanged")
        if len(results) == 1:
            r = results[0]
            out: dict[str, Any] = {k: r.get(k, 0) for k in keys}
            if r.get("error"):
                out["error"] = r["error"]
            out["rows_read"] = r.get("rows_read", 0)
            print(json.dumps(out))
        else:
            print(json.dumps({r["database"]: r for r in results}))
    else:
        for r in results:
            line = (f"{r['database']}: {r.get('new', 0)} new, {r.get('changed', 0)} changed, "
                    f"{r.get('voided', 0)} voided, {r.get('unchanged', 0)} unchanged "
                    f"({r.get('rows_read', 0)} rows read)")
            print(line)
            if r.get("error"):
                print(f"  error: {r['error']}")
    return 1 if failed else 0
