"""Health (no token), status and the change feed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from agent.api.deps import AUTH, Caller, caller, errors, service
from agent.service import EngineService
from core.schemas import Changes, Health, Status

router = APIRouter(tags=["status"])


@router.get("/health", response_model=Health)
def health(svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.health()


@router.get("/status", response_model=Status, responses=errors(401))
def status(c: Caller = Depends(caller), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return {**svc.status(), "user": c.public()}


@router.get("/changes", response_model=Changes, responses=errors(*AUTH, 429),
            description="Long-poll: answers as soon as anything commits after `after`, or after `timeout` s.")
def changes(after: int = Query(0, ge=0, le=2**62), timeout: float = Query(25.0, ge=0, le=60),
            c: Caller = Depends(caller), svc: EngineService = Depends(service)) -> dict[str, Any]:
    with svc.long_poll(c.token):
        return svc.changes(after, timeout)
