"""``chargebridge`` command line. Exit codes: 0 ok, 1 something quarantined or failed, 2 usage/config.

The CLI keeps no engine logic of its own: every verb is a thin call into the pipeline, the
store or the watch service. This module holds the parser and the verbs that work on the local
store (ingest, encounters, quarantine, watch, doctor); :mod:`agent.cli_engine` holds the verbs
that talk to a running engine, the RCM or the users/audit tables.
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
from agent.cli_context import Context
from agent.cli_engine import (
    _cli_actor,
    cmd_audit,
    cmd_engine,
    cmd_login,
    cmd_mismatches,
    cmd_pause,
    cmd_rcm,
    cmd_reconcile,
    cmd_resolve,
    cmd_status,
    cmd_sync,
    cmd_users,
)
from core.errors import ChargeBridgeError, ConfigError
from core.states import EncounterState, FindingKind, ResolveAction, Role, Severity

log = logging.getLogger("chargebridge")

SYNTHEA_MARKERS = ("patients.csv", "encounters.csv", "claims.csv")


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
                packed = pack_directory(path, only=USED_TABLES)
                out = ctx.pipeline(store, cm).ingest_bytes(packed, origin=str(path), fmt="csv",
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
        errs = [f for f in r["findings"] if f["severity"] == Severity.ERROR]
        first = f"  {errs[0]['message']}" if errs else ""
        print(f"{r['id']:>6}  {r['state']:<12} {r['source']:<6} {r['dos']:<10}  {len(r['data']['lines']):>5}"
              f"  {len(errs):>8}{first}")
    return 0


def cmd_quarantine(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "export":
        return _quarantine_export(ctx, args)
    from agent.repos import QuarantineRepo

    store = ctx.open_store(create=False)
    try:  # a page at a time: one bad export must not make the listing itself unbounded
        repo = QuarantineRepo(store.conn)
        total = repo.count(args.all)
        rows = repo.rows(args.all, limit=args.limit, offset=args.offset)
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
    if args.offset + len(rows) < total:
        print(f"showing {args.offset + 1}-{args.offset + len(rows)} of {total}; "
              f"the next page: --offset {args.offset + len(rows)}")
    print("fix the cause, then: chargebridge reprocess ID [--format F] [--profile P]")
    return 0


def _quarantine_export(ctx: Context, args: argparse.Namespace) -> int:
    """``quarantine export ID --out FILE``: a quarantined file's raw bytes, out of the encrypted
    store into a new file only this account can read (0600). The export is audited."""
    from agent import audit
    from core.errors import NotFound

    if args.id is None or not args.out:
        raise ConfigError("quarantine export needs an entry id and --out FILE",
                          "chargebridge quarantine export ID --out FILE (ids: chargebridge quarantine)")
    out = Path(args.out)
    store = ctx.open_store(create=False)
    try:
        row = store.conn.execute(
            "SELECT q.document_id, d.content FROM quarantine q JOIN documents d ON d.id = q.document_id "
            "WHERE q.id = ?", (args.id,)).fetchone()
        if row is None:
            raise NotFound(f"no quarantine entry {args.id}", "list the entries with: chargebridge quarantine")
        doc_id, content = row
        if content is None:
            raise NotFound(f"quarantine entry {args.id} has no stored file: it was refused without being read "
                           "(see its reason), so the file was left where it was found",
                           "fix the cause named in the reason; the file is read again when it changes")
        data = bytes(content)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_BINARY", 0), 0o600)
        except FileExistsError:
            raise ConfigError(f"{out} already exists", "choose a new file name for --out") from None
        except OSError as exc:
            raise ConfigError(f"{out} cannot be created ({exc.strerror})",
                              "choose a folder you can write to for --out") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            out.unlink(missing_ok=True)
            raise ConfigError(f"{out} could not be written ({exc.strerror})", "free some space or choose "
                              "another folder for --out") from None
        audit.record(store, actor=_cli_actor(), action="quarantine.export", target=f"quarantine:{args.id}",
                     detail={"document_id": doc_id, "bytes": len(data)})
    finally:
        store.close()
    print(f"quarantine entry {args.id}: {len(data):,} bytes written to {out} (readable by this account only)")
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
    present = ctx.paths.config.exists()
    check(True, f"config {ctx.paths.config.name} " + ("is valid" if present else "not present (defaults)"))
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


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(ctx, args)


# -- parser ---------------------------------------------------------------------------------
def _page_size(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError("give 1 to 100000")
    return n


def _offset(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 10**9:
        raise argparse.ArgumentTypeError("give 0 or more")
    return n


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
    s.add_argument("--state", choices=[v.value for v in EncounterState])
    s.add_argument("--limit", type=int, default=1000)
    s.add_argument("--offset", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_encounters)

    s = sub.add_parser("quarantine", help="list quarantined files with their reasons; export ID --out FILE")
    s.add_argument("action", nargs="?", choices=["export"],
                   help="export: write entry ID's stored file to --out (mode 0600)")
    s.add_argument("id", nargs="?", type=int)
    s.add_argument("--out", metavar="FILE", help="for export: a new file to write")
    s.add_argument("--all", action="store_true", help="include resolved entries")
    s.add_argument("--limit", type=_page_size, default=1000, help="entries per page (1-100000, default 1000)")
    s.add_argument("--offset", type=_offset, default=0)
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
    ua.add_argument("--role", required=True, choices=[v.value for v in Role])
    ua.add_argument("--save", action="store_true", help="also keep the token in this machine's keyring for the CLI")
    us.add_parser("list")
    us.add_parser("revoke", help="end a user's token at once").add_argument("name")
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
    s.add_argument("--kind", choices=[v.value for v in FindingKind if v != FindingKind.MATCHED])
    s.add_argument("--limit", type=_page_size, default=1000, help="findings per page (1-100000, default 1000)")
    s.add_argument("--offset", type=_offset, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_mismatches)

    s = sub.add_parser("resolve", help="resolve a mismatch")
    s.add_argument("id", type=int)
    s.add_argument("--action", required=True, choices=[v.value for v in ResolveAction])
    s.add_argument("--reason")
    s.set_defaults(func=cmd_resolve)

    s = sub.add_parser("demo", help="run the main job on built-in demo data")
    s.add_argument("--keep", action="store_true", help="keep the demo home afterwards")
    s.set_defaults(func=cmd_demo)

    from agent.cli_rules import register as register_rules

    register_rules(sub)  # review, approve, reject, rules (H7)
    from agent.cli_db import register as register_db

    register_db(sub)  # db set-password | db test, poll (H6)
    from agent.cli_admin import register as register_admin

    register_admin(sub)  # config export/import, backup, restore, rekey, prune (H8)
    from agent.cli_kpi import register as register_kpi

    register_kpi(sub)  # kpi, alerts (H5)
    from agent.cli_claims import register as register_claims

    register_claims(sub)  # claims [--state S] | show ID | unmatched (H4)
    from agent.cli_x12 import register as register_x12

    register_x12(sub)  # x12 import FILE... (H3)
    from agent.cli_report import register as register_report

    register_report(sub)  # report --month YYYY-MM --pdf FILE (H6)
    from agent.cli_golive import register as register_golive

    register_golive(sub)  # testmode list|show|export|set-secret, golive [--check] (H8)
    from agent.cli_eligibility import register as register_eligibility

    register_eligibility(sub)  # eligibility [--date D] [--list|--flagged] [--json]: 270/271 (H9)
    from agent.cli_pair import register as register_pair

    register_pair(sub)  # pair / pair --connect: LAN pairing (H7)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:  # the launcher (installer.entry) starts the tray; here there is nothing to do
        parser.print_help()
        return 2
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
