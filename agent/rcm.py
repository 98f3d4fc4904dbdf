"""Builds the configured RCM target from the registry (:data:`connectors.rcm.TARGETS`).

Adding a vendor touches nothing here: a module under ``connectors/rcm`` and a line there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from agent import keys
from agent.config import Config, RcmConfig
from connectors.rcm import make_target as _registry_make
from connectors.rcm.base import ControlLedger, Target, TargetSettings
from core.errors import ConfigError
from core.paths import Paths
from core.secrets import RCM_SECRET as SECRET

if TYPE_CHECKING:
    from agent.store import Store

__all__ = ["SECRET", "build_target", "make_target", "settings_of"]


def settings_of(rc: RcmConfig, cfg: Config | None = None, paths: Paths | None = None) -> TargetSettings:
    """The connector's view of an ``[rcm]`` section. With the whole config and the home: the
    vendor sections (X12: ``[practice]`` and ``[x12]``) and the store's control-number ledger."""
    options: dict[str, Any] = {}
    ledger = None
    if cfg is not None and rc.type == "x12":
        options = {"practice": asdict(cfg.practice), "x12": asdict(cfg.x12)}
        if paths is not None:
            ledger = _ledger(paths, cfg.key_source)
    return TargetSettings(base_url=rc.base_url, token_url=rc.token_url, client_id=rc.client_id, auth=rc.auth,
                          timeout_seconds=rc.timeout_seconds, ca_bundle=rc.ca_bundle, bundle=rc.bundle,
                          options=options, ledger=ledger)


def _ledger(paths: Paths, key_source: str) -> ControlLedger:
    """X12 interchange numbers in the home's store (agent.claims.StoreLedger); the store key is
    read once, on first use, and the store opened per call (any thread)."""
    from agent.claims import StoreLedger
    from agent.store import Store

    key: list[bytes] = []

    def open_store() -> Store:
        if not key:
            key.append(keys.store_key(paths, key_source, create=False))
        return Store.open_with_key(paths, key[0])

    return StoreLedger(open_store)


def needs_secret(rc: RcmConfig) -> bool:
    """An X12 channel works without one (folders; an SFTP key without a passphrase)."""
    return rc.type != "x12"


def build_target(rc: RcmConfig, secret: str, *, cfg: Config | None = None, paths: Paths | None = None) -> Target:
    """A target for ``rc`` with ``secret`` (a saved or a candidate configuration, e.g. for a
    connection test). Raises :class:`ConfigError` with the key at fault; URLs pass the same
    rule (:func:`core.urls.check_url`) whichever way the settings came."""
    if not rc.type:
        raise ConfigError("no RCM is configured", "set [rcm] type (and its address) first", key="rcm.type")
    if not secret and needs_secret(rc):
        raise ConfigError("no RCM secret was given", "type the client secret, or save it first", key="secret")
    return _registry_make(rc.type, settings_of(rc, cfg, paths), secret)


def make_target(paths: Paths, cfg: Config, *, store: Callable[[], Store] | None = None) -> Target | None:
    """The saved configuration's target with the keyring's secret; ``None`` when no RCM is set.
    In test mode (``[mode] test``) the target is wrapped so nothing reaches the real RCM
    (agent/testmode.py; ``store``: the caller's store per thread, for the record)."""
    rc = cfg.rcm
    if not rc.type:
        return None
    secret = keys.get_secret(paths, SECRET) or ""
    if cfg.mode.test:  # a dry run builds the real payload; it needs no secret (go-live checks it)
        from agent.testmode import wrap

        inner = _registry_make(rc.type, settings_of(rc, cfg, paths), secret)
        return wrap(inner, paths, cfg, store, build=build_target)
    if not secret and needs_secret(rc):
        raise ConfigError("the RCM secret is not in the OS keyring",
                          "run: chargebridge rcm set-secret (it reads the secret from a prompt or stdin)")
    return build_target(rc, secret, cfg=cfg, paths=paths)
