"""EHR databases: list with health, poll now (manager), test the connection (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from agent import dbpoll
from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.service import EngineService
from core.schemas import DatabaseCheck, DatabaseInfo, DatabasePoll, Page
from core.states import Role

router = APIRouter(tags=["databases"])
NAME = Path(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_-]*$")


@router.get("/databases", response_model=Page[DatabaseInfo], responses=errors(*AUTH))
def databases(pg: Paging = Depends(paging), c: Caller = Depends(caller),
              svc: EngineService = Depends(service)) -> dict[str, Any]:
    items = dbpoll.list_databases(svc.store, svc.engine.config)
    start = (pg.page - 1) * pg.page_size
    return {"total": len(items), "page": pg.page, "page_size": pg.page_size,
            "items": items[start:start + pg.page_size]}


@router.post("/databases/{name}/poll", response_model=DatabasePoll, responses=errors(*AUTH, 404),
             description="Poll one EHR database now and answer what it found (`new`, `changed`, `voided`, "
                         "`unchanged`); a database problem is in `error`, not an HTTP error.")
def poll(name: str = NAME, c: Caller = Depends(need(Role.MANAGER)),
         svc: EngineService = Depends(service)) -> dict[str, Any]:
    return dbpoll.poll_now(svc.engine, name).to_dict()


@router.post("/databases/{name}/test", response_model=DatabaseCheck, responses=errors(*AUTH, 404))
def test(name: str = NAME, c: Caller = Depends(need(Role.ADMIN)),
         svc: EngineService = Depends(service)) -> dict[str, Any]:
    db = dbpoll.find(svc.engine.config, name)
    source = dbpoll.make_source(svc.engine.paths, db)
    try:
        return source.check().to_dict()
    finally:
        source.close()
