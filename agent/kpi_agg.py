"""KPI pre-aggregation: per day of service, the additive pieces every claim and encounter KPI needs.

Store migration 15 keeps two tables (see agent/store.py):

* ``kpi_daily(lvl, provider, payer, day, kind, k1, k2, …sums…)`` at four levels — 0 everything,
  1 per provider (rendering NPI), 2 per payer, 3 per provider and payer — so a report, a filter
  or a ``by`` grouping reads a few thousand pre-summed rows instead of every claim. Kinds:

  - ``c`` claims by ``k1`` state and ``k2`` submitted-once (0/1): ``n``, ``billed``, ``sub_sum`` /
    ``dos_sum`` / ``closed_sum`` (sums of the first-submission, service and closing day numbers,
    NULLs left out as ``total()`` does), ``unclosed`` (adjudicated claims with no closing day: their
    A/R age runs to today), ``touched`` (claims whose encounter a person reviewed or edited);
  - ``lag`` claims by charge-lag bucket label ``k1``: ``n``, ``billed``;
  - ``ar`` open claims (submitted / accepted) by first-submission day number ``k2``: ``n``,
    ``billed`` — their A/R bucket depends on today, so it is put together when asked;
  - ``e`` charge encounters (voided left out) by ``k1`` state: ``n``, ``touched``;
  - ``x`` expected visits: ``n``, and ``touched`` holds the ones with no charge encounter for the
    same MRN and date (missed charges; the age cut-off is a day, applied when asked);
  - ``f`` mismatch findings (``matched`` left out) by their date of service and their encounter's
    provider / payer: ``n`` findings, ``touched`` resolved / ignored ones, ``closed_sum`` their hours
    from first seen to resolved, ``unclosed`` open / reopened ones.

  Levels 10, 11 and 12 hold levels 0, 1 and 2 summed per month (``day`` = ``YYYY-MM``): a window
  reads its whole months from them and only its partial months' days (:func:`spans`).

* ``kpi_daily_reasons(lvl, provider, payer, day, kind, code, grp, n, amount, text)``: the reasons
  on denied claims (RARCs left out), ``n`` = distinct claims.

Fresh and exact by construction: triggers on claims, encounters, reviews and the touch events put
every day a write changes into ``kpi_dirty``; :func:`refresh` (called before every read) re-sums
exactly those days from the source rows — level 3 from claims / encounters / findings, levels 0–2
from level 3, then their months — and empties ``kpi_dirty``, in one transaction. A day is always recomputed whole, so
there is no incremental arithmetic to drift.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from agent.store import Store

log = logging.getLogger(__name__)
REFRESH_SECONDS = 15  # a dirty-day check is one indexed read
LAG_BUCKETS = ((None, 1, "0-1"), (2, 3, "2-3"), (4, 7, "4-7"), (8, 14, "8-14"), (15, 30, "15-30"), (31, None, "31+"))
TOUCH_EVENTS = "('encounter.edited', 'encounter.accepted_rcm')"
_TOUCHED_IDS = f"SELECT encounter_id FROM reviews UNION SELECT encounter_id FROM events WHERE kind IN {TOUCH_EVENTS}"
_TOUCHED = "temp.kpi_touched"  # the touched encounter ids, gathered once per refresh
MONTHLY = 10  # level offset of the per-month rows
_MONTH_GLOB = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]*'"
_DIRTY = "(SELECT day FROM kpi_dirty)"
_COLS = "lvl, provider, payer, day, kind, k1, k2, n, billed, sub_sum, dos_sum, closed_sum, unclosed, touched"
# provider / payer expressions of each rolled-up level, from level 3
_ROLLUPS = ((1, "provider", "''"), (2, "''", "payer"), (0, "''", "''"))


def _lag_case() -> str:
    lag = "max(0, c.sub_day - c.dos_day)"
    arms = []
    for lo, hi, label in LAG_BUCKETS:
        cond = " AND ".join(x for x in ((f"{lag} >= {lo}" if lo is not None else ""),
                                        (f"{lag} <= {hi}" if hi is not None else "")) if x)
        arms.append(f"WHEN {cond} THEN '{label}'")
    return f"CASE {' '.join(arms)} END"


def _in_dirty(alias: str) -> str:
    """Rows of the dirty days: a range on ``dos`` (indexed) narrowed to the dirty days themselves."""
    return f"{alias}.dos >= :lo AND {alias}.dos < :hi AND substr({alias}.dos, 1, 10) IN {_DIRTY}"


def _level3(conn: Any, args: dict[str, str]) -> None:
    conn.execute(f"""
        INSERT INTO kpi_daily ({_COLS})
        SELECT 3, c.provider_npi, c.payer, substr(c.dos, 1, 10), 'c', c.state, c.submissions = 1, count(*),
               total(c.billed), total(c.sub_day), total(c.dos_day), total(c.closed_day), sum(c.closed_day IS NULL),
               sum(coalesce(c.encounter_id IN {_TOUCHED}, 0))
        FROM claims c WHERE {_in_dirty('c')} GROUP BY 2, 3, 4, 6, 7""", args)
    conn.execute(f"""
        INSERT INTO kpi_daily (lvl, provider, payer, day, kind, k1, n, billed)
        SELECT 3, c.provider_npi, c.payer, substr(c.dos, 1, 10), 'lag', {_lag_case()} AS b, count(*), total(c.billed)
        FROM claims c WHERE {_in_dirty('c')} AND c.sub_day IS NOT NULL AND c.dos_day IS NOT NULL
        GROUP BY 2, 3, 4, 6 HAVING b IS NOT NULL""", args)
    conn.execute(f"""
        INSERT INTO kpi_daily (lvl, provider, payer, day, kind, k2, n, billed)
        SELECT 3, c.provider_npi, c.payer, substr(c.dos, 1, 10), 'ar', c.sub_day, count(*), total(c.billed)
        FROM claims c WHERE {_in_dirty('c')} AND c.state IN ('submitted', 'accepted') AND c.sub_day IS NOT NULL
        GROUP BY 2, 3, 4, 6""", args)
    conn.execute(f"""
        INSERT INTO kpi_daily (lvl, provider, payer, day, kind, k1, n, touched)
        SELECT 3, e.provider_npi, e.payer, substr(e.dos, 1, 10), 'e', e.state, count(*),
               sum(coalesce(e.id IN {_TOUCHED}, 0))
        FROM encounters e WHERE e.kind = 'charge' AND e.state != 'voided' AND {_in_dirty('e')}
        GROUP BY 2, 3, 4, 6""", args)
    conn.execute(f"""
        INSERT INTO kpi_daily (lvl, provider, payer, day, kind, n, touched)
        SELECT 3, e.provider_npi, e.payer, substr(e.dos, 1, 10), 'x', count(*),
               sum(NOT EXISTS (SELECT 1 FROM encounters c WHERE c.mrn = e.mrn AND c.dos = e.dos
                               AND c.kind = 'charge' AND c.state != 'voided'))
        FROM encounters e WHERE e.kind = 'expected' AND {_in_dirty('e')} GROUP BY 2, 3, 4""", args)
    done = "f.status IN ('resolved', 'ignored') AND f.resolved_at != ''"
    conn.execute(f"""
        INSERT INTO kpi_daily (lvl, provider, payer, day, kind, n, touched, closed_sum, unclosed)
        SELECT 3, coalesce(e.provider_npi, ''), coalesce(e.payer, ''), substr(f.dos, 1, 10), 'f', count(*),
               sum({done}), total(CASE WHEN {done} THEN max(0, julianday(f.resolved_at) - julianday(f.first_seen)) * 24
                                  END),
               sum(f.status IN ('open', 'reopened'))
        FROM findings f LEFT JOIN encounters e ON e.id = f.encounter_id
        WHERE f.kind != 'matched' AND {_in_dirty('f')} GROUP BY 2, 3, 4""", args)
    conn.execute(f"""
        INSERT INTO kpi_daily_reasons (lvl, provider, payer, day, kind, code, grp, n, amount, text)
        SELECT 3, c.provider_npi, c.payer, substr(c.dos, 1, 10), coalesce(json_extract(r.value, '$.kind'), ''),
               coalesce(json_extract(r.value, '$.code'), ''), coalesce(json_extract(r.value, '$.group'), ''),
               count(DISTINCT c.id),
               total(coalesce(CAST(json_extract(r.value, '$.amount') AS REAL), CAST(c.billed AS REAL))),
               max(coalesce(json_extract(r.value, '$.text'), ''))
        FROM claims c, json_each(c.reasons) r
        WHERE c.state = 'denied' AND {_in_dirty('c')} AND json_extract(r.value, '$.kind') != 'rarc'
        GROUP BY 2, 3, 4, 5, 6, 7""", args)


def _rollups(conn: Any) -> None:
    for lvl, prov, pay in _ROLLUPS:
        conn.execute(f"""
            INSERT INTO kpi_daily ({_COLS})
            SELECT {lvl}, {prov}, {pay}, day, kind, k1, k2, sum(n), sum(billed), sum(sub_sum), sum(dos_sum),
                   sum(closed_sum), sum(unclosed), sum(touched)
            FROM kpi_daily INDEXED BY kpi_daily_day WHERE day IN {_DIRTY} AND lvl = 3
            GROUP BY {prov}, {pay}, day, kind, k1, k2""")
        conn.execute(f"""
            INSERT INTO kpi_daily_reasons (lvl, provider, payer, day, kind, code, grp, n, amount, text)
            SELECT {lvl}, {prov}, {pay}, day, kind, code, grp, sum(n), sum(amount), max(text)
            FROM kpi_daily_reasons INDEXED BY kpi_daily_reasons_day WHERE day IN {_DIRTY} AND lvl = 3
            GROUP BY {prov}, {pay}, day, kind, code, grp""")


def _months(conn: Any) -> None:
    """Levels 0-2 of the dirty days' months summed again per month (levels 10-12)."""
    months = [r[0] for r in conn.execute(
        f"SELECT DISTINCT substr(day, 1, 7) FROM kpi_dirty WHERE day GLOB {_MONTH_GLOB}")]
    for m in months:
        a = {"m": m, "lo": m + "-", "hi": m + "-~", "top": MONTHLY}
        conn.execute("DELETE FROM kpi_daily WHERE day = :m AND lvl >= :top", a)
        conn.execute("DELETE FROM kpi_daily_reasons WHERE day = :m AND lvl >= :top", a)
        conn.execute(f"""
            INSERT INTO kpi_daily ({_COLS})
            SELECT lvl + :top, provider, payer, :m, kind, k1, k2, sum(n), sum(billed), sum(sub_sum), sum(dos_sum),
                   sum(closed_sum), sum(unclosed), sum(touched)
            FROM kpi_daily INDEXED BY kpi_daily_day WHERE day > :lo AND day < :hi AND lvl < 3
            GROUP BY lvl, kind, provider, payer, k1, k2""", a)
        conn.execute("""
            INSERT INTO kpi_daily_reasons (lvl, provider, payer, day, kind, code, grp, n, amount, text)
            SELECT lvl + :top, provider, payer, :m, kind, code, grp, sum(n), sum(amount), max(text)
            FROM kpi_daily_reasons INDEXED BY kpi_daily_reasons_day WHERE day > :lo AND day < :hi AND lvl < 3
            GROUP BY lvl, provider, payer, kind, code, grp""", a)


def refresh(store: Store) -> int:
    """Re-aggregate the dirty days (none: one indexed read and nothing else). Returns how many."""
    conn = store.conn
    if conn.execute("SELECT 1 FROM kpi_dirty LIMIT 1").fetchone() is None:
        return 0
    nested = conn.in_transaction
    conn.execute("SAVEPOINT kpi_refresh" if nested else "BEGIN IMMEDIATE")
    try:
        lo, hi, n = conn.execute("SELECT min(day), max(day), count(*) FROM kpi_dirty").fetchone()
        if n:
            args = {"lo": lo, "hi": hi + "\x7f"}  # every dos of the last dirty day sorts below it
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS kpi_touched (encounter_id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM temp.kpi_touched")
            if n > 31:  # many days: every touched encounter at once
                conn.execute(f"INSERT OR IGNORE INTO temp.kpi_touched SELECT encounter_id FROM ({_TOUCHED_IDS}) "
                             "WHERE encounter_id IS NOT NULL")
            else:  # a few days: only their encounters, each looked up by id
                conn.execute(f"""
                    INSERT OR IGNORE INTO temp.kpi_touched
                    SELECT x.id FROM (SELECT e.id FROM encounters e WHERE {_in_dirty('e')}
                                      UNION SELECT c.encounter_id FROM claims c WHERE {_in_dirty('c')}) x
                    WHERE EXISTS (SELECT 1 FROM reviews r WHERE r.encounter_id = x.id)
                       OR EXISTS (SELECT 1 FROM events v WHERE v.encounter_id = x.id AND v.kind IN {TOUCH_EVENTS})""",
                             args)
            conn.execute(f"DELETE FROM kpi_daily WHERE day IN {_DIRTY}")
            conn.execute(f"DELETE FROM kpi_daily_reasons WHERE day IN {_DIRTY}")
            _level3(conn, args)
            _rollups(conn)
            _months(conn)
            conn.execute("DELETE FROM kpi_dirty")
    except BaseException:
        conn.execute("ROLLBACK TO kpi_refresh" if nested else "ROLLBACK")
        if nested:
            conn.execute("RELEASE kpi_refresh")
        raise
    conn.execute("RELEASE kpi_refresh" if nested else "COMMIT")
    return int(n or 0)


def level(provider: str, payer: str, by: str | None) -> tuple[int, str]:
    """The aggregate level a request reads and its condition on ``provider`` / ``payer`` (named
    parameters ``:provider_npi`` / ``:payer``): a dimension is kept when it filters or groups."""
    prov, pay = bool(provider) or by == "provider", bool(payer) or by == "payer"
    cond = (" AND provider = :provider_npi" if provider else ("" if prov else " AND provider = ''"))
    cond += (" AND payer = :payer" if payer else ("" if pay else " AND payer = ''"))
    return (1 if prov else 0) + (2 if pay else 0), cond


def spans(start: date, end: date, monthly: bool) -> list[tuple[int, str, str]]:
    """The (level offset, from, to) ranges of ``day`` that cover ``start`` … ``end``: with
    ``monthly``, its whole months from the month rows and the days before / after them."""
    if not monthly:
        return [(0, start.isoformat(), end.isoformat())]
    first = start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    after = end + timedelta(days=1)
    last = end if after.day == 1 else end.replace(day=1) - timedelta(days=1)  # last day of the last whole month
    if first > last:
        return [(0, start.isoformat(), end.isoformat())]
    out = [(MONTHLY, first.isoformat()[:7], last.isoformat()[:7])]
    if start < first:
        out.insert(0, (0, start.isoformat(), (first - timedelta(days=1)).isoformat()))
    if last < end:
        out.append((0, (last + timedelta(days=1)).isoformat(), end.isoformat()))
    return out


def schedule(engine: Any, sched: Any) -> None:
    """Keep the aggregates fresh in the background too (the engine's single worker): a dashboard's
    request then rarely finds a dirty day, and the one-off aggregation of an upgraded store's
    history runs soon after start rather than in the first report. Reads still refresh first."""
    def job() -> None:
        try:
            days = refresh(engine.store())
        except Exception as exc:  # counts only; the next run or the next report tries again
            log.warning("KPI aggregates not refreshed: %s", type(exc).__name__)
            return
        if days:
            log.info("KPI aggregates refreshed for %d day(s)", days)

    sched.add_job(job, "interval", seconds=REFRESH_SECONDS, id="kpi-aggregates",
                  next_run_time=datetime.now(UTC) + timedelta(seconds=5))
