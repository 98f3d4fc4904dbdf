"""Claims and their outcomes at the payer (H4).

Roles: every signed-in role lists claims (``GET /claims``: the front desk sees which visits
were rejected or denied, e.g. for coverage, and can fix that at the next visit; the list holds
ids, states, amounts and reason codes, no patient names). A claim's answer history
(``GET /claims/{claim_id}``) and the answers that matched no claim (``GET /claims/unmatched``)
carry the payer's remittance detail and need the coder role or higher.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from agent import claim_filters, claim_views, claims, kpi
from agent.api.deps import AUTH, Caller, Paging, caller, errors, need, paging, service
from agent.service import EngineService
from core.errors import NotFound
from core.schemas import ClaimDetail, ClaimItem, Page, UnmatchedAnswer
from core.states import ClaimState, Role

router = APIRouter(tags=["claims"])
CLAIM_ID = Path(min_length=1, max_length=80, description="our claim id (CLM01 / FHIR Claim identifier)")


AGE = Query(None, pattern=r"^(0-30|31-60|61-90|90\+)$",
            description="only open claims (submitted, accepted) of this A/R bucket: days since first submission, "
                        "the same condition as the dashboard's A/R chart")
LAG = Query(None, pattern=r"^(0-1|2-3|4-7|8-14|15-30|31\+)$",
            description="only claims of this charge-lag bucket: days from service to first delivery")
REASON = Query(None, min_length=1, max_length=24, pattern=r"^([A-Z]{1,3}-)?[A-Za-z0-9.:]{1,20}$",
               description="only claims whose reasons carry this code (16, or with its group: CO-16); RARCs left out")
FROM = Query(None, alias="from", description="first date of service")
TO = Query(None, description="last date of service (included)")
PROVIDER = Query(None, min_length=1, max_length=kpi.MAX_FILTER, description="only this rendering NPI's claims")
PAYER = Query(None, min_length=1, max_length=kpi.MAX_FILTER,
              description="only this payer's claims (payer id, or name when the coverage has no id)")


@router.get("/claims", response_model=Page[ClaimItem], responses=errors(*AUTH, 422),
            description="Claims, newest first, with state, amounts, reasons (with descriptions when the code "
                        "lists are installed) and whether a rejected / denied claim waits in the mismatch queue. "
                        "The filters narrow the list to exactly the claims behind a dashboard figure; "
                        "`state` may be given more than once (any of them).")
def list_claims(state: list[ClaimState] | None = Query(None, max_length=len(ClaimState),
                                                       description="only claims in this state (repeatable)"),
                reason: str | None = REASON, age: str | None = AGE, lag: str | None = LAG,
                start: date | None = FROM, to: date | None = TO, provider: str | None = PROVIDER,
                payer: str | None = PAYER, pg: Paging = Depends(paging), c: Caller = Depends(caller),
                svc: EngineService = Depends(service)) -> dict[str, Any]:
    total, items = claims.list_claims(
        svc.store, states=[s.value for s in state or []], reason=reason or "",
        **claim_filters.bucket_kwargs(age=age or "", lag=lag or ""), dos_from=start, dos_to=to,
        provider=(provider or "").strip(), payer=(payer or "").strip(),
        limit=pg.page_size, offset=(pg.page - 1) * pg.page_size, describe=claim_views.describe())
    return {"total": total, "page": pg.page, "page_size": pg.page_size, "items": claim_views.mark(svc.store, items)}


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
