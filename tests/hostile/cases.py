"""Hostile documents shared by the hostile-input tests (all synthetic: no real patient data)."""

from __future__ import annotations

import io
import json
import zipfile
from decimal import Decimal

from tests.helpers import dft

# Values that must never become a charge: not finite, absurd sizes, lookalikes of numbers.
BAD_NUMBERS = ("NaN", "sNaN", "-NaN", "Infinity", "-inf", "1e999999999", "1E+999999999", "-1e999999999",
               "9" * 5000, "1_000", "\u0661\u0662", "\uff11", "0x10", "1e-999999999", "--1", "1..2")


def dft_with_ft1(units: str = "1", price: str = "125.00", extended: str = "") -> str:
    """One DFT^P03 whose first FT1 carries the given FT1-10 quantity, FT1-12 unit amount and
    FT1-11 extended amount (the rest of the message is a normal, valid visit)."""
    msg = dft(1, lines=1)
    segs = msg.split("\r")
    for k, seg in enumerate(segs):
        if seg.startswith("FT1|"):
            f = seg.split("|")
            f += [""] * (27 - len(f))
            f[10], f[11], f[12] = units, extended, price
            segs[k] = "|".join(f)
    return "\r".join(segs)


def fhir_bundle(quantity: str = "1", unit_price: str = "100.00", net: str | None = None,
                total: str | None = None) -> bytes:
    """A FHIR Bundle (Patient, Practitioner, Encounter, Claim) whose Claim item carries the
    given numbers written *verbatim* into the JSON text (so 1e999999999 stays a JSON number)."""
    item = {"sequence": 1, "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                                            "code": "99213"}]},
            "diagnosisSequence": [1], "quantity": {"value": "@Q@"}, "unitPrice": {"value": "@U@"}}
    if net is not None:
        item["net"] = {"value": "@N@"}
    claim = {"resourceType": "Claim", "id": "c1", "status": "active",
             "patient": {"reference": "Patient/p1"}, "provider": {"reference": "Practitioner/pr1"},
             "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [
                 {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]}}],
             "item": [{**item, "encounter": [{"reference": "Encounter/e1"}]}]}
    if total is not None:
        claim["total"] = {"value": "@T@"}
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1",
                                                "identifier": [{"value": "HX-1"}],
                                                "name": [{"family": "Testcase", "given": ["Hostile"]}],
                                                "birthDate": "1970-01-01", "gender": "female"}},
        {"fullUrl": "urn:uuid:pr1", "resource": {"resourceType": "Practitioner", "id": "pr1",
                                                 "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                                                 "value": "1987654328"}],
                                                 "name": [{"family": "Doc", "given": ["Test"]}]}},
        {"fullUrl": "urn:uuid:e1", "resource": {"resourceType": "Encounter", "id": "e1", "status": "finished",
                                                "subject": {"reference": "Patient/p1"},
                                                "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
                                                "period": {"start": "2026-10-01", "end": "2026-10-01"}}},
        {"fullUrl": "urn:uuid:c1", "resource": claim},
    ]}
    text = json.dumps(doc)
    for mark, value in (("@Q@", quantity), ("@U@", unit_price), ("@N@", net), ("@T@", total)):
        if value is not None:
            text = text.replace(f'"{mark}"', value)
    return text.encode()


def zip_of(members: dict[str, bytes], *, level: int = 9) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def is_sane_number(text: str, *, money: bool) -> bool:
    """What a standardized line may hold: "" (refused and reported) or plain bounded decimal text."""
    if text == "":
        return True
    if len(text) > 20 or not all(c in "-0123456789." for c in text):
        return False
    d = Decimal(text)
    return d.is_finite() and abs(d) <= (Decimal(10_000_000) if money else Decimal(9999))
