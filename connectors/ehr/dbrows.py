"""The ``db`` format: a poll's encounters as stored in the encrypted store.

A database poll (``agent.dbpoll``) writes what it read as one raw document, JSON of canonical
encounter dicts, in the same transaction as its cursor; this reader turns the document back into
encounters for the pipeline, so database encounters are standardized, validated, deduped and
revised exactly like those from files. A part that does not have the shape is a Rejected part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.ehr.base import ParseError
from core.model import Encounter, Parsed, Rejected

NAME = "db"
MAGIC = "chargebridge-db-poll"


def parse(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]:
    budgets = options.get("budgets")
    max_rows = int(getattr(budgets, "max_rows", 1_000_000))
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ParseError("the database poll document is not valid JSON; poll the database again") from None
    if not isinstance(doc, dict) or doc.get("format") != MAGIC or not isinstance(doc.get("encounters"), list):
        raise ParseError("this document is not a ChargeBridge database poll")
    items = doc["encounters"]
    if len(items) > max_rows:
        raise ParseError(f"the poll holds {len(items):,} encounters, over the budget of {max_rows:,} "
                         "(ingest.max_rows)")
    out: list[Parsed] = []
    for i, d in enumerate(items):
        try:
            if not isinstance(d, dict):
                raise TypeError
            out.append(Encounter.from_dict(d))
        except (TypeError, ValueError, KeyError):
            out.append(Rejected(f"encounter {i + 1}", "the encounter read from the database does not have the "
                                "expected shape; run chargebridge db test and poll again"))
    return out
