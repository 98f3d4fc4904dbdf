"""C-CDA R2.1 XML -> canonical Encounters.

The XML is read with defusedxml and every DTD is refused: a C-CDA never needs one, and a
DOCTYPE is how external-entity (XXE) and entity-expansion ("billion laughs") attacks arrive.

What becomes a charge:

* Each Encounter Activity (moodCode EVN) of the Encounters section is one Encounter. Its
  code - preferring a CPT/HCPCS code among the code and its translations - is a charge line;
  a code from another system is kept with its OID so validation can flag it.
* Procedure activities (procedure / observation / act) of the Procedures section that carry a
  CPT or HCPCS code (directly or as a translation) become lines of the encounter on that date.
  Those on no encounter's date are grouped into one Encounter per date of service, keyed by
  patient and date so a re-exported document lands on the same key.
* A visit note (Progress Note, Consultation, H&P, ...) with no Encounters section describes one
  visit: its header ``componentOf/encompassingEncounter``. A CCD's header encounter is ignored,
  because a CCD summarises a record and its header visit is not a billable event by itself.
* Diagnoses come from the encounter's Encounter Diagnosis acts, Problem and Indication
  observations, preferring an ICD-10-CM translation. The Problems section is a chronic list,
  not what was treated that day, so it is used only with ``options["problem_list_diagnoses"]``.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring

from connectors.ehr import limits
from connectors.ehr.base import ParseError
from connectors.ehr.evidence import Collector, hl7_minutes
from core.model import Address, ChargeLine, Diagnosis, Encounter, Parsed, Patient, Provider, Rejected

NAME = "ccda"

V3 = "{urn:hl7-org:v3}"

OID_SSN = "2.16.840.1.113883.4.1"
OID_NPI = "2.16.840.1.113883.4.6"
OID_CPT = "2.16.840.1.113883.6.12"
OID_HCPCS = ("2.16.840.1.113883.6.285", "2.16.840.1.113883.6.14")
OID_ICD10CM = "2.16.840.1.113883.6.90"

ENCOUNTERS_SECTION = ({"2.16.840.1.113883.10.20.22.2.22", "2.16.840.1.113883.10.20.22.2.22.1"}, "46240-8")
PROCEDURES_SECTION = ({"2.16.840.1.113883.10.20.22.2.7", "2.16.840.1.113883.10.20.22.2.7.1"}, "47519-4")
PROBLEMS_SECTION = ({"2.16.840.1.113883.10.20.22.2.5", "2.16.840.1.113883.10.20.22.2.5.1"}, "11450-4")
RESULTS_SECTION = ({"2.16.840.1.113883.10.20.22.2.3", "2.16.840.1.113883.10.20.22.2.3.1"}, "30954-2")
PLAN_SECTION = ({"2.16.840.1.113883.10.20.22.2.10"}, "18776-5")  # Plan of Treatment (formerly Plan of Care)
CCD_TEMPLATE = "2.16.840.1.113883.10.20.22.1.2"
DX_OBSERVATIONS = {"2.16.840.1.113883.10.20.22.4.4", "2.16.840.1.113883.10.20.22.4.19"}
_NOT_DONE = ("cancelled", "nullified", "aborted", "obsolete")

DTD_REFUSED = (
    "XML document declares a DTD or entities, which ChargeBridge refuses for safety (external "
    "entity / entity expansion attacks); export the document without a DOCTYPE"
)
NOTHING_TO_BILL = "C-CDA document has no Encounters or Procedures section entries; nothing to bill"


# ---------------------------------------------------------------------------
# XML helpers
# ---------------------------------------------------------------------------


def _read(data: bytes, max_bytes: int = limits.DEFAULT.max_xml_bytes) -> ET.Element:
    if not data.strip(b"\xef\xbb\xbf \t\r\n"):
        raise ParseError("the file is empty; export the C-CDA document again")
    if len(data) > max_bytes:
        raise ParseError(f"the XML document is {len(data) / limits.MIB:,.1f} MiB, over the "
                         f"{max_bytes / limits.MIB:g} MiB limit for one C-CDA document (ingest.max_xml_mb); "
                         "export fewer visits per document")
    try:
        root = defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        raise ParseError(DTD_REFUSED) from None
    except LookupError:  # <?xml encoding="..."?> names a character set Python does not know
        raise ParseError("the XML declaration names a character encoding that does not exist; C-CDA is "
                         "UTF-8 - export the document again") from None
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise ParseError(
            f"the file is not well-formed XML (error at line {line}, column {col}); it may be "
            "truncated or hand-edited - export the C-CDA document again"
        ) from None
    if root.tag != f"{V3}ClinicalDocument":
        # The root's own name is not quoted: in an arbitrary XML file it could be anything.
        if root.tag.rsplit("}", 1)[-1] == "ClinicalDocument":
            raise ParseError("<ClinicalDocument> is not in the HL7 v3 namespace (urn:hl7-org:v3), "
                             "so it is not a C-CDA document; export a standard C-CDA R2.1 document")
        if root.tag.startswith("{http://hl7.org/fhir}"):
            raise ParseError("this is FHIR XML, not C-CDA; export FHIR as JSON (Bundle or NDJSON) "
                             "or export a C-CDA document instead")
        raise ParseError("the XML root element is not an HL7 CDA <ClinicalDocument>, so this is not a "
                         "C-CDA document; choose the C-CDA (CCD / visit note) export")
    return root


def _f(el: ET.Element | None, path: str) -> ET.Element | None:
    """``el.find`` with the v3 namespace on every step of ``a/b/c``."""
    if el is None:
        return None
    return el.find("/".join(V3 + step for step in path.split("/")))


def _fa(el: ET.Element | None, path: str) -> list[ET.Element]:
    if el is None:
        return []
    return el.findall("/".join(V3 + step for step in path.split("/")))


def _txt(el: ET.Element | None) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _templates(el: ET.Element) -> set[str]:
    return {t.get("root", "") for t in _fa(el, "templateId")}


def _ii(el: ET.Element | None, *, skip_roots: tuple[str, ...] = ()) -> str:
    """First usable <id> under ``el`` -> 'root:extension' (or root alone)."""
    for i in _fa(el, "id"):
        root, ext = i.get("root", ""), i.get("extension", "")
        if i.get("nullFlavor") or not root or root in skip_roots:
            continue
        return f"{root}:{ext}" if ext else root
    return ""


def _npi(el: ET.Element | None) -> str:
    return next((i.get("extension", "") for i in _fa(el, "id")
                 if i.get("root") == OID_NPI and i.get("extension")), "")


def _time(el: ET.Element | None) -> tuple[str, str]:
    """effectiveTime -> (start, end) raw HL7 timestamps; '' where unknown."""
    if el is None:
        return "", ""
    if el.get("value"):
        return el.get("value", ""), ""
    low, high = _f(el, "low"), _f(el, "high")
    return (low.get("value", "") if low is not None else "",
            high.get("value", "") if high is not None else "")


def _day(ts: str) -> str:
    return ts[:8] if len(ts) >= 8 and ts[:8].isdigit() else ""


def _codes(el: ET.Element | None) -> Iterator[tuple[str, str]]:
    """(code, codeSystem) of a coded element and then of its translations."""
    if el is None:
        return
    for c in [el, *_fa(el, "translation")]:
        if c.get("code") and not c.get("nullFlavor"):
            yield c.get("code", "").strip(), c.get("codeSystem", "").strip()


def _billable(el: ET.Element | None) -> tuple[str, str]:
    """A CPT, then HCPCS code among code + translations; ('', '') if none."""
    found = list(_codes(el))
    for wanted in ((OID_CPT,), OID_HCPCS):
        for code, system in found:
            if system in wanted:
                return code, system
    return "", ""


def _done(el: ET.Element) -> bool:
    status = _f(el, "statusCode")
    return (el.get("negationInd") != "true" and el.get("moodCode", "EVN") == "EVN"
            and (status is None or status.get("code") not in _NOT_DONE))


# ---------------------------------------------------------------------------
# Header: patient, providers
# ---------------------------------------------------------------------------


def _person_name(name: ET.Element | None) -> tuple[str, str, str, str]:
    """(family, given, middle, suffix); a 'call me' given name is not a middle name."""
    given = [_txt(g) for g in _fa(name, "given") if g.get("qualifier") != "CL" and _txt(g)]
    return (_txt(_f(name, "family")), given[0] if given else "", " ".join(given[1:]),
            _txt(_f(name, "suffix")))


def _patient(root: ET.Element) -> Patient:
    role = _f(root, "recordTarget/patientRole")
    ids = [i for i in _fa(role, "id") if i.get("root") and i.get("root") != OID_SSN and not i.get("nullFlavor")]
    mrn = next((i.get("extension", "") for i in ids if i.get("extension")), ids[0].get("root", "") if ids else "")
    person = _f(role, "patient")
    names = _fa(person, "name")
    name = next((n for n in names if n.get("use") == "L"), names[0] if names else None)
    family, given, middle, suffix = _person_name(name)
    addrs = _fa(role, "addr")
    addr = next((a for a in addrs if a.get("use") in ("H", "HP")), addrs[0] if addrs else None)
    street = [_txt(s) for s in _fa(addr, "streetAddressLine") if _txt(s)]
    tels = [t for t in _fa(role, "telecom") if t.get("value", "").startswith("tel:")]
    tels.sort(key=lambda t: {"HP": 0, "H": 0, "MC": 1}.get(t.get("use", ""), 2))
    birth, gender = _f(person, "birthTime"), _f(person, "administrativeGenderCode")
    return Patient(
        mrn=mrn, family=family, given=given, middle=middle, suffix=suffix,
        dob=birth.get("value", "") if birth is not None else "",
        sex=gender.get("code", "") if gender is not None else "",
        address=Address(line1=street[0] if street else "", line2=" ".join(street[1:]),
                        city=_txt(_f(addr, "city")), state=_txt(_f(addr, "state")),
                        zip=_txt(_f(addr, "postalCode")), country=_txt(_f(addr, "country"))),
        phone=tels[0].get("value", "")[4:].strip() if tels else "",
    )


def _performer(el: ET.Element | None) -> Provider:
    """First performer (or encounterParticipant) with an NPI; else the first one named."""
    best = Provider()
    paths = ("performer/assignedEntity", "encounterParticipant/assignedEntity", "responsibleParty/assignedEntity")
    for ent in [e for path in paths for e in _fa(el, path)]:
        family, given, _, _ = _person_name(_f(ent, "assignedPerson/name"))
        prov = Provider(npi=_npi(ent), family=family, given=given,
                        organization=_txt(_f(ent, "representedOrganization/name")))
        if prov.npi:
            return prov
        if not (best.family or best.organization):
            best = prov
    return best


def _source_system(root: ET.Element) -> str:
    """Custodian (else author) organization id: part of the business key, so ids stay per-sender."""
    org = _f(root, "custodian/assignedCustodian/representedCustodianOrganization")
    return (_ii(org) or _ii(_f(root, "author/assignedAuthor/representedOrganization"))
            or _ii(_f(root, "author/assignedAuthor")) or "ccda")


def _sections(root: ET.Element, kind: tuple[set[str], str]) -> list[ET.Element]:
    """Sections by templateId or, for senders that omit templates, by LOINC section code."""
    templates, loinc = kind
    out = []
    for sec in root.iter(f"{V3}section"):
        code = _f(sec, "code")
        if _templates(sec) & templates or (code is not None and code.get("code") == loinc):
            out.append(sec)
    return out


def _entries(sections: list[ET.Element], name: str) -> Iterator[tuple[str, ET.Element]]:
    """(part label, clinical statement) for each entry of the sections."""
    n = 0
    for sec in sections:
        for entry in _fa(sec, "entry"):
            for child in entry:
                if isinstance(child.tag, str) and child.tag.startswith(V3):
                    yield f"{name} section entry[{n}]", child
            n += 1


# ---------------------------------------------------------------------------
# Diagnoses
# ---------------------------------------------------------------------------


def _dx_value(obs: ET.Element) -> Diagnosis | None:
    if obs.get("negationInd") == "true":
        return None
    value = _f(obs, "value")
    found = list(_codes(value))
    for code, system in found:
        if system == OID_ICD10CM:
            return Diagnosis(code=code, system=system)
    return Diagnosis(code=found[0][0], system=found[0][1]) if found else None


def _encounter_dx(enc: ET.Element) -> list[Diagnosis]:
    """Encounter Diagnosis acts and Problem/Indication observations directly on the encounter."""
    out: list[Diagnosis] = []
    for rel in _fa(enc, "entryRelationship"):
        for child in rel:
            if child.tag == f"{V3}act":
                obs = [o for r in _fa(child, "entryRelationship") for o in _fa(r, "observation")]
            elif child.tag == f"{V3}observation":
                tpl = _templates(child)
                obs = [child] if (tpl & DX_OBSERVATIONS or not tpl) else []
            else:
                obs = []
            for o in obs:
                dx = _dx_value(o)
                if dx and dx not in out:
                    out.append(dx)
    return out


def _problem_list(root: ET.Element) -> list[Diagnosis]:
    """Active problems of the Problems section (only used when the caller asks for them)."""
    out: list[Diagnosis] = []
    for _, act in _entries(_sections(root, PROBLEMS_SECTION), "Problems"):
        status = _f(act, "statusCode")
        if status is not None and status.get("code") not in ("active", None):
            continue
        for o in [o for r in _fa(act, "entryRelationship") for o in _fa(r, "observation")]:
            dx = _dx_value(o)
            if dx and dx not in out:
                out.append(dx)
    return out[:12]  # a professional claim carries at most 12 diagnoses


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------


@dataclass
class _Visit:
    enc: Encounter
    start_day: str
    end_day: str
    lines_by_day: set[tuple[str, str]] = field(default_factory=set)
    minutes: int = 0  # the visit's length, when effectiveTime low and high carry times of day


def _encounter_from(el: ET.Element, header: dict[str, Any]) -> _Visit:
    start, end = _time(_f(el, "effectiveTime"))
    enc = Encounter(source=NAME, source_id=_ii(el), source_system=header["system"], kind="charge",
                    patient=copy.deepcopy(header["patient"]), billing=copy.deepcopy(header["billing"]),
                    dos_start=start, dos_end=end, rendering=_performer(el), diagnoses=_encounter_dx(el))
    code_el = _f(el, "code")
    code, system = _billable(code_el)
    if not code:
        code, system = next(_codes(code_el), ("", ""))
    if code:
        enc.lines.append(ChargeLine(code=code, code_system=system, line_id=enc.source_id))
    visit = _Visit(enc, _day(start), _day(end) or _day(start), minutes=hl7_minutes(start, end))
    visit.lines_by_day = {(code, visit.start_day)} if code else set()
    if not enc.source_id:  # no usable id: patient + date + code is stable across re-exports
        enc.source_id = f"{enc.patient.mrn}:{visit.start_day}:{code}"
    return visit


def _attach(visits: list[_Visit], day: str) -> _Visit | None:
    inside = [v for v in visits if v.start_day and v.start_day <= day <= v.end_day]
    return next((v for v in inside if v.start_day == day), inside[0] if inside else None)


def _unique_ids(visits: list[_Visit]) -> None:
    """Same id on several encounters (sample generators do this) -> add the date, then a counter."""
    seen: dict[str, int] = {}
    for v in visits:
        seen[v.enc.source_id] = seen.get(v.enc.source_id, 0) + 1
    taken: set[str] = set()
    for v in visits:
        sid = v.enc.source_id
        if seen[sid] > 1:
            sid = f"{sid}@{v.start_day}"
            base, k = sid, 1
            while sid in taken:
                k += 1
                sid = f"{base}#{k}"
        taken.add(sid)
        v.enc.source_id = sid


# ---------------------------------------------------------------------------
# Evidence: orders, results and the visit's length (for doc.missing)
# ---------------------------------------------------------------------------

_ORDER_TAGS = (f"{V3}observation", f"{V3}procedure", f"{V3}act")
_ORDER_MOODS = ("RQO", "INT")


def _evidence_code(el: ET.Element | None) -> tuple[str, str]:
    """A CPT translation if any, else the element's own code (else its first translation)."""
    found = list(_codes(el))
    return next((c for c in found if c[1] == OID_CPT), found[0] if found else ("", ""))


def _add_evidence(root: ET.Element, visits: list[_Visit], *, visit_note: bool) -> None:
    """``Encounter.evidence`` for each visit: Results section organizers and observations
    (``result``), Plan of Treatment observations/procedures/acts in moodCode RQO or INT
    (``order``), and the encounter's own length. A dated result goes to the visit on that day
    (a CCD lists results from many visits; one on no visit's day is left out); an undated one to
    the document's only visit. A visit note's plan is that visit's plan, so its orders go to it
    whatever their (future) date. Missing elements give no evidence, never an exception."""
    if not visits:
        return
    sole = visits[0] if len(visits) == 1 else None
    found = {id(v): Collector() for v in visits}

    def add(kind: str, el: ET.Element, day: str) -> None:
        visit = _attach(visits, day) if day else sole
        if visit is not None:
            found[id(visit)].add(kind, *_evidence_code(_f(el, "code")))

    def day_of(el: ET.Element) -> str:
        return _day(_time(_f(el, "effectiveTime"))[0])

    for _, el in _entries(_sections(root, RESULTS_SECTION), "Results"):
        if el.tag not in (f"{V3}organizer", f"{V3}observation") or not _done(el):
            continue
        members = [o for c in _fa(el, "component") for o in _fa(c, "observation") if _done(o)]
        panel_day = day_of(el) or next((d for o in members if (d := day_of(o))), "")
        add("result", el, panel_day)  # the panel (organizer), like an OBR's code
        for obs in members:
            add("result", obs, day_of(obs) or panel_day)
    for _, el in _entries(_sections(root, PLAN_SECTION), "Plan of Treatment"):
        status = _f(el, "statusCode")
        if (el.tag not in _ORDER_TAGS or el.get("moodCode") not in _ORDER_MOODS or el.get("negationInd") == "true"
                or (status is not None and status.get("code") in _NOT_DONE)):
            continue
        add("order", el, "" if visit_note and sole is not None else day_of(el))
    for v in visits:
        v.enc.evidence = found[id(v)].done(v.minutes)


def parse(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]:
    """C-CDA document -> Encounters (visits with their charge lines) and Rejected entries."""
    root = _read(data, limits.of(options).max_xml_bytes)
    patient = _patient(root)
    org = _f(root, "recordTarget/patientRole/providerOrganization")
    header: dict[str, Any] = {"system": _source_system(root), "patient": patient,
              "billing": Provider(npi=_npi(org), organization=_txt(_f(org, "name")))}
    out: list[Parsed] = []
    visits: list[_Visit] = []
    enc_sections = _sections(root, ENCOUNTERS_SECTION)
    for part, el in _entries(enc_sections, "Encounters"):
        if el.tag != f"{V3}encounter" or el.get("moodCode", "EVN") != "EVN":
            continue  # planned / requested visits are not charges
        if not _done(el):
            out.append(Rejected(part, "the encounter is marked cancelled or not done, so it is not "
                                      "billed; nothing to do unless that status is wrong in the EHR"))
            continue
        visits.append(_encounter_from(el, header))
    doc_encounter = _f(root, "componentOf/encompassingEncounter")
    is_visit_note = CCD_TEMPLATE not in _templates(root)
    if not visits and doc_encounter is not None and is_visit_note:
        visits.append(_encounter_from(doc_encounter, header))
    proc_entries = list(_entries(_sections(root, PROCEDURES_SECTION), "Procedures"))
    if not visits and not proc_entries and not out:
        raise ParseError(NOTHING_TO_BILL)
    extra: dict[str, _Visit] = {}
    for part, el in proc_entries:
        code, system = _billable(_f(el, "code"))
        if not code or not _done(el):
            continue  # no CPT/HCPCS: a clinical history item, not a charge
        start, _ = _time(_f(el, "effectiveTime"))
        day = _day(start)
        if not day:
            out.append(Rejected(part, "procedure has a CPT/HCPCS code but no date of service "
                                      "(effectiveTime); add the date in the EHR and export again"))
            continue
        visit = _attach(visits, day) or extra.get(day)
        if visit is None:
            enc = Encounter(source=NAME, kind="charge", source_system=header["system"],
                            source_id=f"procedures:{patient.mrn or _ii(root)}:{day}",
                            patient=copy.deepcopy(patient), billing=copy.deepcopy(header["billing"]),
                            dos_start=day, dos_end=day)
            visit = extra[day] = _Visit(enc, day, day)
        if (code, day) in visit.lines_by_day:
            continue  # the encounter code already bills this service on this day
        visit.lines_by_day.add((code, day))
        visit.enc.lines.append(ChargeLine(code=code, code_system=system, line_id=_ii(el), service_date=start))
        if not visit.enc.rendering.npi:
            prov = _performer(el)
            if prov.npi:
                visit.enc.rendering = prov
    visits += sorted(extra.values(), key=lambda v: v.start_day)
    _add_evidence(root, visits, visit_note=is_visit_note)
    if not visits and not out:
        raise ParseError("C-CDA document has no Encounters section entries and none of its Procedures "
                         "carries a CPT or HCPCS code; nothing to bill")
    _unique_ids(visits)
    problems = _problem_list(root) if options.get("problem_list_diagnoses") else []
    for v in visits:
        if not v.enc.diagnoses and problems:
            v.enc.diagnoses = [Diagnosis(d.code, d.system) for d in problems]
        out.append(v.enc)
    return out
