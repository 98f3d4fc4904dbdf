"""``chargebridge`` command line. Exit codes: 0 ok, 1 something quarantined or failed, 2 usage/config.

The CLI keeps no engine logic of its own: every verb is a thin call into the pipeline, the
store or the watch service.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import __version__
from agent import config as configmod
from agent.errors import ChargeBridgeError, ConfigError
from agent.paths import Paths

log = logging.getLogger("chargebridge")

SYNTHEA_MARKERS = ("patients.csv", "encounters.csv", "claims.csv")


def _setup_logging(paths: Paths, verbose: bool) -> None:
    paths.ensure()
    root = logging.getLogger("chargebridge")
    if root.handlers:
        return
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fh = logging.handlers.RotatingFileHandler(paths.logs / "chargebridge.log", maxBytes=5_000_000,
                                              backupCount=5, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
    root.addHandler(fh)
    eh = logging.StreamHandler(sys.stderr)
    eh.setLevel(logging.DEBUG if verbose else logging.WARNING)
    eh.setFormatter(logging.Formatter("chargebridge: %(message)s"))
    root.addHandler(eh)


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.paths = Paths.resolve(args.home)
        self.config = configmod.load(self.paths.config)
        _setup_logging(self.paths, getattr(args, "verbose", False))

    def open_store(self, *, create: bool = True):  # type: ignore[no-untyped-def]
        from agent.store import Store

        return Store.open(self.paths, self.config.key_source, create=create)

    def lock(self, purpose: str):  # type: ignore[no-untyped-def]
        from agent.lock import HomeLock

        return HomeLock(self.paths.lock, purpose)

    def pipeline(self, store, chargemaster: str | None = None):  # type: ignore[no-untyped-def]
        from agent.pipeline import Pipeline

        cm = self.config.chargemaster if chargemaster is None else chargemaster
        return Pipeline(store, max_file_bytes=self.config.max_file_bytes, chargemaster=cm)


def _expand(paths: list[str]) -> Iterator[tuple[Path, bool]]:
    """Files to ingest; (path, is_synthea_folder)."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ConfigError(f"{p} does not exist", "check the path")
        if path.is_dir():
            if all((path / m).exists() for m in SYNTHEA_MARKERS):
                yield path, True
                continue
            for f in sorted(x for x in path.rglob("*") if x.is_file()):
                if not any(part.startswith(".") for part in f.relative_to(path).parts):
                    yield f, False
        else:
            yield path, False


def _cli_actor() -> str:
    """Who to name in the audit trail for a change made from this command line."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (e.g. a container with an unnamed uid)
        return f"cli:uid{os.getuid()}" if hasattr(os, "getuid") else "cli"


# -- verbs ---------------------------------------------------------------------------------
def cmd_ingest(ctx: Context, args: argparse.Namespace) -> int:
    from agent.pipeline import Totals

    totals = Totals()
    problems: list[tuple[str, list[str]]] = []
    with ctx.lock("chargebridge ingest"):
        store = ctx.open_store()
        try:
            pipe = ctx.pipeline(store, args.chargemaster)
            pipe.recover()
            targets = list(_expand(args.paths))
            for path, synthea in targets:
                if not synthea:
                    continue
                from connectors.ehr.csvfmt import pack_directory
                from connectors.ehr.synthea import USED_TABLES

                cm = args.chargemaster if args.chargemaster is not None else (
                    ctx.config.chargemaster or "synthea-demo")
                out = ctx.pipeline(store, cm).ingest_bytes(pack_directory(path, only=USED_TABLES), origin=str(path), fmt="csv",
                                                           profile=args.profile or "synthea")
                totals.add(out)
                if out.quarantined:
                    problems.append((str(path), out.reasons))
            files = [(p, args.format or "auto", args.profile or "") for p, synthea in targets if not synthea]
            # parse in worker processes when there is enough to amortise their start-up
            workers = min(2, os.cpu_count() or 1) if len(files) >= 16 else 0
            for path, out in pipe.ingest_many(files, workers=workers):
                totals.add(out)
                if out.quarantined:
                    problems.append((str(path), out.reasons))
        finally:
            store.close()
    if args.json:
        print(json.dumps(totals.to_dict()))
    else:
        d = totals.to_dict()
        print(f"{d['files']} file(s): {d['accepted']} accepted, {d['duplicates']} duplicate(s), "
              f"{d['quarantined']} quarantined")
        for name, reasons in problems:
            for r in reasons:
                print(f"  quarantined  {name}: {r}")
        if problems:
            print("  see them with: chargebridge quarantine")
    return 1 if totals.quarantined else 0


def cmd_encounters(ctx: Context, args: argparse.Namespace) -> int:
    store = ctx.open_store(create=False)
    try:
        rows = store.encounters(state=args.state, limit=args.limit, offset=args.offset)
    finally:
        store.close()
    if args.json:
        out = []
        for r in rows:
            d = r["data"]
            out.append({
                "id": r["id"], "state": r["state"], "kind": r["kind"], "source": r["source"],
                "source_id": r["source_id"], "dos": r["dos"], "mrn": r["mrn"], "version": r["version"],
                "lines": [{"code": ln["code"], "code_system": ln["code_system"], "modifiers": ln["modifiers"],
                           "units": ln["units"], "unit_charge": ln["unit_charge"],
                           "dx_pointers": ln["dx_pointers"]} for ln in d["lines"]],
                "diagnoses": [dx["code"] for dx in d["diagnoses"]],
                "rendering_npi": d["rendering"]["npi"],
                "findings": r["findings"],
            })
        print(json.dumps(out, indent=1))
        return 0
    if not rows:
        print("no encounters" + (f" in state {args.state}" if args.state else "") +
              " — drop EHR exports into a watched folder or run chargebridge ingest PATH")
        return 0
    print(f"{'id':>6}  {'state':<12} {'source':<6} {'date':<10}  lines  findings")
    for r in rows:
        errs = [f for f in r["findings"] if f["severity"] == "error"]
        first = f"  {errs[0]['message']}" if errs else ""
        print(f"{r['id']:>6}  {r['state']:<12} {r['source']:<6} {r['dos']:<10}  {len(r['data']['lines']):>5}"
              f"  {len(errs):>8}{first}")
    return 0


def cmd_quarantine(ctx: Context, args: argparse.Namespace) -> int:
    store = ctx.open_store(create=False)
    try:
        rows = store.quarantine_list(include_resolved=args.all)
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"id": r["id"], "file": r["file"], "part": r["part"], "reason": r["reason"],
                           "created_at": r["created_at"], "resolved_at": r["resolved_at"]} for r in rows],
                         indent=1))
        return 0
    if not rows:
        print("quarantine is empty")
        return 0
    for r in rows:
        part = f" ({r['part']})" if r["part"] else ""
        print(f"{r['id']:>5}  {Path(r['file']).name}{part}\n       {r['reason']}")
    print("fix the cause, then: chargebridge reprocess ID [--format F] [--profile P]")
    return 0


def cmd_reprocess(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.lock("chargebridge reprocess"):
        store = ctx.open_store(create=False)
        try:
            try:
                out = ctx.pipeline(store).reprocess(args.id, fmt=args.format, profile=args.profile,
                                                        actor=_cli_actor())
            except KeyError:
                print(f"chargebridge: no quarantine entry {args.id}; list them with chargebridge quarantine",
                      file=sys.stderr)
                return 2
            except ValueError as exc:
                print(f"chargebridge: {exc}", file=sys.stderr)
                return 1
        finally:
            store.close()
    print(f"document {out.document_id}: {out.status} (accepted {out.accepted}, duplicates {out.duplicates}, "
          f"quarantined {out.quarantined})")
    for r in out.reasons:
        print(f"  {r}")
    return 1 if out.quarantined else 0


def cmd_watch(ctx: Context, args: argparse.Namespace) -> int:
    from agent.watch import WatchService
    from connectors.ehr.folder import WatchError

    if not ctx.config.folders:
        raise ConfigError("no folders are configured to watch",
                          f"add a [[folders]] table with path = \"...\" to {ctx.paths.config}")
    with ctx.lock("chargebridge watch"):
        store = ctx.open_store()
        svc = WatchService(ctx.pipeline(store), ctx.config)

        def _stop(signum: int, frame: Any) -> None:
            svc.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        print(f"watching {len(ctx.config.folders)} folder(s); Ctrl-C to stop", flush=True)
        try:
            svc.run()
        except WatchError as exc:
            print(f"chargebridge: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
    print(f"stopped; {svc.handled} file(s) handled")
    return 0


def cmd_doctor(ctx: Context, args: argparse.Namespace) -> int:
    from agent import keys

    fixes: list[str] = []

    def check(ok: bool, what: str, fix: str = "") -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok and fix:
            fixes.append(fix)

    print(f"ChargeBridge {__version__}, home {ctx.paths.home}")
    check(True, f"config {ctx.paths.config.name} " + ("is valid" if ctx.paths.config.exists() else "not present (defaults)"))
    if ctx.config.key_source == "keyring":
        ok, desc = keys.keyring_status()
        check(ok, desc, keys.KEYRING_FIX)
    else:
        ok = keys.PASSPHRASE_ENV in os.environ or sys.stdin.isatty()
        check(ok, "passphrase mode: " + ("passphrase available" if ok else f"{keys.PASSPHRASE_ENV} not set"),
              f"set {keys.PASSPHRASE_ENV} for the service")
    if ok:
        if ctx.paths.store.exists():
            try:
                store = ctx.open_store(create=False)
                check(True, f"store opens with its key (schema version {store.schema_version}; "
                      f"{sum(v for k, v in store.counts().items() if k != 'quarantined')} encounters)")
                store.close()
            except ChargeBridgeError as exc:
                check(False, exc.title, exc.fix)
        else:
            check(True, "store not created yet (it is created on first ingest)")
    for fc in ctx.config.folders:
        exists = fc.path.is_dir()
        writable = exists and os.access(fc.path, os.W_OK | os.X_OK)
        check(exists and writable, f"folder {fc.path} ({fc.format}, after: {fc.after})",
              f"create {fc.path} and let the ChargeBridge user write to it (files are removed after intake)")
    if ctx.config.rcm.type and ok:
        from agent.rcm import make_target

        try:
            target = make_target(ctx.paths, ctx.config)
            assert target is not None
            rcm_ok, detail = target.check()
            check(rcm_ok, f"RCM ({ctx.config.rcm.type}, {ctx.config.rcm.base_url}): {detail}",
                  "check [rcm] in chargebridge.toml and the secret (chargebridge rcm set-secret)")
        except ChargeBridgeError as exc:
            check(False, f"RCM: {exc.title}", exc.fix)
    if sys.platform.startswith("linux") and ctx.config.folders:
        try:
            limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
            check(limit >= 8192, f"inotify max_user_watches = {limit}",
                  "sysctl fs.inotify.max_user_watches=524288")
        except OSError:
            pass
    if fixes:
        print("\nTo fix:")
        for f in fixes:
            print(f"  - {f}")
        return 1
    print("everything looks right")
    return 0


def _client(ctx: Context):  # type: ignore[no-untyped-def]
    from agent.client import EngineClient

    return EngineClient.discover(ctx.paths)


def _api(ctx: Context, client, method: str, path: str, **kw: Any) -> Any:  # type: ignore[no-untyped-def]
    from agent.client import ApiError

    try:
        return client.call(method, path, **kw)
    except ApiError as exc:
        if exc.status == 401:
            raise ChargeBridgeError("the engine did not accept this machine's API token",
                                    "create a user with: chargebridge users add NAME --role admin --save, "
                                    "or save a token with: chargebridge login") from None
        raise ChargeBridgeError(f"the engine refused: {exc.detail}") from None


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
    from agent.users import add_user, list_users

    store = ctx.open_store()
    try:
        if args.action == "list":
            for u in list_users(store):
                print(f"{u['name']:<24} {u['role']:<10} since {u['created_at'][:10]}")
            return 0
        try:
            token = add_user(store, args.name, args.role, actor=_cli_actor())
        except ValueError as exc:
            raise ConfigError(str(exc), "pick another name or role") from None
    finally:
        store.close()
    if args.save:
        from agent.client import TOKEN_SECRET

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
    from agent.client import TOKEN_SECRET

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
        items = list_findings(store, status=None if args.all else "open", kind=args.kind)
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
            print(f"         {d['field']}: EHR {d['ehr']} | RCM {d['rcm']}")
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


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(ctx, args)


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chargebridge", description="Makes the EHR and the billing system agree.")
    p.add_argument("--version", action="version", version=f"chargebridge {__version__}")
    p.add_argument("--home", help="directory for config, store, logs and lock (or CHARGEBRIDGE_HOME)")
    p.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    p.add_argument("--engine-url", metavar="URL",
                   help="with no verb: the tray for a remote engine (https; http only on loopback)")
    p.add_argument("--ca-bundle", metavar="PEM", help="with --engine-url: the practice CA's certificates")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    s = sub.add_parser("ingest", help="read export files into the store (one shot)")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--format", choices=["auto", "hl7v2", "csv", "fhir", "ccda"])
    s.add_argument("--profile", help="CSV mapping profile: built-in name or path to a .toml")
    s.add_argument("--chargemaster", help="crosswalk to CPT/ICD-10-CM: built-in name or path ('' for none)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("encounters", help="list encounters")
    s.add_argument("--state", choices=["ready", "needs_review", "expected"])
    s.add_argument("--limit", type=int, default=1000)
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_encounters)

    s = sub.add_parser("quarantine", help="list quarantined files with their reasons")
    s.add_argument("--all", action="store_true", help="include resolved entries")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_quarantine)

    s = sub.add_parser("reprocess", help="run a quarantined file through the pipeline again")
    s.add_argument("id", type=int)
    s.add_argument("--format", choices=["auto", "hl7v2", "csv", "fhir", "ccda"])
    s.add_argument("--profile")
    s.set_defaults(func=cmd_reprocess)

    s = sub.add_parser("watch", help="watch the configured folders until Ctrl-C")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("doctor", help="check keyring, store, config and folders")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("engine", help="run the engine: watchers, scheduled sync and the local API")
    s.set_defaults(func=cmd_engine)

    s = sub.add_parser("status", help="what the engine is doing (works without a running engine too)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("sync", help="send ready charges to the RCM now")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sync)

    for verb in ("pause", "resume"):
        s = sub.add_parser(verb, help=f"{verb} scheduled sync")
        s.set_defaults(func=cmd_pause)

    s = sub.add_parser("users", help="API users and their roles")
    us = s.add_subparsers(dest="action", required=True)
    ua = us.add_parser("add", help="create a user and print its token once")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["front_desk", "manager", "admin"])
    ua.add_argument("--save", action="store_true", help="also keep the token in this machine's keyring for the CLI")
    us.add_parser("list")
    s.set_defaults(func=cmd_users)

    s = sub.add_parser("audit", help="the tamper-evident audit trail: verify | list")
    aus = s.add_subparsers(dest="action", required=True)
    av = aus.add_parser("verify", help="check the hash chain; exit 1 naming each tampered entry")
    av.add_argument("--json", action="store_true")
    al = aus.add_parser("list", help="entries, newest first (ids and hashes only, no patient data)")
    al.add_argument("--limit", type=int, default=50)
    al.add_argument("--offset", type=int, default=0)
    al.add_argument("--action", dest="filter", metavar="ACTION", help="only this action, e.g. user.add")
    al.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("login", help="save an API token (from stdin or a prompt) in the keyring")
    s.set_defaults(func=cmd_login)

    s = sub.add_parser("rcm", help="RCM connection: set-secret | test")
    s.add_argument("action", choices=["set-secret", "test"])
    s.set_defaults(func=cmd_rcm)

    s = sub.add_parser("reconcile", help="compare what the RCM holds with what the EHR documented")
    s.add_argument("--from", dest="from_", metavar="DATE")
    s.add_argument("--to", metavar="DATE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_reconcile)

    s = sub.add_parser("mismatches", help="the mismatch queue")
    s.add_argument("--all", action="store_true", help="include resolved, ignored and closed ones")
    s.add_argument("--kind", choices=["missing_in_rcm", "orphan_in_rcm", "field_mismatch", "missing_charge"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_mismatches)

    s = sub.add_parser("resolve", help="resolve a mismatch")
    s.add_argument("id", type=int)
    s.add_argument("--action", required=True, choices=["resend", "accept-rcm", "ignore"])
    s.add_argument("--reason")
    s.set_defaults(func=cmd_resolve)

    s = sub.add_parser("demo", help="run the main job on built-in demo data")
    s.add_argument("--keep", action="store_true", help="keep the demo home afterwards")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:  # no verb: the tray app (needs the ui extra: PySide6)
        try:
            from ui.app import main as ui_main
        except ImportError as exc:
            parser.print_help()
            print(f"\nchargebridge: the tray app is not installed ({exc.name or exc}); "
                  "install chargebridge[ui] or give a verb", file=sys.stderr)
            return 2
        return ui_main(args)
    try:
        ctx = Context(args)
        return int(args.func(ctx, args))
    except ChargeBridgeError as exc:
        print(f"chargebridge: {exc.title}", file=sys.stderr)
        if exc.fix:
            print(f"  Fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `chargebridge encounters | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
