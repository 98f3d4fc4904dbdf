"""Verbs that talk to a running engine (through its API), the RCM, or the users and audit tables:
engine, status, sync, pause/resume, users, audit, login, rcm, reconcile, mismatches, resolve.

With no engine running, ``status``, ``sync``, ``reconcile`` and ``resolve`` work in-process on
the home. Registered by :func:`agent.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from core.errors import ChargeBridgeError, ConfigError

if TYPE_CHECKING:
    from agent.cli_context import Context


def _cli_actor() -> str:
    """Who to name in the audit trail for a change made from this command line."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (e.g. a container with an unnamed uid)
        return f"cli:uid{os.getuid()}" if hasattr(os, "getuid") else "cli"


def _client(ctx: Context):  # type: ignore[no-untyped-def]
    from core.client import EngineClient

    return EngineClient.discover(ctx.paths)


def _api(ctx: Context, client, method: str, path: str, **kw: Any) -> Any:  # type: ignore[no-untyped-def]
    from core.client import ApiError

    try:
        return client.call(method, path, **kw)
    except ApiError as exc:
        if exc.status == 401:
            raise ChargeBridgeError("the engine did not accept this machine's API token",
                                    "create a user with: chargebridge users add NAME --role admin --save, "
                                    "or save a token with: chargebridge login") from None
        raise ChargeBridgeError(f"the engine refused: {exc.title}", exc.fix, key=exc.key or "") from None


def cmd_engine(ctx: Context, args: argparse.Namespace) -> int:
    from agent.engine import Engine

    engine = Engine(ctx.paths, ctx.config)

    def _stop(signum: int, frame: Any) -> None:
        engine.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    engine.start()
    print(f"engine running: API on http://127.0.0.1:{engine.port} (pid {os.getpid()}); Ctrl-C to stop", flush=True)
    try:
        while not engine.stopping.wait(3600):
            pass
    finally:
        engine.stop()
    print("engine stopped")
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    client = _client(ctx)
    if client is not None:
        st = _api(ctx, client, "GET", "/api/v1/status")
    else:
        from agent.engine import compute_status

        store = ctx.open_store(create=False)
        try:
            st = compute_status(store, ctx.config)
        finally:
            store.close()
        st["engine"] = "not running"
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    c, o = st["counts"], st["outbox"]
    print(f"ChargeBridge: {st['state']}" + (f" — {st['reason']}" if st["reason"] else ""))
    if st.get("engine"):
        print("  engine: not running (start it with: chargebridge engine)")
    print(f"  encounters: {c['ready']} ready, {c['needs_review']} need review, {c['expected']} expected; "
          f"{c['quarantined']} in quarantine")
    print(f"  outbox: {o['queued']} queued, {o['failed']} retrying, {o['delivered']} delivered, "
          f"{o['rejected']} rejected")
    last = st.get("last_sync") or {}
    print(f"  last sync: {last.get('at', 'never')}" + (f", next: {st['next_sync']}" if st.get("next_sync") else ""))
    for con in st["connectors"]:
        print(f"  [{'ok' if con['healthy'] else '!!'}] {con['name']}: {con['detail']}")
    return 0


def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    client = _client(ctx)
    if client is not None:
        res = _api(ctx, client, "POST", "/api/v1/sync", params={"wait": "true"}, timeout=900)
    else:
        from agent.engine import Engine

        with ctx.lock("chargebridge sync"):
            engine = Engine(ctx.paths, ctx.config)
            engine.open_local()
            try:
                res = engine.run_sync(force=True).to_dict()
            finally:
                engine.store().close()
    if args.json:
        print(json.dumps(res))
    else:
        if res.get("skipped"):
            print(f"sync skipped: {res['skipped']}")
        print(f"delivered {res.get('delivered', 0)}, rejected {res.get('rejected', 0)}, "
              f"failed {res.get('failed', 0)}, remaining {res.get('remaining', 0)}")
        for rj in res.get("rejections", []):
            print(f"  rejected (outbox {rj['outbox_id']}): {rj['reason']}")
        if res.get("error"):
            print(f"  error: {res['error']}")
    return 1 if (res.get("error") or res.get("rejected") or res.get("skipped")) else 0


def cmd_pause(ctx: Context, args: argparse.Namespace) -> int:
    client = _client(ctx)
    path = "/api/v1/pause" if args.verb == "pause" else "/api/v1/resume"
    if client is not None:
        _api(ctx, client, "POST", path)
    else:
        store = ctx.open_store(create=False)
        try:
            from agent import audit

            with store.tx():
                store.set_setting("sync.paused", "1" if args.verb == "pause" else "0")
                audit.record(store, actor=_cli_actor(), action=f"sync.{args.verb}", target="sync")
        finally:
            store.close()
    print("sync paused" if args.verb == "pause" else "sync resumed")
    return 0


def cmd_users(ctx: Context, args: argparse.Namespace) -> int:
    from agent import keys
    from agent.users import add_user, list_users, revoke_user

    store = ctx.open_store()
    try:
        if args.action == "list":
            from agent.pairing import paired_users

            paired = paired_users(store)  # PCs paired over the LAN (H7): revoke NAME cuts them off
            for u in list_users(store):
                p = paired.get(u["name"])
                how = f"  paired from {p['from']}" if p else ""
                print(f"{u['name']:<24} {u['role']:<10} since {u['created_at'][:10]}{how}")
            return 0
        if args.action == "revoke":  # the store is shared with a running engine: its next request sees it
            if not revoke_user(store, args.name, actor=_cli_actor()):
                raise ConfigError(f"there is no active user named {args.name!r}",
                                  "see the names with: chargebridge users list")
            print(f"user {args.name} revoked: its token no longer works")
            return 0
        try:
            token = add_user(store, args.name, args.role, actor=_cli_actor())
        except ValueError as exc:
            raise ConfigError(str(exc), "pick another name or role") from None
    finally:
        store.close()
    if args.save:
        from core.secrets import API_TOKEN as TOKEN_SECRET

        keys.set_secret(ctx.paths, TOKEN_SECRET, token)
    print(f"user {args.name} ({args.role}) created. Token (shown once; give it to the user):\n{token}")
    if args.save:
        print("saved in this machine's keyring for the chargebridge command line")
    return 0


def cmd_audit(ctx: Context, args: argparse.Namespace) -> int:
    from agent import audit

    store = ctx.open_store(create=False)
    try:
        if args.action == "verify":
            problems = audit.verify(store)
            total = audit.count(store)
        else:
            rows = audit.entries(store, limit=args.limit, offset=args.offset, action=args.filter)
    finally:
        store.close()
    if args.action == "verify":
        if args.json:
            print(json.dumps({"entries": total, "intact": not problems,
                              "problems": [p.to_dict() for p in problems]}, indent=1))
        elif not problems:
            print(f"audit trail intact: {total} entr{'y' if total == 1 else 'ies'}")
        else:
            print(f"audit trail TAMPERED: {len(problems)} problem(s) in {total} entr{'y' if total == 1 else 'ies'}")
            for p in problems:
                print(f"  [{p.kind}] {p.message}")
        return 1 if problems else 0
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("the audit trail is empty")
        return 0
    for r in rows:
        detail = " ".join(f"{k}={v}" for k, v in r["detail"].items()) if isinstance(r["detail"], dict) else r["detail"]
        print(f"{r['seq']:>6}  {r['at'][:19]}  {r['actor']:<20} {r['action']:<22} {r['target']:<20} {detail}")
    return 0


def cmd_login(ctx: Context, args: argparse.Namespace) -> int:
    import getpass

    from agent import keys
    from core.secrets import API_TOKEN as TOKEN_SECRET

    token = getpass.getpass("API token: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not token:
        raise ConfigError("no token given", "paste the token printed by chargebridge users add")
    keys.set_secret(ctx.paths, TOKEN_SECRET, token)
    print("token saved in the OS keyring")
    return 0


def cmd_rcm(ctx: Context, args: argparse.Namespace) -> int:
    import getpass

    from agent import keys
    from agent.rcm import SECRET, make_target

    if args.action == "set-secret":
        secret = getpass.getpass("RCM client secret: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
        if not secret:
            raise ConfigError("no secret given", "type or pipe the RCM client secret")
        keys.set_secret(ctx.paths, SECRET, secret)
        print("RCM secret saved in the OS keyring (not in chargebridge.toml)")
        return 0
    target = make_target(ctx.paths, ctx.config)
    if target is None:
        raise ConfigError("no RCM is configured", f"add an [rcm] section to {ctx.paths.config}")
    ok, detail = target.check()
    print(("ok: " if ok else "FAILED: ") + detail)
    return 0 if ok else 1


def _window(args: argparse.Namespace) -> tuple[Any, Any]:
    from datetime import date

    from agent.mismatches import default_window

    start, end = default_window()
    try:
        if args.from_:
            start = date.fromisoformat(args.from_)
        if args.to:
            end = date.fromisoformat(args.to)
    except ValueError:
        raise ConfigError("--from / --to must be dates like 2026-10-01", "use YYYY-MM-DD") from None
    return start, end


def cmd_reconcile(ctx: Context, args: argparse.Namespace) -> int:
    start, end = _window(args)
    client = _client(ctx)
    if client is not None:
        out = _api(ctx, client, "POST", "/api/v1/reconcile", params={"start": start.isoformat(),
                                                                      "end": end.isoformat()}, timeout=900)
    else:
        from agent import reconcile
        from agent.rcm import make_target

        target = make_target(ctx.paths, ctx.config)
        if target is None:
            raise ConfigError("no RCM is configured, so there is nothing to reconcile against",
                              f"add an [rcm] section to {ctx.paths.config}")
        store = ctx.open_store(create=False)
        try:
            from connectors.rcm.base import TargetError

            try:
                out = reconcile.run(store, target, start=start, end=end).to_dict()
            except TargetError as exc:
                print(f"chargebridge: reconciliation could not read the RCM: {exc}", file=sys.stderr)
                return 1
        finally:
            store.close()
    if out.get("skipped"):  # the engine ran nothing (no RCM configured, or the RCM could not be read)
        if args.json:
            print(json.dumps(out))
        else:
            print(f"reconcile skipped: {out['skipped']}")
        return 1
    if args.json:
        print(json.dumps(out))
    else:
        print(f"reconciled {start} to {end}: {out['matched']} matched, {out['field_mismatch']} with different "
              f"fields, {out['missing_in_rcm']} missing in the RCM, {out['orphan_in_rcm']} only in the RCM, "
              f"{out['missing_charge']} visits without a charge")
        print(f"  queue: {out['opened']} new, {out['reopened']} reopened, {out['closed']} closed at the RCM "
              "— see chargebridge mismatches")
    open_n = out["field_mismatch"] + out["missing_in_rcm"] + out["orphan_in_rcm"] + out["missing_charge"]
    return 1 if open_n else 0


def cmd_mismatches(ctx: Context, args: argparse.Namespace) -> int:
    from agent.mismatches import list_findings

    store = ctx.open_store(create=False)
    try:
        items = list_findings(store, status=None if args.all else "open", kind=args.kind,
                              limit=getattr(args, "limit", -1), offset=getattr(args, "offset", 0))
    finally:
        store.close()
    if args.json:
        print(json.dumps(items, indent=1))
        return 0
    if not items:
        print("no open mismatches" + ("" if args.all else " — run chargebridge reconcile to look for some"))
        return 0
    for m in items:
        side = m["local"] or m["remote"] or {}
        who = side.get("identifier") or m["remote_id"]
        print(f"{m['id']:>5}  {m['kind']:<15} {m['dos']:<10} {who}  ({m['status']}, {m['age_days']} d"
              + (f", reopened {m['reopened']}x" if m["reopened"] else "") + ")")
        for d in m["diff"]:
            if "field" in d:
                print(f"         {d['field']}: EHR {d['ehr']} | RCM {d['rcm']}")
            else:  # a rejected / denied claim: its reason codes (H4)
                from agent.claim_views import reason_text

                print(f"         reason {reason_text(d)}")
        if m["kind"] in ("claim_rejected", "claim_denied") and not m["diff"]:
            print("         (the payer gave no reason code)")
    print("resolve with: chargebridge resolve ID --action resend|accept-rcm|ignore [--reason TEXT]")
    return 0


def cmd_resolve(ctx: Context, args: argparse.Namespace) -> int:
    client = _client(ctx)
    if client is not None:
        out = _api(ctx, client, "POST", f"/api/v1/mismatches/{args.id}/resolve",
                   json={"action": args.action, "reason": args.reason or ""}, timeout=300)
    else:
        from agent.mismatches import ResolveError, resolve
        from agent.rcm import make_target

        target = make_target(ctx.paths, ctx.config) if args.action == "resend" else None
        store = ctx.open_store(create=False)
        try:
            out = resolve(store, target, args.id, args.action, actor=_cli_actor(), reason=args.reason or "")
        except ResolveError as exc:
            print(f"chargebridge: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()
    print(f"mismatch {args.id}: {out['status']}")
    return 0
