"""Reading a FHIR R4 document into resources: a Bundle (nested too), a single resource, or
NDJSON. Whole-document problems raise :class:`ParseError`; a bad line or an unknown resource
type becomes a :class:`Rejected` part and the rest is read. Knows nothing about billing:
:mod:`connectors.ehr.fhir` maps the resources to encounters.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from connectors.ehr.base import ParseError
from core.model import Rejected

# Every resource type of FHIR R4 (4.0.1). Anything else in ``resourceType`` is not FHIR R4.
R4_RESOURCE_TYPES: frozenset[str] = frozenset([
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse",
    "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct", "BodyStructure", "Bundle",
    "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry", "ChargeItem", "ChargeItemDefinition", "Claim",
    "ClaimResponse", "ClinicalImpression", "CodeSystem", "Communication", "CommunicationRequest",
    "CompartmentDefinition", "Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
    "CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition",
    "DeviceMetric", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport", "DocumentManifest",
    "DocumentReference", "EffectEvidenceSynthesis", "Encounter", "Endpoint", "EnrollmentRequest",
    "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
    "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group", "GuidanceResponse",
    "HealthcareService", "ImagingStudy", "Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation",
    "ImplementationGuide", "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
    "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
    "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
    "ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization", "OrganizationAffiliation",
    "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner",
    "PractitionerRole", "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy", "ResearchSubject",
    "RiskAssessment", "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest", "Slot", "Specimen",
    "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription", "Substance",
    "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
    "SubstanceSourceMaterial", "SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
    "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
])

# A resourceType is quoted back only when it has the shape of a FHIR type name from another
# version (CamelCase compound like "DeviceUsage"): a single word such as a surname is not shown.
_TYPE_NAME = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$")
_HOW_TO_EXPORT = "export FHIR R4 JSON: a Bundle, a single resource, or NDJSON with one resource per line"
Item = tuple[str, dict[str, Any], str]  # (part label for people, resource, fullUrl)


# ---------------------------------------------------------------------------
# Reading the document
# ---------------------------------------------------------------------------


def load(data: bytes, name: str) -> tuple[list[Item], list[Rejected]]:
    """Bytes -> resources with their part labels; whole-document problems raise ParseError."""
    if not data.strip(b"\xef\xbb\xbf \t\r\n"):
        raise ParseError("the file is empty; export the FHIR data again")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"the file is not UTF-8 text (bad byte at offset {exc.start}); FHIR JSON must be "
            "UTF-8 - export it again"
        ) from None
    try:
        doc = _loads(text)
    except _BadJsonNumber as exc:
        raise ParseError(f"{exc}; {_HOW_TO_EXPORT}") from None
    except RecursionError:
        raise ParseError("the JSON is nested too deeply (arrays or objects inside each other thousands of levels "
                         f"deep), which no FHIR export does; {_HOW_TO_EXPORT}") from None
    except json.JSONDecodeError as exc:
        if _looks_like_ndjson(text, name):
            return _load_ndjson(text)
        raise ParseError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            f"the export may be truncated - {_HOW_TO_EXPORT}"
        ) from None
    if not isinstance(doc, dict):
        raise ParseError(f"the JSON is a {type(doc).__name__}, not a FHIR resource; {_HOW_TO_EXPORT}")
    if "resourceType" not in doc:
        raise ParseError(f"the JSON has no 'resourceType', so it is not a FHIR resource; {_HOW_TO_EXPORT}")
    items: list[Item] = []
    rejected: list[Rejected] = []
    if doc.get("resourceType") == "Bundle":
        if not doc.get("entry") or not isinstance(doc["entry"], list):
            raise ParseError(
                "the Bundle has no entries (Bundle.entry is missing, empty or not a list), so there "
                "is nothing to bill; check that the export or search returned the patient's Encounters"
            )
        _expand_bundle(doc, "Bundle", items, rejected)
    else:
        _add(doc, "resource", "", items, rejected)
    return items, rejected


# Numbers are read as text of bounded length: a JSON number is never turned into a huge int
# (Python refuses > 4,300 digits with a ValueError) or a Decimal from a megabyte of digits.
# Decimal('1e999999999') itself is small; readers of the values check their range
# (core.model.read_decimal) before any arithmetic or formatting.
MAX_NUMBER_CHARS = 64


class _BadJsonNumber(ValueError):
    """A JSON number that is not one a FHIR document can hold; the message shows no value."""


def _parse_float(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadJsonNumber(f"a number in the JSON has {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
    return Decimal(text)


def _parse_int(text: str) -> int | Decimal:
    if len(text) > 18:
        raise _BadJsonNumber(f"a whole number in the JSON has {len(text):,} digits (at most 18)")
    if text.startswith("-") and text.strip("-0") == "":
        return Decimal(text)  # keeps the sign, so a "-0" amount is refused rather than read as 0
    return int(text)


def _parse_constant(name: str) -> Any:
    raise _BadJsonNumber(f"the JSON holds {name}, which is not a JSON number")


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)


def _looks_like_ndjson(text: str, name: str) -> bool:
    if name.lower().endswith(".ndjson"):
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(_loads(lines[0]), dict)
    except (json.JSONDecodeError, _BadJsonNumber, RecursionError):
        return False


def _load_ndjson(text: str) -> tuple[list[Item], list[Rejected]]:
    items: list[Item] = []
    rejected: list[Rejected] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        part = f"line {n}"
        try:
            res = _loads(line)
        except _BadJsonNumber as exc:
            rejected.append(Rejected(part, f"line {n}: {exc}; fix or remove this line, the other lines were read"))
            continue
        except RecursionError:
            rejected.append(Rejected(part, f"line {n}: the JSON is nested too deeply to be a FHIR resource; fix or "
                                           "remove this line, the other lines were read"))
            continue
        except json.JSONDecodeError as exc:
            rejected.append(Rejected(part, f"line {n}: not valid JSON ({exc.msg} at column "
                                           f"{exc.colno}); fix or remove this line, the other lines were read"))
            continue
        if isinstance(res, dict) and res.get("resourceType") == "Bundle":
            _expand_bundle(res, part, items, rejected)
        else:
            _add(res, part, "", items, rejected)
    return items, rejected


def _expand_bundle(bundle: dict[str, Any], label: str, items: list[Item], rejected: list[Rejected],
                   depth: int = 0) -> None:
    entries = bundle.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        part = f"{label}.entry[{i}]"
        if not isinstance(entry, dict) or "resource" not in entry:
            continue  # e.g. transaction-response entries carry only a response status
        res = entry["resource"]
        if isinstance(res, dict) and res.get("resourceType") == "Bundle" and depth < 3:
            _expand_bundle(res, part, items, rejected, depth + 1)
            continue
        _add(res, part, str(entry.get("fullUrl") or ""), items, rejected)


def _add(res: Any, part: str, full_url: str, items: list[Item], rejected: list[Rejected]) -> None:
    prefix = f"{part}: " if part.startswith("line ") else ""
    if not isinstance(res, dict) or not res.get("resourceType"):
        rejected.append(Rejected(part, f"{prefix}not a FHIR resource (no resourceType); "
                                       "fix or remove it, the rest of the file was read"))
        return
    rtype = res["resourceType"]
    if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
        shown = (f"'{rtype}'" if isinstance(rtype, str) and len(rtype) <= 64 and _TYPE_NAME.match(rtype)
                 else "(not shown)")
        where = "file" if part.startswith("line ") else "bundle"
        rejected.append(Rejected(part, f"{prefix}resource type {shown} is not a FHIR R4 resource "
                                       f"type; the rest of the {where} was read"))
        return
    items.append((part, res, full_url))
