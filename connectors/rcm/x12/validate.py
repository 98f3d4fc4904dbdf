"""Validate an X12 interchange with pyx12, in-process: a list of problems people can read.

pyx12 (``x12n_document``) walks the file against its 005010X222A1 map — loops, segment and
element presence, lengths, code values, HL parents, SE/GE/IEA counts — and collects errors in
a tree, which its JSON visitor turns into a document. Each problem comes back here as an
:class:`Issue`: the segment's line in the file, the segment id, the element (``HI01-02``) and
a message. pyx12's own texts quote the offending value (a name, a member id, a code); those
values are dropped — a message here names the element and what is wrong, never the value —
and pyx12's logger, which prints the same texts, is silenced.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

_LOG_QUIET = False

# IK403 / 999 element error codes (what pyx12 reports per element)
_ELEMENT_ERRORS = {
    "1": "is required but missing",
    "2": "is required by another element but missing",
    "3": "appears too many times",
    "4": "is too short",
    "5": "is too long",
    "6": "holds a character that is not allowed",
    "7": "is not a valid code",
    "8": "is not a valid date",
    "9": "is not a valid time",
    "10": "must not be present with another element",
    "12": "repeats too many times",
    "13": "is too many components",
    "I10": "is not used in this implementation",
    "I11": "is not used in this implementation",
    "I12": "does not match the implementation pattern",
    "I13": "is required by the implementation but missing",
    "I6": "is not a valid code for this implementation",
    "I9": "is an implementation dependent element that is missing",
}
_QUOTED = re.compile(r"\([^()]*\)|\"[^\"]*\"|'[^']*'")


@dataclass(frozen=True)
class Issue:
    line: int  # the segment's line in the file (1 = ISA); 0 when pyx12 gives none
    segment: str  # e.g. "HI", "CLM", "SE"; "" for an envelope-level problem
    element: str  # e.g. "HI01-02"; "" for a segment-level problem
    message: str  # for people; never a value from the file

    def __str__(self) -> str:
        where = self.element or self.segment or "interchange"
        return f"{where} (segment {self.line}): {self.message}" if self.line else f"{where}: {self.message}"


def _quiet() -> None:
    """pyx12 logs its error texts (which quote values) at ERROR level: keep them out of our logs."""
    global _LOG_QUIET
    if not _LOG_QUIET:
        lg = logging.getLogger("pyx12")
        lg.setLevel(logging.CRITICAL + 1)
        lg.propagate = False
        lg.addHandler(logging.NullHandler())
        _LOG_QUIET = True


def _scrub(message: str, value: Any) -> str:
    """pyx12's text without the value it quotes."""
    out = message
    if value not in (None, ""):
        out = out.replace(str(value), "…")
    return " ".join(_QUOTED.sub(lambda m: m.group(0) if "…" not in m.group(0) else "", out).split())


def _element_name(seg_id: str, ele: dict[str, Any]) -> str:
    pos = ele.get("ele_pos")
    sub = ele.get("subele_pos")
    if not isinstance(pos, int):
        return seg_id
    name = f"{seg_id}{pos:02d}"
    return f"{name}-{sub:02d}" if isinstance(sub, int) else name


def validate(data: str | bytes) -> list[Issue]:
    """Every problem pyx12 finds in ``data`` (an empty list: the file is valid)."""
    import pyx12.errors  # type: ignore[import-untyped]
    import pyx12.params  # type: ignore[import-untyped]
    import pyx12.x12n_document  # type: ignore[import-untyped]

    _quiet()
    textdata = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    out = io.StringIO()
    try:
        ok = pyx12.x12n_document.x12n_document(pyx12.params.ParamsBase(), io.StringIO(textdata), None, None,
                                               fd_json=out)
    except (pyx12.errors.X12Error, pyx12.errors.EngineError) as exc:
        return [Issue(0, "", "", f"the file is not a readable X12 interchange ({type(exc).__name__})")]
    issues = _issues(json.loads(out.getvalue() or '{"interchanges": []}'))
    if not ok and not issues:
        issues.append(Issue(0, "", "", "pyx12 refused the file without saying why"))
    return issues


def _issues(doc: dict[str, Any]) -> list[Issue]:
    found: list[Issue] = []
    for isa in doc.get("interchanges", []):
        for e in isa.get("errors", []):
            found.append(Issue(int(isa.get("cur_line") or 0), "ISA", "", _scrub(e.get("err_str", ""), None)))
        for gs in isa.get("groups", []):
            for e in gs.get("errors", []):
                found.append(Issue(int(gs.get("cur_line") or 0), "GS", "", _scrub(e.get("err_str", ""), None)))
            for st in gs.get("transactions", []):
                for e in st.get("errors", []):
                    found.append(Issue(int(st.get("cur_line") or 0), "ST", "", _scrub(e.get("err_str", ""), None)))
                for sg in st.get("segments", []):
                    seg_id = str(sg.get("seg_id") or "")
                    line = int(sg.get("cur_line") or 0)
                    for e in sg.get("errors", []):
                        found.append(Issue(line, seg_id, "", _scrub(e.get("err_str", ""), e.get("err_val"))))
                    for ele in sg.get("elements", []):
                        name = _element_name(seg_id, ele)
                        label = str(ele.get("name") or "")
                        for e in ele.get("errors", []):
                            what = _ELEMENT_ERRORS.get(str(e.get("err_cde")))
                            msg = (f"{label} {what}" if what else _scrub(e.get("err_str", ""), e.get("err_val")))
                            found.append(Issue(line, seg_id, name, msg.strip()))
    return found


def summary(issues: list[Issue], *, limit: int = 3) -> str:
    """One line for an outbox reason: the first few problems and how many more."""
    head = "; ".join(str(i) for i in issues[:limit])
    more = len(issues) - limit
    return f"{head}; and {more} more" if more > 0 else head
