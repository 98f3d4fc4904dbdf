"""Eligibility for scheduled visits (H9): 270 out, 271 back (agent/eligibility.py).

Roles: every signed-in role — the front desk is who acts on an inactive coverage. ``GET
/eligibility`` lists a day's scheduled visits with their latest answer (MRN and appointment
id, no names), or with ``flagged=true`` every visit from that day on whose answer is not
``active``. ``POST /eligibility/check`` reads the 271s waiting and sends the 270 for the day
(the engine also does this the evening before); it is audited.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query

from agent import eligibility, eligibility_job
from agent.api.deps import AUTH, Caller, Paging, caller, errors, paging, service
from agent.service import EngineService
from core.errors import ConfigError
from core.schemas import EligibilityCheck, EligibilityCheckRequest, EligibilityVisit, Page

router = APIRouter(tags=["eligibility"])
DATE = r"^\d{4}-\d{2}-\d{2}$"


def _day(text: str | None) -> str:
    if not text:
        return date.today().isoformat()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError("the date is not a calendar date", "a date like 2026-06-15", key="date") from None


@router.get("/eligibility", response_model=Page[EligibilityVisit], responses=errors(*AUTH),
            description="A day's scheduled visits with their latest eligibility answer (status null: not asked "
                        "yet); with flagged=true, every visit from that day on whose answer is not active.")
def list_visits(day: str | None = Query(None, alias="date", pattern=DATE, description="YYYY-MM-DD (default today)"),
                flagged: bool = Query(False, description="only visits without an active answer, from that day on"),
                pg: Paging = Depends(paging), c: Caller = Depends(caller),
                svc: EngineService = Depends(service)) -> dict[str, Any]:
    d = _day(day)
    if flagged:
        items = [{**r, "appointment": r["visit"].split("|", 2)[-1]}
                 for r in eligibility.flagged(svc.store, since=d)]
    else:
        items = eligibility.visits(svc.store, d)
    start = (pg.page - 1) * pg.page_size
    return {"total": len(items), "page": pg.page, "page_size": pg.page_size,
            "items": items[start:start + pg.page_size]}


@router.post("/eligibility/check", response_model=EligibilityCheck, responses=errors(*AUTH, 400, 502),
             description="Read the 271 answers waiting at the clearinghouse, then send the 270 for the day's "
                         "scheduled visits not answered yet (ask=false: read only). 422 when [practice] / [x12] "
                         "are not set up; 502 when the clearinghouse location cannot be used.")
def check(body: EligibilityCheckRequest, c: Caller = Depends(caller),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    return eligibility_job.run_check(svc.store, svc.engine.config, svc.engine.paths, _day(body.date),
                                     ask_payer=body.ask, actor=c.actor)
