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
    same MRN and date (missed charges; the age cut-off is a day, applied when asked).

* ``kpi_daily_reasons(lvl, provider, payer, day, kind, code, grp, n, amount, text)``: the reasons
  on denied claims (RARCs left out), ``n`` = distinct claims.

Fresh and exact by construction: triggers on claims, encounters, reviews and the touch events put
every day a write changes into ``kpi_dirty``; :func:`refresh` (called before every read) re-sums
exactly those days from the source rows — level 3 from claims / encounters, levels 0–2 from
level 3 — and empties ``kpi_dirty``, in one transaction. A day is always recomputed whole, so
there is no incremental arithmetic to drift.
"""

from __future__ import annotations

from typing import Any

from agent.store import Store

LAG_BUCKETS = ((None, 1, "0-1"), (2, 3, "2-3"), (4, 7, "4-7"), (8, 14, "8-14"), (15, 30, "15-30"), (31, None, "31+"))
TOUCH_EVENTS = "('encounter.edited', 'encounter.accepted_rcm')"
_TOUCHED = f"(SELECT encounter_id FROM reviews UNION SELECT encounter_id FROM events WHERE kind IN {TOUCH_EVENTS})"
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
            FROM kpi_daily WHERE lvl = 3 AND day IN {_DIRTY} GROUP BY {prov}, {pay}, day, kind, k1, k2""")
        conn.execute(f"""
            INSERT INTO kpi_daily_reasons (lvl, provider, payer, day, kind, code, grp, n, amount, text)
            SELECT {lvl}, {prov}, {pay}, day, kind, code, grp, sum(n), sum(amount), max(text)
            FROM kpi_daily_reasons WHERE lvl = 3 AND day IN {_DIRTY} GROUP BY {prov}, {pay}, day, kind, code, grp""")


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
            conn.execute(f"DELETE FROM kpi_daily WHERE day IN {_DIRTY}")
            conn.execute(f"DELETE FROM kpi_daily_reasons WHERE day IN {_DIRTY}")
            _level3(conn, args)
            _rollups(conn)
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
