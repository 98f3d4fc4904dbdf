"""Quarantine: the entries, a raw document (manager+: it is patient data), reprocessing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.service import DOCUMENT_CAP, EngineService
from core.schemas import Page, QuarantineDocument, QuarantineItem, ReprocessResult
from core.states import Role

router = APIRouter(tags=["quarantine"])
ID = Path(ge=1, le=2**62)


@router.get("/quarantine", response_model=Page[QuarantineItem], responses=errors(*AUTH))
def quarantine(include_resolved: bool = False, pg: Paging = Depends(paging), c: Caller = Depends(caller),
               svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.quarantine(include_resolved=include_resolved, page=pg.page, page_size=pg.page_size)


@router.get("/quarantine/{qid}/document", response_model=QuarantineDocument, responses=errors(*AUTH, 404))
def quarantine_document(qid: int = ID, max_bytes: int = Query(DOCUMENT_CAP, ge=1, le=DOCUMENT_CAP),
                        c: Caller = Depends(need(Role.MANAGER)),
                        svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.quarantine_document(qid, max_bytes)


@router.post("/quarantine/{qid}/reprocess", response_model=ReprocessResult, responses=errors(*AUTH, 404, 409))
def reprocess(qid: int = ID, c: Caller = Depends(need(Role.MANAGER)),
              svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.reprocess(qid, actor=c.actor)
