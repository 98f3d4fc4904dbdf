"""The coder review queue, the rules and care-opportunity suggestions.

Anyone signed in may read the queue; approving, editing lines and rejecting need the coder role
(or above); re-running the rules over the encounters not yet sent needs a manager.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from agent import review
from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.rules import RuleSet
from agent.rules.apply import default_workers, rerun
from agent.service import EngineService
from core.schemas import (
    ApproveBody,
    LineEdit,
    Opportunity,
    Page,
    RejectBody,
    ReviewDecision,
    ReviewItem,
    RuleInfo,
    RulesRerun,
)
from core.states import Role

router = APIRouter(tags=["review"])
ID = Path(ge=1, le=2**62)
LINE = Path(ge=0, le=100_000)


def _rules(svc: EngineService) -> RuleSet | None:
    return RuleSet.for_config(svc.store, svc.engine.config.rules)


@router.get("/review", response_model=Page[ReviewItem], responses=errors(*AUTH))
def queue(pg: Paging = Depends(paging), c: Caller = Depends(caller),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.queue(svc.store, page=pg.page, page_size=pg.page_size)


@router.get("/review/{eid}", response_model=ReviewItem, responses=errors(*AUTH, 404))
def item(eid: int = ID, c: Caller = Depends(caller), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.detail(svc.store, eid)


@router.post("/review/{eid}/approve", response_model=ReviewDecision, responses=errors(*AUTH, 404, 409))
def approve(body: ApproveBody, eid: int = ID, c: Caller = Depends(need(Role.CODER)),
            svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.approve(svc.store, eid, actor=c.actor, note=body.note)  # sent by the next scheduled sync


@router.post("/review/{eid}/reject", response_model=ReviewDecision, responses=errors(*AUTH, 404, 409))
def reject(body: RejectBody, eid: int = ID, c: Caller = Depends(need(Role.CODER)),
           svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.reject(svc.store, eid, actor=c.actor, reason=body.reason)


@router.patch("/review/{eid}/lines/{index}", response_model=ReviewItem, responses=errors(*AUTH, 404, 409))
def edit_line(body: LineEdit, eid: int = ID, index: int = LINE, c: Caller = Depends(need(Role.CODER)),
              svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.edit_line(svc.store, _rules(svc), eid, index, body.model_dump(), actor=c.actor)


@router.get("/rules", response_model=Page[RuleInfo], responses=errors(*AUTH))
def rules(pg: Paging = Depends(paging), c: Caller = Depends(caller),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    cfg = svc.engine.config.rules
    rows = RuleSet(disabled=cfg.disabled if cfg.enabled else _all(), severity=cfg.severity).describe()
    start = (pg.page - 1) * pg.page_size
    return {"total": len(rows), "page": pg.page, "page_size": pg.page_size, "items": rows[start:start + pg.page_size]}


@router.post("/rules/rerun", response_model=RulesRerun, responses=errors(*AUTH))
def rules_rerun(c: Caller = Depends(need(Role.MANAGER)), svc: EngineService = Depends(service)) -> dict[str, Any]:
    # worker processes (spawned) from 20,000 encounters, as `chargebridge rules rerun`
    return rerun(svc.store, _rules(svc), actor=c.actor, workers=default_workers()).to_dict()


@router.get("/opportunities", response_model=Page[Opportunity], responses=errors(*AUTH))
def opportunities(pg: Paging = Depends(paging), c: Caller = Depends(caller),
                  svc: EngineService = Depends(service)) -> dict[str, Any]:
    return review.opportunities(svc.store, page=pg.page, page_size=pg.page_size)


def _all() -> frozenset[str]:
    from agent.rules import RULES

    return frozenset(RULES)
