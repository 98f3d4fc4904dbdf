"""KPIs and goals (manager+): figures for a window of dates of service, series, the practice's goals."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query

from agent import kpi
from agent.api.deps import AUTH, Caller, errors, need, service
from agent.service import EngineService
from core.schemas import Goals, GoalsView, KpiReport, KpiSeries
from core.states import KpiBy, KpiGrain, Role

router = APIRouter(tags=["kpi"])
MANAGER = need(Role.MANAGER)
FROM = Query(None, alias="from", description="first date of service (default: 29 days before 'to')")
TO = Query(None, description="last date of service (default: today)")
PROVIDER = Query(None, max_length=kpi.MAX_FILTER, description="only this rendering NPI's claims and encounters")
PAYER = Query(None, max_length=kpi.MAX_FILTER, description="only this payer's claims and encounters (payer id, or "
                                                            "name when the coverage has no id)")
KPI_KEY = Query(..., alias="kpi", min_length=1, max_length=64, description="a KPI key (GET /goals lists them)")


@router.get("/kpi", response_model=KpiReport, responses=errors(*AUTH, 422))
def kpi_report(start: date | None = FROM, to: date | None = TO, by: KpiBy | None = None,
               provider: str | None = PROVIDER, payer: str | None = PAYER, c: Caller = Depends(MANAGER),
               svc: EngineService = Depends(service)) -> dict[str, Any]:
    """Every KPI for the window with its goal, baseline and status; with `by`, per provider or payer;
    with `provider` / `payer`, every figure (reasons, buckets, baseline too) narrowed to them."""
    return kpi.report(svc.store, svc.engine.config.goals, start=start, end=to, by=by, provider=provider,
                      payer=payer)


@router.get("/kpi/series", response_model=KpiSeries, responses=errors(*AUTH, 422))
def kpi_series(kpi_key: str = KPI_KEY, start: date | None = FROM, to: date | None = TO,
               grain: KpiGrain = KpiGrain.DAY, provider: str | None = PROVIDER, payer: str | None = PAYER,
               c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    """One KPI per day, week (labelled by its Monday) or month of the window, narrowed like GET /kpi."""
    return kpi.series(svc.store, svc.engine.config.goals, kpi_key, start=start, end=to, grain=grain,
                      provider=provider, payer=payer)


@router.get("/goals", response_model=GoalsView, responses=errors(*AUTH))
def get_goals(c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    """The practice's goals (``[goals]``) and every KPI a goal may name."""
    return {**kpi.goals_view(svc.engine.config.goals), "kpis": kpi.catalog()}


@router.put("/goals", response_model=GoalsView, responses=errors(*AUTH, 503))
def put_goals(body: Goals, c: Caller = Depends(MANAGER), svc: EngineService = Depends(service)) -> dict[str, Any]:
    """Replace the goals: validated like the config file, written to it, audited, applied at once."""
    saved = kpi.save_goals(svc, body.model_dump(), actor=c.actor)
    return {**kpi.goals_view(saved), "kpis": kpi.catalog()}
