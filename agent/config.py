"""``chargebridge.toml``: read, validated, every bad value reported with its key and what is allowed.

Validation is hand-written rather than schema-library driven so each message can say exactly
what a practice's IT person should type instead.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.dbconfig import DatabaseConfig, parse_databases  # [[databases]] (H6)
from agent.kpi_config import AlertsConfig, GoalsConfig, parse_alerts, parse_goals  # [goals], [alerts] (H5)
from connectors.ehr import FORMATS as _EHR_FORMATS
from connectors.ehr.limits import Budgets
from connectors.rcm import target_types
from core.errors import ConfigError
from core.urls import check_url

FORMATS = ("auto", *_EHR_FORMATS)  # the registered EHR formats
AFTER_ACTIONS = ("archive", "move")
OBSERVERS = ("native", "polling")
KEY_SOURCES = ("keyring", "passphrase")

DEFAULT_CONFIG = """\
# ChargeBridge configuration. Paths may use ~. See README.md for every key.

[store]
# Where the store's encryption key comes from: "keyring" (the OS keyring; recommended) or
# "passphrase" (scrypt-derived from CHARGEBRIDGE_PASSPHRASE or a prompt; for machines
# without a usable keyring).
key_source = "keyring"

[ingest]
# Files larger than this are refused and quarantined with a reason.
max_file_mb = 50
# A scan hands at most this many files to the pipeline at a time.
batch_files = 200
# Crosswalk from source codes (e.g. SNOMED CT) to CPT/HCPCS and ICD-10-CM; "" for none.
chargemaster = ""
# Budgets per file (see connectors/ehr/limits.py): a file over one is quarantined with a reason.
# max_unpacked_mb = 512          # a ZIP may unpack to at most this much
# max_zip_ratio = 200            # ...and a member (over 1 MiB) to at most this many times its packed size
# max_rows = 1000000             # data rows per CSV table / messages per HL7 file
# max_lines_per_encounter = 999  # charge lines on one encounter
# max_quarantine_per_file = 100  # then one entry says "N more parts"
# max_xml_mb = 20                # one C-CDA document

# One [[folders]] table per EHR export folder:
# [[folders]]
# path = "/srv/ehr-export/hl7"
# format = "hl7v2"        # auto | hl7v2 | csv | fhir | ccda
# profile = ""            # CSV mapping profile: a built-in name or a path to a .toml
# after = "archive"       # archive: keep inside the encrypted store and delete the file
#                         # move:    move the file to processed/
# observer = "native"     # native | polling (use polling for network shares)
# settle_seconds = 0.5    # a file is read once its size and mtime have not changed this long
# follow_links = false    # true: read symbolic links whose target stays inside this folder
# quarantine_dir = ""     # "": a file that cannot be used is kept only in the encrypted store
#                         # (export it with `chargebridge quarantine export ID --out FILE`);
#                         # a path: IT opts into a plaintext copy there (folder 0700, files 0600)
"""


@dataclass
class FolderConfig:
    path: Path
    format: str = "auto"
    profile: str = ""
    after: str = "archive"
    processed_dir: Path | None = None
    quarantine_dir: Path | None = None
    observer: str = "native"
    poll_seconds: float = 2.0
    settle_seconds: float = 0.5
    follow_links: bool = False

    @property
    def processed(self) -> Path:
        return self.processed_dir or self.path / "processed"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_dir or self.path / "quarantine"


@dataclass
class RcmConfig:
    type: str = ""  # "" = no RCM configured | fhir
    base_url: str = ""
    token_url: str = ""
    client_id: str = ""
    auth: str = "client_credentials"  # client_credentials | bearer (static token)
    timeout_seconds: float = 30.0
    batch_size: int = 100
    ca_bundle: str = ""
    bundle: str = "batch"  # batch: phased batch Bundles | transaction: one transaction Bundle per push


@dataclass
class SyncConfig:
    interval_minutes: float = 15.0
    business_hours: str = "00:00-24:00"  # local time, "HH:MM-HH:MM"
    business_days: str = "mon-sun"  # e.g. "mon-fri"
    max_failures: int = 5  # consecutive failed runs before the circuit breaker pauses sync
    breaker_minutes: float = 15.0


@dataclass
class ApiConfig:
    """``[api]``. Loopback (default): plain http on ``host:port``. LAN mode (H7, agent/tls.py):
    any other ``host`` (an address, or 0.0.0.0 with ``tls_names``) needs TLS — ``tls = "auto"``
    (practice CA + server certificate made under <home>/tls/) or ``tls_cert``/``tls_key`` from
    IT; the engine then serves https on ``host:port`` and plain http for this machine's own
    clients on ``127.0.0.1:local_port`` (0 = any free port; engine.json says which)."""

    host: str = "127.0.0.1"
    port: int = 8765  # 0 = any free port (written to engine.json in the home)
    tls: str = ""  # "" (none) | "auto"
    tls_names: list[str] = field(default_factory=list)  # DNS names / IPs the server certificate is for
    tls_cert: str = ""  # IT's server certificate (PEM, chain after it)
    tls_key: str = ""
    tls_ca: str = ""  # the CA front-desk PCs pin; default: the last certificate in tls_cert
    local_port: int = 0  # LAN mode: the loopback plain-http listener's port


@dataclass
class BackupConfig:
    """``[backup]``: nightly backups (agent/backup.py). ``dir = ""`` means none are scheduled."""

    dir: str = ""
    keep: int = 7  # newest backups kept in ``dir``; older ChargeBridge backups there are removed
    at: str = "01:30"  # local time, "HH:MM"


@dataclass
class RetentionConfig:
    """``[retention]``: pruning of old patient data (agent/retention.py)."""

    days: int = 400  # delivered + reconciled encounters (and their documents) older than this go
    audit_days: int = 2190  # audit entries are kept longer (6 years: HIPAA documentation retention)
    at: str = "03:30"  # local time of the nightly prune, "HH:MM"


@dataclass
class ModeConfig:
    """``[mode]`` (H8, agent/testmode.py): test mode before go-live. ``test = true`` sends nothing
    to the RCM: sync records what it would send (or sends it to ``sandbox_url``)."""

    test: bool = False
    sandbox_url: str = ""  # "": dry run | the RCM's sandbox (own secret: chargebridge testmode set-secret)
    sandbox_token_url: str = ""  # the sandbox's OAuth2 token URL (client_credentials)


@dataclass
class PracticeConfig:
    """``[practice]`` (H1): the billing provider an X12 837P names (2010AA)."""

    name: str = ""
    npi: str = ""
    tax_id: str = ""  # EIN, 9 digits
    taxonomy: str = ""
    phone: str = ""  # 10 digits: the 837's submitter contact (1000A PER)
    address: dict[str, str] = field(default_factory=lambda: {"street": "", "city": "", "state": "", "zip": ""})
    pos: str = "11"  # place of service when the source gives none


@dataclass
class X12Config:
    """``[x12]`` (H1): the clearinghouse channel (``[rcm] type = "x12"``)."""

    sender_id: str = ""  # ISA06 / GS02
    receiver_id: str = ""  # ISA08 / GS03
    receiver_name: str = ""  # 1000B; "" = the receiver id
    usage: str = "T"  # ISA15: T test, P production
    outbound: str = ""  # folder path or sftp://user@host:port/dir
    inbound: str = ""
    known_hosts: str = ""  # SFTP: an OpenSSH known_hosts file (the host key is never auto-accepted)
    host_key: str = ""  # SFTP: or one pinned key line ("ssh-ed25519 AAAA...")
    key_file: str = ""  # SFTP: a private key file (its passphrase, or the password, is in the keyring)
    max_file_mb: float = 64.0  # an inbound file larger than this is refused
    eligibility_at: str = "18:00"  # 270/271 (H9): local time the engine asks about the next clinic day's visits; "" off
    eligibility_days: str = "mon-fri"  # the days the practice sees patients (Friday evening asks about Monday)


@dataclass
class RulesConfig:
    """``[rules]`` (H7): charge capture rules on/off and severity per practice (see agent/rules/)."""

    enabled: bool = True  # false: validation only, no charge rules (and no review holds from them)
    off: list[str] = field(default_factory=list)  # rule ids switched off
    info: list[str] = field(default_factory=list)  # rule ids whose severity becomes info
    review: list[str] = field(default_factory=list)  # ... review
    error: list[str] = field(default_factory=list)  # ... error

    @property
    def disabled(self) -> frozenset[str]:
        return frozenset(self.off)

    @property
    def severity(self) -> dict[str, str]:
        return {rid: sev for sev in ("info", "review", "error") for rid in getattr(self, sev)}


@dataclass
class Config:
    key_source: str = "keyring"
    max_file_mb: float = 50.0
    batch_files: int = 200
    chargemaster: str = ""
    budgets: Budgets = field(default_factory=Budgets)
    folders: list[FolderConfig] = field(default_factory=list)
    rcm: RcmConfig = field(default_factory=RcmConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    practice: PracticeConfig = field(default_factory=PracticeConfig)  # [practice] (H1, X12)
    x12: X12Config = field(default_factory=X12Config)  # [x12] (H1)
    mode: ModeConfig = field(default_factory=ModeConfig)  # [mode]: test mode (H8)
    databases: list[DatabaseConfig] = field(default_factory=list)  # [[databases]]: agent/dbconfig.py
    goals: GoalsConfig = field(default_factory=GoalsConfig)  # [goals]: agent/kpi_config.py
    alerts: AlertsConfig = field(default_factory=AlertsConfig)  # [alerts]: agent/kpi_config.py
    source: Path | None = None

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


def load(path: Path) -> Config:
    """Read and validate ``path``; a missing file means all defaults."""
    if not path.exists():
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid TOML: {exc}", "correct the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name} cannot be read: {exc}", "check the file's permissions") from None
    cfg = parse(raw, origin=path.name)
    cfg.source = path
    return cfg


def parse(raw: dict[str, Any], *, origin: str = "chargebridge.toml") -> Config:
    v = _Validator(origin)
    known = {"store", "ingest", "folders", "rcm", "sync", "api", "backup", "retention", "rules", "databases", "mode",
             "practice", "x12"}
    known |= {"goals", "alerts"}  # H5
    for key in raw:
        if key not in known:
            v.fail(key, "is not a known section", ", ".join(sorted(known)))
    store = v.table(raw, "store")
    ingest = v.table(raw, "ingest")
    cfg = Config(
        key_source=v.choice(store, "store.key_source", "keyring", KEY_SOURCES),
        max_file_mb=v.number(ingest, "ingest.max_file_mb", 50.0, lo=0.001, hi=4096),
        batch_files=int(v.number(ingest, "ingest.batch_files", 200, lo=1, hi=100_000, integer=True)),
        chargemaster=v.string(ingest, "ingest.chargemaster", ""),
    )
    cfg.budgets = Budgets(  # per-file budgets (H4); defaults and meaning in connectors/ehr/limits.py
        max_unpacked_mb=v.number(ingest, "ingest.max_unpacked_mb", 512.0, lo=1, hi=65536),
        max_zip_ratio=v.number(ingest, "ingest.max_zip_ratio", 200.0, lo=2, hi=100_000),
        max_rows=int(v.number(ingest, "ingest.max_rows", 1_000_000, lo=1, hi=100_000_000, integer=True)),
        max_lines_per_encounter=int(v.number(ingest, "ingest.max_lines_per_encounter", 999, lo=1, hi=100_000,
                                             integer=True)),
        max_quarantine_per_file=int(v.number(ingest, "ingest.max_quarantine_per_file", 100, lo=1, hi=1_000_000,
                                             integer=True)),
        max_xml_mb=v.number(ingest, "ingest.max_xml_mb", 20.0, lo=0.01, hi=4096),
    )
    rcm = v.table(raw, "rcm")
    v.known(rcm, "rcm", {"type", "base_url", "token_url", "client_id", "auth", "timeout_seconds", "batch_size",
                         "ca_bundle", "bundle", "client_secret", "secret", "token"})
    for secret_key in ("client_secret", "secret", "token"):
        if secret_key in rcm:
            v.fail(f"rcm.{secret_key}", "must not be in the config file (secrets live in the OS keyring)",
                   "remove it and run: chargebridge rcm set-secret")
    cfg.rcm = RcmConfig(
        type=v.choice(rcm, "rcm.type", "", ("", *target_types())),
        base_url=v.string(rcm, "rcm.base_url", ""),
        token_url=v.string(rcm, "rcm.token_url", ""),
        client_id=v.string(rcm, "rcm.client_id", ""),
        auth=v.choice(rcm, "rcm.auth", "client_credentials", ("client_credentials", "bearer")),
        timeout_seconds=v.number(rcm, "rcm.timeout_seconds", 30.0, lo=0.1, hi=600),
        batch_size=int(v.number(rcm, "rcm.batch_size", 100, lo=1, hi=5000, integer=True)),
        ca_bundle=v.string(rcm, "rcm.ca_bundle", ""),
        bundle=v.choice(rcm, "rcm.bundle", "batch", ("batch", "transaction")),
    )
    x12 = cfg.rcm.type == "x12"  # a clearinghouse channel: its settings are [practice] and [x12]
    if cfg.rcm.type and not x12 and not cfg.rcm.base_url:
        v.fail("rcm.base_url", "is required when rcm.type is set", "the RCM's FHIR base URL (https://...)")
    for url_key in ("rcm.base_url", "rcm.token_url"):  # every URL in the config: one parsed rule
        v.url(rcm, url_key)
    if cfg.rcm.type and not x12 and cfg.rcm.auth == "client_credentials" and not (
            cfg.rcm.token_url and cfg.rcm.client_id):
        v.fail("rcm.token_url", "and rcm.client_id are required for OAuth2 client credentials",
               "the RCM's token URL and client id (the secret goes in the keyring)")
    sync = v.table(raw, "sync")
    v.known(sync, "sync", {"interval_minutes", "business_hours", "business_days", "max_failures", "breaker_minutes"})
    cfg.sync = SyncConfig(
        interval_minutes=v.number(sync, "sync.interval_minutes", 15.0, lo=0.05, hi=1440),
        business_hours=v.string(sync, "sync.business_hours", "00:00-24:00"),
        business_days=v.string(sync, "sync.business_days", "mon-sun"),
        max_failures=int(v.number(sync, "sync.max_failures", 5, lo=1, hi=1000, integer=True)),
        breaker_minutes=v.number(sync, "sync.breaker_minutes", 15.0, lo=0.01, hi=1440),
    )
    from agent.schedule import parse_days, parse_hours

    try:
        parse_hours(cfg.sync.business_hours)
    except ValueError:
        v.fail("sync.business_hours", f"= {cfg.sync.business_hours!r} is not a time range", '"07:30-18:00"')
    try:
        parse_days(cfg.sync.business_days)
    except ValueError:
        v.fail("sync.business_days", f"= {cfg.sync.business_days!r} is not a day range", '"mon-fri" or "mon,wed,fri"')
    cfg.api = _api(v, v.table(raw, "api"))
    _parse_data_care(v, raw, cfg)
    cfg.rules = _rules(v, v.table(raw, "rules"))
    cfg.practice, cfg.x12 = _practice_x12(v, raw, required=x12)
    cfg.mode = _mode(v, v.table(raw, "mode"))
    cfg.goals = parse_goals(v, v.table(raw, "goals"))  # KPI goals and alert thresholds (H5)
    cfg.alerts = parse_alerts(v, v.table(raw, "alerts"))
    folders = raw.get("folders", [])
    if not isinstance(folders, list):
        v.fail("folders", "must be an array of tables ([[folders]])", "[[folders]] path = \"...\"")
    seen: set[Path] = set()
    for i, f in enumerate(folders):
        key = f"folders[{i}]"
        if not isinstance(f, dict):
            v.fail(key, "must be a table", "[[folders]] path = \"...\"")
        allowed = {"path", "format", "profile", "after", "processed_dir", "quarantine_dir",
                   "observer", "poll_seconds", "settle_seconds", "follow_links"}
        for k in f:
            if k not in allowed:
                v.fail(f"{key}.{k}", "is not a known key", ", ".join(sorted(allowed)))
        path_s = v.string(f, f"{key}.path", "")
        if not path_s:
            v.fail(f"{key}.path", "is required", "the folder the EHR exports into")
        fc = FolderConfig(
            path=Path(path_s).expanduser(),
            format=v.choice(f, f"{key}.format", "auto", FORMATS),
            profile=v.string(f, f"{key}.profile", ""),
            after=v.choice(f, f"{key}.after", "archive", AFTER_ACTIONS),
            processed_dir=_opt_path(v.string(f, f"{key}.processed_dir", "")),
            quarantine_dir=_opt_path(v.string(f, f"{key}.quarantine_dir", "")),
            observer=v.choice(f, f"{key}.observer", "native", OBSERVERS),
            poll_seconds=v.number(f, f"{key}.poll_seconds", 2.0, lo=0.1, hi=3600),
            settle_seconds=v.number(f, f"{key}.settle_seconds", 0.5, lo=0.05, hi=600),
            follow_links=f.get("follow_links", False),
        )
        if not isinstance(fc.follow_links, bool):
            v.fail(f"{key}.follow_links", "must be true or false", "true, false")
        if fc.path in seen:
            v.fail(f"{key}.path", "is listed twice", "one [[folders]] table per folder")
        seen.add(fc.path)
        cfg.folders.append(fc)
    cfg.databases = parse_databases(v, raw.get("databases", []))
    return cfg


def _parse_data_care(v: _Validator, raw: dict[str, Any], cfg: Config) -> None:
    """[backup] and [retention] (issue 13, H8)."""
    from agent.mismatches import default_window

    start, end = default_window()
    min_days = (end - start).days  # retention never shortens what reconciliation still reads
    backup = v.table(raw, "backup")
    v.known(backup, "backup", {"dir", "keep", "at"})
    cfg.backup = BackupConfig(dir=v.string(backup, "backup.dir", ""),
                              keep=int(v.number(backup, "backup.keep", 7, lo=1, hi=3650, integer=True)),
                              at=v.string(backup, "backup.at", "01:30"))
    ret = v.table(raw, "retention")
    v.known(ret, "retention", {"days", "audit_days", "at"})
    days = int(v.number(ret, "retention.days", 400, lo=min_days, hi=36500, integer=True))
    cfg.retention = RetentionConfig(
        days=days,
        audit_days=int(v.number(ret, "retention.audit_days", 2190, lo=days, hi=36500, integer=True)),
        at=v.string(ret, "retention.at", "03:30"))
    for key, val in (("backup.at", cfg.backup.at), ("retention.at", cfg.retention.at)):
        if parse_clock(val) is None:
            v.fail(key, f"= {val!r} is not a time of day", '"02:30" (24-hour local time)')


def _mode(v: _Validator, t: dict[str, Any]) -> ModeConfig:
    """``[mode]``: test mode, and an optional sandbox RCM (its URLs pass the same rule as [rcm]'s)."""
    v.known(t, "mode", {"test", "sandbox_url", "sandbox_token_url"})
    test = t.get("test", False)
    if not isinstance(test, bool):
        v.fail("mode.test", "must be true or false", "true, false")
    mode = ModeConfig(test=test, sandbox_url=v.url(t, "mode.sandbox_url"),
                      sandbox_token_url=v.url(t, "mode.sandbox_token_url"))
    if mode.sandbox_token_url and not mode.sandbox_url:
        v.fail("mode.sandbox_token_url", "is set without mode.sandbox_url", "set both, or neither")
    return mode


def _api(v: _Validator, api: dict[str, Any]) -> ApiConfig:
    """``[api]``: a non-loopback address only with TLS (LAN mode, H7)."""
    import ipaddress

    from core.urls import is_loopback_host

    v.known(api, "api", {"host", "port", "tls", "tls_names", "tls_cert", "tls_key", "tls_ca", "local_port"})
    names = api.get("tls_names", [])
    if not isinstance(names, list) or len(names) > 32 or not all(
            isinstance(n, str) and 0 < len(n) <= 253 and n.strip() == n and " " not in n for n in names):
        v.fail("api.tls_names", "must be a list of up to 32 host names or IP addresses",
               '["chargebridge.practice.lan", "192.168.1.10"]')
    cfg = ApiConfig(host=v.string(api, "api.host", "127.0.0.1").strip(),
                    port=int(v.number(api, "api.port", 8765, lo=0, hi=65535, integer=True)),
                    tls=v.choice(api, "api.tls", "", ("", "auto")), tls_names=list(names),
                    tls_cert=v.string(api, "api.tls_cert", ""), tls_key=v.string(api, "api.tls_key", ""),
                    tls_ca=v.string(api, "api.tls_ca", ""),
                    local_port=int(v.number(api, "api.local_port", 0, lo=0, hi=65535, integer=True)))
    host = cfg.host.strip("[]")
    if host != "localhost" and host not in ("0.0.0.0", "::"):  # noqa: S104 - validated names, not a bind
        try:
            ipaddress.ip_address(host)
        except ValueError:
            v.fail("api.host", f"= {cfg.host!r} is not an IP address of this machine",
                   '"127.0.0.1" (this machine only), a LAN address such as "192.168.1.10", or "0.0.0.0"')
    if cfg.tls == "auto" and (cfg.tls_cert or cfg.tls_key):
        v.fail("api.tls", '= "auto" and tls_cert/tls_key are both set', 'either tls = "auto" or tls_cert + tls_key')
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        v.fail("api.tls_key" if cfg.tls_cert else "api.tls_cert", "is required with the other one",
               "both tls_cert and tls_key (PEM files IT provides)")
    if cfg.tls_ca and not cfg.tls_cert:
        v.fail("api.tls_ca", "is only used with tls_cert", "remove it, or set tls_cert and tls_key")
    tls_on = cfg.tls == "auto" or bool(cfg.tls_cert)
    if not is_loopback_host(host) and not tls_on:
        raise ConfigError(f"{v.prefix}'api.host' = {cfg.host!r} is reachable from the network, and the API "
                          "would be plain http",
                          'turn on TLS: tls = "auto" under [api] (a practice CA is made on first start), or '
                          "tls_cert and tls_key from IT — or keep host = \"127.0.0.1\"", key="api.tls")
    if tls_on and cfg.tls == "auto" and host in ("0.0.0.0", "::") and not cfg.tls_names:  # noqa: S104
        v.fail("api.tls_names", "is required when host listens on every address",
               'the names and addresses PCs use for this server, e.g. ["192.168.1.10", "billing-pc.lan"]')
    if tls_on and cfg.port and cfg.port == cfg.local_port:
        v.fail("api.local_port", "must differ from api.port", "0 (any free port) or another port")
    return cfg


_NPI = re.compile(r"^[0-9]{10}$")
_TAXONOMY = re.compile(r"^[0-9A-Z]{9}X$")
_X12_ID = re.compile(r"^[A-Za-z0-9 .\-_]{1,15}$")


def _practice_x12(v: _Validator, raw: dict[str, Any], *, required: bool) -> tuple[PracticeConfig, X12Config]:
    """``[practice]`` and ``[x12]`` (H1); required when ``[rcm] type = "x12"``."""
    from agent.validate import npi_is_valid

    p = v.table(raw, "practice")
    v.known(p, "practice", {"name", "npi", "tax_id", "taxonomy", "phone", "address", "pos"})
    addr = p.get("address", {})
    if not isinstance(addr, dict):
        v.fail("practice.address", "must be a table", '{ street = "...", city = "...", state = "..", zip = "....." }')
    v.known(addr, "practice.address", {"street", "city", "state", "zip"})
    pc = PracticeConfig(
        name=v.string(p, "practice.name", "").strip(), npi=v.string(p, "practice.npi", "").strip(),
        tax_id=v.string(p, "practice.tax_id", "").strip().replace("-", ""),
        taxonomy=v.string(p, "practice.taxonomy", "").strip().upper(),
        phone=re.sub(r"[\s().\-]", "", v.string(p, "practice.phone", "")),
        address={k: v.string(addr, f"practice.address.{k}", "").strip() for k in ("street", "city", "state", "zip")},
        pos=v.string(p, "practice.pos", "11").strip())
    pc.address["state"] = pc.address["state"].upper()
    checks: list[tuple[str, str, bool, str]] = [
        ("practice.name", pc.name, 0 < len(pc.name) <= 60, "the practice's name (at most 60 characters)"),
        ("practice.npi", pc.npi, bool(_NPI.match(pc.npi)) and npi_is_valid(pc.npi),
         "the billing provider's 10-digit NPI (its check digit must be right)"),
        ("practice.tax_id", pc.tax_id, len(pc.tax_id) == 9 and pc.tax_id.isdigit(), "the EIN: 9 digits"),
        ("practice.taxonomy", pc.taxonomy, not pc.taxonomy or bool(_TAXONOMY.match(pc.taxonomy)),
         'a 10-character taxonomy code such as "207Q00000X", or ""'),
        ("practice.phone", pc.phone, len(pc.phone) == 10 and pc.phone.isdigit(), "a 10-digit phone number"),
        ("practice.address.street", pc.address["street"], 0 < len(pc.address["street"]) <= 55,
         "the street (at most 55 characters)"),
        ("practice.address.city", pc.address["city"], 0 < len(pc.address["city"]) <= 30,
         "the city (at most 30 characters)"),
        ("practice.address.state", pc.address["state"], len(pc.address["state"]) == 2
         and pc.address["state"].isalpha(), "a 2-letter state code"),
        ("practice.address.zip", pc.address["zip"], pc.address["zip"].replace("-", "").isdigit()
         and len(pc.address["zip"].replace("-", "")) in (5, 9), "a 5- or 9-digit ZIP code"),
    ]
    for key, val, ok, allowed in checks:
        if (val or required) and not ok:
            v.fail(key, "is missing" if not val else f"= {val!r} is not valid", allowed)
    if not (len(pc.pos) == 2 and pc.pos.isdigit()):
        v.fail("practice.pos", f"= {pc.pos!r} is not a place of service code", 'two digits, e.g. "11" (office)')
    x = v.table(raw, "x12")
    v.known(x, "x12", {"sender_id", "receiver_id", "receiver_name", "usage", "outbound", "inbound", "known_hosts",
                       "host_key", "key_file", "max_file_mb", "eligibility_at", "eligibility_days"})
    xc = X12Config(
        sender_id=v.string(x, "x12.sender_id", ""), receiver_id=v.string(x, "x12.receiver_id", ""),
        receiver_name=v.string(x, "x12.receiver_name", ""), usage=v.choice(x, "x12.usage", "T", ("T", "P")),
        outbound=v.string(x, "x12.outbound", "").strip(), inbound=v.string(x, "x12.inbound", "").strip(),
        known_hosts=v.string(x, "x12.known_hosts", ""), host_key=v.string(x, "x12.host_key", ""),
        key_file=v.string(x, "x12.key_file", ""),
        max_file_mb=v.number(x, "x12.max_file_mb", 64.0, lo=0.01, hi=4096),
        eligibility_at=v.string(x, "x12.eligibility_at", "18:00").strip(),
        eligibility_days=v.string(x, "x12.eligibility_days", "mon-fri").strip())
    if xc.eligibility_at and parse_clock(xc.eligibility_at) is None:
        v.fail("x12.eligibility_at", f"= {xc.eligibility_at!r} is not a time of day", '"18:00" (24-hour local time), '
               'or "" to ask only by hand (chargebridge eligibility)')
    from agent.schedule import parse_days

    try:
        parse_days(xc.eligibility_days)
    except ValueError:
        v.fail("x12.eligibility_days", f"= {xc.eligibility_days!r} is not a day range", '"mon-fri" or "mon,wed,fri"')
    for key, val in (("x12.sender_id", xc.sender_id), ("x12.receiver_id", xc.receiver_id)):
        if (val or required) and not _X12_ID.match(val):
            v.fail(key, "is missing" if not val else f"= {val!r} is not an X12 id",
                   "1 to 15 letters, digits, spaces, '.', '-' or '_' (as the clearinghouse assigned it)")
    if len(xc.receiver_name) > 60:
        v.fail("x12.receiver_name", "is longer than 60 characters", "the clearinghouse's name")
    if required and not xc.outbound:
        v.fail("x12.outbound", "is required when rcm.type is x12", "a folder path or sftp://user@host:port/dir")
    for key, val in (("x12.outbound", xc.outbound), ("x12.inbound", xc.inbound)):
        if val:
            scheme = urlsplit(val).scheme.lower()
            if scheme not in ("", "file", "sftp") and not (len(scheme) == 1 and os.name == "nt"):
                v.fail(key, f"uses {scheme}:, which is not supported", "a folder path, file:///path or "
                       "sftp://user@host:port/dir")
            if scheme == "sftp" and urlsplit(val).password:
                v.fail(key, "holds a password", "remove it: the password goes to the OS keyring "
                       "(chargebridge rcm set-secret)")
    return pc, xc


def parse_clock(text: str) -> tuple[int, int] | None:
    """"HH:MM" (24-hour) as (hour, minute); None when it is not one."""
    hh, sep, mm = text.partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2 or len(hh) > 2:
        return None
    h, m = int(hh), int(mm)
    return (h, m) if 0 <= h <= 23 and 0 <= m <= 59 else None


def _rules(v: _Validator, t: dict[str, Any]) -> RulesConfig:
    """``[rules]``: every id must be a known rule, and in at most one severity list."""
    from agent.rules import RULES

    v.known(t, "rules", {"enabled", "off", "info", "review", "error"})
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        v.fail("rules.enabled", "must be true or false", "true, false")
    lists: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in ("off", "info", "review", "error"):
        val = t.get(name, [])
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            v.fail(f"rules.{name}", "must be a list of rule ids", '["units.mue", "doc.missing"]')
        for rid in val:
            if rid not in RULES:
                v.fail(f"rules.{name}", f"names {rid!r}, which is not a rule", "see: chargebridge rules list")
            if name != "off" and rid in seen:
                v.fail(f"rules.{name}", f"names {rid!r}, which rules.{seen[rid]} also names", "one severity per rule")
            if name != "off":
                seen[rid] = name
        lists[name] = list(val)
    return RulesConfig(enabled=enabled, **lists)


def _opt_path(s: str) -> Path | None:
    return Path(s).expanduser() if s else None


class _Validator:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.prefix = f"{origin}: " if origin else ""  # "" for a form: the field is pointed at by key

    def fail(self, key: str, problem: str, allowed: str) -> None:
        raise ConfigError(f"{self.prefix}'{key}' {problem}", f"allowed: {allowed}", key=key)

    def url(self, t: dict[str, Any], key: str) -> str:
        """An optional URL setting: "" or an address that passes :func:`core.urls.check_url`."""
        val = self.string(t, key, "")
        return check_url(val, key=key, what=f"{self.prefix}'{key}'") if val else ""

    def known(self, t: dict[str, Any], section: str, allowed: set[str]) -> None:
        for k in t:
            if k not in allowed:
                self.fail(f"{section}.{k}", "is not a known key", ", ".join(sorted(allowed)))

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        t = raw.get(key, {})
        if not isinstance(t, dict):
            self.fail(key, "must be a table", f"[{key}]")
        return t

    def _get(self, t: dict[str, Any], key: str) -> Any:
        return t.get(key.rsplit(".", 1)[-1])

    def string(self, t: dict[str, Any], key: str, default: str) -> str:
        val = self._get(t, key)
        if val is None:
            return default
        if not isinstance(val, str):
            self.fail(key, f"must be text, not {type(val).__name__}", "a quoted string")
        return val

    def choice(self, t: dict[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
        val = self.string(t, key, default)
        if val not in allowed:
            self.fail(key, f"= {val!r} is not allowed", ", ".join(allowed))
        return val

    def number(self, t: dict[str, Any], key: str, default: float, *, lo: float, hi: float,
               integer: bool = False) -> float:
        val = self._get(t, key)
        if val is None:
            return default
        kind = "a whole number" if integer else "a number"
        if isinstance(val, bool) or not isinstance(val, (int, float)) or (
            integer and not isinstance(val, int)
        ):
            self.fail(key, f"= {val!r} is not {kind}", f"{kind} from {lo:g} to {hi:g}")
        if not lo <= val <= hi:
            self.fail(key, f"= {val!r} is out of range", f"{kind} from {lo:g} to {hi:g}")
        return float(val)
