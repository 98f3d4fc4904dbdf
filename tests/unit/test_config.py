from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from core.errors import ConfigError


def load_text(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "chargebridge.toml"
    p.write_text(text)
    return config.load(p)


def test_defaults_when_missing(tmp_path: Path) -> None:
    cfg = config.load(tmp_path / "nope.toml")
    assert cfg.key_source == "keyring" and cfg.folders == [] and cfg.max_file_bytes == 50 * 1024 * 1024


def test_default_template_is_valid(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, config.DEFAULT_CONFIG)
    assert cfg.batch_files == 200


def test_folders(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, f"""
[ingest]
max_file_mb = 1.5
[[folders]]
path = "{tmp_path}/in"
format = "hl7v2"
after = "move"
observer = "polling"
""")
    f = cfg.folders[0]
    assert (f.format, f.after, f.observer) == ("hl7v2", "move", "polling")
    assert f.processed == tmp_path / "in" / "processed" and f.quarantine == tmp_path / "in" / "quarantine"
    assert cfg.max_file_bytes == int(1.5 * 1024 * 1024)


@pytest.mark.parametrize("text,key,allowed", [
    ('[[folders]]\npath = "/x"\nafter = "delete"', "folders[0].after", "archive, move"),
    ('[[folders]]\npath = "/x"\nformat = "xml"', "folders[0].format", "hl7v2"),
    ('[store]\nkey_source = "file"', "store.key_source", "keyring, passphrase"),
    ('[ingest]\nmax_file_mb = "big"', "ingest.max_file_mb", "a number"),
    ('[ingest]\nbatch_files = 0', "ingest.batch_files", "from 1"),
    ('[[folders]]\nformat = "csv"', "folders[0].path", "folder"),
    ('[[folders]]\npath = "/x"\npth = "/y"', "folders[0].pth", "path"),
    ('[bogus]\na = 1', "bogus", "store"),
    ('[ingest\n', "", "syntax"),
])
def test_bad_values_name_key_and_allowed(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_text(tmp_path, text)
    msg = str(ei.value)
    assert key in msg and allowed in msg
    assert ei.value.exit_code == 2


def test_bad_value_errors_carry_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_text(tmp_path, '[[folders]]\npath = "/x"\nafter = "delete"')
    assert ei.value.key == "folders[0].after" and ei.value.to_dict()["key"] == "folders[0].after"


RCM = '[rcm]\ntype = "fhir"\nclient_id = "c"\nbase_url = "{base}"\ntoken_url = "{token}"\n'


@pytest.mark.parametrize("base,token,key", [
    ("http://localhost.attacker.example/fhir", "https://rcm.example/token", "rcm.base_url"),
    ("http://127.0.0.1@attacker.example/fhir", "https://rcm.example/token", "rcm.base_url"),
    ("https://rcm.example/fhir", "http://rcm.example/token", "rcm.token_url"),  # the secret's own URL
    ("https://rcm.example/fhir", "http://127.0.0.1@attacker.example/token", "rcm.token_url"),
    ("https://rcm.example/fhir", "ftp://rcm.example/token", "rcm.token_url"),
])
def test_rcm_urls_are_parsed_not_prefix_checked(tmp_path: Path, base: str, token: str, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_text(tmp_path, RCM.format(base=base, token=token))
    assert ei.value.key == key and ei.value.title.startswith(f"chargebridge.toml: '{key}' ")


def test_loopback_http_and_https_rcm_urls_are_accepted(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, RCM.format(base="http://[::1]:8080/fhir/R4", token="http://localhost:8080/token"))
    assert (cfg.rcm.base_url, cfg.rcm.token_url) == ("http://[::1]:8080/fhir/R4", "http://localhost:8080/token")
    cfg = load_text(tmp_path, RCM.format(base="https://rcm.example/fhir", token="https://auth.example/token"))
    assert cfg.rcm.token_url == "https://auth.example/token"


def test_registered_types_and_formats_are_what_config_allows(tmp_path: Path) -> None:
    from connectors.ehr import FORMATS
    from connectors.rcm import TARGETS

    with pytest.raises(ConfigError) as ei:
        load_text(tmp_path, '[rcm]\ntype = "acme"\n')
    assert ei.value.key == "rcm.type" and all(t in ei.value.fix for t in TARGETS)
    assert config.FORMATS == ("auto", *FORMATS)
