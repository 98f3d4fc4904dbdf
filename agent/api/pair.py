"""Pairing a front-desk PC (no token: the one-time code is the credential).

Both routes answer only on the engine's TLS (LAN) listener; a loopback-only engine answers 409.
``GET /pair/ca`` gives the practice CA certificate (public; the PC checks it against the pin in
its code). ``POST /pair`` redeems a code: rate-limited per client address, and too many wrong
codes withdraw every open code.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from agent import pairing
from agent.api.deps import errors, service
from agent.service import EngineService
from core.errors import Conflict
from core.schemas import PairCa, PairedToken, PairRequest

router = APIRouter(tags=["pairing"])


def _limiter(request: Request) -> pairing.Limiter:
    """One limiter per engine app (kept on its state)."""
    lim = getattr(request.app.state, "pair_limiter", None)
    if lim is None:
        lim = request.app.state.pair_limiter = pairing.Limiter()
    return lim


def _material(request: Request, svc: EngineService) -> Any:
    material = getattr(svc.engine, "tls", None)
    if material is None or request.url.scheme != "https":
        raise Conflict("pairing happens over the engine's LAN address (https)",
                       'turn on LAN mode ([api] host and tls = "auto") and use the address chargebridge pair '
                       "prints", key="api.tls")
    return material


@router.get("/pair/ca", response_model=PairCa, responses=errors(409),
            description="The practice CA certificate. No token: it is public, and a PC accepts it only when it "
                        "matches the pin in its pairing code.")
def pair_ca(request: Request, svc: EngineService = Depends(service)) -> dict[str, Any]:
    m = _material(request, svc)
    return {"ca_pem": m.ca_pem.decode(), "fingerprint": m.ca_fingerprint}


@router.post("/pair", response_model=PairedToken, responses=errors(403, 409, 422, 429),
             description="Redeems a one-time pairing code (chargebridge pair): creates the user chosen then and "
                         "returns its token (shown once) and the CA to pin.")
def pair(body: PairRequest, request: Request, svc: EngineService = Depends(service)) -> dict[str, Any]:
    m = _material(request, svc)
    client = request.client.host if request.client else "unknown"
    limiter = _limiter(request)
    limiter.attempt(client)
    try:
        name, role, token = pairing.redeem(svc.store, body.code, client=client)
    except pairing.CodeRefused:
        if limiter.failed():
            pairing.withdraw_open(svc.store, actor="engine")
        raise
    return {"name": name, "role": role, "token": token, "ca_pem": m.ca_pem.decode(), "fingerprint": m.ca_fingerprint}
