"""Database profiles: how one EHR's schema becomes ChargeBridge encounters.

A profile is a TOML file (built-in: ``openemr``, ``opendental``; or a path). It names the
tables and columns its queries need (checked by ``chargebridge db test`` and before every poll,
so a missing column is an error naming it), its watermark strategy and five queries whose
columns are aliased to ChargeBridge's names. The generic format is documented in
``docs/db-profiles.md``.

Strategies:

* ``id_window`` — an increasing line id and no update timestamp (OpenEMR ``billing``). The
  watermark is the highest id seen; each poll re-reads ``id_overlap`` ids below it, because
  auto-increment ids can commit out of order.
* ``timestamp`` — a per-row modification time (Open Dental ``DateTStamp``). The watermark is
  the database server's own clock at query start; each poll re-reads ``overlap_seconds`` before it.

Both re-read a trailing window of ``rescan_days`` (the ``[[databases]]`` setting) and compare a
hash per encounter, which is how an edit or a deletion with no trace in the watermark is found.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "profiles" / "db"
STRATEGIES = ("id_window", "timestamp")
FEE_MEANINGS = ("line_total", "unit_price")
JUSTIFY_FORMATS = ("openemr", "none")
QUERIES_BY_STRATEGY = {
    "id_window": ("max_id", "changed", "lines", "encounters", "coverage"),
    "timestamp": ("server_now", "changed", "lines", "encounters", "coverage"),
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_PROFILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    strategy: str
    tables: dict[str, tuple[str, ...]]
    queries: dict[str, str]
    id_overlap: int = 1000
    overlap_seconds: int = 300
    fee: str = "line_total"
    justify: str = "none"
    modifier_separator: str = ":"
    procedure_types: tuple[str, ...] = ("CPT4", "HCPCS")
    diagnosis_types: tuple[str, ...] = ("ICD10",)
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_profile(spec: str, *, key: str = "profile") -> Profile:
    """A built-in profile by name, or a profile file by path. Errors name ``key``."""
    path = BUILTIN_DIR / f"{spec}.toml" if _NAME.match(spec or "") else Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"'{key}' = {spec!r} is neither a built-in database profile nor a profile file",
                          f"use {', '.join(builtin_names())} or the path to a profile .toml "
                          "(see docs/db-profiles.md)", key=key)
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ConfigError(f"the database profile {path.name} is larger than {MAX_PROFILE_BYTES // 1024} KiB",
                              "a profile holds a few queries; check the path", key=key)
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the database profile {path.name} cannot be read: {type(exc).__name__}",
                          "fix the file (TOML, UTF-8); see docs/db-profiles.md", key=key) from None
    return parse_profile(raw, source=str(path), key=key)


def parse_profile(raw: dict[str, Any], *, source: str = "", key: str = "profile") -> Profile:
    def bad(what: str, fix: str) -> ConfigError:
        return ConfigError(f"database profile {Path(source).name or '?'}: {what}", fix, key=key)

    strategy = raw.get("strategy")
    if strategy not in STRATEGIES:
        raise bad(f"strategy = {strategy!r} is not allowed", f"allowed: {', '.join(STRATEGIES)}")
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, dict) or not tables_raw:
        raise bad("has no [tables] section", "list each table the queries read with its columns")
    tables: dict[str, tuple[str, ...]] = {}
    for t, cols in tables_raw.items():
        if not _NAME.match(t) or not isinstance(cols, list) or not all(
                isinstance(c, str) and _NAME.match(c) for c in cols):
            raise bad(f"[tables] {t!r} must be a list of column names", 'e.g. billing = ["id", "fee"]')
        tables[t] = tuple(cols)
    queries_raw = raw.get("queries")
    if not isinstance(queries_raw, dict):
        raise bad("has no [queries] section", "see docs/db-profiles.md")
    queries: dict[str, str] = {}
    for q in QUERIES_BY_STRATEGY[strategy]:
        text = queries_raw.get(q)
        if not isinstance(text, str) or not text.strip():
            raise bad(f"query {q!r} is missing", f"the {strategy} strategy needs: "
                      f"{', '.join(QUERIES_BY_STRATEGY[strategy])}")
        queries[q] = text
    fee = raw.get("fee", "line_total")
    if fee not in FEE_MEANINGS:
        raise bad(f"fee = {fee!r} is not allowed", f"allowed: {', '.join(FEE_MEANINGS)}")
    justify = raw.get("justify", "none")
    if justify not in JUSTIFY_FORMATS:
        raise bad(f"justify = {justify!r} is not allowed", f"allowed: {', '.join(JUSTIFY_FORMATS)}")
    codes = raw.get("codes", {}) or {}

    def _int(name: str, default: int, lo: int, hi: int) -> int:
        v = raw.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise bad(f"{name} = {v!r} is out of range", f"a whole number from {lo} to {hi}")
        return v

    return Profile(
        name=str(raw.get("name") or Path(source).stem), strategy=strategy, tables=tables, queries=queries,
        id_overlap=_int("id_overlap", 1000, 0, 10_000_000), overlap_seconds=_int("overlap_seconds", 300, 0, 86_400),
        fee=fee, justify=justify, modifier_separator=str(raw.get("modifier_separator", ":"))[:3] or ":",
        procedure_types=tuple(str(x).upper() for x in codes.get("procedure", ["CPT4", "HCPCS"])),
        diagnosis_types=tuple(str(x).upper() for x in codes.get("diagnosis", ["ICD10"])),
        source=source,
    )
