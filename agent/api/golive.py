"""Test mode and go-live (H8): the recorded dry-run sends, the go-live checks and the switch."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Path

from agent import golive, testmode
from agent.api.deps import AUTH, Caller, Paging, errors, need, paging, service
from agent.service import EngineService
from core.errors import ChargeBridgeError
from core.schemas import (
    GoLiveChecks,
    GoLiveRequest,
    GoLiveResult,
    Page,
    TestModeExport,
    TestModeSend,
    TestModeSendDetail,
)
from core.states import Role

router = APIRouter(tags=["test mode"])
ID = Path(ge=1, le=2**62)


class TooLarge(ChargeBridgeError):
    http_status = 413


@router.get("/testmode/sends", response_model=Page[TestModeSend], responses=errors(*AUTH))
def sends(pg: Paging = Depends(paging), c: Caller = Depends(need(Role.MANAGER)),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    return testmode.sends(svc.store, page=pg.page, page_size=pg.page_size)


@router.get("/testmode/sends/{send_id}", response_model=TestModeSendDetail, responses=errors(*AUTH, 404))
def send(send_id: int = ID, c: Caller = Depends(need(Role.MANAGER)),
         svc: EngineService = Depends(service)) -> dict[str, Any]:
    return testmode.send(svc.store, send_id)


@router.get("/testmode/sends/{send_id}/export", response_model=TestModeExport, responses=errors(*AUTH, 404, 413),
            description="The payload that would have been sent, as one file (a ZIP when there were several). "
                        "Patient data: manager or admin, audited.")
def export(send_id: int = ID, c: Caller = Depends(need(Role.MANAGER)),
           svc: EngineService = Depends(service)) -> dict[str, Any]:
    store = svc.store
    name, body = testmode.export_bytes(store, send_id)
    if len(body) > testmode.EXPORT_CAP:
        raise TooLarge(f"this send is {len(body) // 1_000_000} MB, more than the window can fetch",
                       f"export it on the engine's machine: chargebridge testmode export {send_id} --out FILE")
    from agent import audit

    with store.tx():
        audit.record(store, actor=c.actor, action="testmode.export", target=f"testmode:{send_id}",
                     detail={"bytes": len(body)})
    return {"id": send_id, "name": name, "size": len(body), "content_base64": base64.b64encode(body).decode()}


@router.get("/golive", response_model=GoLiveChecks, responses=errors(*AUTH))
def golive_checks(c: Caller = Depends(need(Role.MANAGER)), svc: EngineService = Depends(service)) -> dict[str, Any]:
    return golive.check(svc.engine.paths, svc.store, svc.engine.config)


@router.post("/golive", response_model=GoLiveResult, responses=errors(*AUTH, 409, 503))
def golive_switch(body: GoLiveRequest, c: Caller = Depends(need(Role.ADMIN)),
                  svc: EngineService = Depends(service)) -> dict[str, Any]:
    eng = svc.engine
    with svc._config_lock:  # not interleaved with a settings save (both write chargebridge.toml)
        out = golive.go_live(eng.paths, svc.store, eng.config, actor=c.actor, force=body.force, reason=body.reason,
                             resend_test=body.resend_test)
    eng.apply_rcm()  # the real target from now on
    if out["requeued"]:
        eng.sync_now()
    return out
