"""KPIs: is the practice getting better? Computed in SQL over the claim lifecycle and the encounters.

Every KPI is computed for a window of **dates of service** (``start`` … ``end``, both included),
overall, per provider (rendering NPI) or payer (``by``), or as a series per day / week / month.
The formulas (also in docs/kpi.md, and each KPI's ``formula`` in :data:`agent.kpi_config.KPIS`):

* **clean-claim rate** = answered claims (any state but ``submitted``) that were submitted once,
  are ``accepted`` / ``paid`` / ``partially_paid``, and whose encounter has no review decision
  and no edit (``encounter.edited`` / ``encounter.accepted_rcm`` events) ÷ answered claims.
* **first-pass acceptance** = answered claims submitted once and not ``rejected`` ÷ answered claims.
* **denial rate** = ``denied`` ÷ adjudicated (``paid`` + ``partially_paid`` + ``denied``); the
  **dollar** rate uses billed amounts; **denied dollars** is the billed total of denied claims.
* **top denial reasons** = the reasons (CARC, FHIR codes) on denied claims, by how many claims
  carry them; the amount is the reason's own amount, or the claim's billed amount without one.
* **days in A/R** = average days from first submission to ``adjudicated_on`` (closed claims) or
  to today (open claims: ``submitted`` / ``accepted``); rejected claims never reached the payer's
  books and are left out. **A/R buckets** (0–30, 31–60, 61–90, 90+) age the *open* claims.
* **charge lag** = average days from date of service to first delivery (the claim's birth);
  an average over sums, so a delivery dated before its service (bad data) lowers it;
  the histogram buckets are 0–1, 2–3, 4–7, 8–14, 15–30, 31+ days.
* **missed-charge rate** = expected visits (SIU, ``kind = expected``) at least
  ``[goals] missed_charge_days`` old with no charge encounter for the same MRN and date ÷
  expected visits at least that old.
* **auto-capture rate** = charge encounters (voided ones left out) that are ``ready`` with no
  review decision and no edit ÷ charge encounters; **touch rate** = those a person reviewed,
  edited or took the RCM's values for ÷ charge encounters (an untouched encounter still waiting
  for review is neither).
* **mismatch resolution time** = average hours from ``first_seen`` to ``resolved_at`` of
  resolved / ignored findings; **open mismatches** counts open + reopened ones.
* **sync health** = sync runs (``sync.run`` events) that ended without an error ÷ sync runs,
  windowed by the day of the run (not a date of service), with the failed runs counted.

Claims are kept when retention prunes old encounters (their ``encounter_id`` becomes NULL), so
the claim KPIs of old periods survive; the encounter KPIs cover what is still stored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from agent.kpi_config import KPIS, GoalsConfig
from agent.store import Store
from core.errors import ChargeBridgeError
from core.states import GoalDirection, GoalStatus, KpiBy, KpiGrain

MAX_WINDOW_DAYS = 3660  # ten years of dates of service in one request
TOP_REASONS = 10
AR_BUCKETS = ((0, 30, "0-30"), (31, 60, "31-60"), (61, 90, "61-90"), (91, None, "90+"))
LAG_BUCKETS = ((None, 1, "0-1"), (2, 3, "2-3"), (4, 7, "4-7"), (8, 14, "8-14"), (15, 30, "15-30"), (31, None, "31+"))

_ANSWERED = "c.state != 'submitted'"
_ADJUDICATED = "c.state IN ('paid', 'partially_paid', 'denied')"
_OPEN = "c.state IN ('submitted', 'accepted')"
_TOUCH_EVENTS = "('encounter.edited', 'encounter.accepted_rcm')"


class KpiError(ChargeBridgeError):
    http_status = 422


# -- dimensions ----------------------------------------------------------------------------------
def _period(expr: str, grain: str) -> str:
    day = f"substr({expr}, 1, 10)"
    if grain == KpiGrain.DAY:
        return day
    if grain == KpiGrain.WEEK:  # the Monday on or before the day
        return f"date({day}, '-6 days', 'weekday 1')"
    return f"substr({expr}, 1, 7)"


def _enc_dim(dim: str | None, alias: str = "e") -> str:
    if dim == KpiBy.PROVIDER:
        return f"coalesce(json_extract({alias}.data, '$.rendering.npi'), '')"
    if dim == KpiBy.PAYER:
        return (f"coalesce(nullif(json_extract({alias}.data, '$.coverages[0].payer_id'), ''), "
                f"json_extract({alias}.data, '$.coverages[0].payer_name'), '')")
    if dim in tuple(KpiGrain):
        return _period(f"{alias}.dos", dim)
    return "''"


def _claim_dim(dim: str | None) -> str:
    if dim == KpiBy.PROVIDER:
        return "c.provider_npi"
    if dim == KpiBy.PAYER:
        return "c.payer"
    if dim in tuple(KpiGrain):
        return _period("c.dos", dim)
    return "''"


@dataclass(frozen=True)
class Window:
    start: date
    end: date

    @property
    def lo(self) -> str:
        return self.start.isoformat()

    @property
    def hi(self) -> str:  # exclusive upper bound: a DOS with a time part still falls in its day
        return (self.end + timedelta(days=1)).isoformat()


def window(start: date | None, end: date | None, *, today: date | None = None) -> Window:
    """The window a request names; default: the 30 days of service ending today."""
    end = end or (today or date.today())
    start = start or end - timedelta(days=29)
    if start > end:
        raise KpiError("the window starts after it ends", "give a 'from' date on or before the 'to' date", key="from")
    if (end - start).days >= MAX_WINDOW_DAYS:
        raise KpiError(f"the window is longer than {MAX_WINDOW_DAYS} days", "ask for a shorter period", key="from")
    return Window(start, end)


# -- raw figures: (numerator, denominator) per dimension key -------------------------------------
Figures = dict[str, dict[str, tuple[float, float]]]  # key -> kpi -> (numerator, denominator)


def _put(out: Figures, key: Any, kpi: str, num: Any, den: Any) -> None:
    out.setdefault(str(key if key is not None else ""), {})[kpi] = (float(num or 0), float(den or 0))


_TOUCHED_IDS = ("(SELECT encounter_id FROM reviews UNION SELECT encounter_id FROM events "
                f"WHERE kind IN {_TOUCH_EVENTS})")  # materialised once per query, not probed per row


def _julian(d: date) -> float:
    """SQLite's julianday() of a date at midnight."""
    return d.toordinal() + 1721424.5


def _claim_figures(store: Store, w: Window, dim: str | None, today: date, out: Figures) -> None:
    """One grouped scan (dimension, state, submitted once) whose sums are linear, so the ratios and
    day averages are put together here: a day difference summed is the difference of the sums."""
    sql = f"""
        SELECT {_claim_dim(dim)} AS k, c.state, c.submissions = 1 AS once, count(*),
          sum(CAST(c.billed AS REAL)),
          sum(julianday(substr(c.first_submitted_at, 1, 10))),
          sum(julianday(substr(c.dos, 1, 10))),
          sum(CASE WHEN {_ADJUDICATED} THEN julianday(substr(coalesce(nullif(c.adjudicated_on, ''),
              nullif(c.answered_at, ''), :today), 1, 10)) END),
          sum(CASE WHEN c.state IN ('accepted', 'paid', 'partially_paid') AND c.submissions = 1
              THEN c.encounter_id IN {_TOUCHED_IDS} END)
        FROM claims c WHERE c.dos >= :lo AND c.dos < :hi GROUP BY 1, 2, 3"""
    today_jd = _julian(today)
    acc: dict[str, dict[str, float]] = {}
    for k, state, once, n, billed, sub, dos, closed, touched in store.conn.execute(
            sql, {"lo": w.lo, "hi": w.hi, "today": today.isoformat()}):
        a = acc.setdefault(str(k or ""), dict.fromkeys(
            ("answered", "clean", "first", "adj", "denied", "adj_d", "den_d", "ar", "ar_n", "lag", "n"), 0.0))
        billed, sub, dos = billed or 0.0, sub or 0.0, dos or 0.0
        a["n"] += n
        a["lag"] += sub - dos
        if state != "submitted":
            a["answered"] += n
            if once and state != "rejected":
                a["first"] += n
            if once and state in ("accepted", "paid", "partially_paid"):
                a["clean"] += n - (touched or 0)
        if state in ("paid", "partially_paid", "denied"):
            a["adj"] += n
            a["adj_d"] += billed
            a["ar"] += (closed or 0.0) - sub
            a["ar_n"] += n
            if state == "denied":
                a["denied"] += n
                a["den_d"] += billed
        elif state in ("submitted", "accepted"):
            a["ar"] += n * today_jd - sub
            a["ar_n"] += n
    for k, a in acc.items():
        _put(out, k, "clean_claim_rate", a["clean"], a["answered"])
        _put(out, k, "first_pass_acceptance", a["first"], a["answered"])
        _put(out, k, "denial_rate", a["denied"], a["adj"])
        _put(out, k, "denial_dollar_rate", a["den_d"], a["adj_d"])
        _put(out, k, "denied_dollars", a["den_d"], 1)
        _put(out, k, "days_in_ar", a["ar"], a["ar_n"])
        _put(out, k, "charge_lag_days", a["lag"], a["n"])


def _encounter_figures(store: Store, w: Window, dim: str | None, today: date, missed_days: int,
                       out: Figures) -> None:
    touched = f"(e.id IN {_TOUCHED_IDS})"
    sql = f"""
        SELECT {_enc_dim(dim)} AS k, count(*) AS n, sum(e.state = 'ready' AND NOT {touched}) AS auto,
               sum({touched}) AS touched
        FROM encounters e WHERE e.kind = 'charge' AND e.state != 'voided' AND e.dos >= :lo AND e.dos < :hi
        GROUP BY k"""
    for k, n, auto, touch in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi}):
        _put(out, k, "auto_capture_rate", auto, n)
        _put(out, k, "touch_rate", touch, n)
    cutoff = (today - timedelta(days=missed_days) + timedelta(days=1)).isoformat()
    sql = f"""
        SELECT {_enc_dim(dim)} AS k, count(*) AS n,
          sum(NOT EXISTS (SELECT 1 FROM encounters c WHERE c.mrn = e.mrn AND c.dos = e.dos AND c.kind = 'charge'
                          AND c.state != 'voided')) AS missed
        FROM encounters e WHERE e.kind = 'expected' AND e.dos >= :lo AND e.dos < :hi AND e.dos < :cutoff
        GROUP BY k"""
    for k, n, missed in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi, "cutoff": cutoff}):
        _put(out, k, "missed_charge_rate", missed, n)


def _finding_figures(store: Store, w: Window, dim: str | None, out: Figures) -> None:
    k_expr = _period("f.dos", dim) if dim in tuple(KpiGrain) else _enc_dim(dim)
    join = "LEFT JOIN encounters e ON e.id = f.encounter_id" if dim in tuple(KpiBy) else ""
    done = "f.status IN ('resolved', 'ignored') AND f.resolved_at != ''"
    sql = f"""
        SELECT {k_expr} AS k,
          sum(CASE WHEN {done} THEN max(0, julianday(f.resolved_at) - julianday(f.first_seen)) * 24 END),
          sum({done}), sum(f.status IN ('open', 'reopened'))
        FROM findings f {join} WHERE f.kind != 'matched' AND f.dos >= :lo AND f.dos < :hi GROUP BY k"""
    for k, hours, n, still_open in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi}):
        _put(out, k, "mismatch_resolution_hours", hours, n)
        _put(out, k, "open_mismatches", still_open, 1)


def _sync_figures(store: Store, w: Window, dim: str | None, out: Figures) -> None:
    if dim in tuple(KpiBy):
        return  # a sync run belongs to the practice, not to a provider or payer
    k_expr = _period("v.at", dim) if dim in tuple(KpiGrain) else "''"
    sql = f"""
        SELECT {k_expr} AS k, count(*), sum(json_extract(v.detail, '$.ok') = 1)
        FROM events v WHERE v.kind = 'sync.run' AND v.at >= :lo AND v.at < :hi GROUP BY k"""
    for k, n, ok in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi}):
        _put(out, k, "sync_uptime", ok, n)
        _put(out, k, "sync_failures", (n or 0) - (ok or 0), 1)


def figures(store: Store, w: Window, *, dim: str | None = None, today: date | None = None,
            missed_days: int = 3, only: set[str] | None = None) -> Figures:
    """Numerators and denominators of every KPI (or ``only`` those), per key of ``dim``."""
    today = today or date.today()
    out: Figures = {}
    want = only or set(KPIS)
    claims = {"clean_claim_rate", "first_pass_acceptance", "denial_rate", "denial_dollar_rate", "denied_dollars",
              "days_in_ar", "charge_lag_days"}
    if want & claims:
        _claim_figures(store, w, dim, today, out)
    if want & {"auto_capture_rate", "touch_rate", "missed_charge_rate"}:
        _encounter_figures(store, w, dim, today, missed_days, out)
    if want & {"mismatch_resolution_hours", "open_mismatches"}:
        _finding_figures(store, w, dim, out)
    if want & {"sync_uptime", "sync_failures"}:
        _sync_figures(store, w, dim, out)
    return out


def value(kpi: str, fig: tuple[float, float] | None) -> float | None:
    """A KPI's value from (numerator, denominator): None when there is nothing to compute it from."""
    if fig is None:
        return None
    num, den = fig
    unit = KPIS[kpi].unit
    if unit == "count":
        return float(num)
    if unit == "dollars":
        return round(num, 2) if den else None
    if not den:
        return None
    v = num / den
    return round(v * 100, 2) if unit == "percent" else round(v, 2)


def status(val: float | None, target: float | None, direction: GoalDirection) -> GoalStatus:
    if target is None:
        return GoalStatus.NO_TARGET
    if val is None:
        return GoalStatus.NO_DATA
    met = val >= target if direction == GoalDirection.HIGHER else val <= target
    return GoalStatus.MET if met else GoalStatus.NOT_MET


def _values(figs: dict[str, tuple[float, float]], goals: GoalsConfig,
            baseline: dict[str, tuple[float, float]] | None, keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for kpi in keys:
        d = KPIS[kpi]
        fig = figs.get(kpi)
        val = value(kpi, fig)
        target, direction = goals.target(kpi)
        out.append({"key": kpi, "label": d.label, "unit": d.unit, "value": val,
                    "numerator": fig[0] if fig else None, "denominator": fig[1] if fig else None,
                    "target": target, "direction": direction,
                    "baseline": value(kpi, baseline.get(kpi)) if baseline is not None else None,
                    "status": status(val, target, direction)})
    return out


# -- tables behind the figures -------------------------------------------------------------------
def _describer() -> Callable[[str, str], str] | None:
    """The CARC/RARC text, when the X12 connector provides it (connectors/rcm/x12)."""
    for mod in ("connectors.rcm.x12.codes", "connectors.rcm.x12"):
        try:
            fn = getattr(importlib.import_module(mod), "describe", None)
        except ImportError:
            continue
        if callable(fn):
            return fn
    return None


def denial_reasons(store: Store, w: Window, *, limit: int = TOP_REASONS) -> list[dict[str, Any]]:
    sql = """
        SELECT coalesce(json_extract(r.value, '$.kind'), ''), coalesce(json_extract(r.value, '$.code'), ''),
               coalesce(json_extract(r.value, '$.group'), ''), count(DISTINCT c.id),
               sum(coalesce(CAST(json_extract(r.value, '$.amount') AS REAL), CAST(c.billed AS REAL))),
               max(coalesce(json_extract(r.value, '$.text'), ''))
        FROM claims c, json_each(c.reasons) r
        WHERE c.state = 'denied' AND c.dos >= ? AND c.dos < ? AND json_extract(r.value, '$.kind') != 'rarc'
        GROUP BY 1, 2, 3 ORDER BY 4 DESC, 5 DESC, 2 LIMIT ?"""
    describe = _describer()
    out = []
    for kind, code, group, n, amount, text in store.conn.execute(sql, (w.lo, w.hi, limit)):
        desc = ""
        if describe is not None:
            try:
                desc = describe(str(kind), str(code)) or ""
            except Exception:  # a describe that fails leaves the code without its text
                desc = ""
        out.append({"kind": kind, "code": code, "group": group, "description": desc or text, "claims": int(n),
                    "amount": f"{amount or 0:.2f}"})
    return out


def _bucket_case(expr: str, buckets: tuple[tuple[int | None, int | None, str], ...]) -> str:
    parts = []
    for lo, hi, label in buckets:
        cond = " AND ".join(c for c in ((f"{expr} >= {lo}" if lo is not None else ""),
                                        (f"{expr} <= {hi}" if hi is not None else "")) if c)
        parts.append(f"WHEN {cond} THEN '{label}'")
    return f"CASE {' '.join(parts)} END"


def _buckets(store: Store, sql_expr: str, where: str, w: Window, today: date,
             buckets: tuple[tuple[int | None, int | None, str], ...]) -> list[dict[str, Any]]:
    sql = (f"SELECT {_bucket_case(f'CAST({sql_expr} AS INTEGER)', buckets)} AS b, count(*), "
           f"sum(CAST(c.billed AS REAL)) FROM claims c WHERE c.dos >= :lo AND c.dos < :hi AND {where} GROUP BY b")
    got = {b: (n, amt) for b, n, amt in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi, "today": today.isoformat()})}
    return [{"label": label, "count": int(got.get(label, (0, 0))[0]), "amount": f"{got.get(label, (0, 0))[1] or 0:.2f}"}
            for _, _, label in buckets]


def ar_buckets(store: Store, w: Window, today: date) -> list[dict[str, Any]]:
    age = "(julianday(:today) - julianday(substr(c.first_submitted_at, 1, 10)))"
    return _buckets(store, age, _OPEN, w, today, AR_BUCKETS)


def charge_lag(store: Store, w: Window, today: date) -> list[dict[str, Any]]:
    lag = "max(0, julianday(substr(c.first_submitted_at, 1, 10)) - julianday(substr(c.dos, 1, 10)))"
    return _buckets(store, lag, "1", w, today, LAG_BUCKETS)


# -- what the API and the CLI ask ----------------------------------------------------------------
def report(store: Store, goals: GoalsConfig, *, start: date | None = None, end: date | None = None,
           by: str | None = None, today: date | None = None) -> dict[str, Any]:
    """Every KPI for the window with its target, baseline and status, the denial reasons, the A/R
    and charge-lag buckets, and — with ``by`` — the same KPIs per provider or payer."""
    today = today or date.today()
    w = window(start, end, today=today)
    by = KpiBy(by) if by else None
    keys = list(KPIS)
    overall = figures(store, w, today=today, missed_days=goals.missed_charge_days).get("", {})
    baseline = None
    if goals.baseline_from and goals.baseline_to:
        bw = Window(date.fromisoformat(goals.baseline_from), date.fromisoformat(goals.baseline_to))
        baseline = figures(store, bw, today=today, missed_days=goals.missed_charge_days).get("", {})
    groups = []
    if by is not None:
        per = figures(store, w, dim=by, today=today, missed_days=goals.missed_charge_days)
        group_keys = [k for k in keys if not k.startswith("sync_")]
        for key in sorted(per):
            groups.append({"key": key, "kpis": _values(per[key], goals, None, group_keys)})
    return {"start": w.lo, "end": w.end.isoformat(), "by": by, "baseline_from": goals.baseline_from,
            "baseline_to": goals.baseline_to, "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kpis": _values(overall, goals, baseline, keys), "denial_reasons": denial_reasons(store, w),
            "ar_buckets": ar_buckets(store, w, today), "charge_lag": charge_lag(store, w, today), "groups": groups}


def series(store: Store, goals: GoalsConfig, kpi: str, *, start: date | None = None, end: date | None = None,
           grain: str = KpiGrain.DAY, today: date | None = None) -> dict[str, Any]:
    """One KPI per day / week / month of the window (periods with no data are listed with None)."""
    if kpi not in KPIS:
        raise KpiError(f"there is no KPI named {kpi!r}", "use one of: " + ", ".join(KPIS), key="kpi")
    today = today or date.today()
    grain = KpiGrain(grain)
    w = window(start, end, today=today)
    per = figures(store, w, dim=grain, today=today, missed_days=goals.missed_charge_days, only={kpi})
    points = []
    for period in _periods(w, grain):
        fig = per.get(period, {}).get(kpi)
        points.append({"period": period, "value": value(kpi, fig), "numerator": fig[0] if fig else None,
                       "denominator": fig[1] if fig else None})
    target, direction = goals.target(kpi)
    d = KPIS[kpi]
    return {"kpi": kpi, "label": d.label, "unit": d.unit, "grain": grain, "start": w.lo, "end": w.end.isoformat(),
            "target": target, "direction": direction, "points": points}


def _periods(w: Window, grain: KpiGrain) -> list[str]:
    out: list[str] = []
    d = w.start
    if grain == KpiGrain.WEEK:
        d = d - timedelta(days=d.weekday())
    while d <= w.end:
        label = d.isoformat()[:7] if grain == KpiGrain.MONTH else d.isoformat()
        if not out or out[-1] != label:
            out.append(label)
        d += timedelta(days=7 if grain == KpiGrain.WEEK else 1)
    return out


def catalog() -> list[dict[str, Any]]:
    return [{"key": k, "label": d.label, "unit": d.unit, "direction": d.direction, "formula": d.formula}
            for k, d in KPIS.items()]


def goals_view(goals: GoalsConfig) -> dict[str, Any]:
    """``[goals]`` in the API's shape (:class:`core.schemas.Goals`)."""
    return {"baseline_from": goals.baseline_from, "baseline_to": goals.baseline_to,
            "missed_charge_days": goals.missed_charge_days,
            "targets": {k: {"target": float(t["target"]), "direction": t.get("direction") or None}
                        for k, t in goals.targets.items()}}


def save_goals(svc: Any, doc: dict[str, Any], *, actor: str) -> GoalsConfig:
    """Write ``[goals]`` through the service's config save (validated with the start-up rules,
    written atomically, audited as ``config.change`` naming the goals section) and use it at once.
    ``svc`` is :class:`agent.service.EngineService` (not imported: it sits above this module)."""
    section: dict[str, Any] = {"baseline_from": doc.get("baseline_from", ""), "baseline_to": doc.get("baseline_to", ""),
                               "missed_charge_days": doc.get("missed_charge_days", 3)}
    for k, t in (doc.get("targets") or {}).items():
        if k in section:
            raise KpiError(f"'{k}' is not a KPI", "use one of: " + ", ".join(KPIS), key=f"targets.{k}")
        section[k] = {"target": t["target"], **({"direction": str(t["direction"])} if t.get("direction") else {})}
    res = svc.patch_config({"goals": section}, actor=actor)
    from agent.config import parse

    goals = parse({"goals": res["config"]["goals"]}, origin="").goals
    svc.engine.config.goals = goals
    return goals
