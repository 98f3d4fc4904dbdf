"""Builds the configured RCM target. Adding a vendor: a module under connectors/rcm and a line here."""

from __future__ import annotations

from agent import keys
from agent.config import Config
from connectors.rcm.base import Target
from core.errors import ConfigError
from core.paths import Paths
from core.secrets import RCM_SECRET as SECRET


def make_target(paths: Paths, cfg: Config) -> Target | None:
    rc = cfg.rcm
    if not rc.type:
        return None
    secret = keys.get_secret(paths, SECRET) or ""
    if not secret:
        raise ConfigError("the RCM secret is not in the OS keyring",
                          "run: chargebridge rcm set-secret (it reads the secret from a prompt or stdin)")
    if rc.type == "fhir":
        from connectors.rcm.fhir import FhirTarget

        return FhirTarget(rc.base_url, token_url=rc.token_url, client_id=rc.client_id, secret=secret,
                          auth=rc.auth, timeout=rc.timeout_seconds, ca_bundle=rc.ca_bundle,
                          bundle=rc.bundle)
    raise ConfigError(f"unknown RCM type {rc.type!r}", "use: fhir")
