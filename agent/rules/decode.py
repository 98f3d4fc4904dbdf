"""Stored encounters decoded for a rules re-run, at a fraction of :meth:`Encounter.from_dict`'s cost.

A re-run reads every encounter not yet sent (100,000 and more after a rule change or an MUE
import). ``Encounter.from_dict`` calls each dataclass's generated ``__init__`` with keyword
arguments, once per patient, address, provider, coverage, diagnosis and line: that was a sixth
of the re-run's time. Here each object is made with ``object.__new__`` and given the decoded
JSON object as its ``__dict__`` — the same classes, the same attributes, no copies. Fields the
stored form leaves out while empty (``Coverage.start``/``end``) are filled in, so the objects
behave exactly like decoded ones (``to_dict`` included); so is ``Encounter.evidence``.

Only for JSON this program wrote itself (``Encounter.to_json`` in the store): anything that
does not have the stored shape falls back to ``Encounter.from_dict``, which checks the fields.
"""

from __future__ import annotations

from typing import Any

from core.model import Address, ChargeLine, Coverage, Diagnosis, Encounter, Evidence, Patient, Provider

_new = object.__new__


def _fields(cls: type[Any]) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__)


_ENC, _PAT, _ADDR, _PROV = _fields(Encounter), _fields(Patient), _fields(Address), _fields(Provider)
_COV, _DX, _LINE = _fields(Coverage), _fields(Diagnosis), _fields(ChargeLine)
_COV_MIN = _COV - {"start", "end"}  # left out of the stored form while empty
_ENC_MIN = _ENC - {"evidence"}  # the same
_EVIDENCE = _fields(Evidence)


def _obj(cls: type[Any], d: dict[str, Any]) -> Any:
    o = _new(cls)
    o.__dict__ = d
    return o


def _stored_shape(d: dict[str, Any]) -> bool:
    try:
        p = d["patient"]
        return ((d.keys() == _ENC_MIN or (d.keys() == _ENC and all(x.keys() == _EVIDENCE for x in d["evidence"])))
                and p.keys() == _PAT and p["address"].keys() == _ADDR
                and d["rendering"].keys() == _PROV and d["billing"].keys() == _PROV
                and all(x.keys() == _LINE for x in d["lines"]) and all(x.keys() == _DX for x in d["diagnoses"])
                and all(_COV_MIN <= c.keys() <= _COV for c in d["coverages"]))
    except (KeyError, TypeError, AttributeError):
        return False


def stored_encounter(d: dict[str, Any]) -> Encounter:
    """The encounter a stored JSON object (``json.loads(encounters.data)``) holds; ``d`` is reused."""
    if not _stored_shape(d):
        return Encounter.from_dict(d)  # checks the fields (and raises on ones it does not know)
    p = d["patient"]
    p["address"] = _obj(Address, p["address"])
    d["patient"] = _obj(Patient, p)
    for c in d["coverages"]:
        if "end" not in c or "start" not in c:
            c.setdefault("start", "")
            c.setdefault("end", "")
    d["coverages"] = [_obj(Coverage, c) for c in d["coverages"]]
    d["rendering"] = _obj(Provider, d["rendering"])
    d["billing"] = _obj(Provider, d["billing"])
    d["diagnoses"] = [_obj(Diagnosis, x) for x in d["diagnoses"]]
    d["lines"] = [_obj(ChargeLine, x) for x in d["lines"]]
    d["evidence"] = [_obj(Evidence, x) for x in d.get("evidence", ())]
    enc: Encounter = _obj(Encounter, d)
    return enc
