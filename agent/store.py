"""The encrypted store: SQLCipher, WAL, numbered migrations.

Everything that can identify a patient lives only here: raw documents, encounters, quarantine
reasons' context. The file, its WAL and its temp data are encrypted with the 32-byte key from
:mod:`agent.keys`; temp tables are kept in memory so nothing spills in plaintext.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlcipher3

from agent import keys, notify
from agent.repos import EncounterRepo, QuarantineRepo
from core.errors import StoreKeyError
from core.paths import Paths

log = logging.getLogger("chargebridge.store")

DatabaseError = sqlcipher3.DatabaseError

_SEARCH_BODY = ("{t}.mrn || ' ' || {t}.source_id || ' ' "
                "|| coalesce(json_extract({t}.data, '$.patient.family'), '')"
                " || ' ' || coalesce(json_extract({t}.data, '$.patient.given'), '') || ' ' || coalesce("
                "(SELECT group_concat(json_extract(l.value, '$.code'), ' ') "
                "FROM json_each({t}.data, '$.lines') l), '')")


def _kpi_dirty_triggers() -> list[str]:
    """Migration 15's triggers: each puts the days of service a write changes into kpi_dirty."""
    def mark(days: str) -> str:
        return (f"INSERT INTO kpi_dirty SELECT d FROM ({days}) WHERE d IS NOT NULL "
                "AND d NOT IN (SELECT day FROM kpi_dirty);")

    def row(*refs: str) -> str:
        return mark(" UNION ".join(f"SELECT substr({r}.dos, 1, 10) AS d" for r in refs))

    def enc(ref: str) -> str:  # an encounter's day, and the days of the findings about it
        return mark(f"SELECT substr({ref}.dos, 1, 10) AS d UNION SELECT substr(dos, 1, 10) FROM findings "
                    f"WHERE encounter_id = {ref}.id")

    def touched(ref: str) -> str:
        return mark(f"SELECT substr(dos, 1, 10) AS d FROM encounters WHERE id = {ref}.encounter_id "
                    f"UNION SELECT substr(dos, 1, 10) FROM claims WHERE encounter_id = {ref}.encounter_id")

    touch = "WHEN {r}.kind IN ('encounter.edited', 'encounter.accepted_rcm') "
    specs = [("kpi_claims_ins", "AFTER INSERT ON claims", row("new")),
             ("kpi_claims_upd", "AFTER UPDATE ON claims", row("old", "new")),
             ("kpi_claims_del", "AFTER DELETE ON claims", row("old")),
             ("kpi_enc_ins", "AFTER INSERT ON encounters", row("new")),
             ("kpi_enc_upd", "AFTER UPDATE OF kind, state, dos, mrn, data ON encounters",
              row("old", "new") + enc("new")),
             ("kpi_enc_del", "AFTER DELETE ON encounters", row("old")),
             ("kpi_findings_ins", "AFTER INSERT ON findings", row("new")),
             ("kpi_findings_upd", "AFTER UPDATE ON findings", row("old", "new")),
             ("kpi_findings_del", "AFTER DELETE ON findings", row("old")),
             # a review or a touch event changes whether the encounter (and its claims) was touched
             ("kpi_reviews_ins", "AFTER INSERT ON reviews", touched("new")),
             ("kpi_reviews_del", "AFTER DELETE ON reviews", touched("old")),
             ("kpi_events_ins", "AFTER INSERT ON events " + touch.format(r="new"), touched("new")),
             ("kpi_events_del", "AFTER DELETE ON events " + touch.format(r="old"), touched("old"))]
    return [f"CREATE TRIGGER {name} {when} BEGIN {body} END" for name, when, body in specs] + [
        ("INSERT OR IGNORE INTO kpi_dirty SELECT substr(dos, 1, 10) FROM claims "
         "UNION SELECT substr(dos, 1, 10) FROM encounters UNION SELECT substr(dos, 1, 10) FROM findings")]



MIGRATIONS: list[tuple[int, str | list[str]]] = [
    (
        1,
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            origin TEXT NOT NULL,           -- file path as it was found
            source TEXT NOT NULL,           -- 'cli' or the watched folder
            format TEXT NOT NULL,           -- requested format ('auto' until detected)
            profile TEXT NOT NULL DEFAULT '',
            size INTEGER NOT NULL,
            content BLOB,                   -- NULL only when refused for size
            status TEXT NOT NULL,           -- pending | processed | quarantined
            received_at TEXT NOT NULL,
            processed_at TEXT
        );
        CREATE INDEX documents_status ON documents(status);
        CREATE TABLE encounters (
            id INTEGER PRIMARY KEY,
            business_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,              -- charge | expected
            source TEXT NOT NULL,
            source_id TEXT NOT NULL,
            document_id INTEGER NOT NULL REFERENCES documents(id),
            state TEXT NOT NULL,             -- needs_review | ready | expected
            mrn TEXT NOT NULL,
            dos TEXT NOT NULL,
            data TEXT NOT NULL,              -- canonical Encounter as JSON
            findings TEXT NOT NULL,          -- validation findings as JSON
            content_hash TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX encounters_state ON encounters(state);
        CREATE INDEX encounters_mrn_dos ON encounters(mrn, dos);
        CREATE TABLE patients (
            business_key TEXT PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id),
            data TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id),
            part TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL,
            resolved_at TEXT,
            resolution TEXT
        );
        CREATE INDEX quarantine_open ON quarantine(resolved_at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            encounter_id INTEGER,
            document_id INTEGER,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_encounter ON events(encounter_id);
        """,
    ),
    (
        2,
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,              -- front_desk | manager | admin
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            disabled_at TEXT
        );
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            encounter_id INTEGER NOT NULL REFERENCES encounters(id),
            version INTEGER NOT NULL,
            state TEXT NOT NULL,             -- queued | sending | delivered | failed | rejected
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            remote_ids TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (encounter_id, version)
        );
        CREATE INDEX outbox_state ON outbox(state, next_attempt_at);
        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL UNIQUE,     -- 1, 2, 3 ... in append order (gaps = deletions)
            at TEXT NOT NULL,
            actor TEXT NOT NULL,             -- user name, or 'engine' / 'cli:<os user>'
            action TEXT NOT NULL,            -- e.g. mismatch.resolve, quarantine.reprocess, user.add
            target TEXT NOT NULL DEFAULT '', -- what it acted on, by id
            before_sha256 TEXT NOT NULL DEFAULT '',
            after_sha256 TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TABLE findings (
            id INTEGER PRIMARY KEY,
            fingerprint TEXT NOT NULL UNIQUE, -- stable across runs: kind + what it is about
            kind TEXT NOT NULL,               -- missing_in_rcm | orphan_in_rcm | field_mismatch | missing_charge
            encounter_id INTEGER REFERENCES encounters(id),
            remote_id TEXT NOT NULL DEFAULT '',
            dos TEXT NOT NULL DEFAULT '',
            local TEXT NOT NULL DEFAULT '{}',
            remote TEXT NOT NULL DEFAULT '{}',
            diff TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL,             -- open | resolved | ignored | closed (gone at the RCM)
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            reopened INTEGER NOT NULL DEFAULT 0,
            assignee TEXT NOT NULL DEFAULT '',
            comments TEXT NOT NULL DEFAULT '[]',
            resolution TEXT NOT NULL DEFAULT '',
            resolved_by TEXT NOT NULL DEFAULT '',
            resolved_at TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX findings_status ON findings(status, kind);
        """,
    ),
    (
        4,
        # Search for the encounters window: a trigram full-text index over MRN, visit id, names
        # and codes (substring matches without scanning 100,000 encrypted JSON rows). Triggers
        # keep it in step with every insert, update and delete, whichever code path made them.
        [
            "CREATE VIRTUAL TABLE encounter_search USING fts5(body, tokenize='trigram')",
            "INSERT INTO encounter_search (rowid, body) SELECT e.id, " + _SEARCH_BODY.format(t="e")
            + " FROM encounters e",
            "CREATE TRIGGER encounters_search_ins AFTER INSERT ON encounters BEGIN "
            "INSERT INTO encounter_search (rowid, body) VALUES (new.id, " + _SEARCH_BODY.format(t="new") + "); END",
            ("CREATE TRIGGER encounters_search_upd AFTER UPDATE OF data, mrn, source_id ON encounters BEGIN "
             "DELETE FROM encounter_search WHERE rowid = old.id; "
             "INSERT INTO encounter_search (rowid, body) VALUES (new.id, " + _SEARCH_BODY.format(t="new") + "); END"),
            ("CREATE TRIGGER encounters_search_del AFTER DELETE ON encounters BEGIN "
             "DELETE FROM encounter_search WHERE rowid = old.id; END"),
        ],
    ),
    (
        5,
        # Processing attempts per document: a document that never finishes (the process dies
        # reading it) is quarantined after a few tries instead of blocking every start.
        ["ALTER TABLE documents ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        6,
        # EHR database connectors (agent/dbpoll.py, H6): each database's cursor (watermark), and
        # per encounter read from it the hash of what was read, so a re-read tells new, changed,
        # voided and unchanged apart. Both commit with the poll's raw document, in one transaction.
        [
            "CREATE TABLE db_cursors (name TEXT PRIMARY KEY, cursor TEXT NOT NULL, updated_at TEXT NOT NULL)",
            ("CREATE TABLE db_encounters (name TEXT NOT NULL, key TEXT NOT NULL, raw_key TEXT NOT NULL,"
             " dos TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL, voided INTEGER NOT NULL DEFAULT 0,"
             " updated_at TEXT NOT NULL, PRIMARY KEY (name, key))"),
            "CREATE INDEX db_encounters_dos ON db_encounters(name, voided, dos)",
        ],
    ),
    (
        8,
        # Retention (agent/retention.py): what pruned encounters were, as counts per month of
        # service, kind and state, so KPIs over old periods survive the rows themselves.
        [("CREATE TABLE retention_counts (month TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, "
          "encounters INTEGER NOT NULL DEFAULT 0, lines INTEGER NOT NULL DEFAULT 0, "
          "charges TEXT NOT NULL DEFAULT '0', PRIMARY KEY (month, kind, state))"),
         # pruning asks "does anything still point at this document / encounter?" per row, and
         # SQLite checks the same for every foreign key on delete: without these, 100,000 rows
         # cost 100,000 table scans each
         "CREATE INDEX IF NOT EXISTS encounters_document ON encounters(document_id)",
         "CREATE INDEX IF NOT EXISTS quarantine_document ON quarantine(document_id)",
         "CREATE INDEX IF NOT EXISTS patients_document ON patients(document_id)",
         "CREATE INDEX IF NOT EXISTS findings_encounter ON findings(encounter_id)"],
    ),
    (
        7,
        # Charge rules (agent/rules/, H7): the practice's imported CMS MUE table, and the coder's
        # review decisions (approve / reject), each tied to the content it was made on.
        ["CREATE TABLE rule_mue (code TEXT PRIMARY KEY, max_units INTEGER NOT NULL)",
         ("CREATE TABLE reviews (id INTEGER PRIMARY KEY, encounter_id INTEGER NOT NULL REFERENCES encounters(id) "
          "ON DELETE CASCADE, version INTEGER NOT NULL, content_hash TEXT NOT NULL, decision TEXT NOT NULL, "
          "reason TEXT NOT NULL DEFAULT '', actor TEXT NOT NULL, at TEXT NOT NULL)"),
         "CREATE INDEX reviews_encounter ON reviews(encounter_id)"],
    ),
    (
        9,
        # The claim lifecycle (agent/claims.py): one row per claim id (CLM01 / Claim.identifier)
        # from its first delivery, moved by the payer's answers (999, 277CA, 835, FHIR
        # ClaimResponse). Every answer is kept once (fingerprint), matched or not. X12
        # interchange control numbers are handed out here and never reused (a batch sent again
        # keeps its number).
        [("CREATE TABLE claims (id INTEGER PRIMARY KEY, claim_id TEXT NOT NULL UNIQUE, "
          "encounter_id INTEGER REFERENCES encounters(id) ON DELETE SET NULL, version INTEGER NOT NULL DEFAULT 1, "
          "target TEXT NOT NULL, state TEXT NOT NULL, stage INTEGER NOT NULL DEFAULT 0, "
          "dos TEXT NOT NULL DEFAULT '', provider_npi TEXT NOT NULL DEFAULT '', payer TEXT NOT NULL DEFAULT '', "
          "billed TEXT NOT NULL DEFAULT '0', paid TEXT NOT NULL DEFAULT '0', adjusted TEXT NOT NULL DEFAULT '0', "
          "patient_resp TEXT NOT NULL DEFAULT '0', payer_claim_id TEXT NOT NULL DEFAULT '', "
          "control TEXT NOT NULL DEFAULT '{}', submissions INTEGER NOT NULL DEFAULT 1, "
          "reasons TEXT NOT NULL DEFAULT '[]', first_submitted_at TEXT NOT NULL, submitted_at TEXT NOT NULL, "
          "answered_at TEXT NOT NULL DEFAULT '', accepted_at TEXT NOT NULL DEFAULT '', "
          "adjudicated_on TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL)"),
         "CREATE INDEX claims_state ON claims(state)",
         "CREATE INDEX claims_dos ON claims(dos)",
         "CREATE INDEX claims_encounter ON claims(encounter_id)",
         ("CREATE TABLE claim_answers (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, "
          "claim_ref TEXT NOT NULL DEFAULT '', claim INTEGER REFERENCES claims(id) ON DELETE SET NULL, "
          "state TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}', answered_on TEXT NOT NULL DEFAULT '', "
          "received_at TEXT NOT NULL)"),
         "CREATE INDEX claim_answers_claim ON claim_answers(claim)",
         ("CREATE TABLE x12_interchanges (control INTEGER PRIMARY KEY, batch_key TEXT NOT NULL UNIQUE, "
          "kind TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT NOT NULL DEFAULT '', "
          "file_name TEXT NOT NULL DEFAULT '')")],
    ),
    (
        10,
        # LAN pairing (agent/pairing.py, H7): one-time codes, kept only as their SHA-256, for a
        # role and user name chosen by `chargebridge pair`; used_at/used_from record who redeemed it.
        [("CREATE TABLE pairing_codes (id INTEGER PRIMARY KEY, code_sha256 TEXT NOT NULL UNIQUE, "
          "role TEXT NOT NULL, name TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL, "
          "expires_at TEXT NOT NULL, used_at TEXT, used_from TEXT NOT NULL DEFAULT '')"),
         "CREATE INDEX pairing_codes_name ON pairing_codes(name)"],
    ),
    (
        12,
        # Eligibility (agent/eligibility.py, H2): one row per scheduled visit asked about (270) and
        # its 271 answer; trace = our TRN02, control = the 270's ISA13, answer_ref = file#ST02.
        # Rows follow their visit out on retention (ON DELETE CASCADE).
        [("CREATE TABLE eligibility (id INTEGER PRIMARY KEY, encounter_id INTEGER REFERENCES encounters(id) "
          "ON DELETE CASCADE, business_key TEXT NOT NULL, mrn TEXT NOT NULL, dos TEXT NOT NULL, "
          "trace TEXT NOT NULL UNIQUE, control INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, "
          "plan TEXT NOT NULL DEFAULT '', copay TEXT NOT NULL DEFAULT '', asked_at TEXT NOT NULL, checked_at TEXT, "
          "answer_ref TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}')"),
         "CREATE INDEX eligibility_visit ON eligibility(business_key, dos)",
         "CREATE INDEX eligibility_mrn_dos ON eligibility(mrn, dos)",
         "CREATE INDEX eligibility_encounter ON eligibility(encounter_id)"],
    ),
    (
        13,
        # Test mode (agent/testmode.py, H8): what sync would have sent (or sent to a sandbox) —
        # the exact payload files (FHIR Bundles, 837 files; patient data, hence here, encrypted),
        # and per claim the encounter as sent, which is the dry-run RCM's view for reconciliation.
        [("CREATE TABLE testmode_sends (id INTEGER PRIMARY KEY, at TEXT NOT NULL, target TEXT NOT NULL, "
          "route TEXT NOT NULL, action TEXT NOT NULL DEFAULT 'push', encounters INTEGER NOT NULL DEFAULT 0, "
          "delivered INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0, "
          "files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0, detail TEXT NOT NULL DEFAULT '{}')"),
         ("CREATE TABLE testmode_files (id INTEGER PRIMARY KEY, send_id INTEGER NOT NULL REFERENCES "
          "testmode_sends(id) ON DELETE CASCADE, seq INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL, "
          "sha256 TEXT NOT NULL)"),
         "CREATE INDEX testmode_files_send ON testmode_files(send_id)",
         ("CREATE TABLE testmode_claims (identifier TEXT PRIMARY KEY, business_key TEXT NOT NULL, "
          "send_id INTEGER NOT NULL, remote_id TEXT NOT NULL, dos TEXT NOT NULL DEFAULT '', data TEXT NOT NULL, "
          "cancelled INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL)"),
         "CREATE INDEX testmode_claims_dos ON testmode_claims(dos)"],
    ),
    (
        11,
        # Alerts (agent/alerts.py, H5): per alert kind whether its condition holds, since when, when it
        # last fired (rate limit: once per [alerts] repeat_hours while it holds), and what it said
        # (counts and source names only). The index serves sync health (events of kind sync.run).
        [("CREATE TABLE alerts (kind TEXT PRIMARY KEY, active INTEGER NOT NULL DEFAULT 0, "
          "since TEXT NOT NULL DEFAULT '', last_fired_at TEXT NOT NULL DEFAULT '', "
          "cleared_at TEXT NOT NULL DEFAULT '', fired INTEGER NOT NULL DEFAULT 0, title TEXT NOT NULL DEFAULT '', "
          "fix TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}', email_error TEXT NOT NULL DEFAULT '')"),
         "CREATE INDEX IF NOT EXISTS events_kind_at ON events(kind, at)",
         # KPIs scan encounters by kind and date of service: this index covers them (no JSON read)
         "CREATE INDEX IF NOT EXISTS encounters_kind_dos ON encounters(kind, dos, state)"],
    ),
    (
        14,
        # KPI speed and provider/payer filters (agent/kpi.py, H13): day numbers of the claim dates
        # (days since 1970, NULL when unreadable) and the encounter's rendering NPI and payer (the same
        # values agent/claims.record_delivery stores on a claim) as VIRTUAL generated columns, kept in
        # covering indexes so a KPI pass reads index entries only: no julianday() per row, no JSON.
        [("ALTER TABLE claims ADD COLUMN dos_day INTEGER GENERATED ALWAYS AS "
          "(unixepoch(substr(dos, 1, 10)) / 86400) VIRTUAL"),
         ("ALTER TABLE claims ADD COLUMN sub_day INTEGER GENERATED ALWAYS AS "
          "(unixepoch(substr(first_submitted_at, 1, 10)) / 86400) VIRTUAL"),
         ("ALTER TABLE claims ADD COLUMN closed_day INTEGER GENERATED ALWAYS AS "
          "(unixepoch(substr(coalesce(nullif(adjudicated_on, ''), nullif(answered_at, '')), 1, 10)) / 86400) VIRTUAL"),
         # in this order a pass grouped by (dos, state, submissions, sub_day) streams without a sort
         ("CREATE INDEX claims_kpi ON claims(dos, state, submissions, sub_day, provider_npi, payer, billed, dos_day, "
          "closed_day, encounter_id)"),
         ("ALTER TABLE encounters ADD COLUMN provider_npi TEXT GENERATED ALWAYS AS "
          "(coalesce(json_extract(data, '$.rendering.npi'), '')) VIRTUAL"),
         ("ALTER TABLE encounters ADD COLUMN payer TEXT GENERATED ALWAYS AS "
          "(coalesce(nullif(json_extract(data, '$.coverages[0].payer_id'), ''), "
          "json_extract(data, '$.coverages[0].payer_name'), '')) VIRTUAL"),
         "CREATE INDEX encounters_kpi ON encounters(kind, dos, state, provider_npi, payer, mrn)",
         # the few encounters a person touched (reviews, edits) are looked up by id in these two
         # instead of the wide rows: a KPI pass reads no encounter JSON and no claim row
         "CREATE INDEX claims_kpi_enc ON claims(encounter_id, submissions, state, dos, dos_day, provider_npi, payer)",
         "CREATE INDEX encounters_kpi_id ON encounters(id, kind, dos, state, provider_npi, payer)"],
    ),
    (
        15,
        # KPI pre-aggregation (agent/kpi_agg.py, H16): per day of service the additive pieces every
        # KPI needs, at four levels (0 everything, 1 per provider, 2 per payer, 3 per provider and
        # payer; 10-12: levels 0-2 per month, day = 'YYYY-MM'), and the denial reasons beside them.
        # Triggers mark the days a write touches in kpi_dirty (claims, encounters, reviews, touch
        # events, findings: no write path can be missed); a report first re-aggregates only those
        # days. Every existing day starts dirty.
        [("CREATE TABLE kpi_daily (lvl INTEGER NOT NULL, provider TEXT NOT NULL, payer TEXT NOT NULL, "
          "day TEXT NOT NULL, kind TEXT NOT NULL, k1 TEXT NOT NULL DEFAULT '', k2 INTEGER NOT NULL DEFAULT 0, "
          "n INTEGER NOT NULL DEFAULT 0, billed REAL NOT NULL DEFAULT 0, sub_sum REAL NOT NULL DEFAULT 0, "
          "dos_sum REAL NOT NULL DEFAULT 0, closed_sum REAL NOT NULL DEFAULT 0, unclosed INTEGER NOT NULL DEFAULT 0, "
          "touched INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (lvl, kind, provider, payer, day, k1, k2)) WITHOUT ROWID"),
         # by day (the refresh's deletes, rollups and month sums): covering, so those read no table row
         ("CREATE INDEX kpi_daily_day ON kpi_daily(day, lvl, n, billed, sub_sum, dos_sum, closed_sum, unclosed, "
          "touched)"),
         ("CREATE TABLE kpi_daily_reasons (lvl INTEGER NOT NULL, provider TEXT NOT NULL, payer TEXT NOT NULL, "
          "day TEXT NOT NULL, kind TEXT NOT NULL, code TEXT NOT NULL, grp TEXT NOT NULL, n INTEGER NOT NULL, "
          "amount REAL NOT NULL, text TEXT NOT NULL DEFAULT '', "
          "PRIMARY KEY (lvl, provider, payer, day, kind, code, grp)) WITHOUT ROWID"),
         "CREATE INDEX kpi_daily_reasons_day ON kpi_daily_reasons(day, lvl)",
         "CREATE TABLE kpi_dirty (day TEXT PRIMARY KEY) WITHOUT ROWID",
         # (no INSERT OR IGNORE in a trigger: a foreign-key action firing it, e.g. retention's
         # ON DELETE SET NULL on claims, overrides the OR IGNORE; only missing days are inserted)
         *_kpi_dirty_triggers()],
    ),
    (
        16,
        # Charge rules beside the wide encounter rows (agent/rules/apply.py), so a re-run reads and
        # writes narrow rows only. rule_inputs: per charge encounter the compact input the rules
        # read (codes, units, modifiers, pointers, diagnoses, dates; no names), the content hash it
        # was read from and whether the validation findings alone hold it. rule_texts: each
        # distinct rule finding once (JSON, with its pack version). encounter_rules: an
        # encounter's rule findings as a JSON array of rule_texts ids. encounters.findings keeps
        # the validation findings. Existing rule findings move over; inputs are built on the next
        # re-run.
        [("CREATE TABLE rule_inputs (encounter_id INTEGER PRIMARY KEY REFERENCES encounters(id) "
          "ON DELETE CASCADE, input_hash TEXT NOT NULL DEFAULT '', base_holds INTEGER NOT NULL DEFAULT 0, "
          "input TEXT NOT NULL DEFAULT '')"),
         "CREATE TABLE rule_texts (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)",
         ("CREATE TABLE encounter_rules (encounter_id INTEGER PRIMARY KEY REFERENCES encounters(id) "
          "ON DELETE CASCADE, findings TEXT NOT NULL DEFAULT '[]')"),
         ("INSERT OR IGNORE INTO rule_texts (body) SELECT json(f.value) FROM encounters e, json_each(e.findings) f "
          "WHERE json_extract(f.value, '$.rule_version') IS NOT NULL ORDER BY e.id, f.key"),
         ("INSERT INTO encounter_rules (encounter_id, findings) SELECT e.id, (SELECT json_group_array(t.id) "
          "FROM json_each(e.findings) f JOIN rule_texts t ON t.body = json(f.value) "
          "WHERE json_extract(f.value, '$.rule_version') IS NOT NULL) "
          "FROM encounters e WHERE EXISTS (SELECT 1 FROM json_each(e.findings) f "
          "WHERE json_extract(f.value, '$.rule_version') IS NOT NULL)"),
         ("UPDATE encounters SET findings = (SELECT json_group_array(json(f.value)) "
          "FROM json_each(encounters.findings) f WHERE json_extract(f.value, '$.rule_version') IS NULL) "
          "WHERE id IN (SELECT encounter_id FROM encounter_rules)"),
         # a re-run's scan of the encounters reads this index, not the wide rows
         "CREATE INDEX encounters_rules ON encounters(kind, state, mrn, content_hash, version)"],
    ),
]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """One connection to the encrypted store. Use one ``Store`` per thread."""

    def __init__(self, conn: sqlcipher3.Connection, paths: Paths) -> None:
        self.conn = conn
        self.paths = paths

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, paths: Paths, key_source: str = "keyring", *, create: bool = True) -> Store:
        paths.ensure()
        key = keys.store_key(paths, key_source, create=create)
        return cls.open_with_key(paths, key)

    @classmethod
    def open_with_key(cls, paths: Paths, key: bytes) -> Store:
        existed = paths.store.exists() and paths.store.stat().st_size > 0
        conn = sqlcipher3.connect(str(paths.store), timeout=30, isolation_level=None,
                                  check_same_thread=False)
        # SQLCipher prints decrypt failures to stderr itself; we raise a clearer error instead.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError:
            conn.close()
            if existed and _looks_plaintext(paths):
                raise StoreKeyError(
                    f"{paths.store} is an unencrypted SQLite file, not a ChargeBridge store",
                    "move it away; ChargeBridge never uses a plaintext store",
                ) from None
            raise StoreKeyError(
                f"the store in {paths.home} cannot be opened with its key: the key does not "
                "match this store, or the file is damaged",
                "check that the keyring (or passphrase) belongs to this store — e.g. the store "
                "was copied from another machine or the keyring was reset — or restore the "
                "store from backup",
            ) from None
        if not existed:  # a new store frees pages on retention's incremental vacuum (older ones: retention)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA foreign_keys = ON")
        store = cls(conn, paths)
        store.migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {r[0] for r in self.conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            with self.tx():
                for stmt in (sql if isinstance(sql, list) else sql.split(";")):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))
            log.info("store migrated to schema version %d", version)

    @property
    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def tx(self) -> Iterator[sqlcipher3.Connection]:
        """One atomic unit: everything inside commits together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
            notify.bump()

    # -- helpers used by the pipeline and the CLI ----------------------------------------
    def event(self, kind: str, *, encounter_id: int | None = None, document_id: int | None = None,
              detail: dict[str, Any] | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (at, kind, encounter_id, document_id, detail) VALUES (?,?,?,?,?)",
            (now(), kind, encounter_id, document_id, json.dumps(detail or {})),
        )

    def setting(self, key: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                          "value = excluded.value", (key, value))

    def counts(self) -> dict[str, int]:
        out = {r[0]: r[1] for r in self.conn.execute("SELECT state, count(*) FROM encounters GROUP BY state")}
        out["quarantined"] = self.conn.execute(
            "SELECT count(*) FROM quarantine WHERE resolved_at IS NULL").fetchone()[0]
        return out

    def encounters(self, state: str | None = None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        return EncounterRepo(self.conn).rows(state, limit=limit, offset=offset)

    def quarantine_list(self, include_resolved: bool = False) -> list[dict[str, Any]]:
        return QuarantineRepo(self.conn).rows(include_resolved)


def _looks_plaintext(paths: Paths) -> bool:
    with open(paths.store, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"
