"""API users (admin): list, create (the token is shown once), revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from agent.api.deps import AUTH, Caller, Paging, errors, need, paging, service
from agent.service import EngineService
from core.schemas import USER_NAME_MAX, NewUser, NewUserToken, Page, Revoked, User
from core.states import Role

router = APIRouter(tags=["users"])


@router.get("/users", response_model=Page[User], responses=errors(*AUTH))
def users(pg: Paging = Depends(paging), c: Caller = Depends(need(Role.ADMIN)),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.users(page=pg.page, page_size=pg.page_size)


@router.post("/users", response_model=NewUserToken, responses=errors(*AUTH, 409),
             description="Creates a user. While no user exists the first-run setup token may do this; the "
                         "first user ends setup.")
def new_user(body: NewUser, c: Caller = Depends(need(Role.ADMIN)),
             svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.add_user(body.name, body.role, actor=c.actor)


@router.delete("/users/{name}", response_model=Revoked, responses=errors(*AUTH, 404),
               description="Revokes the user's token at once.")
def revoke(name: str = Path(min_length=1, max_length=USER_NAME_MAX), c: Caller = Depends(need(Role.ADMIN)),
           svc: EngineService = Depends(service)) -> dict[str, Any]:
    return svc.revoke_user(name, actor=c.actor)
