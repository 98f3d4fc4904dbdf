"""``[[databases]]`` in chargebridge.toml: the EHR databases ChargeBridge polls (read-only).

```toml
[[databases]]
name = "openemr"
url = "mysql+pymysql://cb_reader@127.0.0.1:3306/openemr"   # no password here
profile = "openemr"            # openemr | opendental | path to a profile .toml
poll_minutes = 2
rescan_days = 45
max_rows = 2000000             # rows one poll may read; over it the poll stops with a reason
```

The password lives in the OS keyring (``chargebridge db set-password NAME``); a URL that holds
one is refused. Parsed here so :mod:`agent.config` only wires it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DRIVERS = ("mysql+pymysql", "mariadb+pymysql", "postgresql+psycopg", "sqlite", "mssql+pyodbc")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass
class DatabaseConfig:
    name: str
    url: str
    profile: str = "openemr"
    poll_minutes: float = 2.0
    rescan_days: int = 45
    max_rows: int = 2_000_000

    @property
    def secret_name(self) -> str:
        """The keyring entry of this database's password (see core.secrets)."""
        return f"db-password:{self.name}"


def parse_databases(v: Any, items: Any) -> list[DatabaseConfig]:
    """``v`` is agent.config's validator (messages name the key and what is allowed)."""
    if not isinstance(items, list):
        v.fail("databases", "must be an array of tables ([[databases]])", '[[databases]] name = "..."')
    out: list[DatabaseConfig] = []
    allowed = {"name", "url", "profile", "poll_minutes", "rescan_days", "max_rows"}
    for i, d in enumerate(items):
        key = f"databases[{i}]"
        if not isinstance(d, dict):
            v.fail(key, "must be a table", '[[databases]] name = "..."')
        for k in d:
            if k in ("password", "secret"):
                v.fail(f"{key}.{k}", "must not be in the config file (passwords live in the OS keyring)",
                       "remove it and run: chargebridge db set-password NAME")
            if k not in allowed:
                v.fail(f"{key}.{k}", "is not a known key", ", ".join(sorted(allowed)))
        name = v.string(d, f"{key}.name", "")
        if not _NAME.match(name):
            v.fail(f"{key}.name", f"= {name!r} is not a usable name", "lower-case letters, digits, - and _")
        if any(o.name == name for o in out):
            v.fail(f"{key}.name", "is used twice", "one [[databases]] table per database")
        url = v.string(d, f"{key}.url", "")
        _check_url(v, f"{key}.url", url)
        profile = v.string(d, f"{key}.profile", "openemr")
        from connectors.ehr.db.profile import load_profile
        from core.errors import ConfigError

        try:
            load_profile(profile, key=f"{key}.profile")
        except ConfigError as exc:
            v.fail(f"{key}.profile", exc.title.split(": ", 1)[-1] if exc.title.startswith("database profile")
                   else "is not a known profile", exc.fix)
        out.append(DatabaseConfig(
            name=name, url=url, profile=profile,
            poll_minutes=v.number(d, f"{key}.poll_minutes", 2.0, lo=0.05, hi=1440),
            rescan_days=int(v.number(d, f"{key}.rescan_days", 45, lo=0, hi=3650, integer=True)),
            max_rows=int(v.number(d, f"{key}.max_rows", 2_000_000, lo=100, hi=100_000_000, integer=True)),
        ))
    return out


def _check_url(v: Any, key: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    if not url:
        v.fail(key, "is required", "e.g. mysql+pymysql://cb_reader@127.0.0.1:3306/openemr")
    try:
        u = make_url(url)
    except Exception:
        v.fail(key, "is not a database URL", "e.g. mysql+pymysql://cb_reader@127.0.0.1:3306/openemr")
        return
    if u.drivername not in DRIVERS:
        v.fail(key, f"uses {u.drivername!r}", ", ".join(DRIVERS))
    if u.password:
        v.fail(key, "must not hold a password (passwords live in the OS keyring)",
               "remove it from the URL and run: chargebridge db set-password NAME")
