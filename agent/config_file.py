"""Writing ``chargebridge.toml``: the config back to its TOML shape, written atomically and
re-validated, plus the checks the API applies to a config document before it is saved.

Reading and validating stays in :mod:`agent.config`; this module only produces files that
:func:`agent.config.parse` accepts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from agent.config import Config, parse
from core.errors import ConfigError

SECRET_KEYS = ("client_secret", "secret", "token", "password")
CONFIG_HEADER = ("# ChargeBridge configuration, written by ChargeBridge (Settings / first-run wizard).\n"
                 "# Secrets are not here: they live in the OS keyring. See README.md for every key.")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """``Config`` back to the TOML shape :func:`agent.config.parse` reads (every key explicit).

    There is no secret to leave out: the config never holds one (parse refuses them)."""
    def folder(fc: Any) -> dict[str, Any]:
        # every FolderConfig field, so a key added there round-trips without a change here
        out: dict[str, Any] = {}
        for f in fields(fc):
            v = getattr(fc, f.name)
            out[f.name] = "" if v is None else str(v) if isinstance(v, Path) else v
        return out

    ingest: dict[str, Any] = {"max_file_mb": cfg.max_file_mb, "batch_files": cfg.batch_files,
                              "chargemaster": cfg.chargemaster}
    budgets = getattr(cfg, "budgets", None)  # per-file ingest budgets live in [ingest] too
    if budgets is not None and is_dataclass(budgets) and not isinstance(budgets, type):
        ingest.update(asdict(budgets))
    return {
        "store": {"key_source": cfg.key_source},
        "ingest": ingest,
        "rcm": asdict(cfg.rcm),
        "sync": asdict(cfg.sync),
        "api": asdict(cfg.api),
        "backup": asdict(cfg.backup),  # [backup] and [retention]: agent/backup.py, agent/retention.py
        "retention": asdict(cfg.retention),
        "folders": [folder(f) for f in cfg.folders],
        "databases": [asdict(d) for d in getattr(cfg, "databases", [])],
        "rules": asdict(cfg.rules),  # [rules] (H7): charge rules on/off and severities
        "practice": asdict(cfg.practice),  # [practice] + [x12] (H1): the clearinghouse channel
        "x12": asdict(cfg.x12),
        "goals": cfg.goals.to_toml(),  # [goals] and [alerts] (H5): agent/kpi_config.py
        "alerts": asdict(cfg.alerts),
        "mode": asdict(cfg.mode),  # [mode] (H8): test mode; switched off by go-live (agent/golive.py)
    }


def sections() -> list[str]:
    """The top-level sections a complete config document has."""
    return list(config_to_dict(Config()))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # a JSON string is a TOML basic string, except that TOML also forbids a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table ([goals]: denial_rate = { target = 5.0 }; [practice] address)
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write a {type(v).__name__} to chargebridge.toml")


def dumps_toml(data: dict[str, Any], *, header: str = "") -> str:
    """The small TOML subset the config uses: tables of scalars and one array of tables.

    Hand-written because the standard library only reads TOML; the result is re-read with
    ``tomllib`` and re-validated by :func:`write_config` before it replaces the file."""
    out = [header.rstrip()] if header else []
    for key, val in data.items():
        if isinstance(val, dict):
            out.append(f"\n[{key}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in val.items() if v is not None]
    for key, val in data.items():
        if isinstance(val, list) and all(isinstance(x, dict) for x in val):
            for item in val:
                out.append(f"\n[[{key}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(out) + "\n"


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Write ``chargebridge.toml`` atomically: a temp file in the same folder, fsync, rename.

    A reader (or a crash) sees the old file or the new one, never half of one. The text is
    parsed back and validated first, so a file this writes always loads."""
    text = dumps_toml(data, header=CONFIG_HEADER)
    parse(tomllib.loads(text), origin=path.name)  # raises ConfigError naming the key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".chargebridge.", suffix=".toml.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if os.name == "posix":
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- checks on a config document from outside -----------------------------------------------------
_QUOTED_KEY = re.compile(r"'([A-Za-z_][A-Za-z0-9_.\[\]]*)'")


def with_key(exc: ConfigError) -> ConfigError:
    """The same error with ``key`` set to the config key its title names (``agent.config``'s
    messages quote it: ``chargebridge.toml: 'rcm.base_url' must use https``)."""
    if not exc.key:
        m = _QUOTED_KEY.search(exc.title)
        if m:
            exc.key = m.group(1)
    return exc


def refuse_secrets(body: Any, where: str = "") -> None:
    """Secrets never travel in a config document, whatever the section (parse checks [rcm] only)."""
    if isinstance(body, dict):
        for k, v in body.items():
            if str(k).lower() in SECRET_KEYS:
                key = f"{where}{k}"
                raise ConfigError(f"chargebridge.toml: '{key}' must not be in the config (secrets live in the "
                                  "OS keyring)", "send it to POST /api/v1/rcm/secret instead", key=key)
            refuse_secrets(v, f"{where}{k}.")
    elif isinstance(body, list):
        for i, v in enumerate(body):
            refuse_secrets(v, f"{where.rstrip('.')}[{i}].")


OPTIONAL_SECTIONS = ("mode",)  # a document without them keeps the file's (EngineService.put_config)


def require_complete(body: dict[str, Any]) -> None:
    """A full document names every section, so a save never drops one (and its folders) by omission."""
    for name in sections():
        if name not in body and name not in OPTIONAL_SECTIONS:
            raise ConfigError(f"the config document has no '{name}' section",
                              "send the complete document (as GET /api/v1/config returns it), or use PATCH "
                              "to change only some sections", key=name)


def merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each top-level section of ``part`` replacing the one it names (a list such as
    ``folders`` is replaced whole)."""
    out = dict(base)
    out.update(part)
    return out


def validate(doc: dict[str, Any]) -> Config:
    """Validate with the engine's start-up rules; the error's ``key`` names the config key at fault."""
    refuse_secrets(doc)
    try:
        return parse(doc, origin="")  # a form points at the field by key; no file name in the title
    except ConfigError as exc:
        raise with_key(exc) from None
    except (TypeError, ValueError, OverflowError):  # a shape parse does not expect (never echoed)
        raise ConfigError("the config document has a value of the wrong kind",
                          "send the document in the shape GET /api/v1/config returns") from None
