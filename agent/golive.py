"""Go-live: what is still missing before test mode may end, and switching it off (audited).

``chargebridge golive --check [--json]`` / ``GET /api/v1/golive`` list the items; ``chargebridge
golive`` / ``POST /api/v1/golive`` (admin) write ``[mode] test = false`` only when every
required item is ok — or with ``--force`` and a reason, which the audit trail keeps. A settings
save cannot switch test mode off (EngineService refuses it): this is the one door.

Required: every EHR source has delivered at least one file (each watched folder; each EHR
database has been read), the production RCM answers a connection test with its saved secret,
a manager (or admin) account exists, nightly backups are configured with a key passphrase.
Information: encounters a dry run marked delivered — nothing reached the RCM — stay delivered
unless go-live re-queues them (``--resend-test``) for the real RCM.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from agent import audit, keys, testmode
from agent.config import Config, load
from agent.config_file import config_to_dict, write_config
from agent.store import Store
from core.errors import ChargeBridgeError, ConfigError, Conflict
from core.paths import Paths
from core.secrets import RCM_SECRET
from core.states import Role

log = logging.getLogger("chargebridge.golive")

MIN_REASON = 10  # characters a forced go-live's reason needs: a sentence, not "x"


@dataclass
class Item:
    key: str
    ok: bool
    title: str
    fix: str = ""
    required: bool = True


def _sources(store: Store, cfg: Config) -> Item:
    if not cfg.folders and not cfg.databases:
        return Item("folders", False, "no EHR export folder (or database) is configured",
                    "add the folder the EHR exports into: Settings, or [[folders]] in chargebridge.toml")
    silent = []
    for fc in cfg.folders:
        if store.conn.execute("SELECT 1 FROM documents WHERE source = ? LIMIT 1", (str(fc.path),)).fetchone() is None:
            silent.append(f"folder {fc.path}")
    for db in cfg.databases:
        seen = store.conn.execute("SELECT 1 FROM documents WHERE source = ? LIMIT 1", (f"db:{db.name}",)).fetchone()
        if seen is None:
            silent.append(f"database {db.name}")
    if silent:
        return Item("folders", False, f"no file has arrived yet from: {', '.join(silent)}",
                    "export a visit from the EHR into each folder and check it appears in Encounters")
    n = len(cfg.folders) + len(cfg.databases)
    return Item("folders", True, f"every EHR source ({n}) has delivered a file")


def _rcm(paths: Paths, cfg: Config) -> Item:
    """The production RCM (not the sandbox, not the dry run): the connection go-live will use."""
    from agent.rcm import build_target

    if not cfg.rcm.type:
        return Item("rcm", False, "no RCM is configured", "set the billing system's address in Settings ([rcm])")
    try:
        target = build_target(cfg.rcm, keys.get_secret(paths, RCM_SECRET) or "")
        ok, detail = target.check()
    except ChargeBridgeError as exc:
        ok, detail = False, f"{exc.title} — {exc.fix}" if exc.fix else exc.title
    except Exception as exc:  # a check reports, it never crashes go-live
        log.warning("RCM check failed unexpectedly: %s", type(exc).__name__)
        ok, detail = False, f"the test failed unexpectedly ({type(exc).__name__})"
    if ok:
        return Item("rcm", True, f"the RCM connection test passed ({cfg.rcm.type}: {detail})")
    return Item("rcm", False, f"the RCM connection test failed: {detail}",
                "fix the RCM settings or secret (chargebridge rcm set-secret), then: chargebridge rcm test")


def _manager(store: Store) -> Item:
    roles = [r for (r,) in store.conn.execute("SELECT role FROM users WHERE disabled_at IS NULL")]
    if any(Role(r).at_least(Role.MANAGER) for r in roles if r in Role._value2member_map_):
        return Item("manager", True, "a manager account exists (mismatches, go-live decisions)")
    return Item("manager", False, "no manager account exists: nobody can resolve mismatches",
                "create one: chargebridge users add NAME --role manager")


def _backup(store: Store, cfg: Config) -> Item:
    from agent.backup import WRAP_SETTING

    if not cfg.backup.dir:
        return Item("backup", False, "nightly backups are not configured",
                    "set [backup] dir (a folder on another disk or a share) in chargebridge.toml")
    if not store.setting(WRAP_SETTING):
        return Item("backup", False, "backups have no key passphrase: a backup could not be restored elsewhere",
                    "run: chargebridge backup --set-passphrase")
    return Item("backup", True, f"nightly backups go to {cfg.backup.dir} at {cfg.backup.at} (keep {cfg.backup.keep})")


def _test_deliveries(store: Store) -> Item:
    n = testmode.dry_run_delivered(store)
    if not n:
        return Item("test_deliveries", True, "no encounter was delivered by a dry run only", required=False)
    return Item("test_deliveries", False, f"{n} encounter(s) were 'delivered' by a dry run: the RCM has not got them",
                "go live with --resend-test to send them to the RCM, or without it if they were test visits",
                required=False)


def check(paths: Paths, store: Store, cfg: Config) -> dict[str, Any]:
    """Every go-live item; ``ready`` when every required one is ok."""
    items = [_sources(store, cfg), _rcm(paths, cfg), _manager(store), _backup(store, cfg), _test_deliveries(store)]
    missing = [i.key for i in items if i.required and not i.ok]
    return {"test_mode": cfg.mode.test, "ready": not missing, "missing": missing, "items": [asdict(i) for i in items]}


def go_live(paths: Paths, store: Store, cfg: Config, *, actor: str, force: bool = False, reason: str = "",
            resend_test: bool = False) -> dict[str, Any]:
    """Switch test mode off in ``chargebridge.toml`` (the running config follows: the caller
    re-applies the RCM target). Refused while a required item is missing, unless forced with a
    reason; audited either way it happens."""
    if not cfg.mode.test:
        raise Conflict("test mode is already off: ChargeBridge is live", "nothing to do")
    reason = reason.strip()
    if force and len(reason) < MIN_REASON:
        raise ConfigError("going live with items missing needs a reason",
                                f"say why, in a sentence (at least {MIN_REASON} characters): --reason \"...\"",
                                key="reason")
    state = check(paths, store, cfg)
    missing = list(state["missing"])
    if missing and not force:
        titles = "; ".join(i["title"] for i in state["items"] if i["key"] in missing)
        raise Conflict(f"not ready to go live: {titles}",
                       "fix the items (chargebridge golive --check), or go live anyway with --force --reason")
    on_disk = config_to_dict(load(paths.config)) if paths.config.exists() else config_to_dict(cfg)
    before = dict(on_disk["mode"])
    on_disk["mode"] = {**before, "test": False}
    write_config(paths.config, on_disk)
    cfg.mode.test = False
    with store.tx():
        requeued = testmode.requeue_dry_run(store) if resend_test else 0
        audit.record(store, actor=actor, action="golive", target="mode", before=before, after=on_disk["mode"],
                     detail={"forced": bool(missing and force), "missing": missing, "reason": reason if force else "",
                             "requeued": requeued})
        store.event("golive", detail={"forced": bool(missing and force), "missing": missing, "requeued": requeued})
    log.info("test mode switched off (go-live)%s", " with items missing (forced)" if missing else "")
    msg = "Live: sync now sends charges to the RCM."
    if requeued:
        msg += f" {requeued} encounter(s) from dry runs are queued for it."
    return {"live": True, "forced": bool(missing and force), "missing": missing, "requeued": requeued, "message": msg}
