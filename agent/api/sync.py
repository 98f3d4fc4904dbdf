"""Sync now, pause and resume."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from agent.api.deps import AUTH, Caller, caller, errors, need, service
from agent.service import EngineService
from core.schemas import Paused, SyncResult, SyncStarted
from core.states import Role

router = APIRouter(tags=["sync"])


@router.post("/sync", response_model=SyncResult | SyncStarted, responses=errors(*AUTH),
             description="`wait=true` runs the sync and answers its result; otherwise it starts one.")
def sync(wait: bool = False, c: Caller = Depends(caller), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.sync(wait=wait)


@router.post("/pause", response_model=Paused, responses=errors(401, 403))
def pause(c: Caller = Depends(need(Role.MANAGER)), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.pause(True, actor=c.actor)


@router.post("/resume", response_model=Paused, responses=errors(401, 403))
def resume(c: Caller = Depends(need(Role.MANAGER)), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.pause(False, actor=c.actor)
