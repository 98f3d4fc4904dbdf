"""Data-care verbs for IT: ``config export|import``, ``backup``, ``restore``, ``rekey``, ``prune``.

Registered by one line in :func:`agent.cli.build_parser` (:func:`register`). The work is done
by :mod:`agent.backup`, :mod:`agent.rekey`, :mod:`agent.retention` and :mod:`agent.config_file`;
this module only reads arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError

if TYPE_CHECKING:
    from agent.cli_context import Context

MAX_CONFIG_BYTES = 1024 * 1024
EXPORT_HEADER = ("# ChargeBridge configuration exported with `chargebridge config export`.\n"
                 "# No secrets are in it (they stay in each machine's OS keyring). Apply it on another\n"
                 "# machine with: chargebridge config import FILE [--dry-run]")


def _actor() -> str:
    from agent.cli_engine import _cli_actor

    return _cli_actor()


# -- config export / import -----------------------------------------------------------------------
def cmd_config(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "export":
        return _config_export(ctx, args)
    return _config_import(ctx, args)


def _config_export(ctx: Context, args: argparse.Namespace) -> int:
    from agent.config_file import config_to_dict, dumps_toml

    text = dumps_toml(config_to_dict(ctx.config), header=EXPORT_HEADER)
    if args.file == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.file).expanduser()
    out.write_text(text, encoding="utf-8")
    print(f"configuration written to {out} (no secrets)")
    return 0


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for section, val in new.items():
        before = old.get(section)
        if before == val:
            continue
        if isinstance(val, dict) and isinstance(before, dict):
            keys = sorted(k for k in set(val) | set(before) if val.get(k) != before.get(k))
            out.append(f"{section}: " + ", ".join(keys))
        else:
            out.append(f"{section}: replaced")
    return out


def _config_import(ctx: Context, args: argparse.Namespace) -> int:
    from agent import config as configmod
    from agent.config_file import config_to_dict, refuse_secrets

    src = Path(args.file).expanduser()
    try:
        if src.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{src.name} is larger than a configuration file can be (1 MiB)", "check the file")
        raw = tomllib.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{src} does not exist", "check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src.name} is not valid TOML: {exc}", "correct the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src.name} cannot be read ({type(exc).__name__})", "check the file") from None
    refuse_secrets(raw)
    new = configmod.parse(raw, origin=src.name)  # the engine's start-up rules, key named on failure
    new_dict = config_to_dict(new)
    try:
        old_dict = config_to_dict(configmod.load(ctx.paths.config))
    except ConfigError:
        old_dict = {}
    changes = _changes(old_dict, new_dict)
    warnings = [f"folder {f.path} does not exist on this machine" for f in new.folders if not f.path.is_dir()]
    result: dict[str, Any] = {"dry_run": args.dry_run, "changes": changes, "warnings": warnings, "applied": []}
    if not args.dry_run and changes:
        from agent.cli_engine import _api, _client

        client = _client(ctx)
        if client is not None:  # the running engine validates, writes, audits and applies it live
            out = _api(ctx, client, "PUT", "/api/v1/config", json=new_dict)
            result["applied"] = out.get("applied", [])
            result["restart_required"] = out.get("restart_required", [])
        else:
            from agent import audit
            from agent.config_file import write_config

            write_config(ctx.paths.config, new_dict)
            store = ctx.open_store()
            try:
                audit.record(store, actor=_actor(), action="config.import", target="config", before=old_dict,
                             after=new_dict, detail={"sections": [c.split(":")[0] for c in changes],
                                                     "file": src.name})
            finally:
                store.close()
    if args.json:
        print(json.dumps(result))
        return 0
    verb = "would change" if args.dry_run else "changed"
    print(f"{src.name}: valid." + ("" if changes else " Nothing to change."))
    for c in changes:
        print(f"  {verb}  {c}")
    for w in warnings:
        print(f"  warning  {w}")
    if not args.dry_run and changes:
        print("imported and recorded in the audit trail" + (
            f"; restart the engine to apply: {', '.join(result['restart_required'])}"
            if result.get("restart_required") else ""))
    return 0


# -- backup / restore -----------------------------------------------------------------------------
def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    from agent import backup, keys
    from agent.store import Store

    if not args.file and not args.set_passphrase:
        raise ConfigError("nothing to do", "give a FILE to write, or --set-passphrase")
    if args.no_key and args.set_passphrase:
        raise ConfigError("--no-key and --set-passphrase contradict each other", "use one of them")
    key = keys.store_key(ctx.paths, ctx.config.key_source, create=False)
    store = Store.open_with_key(ctx.paths, key)
    try:
        typed: str | None = None
        if args.set_passphrase:
            typed = backup.read_passphrase(from_stdin=args.passphrase_stdin, confirm=True)
            backup.save_wrap(store, key, typed, actor=_actor())
            if not args.file:
                print("backup passphrase set: backups (nightly ones too) now carry the store key, wrapped")
                return 0
        if args.no_key:
            wrap = None
        elif typed is None and not args.passphrase_stdin and backup.saved_wrap(store, key) is not None:
            wrap = backup.saved_wrap(store, key)
        else:
            if typed is None:
                typed = backup.read_passphrase(from_stdin=args.passphrase_stdin, confirm=True)
            wrap = backup.wrap_key(key, typed)
        res = backup.create(store, key, Path(args.file), wrap=wrap, actor=_actor(),
                            key_source=ctx.config.key_source)
    finally:
        store.close()
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(f"backup written: {res.file} ({res.size} bytes, schema {res.schema_version}, "
              f"{'with the store key wrapped under the passphrase' if res.with_key else 'WITHOUT the store key'})")
    return 0


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    from agent import backup

    file = Path(args.file).expanduser()
    manifest = backup.read_manifest(file)
    phrase = None
    if isinstance(manifest.get("key"), dict):
        phrase = backup.read_passphrase(from_stdin=args.passphrase_stdin, confirm=False)
    out = backup.restore(file, ctx.paths, passphrase=phrase, actor=_actor())
    if args.json:
        print(json.dumps(out))
        return 0
    c = out["counts"]
    print(f"restored into {out['home']} (backup of {out['backup_at']}, schema {out['schema_version']}): "
          f"{sum(v for k, v in c.items() if k != 'quarantined')} encounter(s), {c.get('quarantined', 0)} in quarantine")
    print(f"  the store key is in this machine's {'keyring' if out['key_source'] == 'keyring' else 'passphrase'}"
          " for this home")
    if out["config_problem"]:
        print(f"  {out['config_problem']}")
    return 0


# -- rekey / prune --------------------------------------------------------------------------------
def cmd_rekey(ctx: Context, args: argparse.Namespace) -> int:
    from agent import rekey

    out = rekey.rekey(ctx.paths, ctx.config.key_source, actor=_actor())
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"store re-encrypted under a new key ({out['new_key_id']}); the old key is gone from the keyring")
    if out["backup_passphrase_cleared"]:
        print("  backups made from now on carry no key until you run: chargebridge backup --set-passphrase")
    return 0


def cmd_prune(ctx: Context, args: argparse.Namespace) -> int:
    from agent import retention

    ret = ctx.config.retention
    store = ctx.open_store(create=False)
    try:
        rep = retention.prune(store, ret.days, audit_days=ret.audit_days, dry_run=args.dry_run, actor=_actor())
    finally:
        store.close()
    if args.json:
        print(json.dumps(rep.to_dict()))
        return 0
    verb = "would prune" if rep.dry_run else "pruned"
    print(f"retention {ret.days} days (dates of service before {rep.cutoff}): {verb} {rep.encounters} encounter(s), "
          f"{rep.documents} document(s), {rep.patients} patient record(s), {rep.quarantine} quarantine entr(ies), "
          f"{rep.audit_entries} audit entr(ies) before {rep.audit_cutoff}")
    held = {k: v for k, v in rep.held.items() if v}
    if held:
        print("  kept although old: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in held.items()))
    if not rep.dry_run:
        print(f"  store file {rep.size_before} -> {rep.size_after} bytes ({rep.vacuum} vacuum)")
    return 0


# -- parser ---------------------------------------------------------------------------------------
def register(sub: Any) -> None:
    s = sub.add_parser("config", help="configuration for many PCs: export FILE | import FILE [--dry-run]")
    s.add_argument("action", choices=["export", "import"])
    s.add_argument("file", metavar="FILE",
                   help="export: where to write ('-' for standard output); import: what to read")
    s.add_argument("--dry-run", action="store_true", help="import: validate and show the changes only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("backup", help="write an encrypted backup of the store and config (engine may run)")
    s.add_argument("file", nargs="?", metavar="FILE")
    s.add_argument("--set-passphrase", action="store_true",
                   help="keep the key wrapped under a passphrase so every backup (nightly ones too) carries it")
    s.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from standard input")
    s.add_argument("--no-key", action="store_true", help="leave the key out (restorable only with another copy of it)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("restore", help="restore a backup into a new, empty home (--home NEW)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--home", default=argparse.SUPPRESS, help="the new home (same as the global --home)")
    s.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from standard input")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("rekey", help="re-encrypt the store under a new key (stop the engine first)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_rekey)

    s = sub.add_parser("prune", help="remove delivered and reconciled data older than [retention] days")
    s.add_argument("--dry-run", action="store_true", help="count only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_prune)


