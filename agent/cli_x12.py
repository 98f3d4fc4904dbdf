"""``chargebridge x12 import FILE... [--json]``: clearinghouse answers (999 / 277CA / 835) by hand.

Registered by :func:`agent.cli.build_parser` through :func:`register`. Runs under the home lock
like ``ingest`` (the engine, when it runs, imports the ``[x12] inbound`` directory by itself on
its sync schedule). Prints ``{"999": n, "277CA": n, "835": n, "matched": n, "unmatched": n, …}``
— counts of answers — and exits 1 when a file could not be read (it is in the quarantine).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from core.errors import LockHeld

if TYPE_CHECKING:
    from agent.cli_context import Context


def register(sub: Any) -> None:
    s = sub.add_parser("x12", help="clearinghouse files: import FILE... (999, 277CA, 835)")
    xs = s.add_subparsers(dest="action", required=True)
    imp = xs.add_parser("import", help="read 999 / 277CA / 835 files into the claim lifecycle")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_x12)


def cmd_x12(ctx: Context, args: argparse.Namespace) -> int:
    from agent import x12_inbound

    try:
        lock = ctx.lock("chargebridge x12 import").acquire()
    except LockHeld as exc:
        raise LockHeld(exc.title, "the running engine imports the [x12] inbound folder on its sync schedule: "
                       "put the files there, or stop the engine and run this again") from None
    try:
        store = ctx.open_store()
        try:
            res = x12_inbound.import_files(store, args.files)
        finally:
            store.close()
    finally:
        lock.release()
    d = res.to_dict()
    if args.json:
        print(json.dumps(d))
    else:
        print(f"answers: 999 {d['999']}, 277CA {d['277CA']}, 835 {d['835']}; matched {d['matched']}, "
              f"unmatched {d['unmatched']}, already imported {d['duplicates']}")
        for f in res.files:
            if not f.ok:
                print(f"  {f.name}: NOT READ — {f.error}. Fix: {f.fix}"
                      + (f" (quarantine {f.quarantine_id})" if f.quarantine_id else ""))
            elif f.warnings:
                print(f"  {f.name}: read, with warnings: {'; '.join(f.warnings)}")
    return 1 if d["failed"] else 0
