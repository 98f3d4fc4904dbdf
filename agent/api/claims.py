"""Claims and their outcomes at the payer (H4).

Roles: every signed-in role lists claims (``GET /claims``: the front desk sees which visits
were rejected or denied, e.g. for coverage, and can fix that at the next visit; the list holds
ids, states, amounts and reason codes, no patient names). A claim's answer history
(``GET /claims/{claim_id}``) and the answers that matched no claim (``GET /claims/unmatched``)
carry the payer's remittance detail and need the coder role or higher.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from agent import claim_views
from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.service import EngineService
from core.errors import NotFound
from core.schemas import ClaimDetail, ClaimItem, Page, UnmatchedAnswer
from core.states import ClaimState, Role

router = APIRouter(tags=["claims"])
CLAIM_ID = Path(min_length=1, max_length=80, description="our claim id (CLM01 / FHIR Claim identifier)")


@router.get("/claims", response_model=Page[ClaimItem], responses=errors(*AUTH),
            description="Claims, newest first, with state, amounts, reasons (with descriptions when the code "
                        "lists are installed) and whether a rejected / denied claim waits in the mismatch queue.")
def list_claims(state: ClaimState | None = Query(None, description="only claims in this state"),
                pg: Paging = Depends(paging), c: Caller = Depends(caller),
                svc: EngineService = Depends(service)) -> dict[str, Any]:
    return claim_views.page(svc.store, state=state.value if state else None, page=pg.page, page_size=pg.page_size)


@router.get("/claims/unmatched", response_model=Page[UnmatchedAnswer], responses=errors(*AUTH),
            description="Answers (999, 277CA, 835, ClaimResponse) that matched no claim: kept, never dropped.")
def unmatched(pg: Paging = Depends(paging), c: Caller = Depends(need(Role.CODER)),
              svc: EngineService = Depends(service)) -> dict[str, Any]:
    return claim_views.unmatched_page(svc.store, page=pg.page, page_size=pg.page_size)


@router.get("/claims/{claim_id}", response_model=ClaimDetail, responses=errors(*AUTH, 404),
            description="One claim with every answer it received, oldest first.")
def claim(claim_id: str = CLAIM_ID, c: Caller = Depends(need(Role.CODER)),
          svc: EngineService = Depends(service)) -> dict[str, Any]:
    d = claim_views.detail(svc.store, claim_id)
    if d is None:
        raise NotFound("there is no claim with that id", "list the claims with GET /api/v1/claims", key="claim_id")
    return d
