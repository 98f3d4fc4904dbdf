"""FHIR R4 RCM target: charges as Patient + Coverage + Practitioner + Encounter + Claim.

Exactly once: every resource is created conditionally (``ifNoneExist``) on a stable identifier
(our business key for Encounter and Claim, the MRN for Patient, the NPI for Practitioner), so
a batch that is re-sent after a crash or a timeout finds what the first attempt created and
creates nothing new. A batch goes as one transaction Bundle; when the server rejects it (400),
the batch is split until the offending encounter is alone, and only that one is rejected with
the server's OperationOutcome text.

Secrets and charges go only where the settings say: both URLs pass :func:`core.urls.check_url`
(https, plain http only to this computer), TLS is verified against ``ca_bundle`` when one is set
— passed with every request, so ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in the environment
cannot replace it — and redirects are never followed automatically: one that stays on the same
scheme, host and port is followed by hand, anything else (another host, https -> http) is an
error, so neither the bearer token, the client secret nor a Bundle of claims can be carried off.
Paging links from the server are held to the same origin.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests

from connectors.rcm.base import PushResult, RemoteCharge, RemoteLine, TargetError, TargetSettings
from core.answers import Answer
from core.errors import ConfigError
from core.model import Encounter
from core.states import TargetErrorKind as Kind
from core.urls import check_url, same_origin

log = logging.getLogger("chargebridge.rcm.fhir")

NAME = "fhir"
ID_CLAIM = "urn:chargebridge:claim"
ID_ENCOUNTER = "urn:chargebridge:encounter"
ID_COVERAGE = "urn:chargebridge:coverage"
ID_MRN_PREFIX = "urn:chargebridge:mrn:"
NPI = "http://hl7.org/fhir/sid/us-npi"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
_URN = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NS = uuid.UUID("6f1c2d8e-6b1e-4b43-9a5e-3f0c1c6b7a10")  # fullUrl namespace (stable per identifier)
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5


def _value(*parts: str) -> str:
    """An identifier value from parts, percent-encoded so that FHIR search's own separators
    ('|' between system and value, ',' between alternatives) can never appear in it."""
    return ":".join(quote(p, safe="") for p in parts)


def _id_value(enc: Encounter) -> str:
    """Stable identifier of an encounter: its source system and its id there."""
    return _value(enc.source_system or enc.source, enc.source_id)


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def _ifnone(system: str, value: str) -> str:
    return urlencode({"identifier": f"{system}|{value}"})


class FhirTarget:
    """A FHIR R4 server that accepts Claims (the RCM's inbound charge interface)."""

    name = NAME

    def __init__(self, base_url: str, *, token_url: str = "", client_id: str = "", secret: str = "",
                 auth: str = "client_credentials", timeout: float = 30.0, ca_bundle: str = "",
                 bundle: str = "batch", session: requests.Session | None = None) -> None:
        """Raises :class:`ConfigError` (with the ``rcm.*`` key) for settings that cannot be used
        safely; a candidate URL from a connection test passes the same rule as the saved one."""
        self.base_url = check_url(base_url, key="rcm.base_url", what="the RCM base URL").rstrip("/")
        if auth not in ("client_credentials", "bearer"):
            raise ConfigError(f"unknown RCM auth {auth!r}", "use: client_credentials or bearer", key="rcm.auth")
        if auth == "client_credentials" or token_url:
            token_url = check_url(token_url, key="rcm.token_url", what="the RCM token URL")
        if ca_bundle and not os.path.isfile(ca_bundle):
            raise ConfigError("the RCM CA bundle is not a file",
                              "give the path of the PEM file with the RCM's CA certificate(s)", key="rcm.ca_bundle")
        self.token_url = token_url
        self.client_id = client_id
        self.secret = secret
        self.auth = auth
        self.timeout = timeout
        self.bundle = bundle  # batch (phased, portable) | transaction (one atomic Bundle per push)
        self.session = session or requests.Session()
        # TLS is always verified: the system store, or the practice's own CA bundle. Given with
        # each request: requests lets REQUESTS_CA_BUNDLE override a session's verify setting.
        self.verify: str | bool = ca_bundle or True
        self.session.verify = self.verify
        self._token = ""
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    # -- auth ------------------------------------------------------------------------------
    def _bearer(self, *, refresh: bool = False) -> str:
        if self.auth == "bearer":
            return self.secret
        with self._token_lock:
            if refresh or not self._token or time.time() > self._token_expires - 60:
                self._fetch_token()
            return self._token

    def _fetch_token(self) -> None:
        r = self._send("POST", self.token_url, "the RCM's token endpoint", data={"grant_type": "client_credentials"},
                       auth=(self.client_id, self.secret))
        if r.status_code in (400, 401, 403):
            raise TargetError("RCM credentials rejected by the token endpoint; check the client id and the "
                              "secret (chargebridge rcm set-secret)", kind=Kind.AUTH)
        if r.status_code != 200:
            raise _status_error(r, "the RCM's token endpoint")
        try:
            body = r.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TargetError("the RCM's token endpoint answered without a usable access token", kind=Kind.PROTOCOL,
                              retryable=True) from None
        if not isinstance(token, str) or not token or not 0 < expires_in < 10**7:
            raise TargetError("the RCM's token endpoint answered without a usable access token", kind=Kind.PROTOCOL,
                              retryable=True)
        self._token = token
        self._token_expires = time.time() + expires_in

    def _send(self, method: str, url: str, what: str, **kw: Any) -> requests.Response:
        """One HTTP exchange with verified TLS (our CA bundle, whatever the environment says) and
        redirects followed only within the same origin, at most a few times. A 301/302/303 turns
        a POST into a GET, which would silently drop a Bundle, so only GETs follow those."""
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                r = self.session.request(method, url, timeout=self.timeout, verify=self.verify,
                                         allow_redirects=False, **kw)
            except requests.RequestException as exc:
                raise _transport_error(exc, what) from None
            if r.status_code not in _REDIRECTS:
                return r
            location = r.headers.get("Location", "")
            nxt = urljoin(url, location)
            r.close()
            if not location or not same_origin(url, nxt) or (method != "GET" and r.status_code not in (307, 308)):
                host = urlsplit(nxt).hostname or "an unknown address"
                raise TargetError(f"{what} redirected the request to {host} ({r.status_code}); ChargeBridge "
                                  "follows no redirect that leaves the configured address or changes the "
                                  "request — set the RCM URL to the address the RCM gives", kind=Kind.CONFIG)
            url = nxt
        raise TargetError(f"{what} redirected the request too many times", kind=Kind.PROTOCOL)

    def _request(self, method: str, url: str, *, fhir_body: bool = False, **kw: Any) -> requests.Response:
        """One request with the bearer token; a 401 gets exactly one token refresh."""
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {self._bearer(refresh=attempt == 1)}",
                       "Accept": "application/fhir+json"}
            if "json" in kw or fhir_body:
                headers["Content-Type"] = "application/fhir+json"
                headers["Prefer"] = "return=minimal"  # only ids and statuses back, not every resource
            r = self._send(method, url, "the RCM", headers=headers, **kw)
            if r.status_code != 401:
                return r
            if self.auth == "bearer":
                break
        raise TargetError("RCM credentials rejected (401 after a token refresh); check the RCM client "
                          "credentials", kind=Kind.AUTH)

    def check(self) -> tuple[bool, str]:
        """Test connection: token + metadata. Says exactly what failed."""
        try:
            r = self._request("GET", f"{self.base_url}/metadata")
        except TargetError as exc:
            return False, str(exc)
        if r.status_code != 200:
            return False, f"the RCM answered {r.status_code} to a capability request"
        return True, "connected; credentials accepted"

    def identifier(self, enc: Encounter) -> str:
        """The value of the identifier our Claims carry (for reconciliation)."""
        return _id_value(enc)

    # -- push ------------------------------------------------------------------------------
    def push(self, encounters: Sequence[Encounter], *,
             corrections: Mapping[str, str] | None = None) -> list[PushResult]:
        """``corrections``: business key -> the RCM's Claim id to replace with a new version."""
        if not encounters:
            return []
        self._corrections = dict(corrections or {})
        if self.bundle == "transaction":
            return self._push_transaction(encounters)
        return self._push_phased(encounters)

    def render(self, encounters: Sequence[Encounter], *,
               corrections: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
        """What :meth:`push` would send for ``encounters``, as (file name, bytes), without a
        request (test mode, agent/testmode.py). ``transaction``: the one Bundle. ``batch``: the
        three phase Bundles; later phases refer to earlier resources by their ``urn:uuid``
        fullUrl, which a live push replaces with the ids the server returned."""
        if not encounters:
            return []
        bundle, _ = build_transaction(encounters, dict(corrections or {}))
        if self.bundle == "transaction":
            return [("bundle-transaction.json", json.dumps(bundle, indent=1).encode())]
        phases = (("1-patients-practitioners", ("Patient", "Practitioner")), ("2-coverages-encounters",
                  ("Coverage", "Encounter")), ("3-claims", ("Claim",)))
        out = []
        for name, types in phases:
            entries = [{"fullUrl": e["fullUrl"], "request": e["request"], "resource": e["resource"]}
                       for e in bundle["entry"] if e["resource"]["resourceType"] in types]
            if entries:
                body = {"resourceType": "Bundle", "type": "batch", "entry": entries}
                out.append((f"bundle-{name}.json", json.dumps(body, indent=1).encode()))
        return out

    def _push_transaction(self, encounters: Sequence[Encounter]) -> list[PushResult]:
        """All resources of the batch in one transaction Bundle (servers that allow big ones)."""
        bundle, claim_index = build_transaction(encounters, getattr(self, "_corrections", None))
        r = self._request("POST", self.base_url, json=bundle)
        if r.status_code in (200, 201):
            return _results(encounters, claim_index, r.json())
        if r.status_code in (400, 409, 412, 422):
            if len(encounters) == 1:
                return [PushResult(encounters[0].business_key, False, reason=outcome_text(r))]
            mid = len(encounters) // 2  # find the offending encounter(s); the rest go on
            return self._push_transaction(encounters[:mid]) + self._push_transaction(encounters[mid:])
        raise _status_error(r, "the RCM")

    def _push_phased(self, encounters: Sequence[Encounter]) -> list[PushResult]:
        """Three batch Bundles: patients and practitioners, then coverages and encounters, then
        claims — each entry a conditional create, later phases referring to the ids the earlier
        ones returned. Three requests per batch whatever its size, no reliance on the server's
        transaction limits (Medplum refuses conditional transactions over 8 entries), and the
        server's verdict arrives per entry, so one bad claim is rejected alone."""
        bundle, claim_index = build_transaction(encounters, getattr(self, "_corrections", None))
        entries = bundle["entry"]
        order = {"Patient": 0, "Practitioner": 0, "Coverage": 1, "Encounter": 1, "Claim": 2}
        resolved: dict[str, str] = {}  # fullUrl -> "Type/id"
        failed: dict[str, str] = {}  # fullUrl -> reason
        for phase in (0, 1, 2):
            todo = [i for i, e in enumerate(entries) if order[e["resource"]["resourceType"]] == phase]
            parts, idx = [], []
            for i in todo:
                e = entries[i]
                text = json.dumps(e["resource"], separators=(",", ":"))
                refs = _URN.findall(text)
                bad = next((failed[u] for u in refs if u in failed), None)
                if bad is not None:
                    failed[e["fullUrl"]] = bad
                    continue
                text = _URN.sub(lambda m: resolved.get(m.group(0), m.group(0)), text)
                parts.append(f'{{"request":{json.dumps(e["request"])},"resource":{text}}}')
                idx.append(i)
            if not parts:
                continue
            body = '{"resourceType":"Bundle","type":"batch","entry":[' + ",".join(parts) + "]}"
            r = self._request("POST", self.base_url, data=body.encode(), fhir_body=True)
            if r.status_code not in (200, 201):
                raise _status_error(r, "the RCM") if r.status_code not in (400, 422) else TargetError(
                    f"the RCM refused a batch: {outcome_text(r)}", kind=Kind.PROTOCOL)
            answers = r.json().get("entry", [])
            if len(answers) != len(parts):
                raise TargetError("the RCM answered a batch with the wrong number of entries", retryable=True,
                                  kind=Kind.PROTOCOL)
            for i, ans in zip(idx, answers, strict=True):
                resp = ans.get("response", {})
                status = str(resp.get("status", ""))[:3]
                loc = str(resp.get("location", ""))
                if status in ("200", "201") and loc.count("/") >= 1:
                    resolved[entries[i]["fullUrl"]] = "/".join(loc.split("/")[:2])
                else:
                    failed[entries[i]["fullUrl"]] = _entry_outcome(ans, status)
        out = []
        for enc, ci in zip(encounters, claim_index, strict=True):
            if ci < 0:  # the same encounter twice in one batch: one Claim for both
                key = _urn("Claim", ID_CLAIM, _id_value(enc))
            else:
                key = entries[ci]["fullUrl"]
            if key in resolved:
                out.append(PushResult(enc.business_key, True, remote_ids={"Claim": resolved[key].split("/")[1]}))
            else:
                out.append(PushResult(enc.business_key, False,
                                      reason=failed.get(key, "the RCM did not take the claim")))
        return out

    def cancel(self, claim_id: str) -> tuple[bool, str]:
        """Cancel one of our Claims (the EHR voided the visit): a new version of the Claim with
        status ``cancelled``. Returns (done, what happened); raises :class:`TargetError` when the
        RCM cannot be asked (the next sync tries again). (H6)"""
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", claim_id or ""):
            return False, "the stored Claim id is not a FHIR id"
        url = f"{self.base_url}/Claim/{claim_id}"
        r = self._request("GET", url)
        if r.status_code in (404, 410):
            return True, "the Claim is already gone at the RCM"
        if r.status_code != 200:
            raise _status_error(r, "the RCM")
        claim = r.json()
        if not isinstance(claim, dict) or claim.get("resourceType") != "Claim":
            raise TargetError("the RCM answered a Claim read with something else", kind=Kind.PROTOCOL)
        if claim.get("status") == "cancelled":
            return True, "already cancelled"
        claim["status"] = "cancelled"
        r = self._request("PUT", url, json=claim)
        if r.status_code in (200, 201):
            return True, "cancelled"
        if r.status_code in (400, 409, 412, 422):
            return False, outcome_text(r)
        raise _status_error(r, "the RCM")

    # -- fetch -----------------------------------------------------------------------------
    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]:
        """The RCM's Claims whose service dates fall in [start, end], with their patients."""
        url: str | None = f"{self.base_url}/Claim"
        params: dict[str, Any] | None = {"_count": 500, "_include": ["Claim:patient", "Claim:provider"]}
        claims: list[dict[str, Any]] = []
        patients: dict[str, dict[str, Any]] = {}
        while url:
            r = self._request("GET", url, params=params)
            if r.status_code != 200:
                raise _status_error(r, "the RCM")
            page = r.json()
            for e in page.get("entry", []):
                res = e.get("resource", {})
                if res.get("resourceType") == "Claim":
                    claims.append(res)
                elif res.get("resourceType") in ("Patient", "Practitioner"):
                    patients[f"{res['resourceType']}/{res.get('id')}"] = res
            url = next((lk["url"] for lk in page.get("link", []) if lk.get("relation") == "next"), None)
            if url is not None and not (isinstance(url, str) and same_origin(self.base_url, url)):
                raise TargetError("the RCM's next-page link points to another address; ChargeBridge sends its "
                                  "token only to the configured RCM", kind=Kind.PROTOCOL)
            params = None
        out = []
        for c in claims:
            if c.get("status") in ("cancelled", "entered-in-error"):  # voided: no longer a charge
                continue
            rc = _remote_charge(c, patients)
            if rc.dos and start.isoformat() <= rc.dos <= end.isoformat():
                out.append(rc)
        return out

    def fetch_outcomes(self, claims: Sequence[tuple[str, dict[str, str]]]) -> list[Answer]:
        """The RCM's ClaimResponses for our delivered ``claims`` ((claim id, remote ids)) as
        answers (an optional capability beside :class:`Target`; mapping and budgets in
        :mod:`connectors.rcm.fhir_outcomes`). Raises :class:`TargetError`. (H4)"""
        from connectors.rcm import fhir_outcomes

        return fhir_outcomes.fetch(self._request, self.base_url, claims)


def make(settings: TargetSettings, secret: str) -> FhirTarget:
    """The registry's factory (:data:`connectors.rcm.TARGETS`)."""
    return FhirTarget(settings.base_url, token_url=settings.token_url, client_id=settings.client_id, secret=secret,
                      auth=settings.auth, timeout=settings.timeout_seconds, ca_bundle=settings.ca_bundle,
                      bundle=settings.bundle)


# -- resources -------------------------------------------------------------------------------
def build_transaction(encounters: Sequence[Encounter],
                      corrections: dict[str, str] | None = None) -> tuple[dict[str, Any], list[int]]:
    """One transaction Bundle for ``encounters``; returns it and each encounter's Claim entry index."""
    entries: list[dict[str, Any]] = []
    seen: dict[str, str] = {}  # conditional URL -> fullUrl, so a patient seen twice is created once
    claim_index: list[int] = []
    created = datetime.now(UTC).date().isoformat()

    def add(resource: dict[str, Any], system: str, value: str) -> str:
        cond = _ifnone(system, value)
        key = f"{resource['resourceType']}?{cond}"
        if key in seen:
            return seen[key]
        full = _urn(resource["resourceType"], system, value)
        seen[key] = full
        entries.append({"fullUrl": full, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": cond}})
        return full

    for enc in encounters:
        system = enc.source_system or enc.source
        key = _id_value(enc)
        p = enc.patient
        mrn_system = ID_MRN_PREFIX + system.replace(" ", "_")
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                  "code": "MR"}]}, "system": mrn_system, "value": p.mrn}],
            "name": [_name(p.family, [p.given, p.middle], p.suffix)],
        }
        if p.sex in _GENDER:
            patient["gender"] = _GENDER[p.sex]
        if p.dob:
            patient["birthDate"] = p.dob
        a = p.address
        if a.line1 or a.city or a.zip:
            addr: dict[str, Any] = {"line": [x for x in (a.line1, a.line2) if x]}
            for k, v in (("city", a.city), ("state", a.state), ("postalCode", a.zip), ("country", a.country)):
                if v:
                    addr[k] = v
            patient["address"] = [addr]
        if p.phone:
            patient["telecom"] = [{"system": "phone", "value": p.phone}]
        pat_ref = add(patient, mrn_system, p.mrn)

        npi = enc.rendering.npi
        practitioner: dict[str, Any] = {"resourceType": "Practitioner", "identifier": [{"system": NPI, "value": npi}]}
        if enc.rendering.family:
            practitioner["name"] = [_name(enc.rendering.family, [enc.rendering.given], "")]
        prac_ref = add(practitioner, NPI, npi)

        cov = enc.coverages[0] if enc.coverages else None
        cov_key = _value(system, p.mrn, (cov.payer_id or cov.payer_name) if cov else "self-pay",
                         cov.member_id if cov else "")
        coverage: dict[str, Any] = {
            "resourceType": "Coverage", "status": "active",
            "identifier": [{"system": ID_COVERAGE, "value": cov_key}],
            "beneficiary": {"reference": pat_ref},
        }
        if cov:
            coverage["payor"] = [{"display": cov.payer_name or cov.payer_id or "unknown payer"}]
            if cov.member_id:
                coverage["subscriberId"] = cov.member_id
            if cov.group:
                coverage["class"] = [{"type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]},
                    "value": cov.group}]
        else:  # self-pay: the patient pays
            coverage["payor"] = [{"reference": pat_ref}]
            coverage["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-selfpay",
                                            "code": "pay"}]}
        cov_ref = add(coverage, ID_COVERAGE, cov_key)

        period = {"start": enc.dos_start, "end": enc.dos_end or enc.dos_start}
        encounter = {
            "resourceType": "Encounter", "status": "finished",
            "identifier": [{"system": ID_ENCOUNTER, "value": key}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pat_ref}, "period": period,
            "participant": [{"individual": {"reference": prac_ref}}],
        }
        enc_ref = add(encounter, ID_ENCOUNTER, key)

        items = []
        for i, ln in enumerate(enc.lines, start=1):
            item: dict[str, Any] = {
                "sequence": i,
                "careTeamSequence": [1],
                "productOrService": {"coding": [{"system": HCPCS if ln.code_system == "HCPCS" else CPT,
                                                 "code": ln.code}]},
                "servicedDate": ln.service_date or enc.dos_start,
                "quantity": {"value": float(ln.units or 1)},
                "encounter": [{"reference": enc_ref}],
            }
            if ln.modifiers:
                item["modifier"] = [{"coding": [{"system": CPT, "code": m}]} for m in ln.modifiers]
            ptrs = ln.dx_pointers or ([1] if enc.diagnoses else [])
            if ptrs:
                item["diagnosisSequence"] = ptrs
            if ln.unit_charge:
                item["unitPrice"] = {"value": float(ln.unit_charge), "currency": "USD"}
                item["net"] = {"value": round(float(ln.unit_charge) * float(ln.units or 1), 2), "currency": "USD"}
            if enc.place_of_service:
                item["locationCodeableConcept"] = {"coding": [{"system": POS, "code": enc.place_of_service}]}
            items.append(item)
        claim: dict[str, Any] = {
            "resourceType": "Claim", "status": "active", "use": "claim",
            "identifier": [{"system": ID_CLAIM, "value": key}],
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                 "code": "professional"}]},
            "patient": {"reference": pat_ref}, "created": created,
            "billablePeriod": period,
            "provider": {"reference": prac_ref},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                     "code": "normal"}]},
            "careTeam": [{"sequence": 1, "provider": {"reference": prac_ref}}],
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": cov_ref}}],
            "diagnosis": [{"sequence": i, "diagnosisCodeableConcept": {"coding": [
                {"system": ICD10CM, "code": dx.code}]}} for i, dx in enumerate(enc.diagnoses, start=1)],
            "item": items,
        }
        if not claim["diagnosis"]:
            del claim["diagnosis"]
        before = len(entries)
        remote_id = (corrections or {}).get(enc.business_key)
        if remote_id:  # a correction: a new version of the RCM's claim, not a second claim
            claim["id"] = remote_id
            entries.append({"fullUrl": _urn("Claim", ID_CLAIM, key), "resource": claim,
                            "request": {"method": "PUT", "url": f"Claim/{remote_id}"}})
        else:
            add(claim, ID_CLAIM, key)
        claim_index.append(before if len(entries) > before else -1)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, claim_index


def _entry_outcome(ans: dict[str, Any], status: str) -> str:
    oo = ans.get("response", {}).get("outcome") or ans.get("resource") or {}
    parts = []
    for iss in (oo.get("issue") or [])[:5]:
        text = iss.get("details", {}).get("text") or iss.get("diagnostics") or iss.get("code", "")
        expr = ", ".join(iss.get("expression", []) or [])
        parts.append(f"{text} ({expr})" if expr else str(text))
    return "; ".join(p for p in parts if p) or f"the RCM refused it ({status or 'no status'})"


def _name(family: str, given: list[str], suffix: str) -> dict[str, Any]:
    n: dict[str, Any] = {"use": "official"}
    if family:
        n["family"] = family
    g = [x for x in given if x]
    if g:
        n["given"] = g
    if suffix:
        n["suffix"] = [suffix]
    return n


def _results(encounters: Sequence[Encounter], claim_index: list[int], body: dict[str, Any]) -> list[PushResult]:
    entries = body.get("entry", [])
    out = []
    for enc, idx in zip(encounters, claim_index, strict=True):
        if idx < 0 or idx >= len(entries):  # the same encounter twice in one batch: one Claim
            out.append(PushResult(enc.business_key, True))
            continue
        resp = entries[idx].get("response", {})
        loc = str(resp.get("location", ""))
        claim_id = loc.split("/")[1] if loc.startswith("Claim/") else ""
        out.append(PushResult(enc.business_key, True, remote_ids={"Claim": claim_id}))
    return out


def outcome_text(r: requests.Response) -> str:
    """The server's OperationOutcome, as text a billing person can act on."""
    try:
        body = r.json()
    except ValueError:
        return f"the RCM rejected the claim ({r.status_code}) without an explanation"
    issues = body.get("issue", []) if isinstance(body, dict) else []
    parts = []
    for iss in issues[:5]:
        text = iss.get("details", {}).get("text") or iss.get("diagnostics") or iss.get("code", "")
        expr = ", ".join(iss.get("expression", []) or [])
        parts.append(f"{text} ({expr})" if expr else str(text))
    return "; ".join(p for p in parts if p) or f"the RCM rejected the claim ({r.status_code})"


def _retry_after(r: requests.Response) -> float | None:
    v = r.headers.get("Retry-After")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(v) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _status_error(r: requests.Response, what: str) -> TargetError:
    code = r.status_code
    if code in (429, 503):
        return TargetError(f"{what} is busy ({code}); will retry",
                           kind=Kind.THROTTLED if code == 429 else Kind.SERVER, retry_after=_retry_after(r))
    if code >= 500:
        return TargetError(f"{what} failed with a server error ({code}); will retry", kind=Kind.SERVER)
    if code == 403:
        return TargetError(f"{what} refused access (403); the RCM account may lack permission to write claims",
                           kind=Kind.AUTH)
    return TargetError(f"{what} answered {code}: {outcome_text(r)}", kind=Kind.PROTOCOL)


def _transport_error(exc: requests.RequestException, what: str) -> TargetError:
    if isinstance(exc, requests.exceptions.SSLError):
        return TargetError(f"{what}'s TLS certificate is not trusted (self-signed, expired or for another "
                           "host); ChargeBridge never sends charges over an unverified connection — install "
                           "the RCM's CA certificate and set [rcm] ca_bundle", kind=Kind.TLS)
    if isinstance(exc, requests.exceptions.Timeout):
        return TargetError(f"{what} did not answer in time; will retry", kind=Kind.TIMEOUT)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return TargetError(f"{what} cannot be reached (connection refused or no network); will retry",
                           kind=Kind.UNREACHABLE)
    return TargetError(f"{what}: request failed ({type(exc).__name__}); will retry", kind=Kind.UNREACHABLE)


def _remote_charge(c: dict[str, Any], patients: dict[str, dict[str, Any]]) -> RemoteCharge:
    ident = next((i.get("value", "") for i in c.get("identifier", []) if i.get("system") == ID_CLAIM), "")
    pat = patients.get(c.get("patient", {}).get("reference", ""), {})
    name = (pat.get("name") or [{}])[0]
    mrn = next((i.get("value", "") for i in pat.get("identifier", [])
                if any(cd.get("code") == "MR" for cd in i.get("type", {}).get("coding", []))), "")
    dx = {d.get("sequence"): (d.get("diagnosisCodeableConcept", {}).get("coding") or [{}])[0].get("code", "")
          for d in c.get("diagnosis", [])}
    prov_ref = ((c.get("careTeam") or [{}])[0].get("provider") or c.get("provider") or {}).get("reference", "")
    npi = next((i.get("value", "") for i in patients.get(prov_ref, {}).get("identifier", [])
                if i.get("system") == NPI), "")
    lines = []
    for it in c.get("item", []):
        coding = (it.get("productOrService", {}).get("coding") or [{}])[0]
        lines.append(RemoteLine(
            code=coding.get("code", ""),
            modifiers=[(m.get("coding") or [{}])[0].get("code", "") for m in it.get("modifier", [])],
            units=_num(it.get("quantity", {}).get("value")),
            unit_charge=_num(it.get("unitPrice", {}).get("value"), places=2),
            service_date=it.get("servicedDate", ""),
            dx_codes=[dx.get(s, "") for s in it.get("diagnosisSequence", [])],
        ))
    dos = c.get("billablePeriod", {}).get("start", "") or (lines[0].service_date if lines else "")
    return RemoteCharge(
        remote_id=str(c.get("id", "")), identifier=ident, patient_mrn=mrn,
        patient_family=name.get("family", ""), patient_given=(name.get("given") or [""])[0],
        patient_dob=pat.get("birthDate", ""), dos=dos[:10], rendering_npi=npi,
        diagnoses=[dx[k] for k in sorted(k for k in dx if k is not None)], lines=lines,
    )


def _num(v: Any, places: int | None = None) -> str:
    if v is None:
        return ""
    from core.model import std_decimal

    return std_decimal(str(v), places=places)
