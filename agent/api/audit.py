"""The audit trail (manager+): actors, actions, ids and hashes only, never patient data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from agent.api.deps import AUTH, Caller, Paging, errors, need, paging, service
from agent.service import EngineService
from core.schemas import AuditEntry, Page
from core.states import Role

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=Page[AuditEntry], responses=errors(*AUTH))
def audit_trail(action: str | None = Query(None, max_length=64, description="only entries of this action"),
                pg: Paging = Depends(paging), c: Caller = Depends(need(Role.MANAGER)),
                svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.audit(action=action, page=pg.page, page_size=pg.page_size)
