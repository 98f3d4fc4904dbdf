"""FHIR R4 JSON -> canonical Encounters.

Accepts a Bundle (transaction, batch, collection, searchset, document, their responses),
a single resource, or NDJSON (bulk-data export, one resource per line). One FHIR Encounter
becomes one ``Encounter(kind="charge")``; its charge lines come from the Claims whose
``item.encounter`` points at it, or - when no Claim does - from the Procedures that reference it.

Codes are left exactly as the source sent them (system URL included): standardize() names
the systems and a chargemaster crosswalk maps SNOMED/CVX/LOINC to CPT/HCPCS later. Synthea,
our main source of test data, codes everything in SNOMED.

Choices worth knowing:

* Pharmacy Claims (``Claim.type`` = pharmacy, or a ``prescription``) are kept: their RxNorm
  lines go to the chargemaster, which knows that an office-administered drug (an implant, an
  injection) is billed as a J-code and that a dispensed tablet is not the practice's to bill.
  ``options["include_pharmacy_claims"] = False`` drops them here instead. Their lines come
  after the visit's own claim lines, so line 1 stays the visit.
* Synthea lists each diagnosis a second time as a Claim item that only points back at that
  diagnosis (same code, no price). Such "diagnosis echo" items are diagnoses, not services,
  so they become ``Encounter.diagnoses`` only.
* FHIR defines ``Claim.total`` as the sum of the item nets. When exactly one kept line has
  no price (Synthea's visit line), it gets ``total - sum(other nets)``.
* No dx pointer is invented: a line points at diagnoses only when the source says so.
* Every non-cancelled Encounter is emitted, even with no lines, so validation can say
  "no charge lines" instead of the visit silently vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from connectors.ehr.base import ParseError
from connectors.ehr.evidence import DAY_MINUTES, MAX_EVIDENCE, Collector, iso_minutes
from connectors.ehr.fhir_read import R4_RESOURCE_TYPES, Item, load  # noqa: F401  (R4_RESOURCE_TYPES: public)
from core.model import (
    MAX_MONEY,
    MONEY_PLACES,
    Address,
    BadValue,
    ChargeLine,
    Coverage,
    Diagnosis,
    Encounter,
    Evidence,
    Parsed,
    Patient,
    Provider,
    Rejected,
    read_decimal,
)

NAME = "fhir"

NPI_SYSTEMS = ("http://hl7.org/fhir/sid/us-npi", "urn:oid:2.16.840.1.113883.4.6")
_CPT_SYSTEMS = ("http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.12")
_HCPCS_SYSTEMS = (
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "urn:oid:2.16.840.1.113883.6.285",
    "urn:oid:2.16.840.1.113883.6.14", "http://terminology.hl7.org/CodeSystem/HCPCS",
)
_ICD10CM_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90")
_SKIP_ENCOUNTER_STATUS = ("cancelled", "entered-in-error")
_SKIP_CLAIM_STATUS = ("cancelled", "entered-in-error")
_SKIP_PROCEDURE_STATUS = ("not-done", "entered-in-error", "preparation")
_PARTICIPANT_RANK = ("PPRF", "ATND", "PRF", "SPRF", "PART")
_LITERAL_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


# Valid JSON can still break FHIR's shapes (a string where an object belongs, ...).
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError, InvalidOperation)
_BAD_SHAPE = ("{} (or a resource it references) is not valid FHIR R4: an element has the wrong "
              "JSON type, so this visit was not read; fix the export and send it again")



class _Index:
    """Finds resources by fullUrl, Type/id, conditional query or logical identifier."""

    def __init__(self, items: list[Item]) -> None:
        self.by_url: dict[str, dict[str, Any]] = {}
        self.by_type_id: dict[tuple[str, str], dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_type: dict[str, list[dict[str, Any]]] = {}
        self.by_ident: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        self.part_of: dict[int, str] = {}
        for part, res, url in items:
            rtype, rid = res["resourceType"], str(res.get("id") or "")
            self.by_type.setdefault(rtype, []).append(res)
            self.part_of[id(res)] = part
            self.by_url.setdefault(url or f"{rtype}/{rid}", res)
            if rid:
                self.by_type_id[(rtype, rid)] = res
                self.by_id.setdefault(rid, res)
            idents = res.get("identifier")
            for ident in idents if isinstance(idents, list) else []:
                if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                    key = (rtype, ident["value"])
                    self.by_ident.setdefault(key, []).append((str(ident.get("system") or ""), res))

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return self.by_type.get(rtype, [])

    def resolve(self, ref: Any, *types: str) -> dict[str, Any] | None:
        """Reference -> resource in this document, or None. ``types`` limits the candidates."""
        if not isinstance(ref, dict):
            return None
        target = str(ref.get("reference") or "")
        found: dict[str, Any] | None = self.by_url.get(target) if target else None
        if found is None and "?" in target:
            rtype, _, query = target.partition("?")
            found = self._by_identifier((rtype.rsplit("/", 1)[-1],), *_identifier_query(query))
        elif found is None and target.startswith("urn:uuid:"):
            found = self.by_id.get(target[9:])
        elif found is None and (m := _LITERAL_REF.search(target)):
            found = self.by_type_id.get((m.group(1), m.group(2)))
        elif not target and isinstance(ref.get("identifier"), dict):
            found = self._by_identifier(types, *_ref_identifier(ref))
        if found is not None and types and found["resourceType"] not in types:
            return None
        return found

    def _by_identifier(self, rtypes: tuple[str, ...], system: str, value: str) -> dict[str, Any] | None:
        for rtype in rtypes:
            for sys_, res in self.by_ident.get((rtype, value), []):
                if not system or sys_ == system:
                    return res
        return None


def _identifier_query(query: str) -> tuple[str, str]:
    """'identifier=http://sys|123' -> ('http://sys', '123'); other searches -> ('', '')."""
    for key, val in parse_qsl(query, keep_blank_values=True):
        if key == "identifier":
            system, sep, value = val.rpartition("|")
            return (system, value) if sep else ("", val)
    return "", ""


def _ref_identifier(ref: Any) -> tuple[str, str]:
    """The identifier a reference names without needing the target (conditional or logical)."""
    if not isinstance(ref, dict):
        return "", ""
    target = str(ref.get("reference") or "")
    if "?" in target:
        return _identifier_query(target.partition("?")[2])
    ident = ref.get("identifier")
    if isinstance(ident, dict):
        return str(ident.get("system") or ""), str(ident.get("value") or "")
    return "", ""


# ---------------------------------------------------------------------------
# Small FHIR datatype helpers
# ---------------------------------------------------------------------------


def _codings(cc: Any) -> list[dict[str, Any]]:
    return [c for c in (cc or {}).get("coding") or [] if isinstance(c, dict) and c.get("code")]


def _pick_coding(cc: Any, preferred: tuple[tuple[str, ...], ...]) -> tuple[str, str]:
    """(code, system) from a CodeableConcept, preferring the listed system groups in order."""
    codings = _codings(cc)
    for group in preferred:
        for c in codings:
            if c.get("system") in group:
                return str(c["code"]), str(c["system"])
    if codings:
        return str(codings[0]["code"]), str(codings[0].get("system") or "")
    return "", ""


def _proc_code(cc: Any) -> tuple[str, str]:
    return _pick_coding(cc, (_CPT_SYSTEMS, _HCPCS_SYSTEMS))


def _dx_code(cc: Any) -> tuple[str, str]:
    return _pick_coding(cc, (_ICD10CM_SYSTEMS,))


class _BadNumber(Exception):
    """A number the visit needs is not usable; ``str()`` names the element, never the value."""


def _num(value: Any, what: str) -> Decimal | None:
    """A FHIR decimal (or Quantity/Money ``value``) -> a checked Decimal; None when absent.

    Read through :func:`core.model.read_decimal`: NaN, 1e999999999, absurd sizes and more than
    4 decimal places reject the visit with a reason instead of turning into a charge."""
    if isinstance(value, dict):
        value = value.get("value")
    if value is None:
        return None
    try:
        return read_decimal(value, limit=MAX_MONEY, places=MONEY_PLACES, what=what)
    except BadValue as exc:
        raise _BadNumber(str(exc)) from None


_PLACES = Decimal("0.0001")


def _div(a: Decimal, b: Decimal) -> Decimal:
    """a / b for checked amounts; an inexact quotient is rounded to 4 places (100 / 3 = 33.3333)."""
    q = a / b
    return q if int(q.as_tuple().exponent) >= -4 else q.quantize(_PLACES)


def _text(d: Decimal | None) -> str:
    """A checked (bounded) Decimal -> plain text; never a billion-digit string."""
    return "" if d is None else format(d, "f")


def _has_type_code(ident: dict[str, Any], code: str) -> bool:
    return any(c.get("code") == code for c in _codings(ident.get("type")))


def _best_name(names: Any) -> dict[str, Any]:
    ranked = [n for n in names or [] if isinstance(n, dict) and n.get("use") not in ("old", "maiden")]
    for use in ("official", "usual", None):
        for n in ranked:
            if n.get("use") == use:
                return n
    return ranked[0] if ranked else {}


# ---------------------------------------------------------------------------
# Patient, providers, coverage
# ---------------------------------------------------------------------------


def _patient(res: dict[str, Any]) -> Patient:
    idents = [i for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    mrn = next((i["value"] for i in idents if _has_type_code(i, "MR")), "")
    if not mrn:  # never fall back to a Social Security Number
        mrn = next((i["value"] for i in idents if not _has_type_code(i, "SS")
                    and "us-ssn" not in str(i.get("system") or "")), "")
    name = _best_name(res.get("name"))
    given = [str(g) for g in name.get("given") or []]
    family = str(name.get("family") or "")
    if not family and not given and name.get("text"):
        *given, family = str(name["text"]).split() or [""]
    addrs = [a for a in res.get("address") or [] if isinstance(a, dict) and a.get("use") != "old"]
    addr = next((a for a in addrs if a.get("use") in ("home", None)), addrs[0] if addrs else {})
    lines = [str(x) for x in addr.get("line") or []]
    phones = [t for t in res.get("telecom") or [] if isinstance(t, dict)
              and t.get("system") == "phone" and t.get("value") and t.get("use") != "old"]
    phones.sort(key=lambda t: {"home": 0, "mobile": 1, "work": 2}.get(str(t.get("use")), 3))
    return Patient(
        mrn=str(mrn or res.get("id") or ""),
        family=family, given=given[0] if given else "", middle=" ".join(given[1:]),
        suffix=str((name.get("suffix") or [""])[0]),
        dob=str(res.get("birthDate") or ""), sex=str(res.get("gender") or ""),
        address=Address(line1=lines[0] if lines else "", line2=" ".join(lines[1:]),
                        city=str(addr.get("city") or ""), state=str(addr.get("state") or ""),
                        zip=str(addr.get("postalCode") or ""), country=str(addr.get("country") or "")),
        phone=str(phones[0]["value"]) if phones else "",
    )


def _npi_of(res: dict[str, Any]) -> str:
    return next((str(i.get("value") or "") for i in res.get("identifier") or []
                 if isinstance(i, dict) and i.get("system") in NPI_SYSTEMS), "")


def _taxonomy(concepts: Any) -> str:
    for cc in concepts or []:
        for c in _codings(cc):
            if "nucc.org" in str(c.get("system") or ""):
                return str(c["code"])
    return ""


def _from_display(display: str) -> tuple[str, str]:
    """'Dr. Abdul White MD' -> ('Abdul', 'White'): last resort when the Practitioner is not in the file.

    Only a leading title and trailing capitalised credentials are dropped: "Do" is also a surname.
    """
    words = display.replace(",", " ").split()
    while words and words[0].rstrip(".").lower() in ("dr", "mr", "mrs", "ms", "miss", "prof"):
        words.pop(0)
    while len(words) > 2 and words[-1].rstrip(".") in ("MD", "DO", "NP", "PA", "RN", "PhD", "PHD", "DDS"):
        words.pop()
    return (" ".join(words[:-1]), words[-1]) if words else ("", "")


def _provider(idx: _Index, ref: Any) -> Provider:
    """Reference to Practitioner | PractitionerRole | Organization -> Provider (NPI, name)."""
    prov = Provider()
    res = idx.resolve(ref, "Practitioner", "PractitionerRole", "Organization")
    if res is not None and res["resourceType"] == "PractitionerRole":
        prov.taxonomy = _taxonomy(res.get("specialty")) or _taxonomy(res.get("code"))
        org = idx.resolve(res.get("organization"), "Organization")
        prov.organization = str((org or {}).get("name") or (res.get("organization") or {}).get("display") or "")
        inner = idx.resolve(res.get("practitioner"), "Practitioner")
        if inner is None:
            system, value = _ref_identifier(res.get("practitioner"))
            prov.npi = value if system in NPI_SYSTEMS else ""
            prov.given, prov.family = _from_display(str((res.get("practitioner") or {}).get("display") or ""))
            return prov
        res = inner
    if res is not None and res["resourceType"] == "Practitioner":
        name = _best_name(res.get("name"))
        prov.npi = _npi_of(res)
        prov.family = str(name.get("family") or "")
        prov.given = str((name.get("given") or [""])[0])
        prov.taxonomy = prov.taxonomy or _taxonomy(q.get("code") for q in res.get("qualification") or [])
    elif res is not None:  # Organization
        prov.npi, prov.organization = _npi_of(res), str(res.get("name") or "")
    else:
        system, value = _ref_identifier(ref)
        prov.npi = value if system in NPI_SYSTEMS else ""
        display = str((ref or {}).get("display") or "") if isinstance(ref, dict) else ""
        target = str((ref or {}).get("reference") or "") if isinstance(ref, dict) else ""
        if target.startswith("Organization"):
            prov.organization = display
        else:
            prov.given, prov.family = _from_display(display)
    return prov


def _coverage(idx: _Index, res: dict[str, Any]) -> Coverage:
    payor_ref = (res.get("payor") or [None])[0]
    payor = idx.resolve(payor_ref, "Organization")
    idents = [i for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    member = next((i["value"] for i in idents if _has_type_code(i, "MB")), "")
    group = next((c.get("value") for c in res.get("class") or []
                  if any(x.get("code") == "group" for x in _codings(c.get("type")))), "")
    rel = next((c["code"] for c in _codings(res.get("relationship"))), "")
    payer_id = _ref_identifier(payor_ref)[1] or (
        next((str(i.get("value")) for i in (payor or {}).get("identifier") or [] if i.get("value")), ""))
    return Coverage(
        payer_name=str((payor or {}).get("name") or (payor_ref or {}).get("display") or ""),
        payer_id=payer_id,
        member_id=str(member or res.get("subscriberId") or (idents[0]["value"] if idents else "")),
        group=str(group or ""),
        relationship=rel if rel in ("self", "spouse", "child", "") else "other",
    )


# ---------------------------------------------------------------------------
# Encounters
# ---------------------------------------------------------------------------


class _Builder:
    """Joins each Encounter with the Claims, Conditions and Procedures that point at it."""

    def __init__(self, idx: _Index, options: Mapping[str, Any]) -> None:
        self.idx = idx
        self.with_pharmacy = bool(options.get("include_pharmacy_claims", True))
        self.rejected: list[Rejected] = []
        self.claims_for: dict[int, list[dict[str, Any]]] = {}
        self._link_claims()
        # Conditions / Procedures by the Encounter they reference: one pass, not one per visit.
        # Orders and results too (``Encounter.evidence``); ``context`` is their pre-R4 element name.
        self.clinical_for: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for rtype in ("Condition", "Procedure", *_EVIDENCE_TYPES):
            for res in idx.of_type(rtype):
                try:
                    enc = idx.resolve(res.get("encounter") or res.get("context"), "Encounter")
                except _SHAPE_ERRORS:
                    continue
                if enc is not None:
                    self.clinical_for.setdefault((id(enc), rtype), []).append(res)

    @staticmethod
    def _is_pharmacy(claim: dict[str, Any]) -> bool:
        return any(c.get("code") == "pharmacy" for c in _codings(claim.get("type"))) or "prescription" in claim

    def _is_billing_claim(self, claim: dict[str, Any]) -> bool:
        if claim.get("status") in _SKIP_CLAIM_STATUS or claim.get("use") in ("preauthorization", "predetermination"):
            return False
        return self.with_pharmacy or not self._is_pharmacy(claim)

    def _link_claims(self) -> None:
        for claim in self.idx.of_type("Claim"):
            targets: list[dict[str, Any]] = []
            try:
                if not self._is_billing_claim(claim):
                    continue
                for item in claim.get("item") or []:
                    for ref in item.get("encounter") or []:
                        enc = self.idx.resolve(ref, "Encounter")
                        if enc is not None and all(enc is not t for t in targets):
                            targets.append(enc)
            except _SHAPE_ERRORS:
                self.rejected.append(Rejected(self.idx.part_of[id(claim)], _BAD_SHAPE.format("Claim")))
                continue
            for enc in targets:
                self.claims_for.setdefault(id(enc), []).append(claim)
            if not targets:
                self.rejected.append(Rejected(self.idx.part_of[id(claim)], (
                    "Claim is not linked to an Encounter in this file (Claim.item.encounter is "
                    "missing or points outside the file), so its items were not read; export the "
                    "Claim together with its Encounter")))

    def build(self, res: dict[str, Any]) -> Encounter | Rejected:
        """One FHIR Encounter -> Encounter; a resource of the wrong shape rejects only this visit."""
        try:
            return self._build(res)
        except _BadNumber as exc:
            return Rejected(self.idx.part_of[id(res)], f"{exc}, so this visit was not read; fix the value in the "
                                                       "EHR and export the visit again")
        except _SHAPE_ERRORS:
            return Rejected(self.idx.part_of[id(res)], _BAD_SHAPE.format("Encounter"))

    def _build(self, res: dict[str, Any]) -> Encounter | Rejected:
        part = self.idx.part_of[id(res)]
        status = str(res.get("status") or "")
        if status in _SKIP_ENCOUNTER_STATUS:
            return Rejected(part, f"Encounter status is '{status}', so it is not billed; nothing "
                                  "to do unless that status is wrong in the EHR")
        idents = [i for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
        ident = next((i for i in idents if i.get("use") in ("official", "usual")), idents[0] if idents else None)
        if ident is None and not res.get("id"):
            return Rejected(part, "Encounter has neither an id nor an identifier, so it cannot be "
                                  "tracked across exports; export it with its id")
        claims = sorted(self.claims_for.get(id(res), []), key=self._is_pharmacy)
        enc = Encounter(
            source=NAME, kind="charge",
            source_id=str(ident["value"] if ident else res["id"]),
            source_system=str((ident or {}).get("system") or "fhir"),
        )
        subject = res.get("subject") or next((c.get("patient") for c in claims if c.get("patient")), None)
        pat = self.idx.resolve(subject, "Patient")
        if pat is not None:
            enc.patient = _patient(pat)
        else:  # not in this file: keep the identifier (or id) the reference names
            value = _ref_identifier(subject)[1]
            m = _LITERAL_REF.search(str((subject or {}).get("reference") or ""))
            enc.patient = Patient(mrn=value or (m.group(2) if m else ""))
        period: Any = (res.get("period")
                       or next((c.get("billablePeriod") for c in claims if c.get("billablePeriod")), {}))
        enc.dos_start, enc.dos_end = str(period.get("start") or ""), str(period.get("end") or "")
        enc.rendering = self._rendering(res, claims)
        billing_ref = next((c.get("provider") for c in claims if c.get("provider")), res.get("serviceProvider"))
        enc.billing = _provider(self.idx, billing_ref) if billing_ref else Provider()
        enc.coverages = self._coverages(claims, pat)
        if claims:
            for claim in claims:
                self._claim_lines(enc, claim)
        else:
            self._clinical_lines(enc, res)
        enc.evidence = self._evidence(res)
        return enc

    def _evidence(self, res: dict[str, Any]) -> list[Evidence]:
        """ServiceRequests (orders), DiagnosticReports and Observations (results) that reference the
        visit, and its length: what ``doc.missing`` checks charges against. A result based on a
        ServiceRequest is the result of that order (like OBX under OBR). Never raises: a resource
        of the wrong shape gives no evidence, and the visit is read as before."""
        found = Collector()
        for rtype, kind in _EVIDENCE_TYPES.items():
            for item in self.clinical_for.get((id(res), rtype), []):
                if found.full:
                    break
                try:
                    if item.get("status") in _SKIP_EVIDENCE_STATUS:
                        continue
                    based = item.get("basedOn") if kind == "result" else None
                    orders = [o for ref in (based[:MAX_EVIDENCE] if isinstance(based, list) else [])
                              if (o := self.idx.resolve(ref, "ServiceRequest")) is not None]
                    for concept in [o.get("code") for o in orders] or [item.get("code")]:
                        found.add(kind, *_evidence_code(concept))
                except _SHAPE_ERRORS:
                    continue
        period = res.get("period")
        minutes = iso_minutes(period.get("start"), period.get("end")) if isinstance(period, dict) else 0
        return found.done(minutes or _duration_minutes(res.get("length")))

    def _rendering(self, res: dict[str, Any], claims: list[dict[str, Any]]) -> Provider:
        """Primary performer first, then attender, ...; the first one with an NPI wins (837P needs it)."""
        def rank(p: dict[str, Any]) -> int:
            codes = [c.get("code") for t in p.get("type") or [] for c in _codings(t)]
            return min((_PARTICIPANT_RANK.index(c) for c in codes if c in _PARTICIPANT_RANK),
                       default=len(_PARTICIPANT_RANK))
        refs = [p.get("individual") for p in sorted(res.get("participant") or [], key=rank) if p.get("individual")]
        refs += [t.get("provider") for c in claims for t in c.get("careTeam") or [] if t.get("provider")]
        best = Provider()
        for ref in refs:
            if isinstance(ref, dict) and str(ref.get("reference") or "").startswith("RelatedPerson"):
                continue
            prov = _provider(self.idx, ref)
            if prov.npi:
                return prov
            if not (best.family or best.given):
                best = prov
        return best

    def _coverages(self, claims: list[dict[str, Any]], pat: dict[str, Any] | None) -> list[Coverage]:
        out: list[Coverage] = []
        for claim in claims:
            for ins in sorted(claim.get("insurance") or [], key=lambda i: (not i.get("focal"), i.get("sequence") or 0)):
                ref = ins.get("coverage")
                res = self.idx.resolve(ref, "Coverage")
                cov = _coverage(self.idx, res) if res else Coverage(
                    payer_name=str((ref or {}).get("display") or ""), member_id=_ref_identifier(ref)[1])
                if cov not in out and (cov.payer_name or cov.member_id):
                    out.append(cov)
        if not claims and pat is not None:
            mine = [c for c in self.idx.of_type("Coverage") if c.get("status") in (None, "active")
                    and self.idx.resolve(c.get("beneficiary"), "Patient") is pat]
            for res in sorted(mine, key=lambda c: c.get("order") or 99):
                out.append(_coverage(self.idx, res))
        return out

    def _add_dx(self, enc: Encounter, code: str, system: str) -> int:
        """Add a diagnosis once; return its 1-based position in ``enc.diagnoses``."""
        for i, dx in enumerate(enc.diagnoses, start=1):
            if (dx.code, dx.system) == (code, system):
                return i
        enc.diagnoses.append(Diagnosis(code=code, system=system))
        return len(enc.diagnoses)

    def _claim_lines(self, enc: Encounter, claim: dict[str, Any]) -> None:
        part = self.idx.part_of[id(claim)]
        dx_pos: dict[Any, int] = {}
        dx_code: dict[Any, str] = {}
        for dx in sorted(claim.get("diagnosis") or [], key=lambda d: d.get("sequence") or 0):
            cc = dx.get("diagnosisCodeableConcept")
            if cc is None:
                cc = (self.idx.resolve(dx.get("diagnosisReference"), "Condition") or {}).get("code")
            code, system = _dx_code(cc)
            if code:
                dx_pos[dx.get("sequence")] = self._add_dx(enc, code, system)
                dx_code[dx.get("sequence")] = code
        new: list[ChargeLine] = []
        priced = Decimal(0)
        for k, item in enumerate(claim.get("item") or []):
            code, system = _proc_code(item.get("productOrService"))
            seqs = item.get("diagnosisSequence") or []
            where = f"Claim.item[{k}]"
            qty = _num(item.get("quantity"), f"{where}.quantity")
            net, unit = _num(item.get("net"), f"{where}.net"), _num(item.get("unitPrice"), f"{where}.unitPrice")
            item_net = net if net is not None else (unit * (qty or 1) if unit is not None else None)
            priced += item_net or 0
            echo = (seqs and code in {dx_code.get(s) for s in seqs} and item_net is None
                    and not item.get("procedureSequence") and not item.get("informationSequence"))
            if echo:
                continue
            if not code:
                self.rejected.append(Rejected(f"{part}.item[{k}]", (
                    "Claim item has no productOrService code, so it cannot be billed; add the "
                    "procedure code in the EHR and export again")))
                continue
            if unit is None and net is not None:
                unit = _div(net, qty) if qty else net
            served = item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start") or ""
            pos = _pick_coding(item.get("locationCodeableConcept"), ())[0]
            if pos and not enc.place_of_service:
                enc.place_of_service = pos
            new.append(ChargeLine(
                code=code, code_system=system,
                modifiers=[m for cc in item.get("modifier") or [] for m in [_pick_coding(cc, ())[0]] if m],
                dx_pointers=[dx_pos[s] for s in seqs if s in dx_pos],
                units=_text(qty) or "1", unit_charge=_text(unit),
                line_id=f"{claim.get('id') or 'Claim'}.{item.get('sequence', k + 1)}",
                service_date=str(served),
            ))
        unpriced = [ln for ln in new if not ln.unit_charge]
        total = _num(claim.get("total"), "Claim.total")
        if len(unpriced) == 1 and total is not None and total - priced > 0:
            units = Decimal(unpriced[0].units)
            rest = total - priced
            unpriced[0].unit_charge = _text(_div(rest, units) if units else rest)
        enc.lines.extend(new)

    def _clinical_lines(self, enc: Encounter, res: dict[str, Any]) -> None:
        """No Claim: Conditions become diagnoses and Procedures become lines."""
        conditions: list[dict[str, Any]] = []
        for d in sorted(res.get("diagnosis") or [], key=lambda d: d.get("rank") or 99):
            cond = self.idx.resolve(d.get("condition"), "Condition")
            if cond is not None:
                conditions.append(cond)
        conditions += self.clinical_for.get((id(res), "Condition"), [])
        pos_of: dict[int, int] = {}
        for cond in conditions:
            if any(c.get("code") in ("entered-in-error", "refuted") for c in _codings(cond.get("verificationStatus"))):
                continue
            code, system = _dx_code(cond.get("code"))
            if code:
                pos_of[id(cond)] = self._add_dx(enc, code, system)
        for proc in self.clinical_for.get((id(res), "Procedure"), []):
            code, system = _proc_code(proc.get("code"))
            if not code or proc.get("status") in _SKIP_PROCEDURE_STATUS:
                continue
            reasons = [self.idx.resolve(r, "Condition") for r in proc.get("reasonReference") or []]
            pointers = [pos_of[id(c)] for c in reasons if c is not None and id(c) in pos_of]
            enc.lines.append(ChargeLine(
                code=code, code_system=system, dx_pointers=sorted(set(pointers)),
                line_id=f"Procedure/{proc.get('id') or ''}".rstrip("/"),
                service_date=str(proc.get("performedDateTime")
                                 or (proc.get("performedPeriod") or {}).get("start") or ""),
            ))


_EVIDENCE_TYPES = {"ServiceRequest": "order", "DiagnosticReport": "result", "Observation": "result"}
_SKIP_EVIDENCE_STATUS = ("entered-in-error", "revoked", "cancelled")
_DURATION_UNITS = {"min": 1, "minute": 1, "minutes": 1, "h": 60, "hour": 60, "hours": 60}


def _evidence_code(cc: Any) -> tuple[Any, Any]:
    """(code, system) of an order/result: its CPT coding, else its first coding with a string code."""
    codings = cc.get("coding") if isinstance(cc, dict) else None
    usable = [c for c in codings[:MAX_EVIDENCE] if isinstance(c, dict) and isinstance(c.get("code"), str)
              and c["code"].strip()] if isinstance(codings, list) else []
    best = next((c for c in usable if c.get("system") in _CPT_SYSTEMS), usable[0] if usable else None)
    return (best["code"], best.get("system")) if best is not None else ("", "")


def _duration_minutes(length: Any) -> int:
    """Encounter.length (a Duration in minutes or hours) -> whole minutes; 0 when unusable."""
    if not isinstance(length, dict):
        return 0
    value, unit = length.get("value"), length.get("code") or length.get("unit")
    factor = _DURATION_UNITS.get(unit) if isinstance(unit, str) else None
    if factor is None or isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return 0
    amount = Decimal(value)
    if not amount.is_finite() or not 0 < amount <= DAY_MINUTES:  # checked before any arithmetic
        return 0
    minutes = int(amount * factor)
    return minutes if 0 < minutes <= DAY_MINUTES else 0


def _summary(idx: _Index) -> str:
    kinds = sorted(idx.by_type)
    shown = ", ".join(kinds[:6]) + (", ..." if len(kinds) > 6 else "")
    return f" (it holds {shown})" if kinds else ""


def parse(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]:
    """FHIR R4 JSON document -> Encounters (one per FHIR Encounter) and Rejected parts."""
    items, rejected = load(data, name)
    idx = _Index(items)
    encounters = idx.of_type("Encounter")
    if not encounters:
        raise ParseError(
            f"the FHIR document has no Encounter resources{_summary(idx)}; ChargeBridge bills per "
            "Encounter, so export the patient's Encounters together with their Claims or Procedures"
        )
    builder = _Builder(idx, options)
    out: list[Parsed] = list(rejected)
    out.extend(builder.build(res) for res in encounters)
    out.extend(builder.rejected)
    return out

