"""The engine service facade: everything the API (and any other front end) may ask the engine.

Routes call these methods and nothing else: no SQL in a route (the repositories in
:mod:`agent.repos` own it), no private engine attribute. Failures a person can act on are raised
as :class:`core.errors.ChargeBridgeError` (title, fix, key), which the API answers with their own
HTTP status and body.

The facade needs the engine only through :class:`EngineHost`, so this module does not import
:mod:`agent.engine` (the engine imports the API, which imports this): no import circle.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, Protocol

from agent import __version__, audit, keys, notify
from agent.config import Config, FolderConfig, RcmConfig, SyncConfig, load
from agent.config_file import (
    config_to_dict,
    merge,
    refuse_secrets,
    require_complete,
    validate,
    with_key,
    write_config,
)
from agent.repos import EncounterRepo, FindingRepo, QuarantineRepo, UserRepo
from agent.store import Store
from agent.users import SETUP_USER, add_user, authenticate, check_setup_token, revoke_user, setup_needed
from core.errors import ChargeBridgeError, ConfigError, Conflict, NotFound
from core.paths import Paths
from core.secrets import RCM_SECRET
from core.states import Role

log = logging.getLogger("chargebridge.service")

DOCUMENT_CAP = 1024 * 1024  # raw quarantined documents are shown up to 1 MB; the rest is summarised
LONG_POLLS_PER_TOKEN = 4
# Config sections the engine applies while running; the rest take effect at its next start.
LIVE_SECTIONS = ("rcm", "sync", "folders", "mode")


class TooMany(ChargeBridgeError):
    http_status = 429


class Unavailable(ChargeBridgeError):
    http_status = 503


class EngineHost(Protocol):
    """What the facade uses of the running engine (:class:`agent.engine.Engine`)."""

    paths: Paths
    config: Config
    target: Any
    target_error: str
    setup_token: str | None

    def store(self) -> Store: ...
    def status(self) -> dict[str, Any]: ...
    def run_sync(self, *, force: bool = True, timeout: float = 600) -> Any: ...
    def sync_now(self) -> None: ...
    def set_paused(self, paused: bool, *, actor: str = "engine") -> None: ...
    def run_reconcile(self, start: Any = None, end: Any = None) -> dict[str, Any]: ...
    def apply_rcm(self, rcm: RcmConfig | None = None) -> str: ...
    def apply_sync(self, sync: SyncConfig) -> None: ...
    def apply_folders(self, folders: list[FolderConfig]) -> None: ...


class EngineService:
    def __init__(self, engine: EngineHost) -> None:
        self.engine = engine
        self._polls: dict[str, int] = defaultdict(int)
        self._polls_lock = threading.Lock()
        self._config_lock = threading.Lock()

    @property
    def store(self) -> Store:
        return self.engine.store()

    @property
    def bind_host(self) -> str:
        return self.engine.config.api.host

    # -- who is calling ------------------------------------------------------------------------
    def authenticate(self, token: str) -> tuple[str, Role] | None:
        who = authenticate(self.store, token)
        if who is not None:
            return who[0], Role(who[1])
        if check_setup_token(self.store, self.engine.setup_token, token):
            return SETUP_USER, Role.ADMIN
        from agent import owner  # the local owner token (H7): admin, this machine's home owner only

        if owner.check(getattr(self.engine, "owner_token_sha256", None), token):
            return owner.OWNER_USER, Role.ADMIN
        return None

    # -- health and status ---------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"ok": True, "version": __version__, "setup_needed": setup_needed(self.store),
                "test_mode": self.engine.config.mode.test}

    def status(self) -> dict[str, Any]:
        from agent.alerts import active  # the tray shows what is wrong and what to do (H5)

        return {**self.engine.status(), "alerts": active(self.store)}

    @contextmanager
    def long_poll(self, token: str) -> Iterator[None]:
        """At most :data:`LONG_POLLS_PER_TOKEN` open change-feed waits per token: each holds a
        server thread, and one client must not starve the others (or /health)."""
        with self._polls_lock:
            if self._polls[token] >= LONG_POLLS_PER_TOKEN:
                raise TooMany(f"more than {LONG_POLLS_PER_TOKEN} change-feed requests are open for this user",
                              "wait for an open /changes request to answer before starting another")
            self._polls[token] += 1
        try:
            yield
        finally:
            with self._polls_lock:
                self._polls[token] -= 1
                if not self._polls[token]:
                    del self._polls[token]

    def changes(self, after: int, timeout: float) -> dict[str, Any]:
        return {"seq": notify.wait(after, timeout)}

    # -- encounters and quarantine ---------------------------------------------------------------
    def encounters(self, *, state: str | None, q: str | None, sort: str, desc: bool, page: int,
                   page_size: int) -> dict[str, Any]:
        return EncounterRepo(self.store.conn).page(state=state, q=q, sort=sort, desc=desc, page=page,
                                                   page_size=page_size)

    def quarantine(self, *, include_resolved: bool, page: int, page_size: int) -> dict[str, Any]:
        return QuarantineRepo(self.store.conn).page(include_resolved=include_resolved, page=page,
                                                    page_size=page_size)

    def quarantine_document(self, qid: int, max_bytes: int) -> dict[str, Any]:
        d = QuarantineRepo(self.store.conn).document(qid, max_bytes)
        if d is None:
            raise NotFound(f"there is no quarantine entry {qid}", "reload the quarantine list")
        head: bytes = d.pop("head")
        text = head.decode("utf-8", errors="replace")
        stored = d["stored"]
        truncated = stored and d["size"] > len(head)
        note = ""
        if not stored:
            note = "the file was not kept (it was refused before it was stored, e.g. for its size)"
        elif truncated:
            note = f"showing the first {len(head):,} of {d['size']:,} bytes"
        if stored and (b"\x00" in head or text.count("\ufffd") > max(8, len(text) // 20)):
            note = (note + "; " if note else "") + "this is binary content, not text: it cannot be read as an export"
        return {**d, "shown_bytes": len(head), "truncated": truncated, "note": note, "text": text}

    def reprocess(self, qid: int, *, actor: str) -> dict[str, Any]:
        from agent.pipeline import Pipeline

        cfg = self.engine.config
        try:
            out = Pipeline.for_config(self.store, cfg).reprocess(qid, actor=actor)
        except KeyError:
            raise NotFound(f"there is no quarantine entry {qid}", "reload the quarantine list") from None
        except ValueError as exc:
            raise Conflict(str(exc), "drop the file into the watched folder again") from None
        return {"document_id": out.document_id, "status": out.status, "accepted": out.accepted,
                "quarantined": out.quarantined, "reasons": out.reasons}

    # -- sync ----------------------------------------------------------------------------------
    def sync(self, *, wait: bool) -> dict[str, Any]:
        if wait:
            return dict(self.engine.run_sync(force=True).to_dict())
        self.engine.sync_now()
        return {"started": True}

    def pause(self, paused: bool, *, actor: str) -> dict[str, Any]:
        self.engine.set_paused(paused, actor=actor)
        if not paused:
            self.engine.sync_now()  # catch up on what waited while paused
        return {"paused": paused}

    # -- reconcile and mismatches --------------------------------------------------------------
    def reconcile(self, start: date | None, end: date | None) -> dict[str, Any]:
        from agent.mismatches import default_window

        s, e = default_window()
        return self.engine.run_reconcile(start or s, end or e)

    def mismatches(self, *, status: str | None, kind: str | None, page: int, page_size: int) -> dict[str, Any]:
        from agent.mismatches import ALLOWED

        return FindingRepo(self.store.conn).page(status=status, kind=kind, page=page, page_size=page_size,
                                                 actions=ALLOWED)

    def resolve(self, fid: int, action: str, reason: str, *, actor: str) -> dict[str, Any]:
        from agent.mismatches import ResolveError, resolve

        if self.engine.target is None and action == "resend":
            self.engine.apply_rcm()
        try:
            return resolve(self.store, self.engine.target, fid, action, actor=actor, reason=reason)
        except ResolveError as exc:
            raise Conflict(str(exc), "reload the mismatch queue and pick an action it offers") from None

    def comment(self, fid: int, text: str, assignee: str | None, *, actor: str) -> dict[str, Any]:
        from agent.mismatches import ResolveError, comment

        try:
            comment(self.store, fid, actor=actor, text=text, assignee=assignee)
        except ResolveError as exc:
            raise NotFound(str(exc), "reload the mismatch queue") from None
        return {"ok": True}

    # -- users and audit -----------------------------------------------------------------------
    def users(self, *, page: int, page_size: int) -> dict[str, Any]:
        return UserRepo(self.store.conn).page(page=page, page_size=page_size)

    def add_user(self, name: str, role: Role, *, actor: str) -> dict[str, Any]:
        try:
            token = add_user(self.store, name, role.value, actor=actor)
        except ValueError as exc:
            raise Conflict(str(exc), "pick another name", key="name") from None
        return {"name": name, "role": role, "token": token}

    def revoke_user(self, name: str, *, actor: str) -> dict[str, Any]:
        if not revoke_user(self.store, name, actor=actor):
            raise NotFound(f"there is no active user named {name!r}", "check the name in the users list",
                           key="name")
        return {"name": name, "revoked": True}

    def audit(self, *, action: str | None, page: int, page_size: int) -> dict[str, Any]:
        # entries hold actors, actions, ids and hashes only, never patient data
        return {"total": audit.count(self.store, action), "page": page, "page_size": page_size,
                "items": audit.entries(self.store, limit=page_size, offset=(page - 1) * page_size, action=action)}

    # -- configuration -------------------------------------------------------------------------
    def _file_config(self) -> tuple[Config, str]:
        """The config file as it is now; the running config (and why) when it no longer loads."""
        try:
            return load(self.engine.paths.config), ""
        except ConfigError as exc:
            return self.engine.config, f"{exc.title} — Fix: {exc.fix}"

    def _secret_set(self) -> bool:
        try:
            return bool(keys.get_secret(self.engine.paths, RCM_SECRET))
        except ChargeBridgeError:
            return False

    def _restart_sections(self, saved: dict[str, Any]) -> list[str]:
        running = config_to_dict(self.engine.config)
        live = (*LIVE_SECTIONS, "goals", "alerts")  # goals, alerts: read at each use (H5)
        return [k for k in saved if k not in live and saved[k] != running.get(k)]

    def get_config(self) -> dict[str, Any]:
        """The configuration as the file holds it (what the next start uses), never a secret."""
        on_disk, problem = self._file_config()
        file_dict = config_to_dict(on_disk)
        return {"config": file_dict, "path": str(self.engine.paths.config), "problem": problem,
                "rcm_secret_set": self._secret_set(), "restart_required": self._restart_sections(file_dict)}

    def check_config(self, doc: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        if partial:
            refuse_secrets(doc)
            validate(merge(config_to_dict(self._file_config()[0]), doc))
        else:
            refuse_secrets(doc)
            require_complete(doc)
            validate(doc)
        return {"ok": True}

    def put_config(self, doc: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """A complete document: validated with the engine's start-up rules, written atomically,
        audited, and applied where the running engine can (RCM, schedule, folders)."""
        refuse_secrets(doc)
        require_complete(doc)
        # a document without [mode] keeps the file's: test mode ends through go-live only
        return self._save(lambda old: {"mode": old.get("mode", {}), **doc}, actor=actor)

    def patch_config(self, part: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """Each top-level section given replaces that section; the result is validated like PUT."""
        refuse_secrets(part)
        return self._save(lambda old: merge(old, part), actor=actor)

    def _save(self, build: Any, *, actor: str) -> dict[str, Any]:
        with self._config_lock:  # two saves at once must not interleave read-merge-write
            old_cfg, _ = self._file_config()
            old_dict = config_to_dict(old_cfg)
            new = validate(build(old_dict))
            if old_cfg.mode.test and not new.mode.test:  # (H8) audited, checked: agent/golive.py
                raise Conflict("test mode is switched off by going live, not by a settings change",
                               "run: chargebridge golive --check, then chargebridge golive (or POST "
                               "/api/v1/golive)", key="mode.test")
            new_dict = config_to_dict(new)
            changed = [k for k in new_dict if new_dict[k] != old_dict.get(k)]
            if changed:  # an unchanged save leaves the file (and its comments) and the trail alone
                try:
                    write_config(self.engine.paths.config, new_dict)
                except ConfigError as exc:
                    raise with_key(exc) from None
                except OSError as exc:
                    raise Unavailable("the configuration file could not be written",
                                      f"check that {self.engine.paths.config.parent} is writable "
                                      f"({type(exc).__name__})") from None
                audit.record(self.store, actor=actor, action="config.change", target="config",
                             before=old_dict, after=new_dict, detail={"sections": changed})
            applied = self._apply_live(new, changed)
        restart = self._restart_sections(new_dict)
        if restart:
            message = (f"Saved. Restart the engine to apply the changes to: {', '.join(restart)} "
                       "(the running engine keeps its current settings for those until then).")
        elif changed:
            message = "Saved and applied."
        else:
            message = "Nothing changed."
        return {"saved": True, "changed": changed, "applied": applied, "restart_required": restart,
                "message": message, "config": new_dict}

    def _apply_live(self, new: Config, changed: list[str]) -> list[str]:
        """Apply the RCM, sync and folder sections to the running engine; API, store and ingest
        settings are wired in at start-up and wait for a restart."""
        applied = []
        running = config_to_dict(self.engine.config)
        new_dict = config_to_dict(new)
        if "sync" in changed or new_dict["sync"] != running["sync"]:
            self.engine.apply_sync(new.sync)
            applied.append("sync")
        if "rcm" in changed or new_dict["rcm"] != running["rcm"]:
            self.engine.apply_rcm(new.rcm)
            applied.append("rcm")
        if "mode" in changed or new_dict["mode"] != running["mode"]:  # test mode on: wrap the target (H8)
            self.engine.config.mode = new.mode
            self.engine.apply_rcm()
            applied.append("mode")
        if "folders" in changed or new_dict["folders"] != running["folders"]:
            self.engine.apply_folders(new.folders)
            applied.append("folders")
        for name in ("goals", "alerts"):  # KPIs and the alert check read these at each use (H5)
            if new_dict[name] != running[name]:
                setattr(self.engine.config, name, getattr(new, name))
                applied.append(name)
        return applied

    # -- RCM -----------------------------------------------------------------------------------
    def set_rcm_secret(self, secret: str, *, actor: str) -> dict[str, Any]:
        """The RCM secret goes to the OS keyring only — never the config file or the audit trail."""
        secret = secret.strip()
        if not secret:
            raise ConfigError("the secret is empty", "paste the client secret the RCM issued", key="secret")
        keys.set_secret(self.engine.paths, RCM_SECRET, secret)
        audit.record(self.store, actor=actor, action="rcm.secret", target="rcm", detail={"set": True})
        return {"saved": True, "rcm_error": self.engine.apply_rcm()}  # the next sync uses the new secret

    def test_rcm(self, candidate: dict[str, Any] | None) -> dict[str, Any]:
        """Token + capability request against the saved RCM settings, or a candidate: answered as
        {ok, detail, base_url} where detail says exactly which step failed. The stored secret is
        only ever sent to the saved addresses."""
        saved = self.engine.config.rcm
        where = candidate["base_url"] if candidate is not None else saved.base_url
        try:
            if candidate is None:
                if not saved.type:
                    return {"ok": False, "base_url": "",
                            "detail": "no RCM is configured — add the billing system's address in "
                                      "Settings (or the [rcm] section of chargebridge.toml)"}
                from agent.rcm import make_target

                target = make_target(self.engine.paths, self.engine.config)
            else:
                secret = candidate.get("secret") or ""
                moved = (candidate["base_url"], candidate.get("token_url") or "") != (saved.base_url, saved.token_url)
                if not secret:
                    if moved or not saved.type:
                        raise ConfigError("a new RCM address needs its secret",
                                          "type the client secret for this address: the saved secret is only "
                                          "sent to the saved RCM", key="secret")
                    secret = keys.get_secret(self.engine.paths, RCM_SECRET) or ""
                    if not secret:
                        return {"ok": False, "base_url": where,
                                "detail": "no RCM secret: type the client secret, or save it first"}
                from connectors.rcm.fhir import FhirTarget

                target = FhirTarget(candidate["base_url"], token_url=candidate.get("token_url") or "",
                                    client_id=candidate.get("client_id") or "", secret=secret,
                                    auth=candidate.get("auth") or "client_credentials",
                                    ca_bundle=candidate.get("ca_bundle") or "",
                                    timeout=min(max(float(candidate.get("timeout_seconds") or 15.0), 1.0), 30.0))
        except ConfigError as exc:
            if exc.key == "secret":
                raise
            return {"ok": False, "base_url": where, "detail": f"{exc.title} — {exc.fix}" if exc.fix else exc.title}
        except ChargeBridgeError as exc:
            return {"ok": False, "base_url": where, "detail": f"{exc.title} — {exc.fix}" if exc.fix else exc.title}
        except ValueError as exc:
            return {"ok": False, "base_url": where, "detail": str(exc)}
        if target is None:
            return {"ok": False, "base_url": where, "detail": "no RCM is configured"}
        try:
            ok, detail = target.check()
        except Exception as exc:  # a check must report, never crash the endpoint
            log.warning("RCM check failed unexpectedly: %s", type(exc).__name__)
            ok, detail = False, f"the test failed unexpectedly ({type(exc).__name__}); see the engine log"
        return {"ok": ok, "detail": detail, "base_url": where}
