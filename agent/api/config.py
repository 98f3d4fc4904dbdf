"""Configuration and the RCM connection (admin; testing the saved RCM: manager)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from agent.api.deps import AUTH, Caller, Forbidden, errors, need, service
from agent.service import EngineService
from core.schemas import (
    ConfigCheck,
    ConfigSaved,
    ConfigView,
    Ok,
    RcmCandidate,
    RcmSecret,
    RcmSecretSaved,
    RcmTestResult,
)
from core.states import Role

router = APIRouter(tags=["config"])
ADMIN = need(Role.ADMIN)
DOC = Body(..., description="a chargebridge.toml document as JSON (GET /config's `config`); never a secret")


@router.get("/config", response_model=ConfigView, responses=errors(401, 403))
def get_config(c: Caller = Depends(ADMIN), svc: EngineService = Depends(service)) -> dict[str, Any]:
    """The configuration as the file holds it (what the next start uses), never a secret."""
    return svc.get_config()


@router.put("/config", response_model=ConfigSaved, responses=errors(*AUTH, 409, 503))
def put_config(body: dict[str, Any] = DOC, c: Caller = Depends(ADMIN),
               svc: EngineService = Depends(service)) -> dict[str, Any]:
    """A complete document (every section): validated with the engine's start-up rules, written
    atomically, audited, and applied live where the engine can (RCM, schedule, folders)."""
    return svc.put_config(body, actor=c.actor)


@router.patch("/config", response_model=ConfigSaved, responses=errors(*AUTH, 409, 503))
def patch_config(body: dict[str, Any] = DOC, c: Caller = Depends(ADMIN),
                 svc: EngineService = Depends(service)) -> dict[str, Any]:
    """Each top-level section given replaces that section (``folders``: the whole list)."""
    return svc.patch_config(body, actor=c.actor)


@router.post("/config/validate", response_model=Ok, responses=errors(*AUTH))
def validate_config(body: ConfigCheck, c: Caller = Depends(ADMIN),
                    svc: EngineService = Depends(service)) -> dict[str, Any]:
    """200 when the document would be accepted; else 422 whose ``key`` names the config key."""
    return svc.check_config(body.config, partial=body.partial)


@router.post("/rcm/secret", response_model=RcmSecretSaved, responses=errors(*AUTH, 503))
def set_rcm_secret(body: RcmSecret, c: Caller = Depends(ADMIN),
                   svc: EngineService = Depends(service)) -> dict[str, Any]:
    """The RCM secret goes to the OS keyring only — never the config file or the audit trail."""
    return svc.set_rcm_secret(body.secret, actor=c.actor)


@router.post("/rcm/test", response_model=RcmTestResult, responses=errors(*AUTH))
def test_rcm(body: RcmCandidate | None = Body(None), c: Caller = Depends(need(Role.MANAGER)),
             svc: EngineService = Depends(service)) -> dict[str, Any]:
    """No body: test the saved settings (manager). A body: test those settings (admin)."""
    if body is not None and not c.role.at_least(Role.ADMIN):
        raise Forbidden(f"testing unsaved RCM settings needs the admin role; you are signed in as {c.role.value}",
                        "test the saved settings (no body), or sign in as an admin")
    return svc.test_rcm(body.model_dump() if body is not None else None)
