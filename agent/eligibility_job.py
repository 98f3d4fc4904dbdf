"""Eligibility runs with everything wired: the keyring's secret, the rules re-run, the engine's
evening job. The CLI (agent/cli_eligibility.py), the API (agent/api/eligibility.py) and the
engine (agent/engine.py) call this; agent/eligibility.py stays free of config and rules.

**The evening job.** Every :data:`TICK_MINUTES` the engine checks: on a clinic day
(``[x12] eligibility_days``, default mon-fri), once the local time is past ``[x12]
eligibility_at`` (default 18:00) and today's run has not happened, it asks about the *next*
clinic day's visits — Friday evening asks about Monday; Saturday and Sunday evenings ask
nothing (a visit booked over the weekend for Monday: ``chargebridge eligibility`` on Monday
morning). A machine asleep at 18:00 runs it when it wakes, the same evening. A run that fails
(the clearinghouse unreachable) is tried again at the next tick.

Answers: with ``[rcm] type = "x12"`` the sync's inbound poll reads 271s with the claims answers
(agent/x12_inbound.py routes them here); otherwise each tick reads them while visits wait for
an answer. Either way :func:`after_answers` then re-runs the charge rules for the patients who
got one, so ``coverage.inactive_on_dos`` sees an answer that came after the charge.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import date, datetime
from typing import Any

from agent import eligibility
from agent.store import Store, now
from core.errors import ChargeBridgeError
from core.paths import Paths
from core.states import EligibilityStatus

log = logging.getLogger("chargebridge.eligibility")

TICK_MINUTES = 10
DONE = "eligibility.evening_done"  # the local date of the last evening run that went through
LAST = "eligibility.last"  # the last run's outcome (counts, error title), for status
WATERMARK = "eligibility.rules_event"  # the last eligibility answer event the rules have seen
_RUN = threading.Lock()  # one run at a time (the evening job, the API, the CLI in-process)


def _secret(paths: Paths) -> str:
    from agent import keys
    from core.secrets import RCM_SECRET

    return keys.get_secret(paths, RCM_SECRET) or ""  # the clearinghouse's SFTP password / key passphrase


def after_answers(store: Store, cfg: Any, *, actor: str = "eligibility") -> dict[str, int] | None:
    """Re-run the rules for the patients whose eligibility answers arrived since the last call
    (by the ``eligibility.<status>`` events), so a late answer updates encounters not yet sent.
    None when there was nothing new (or the rule is off)."""
    from agent.rules import RuleSet
    from agent.rules.apply import rerun
    from agent.rules.coverage import RULE_ID

    last = int(store.setting(WATERMARK, "0") or 0)
    rows = store.conn.execute(
        "SELECT ev.id, e.mrn FROM events ev JOIN encounters e ON e.id = ev.encounter_id "
        "WHERE ev.id > ? AND ev.kind IN (?, ?, ?) ORDER BY ev.id",
        (last, *(f"eligibility.{s}" for s in (EligibilityStatus.ACTIVE, EligibilityStatus.INACTIVE,
                                             EligibilityStatus.UNKNOWN)))).fetchall()
    if not rows:
        return None
    mrns = sorted({str(m) for _, m in rows if m})
    rules = RuleSet.for_config(store, cfg.rules)
    res = None
    if rules is not None and RULE_ID not in rules.disabled and mrns:
        res = rerun(store, rules, actor=actor, mrns=mrns)
    with store.tx():
        store.set_setting(WATERMARK, str(max(int(i) for i, _ in rows)))
    if res is None:
        return None
    log.info("eligibility answers for %d patients: rules re-run, %d changed", len(mrns), res.changed)
    return res.to_dict()


def run_check(store: Store, cfg: Any, paths: Paths, day: str | date, *, ask_payer: bool = True,
              actor: str = "cli", when: datetime | None = None) -> dict[str, Any]:
    """Read the 271s waiting, send the 270 for ``day`` (unless ``ask_payer`` is false), re-run
    the rules for the answers; the outcome (counts only) goes to the audit trail and status."""
    from agent import audit

    with _RUN:
        out = eligibility.check_day(store, cfg, _secret(paths), day, ask_payer=ask_payer, when=when)
        out["rules"] = after_answers(store, cfg)
    summary = {"day": out["day"], "asked": out["asked"]["asked"], "file": out["asked"]["file"],
               "answers": out["read"]["matched"]}
    with store.tx():
        store.set_setting(LAST, json.dumps({"at": now(), "ok": True, **summary}))
        audit.record(store, actor=actor, action="eligibility.check", target=f"eligibility:{out['day']}",
                     detail=summary)
    return out


def _waiting(store: Store) -> bool:
    try:
        row = store.conn.execute("SELECT 1 FROM eligibility WHERE status = ? AND dos >= ? LIMIT 1",
                                 (EligibilityStatus.PENDING, date.today().isoformat())).fetchone()
    except Exception:  # a store from before migration 12
        return False
    return row is not None


def tick(engine: Any, *, at: datetime | None = None) -> dict[str, Any] | None:
    """One scheduler tick (see the module text). Returns the run's outcome when one ran."""
    from agent.config import parse_clock
    from agent.schedule import parse_days

    cfg = engine.config
    x12 = cfg.x12
    if not x12.sender_id or not x12.outbound:
        return None  # no clearinghouse channel configured
    store = engine.store()
    local = (at or datetime.now().astimezone())
    today = local.date()
    clock = parse_clock(x12.eligibility_at) if x12.eligibility_at else None
    due = (clock is not None and (local.hour, local.minute) >= clock
           and store.setting(DONE) != today.isoformat())
    day = eligibility.day_to_ask(today, parse_days(x12.eligibility_days)) if due else None
    if day is None:
        if cfg.rcm.type != "x12" and x12.inbound and _waiting(store):
            with _RUN:
                try:
                    eligibility.check_day(store, cfg, _secret(engine.paths), today, ask_payer=False)
                except ChargeBridgeError as exc:
                    log.warning("eligibility answers could not be read: %s", exc.title)
                after_answers(store, cfg)
        return None
    try:
        out = run_check(store, cfg, engine.paths, day, actor="engine", when=at)
    except ChargeBridgeError as exc:
        log.warning("eligibility run for %s failed: %s", day.isoformat(), exc.title)
        with store.tx():
            store.set_setting(LAST, json.dumps({"at": now(), "ok": False, "day": day.isoformat(), "error": exc.title,
                                                "fix": exc.fix}))
        return None
    with store.tx():
        store.set_setting(DONE, today.isoformat())
    log.info("eligibility: evening run for %s asked about %d visits", out["day"], out["asked"]["asked"])
    return out


def schedule(engine: Any, sched: Any) -> None:
    """Add the tick to the engine's scheduler (its single worker, like sync)."""
    sched.add_job(lambda: tick(engine), "interval", minutes=TICK_MINUTES, id="eligibility")
