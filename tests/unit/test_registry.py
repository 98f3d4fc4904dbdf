"""The plug-in registries: an RCM vendor or an EHR format is one module plus one line, and a
module that does not keep the seam's contract is refused by name when it is loaded."""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import pytest

from connectors import ehr, rcm
from connectors.ehr.base import ParseError, Parser
from connectors.rcm.base import PushResult, RemoteCharge, Target, TargetError, TargetSettings
from core.errors import ChargeBridgeError, ConfigError
from core.model import Encounter, Parsed
from core.states import TargetErrorKind


def _module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> str:
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return name


class _Vendor:
    """A complete target of a made-up vendor."""

    name = "acme"

    def __init__(self, settings: TargetSettings, secret: str) -> None:
        self.settings, self.secret = settings, secret

    def identifier(self, enc: Encounter) -> str:
        return f"acme:{enc.source_id}"

    def push(self, encounters: Sequence[Encounter], *,
             corrections: Mapping[str, str] | None = None) -> list[PushResult]:
        return [PushResult(e.business_key, True) for e in encounters]

    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]:
        return []

    def check(self) -> tuple[bool, str]:
        return True, "ok"


def test_registered_types_are_the_registry() -> None:
    assert rcm.target_types() == tuple(rcm.TARGETS) and "fhir" in rcm.target_types()


def test_fhir_is_built_through_the_registry_and_keeps_the_seam() -> None:
    t = rcm.make_target("fhir", TargetSettings(base_url="https://rcm.example.com/fhir/R4",
                                               token_url="https://rcm.example.com/token", client_id="c"), "s")
    assert isinstance(t, Target) and t.name == "fhir"
    enc = Encounter(source="hl7v2", source_id="V1", source_system="EHR A")
    assert t.identifier(enc) == "EHR%20A:V1"


def test_a_new_vendor_is_one_module_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(monkeypatch, "cb_test_acme", NAME="acme", make=_Vendor)
    t = rcm.make_target("acme", TargetSettings(base_url="https://acme.example"), "k", registry={"acme": mod})
    assert isinstance(t, _Vendor) and t.secret == "k" and t.settings.base_url == "https://acme.example"


def test_unknown_type_is_a_config_error_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as ei:
        rcm.make_target("acme", TargetSettings(base_url="https://x"), "s")
    assert ei.value.key == "rcm.type" and "fhir" in ei.value.fix


@pytest.mark.parametrize("attrs,problem", [
    ({"make": _Vendor}, "its NAME is None"),
    ({"NAME": "other", "make": _Vendor}, "its NAME is 'other'"),
    ({"NAME": "acme"}, "no make(settings, secret)"),
    ({"NAME": "acme", "make": "not callable"}, "no make(settings, secret)"),
    ({"NAME": "acme", "make": lambda settings: _Vendor(settings, "")}, "does not take (settings, secret)"),
    ({"NAME": "acme", "make": lambda settings, secret: object()}, "returned a object without name, identifier"),
])
def test_a_broken_vendor_module_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, attrs: dict[str, Any],
                                                  problem: str) -> None:
    mod = _module(monkeypatch, "cb_test_broken_vendor", **attrs)
    with pytest.raises(ChargeBridgeError) as ei:
        rcm.make_target("acme", TargetSettings(base_url="https://acme.example"), "k", registry={"acme": mod})
    assert "cb_test_broken_vendor" in ei.value.title and problem in ei.value.title, ei.value.title
    assert not isinstance(ei.value, ConfigError) and ei.value.fix


def test_a_vendor_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ChargeBridgeError, match="cb_test_no_such_module.*cannot be imported"):
        rcm.factory("acme", registry={"acme": "cb_test_no_such_module"})


def test_target_error_kind_is_the_enum_and_retryable_follows_it() -> None:
    assert TargetError("x", kind=TargetErrorKind.AUTH).retryable is False
    assert TargetError("x", kind=TargetErrorKind.SERVER).retryable is True
    e = TargetError("x", kind=TargetErrorKind.PROTOCOL, retryable=True)  # the connector knows better
    assert e.retryable is True and e.kind is TargetErrorKind.PROTOCOL
    assert TargetError("x", kind="timeout").kind is TargetErrorKind.TIMEOUT  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TargetError("x", kind="oops")  # type: ignore[arg-type]


# -- EHR formats ------------------------------------------------------------------------------------------
def _parse_ok(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]:
    return []


@pytest.mark.parametrize("fmt", sorted(ehr.FORMATS))
def test_every_registered_format_keeps_the_parser_contract(fmt: str) -> None:
    p = ehr.get_parser(fmt)
    assert p.NAME == fmt and callable(p.parse)
    assert ehr.get_parser(fmt) is p  # checked once, then cached


def test_a_new_format_is_one_module_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(monkeypatch, "cb_test_x12", NAME="x12", parse=_parse_ok)
    p: Parser = ehr.get_parser("x12", registry={"x12": mod})
    assert p.parse(b"", name="f", options={}) == []


def test_unknown_format_is_a_parse_error_listing_the_known_ones() -> None:
    with pytest.raises(ParseError, match="unknown format 'x12'; known formats: ccda, csv, db, fhir, hl7v2"):
        ehr.get_parser("x12")


@pytest.mark.parametrize("attrs,problem", [
    ({"parse": _parse_ok}, "its NAME is None"),
    ({"NAME": "csv", "parse": _parse_ok}, "its NAME is 'csv'"),
    ({"NAME": "x12"}, "no parse(data, *, name, options)"),
    ({"NAME": "x12", "parse": lambda data: []}, "does not take (data, *, name, options)"),
    ({"NAME": "x12", "parse": lambda data, name: []}, "does not take (data, *, name, options)"),
    ({"NAME": "x12", "parse": lambda *, data=b"", name, options: []}, "first positional argument"),
])
def test_a_broken_format_module_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, attrs: dict[str, Any],
                                                  problem: str, request: pytest.FixtureRequest) -> None:
    modname = f"cb_test_broken_fmt_{request.node.callspec.id.replace('-', '_')}"
    mod = _module(monkeypatch, modname, **attrs)
    with pytest.raises(ChargeBridgeError) as ei:
        ehr.get_parser("x12", registry={"x12": mod})
    assert modname in ei.value.title and problem in ei.value.title, ei.value.title
