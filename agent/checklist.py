"""The first-week checklist (H15, issue 12 item 6): what a practice should see happen in its first
days, each item ticked from engine state alone — never from a box a person ticks.

Items (``key``: done when …):

* ``source``: every configured EHR folder / database has delivered a file or row (go-live's check);
* ``first_claim``: sync delivered a first claim to the RCM (a claim row exists: claims are born at
  delivery) — dry runs in test mode do not count;
* ``manager``: a manager (or admin) account exists (go-live's check);
* ``backup``: nightly backups are configured with a key passphrase (go-live's check);
* ``rcm_test``: an RCM connection test passed — run from the checklist itself (``POST
  /checklist/rcm-test``, which records the outcome in the store), or proven by a real delivery;
* ``review``: the review queue has been worked — a coder decided at least one encounter, or none
  ever needed review;
* ``reconcile``: a reconciliation with the RCM has run (``reconcile.run`` event).

Each item says what to do next while it is open. Once every item is done a manager may dismiss
the checklist; the dismissal is kept per home (a store setting) and audited.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from agent import audit, golive
from agent.config import Config
from agent.store import Store, now
from core.errors import Conflict

DISMISSED = "checklist.dismissed"  # store setting: when (and by whom) the checklist was dismissed
RCM_TEST = "checklist.rcm_test"  # store setting: the last connection test run from the checklist


@dataclass
class Item:
    key: str
    ok: bool
    title: str
    next: str = ""  # what to do while it is not done
    page: str = ""  # the window's page where it is done ("" none)


def _from_golive(item: golive.Item, page: str) -> Item:
    return Item(item.key if item.key != "folders" else "source", item.ok, item.title, "" if item.ok else item.fix,
                page)


_REAL = "coalesce(json_extract(control, '$.Claim'), '') NOT LIKE 'dryrun-%'"  # test mode's are made up


def _first_claim(store: Store) -> Item:
    n = int(store.conn.execute(f"SELECT count(*) FROM claims WHERE {_REAL}").fetchone()[0])
    if n:
        return Item("first_claim", True, f"the first claim reached the billing system ({n:,} so far)", page="claims")
    return Item("first_claim", False, "no claim has been delivered to the billing system yet",
                "when an encounter is ready, press Sync now on the Status page (or wait for the next scheduled "
                "run inside business hours) and check it under Claims")


def _rcm_test(store: Store, cfg: Config) -> Item:
    if not cfg.rcm.type:
        return Item("rcm_test", False, "no billing system (RCM) is set up",
                    "add its address and secret in Settings → Billing system, then test the connection", "settings")
    raw = store.setting(RCM_TEST)
    last = json.loads(raw) if raw else {}
    if last.get("ok"):
        return Item("rcm_test", True, f"the RCM connection test passed on {str(last.get('at', ''))[:10]}")
    delivered = store.conn.execute(f"SELECT max(first_submitted_at) FROM claims WHERE {_REAL}").fetchone()[0]
    if delivered:
        return Item("rcm_test", True, f"the RCM took a delivery ({str(delivered)[:10]}): the connection works")
    if last:
        return Item("rcm_test", False, f"the last RCM connection test failed: {last.get('detail', '')}",
                    "fix the RCM settings or secret in Settings → Billing system, then press Test connection here "
                    "again", "settings")
    return Item("rcm_test", False, "the RCM connection has not been tested yet",
                "press Test connection here (or in Settings → Billing system)")


def _review(store: Store) -> Item:
    decided = int(store.conn.execute("SELECT count(*) FROM reviews").fetchone()[0])
    if decided:
        return Item("review", True, f"the review queue is being worked ({decided:,} decision(s) so far)",
                    page="review")
    waiting = int(store.conn.execute("SELECT count(*) FROM encounters WHERE state = 'needs_review'").fetchone()[0])
    if not waiting:
        seen = store.conn.execute("SELECT 1 FROM encounters WHERE kind = 'charge' LIMIT 1").fetchone()
        if seen:
            return Item("review", True, "no encounter has needed review so far", page="review")
        return Item("review", False, "no encounter has arrived yet, so the review queue has not been tried",
                    "once the EHR exports visits, open the Review page and see what the rules held", "review")
    return Item("review", False, f"{waiting:,} encounter(s) wait in the review queue and none was decided yet",
                "open the Review page: approve, edit or reject what the rules held (coder role)", "review")


def _reconcile(store: Store) -> Item:
    last = store.conn.execute("SELECT max(at) FROM events WHERE kind = 'reconcile.run'").fetchone()[0]
    if last:
        return Item("reconcile", True, f"the EHR and the RCM were compared (last on {str(last)[:10]})",
                    page="mismatches")
    return Item("reconcile", False, "the EHR's charges have not been compared with the RCM's yet",
                "it runs after each sync that delivers something; or press Reconcile now on the Mismatches page",
                "mismatches")


def items(store: Store, cfg: Config) -> list[Item]:
    """Every item, in the order a first week goes."""
    return [
        _from_golive(golive._sources(store, cfg), "settings"),
        _rcm_test(store, cfg),
        _from_golive(golive._manager(store), "settings"),
        _from_golive(golive._backup(store, cfg), "settings"),
        _review(store),
        _first_claim(store),
        _reconcile(store),
    ]


def view(store: Store, cfg: Config) -> dict[str, Any]:
    """``{items, done, total, all_done, dismissed, dismissed_at}`` (:class:`core.schemas.Checklist`)."""
    got = items(store, cfg)
    raw = store.setting(DISMISSED)
    dismissed = json.loads(raw) if raw else {}
    done = sum(i.ok for i in got)
    return {"items": [asdict(i) for i in got], "done": done, "total": len(got), "all_done": done == len(got),
            "dismissed": bool(dismissed), "dismissed_at": str(dismissed.get("at", ""))}


def record_rcm_test(store: Store, result: dict[str, Any]) -> None:
    """Keep the outcome of a connection test run from the checklist (ok, a short detail, when)."""
    with store.tx():
        store.set_setting(RCM_TEST, json.dumps({"ok": bool(result.get("ok")), "at": now(),
                                                "detail": str(result.get("detail", ""))[:300]}))


def dismiss(store: Store, cfg: Config, *, actor: str) -> dict[str, Any]:
    """Hide the checklist for this home — only once every item is done (audited)."""
    state = view(store, cfg)
    if not state["all_done"]:
        open_items = [i["key"] for i in state["items"] if not i["ok"]]
        raise Conflict(f"the first-week checklist still has {len(open_items)} open item(s): {', '.join(open_items)}",
                       "finish them (each says what to do next); the checklist can be dismissed once all are done",
                       key="checklist")
    if not state["dismissed"]:
        with store.tx():
            store.set_setting(DISMISSED, json.dumps({"at": now(), "by": actor}))
            audit.record(store, actor=actor, action="checklist.dismiss", target="checklist",
                         detail={"items": state["total"]})
    return view(store, cfg)
