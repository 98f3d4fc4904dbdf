"""Bucket labels of the dashboard (A/R age ``90+``, charge lag ``0-1``) as :func:`agent.claims.list_claims`
filters: the same conditions the KPI report counted with (:mod:`agent.kpi`), so a drill-down from
a figure lists exactly its claims (H15). Kept apart from agent.claims, which must not import
agent.kpi (that would close an import circle through agent.config)."""

from __future__ import annotations

from typing import Any

from agent import kpi


def bucket_kwargs(*, age: str = "", lag: str = "") -> dict[str, Any]:
    """``age_sql`` / ``lag_days`` for :func:`agent.claims.list_claims`; an unknown label is a
    :class:`agent.kpi.KpiError` (422) naming the labels there are."""
    out: dict[str, Any] = {}
    if age:
        out["age_sql"] = kpi.ar_bucket_sql(age)
    if lag:
        bucket = next((b for b in kpi.LAG_BUCKETS if b[2] == lag), None)
        if bucket is None:
            raise kpi.KpiError(f"there is no charge-lag bucket {lag!r}",
                               "use one of: " + ", ".join(b[2] for b in kpi.LAG_BUCKETS), key="lag")
        out["lag_days"] = (bucket[0], bucket[1])
    return out
