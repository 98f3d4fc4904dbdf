"""Dependencies shared by the routers: the service, who is calling, and which role a route needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.service import EngineService
from core.errors import ChargeBridgeError
from core.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE, MAX_PAGE_SIZE, ErrorBody
from core.states import Role

_bearer = HTTPBearer(auto_error=False)


class Unauthorized(ChargeBridgeError):
    http_status = 401


class Forbidden(ChargeBridgeError):
    http_status = 403


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    token: str

    @property
    def actor(self) -> str:
        """How the audit trail names a change made through the API."""
        return f"api:{self.name}"

    def public(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role.value}


def service(request: Request) -> EngineService:
    svc: EngineService = request.app.state.service
    return svc


def caller(creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
           svc: EngineService = Depends(service)) -> Caller:
    token = creds.credentials if creds else ""
    who = svc.authenticate(token) if token else None
    if who is None:
        raise Unauthorized("missing or invalid token" if token else "this request needs a token",
                           "sign in again, or ask an admin for a token (chargebridge users add NAME --role ROLE)")
    return Caller(who[0], who[1], token)


def need(role: Role) -> Callable[..., Caller]:
    def check(c: Caller = Depends(caller)) -> Caller:
        if not c.role.at_least(role):
            raise Forbidden(f"this needs the {role.value} role; you are signed in as {c.role.value}",
                            f"sign in as a user with the {role.value} role")
        return c
    return check


@dataclass(frozen=True)
class Paging:
    page: int
    page_size: int


def paging(page: int = Query(1, ge=1, le=MAX_PAGE, description="1-based page number"),
           page_size: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="rows per page")) -> Paging:
    return Paging(page, page_size)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: these status codes answer an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody} for code in codes}


AUTH = (401, 403, 422)
