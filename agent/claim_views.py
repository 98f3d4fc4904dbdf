"""Claims as the API, the CLI and the window show them: pages of :mod:`agent.claims` rows with
reason descriptions and whether a rejected / denied claim waits in the mismatch queue.

Reason descriptions come from the CARC / RARC code lists when the X12 connector ships them
(``connectors.rcm.x12`` ``describe(kind, code)``); until then a reason shows the text its answer
carried (a 277CA / FHIR error display), or none.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from typing import Any

from agent import claims
from agent.store import Store
from core.states import FindingKind, FindingStatus

_DESCRIBERS = ("connectors.rcm.x12.codes", "connectors.rcm.x12.answers")


@cache
def describer() -> claims.Describe | None:
    """``describe(kind, code) -> text`` from the X12 code lists, when present."""
    for name in _DESCRIBERS:
        try:
            fn = getattr(importlib.import_module(name), "describe", None)
        except ImportError:
            continue
        if callable(fn):
            return fn
    return None


def describe() -> claims.Describe | None:
    fn = describer()
    if fn is None:
        return None

    def safe(kind: str, code: str) -> str:
        try:
            return str(fn(kind, code) or "")
        except Exception:  # a code list problem must not hide the claim
            return ""
    return safe


def _queue(store: Store, claim_ids: list[str]) -> dict[str, int]:
    """claim id -> its open claim_rejected / claim_denied finding."""
    if not claim_ids:
        return {}
    marks = ",".join("?" * len(claim_ids))
    rows = store.conn.execute(
        f"SELECT json_extract(remote, '$.claim_id'), id FROM findings WHERE kind IN (?, ?) AND status IN (?, ?) "
        f"AND json_extract(remote, '$.claim_id') IN ({marks}) ORDER BY id",
        (FindingKind.CLAIM_REJECTED, FindingKind.CLAIM_DENIED, FindingStatus.OPEN, FindingStatus.REOPENED,
         *claim_ids)).fetchall()
    return {str(c): int(i) for c, i in rows}


def mark(store: Store, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    queue = _queue(store, [it["claim_id"] for it in items])
    for it in items:
        it["control"] = {str(k): str(v) for k, v in (it.get("control") or {}).items()}
        it["finding_id"] = queue.get(it["claim_id"])
        it["in_mismatch_queue"] = it["finding_id"] is not None
    return items


def page(store: Store, *, state: str | None, page: int, page_size: int) -> dict[str, Any]:
    """``{total, page, page_size, items}``, newest first."""
    total, items = claims.list_claims(store, state=state, limit=page_size, offset=(page - 1) * page_size,
                                      describe=describe())
    return {"total": total, "page": page, "page_size": page_size, "items": mark(store, items)}


def detail(store: Store, claim_id: str) -> dict[str, Any] | None:
    """One claim with every answer it received, or None."""
    d = claims.get_claim(store, claim_id, describe=describe())
    if d is None:
        return None
    fn = describe()
    for a in d["answers"]:
        for r in (a.get("detail") or {}).get("reasons") or []:
            if fn and not r.get("text"):
                r["text"] = fn(r.get("kind", ""), r.get("code", ""))
    return mark(store, [d])[0]


def unmatched_page(store: Store, *, page: int, page_size: int) -> dict[str, Any]:
    total, items = claims.unmatched(store, limit=page_size, offset=(page - 1) * page_size)
    return {"total": total, "page": page, "page_size": page_size, "items": items}


def reason_text(r: dict[str, Any]) -> str:
    """``CO-45 $50.00 Charge exceeds fee schedule`` — one reason for people (the description
    from the code lists when the answer carried none)."""
    code = f"{r.get('group')}-{r.get('code')}" if r.get("group") else str(r.get("code", ""))
    kind = str(r.get("kind", "")).upper()
    head = f"{kind} {code}" if kind and kind not in ("CARC",) else code
    amount = f" ${r['amount']}" if r.get("amount") else ""
    fn = describe()
    desc = r.get("text") or (fn(str(r.get("kind", "")), str(r.get("code", ""))) if fn else "")
    text = f" {desc}" if desc else ""
    return f"{head}{amount}{text}".strip()


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False)
