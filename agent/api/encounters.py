"""Encounters: searched, sorted and paged in the engine."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from agent.api.deps import AUTH, Caller, Paging, caller, errors, paging, service
from agent.service import EngineService
from core.schemas import EncounterPage
from core.states import EncounterState

router = APIRouter(tags=["encounters"])


@router.get("/encounters", response_model=EncounterPage, responses=errors(*AUTH))
def encounters(state: EncounterState | None = None,
               q: str | None = Query(None, max_length=200,
                                     description="matches MRN, visit id, patient name or a procedure code"),
               sort: Literal["id", "dos"] = Query("id", description="id (received order) or dos"),
               desc: bool = False, pg: Paging = Depends(paging), c: Caller = Depends(caller),
               svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.encounters(state=state.value if state else None, q=q, sort=sort, desc=desc, page=pg.page,
                          page_size=pg.page_size)
