"""Reconciliation runs and the mismatch queue."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.service import EngineService
from core.schemas import Comment, Finding, Ok, Page, ReconcileResult, Resolution, ResolveResult
from core.states import FindingKind, FindingStatus, Role

router = APIRouter(tags=["reconcile"])
ID = Path(ge=1, le=2**62)
_STATUSES = "|".join([*(s.value for s in FindingStatus), "all"])


@router.post("/reconcile", response_model=ReconcileResult, responses=errors(*AUTH),
             description="Compare the RCM's charges with the store for a window (default: the last 90 days). "
                         "`skipped` says why nothing ran (e.g. no RCM configured).")
def reconcile(start: date | None = Query(None, description="first date of service, e.g. 2026-10-01"),
              end: date | None = Query(None, description="last date of service"),
              c: Caller = Depends(caller), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.reconcile(start, end)


@router.get("/mismatches", response_model=Page[Finding], responses=errors(*AUTH))
def mismatches(status: str = Query("open", pattern=f"^({_STATUSES})?$",
                                   description="a finding status; empty or `all` for every status"),
               kind: FindingKind | None = None, pg: Paging = Depends(paging), c: Caller = Depends(caller),
               svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.mismatches(status=None if status in ("", "all") else status, kind=kind.value if kind else None,
                          page=pg.page, page_size=pg.page_size)


@router.post("/mismatches/{fid}/resolve", response_model=ResolveResult, responses=errors(*AUTH, 404, 409))
def resolve(body: Resolution, fid: int = ID, c: Caller = Depends(need(Role.MANAGER)),
            svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.resolve(fid, body.action.value, body.reason, actor=c.actor)


@router.post("/mismatches/{fid}/comment", response_model=Ok, responses=errors(*AUTH, 404))
def comment(body: Comment, fid: int = ID, c: Caller = Depends(need(Role.MANAGER)),
            svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.comment(fid, body.text, body.assignee, actor=c.actor)
