"""Fixture schemas shaped like OpenEMR and Open Dental, written here from their published column
lists (only the tables and columns ChargeBridge reads, with the vendors' names and types), and
realistic made-up rows. Portable DDL for MariaDB, PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

CPT = ["99213", "99214", "93000", "36415", "80053", "90471", "G0438"]
ICD = ["E11.9", "I10", "J06.9", "Z00.00", "E78.5", "K21.9"]
CDT = ["D0120", "D1110", "D0274", "D2391", "D0220"]
FAMILY = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Novak", "Ferreira", "Kowalczyk"]
GIVEN = ["Amara", "Elias", "Ines", "Kenji", "Layla", "Milan", "Rosa", "Tomasz"]


def npi(base8: str) -> str:
    """A valid NPI (Luhn over 80840 + 9 digits) from 9 digits starting with 1."""
    body = "1" + base8
    digits = [int(c) for c in "80840" + body]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def _ddl(kind: str, sql: str) -> str:
    auto = {"mariadb": "BIGINT AUTO_INCREMENT PRIMARY KEY", "postgres": "BIGSERIAL PRIMARY KEY",
            "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT"}[kind]
    dt = "DATETIME" if kind in ("mariadb", "sqlite") else "TIMESTAMP"
    ts = {"mariadb": "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP",
          "postgres": "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP",
          "sqlite": "DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP"}[kind]
    return sql.replace("{auto}", auto).replace("{dt}", dt).replace("{ts}", ts)


OPENEMR_DDL = [
    """CREATE TABLE patient_data (id {auto}, pid BIGINT NOT NULL, pubpid VARCHAR(255), fname VARCHAR(255),
       lname VARCHAR(255), mname VARCHAR(255), DOB DATE, sex VARCHAR(255), street VARCHAR(255), city VARCHAR(255),
       state VARCHAR(255), postal_code VARCHAR(255), phone_home VARCHAR(255))""",
    "CREATE UNIQUE INDEX pd_pid ON patient_data (pid)",  # OpenEMR: UNIQUE KEY pid
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(255), fname VARCHAR(255), lname VARCHAR(255), "
    "npi VARCHAR(15))",
    "CREATE TABLE facility (id INTEGER PRIMARY KEY, name VARCHAR(255), pos_code SMALLINT)",
    """CREATE TABLE form_encounter (id {auto}, date {dt}, reason TEXT, facility_id INTEGER, pid BIGINT,
       encounter BIGINT, provider_id INTEGER)""",
    "CREATE INDEX fe_encounter ON form_encounter (encounter)",
    "CREATE INDEX fe_date ON form_encounter (date)",
    """CREATE TABLE billing (id {auto}, date {dt}, code_type VARCHAR(15), code VARCHAR(20), pid BIGINT,
       provider_id INTEGER, encounter INTEGER, code_text TEXT, activity SMALLINT, modifier VARCHAR(12),
       units INTEGER, fee DECIMAL(12,2), justify VARCHAR(255))""",
    "CREATE INDEX billing_encounter ON billing (encounter)",
    "CREATE TABLE insurance_companies (id INTEGER PRIMARY KEY, name VARCHAR(255), cms_id VARCHAR(15))",
    """CREATE TABLE insurance_data (id {auto}, type VARCHAR(20), provider VARCHAR(255), policy_number VARCHAR(255),
       group_number VARCHAR(255), subscriber_relationship VARCHAR(255), date DATE, pid BIGINT)""",
    "CREATE INDEX ins_pid_type_date ON insurance_data (pid, type, date)",  # OpenEMR: KEY pid_type_date
]

OPENDENTAL_DDL = [
    """CREATE TABLE procedurelog (ProcNum {auto}, PatNum BIGINT NOT NULL, AptNum BIGINT, ProcDate DATE,
       ProcFee DOUBLE PRECISION, ProcStatus SMALLINT, ProvNum BIGINT, CodeNum BIGINT, CodeMod1 CHAR(2),
       CodeMod2 CHAR(2), CodeMod3 CHAR(2), CodeMod4 CHAR(2), DiagnosticCode VARCHAR(255),
       DiagnosticCode2 VARCHAR(255), DiagnosticCode3 VARCHAR(255), DiagnosticCode4 VARCHAR(255),
       UnitQty INTEGER, PlaceService SMALLINT, DateTStamp {ts})""",
    "CREATE INDEX pl_stamp ON procedurelog (DateTStamp)",
    "CREATE INDEX pl_pat ON procedurelog (PatNum, ProcDate)",
    "CREATE TABLE procedurecode (CodeNum BIGINT PRIMARY KEY, ProcCode VARCHAR(15), Descript VARCHAR(255))",
    """CREATE TABLE patient (PatNum BIGINT PRIMARY KEY, LName VARCHAR(100), FName VARCHAR(100), MiddleI VARCHAR(100),
       Birthdate DATE, Gender SMALLINT, Address VARCHAR(100), City VARCHAR(100), State VARCHAR(100),
       Zip VARCHAR(100), HmPhone VARCHAR(30))""",
    "CREATE TABLE provider (ProvNum BIGINT PRIMARY KEY, Abbr VARCHAR(255), LName VARCHAR(100), FName VARCHAR(100), "
    "NationalProvID VARCHAR(255))",
    "CREATE TABLE patplan (PatPlanNum {auto}, PatNum BIGINT, Ordinal SMALLINT, Relationship SMALLINT, "
    "InsSubNum BIGINT)",
    "CREATE TABLE inssub (InsSubNum BIGINT PRIMARY KEY, PlanNum BIGINT, SubscriberID VARCHAR(255), "
    "DateEffective DATE, DateTerm DATE)",
    "CREATE TABLE insplan (PlanNum BIGINT PRIMARY KEY, CarrierNum BIGINT, GroupNum VARCHAR(25))",
    "CREATE TABLE carrier (CarrierNum BIGINT PRIMARY KEY, CarrierName VARCHAR(255), ElectID VARCHAR(255))",
]


def create(engine: sa.Engine, kind: str, ddl: list[str]) -> None:
    with engine.begin() as c:
        for stmt in ddl:
            c.execute(sa.text(_ddl(kind, stmt)))


def ins(c: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        cols = list(rows[0])
        c.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + k for k in cols)})"),
                  rows)


# -- OpenEMR ------------------------------------------------------------------------------------
def openemr_base(c: sa.Connection, patients: int = 8) -> None:
    ins(c, "users", [{"id": 1, "username": "dr_okafor", "fname": "Ngozi", "lname": "Okafor", "npi": npi("23456789")},
                     {"id": 2, "username": "dr_lind", "fname": "Per", "lname": "Lindqvist", "npi": npi("98765432")}])
    ins(c, "facility", [{"id": 3, "name": "Main Street Clinic", "pos_code": 11}])
    ins(c, "insurance_companies", [{"id": 5, "name": "Acme Health Plan", "cms_id": "60054"},
                                   {"id": 6, "name": "Medicare Part B", "cms_id": "00430"}])
    ins(c, "patient_data", [{"pid": p, "pubpid": f"MRN{p:05d}", "fname": GIVEN[p % 8], "lname": FAMILY[p % 8],
                             "mname": "", "DOB": date(1950 + p % 50, 1 + p % 12, 1 + p % 28),
                             "sex": "Female" if p % 2 else "Male", "street": f"{10 + p} Elm St", "city": "Springfield",
                             "state": "IL", "postal_code": "62701", "phone_home": "217-555-0100"}
                            for p in range(1, patients + 1)])
    ins(c, "insurance_data", [{"type": "primary", "provider": "5" if p % 3 else "6", "policy_number": f"P{p:07d}",
                               "group_number": "G100", "subscriber_relationship": "self", "date": date(2020, 1, 1),
                               "pid": p} for p in range(1, patients + 1)])


def openemr_visit(c: sa.Connection, encounter: int, dos: date, *, pid: int = 1, lines: int = 2,
                  provider: int | None = 1, fee: Any = "75.00") -> None:
    """A visit: form_encounter + its ICD10 rows + ``lines`` CPT rows (fee = line total)."""
    ins(c, "form_encounter", [{"date": datetime.combine(dos, datetime.min.time()), "reason": "follow-up",
                               "facility_id": 3, "pid": pid, "encounter": encounter, "provider_id": provider}])
    dx = [ICD[encounter % len(ICD)], ICD[(encounter + 1) % len(ICD)]]
    rows = [{"date": datetime.combine(dos, datetime.min.time()), "code_type": "ICD10", "code": d, "pid": pid,
             "provider_id": provider, "encounter": encounter, "code_text": "", "activity": 1, "modifier": "",
             "units": 1, "fee": 0, "justify": ""} for d in dx]
    for i in range(lines):
        rows.append({"date": datetime.combine(dos, datetime.min.time()), "code_type": "CPT4",
                     "code": CPT[(encounter + i) % len(CPT)], "pid": pid, "provider_id": provider,
                     "encounter": encounter, "code_text": "", "activity": 1, "modifier": "25" if i == 0 else "",
                     "units": 1 + i, "fee": fee, "justify": "".join(f"ICD10|{d}:" for d in dx[: 1 + i % 2])})
    ins(c, "billing", rows)


# -- Open Dental --------------------------------------------------------------------------------
def opendental_base(c: sa.Connection, patients: int = 6) -> None:
    ins(c, "provider", [{"ProvNum": 1, "Abbr": "DOC1", "LName": "Moreau", "FName": "Ines",
                         "NationalProvID": npi("34567891")}])
    ins(c, "procedurecode", [{"CodeNum": i + 1, "ProcCode": code, "Descript": ""} for i, code in enumerate(CDT)])
    ins(c, "carrier", [{"CarrierNum": 1, "CarrierName": "Delta Dental", "ElectID": "94276"}])
    ins(c, "insplan", [{"PlanNum": 1, "CarrierNum": 1, "GroupNum": "DG-1"}])
    ins(c, "patient", [{"PatNum": p, "LName": FAMILY[p % 8], "FName": GIVEN[p % 8], "MiddleI": "",
                        "Birthdate": date(1960 + p, 2, 3), "Gender": p % 2, "Address": f"{p} Oak Ave",
                        "City": "Portland", "State": "OR", "Zip": "97201", "HmPhone": "503-555-0199"}
                       for p in range(1, patients + 1)])
    ins(c, "inssub", [{"InsSubNum": p, "PlanNum": 1, "SubscriberID": f"DD{p:06d}", "DateEffective": date(2020, 1, 1),
                       "DateTerm": None} for p in range(1, patients + 1)])
    ins(c, "patplan", [{"PatNum": p, "Ordinal": 1, "Relationship": 0, "InsSubNum": p} for p in range(1, patients + 1)])


def opendental_procs(c: sa.Connection, pat: int, day: date, codes: list[int], status: int = 2) -> None:
    ins(c, "procedurelog", [{"PatNum": pat, "AptNum": 0, "ProcDate": day, "ProcFee": 85.0 + 10 * n,
                             "ProcStatus": status, "ProvNum": 1, "CodeNum": n, "CodeMod1": "", "CodeMod2": "",
                             "CodeMod3": "", "CodeMod4": "", "DiagnosticCode": "K02.52" if n == 4 else "Z01.20",
                             "DiagnosticCode2": "", "DiagnosticCode3": "", "DiagnosticCode4": "", "UnitQty": 1,
                             "PlaceService": 0} for n in codes])


def days_ago(n: int) -> date:
    return date.today() - timedelta(days=n)
