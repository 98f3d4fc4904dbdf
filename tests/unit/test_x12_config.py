"""[practice] and [x12] (H1): validated with their keys; required only for [rcm] type = "x12";
round-trip through the config writer; the FHIR type is unchanged."""

from __future__ import annotations

import tomllib

import pytest

from agent.config import parse
from agent.config_file import config_to_dict, dumps_toml, sections
from core.errors import ConfigError

GOOD = {
    "rcm": {"type": "x12"},
    "practice": {"name": "Springfield FM", "npi": "1234567893", "tax_id": "12-3456789", "taxonomy": "207Q00000X",
                 "phone": "217-555-0100", "pos": "11",
                 "address": {"street": "1 Clinic Way", "city": "Springfield", "state": "il", "zip": "62704-1234"}},
    "x12": {"sender_id": "CBSENDER", "receiver_id": "CLEARHOUSE", "usage": "T", "outbound": "/srv/out",
            "inbound": "sftp://cb@ch.example:2222/in"},
}


def doc(**change):
    d = {k: dict(v) for k, v in GOOD.items()}
    for dotted, val in change.items():
        sec, key = dotted.split("__", 1)
        if key.startswith("address_"):
            d[sec]["address"] = {**d[sec]["address"], key[8:]: val}
        elif val is None:
            d[sec].pop(key)
        else:
            d[sec][key] = val
    return d


def test_a_complete_x12_config_parses_and_round_trips() -> None:
    cfg = parse(doc())
    assert cfg.practice.tax_id == "123456789" and cfg.practice.phone == "2175550100"
    assert cfg.practice.address["state"] == "IL" and cfg.x12.outbound == "/srv/out"
    again = parse(tomllib.loads(dumps_toml(config_to_dict(cfg))))
    assert again.practice == cfg.practice and again.x12 == cfg.x12
    assert {"practice", "x12"} <= set(sections())


@pytest.mark.parametrize("change,key", [
    ({"practice__npi": "1234567890"}, "practice.npi"),
    ({"practice__tax_id": "12345"}, "practice.tax_id"),
    ({"practice__address_state": "Ill"}, "practice.address.state"),
    ({"practice__address_zip": "6270"}, "practice.address.zip"),
    ({"practice__pos": "1"}, "practice.pos"),
    ({"practice__taxonomy": "207Q"}, "practice.taxonomy"),
    ({"practice__name": None}, "practice.name"),
    ({"x12__usage": "X"}, "x12.usage"),
    ({"x12__sender_id": "A" * 16}, "x12.sender_id"),
    ({"x12__receiver_id": None}, "x12.receiver_id"),
    ({"x12__outbound": None}, "x12.outbound"),
    ({"x12__outbound": "ftp://host/dir"}, "x12.outbound"),
    ({"x12__inbound": "sftp://cb:pw@ch.example/in"}, "x12.inbound"),
    ({"x12__surprise": "1"}, "x12.surprise"),
])
def test_bad_values_name_their_key(change, key) -> None:
    with pytest.raises(ConfigError) as ei:
        parse(doc(**change), origin="")
    assert ei.value.key == key, (ei.value.key, ei.value.title)


def test_fhir_needs_no_practice_and_x12_needs_no_base_url() -> None:
    fhir = parse({"rcm": {"type": "fhir", "base_url": "https://rcm.example/fhir", "token_url":
                          "https://rcm.example/token", "client_id": "c"}})
    assert fhir.rcm.type == "fhir" and fhir.practice.npi == ""
    with pytest.raises(ConfigError) as ei:
        parse({"rcm": {"type": "fhir"}}, origin="")
    assert ei.value.key == "rcm.base_url"
    assert parse(doc()).rcm.base_url == ""
