"""EHR formats. Adding one = a module with ``NAME`` + ``parse()`` and a line in ``FORMATS``.

The module provides ``NAME`` (equal to its key here) and
``parse(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]``
(:class:`~connectors.ehr.base.Parser`). :func:`get_parser` checks both when it first loads the
module, so a registration mistake is a clear error naming the module, not an ``AttributeError``
in the middle of an ingest.
"""

from __future__ import annotations

import importlib
import inspect
from typing import cast

from connectors.ehr.base import ParseError, Parser
from core.errors import ChargeBridgeError

FORMATS: dict[str, str] = {
    "hl7v2": "connectors.ehr.hl7v2",
    "csv": "connectors.ehr.csvfmt",
    "fhir": "connectors.ehr.fhir",
    "ccda": "connectors.ehr.ccda",
    "db": "connectors.ehr.dbrows",  # what an EHR database poll read (agent.dbpoll), not a file format
}

_loaded: dict[tuple[str, str], Parser] = {}

_EXT = {
    ".hl7": "hl7v2", ".hl7v2": "hl7v2", ".txt": "", ".dat": "",
    ".csv": "csv", ".tsv": "csv", ".zip": "csv",
    ".json": "fhir", ".ndjson": "fhir",
    ".xml": "ccda", ".ccda": "ccda", ".cda": "ccda",
}


def get_parser(fmt: str, *, registry: dict[str, str] | None = None) -> Parser:
    """The parser registered as ``fmt``, checked against :class:`Parser` on first use.

    An unknown ``fmt`` is a :class:`ParseError` (the document says which format it claims); a
    module that does not keep the contract is a :class:`ChargeBridgeError` naming it."""
    reg = FORMATS if registry is None else registry
    if fmt not in reg:
        raise ParseError(f"unknown format '{fmt}'; known formats: {', '.join(sorted(reg))}")
    modname = reg[fmt]
    parser = _loaded.get((fmt, modname))
    if parser is None:
        parser = _loaded[(fmt, modname)] = _check(fmt, modname)
    return parser


def _check(fmt: str, modname: str) -> Parser:
    def broken(problem: str) -> ChargeBridgeError:
        return ChargeBridgeError(f"the EHR format {fmt!r} ({modname}) is not registered correctly: {problem}",
                                 "this is a defect in ChargeBridge or a plug-in; report it to support")

    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise broken(f"cannot be imported ({type(exc).__name__}: {exc})") from None
    name = getattr(module, "NAME", None)
    if name != fmt:
        raise broken(f"its NAME is {name!r}, not {fmt!r}")
    parse = getattr(module, "parse", None)
    if not callable(parse):
        raise broken("it has no parse(data, *, name, options) function")
    try:
        sig = inspect.signature(parse)
        sig.bind(b"", name="", options={})
    except TypeError:
        raise broken("parse() does not take (data, *, name, options)") from None
    except ValueError:  # no signature to inspect (a builtin): nothing more to check
        return cast(Parser, module)
    first = next(iter(sig.parameters.values()))
    if first.kind not in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        raise broken("parse() must take the document's bytes as its first positional argument")
    return cast(Parser, module)


def detect_format(name: str, head: bytes) -> str:
    """Guess the format from the file name, then from the first bytes; "" if unknown."""
    lower = name.lower()
    for ext, fmt in _EXT.items():
        if lower.endswith(ext) and fmt:
            return fmt
    h = head.lstrip(b"\xef\xbb\xbf\x0b \t\r\n")
    if h.startswith((b"MSH", b"FHS", b"BHS")):
        return "hl7v2"
    if h.startswith((b"{", b"[")):
        return "fhir"
    if h.startswith(b"<"):
        return "ccda"
    if h.startswith(b"PK\x03\x04"):
        return "csv"
    if b"," in h.split(b"\n", 1)[0] or b";" in h.split(b"\n", 1)[0]:
        return "csv"
    return ""
