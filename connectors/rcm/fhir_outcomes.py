"""What the RCM decided about our Claims: FHIR R4 ``ClaimResponse`` resources -> :class:`core.answers.Answer`.

The FHIR target reads them with :func:`fetch` (``FhirTarget.fetch_outcomes``): one search per
chunk of claims, ``ClaimResponse?request=Claim/a,Claim/b,...`` (a FHIR OR list), following the
server's ``next`` links on the same origin only, within budgets on claims per call, pages and
resources per claim. :func:`to_answer` maps one resource:

=================  ===========================================================================
``outcome``        claim state
=================  ===========================================================================
``queued``         ``accepted`` (taken in, not adjudicated yet)
``complete``,      from the adjudication amounts (``total`` when given, else the sum over the
``partial``        items): benefit 0 -> ``denied``; benefit >= eligible (eligible defaults to
                   submitted) -> ``paid``; otherwise ``partially_paid``. A contractual write-off
                   (CO-45: eligible below submitted) paid in full is ``paid``.
``error``          ``rejected``, with each ``error.code`` as a reason
=================  ===========================================================================

Amounts follow the 835 balance: ``paid`` = benefit, ``patient_resp`` = the copay, deductible
and coinsurance categories (or PR-group reasons) when given, ``adjusted`` = submitted - paid -
patient_resp. Reasons: ``adjudication.reason`` codings in the CARC system
(https://x12.org/codes/claim-adjustment-reason-codes; a group prefix such as ``CO-45`` is split
into group and code) -> ``Reason("carc")``; RARC codings -> ``Reason("rarc")``; anything else
-> ``Reason("fhir")``. A reason on an ``eligible`` / ``benefit`` adjudication accounts for the
gap to the submitted amount (CO-45 on eligible 170 of 180: 10.00); on another category
(copay, deductible) for that category's amount. The payment date (else ``created``) is the answer's date.

``payer_claim_id`` is the RCM's id of *our Claim* (what a correction replaces with a new
version); the ClaimResponse id and version are in ``detail``. The fingerprint is the
ClaimResponse id + ``meta.versionId``: the same version read twice is one answer; an updated
ClaimResponse (a new version) is a new one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import requests

from connectors.rcm.base import TargetError
from core.answers import Answer, Reason
from core.model import MAX_MONEY, BadValue, read_decimal
from core.states import AnswerKind, ClaimState
from core.states import TargetErrorKind as Kind
from core.urls import same_origin

CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
RARC = "https://x12.org/codes/remittance-advice-remark-codes"
CARC_GROUPS = ("CO", "PR", "OA", "PI", "CR")
PATIENT_CATEGORIES = ("copay", "deductible", "coinsurance")

MAX_CLAIMS = 500  # claims asked about per call (the engine rotates through the rest)
CHUNK = 40  # claims per search request (an OR list in one URL)
PAGE_SIZE = 200  # _count per page
MAX_PAGES = 20  # pages followed per search
MAX_PER_CLAIM = 20  # ClaimResponses kept per claim (the newest by lastUpdated)
MAX_REASONS = 50  # reasons kept per answer
MAX_BODY = 20 * 1024 * 1024  # bytes per page
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[A-Za-z0-9\-.:_]{1,40}")

Request = Callable[..., requests.Response]  # FhirTarget._request(method, url, params=...)


def fetch(request: Request, base_url: str, claims: Sequence[tuple[str, dict[str, str]]], *,
          max_claims: int = MAX_CLAIMS) -> list[Answer]:
    """Answers for ``claims`` ((our claim id, the delivery's remote ids) — the Claim's FHIR id is
    ``remote_ids["Claim"]``). Claims without a usable Claim id are skipped. Raises
    :class:`TargetError` when the RCM cannot be read (nothing is half-applied: the caller
    applies the whole list or nothing)."""
    by_remote: dict[str, str] = {}
    for claim_id, remote in list(claims)[:max_claims]:
        rid = str((remote or {}).get("Claim", ""))
        if _ID.fullmatch(rid) and claim_id:
            by_remote[rid] = claim_id
    remote_ids = list(by_remote)
    found: dict[str, list[dict[str, Any]]] = {}
    for i in range(0, len(remote_ids), CHUNK):
        chunk = remote_ids[i:i + CHUNK]
        for res in _search(request, base_url, chunk):
            rid = _request_id(res)
            if rid in by_remote:
                found.setdefault(rid, []).append(res)
    answers: list[Answer] = []
    for rid, resources in found.items():
        resources.sort(key=lambda r: str((r.get("meta") or {}).get("lastUpdated", "")))
        for res in resources[-MAX_PER_CLAIM:]:
            ans = to_answer(res, by_remote[rid], rid)
            if ans is not None:
                answers.append(ans)
    return answers


def _search(request: Request, base_url: str, remote_ids: list[str]) -> list[dict[str, Any]]:
    url: str | None = f"{base_url}/ClaimResponse"
    params: dict[str, Any] | None = {"request": ",".join(f"Claim/{r}" for r in remote_ids), "_count": PAGE_SIZE}
    out: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        assert url is not None
        r = request("GET", url, params=params)
        if r.status_code != 200:
            raise _read_error(r)
        if len(r.content) > MAX_BODY:
            raise TargetError(f"the RCM answered a ClaimResponse search with more than {MAX_BODY // 2**20} MB",
                              kind=Kind.PROTOCOL)
        try:
            page = r.json()
        except ValueError:
            raise TargetError("the RCM answered a ClaimResponse search with something that is not JSON",
                              kind=Kind.PROTOCOL, retryable=True) from None
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise TargetError("the RCM answered a ClaimResponse search without a Bundle", kind=Kind.PROTOCOL,
                              retryable=True)
        for e in page.get("entry") or []:
            res = e.get("resource") if isinstance(e, dict) else None
            if isinstance(res, dict) and res.get("resourceType") == "ClaimResponse":
                out.append(res)
        url = next((lk.get("url") for lk in page.get("link") or []
                    if isinstance(lk, dict) and lk.get("relation") == "next"), None)
        if url is None:
            return out
        if not (isinstance(url, str) and same_origin(base_url, url)):
            raise TargetError("the RCM's next-page link points to another address; ChargeBridge sends its "
                              "token only to the configured RCM", kind=Kind.PROTOCOL)
        params = None
    raise TargetError(f"the RCM's ClaimResponse search ran past {MAX_PAGES} pages for {len(remote_ids)} claims; "
                      "ChargeBridge stops there (too many responses per claim?)", kind=Kind.PROTOCOL)


def _read_error(r: requests.Response) -> TargetError:
    code = r.status_code
    if code in (429, 503) or code >= 500:
        return TargetError(f"the RCM could not answer a ClaimResponse search ({code}); will retry",
                           kind=Kind.THROTTLED if code == 429 else Kind.SERVER)
    if code == 403:
        return TargetError("the RCM refused to show ClaimResponses (403); the RCM account may lack permission to "
                           "read them", kind=Kind.AUTH)
    return TargetError(f"the RCM answered {code} to a ClaimResponse search", kind=Kind.PROTOCOL)


def _request_id(res: dict[str, Any]) -> str:
    """``Claim/abc``, ``https://rcm/fhir/R4/Claim/abc`` or ``Claim/abc/_history/2`` -> ``abc``."""
    ref = str((res.get("request") or {}).get("reference", ""))
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Claim" else ""


# -- one resource ---------------------------------------------------------------------------------

def fingerprint(res: dict[str, Any]) -> str:
    version = str((res.get("meta") or {}).get("versionId", ""))
    return hashlib.sha256(f"ClaimResponse\x1f{res.get('id', '')}\x1f{version}".encode()).hexdigest()


def _money(v: Any) -> Decimal | None:
    value = (v or {}).get("value") if isinstance(v, dict) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        return read_decimal(value if isinstance(value, str) else str(value), limit=MAX_MONEY, places=4,
                            what="ClaimResponse amount")
    except BadValue:
        return None


def _codes(cc: Any) -> list[tuple[str, str, str]]:
    """(system, code, display) of a CodeableConcept's codings."""
    if not isinstance(cc, dict):
        return []
    out = []
    for c in (cc.get("coding") or [])[:10]:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            out.append((str(c.get("system", "")), c["code"].strip(), str(c.get("display") or cc.get("text") or "")))
    return out


def _category(adj: dict[str, Any]) -> str:
    return next((code for _, code, _ in _codes(adj.get("category"))), "")


def _adjudications(res: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The adjudication lists: the response's own, then one per item."""
    groups = [[a for a in (res.get("adjudication") or [])[:50] if isinstance(a, dict)]]
    for it in (res.get("item") or [])[:1000]:
        if isinstance(it, dict):
            groups.append([a for a in (it.get("adjudication") or [])[:50] if isinstance(a, dict)])
    return [g for g in groups if g]


def _totals(res: dict[str, Any], groups: list[list[dict[str, Any]]]) -> dict[str, Decimal]:
    """Category -> amount: ``total`` when the response gives it, else the items' sum."""
    out: dict[str, Decimal] = {}
    for t in res.get("total") or []:
        if isinstance(t, dict):
            amt = _money(t.get("amount"))
            if amt is not None and _category(t):
                out[_category(t)] = out.get(_category(t), Decimal(0)) + amt
    if out:
        return out
    for a in (a for g in groups for a in g):
        amt = _money(a.get("amount"))
        if amt is not None and _category(a):
            out[_category(a)] = out.get(_category(a), Decimal(0)) + amt
    return out


def _reason_amount(adj: dict[str, Any], submitted: Decimal | None) -> Decimal | None:
    """What a reason accounts for. On an ``eligible`` or ``benefit`` adjudication the reason
    explains the gap to the submitted amount (CO-45 on eligible 170 of 180 submitted: 10); on
    any other category (copay, deductible...) the category's own amount."""
    amt = _money(adj.get("amount"))
    if amt is not None and submitted is not None and _category(adj) in ("eligible", "benefit"):
        return max(submitted - amt, Decimal(0))
    return amt


def _reasons(groups: list[list[dict[str, Any]]]) -> list[Reason]:
    merged: dict[tuple[str, str, str], Reason] = {}
    for g in groups:
        submitted = next((_money(a.get("amount")) for a in g if _category(a) == "submitted"), None)
        for a in g:
            for system, raw, display in _codes(a.get("reason"))[:1]:
                if not _CODE.fullmatch(raw):
                    continue
                amt = _reason_amount(a, submitted)
                group, code = "", raw
                m = re.fullmatch(r"(CO|PR|OA|PI|CR)-?([A-Za-z0-9]{1,5})", raw)
                if system == CARC or (m and not system):
                    kind = "carc"
                    if m:
                        group, code = m.group(1), m.group(2)
                elif system == RARC:
                    kind = "rarc"
                else:
                    kind = "fhir"
                key = (kind, group, code)
                r = merged.get(key)
                if r is None:
                    merged[key] = Reason(kind, code, group=group, amount=f"{amt:.2f}" if amt is not None else "",
                                         text=display[:200] if kind == "fhir" else "")
                elif amt is not None:
                    r.amount = f"{Decimal(r.amount or 0) + amt:.2f}"
    return list(merged.values())[:MAX_REASONS]


def to_answer(res: dict[str, Any], claim_id: str, remote_id: str) -> Answer | None:
    """One ClaimResponse about our claim ``claim_id`` (the RCM's Claim ``remote_id``); None when
    it says nothing we can use (unknown outcome, no id)."""
    cr_id = str(res.get("id", ""))
    outcome = res.get("outcome")
    if not _ID.fullmatch(cr_id) or outcome not in ("queued", "complete", "partial", "error"):
        return None
    version = str((res.get("meta") or {}).get("versionId", ""))[:64]
    raw_payment = res.get("payment")
    payment: dict[str, Any] = raw_payment if isinstance(raw_payment, dict) else {}
    answered_on = str(payment.get("date") or res.get("created") or "")[:10]
    detail: dict[str, Any] = {"claim_response": cr_id, "version": version, "outcome": outcome,
                              "disposition": str(res.get("disposition") or "")[:200]}
    base: dict[str, Any] = {"kind": AnswerKind.CLAIM_RESPONSE, "fingerprint": fingerprint(res),
                            "claim_ref": claim_id, "payer_claim_id": remote_id, "answered_on": answered_on,
                            "detail": detail}
    if outcome == "queued":
        return Answer(state=ClaimState.ACCEPTED, **base)
    if outcome == "error":
        reasons = []
        for err in (res.get("error") or [])[:MAX_REASONS]:
            for system, code, display in _codes((err or {}).get("code"))[:1]:
                if _CODE.fullmatch(code):
                    reasons.append(Reason("carc" if system == CARC else "fhir", code, text=display[:200]))
        return Answer(state=ClaimState.REJECTED, reasons=reasons, **base)
    groups = _adjudications(res)
    totals = _totals(res, groups)
    reasons = _reasons(groups)
    submitted = totals.get("submitted", Decimal(0))
    benefit = totals.get("benefit")
    if benefit is None:
        benefit = _money(payment.get("amount")) or Decimal(0)
    eligible = totals.get("eligible", submitted)
    patient = sum((totals[c] for c in PATIENT_CATEGORIES if c in totals), Decimal(0))
    if not patient:
        patient = sum((Decimal(r.amount) for r in reasons if r.group == "PR" and r.amount), Decimal(0))
    if benefit <= 0:
        state = ClaimState.DENIED
    elif benefit >= eligible:
        state = ClaimState.PAID
    else:
        state = ClaimState.PARTIALLY_PAID
    adjusted = max(submitted - benefit - patient, Decimal(0))
    detail["amounts"] = {k: f"{v:.2f}" for k, v in sorted(totals.items())}
    return Answer(state=state, paid=f"{benefit:.2f}", adjusted=f"{adjusted:.2f}", patient_resp=f"{patient:.2f}",
                  reasons=reasons, **base)
