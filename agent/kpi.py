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

from agent import kpi_agg
from agent.kpi_agg import LAG_BUCKETS
from agent.kpi_config import KPIS, GoalsConfig
from agent.store import Store
from core.errors import ChargeBridgeError
from core.states import GoalDirection, GoalStatus, KpiBy, KpiGrain

MAX_WINDOW_DAYS = 3660  # ten years of dates of service in one request
TOP_REASONS = 10
AR_BUCKETS = ((0, 30, "0-30"), (31, 60, "31-60"), (61, 90, "61-90"), (91, None, "90+"))

_ANSWERED = "c.state != 'submitted'"
_ADJUDICATED = "c.state IN ('paid', 'partially_paid', 'denied')"
_OPEN = "c.state IN ('submitted', 'accepted')"
_TOUCH_EVENTS = "('encounter.edited', 'encounter.accepted_rcm')"


class KpiError(ChargeBridgeError):
    http_status = 422


# -- dimensions and filters ----------------------------------------------------------------------
# Claim and encounter figures read the per-day aggregates of store migration 15 (agent/kpi_agg.py,
# refreshed for the days a write changed before each read); findings and sync runs (small tables)
# are read directly.


def _day_number(d: date) -> int:
    """A date as the store's day columns hold it: days since 1970-01-01."""
    return d.toordinal() - _EPOCH


_EPOCH = date(1970, 1, 1).toordinal()


def _dos_day(dos: Any) -> int | None:
    try:
        return _day_number(date.fromisoformat(str(dos)[:10]))
    except ValueError:
        return None


def _week_key(day: Any) -> str:
    """The ISO date of the Monday of a week the SQL grouped as its Monday's day number."""
    return date.fromordinal(int(day) + _EPOCH).isoformat() if day is not None else ""


def _period(day_expr: str, text_expr: str, grain: str) -> str:
    """A period key: the day (text), the week's Monday (a day number; see :func:`_week_key`), the month."""
    if grain == KpiGrain.DAY:
        return f"substr({text_expr}, 1, 10)"
    if grain == KpiGrain.WEEK:  # 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on a Monday
        return f"({day_expr} - ({day_expr} + 3) % 7)"
    return f"substr({text_expr}, 1, 7)"


def _key_of(dim: str | None) -> Callable[[Any], str]:
    return _week_key if dim == KpiGrain.WEEK else (lambda k: str(k if k is not None else ""))


@dataclass(frozen=True)
class Scope:
    """Which claims and encounters a figure counts: a rendering NPI and / or a payer (id, or name
    when the coverage has no id — the claim's ``payer`` column). Empty = every one."""
    provider: str = ""
    payer: str = ""

    def sql(self, alias: str) -> str:
        return "".join(f" AND {alias}.{col} = :{col}" for col, v in (("provider_npi", self.provider),
                                                                     ("payer", self.payer)) if v)

    def args(self) -> dict[str, str]:
        return {"provider_npi": self.provider, "payer": self.payer}

    @property
    def narrowed(self) -> bool:
        return bool(self.provider or self.payer)


EVERYTHING = Scope()
MAX_FILTER = 80  # a provider NPI or payer id longer than this names nothing we store


def scope(provider: str | None = None, payer: str | None = None) -> Scope:
    for key, v in (("provider", provider), ("payer", payer)):
        if v and len(v) > MAX_FILTER:
            raise KpiError(f"the {key} filter is longer than {MAX_FILTER} characters",
                           f"give the {key}'s id as the dashboard lists it", key=key)
    return Scope((provider or "").strip(), (payer or "").strip())


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



_ACC_KEYS = ("answered", "clean", "first", "adj", "denied", "adj_d", "den_d", "ar", "ar_n", "lag", "n")


def _row_key(dim: str | None, dos: Any, dos_day: Any) -> str:
    """The key of a claim / encounter row grouped by its date of service (``dim`` a grain or None)."""
    if dim == KpiGrain.DAY:
        return str(dos or "")[:10]
    if dim == KpiGrain.MONTH:
        return str(dos or "")[:7]
    if dim == KpiGrain.WEEK:
        return _week_key(None if dos_day is None else int(dos_day) - (int(dos_day) + 3) % 7)
    return ""


@dataclass
class _ClaimPass:
    acc: dict[str, dict[str, float]]
    lag: dict[str, list[float]]  # bucket label -> [count, billed]
    ar: dict[str, list[float]]


def _bucket(days: float | None, buckets: tuple[tuple[int | None, int | None, str], ...]) -> str | None:
    if days is None:
        return None
    for lo, hi, label in buckets:
        if (lo is None or days >= lo) and (hi is None or days <= hi):
            return label
    return None


def _agg(store: Store, w: Window, dim: str | None, sc: Scope, kind: str, cols: tuple[str, ...],
         groups: tuple[str, ...] = (), end: date | None = None) -> list[tuple[Any, ...]]:
    """The pre-summed rows of ``kind`` (agent/kpi_agg.py) for the window (``end`` may cut it
    shorter), at the level the scope and ``dim`` need, summed per (key of ``dim``, ``groups``):
    whole months come from the month rows unless the key is a period or both dimensions are
    fixed (level 3 has day rows only: a narrowed read). Grains key by day; weeks and months are
    folded from days by :func:`_agg_key`."""
    end = w.end if end is None else min(end, w.end)
    if end < w.start:
        return []
    lvl, cond = kpi_agg.level(sc.provider, sc.payer, str(dim) if dim in tuple(KpiBy) else None)
    key = "provider" if dim == KpiBy.PROVIDER else "payer" if dim == KpiBy.PAYER else \
        "day" if dim in tuple(KpiGrain) else "''"
    monthly = lvl < 3 and dim not in tuple(KpiGrain)
    parts, args = [], {"kind": kind, **sc.args()}
    for i, (off, lo, hi) in enumerate(kpi_agg.spans(w.start, end, monthly)):
        parts.append(f"SELECT {', '.join((key + ' AS k', *groups, *cols))} FROM kpi_daily "
                     f"WHERE lvl = {lvl + off} AND kind = :kind{cond} AND day >= :lo{i} AND day <= :hi{i}")
        args[f"lo{i}"], args[f"hi{i}"] = lo, hi
    g = ", ".join(("k", *groups))
    sql = f"SELECT {g}, {', '.join(f'sum({c})' for c in cols)} FROM ({' UNION ALL '.join(parts)}) GROUP BY {g}"
    return store.conn.execute(sql, args).fetchall()


def _agg_key(dim: str | None, k: Any) -> str:
    if dim in tuple(KpiBy):
        return str(k or "")
    return _row_key(dim, k, _dos_day(k) if dim == KpiGrain.WEEK else None)


def _claim_pass(store: Store, w: Window, dim: str | None, today: date, sc: Scope = EVERYTHING) -> _ClaimPass:
    """The claims of the window from the per-day aggregates: per (key, state, submitted once) the
    counts and sums every claim KPI is put together from (sums are linear: a day difference summed
    is the difference of the sums; an adjudicated claim with no closing day ages to today); without
    a split, the charge-lag histogram and the open claims by first-submission day (A/R buckets)."""
    kpi_agg.refresh(store)
    today_d = _day_number(today)
    rows = _agg(store, w, dim, sc, "c", ("n", "billed", "sub_sum", "dos_sum", "closed_sum", "unclosed", "touched"),
                ("k1", "k2"))
    res = _ClaimPass({}, {b[2]: [0, 0.0] for b in LAG_BUCKETS}, {b[2]: [0, 0.0] for b in AR_BUCKETS})
    for k, state, once, n, billed, sub, dos, closed, unclosed, touched in rows:
        kk = _agg_key(dim, k)
        a = res.acc.get(kk)
        if a is None:
            a = res.acc[kk] = dict.fromkeys(_ACC_KEYS, 0.0)
        a["n"] += n
        a["lag"] += sub - dos
        if state != "submitted":
            a["answered"] += n
            if once and state != "rejected":
                a["first"] += n
            if once and state in ("accepted", "paid", "partially_paid"):
                a["clean"] += n - touched  # a person reviewed or edited the encounter: not clean
        if state in ("paid", "partially_paid", "denied"):
            a["adj"] += n
            a["adj_d"] += billed
            a["ar"] += closed + unclosed * today_d - sub
            a["ar_n"] += n
            if state == "denied":
                a["denied"] += n
                a["den_d"] += billed
        elif state in ("submitted", "accepted"):
            a["ar"] += n * today_d - sub
            a["ar_n"] += n
    if dim is not None:
        return res
    for _, label, n, billed in _agg(store, w, None, sc, "lag", ("n", "billed"), ("k1",)):
        if label in res.lag:
            res.lag[label][0] += n
            res.lag[label][1] += billed
    for _, sub_day, n, billed in _agg(store, w, None, sc, "ar", ("n", "billed"), ("k2",)):
        age = _bucket(today_d - sub_day, AR_BUCKETS)
        if age is not None:
            res.ar[age][0] += n
            res.ar[age][1] += billed
    return res


def _claim_figures(store: Store, w: Window, dim: str | None, today: date, out: Figures,
                   sc: Scope = EVERYTHING, pass_: _ClaimPass | None = None) -> _ClaimPass:
    res = pass_ or _claim_pass(store, w, dim, today, sc)
    for k, a in res.acc.items():
        _put(out, k, "clean_claim_rate", a["clean"], a["answered"])
        _put(out, k, "first_pass_acceptance", a["first"], a["answered"])
        _put(out, k, "denial_rate", a["denied"], a["adj"])
        _put(out, k, "denial_dollar_rate", a["den_d"], a["adj_d"])
        _put(out, k, "denied_dollars", a["den_d"], 1)
        _put(out, k, "days_in_ar", a["ar"], a["ar_n"])
        _put(out, k, "charge_lag_days", a["lag"], a["n"])
    return res


def _encounter_figures(store: Store, w: Window, dim: str | None, today: date, missed_days: int,
                       out: Figures, sc: Scope = EVERYTHING) -> None:
    """Charge encounters and expected visits from the per-day aggregates."""
    kpi_agg.refresh(store)
    totals: dict[str, list[float]] = {}  # key -> [charge encounters, ready, touched, touched and ready]
    for k, state, n, touched in _agg(store, w, dim, sc, "e", ("n", "touched"), ("k1",)):
        t = totals.setdefault(_agg_key(dim, k), [0.0, 0.0, 0.0, 0.0])
        t[0] += n
        t[2] += touched
        if state == "ready":
            t[1] += n
            t[3] += touched
    for k, (n, ready, touch, touch_ready) in totals.items():
        _put(out, k, "auto_capture_rate", ready - touch_ready, n)
        _put(out, k, "touch_rate", touch, n)
    last = today - timedelta(days=missed_days)  # expected visits at least missed_days old
    missed: dict[str, list[float]] = {}
    for k, n, m in _agg(store, w, dim, sc, "x", ("n", "touched"), end=last):
        t = missed.setdefault(_agg_key(dim, k), [0.0, 0.0])
        t[0] += m or 0
        t[1] += n
    for k, (m, n) in missed.items():
        _put(out, k, "missed_charge_rate", m, n)


def _finding_figures(store: Store, w: Window, dim: str | None, out: Figures, sc: Scope = EVERYTHING) -> None:
    """Mismatch findings by date of service (and their encounter's provider / payer), pre-summed."""
    kpi_agg.refresh(store)
    for k, _, done, hours, still_open in _agg(store, w, dim, sc, "f", ("n", "touched", "closed_sum", "unclosed")):
        key = _agg_key(dim, k)
        _put(out, key, "mismatch_resolution_hours", hours, done)
        _put(out, key, "open_mismatches", still_open, 1)


def _sync_figures(store: Store, w: Window, dim: str | None, out: Figures) -> None:
    """Sync runs belong to the practice: no provider or payer split, and a filter does not narrow them."""
    if dim in tuple(KpiBy):
        return
    k_expr = _period("(unixepoch(substr(v.at, 1, 10)) / 86400)", "v.at", dim) if dim in tuple(KpiGrain) else "''"
    key = _key_of(dim)
    sql = f"""
        SELECT {k_expr} AS k, count(*), sum(json_extract(v.detail, '$.ok') = 1)
        FROM events v WHERE v.kind = 'sync.run' AND v.at >= :lo AND v.at < :hi GROUP BY k"""
    for k, n, ok in store.conn.execute(sql, {"lo": w.lo, "hi": w.hi}):
        _put(out, key(k), "sync_uptime", ok, n)
        _put(out, key(k), "sync_failures", (n or 0) - (ok or 0), 1)


def figures(store: Store, w: Window, *, dim: str | None = None, today: date | None = None,
            missed_days: int = 3, only: set[str] | None = None, sc: Scope = EVERYTHING,
            claim_pass: list[_ClaimPass] | None = None) -> Figures:
    """Numerators and denominators of every KPI (or ``only`` those), per key of ``dim``, for the
    claims and encounters in ``sc`` (sync health stays the practice's)."""
    today = today or date.today()
    out: Figures = {}
    want = only or set(KPIS)
    claims = {"clean_claim_rate", "first_pass_acceptance", "denial_rate", "denial_dollar_rate", "denied_dollars",
              "days_in_ar", "charge_lag_days"}
    if want & claims:
        res = _claim_figures(store, w, dim, today, out, sc)
        if claim_pass is not None:
            claim_pass.append(res)
    if want & {"auto_capture_rate", "touch_rate", "missed_charge_rate"}:
        _encounter_figures(store, w, dim, today, missed_days, out, sc)
    if want & {"mismatch_resolution_hours", "open_mismatches"}:
        _finding_figures(store, w, dim, out, sc)
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


def denial_reasons(store: Store, w: Window, *, limit: int = TOP_REASONS,
                   sc: Scope = EVERYTHING) -> list[dict[str, Any]]:
    kpi_agg.refresh(store)
    lvl, cond = kpi_agg.level(sc.provider, sc.payer, None)
    parts, args = [], {"limit": limit, **sc.args()}
    for i, (off, lo, hi) in enumerate(kpi_agg.spans(w.start, w.end, lvl < 3)):
        parts.append(f"SELECT kind, code, grp, n, amount, text FROM kpi_daily_reasons "
                     f"WHERE lvl = {lvl + off}{cond} AND day >= :lo{i} AND day <= :hi{i}")
        args[f"lo{i}"], args[f"hi{i}"] = lo, hi
    sql = f"""
        SELECT kind, code, grp, sum(n), sum(amount), max(text) FROM ({' UNION ALL '.join(parts)})
        GROUP BY 1, 2, 3 ORDER BY 4 DESC, 5 DESC, 2, 1, 3 LIMIT :limit"""
    describe = _describer()
    out = []
    for kind, code, group, n, amount, text in store.conn.execute(sql, args):
        desc = ""
        if describe is not None:
            try:
                desc = describe(str(kind), str(code)) or ""
            except Exception:  # a describe that fails leaves the code without its text
                desc = ""
        out.append({"kind": kind, "code": code, "group": group, "description": desc or text, "claims": int(n),
                    "amount": f"{amount or 0:.2f}"})
    return out


def _bucket_rows(got: dict[str, list[float]], buckets: tuple[tuple[int | None, int | None, str], ...]
                 ) -> list[dict[str, Any]]:
    return [{"label": label, "count": int(got[label][0]), "amount": f"{got[label][1]:.2f}"} for _, _, label in buckets]


AR_AGE = "(:today - c.sub_day)"  # days an open claim has waited since its first submission


def ar_buckets(store: Store, w: Window, today: date, sc: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Open claims by days since their first submission."""
    return _bucket_rows(_claim_pass(store, w, None, today, sc).ar, AR_BUCKETS)


def charge_lag(store: Store, w: Window, today: date, sc: Scope = EVERYTHING) -> list[dict[str, Any]]:
    """Claims by days from date of service to first delivery (a delivery dated before its service: 0)."""
    return _bucket_rows(_claim_pass(store, w, None, today, sc).lag, LAG_BUCKETS)


def ar_bucket_sql(label: str) -> str:
    """The condition on claims (alias ``c``, ``:today`` a day number) of one A/R bucket: what the
    claims list uses to open exactly the claims an A/R bucket counted."""
    for lo, hi, name in AR_BUCKETS:
        if name == label:
            cond = " AND ".join(x for x in ((f"{AR_AGE} >= {lo}" if lo is not None else ""),
                                            (f"{AR_AGE} <= {hi}" if hi is not None else "")) if x)
            return f"{_OPEN} AND {cond}"
    raise KpiError(f"there is no A/R bucket {label!r}", "use one of: " + ", ".join(b[2] for b in AR_BUCKETS),
                   key="age")


# -- what the API and the CLI ask ----------------------------------------------------------------
def report(store: Store, goals: GoalsConfig, *, start: date | None = None, end: date | None = None,
           by: str | None = None, today: date | None = None, provider: str | None = None,
           payer: str | None = None) -> dict[str, Any]:
    """Every KPI for the window with its target, baseline and status, the denial reasons, the A/R
    and charge-lag buckets, and — with ``by`` — the same KPIs per provider or payer. ``provider`` /
    ``payer`` narrow every figure (and the baseline) to that rendering NPI / payer; sync health
    stays the practice's."""
    today = today or date.today()
    w = window(start, end, today=today)
    sc = scope(provider, payer)
    by = KpiBy(by) if by else None
    keys = list(KPIS)
    md = goals.missed_charge_days
    passes: list[_ClaimPass] = []  # the overall claims pass also gives the lag and A/R buckets
    overall = figures(store, w, today=today, missed_days=md, sc=sc, claim_pass=passes).get("", {})
    baseline = None
    if goals.baseline_from and goals.baseline_to:
        bw = Window(date.fromisoformat(goals.baseline_from), date.fromisoformat(goals.baseline_to))
        baseline = figures(store, bw, today=today, missed_days=md, sc=sc).get("", {})
    groups = []
    if by is not None:
        per = figures(store, w, dim=by, today=today, missed_days=md, sc=sc)
        group_keys = [k for k in keys if not k.startswith("sync_")]
        for key in sorted(per):
            groups.append({"key": key, "kpis": _values(per[key], goals, None, group_keys)})
    return {"start": w.lo, "end": w.end.isoformat(), "by": by, "provider": sc.provider, "payer": sc.payer,
            "baseline_from": goals.baseline_from, "baseline_to": goals.baseline_to,
            "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kpis": _values(overall, goals, baseline, keys), "denial_reasons": denial_reasons(store, w, sc=sc),
            "ar_buckets": _bucket_rows(passes[0].ar, AR_BUCKETS),
            "charge_lag": _bucket_rows(passes[0].lag, LAG_BUCKETS),
            "groups": groups}


def series(store: Store, goals: GoalsConfig, kpi: str, *, start: date | None = None, end: date | None = None,
           grain: str = KpiGrain.DAY, today: date | None = None, provider: str | None = None,
           payer: str | None = None) -> dict[str, Any]:
    """One KPI per day / week / month of the window (periods with no data are listed with None),
    narrowed like :func:`report`."""
    if kpi not in KPIS:
        raise KpiError(f"there is no KPI named {kpi!r}", "use one of: " + ", ".join(KPIS), key="kpi")
    today = today or date.today()
    grain = KpiGrain(grain)
    w = window(start, end, today=today)
    sc = scope(provider, payer)
    per = figures(store, w, dim=grain, today=today, missed_days=goals.missed_charge_days, only={kpi}, sc=sc)
    points = []
    for period in _periods(w, grain):
        fig = per.get(period, {}).get(kpi)
        points.append({"period": period, "value": value(kpi, fig), "numerator": fig[0] if fig else None,
                       "denominator": fig[1] if fig else None})
    target, direction = goals.target(kpi)
    d = KPIS[kpi]
    return {"kpi": kpi, "label": d.label, "unit": d.unit, "grain": grain, "start": w.lo, "end": w.end.isoformat(),
            "provider": sc.provider, "payer": sc.payer, "target": target, "direction": direction, "points": points}


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
