"""The first-week checklist (manager+, H15): items the engine ticks from its own state, a
connection test whose outcome it keeps, and the dismissal once every item is done."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from agent import checklist
from agent.api.deps import AUTH, Caller, errors, need, service
from agent.service import EngineService
from core.schemas import Checklist
from core.states import Role

router = APIRouter(tags=["checklist"])
MANAGER = need(Role.MANAGER)


@router.get("/checklist", response_model=Checklist, responses=errors(*AUTH),
            description="The first-week checklist: each item done or not (from engine state) and what to do next.")
def get_checklist(c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return checklist.view(svc.store, svc.engine.config)


@router.post("/checklist/rcm-test", response_model=Checklist, responses=errors(*AUTH),
             description="Test the saved RCM connection (as POST /rcm/test does) and keep the outcome: a pass "
                         "ticks the checklist's RCM item.")
def rcm_test(c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    checklist.record_rcm_test(svc.store, svc.test_rcm(None))
    return checklist.view(svc.store, svc.engine.config)


@router.post("/checklist/dismiss", response_model=Checklist, responses=errors(*AUTH, 409),
             description="Hide the checklist for this home (audited); refused while an item is open.")
def dismiss(c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return checklist.dismiss(svc.store, svc.engine.config, actor=c.actor)
