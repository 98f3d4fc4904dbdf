"""Read what the RCM decided about our open claims and apply it to the claim lifecycle.

Called after each sync run (agent/engine.py) and each reconciliation run (agent/reconcile.py).
Only targets that can answer (an optional ``fetch_outcomes`` beside the Target protocol: the
FHIR target reads ClaimResponses) are asked; the X12 target's answers arrive as files instead.

Bounded: at most :data:`MAX_CLAIMS` open claims per run. A rotating cursor (setting
``outcomes.cursor``) makes the next run start after the last claim asked, so a practice with
more open claims than that still has every claim looked at within a few runs. A failure to
read the RCM is logged (no PHI: counts and the error's own text) and never fails the sync or
the reconciliation that called it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from agent import claims
from agent.store import Store
from connectors.rcm.base import TargetError
from core.answers import Answer
from core.states import ClaimState

log = logging.getLogger("chargebridge.outcomes")

MAX_CLAIMS = 500
CURSOR = "outcomes.cursor"

FetchOutcomes = Callable[[Sequence[tuple[str, dict[str, str]]]], list[Answer]]


def can_read(target: Any) -> bool:
    return callable(getattr(target, "fetch_outcomes", None))


def due(store: Store, target_name: str, *, limit: int = MAX_CLAIMS) -> list[tuple[str, dict[str, str]]]:
    """Up to ``limit`` open claims of ``target_name``, starting after the cursor and wrapping
    around; moves the cursor to the last one returned."""
    sql = ("SELECT id, claim_id, control FROM claims WHERE target = ? AND state IN (?, ?) AND id > ? "
           "ORDER BY id LIMIT ?")
    raw = store.setting(CURSOR, "0")
    after = int(raw) if raw.isdigit() else 0
    args = (target_name, ClaimState.SUBMITTED, ClaimState.ACCEPTED)
    rows = store.conn.execute(sql, (*args, after, limit)).fetchall()
    if len(rows) < limit and after:
        seen = {r[0] for r in rows}
        rows += [r for r in store.conn.execute(sql, (*args, 0, limit - len(rows))).fetchall() if r[0] not in seen]
    with store.tx():
        store.set_setting(CURSOR, str(rows[-1][0]) if rows and len(rows) >= limit else "0")
    return [(str(c), json.loads(x)) for _, c, x in rows]


def read(store: Store, target: Any, *, limit: int = MAX_CLAIMS) -> claims.ApplyResult | None:
    """Ask ``target`` about its open claims and apply the answers; None when the target cannot
    answer, has nothing open, or could not be read."""
    if not can_read(target):
        return None
    todo = due(store, str(target.name), limit=limit)
    if not todo:
        return None
    try:
        answers = target.fetch_outcomes(todo)
        res = claims.apply_answers(store, answers)
    except TargetError as exc:
        log.warning("claim outcomes could not be read from the RCM for %d open claims: %s", len(todo), exc)
        return None
    except Exception as exc:  # the type only: an exception text could quote what the RCM sent
        log.error("claim outcomes failed for %d open claims: %s", len(todo), type(exc).__name__)
        return None
    if res.matched or res.unmatched:
        log.info("claim outcomes: asked about %d open claims, %d new answers, %d duplicates, %d claims changed",
                 len(todo), res.matched + res.unmatched, res.duplicates, len(res.changed))
    return res
