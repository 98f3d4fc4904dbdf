"""What a reason code means, from the code lists in ``data/`` (their sources: data/SOURCES.md).

:func:`describe` is what the claims listing calls for each :class:`core.answers.Reason`:
``carc`` (``45``; ``CO-45`` works too), ``rarc`` (``N362``), ``stc`` (``A7:562:85`` -> the
category's text), ``ak`` (``IK3:8``). An unknown code gives "" (the listing then shows the bare
code), never an error: payers send codes newer than any list.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

__all__ = ["describe", "table"]

DATA = Path(__file__).with_name("data")
FILES = {"carc": "carc.csv", "rarc": "rarc.csv", "stc": "claim_status_category.csv", "ak": "ak.csv"}


@cache
def table(kind: str) -> dict[str, str]:
    """code -> description for ``kind`` (one of :data:`FILES`); {} for another kind."""
    name = FILES.get(kind)
    if name is None:
        return {}
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return {row["code"]: row["description"] for row in csv.DictReader(f)}


def describe(kind: str, code: str) -> str:
    code = code.strip().upper()
    if not code:
        return ""
    if kind == "carc":
        return table("carc").get(code.rpartition("-")[2], "")
    if kind == "stc":
        return table("stc").get(code.split(":")[0], "")
    return table(kind).get(code, "")
