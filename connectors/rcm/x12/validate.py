"""Validate an X12 interchange with pyx12, in-process: a list of problems people can read.

pyx12 (``x12n_document``) walks the file against its 005010X222A1 map — loops, segment and
element presence, lengths, code values, HL parents, SE/GE/IEA counts — and collects errors in
a tree, which its JSON visitor turns into a document. Each problem comes back here as an
:class:`Issue`: the segment's line in the file, the segment id, the element (``HI01-02``) and
a message. pyx12's own texts quote the offending value (a name, a member id, a code); those
values are dropped — a message here names the element and what is wrong, never the value —
and pyx12's logger, which prints the same texts, is silenced.

Speed (issue 10). pyx12's own entry point, ``x12n_document``, parses its XML maps (the control
map, the map index and the 837P map: about a second) on *every* call, and can also write HTML,
XML and 997/999 documents we do not want. :func:`validate` drives the same pyx12 pieces in the
same order — ``X12Reader``, ``walk_tree.walk_errors``, ``apply_segment_errors``, the
``err_handler`` tree and its JSON visitor — with the loaded maps kept for the life of the
process (loaded once, under a lock; pyx12 reads them and never writes them while validating:
loop and segment counts live in the walker's ``NodeCounter``). ``tests/unit/test_x12_validate.py``
checks that this driver reports exactly what ``x12n_document`` reports, file by file.

What is left is pyx12 walking every segment in pure Python (a few milliseconds per claim).
:func:`validate_many` spreads several interchanges over worker processes (spawned, each keeping
its own loaded maps), which is how the X12 target validates a large push: one interchange per
:data:`CLAIMS_PER_FILE` claims, validated side by side.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

_LOG_QUIET = False
_LOCK = threading.Lock()
_POOL_LOCK = threading.Lock()
_POOL: Executor | None = None
_POOL_SIZE = 0
MAX_WORKERS = 4  # validation processes at most (each holds its own copy of the maps, ~60 MB)

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
# pyx12's walker quotes the segment it could not place ("Segment N3*<street> not found.  Started at
# <loop path>"): keep the segment id and the path, drop the value
_NOT_FOUND = re.compile(r"Segment ([A-Z0-9]{2,3})\*.*?(?= not found\.)")


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
    out = _NOT_FOUND.sub(r"Segment \1", message)
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


@dataclass
class _Maps:
    """pyx12's parsed maps, shared by every validation in this process."""

    params: Any
    index: Any
    by_file: dict[str, Any] = field(default_factory=dict)


_MAPS: _Maps | None = None


def _maps() -> _Maps:
    global _MAPS
    if _MAPS is None:
        with _LOCK:
            if _MAPS is None:
                import pyx12.map_index  # type: ignore[import-untyped]
                import pyx12.params  # type: ignore[import-untyped]

                _quiet()
                _MAPS = _Maps(params=pyx12.params.ParamsBase(), index=pyx12.map_index.map_index())
    return _MAPS


def _map(file_name: str) -> Any:
    """The parsed pyx12 map ``file_name`` (e.g. ``837.5010.X222.A1.xml``), loaded once."""
    maps = _maps()
    found = maps.by_file.get(file_name)
    if found is None:
        with _LOCK:
            found = maps.by_file.get(file_name)
            if found is None:
                import pyx12.map_if  # type: ignore[import-untyped]

                found = pyx12.map_if.load_map_file(file_name, maps.params)
                maps.by_file[file_name] = found
    return found


def warm() -> None:
    """Load the control map and the 837P map now (the engine's first sync then pays nothing)."""
    maps = _maps()
    _map("x12.control.00501.xml")
    name = maps.index.get_filename("00501", "005010X222A1", "HC")
    if name:
        _map(name)


class _Unreadable(Exception):
    """The file is not an interchange pyx12 can walk (no ISA, no map for its GS)."""


def _walk(textdata: str) -> Any:
    """pyx12's validation of ``textdata``: its ``err_handler`` tree. The steps and their order
    are ``pyx12.x12n_document.x12n_document``'s (pyx12 4), without its HTML / XML / 997 output
    and with the maps from :func:`_map`."""
    import pyx12.error_handler  # type: ignore[import-untyped]
    import pyx12.errors  # type: ignore[import-untyped]
    import pyx12.x12file  # type: ignore[import-untyped]
    from pyx12.map_if._segment import apply_segment_errors  # type: ignore[import-untyped]
    from pyx12.map_walker import apply_walk_errors, walk_tree  # type: ignore[import-untyped]

    maps = _maps()
    errh = pyx12.error_handler.err_handler()
    try:
        src = pyx12.x12file.X12Reader(io.StringIO(textdata))
    except pyx12.errors.X12Error:
        raise _Unreadable from None
    map_file = "x12.control.00501.xml" if src.icvn == "00501" else "x12.control.00401.xml"
    control = _map(map_file)
    node = control.getnodebypath("/ISA_LOOP/ISA")
    walker = walk_tree()
    icvn = vriic = fic = None
    valid = True
    for seg in src:
        orig_node = node
        seg_id = seg.get_seg_id()
        if seg_id == "ISA":
            node = control.getnodebypath("/ISA_LOOP/ISA")
            walker.forceWalkCounterToLoopStart("/ISA_LOOP", "/ISA_LOOP/ISA")
        elif seg_id == "GS":
            node = control.getnodebypath("/ISA_LOOP/GS_LOOP/GS")
            walker.forceWalkCounterToLoopStart("/ISA_LOOP/GS_LOOP", "/ISA_LOOP/GS_LOOP/GS")
        else:
            node, _pop, _push, walk_errors = walker.walk_errors(node, seg, src.get_seg_count(), src.get_cur_line(),
                                                                src.get_ls_id())
            apply_walk_errors(errh, walk_errors)
        if node is None:
            node = orig_node
            continue
        if seg_id == "ISA":
            errh.add_isa_loop(seg, src)
            icvn = seg.get_value("ISA12")
            errh.handle_errors(src.pop_errors())
        elif seg_id == "IEA":
            errh.handle_errors(src.pop_errors())
            errh.close_isa_loop(node, seg, src)
        elif seg_id == "GS":
            fic = seg.get_value("GS01")
            vriic = seg.get_value("GS08")
            new_file = maps.index.get_filename(icvn, vriic, fic)
            if new_file is None:
                raise _Unreadable
            if new_file != map_file:
                map_file = new_file
                cur_map = _map(map_file)
                src.check_837_lx = cur_map.id == "837"
            else:
                cur_map = _map(map_file)
            node = cur_map.getnodebypath("/ISA_LOOP/GS_LOOP/GS")
            errh.add_gs_loop(seg, src)
            errh.handle_errors(src.pop_errors())
        elif seg_id == "GE":
            errh.handle_errors(src.pop_errors())
            errh.close_gs_loop(node, seg, src)
        elif seg_id == "ST":
            errh.add_st_loop(seg, src)
            errh.handle_errors(src.pop_errors())
        elif seg_id == "SE":
            errh.handle_errors(src.pop_errors())
            errh.close_st_loop(node, seg, src)
        else:  # BHT included: its 4010-837 map switch does not apply to 5010
            errh.add_seg(node, seg, src.get_seg_count(), src.get_cur_line(), src.get_ls_id())
            errh.handle_errors(src.pop_errors())
        valid &= apply_segment_errors(node, seg, errh)
    src.cleanup()  # loop trailers the file skipped
    errh.handle_errors(src.pop_errors())
    src.close()
    return valid, errh


def validate(data: str | bytes) -> list[Issue]:
    """Every problem pyx12 finds in ``data`` (an empty list: the file is valid)."""
    import pyx12.errh_json  # type: ignore[import-untyped]
    import pyx12.errors

    _quiet()
    textdata = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    try:
        ok, errh = _walk(textdata)
    except (_Unreadable, pyx12.errors.X12Error, pyx12.errors.EngineError) as exc:
        what = "_Unreadable" if isinstance(exc, _Unreadable) else type(exc).__name__
        return [Issue(0, "", "", f"the file is not a readable X12 interchange ({what})")]
    visitor = pyx12.errh_json.errh_json_visitor(io.StringIO(), indent=None)
    errh.accept(visitor)
    issues = _issues(visitor.doc) + _envelope_element_issues(errh)
    if not ok and not issues:
        issues.append(Issue(0, "", "", "pyx12 refused the file without saying why"))
    return issues


def _pool(workers: int) -> Executor | None:
    """The validation processes (spawned: never a fork of an engine that runs threads), started on
    first use and kept; None when this machine has one core."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is not None and workers <= _POOL_SIZE:
            return _POOL
        if workers < 2:
            return None
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if _POOL is not None:
            _POOL.shutdown(wait=True)
        _POOL = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=warm)
        _POOL_SIZE = workers
        return _POOL


def shutdown_pool() -> None:
    """Stop the validation processes (at exit; tests)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL, _POOL_SIZE = None, 0


atexit.register(shutdown_pool)


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def validate_many(texts: Sequence[str | bytes], *, workers: int | None = None) -> list[list[Issue]]:
    """:func:`validate` for each interchange in ``texts``, in order; several at once in worker
    processes when there is more than one and more than one core. A worker that fails (killed,
    out of memory) is not trusted: its file is validated again here."""
    n = default_workers() if workers is None else workers
    n = min(n, len(texts))
    pool = _pool(n) if n > 1 else None
    if pool is None:
        return [validate(t) for t in texts]
    futures = [pool.submit(validate, t) for t in texts]
    out: list[list[Issue]] = []
    for text_, fut in zip(texts, futures, strict=True):
        try:
            out.append(fut.result())
        except Exception as exc:  # a broken worker: do it here (the pool is rebuilt on next use)
            logging.getLogger("chargebridge.rcm.x12").warning("X12 validation worker failed (%s); validating "
                                                              "in-process", type(exc).__name__)
            shutdown_pool()
            out.append(validate(text_))
    return out


def _envelope_element_issues(errh: Any) -> list[Issue]:
    """Element errors in ISA / GS / ST themselves (a bad GS04 date): pyx12 keeps them on those
    nodes, where its JSON visitor does not look."""
    found: list[Issue] = []

    def take(node: Any, seg_id: str) -> None:
        for ele in getattr(node, "elements", []):
            name = _element_name(seg_id, {"ele_pos": ele.ele_pos, "subele_pos": ele.subele_pos})
            for cde, err_str, err_val in ele.errors:
                what = _ELEMENT_ERRORS.get(str(cde))
                msg = f"{ele.name or ''} {what}" if what else _scrub(err_str, err_val)
                found.append(Issue(int(node.get_cur_line() or 0), seg_id, name, msg.strip()))

    for isa in errh.children:
        take(isa, "ISA")
        for gs in isa.children:
            take(gs, "GS")
            for st in gs.children:
                take(st, "ST")
    return found


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
