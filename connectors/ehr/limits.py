"""Per-file budgets: how much work one document from outside may cause.

An EHR export is input from outside, and a broken or hostile one must not flood the store,
fill memory or hang the engine. Every limit on *work per file* lives here, with its default;
the ``[ingest]`` section of ``chargebridge.toml`` may override them (same names). The limits on
*values* (units, amounts, lines per encounter) are part of the canonical model:
:data:`core.model.MAX_UNITS`, :data:`core.model.MAX_MONEY`, :data:`core.model.MAX_LINES_PER_ENCOUNTER`
and :func:`core.model.read_decimal`.

=============================  =========  ===================================================
budget                         default    what happens when a file exceeds it
=============================  =========  ===================================================
max_file_mb (config only)      50         refused by size (``stat``), never read
max_unpacked_mb                512        a ZIP whose members unpack to more is refused
                                          (declared sizes; zipfile never inflates past them)
max_zip_ratio                  200        a ZIP member over 1 MiB that unpacks to more than this
                                          many times its packed size is refused (ZIP bomb)
max_rows                       1,000,000  a CSV table (or Synthea member) with more data rows
                                          is refused; the reader stops at the limit
max_lines_per_encounter        999        an encounter with more lines is quarantined; the HL7
                                          reader stops splitting a message at the limit
max_quarantine_per_file        100        after this many quarantine entries for one file, one
                                          more entry says "N more parts like this"
max_json_depth                 (parser)   JSON nested deeper than Python's parser handles is
                                          refused with a message that says so
max_xml_mb                     20         a C-CDA document larger than this is refused
=============================  =========  ===================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Budgets:
    max_unpacked_mb: float = 512
    max_zip_ratio: float = 200
    max_rows: int = 1_000_000
    max_lines_per_encounter: int = 999
    max_quarantine_per_file: int = 100
    max_xml_mb: float = 20

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * MIB)

    @property
    def max_xml_bytes(self) -> int:
        return int(self.max_xml_mb * MIB)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> Budgets:
        """Known keys of a mapping (e.g. a config section) over the defaults; others ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (raw or {}).items() if k in names})


DEFAULT = Budgets()


def of(options: Mapping[str, Any] | None) -> Budgets:
    """The budgets a parser was given in ``options["budgets"]``, else the defaults."""
    b = (options or {}).get("budgets")
    return b if isinstance(b, Budgets) else DEFAULT
