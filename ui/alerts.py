"""Active alerts as the tray and the Status page present them (agent/alerts.py raises them).

The engine's ``/api/v1/status`` carries the alerts holding now as ``alerts`` (core.schemas.AlertItem:
``kind``, ``title``, ``fix``, ``since``…). Their texts hold counts, ages and source names only —
never patient data — and nothing here adds any.

The engine's state machine does not look at alerts; the clients do, in one place (here), so the
tray icon and the Status page agree: while an alert is active, an engine that is otherwise
``idle`` or ``syncing`` is *presented* as ``attention`` (amber). ``paused`` keeps its own icon (a
person chose it, and the icon must keep saying so) and ``error`` stays red.
"""

from __future__ import annotations

from typing import Any

from core.states import EngineState

_ESCALATE = (EngineState.IDLE, EngineState.SYNCING)
TITLE_MAX = 90  # one tooltip line


def active_alerts(status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The status payload's alerts that are well formed (a kind and a title), in engine order."""
    out = []
    for a in (status or {}).get("alerts") or []:
        if isinstance(a, dict) and a.get("kind") and a.get("title"):
            out.append(a)
    return out


def alert_kinds(status: dict[str, Any] | None) -> set[str]:
    return {str(a["kind"]) for a in active_alerts(status)}


def presented_state(state: EngineState, alerts: list[dict[str, Any]]) -> EngineState:
    """The state to show: ``attention`` for an idle/syncing engine while an alert is active."""
    return EngineState.ATTENTION if alerts and state in _ESCALATE else state


def _short(text: str, n: int = TITLE_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def alert_line(alerts: list[dict[str, Any]]) -> str:
    """One tooltip line: ``1 alert: no export has arrived …``; ``3 alerts: <first> (+2 more)``."""
    if not alerts:
        return ""
    n = len(alerts)
    head = f"{n} alert{'s' if n != 1 else ''}: {_short(alerts[0]['title'])}"
    return head + (f" (+{n - 1} more)" if n > 1 else "")


def notification(alerts: list[dict[str, Any]]) -> tuple[str, str]:
    """Title and body of the tray notification for these (newly) active alerts."""
    if len(alerts) == 1:
        a = alerts[0]
        fix = _short(str(a.get("fix") or ""), 200)
        body = _short(a["title"], 160)
        body = body[:1].upper() + body[1:] + "."
        return "ChargeBridge: alert", body + (f" What to do: {fix}." if fix else "")
    titles = "; ".join(_short(a["title"], 70) for a in alerts[:3])
    more = f" (+{len(alerts) - 3} more)" if len(alerts) > 3 else ""
    return f"ChargeBridge: {len(alerts)} alerts", f"{titles}{more}. Open ChargeBridge for what to do."
