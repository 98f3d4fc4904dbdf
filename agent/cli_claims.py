"""``chargebridge claims``: the claim lifecycle on the command line (H4).

``claims [--state S] [--reason CODE] [--age BUCKET] [--lag BUCKET] [--from D] [--to D] [--provider NPI]
[--payer ID] [--limit N --offset K] [--json]`` lists claims (newest first), narrowed like the
dashboard's figures (H15: the same conditions as ``GET /claims``);
``claims show ID [--json]`` one claim with every answer it received; ``claims unmatched``
the answers that matched no claim. With an engine running they go through its API (this
machine's saved token; the role is checked there: the list for every role, ``show`` and
``unmatched`` for coder and up); without one they read the store directly.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import date
from typing import Any
from urllib.parse import quote

from agent.cli_context import Context
from agent.cli_engine import _api, _client
from agent.kpi import AR_BUCKETS, LAG_BUCKETS, MAX_FILTER
from core.errors import ChargeBridgeError, NotFound
from core.states import ClaimState

REASON_RE = re.compile(r"([A-Z]{1,3}-)?[A-Za-z0-9.:]{1,20}")  # as GET /claims checks it
API_PAGE = 500  # the API's largest page; the CLI asks page by page up to --limit


def _page_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError("must be 1-100000")
    return n


def _offset(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _reason(text: str) -> str:
    if not REASON_RE.fullmatch(text):
        raise argparse.ArgumentTypeError("a reason code like 16 or CO-16")
    return text


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a date as YYYY-MM-DD") from None


def _who(text: str) -> str:
    text = text.strip()
    if not 1 <= len(text) <= MAX_FILTER:
        raise argparse.ArgumentTypeError(f"1-{MAX_FILTER} characters")
    return text


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The list's filters as GET /claims names them (only those given)."""
    out: dict[str, Any] = {"state": args.state, "reason": args.reason, "age": args.age, "lag": args.lag,
                           "from": args.dos_from.isoformat() if args.dos_from else None,
                           "to": args.dos_to.isoformat() if args.dos_to else None,
                           "provider": args.provider, "payer": args.payer}
    return {k: v for k, v in out.items() if v}


def register(sub: Any) -> None:
    s = sub.add_parser("claims", help="claims at the payer: state, amounts, reasons; show ID; unmatched")
    s.add_argument("action", nargs="?", choices=["list", "show", "unmatched"], default="list",
                   help="list (default), show ID, or unmatched (answers that matched no claim)")
    s.add_argument("id", nargs="?", help="the claim id for show (CLM01 / FHIR Claim identifier)")
    s.add_argument("--state", choices=[v.value for v in ClaimState])
    s.add_argument("--reason", type=_reason, help="claims whose reasons carry this code: 16, or CO-16 with its group")
    s.add_argument("--age", choices=[b[2] for b in AR_BUCKETS],
                   help="open claims of this A/R bucket (days since first submission)")
    s.add_argument("--lag", choices=[b[2] for b in LAG_BUCKETS],
                   help="claims of this charge-lag bucket (days from service to delivery)")
    s.add_argument("--from", dest="dos_from", type=_day, metavar="YYYY-MM-DD", help="first date of service")
    s.add_argument("--to", dest="dos_to", type=_day, metavar="YYYY-MM-DD", help="last date of service (included)")
    s.add_argument("--provider", type=_who, metavar="NPI", help="only this rendering NPI's claims")
    s.add_argument("--payer", type=_who, metavar="ID", help="only this payer's claims")
    s.add_argument("--limit", type=_page_size, default=1000, help="claims per page (1-100000, default 1000)")
    s.add_argument("--offset", type=_offset, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_claims)


def _fetch_pages(ctx: Context, path: str, params: dict[str, Any], limit: int, offset: int) -> tuple[int, list[Any]]:
    """(total, items[offset:offset+limit]) through the API, a page of at most 500 at a time."""
    client = _client(ctx)
    assert client is not None
    items: list[Any] = []
    total = 0
    pos = offset
    while len(items) < limit:
        size = API_PAGE
        page_no, skip = divmod(pos, size)
        out = _api(ctx, client, "GET", path, params={**params, "page": page_no + 1, "page_size": size})
        total = int(out["total"])
        got = out["items"][skip:skip + (limit - len(items))]
        items += got
        pos += len(got)
        if not got or pos >= total:
            break
    return total, items


def _list(ctx: Context, args: argparse.Namespace, unmatched: bool) -> tuple[int, list[dict[str, Any]]]:
    if _client(ctx) is not None:
        path = "/api/v1/claims/unmatched" if unmatched else "/api/v1/claims"
        params = _filters(args) if not unmatched else {}
        return _fetch_pages(ctx, path, params, args.limit, args.offset)
    from agent import claim_filters, claim_views, claims

    store = ctx.open_store(create=False)
    try:
        if unmatched:
            return claims.unmatched(store, limit=args.limit, offset=args.offset)
        total, items = claims.list_claims(store, state=args.state, limit=args.limit, offset=args.offset,
                                          describe=claim_views.describe(), reason=args.reason or "",
                                          **claim_filters.bucket_kwargs(age=args.age or "", lag=args.lag or ""),
                                          dos_from=args.dos_from,
                                          dos_to=args.dos_to, provider=args.provider or "",
                                          payer=args.payer or "")
        return total, claim_views.mark(store, items)
    finally:
        store.close()


def _show(ctx: Context, claim_id: str) -> dict[str, Any]:
    client = _client(ctx)
    if client is not None:
        out: dict[str, Any] = _api(ctx, client, "GET", f"/api/v1/claims/{quote(claim_id, safe='')}")
        return out
    from agent import claim_views

    store = ctx.open_store(create=False)
    try:
        d = claim_views.detail(store, claim_id)
    finally:
        store.close()
    if d is None:
        raise NotFound(f"there is no claim {claim_id!r}", "list the claims with: chargebridge claims")
    return d


def _money(v: Any) -> str:
    return f"${v}" if v not in (None, "") else "-"


def _print_claim(c: dict[str, Any], *, full: bool) -> None:
    from agent.claim_views import reason_text

    control = " ".join(f"{k}={v}" for k, v in sorted((c.get("control") or {}).items()))
    queue = f"  (in the mismatch queue: #{c['finding_id']})" if c.get("in_mismatch_queue") else ""
    print(f"{c['claim_id']}  {c['state']:<14} encounter {c.get('encounter_id') or '-'}  dos {c.get('dos') or '-'}  "
          f"{c.get('target', '')}{queue}")
    print(f"    billed {_money(c.get('billed'))}  paid {_money(c.get('paid'))}  adjusted {_money(c.get('adjusted'))}  "
          f"patient {_money(c.get('patient_resp'))}"
          + (f"  payer claim {c['payer_claim_id']}" if c.get("payer_claim_id") else ""))
    dates = [f"submitted {c.get('submitted_at', '')[:10]}"]
    if c.get("answered_at"):
        dates.append(f"answered {c['answered_at'][:10]}")
    if c.get("adjudicated_on"):
        dates.append(f"adjudicated {c['adjudicated_on'][:10]}")
    if int(c.get("submissions") or 1) > 1:
        dates.append(f"{c['submissions']} submissions")
    print(f"    {'  '.join(dates)}" + (f"  control {control}" if control else ""))
    for r in c.get("reasons") or []:
        print(f"    reason {reason_text(r)}")
    if full:
        answers = c.get("answers") or []
        print(f"    answers ({len(answers)}):" if answers else "    no answers yet")
        for a in answers:
            det = a.get("detail") or {}
            amounts = "  ".join(f"{k} ${det[k]}" for k in ("paid", "adjusted", "patient_resp") if det.get(k))
            print(f"      {a.get('answered_on') or a.get('received_at', '')[:10]}  {a['kind']:<13} "
                  f"{a.get('state') or '(no state)'}  {amounts}".rstrip())
            for r in det.get("reasons") or []:
                print(f"          {reason_text(r)}")


def cmd_claims(ctx: Context, args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.id:
            raise ChargeBridgeError("claims show needs a claim id", "chargebridge claims show CLAIM_ID", key="id")
        d = _show(ctx, args.id)
        if args.json:
            print(json.dumps(d, indent=1))
        else:
            _print_claim(d, full=True)
        return 0
    unmatched = args.action == "unmatched"
    total, items = _list(ctx, args, unmatched)
    if args.json:
        print(json.dumps({"total": total, "offset": args.offset, "items": items}, indent=1))
        return 0
    if unmatched:
        if not items:
            print("no unmatched answers: every answer found its claim")
        for a in items:
            det = a.get("detail") or {}
            print(f"{a['id']:>5}  {a['kind']:<13} ref {a.get('claim_ref') or '-'}  {a.get('state') or '(no state)'}  "
                  f"{a.get('answered_on') or a.get('received_at', '')[:10]}"
                  + (f"  paid ${det['paid']}" if det.get("paid") else ""))
    else:
        if not items:
            given = _filters(args)
            print("no claims" + (" matching " + " ".join(f"--{k} {v}" for k, v in given.items()) if given else "")
                  + " — claims appear when sync delivers encounters")
        for c in items:
            _print_claim(c, full=False)
    shown_to = args.offset + len(items)
    if shown_to < total:
        print(f"... {total - shown_to} more: --offset {shown_to}")
    return 0
