"""Proves the FHIR R4 test peer (tests/peer): OAuth2, validation, transactions, exactly-once
conditional creates, Claim searches and fault injection."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.peer_fixture import PEER_DIR, FhirPeer, start_peer

if not hasattr(sys.modules.get("tests.conftest"), "fhir_peer"):  # until conftest imports them
    from tests.peer_fixture import clean_peer, fhir_peer  # noqa: F401

EXAMPLE = json.loads((PEER_DIR / "example-transaction.json").read_text())
MRN = "https://ehr.example.org/fhir/sid/mrn|MRN-000123"
CLAIM_SYS = "https://chargebridge.example.org/fhir/sid/charge-batch"
TYPES = ["Patient", "Organization", "Coverage", "Practitioner", "Encounter", "Claim"]


def example(claim_id: str | None = None, created: str | None = None) -> dict[str, Any]:
    """The example transaction, optionally with another Claim identifier / created date."""
    bundle = copy.deepcopy(EXAMPLE)
    claim = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Claim")
    entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Claim")
    if claim_id:
        claim["identifier"][0]["value"] = claim_id
        entry["request"]["ifNoneExist"] = f"identifier={CLAIM_SYS}|{claim_id}"
    if created:
        claim["created"] = created
    return bundle


def entry_of(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def counts(peer: FhirPeer) -> dict[str, int]:
    return {t: peer.count(t) for t in TYPES}


def issues_text(oo: dict[str, Any]) -> str:
    assert oo["resourceType"] == "OperationOutcome", oo
    return " | ".join(f"{i.get('diagnostics', '')} {i.get('details', {}).get('text', '')} {i.get('expression', '')}"
                      for i in oo["issue"])


def token_request(peer: FhirPeer, **kwargs: Any) -> requests.Response:
    return requests.post(peer.token_url, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def ttl_peer() -> Iterator[FhirPeer]:
    """A second peer: 1-second tokens, a static token and other client credentials."""
    with start_peer({"PEER_TOKEN_TTL": "1", "PEER_STATIC_TOKEN": "static-test-token",
                     "PEER_CLIENT_ID": "other-client", "PEER_CLIENT_SECRET": "other-secret"}) as peer:
        yield peer


# --------------------------------------------------------------------------------------- OAuth2

def test_listens_on_loopback(fhir_peer: FhirPeer) -> None:
    assert fhir_peer.base_url.startswith("http://127.0.0.1:")
    assert fhir_peer.base_url.endswith("/fhir/R4")
    assert fhir_peer.process.poll() is None


def test_token_with_credentials_in_body(clean_peer: FhirPeer) -> None:
    r = token_request(clean_peer, data={"grant_type": "client_credentials", "client_id": "chargebridge",
                                        "client_secret": "peer-secret"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    assert clean_peer.stats()["token_requests"] == 1


def test_token_with_http_basic(clean_peer: FhirPeer) -> None:
    r = token_request(clean_peer, data={"grant_type": "client_credentials"}, auth=("chargebridge", "peer-secret"))
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = requests.get(f"{clean_peer.base_url}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kwargs", [
    {"data": {"grant_type": "client_credentials", "client_id": "chargebridge", "client_secret": "wrong"}},
    {"data": {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "peer-secret"}},
    {"data": {"grant_type": "client_credentials"}, "auth": ("chargebridge", "wrong")},
    {"data": {"grant_type": "client_credentials"}},
], ids=["bad-secret", "bad-client", "bad-basic", "no-credentials"])
def test_token_bad_credentials(fhir_peer: FhirPeer, kwargs: dict[str, Any]) -> None:
    r = token_request(fhir_peer, **kwargs)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


def test_token_wrong_grant_type(fhir_peer: FhirPeer) -> None:
    r = token_request(fhir_peer, data={"grant_type": "password", "client_id": "chargebridge",
                                       "client_secret": "peer-secret"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"},
                                     {"Authorization": "Basic Y2hhcmdlYnJpZGdlOnBlZXItc2VjcmV0"}],
                         ids=["missing", "unknown", "not-bearer"])
def test_fhir_needs_a_valid_token(fhir_peer: FhirPeer, headers: dict[str, str]) -> None:
    r = requests.get(f"{fhir_peer.base_url}/Patient", headers=headers, timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"


def test_expired_token_is_rejected(ttl_peer: FhirPeer) -> None:
    r = token_request(ttl_peer, data={"grant_type": "client_credentials"}, auth=("other-client", "other-secret"))
    assert r.status_code == 200, r.text
    assert r.json()["expires_in"] == 1
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert requests.get(f"{ttl_peer.base_url}/Patient", headers=headers, timeout=30).status_code == 200
    time.sleep(1.3)
    r = requests.get(f"{ttl_peer.base_url}/Patient", headers=headers, timeout=30)
    assert r.status_code == 401
    assert "expired" in issues_text(r.json())


def test_static_token_and_custom_credentials(ttl_peer: FhirPeer) -> None:
    r = requests.get(f"{ttl_peer.base_url}/Patient", headers={"Authorization": "Bearer static-test-token"},
                     timeout=30)
    assert r.status_code == 200, r.text
    r = token_request(ttl_peer, data={"grant_type": "client_credentials"}, auth=("chargebridge", "peer-secret"))
    assert r.status_code == 401


def test_admin_expire_tokens(clean_peer: FhirPeer) -> None:
    token = clean_peer.get_token()
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=30).status_code == 200
    clean_peer.expire_tokens()
    assert requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=30).status_code == 401


# ------------------------------------------------------------------------------ CRUD, validation

def test_create_read_update_patient(clean_peer: FhirPeer) -> None:
    patient = entry_of(EXAMPLE, "Patient")["resource"]
    r = clean_peer.fhir("POST", "Patient", json=patient)
    assert r.status_code == 201, r.text
    created = r.json()
    pid = created["id"]
    assert r.headers["Location"].startswith(f"{clean_peer.base_url}/Patient/{pid}/_history/")
    assert r.headers["ETag"] == f'W/"{created["meta"]["versionId"]}"'

    r = clean_peer.fhir("GET", f"Patient/{pid}")
    assert r.status_code == 200
    assert r.json()["name"] == patient["name"]

    created["gender"] = "male"
    r = clean_peer.fhir("PUT", f"Patient/{pid}", json=created)
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] != created["meta"]["versionId"]
    assert clean_peer.fhir("GET", f"Patient/{pid}").json()["gender"] == "male"
    assert clean_peer.fhir("GET", "Patient/does-not-exist").status_code == 404


def test_invalid_gender_is_400(clean_peer: FhirPeer) -> None:
    r = clean_peer.fhir("POST", "Patient", json={"resourceType": "Patient", "gender": "banana"})
    assert r.status_code == 400
    text = issues_text(r.json())
    assert "banana" in text and "administrative-gender" in text and "Patient.gender" in text
    assert clean_peer.count("Patient") == 0


def test_invalid_update_is_400(clean_peer: FhirPeer) -> None:
    r = clean_peer.fhir("POST", "Patient", json={"resourceType": "Patient", "gender": "female"})
    patient = r.json()
    patient["birthDate"] = "1968-13-45"
    r = clean_peer.fhir("PUT", f"Patient/{patient['id']}", json=patient)
    assert r.status_code == 400
    assert "Patient.birthDate" in issues_text(r.json())


def test_claim_missing_required_fields_is_400(clean_peer: FhirPeer) -> None:
    r = clean_peer.fhir("POST", "Claim", json={"resourceType": "Claim", "status": "active"})
    assert r.status_code == 400
    oo = r.json()
    text = issues_text(oo)
    for field in ["Claim.type", "Claim.use", "Claim.patient", "Claim.created", "Claim.provider", "Claim.priority",
                  "Claim.insurance"]:
        assert field in text
    assert all(i["diagnostics"] for i in oo["issue"])
    assert "Missing required property" in text


@pytest.mark.parametrize("resource,needle", [
    ({"resourceType": "Patient", "nickname": "x"}, 'Invalid additional property "nickname"'),
    ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
    ({"resourceType": "Nonsense"}, "Invalid resource type"),
], ids=["extra-property", "wrong-type", "unknown-type"])
def test_other_invalid_resources(clean_peer: FhirPeer, resource: dict[str, Any], needle: str) -> None:
    r = clean_peer.fhir("POST", resource["resourceType"], json=resource)
    assert r.status_code == 400, r.text
    assert needle in issues_text(r.json())


def test_not_json_is_400(clean_peer: FhirPeer) -> None:
    r = clean_peer.fhir("POST", "Patient", data=b"{nope", headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400
    assert "not valid JSON" in issues_text(r.json())


def test_conditional_create_with_if_none_exist(clean_peer: FhirPeer) -> None:
    patient = entry_of(EXAMPLE, "Patient")["resource"]
    headers = {"If-None-Exist": f"identifier={MRN}"}
    first = clean_peer.fhir("POST", "Patient", json=patient, headers=headers)
    second = clean_peer.fhir("POST", "Patient", json=patient, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert clean_peer.count("Patient") == 1
    assert clean_peer.count("Patient", identifier=MRN) == 1


def test_misspelt_if_none_exist_is_400_not_a_duplicate(clean_peer: FhirPeer) -> None:
    patient = entry_of(EXAMPLE, "Patient")["resource"]
    r = clean_peer.fhir("POST", "Patient", json=patient, headers={"If-None-Exist": f"identifer={MRN}"})
    assert r.status_code == 400
    assert "identifer" in issues_text(r.json())
    assert clean_peer.count("Patient") == 0


# ---------------------------------------------------------------------------- transactions

def test_example_transaction_creates_linked_resources(clean_peer: FhirPeer) -> None:
    r = clean_peer.fhir("POST", "", json=EXAMPLE)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "transaction-response"
    assert [e["response"]["status"] for e in resp["entry"]] == ["201"] * len(EXAMPLE["entry"])
    loc = {e["resource"]["resourceType"]: e["response"]["location"] for e in resp["entry"]}
    assert counts(clean_peer) == dict.fromkeys(TYPES, 1)

    claim = clean_peer.fhir("GET", loc["Claim"]).json()
    assert claim["patient"]["reference"] == loc["Patient"]
    assert claim["provider"]["reference"] == loc["Practitioner"]
    assert claim["insurer"]["reference"] == loc["Organization"]
    assert claim["insurance"][0]["coverage"]["reference"] == loc["Coverage"]
    assert claim["careTeam"][0]["provider"]["reference"] == loc["Practitioner"]
    assert claim["item"][0]["encounter"][0]["reference"] == loc["Encounter"]
    assert "urn:uuid" not in json.dumps(claim)
    coverage = clean_peer.fhir("GET", loc["Coverage"]).json()
    assert coverage["beneficiary"]["reference"] == loc["Patient"]
    assert coverage["payor"][0]["reference"] == loc["Organization"]
    encounter = clean_peer.fhir("GET", loc["Encounter"]).json()
    assert encounter["subject"]["reference"] == loc["Patient"]
    # conditional-create requests really were conditional
    assert clean_peer.count("Claim", identifier=f"{CLAIM_SYS}|CB-2026-11-18-000987") == 1
    assert clean_peer.count("Practitioner", identifier="http://hl7.org/fhir/sid/us-npi|1234567893") == 1


def test_same_transaction_twice_is_exactly_once(clean_peer: FhirPeer) -> None:
    first = clean_peer.fhir("POST", "", json=EXAMPLE)
    second = clean_peer.fhir("POST", "", json=EXAMPLE)
    assert first.status_code == second.status_code == 200, second.text
    assert [e["response"]["status"] for e in second.json()["entry"]] == ["200"] * len(EXAMPLE["entry"])
    assert ([e["response"]["location"] for e in first.json()["entry"]]
            == [e["response"]["location"] for e in second.json()["entry"]])
    assert counts(clean_peer) == dict.fromkeys(TYPES, 1)


def test_new_claim_for_existing_patient_reuses_it(clean_peer: FhirPeer) -> None:
    first = clean_peer.fhir("POST", "", json=EXAMPLE).json()
    r = clean_peer.fhir("POST", "", json=example(claim_id="CB-2026-11-18-000988"))
    assert r.status_code == 200, r.text
    statuses = {e["resource"]["resourceType"]: e["response"]["status"] for e in r.json()["entry"]}
    assert statuses == {"Patient": "200", "Organization": "200", "Coverage": "200", "Practitioner": "200",
                        "Encounter": "200", "Claim": "201"}
    patient_loc = entry_of(first, "Patient")["response"]["location"]
    assert entry_of(r.json(), "Claim")["resource"]["patient"]["reference"] == patient_loc
    assert counts(clean_peer) == {**dict.fromkeys(TYPES, 1), "Claim": 2}


def test_invalid_entry_fails_whole_transaction(clean_peer: FhirPeer) -> None:
    bundle = example()
    del entry_of(bundle, "Claim")["resource"]["status"]
    entry_of(bundle, "Patient")["resource"]["gender"] = "banana"
    r = clean_peer.fhir("POST", "", json=bundle)
    assert r.status_code == 400
    text = issues_text(r.json())
    assert "Bundle.entry[5]" in text and "Claim.status" in text
    assert "Bundle.entry[0]" in text and "banana" in text
    assert counts(clean_peer) == dict.fromkeys(TYPES, 0)


def test_failed_transaction_rolls_back(clean_peer: FhirPeer) -> None:
    # Two Organizations share the payer identifier, so the Organization conditional create matches
    # twice (412) after the Patient entry was already processed: nothing may remain.
    payer = entry_of(EXAMPLE, "Organization")["resource"]
    for _ in range(2):
        assert clean_peer.fhir("POST", "Organization", json=payer).status_code == 201
    bundle = example()
    bundle["entry"] = [entry_of(bundle, "Patient"), entry_of(bundle, "Organization")]
    r = clean_peer.fhir("POST", "", json=bundle)
    assert r.status_code == 412, r.text
    assert clean_peer.count("Patient") == 0
    assert clean_peer.count("Organization") == 2


def test_batch_has_per_entry_responses(clean_peer: FhirPeer) -> None:
    good = entry_of(EXAMPLE, "Patient")
    bad = {"request": {"method": "POST", "url": "Patient"},
           "resource": {"resourceType": "Patient", "gender": "banana"}}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [good, bad]}
    r = clean_peer.fhir("POST", "", json=bundle)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "batch-response"
    assert [e["response"]["status"] for e in resp["entry"]] == ["201", "400"]
    assert "banana" in issues_text(resp["entry"][1]["response"]["outcome"])
    r = clean_peer.fhir("POST", "", json=bundle)  # the good entry is conditional: no duplicate
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["200", "400"]
    assert clean_peer.count("Patient") == 1


def test_misspelt_if_none_exist_in_bundle_is_400(clean_peer: FhirPeer) -> None:
    bundle = example()
    entry_of(bundle, "Claim")["request"]["ifNoneExist"] = f"identfier={CLAIM_SYS}|X"
    r = clean_peer.fhir("POST", "", json=bundle)
    assert r.status_code == 400
    assert "identfier" in issues_text(r.json()) and "Bundle.entry[5]" in issues_text(r.json())
    assert counts(clean_peer) == dict.fromkeys(TYPES, 0)


def test_conditional_transaction_is_limited_to_8_entries(clean_peer: FhirPeer) -> None:
    # Medplum's rule (serializable transactions): connectors must chunk conditional bundles.
    bundle = example()
    for n in range(3):
        extra = copy.deepcopy(entry_of(EXAMPLE, "Claim"))
        extra["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-00000000000{n}"
        extra["resource"]["identifier"][0]["value"] = f"EXTRA-{n}"
        extra["request"]["ifNoneExist"] = f"identifier={CLAIM_SYS}|EXTRA-{n}"
        bundle["entry"].append(extra)
    r = clean_peer.fhir("POST", "", json=bundle)
    assert r.status_code == 400
    assert "too many entries" in issues_text(r.json())
    bundle["entry"] = bundle["entry"][:8]
    assert clean_peer.fhir("POST", "", json=bundle).status_code == 200
    assert clean_peer.count("Claim") == 3


def test_same_conditional_entry_twice_in_one_bundle(clean_peer: FhirPeer) -> None:
    bundle = example()
    twin = copy.deepcopy(entry_of(bundle, "Patient"))
    twin["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-000000000099"
    bundle["entry"].append(twin)
    assert clean_peer.fhir("POST", "", json=bundle).status_code == 200  # nothing existed yet
    assert clean_peer.count("Patient") == 1
    r = clean_peer.fhir("POST", "", json=bundle)  # now both resolve to the same Patient
    assert r.status_code == 400
    assert "Duplicate resource identity" in issues_text(r.json())


def test_invalid_patch_is_400(clean_peer: FhirPeer) -> None:
    pid = clean_peer.fhir("POST", "Patient", json={"resourceType": "Patient"}).json()["id"]
    r = clean_peer.fhir("PATCH", f"Patient/{pid}", data=b'[{"op": "add", "path": "/gender", "value": "banana"}]',
                        headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400
    assert "banana" in issues_text(r.json())
    r = clean_peer.fhir("PATCH", f"Patient/{pid}", data=b'[{"op": "add", "path": "/gender", "value": "other"}]',
                        headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "other"


# ---------------------------------------------------------------------------------- searches

def test_claim_search_by_created_window(clean_peer: FhirPeer) -> None:
    for n, created in enumerate(["2026-10-31", "2026-11-01", "2026-11-19", "2026-11-30", "2026-12-01"]):
        r = clean_peer.fhir("POST", "", json=example(claim_id=f"CB-{n}", created=created))
        assert r.status_code == 200, r.text
    found = clean_peer.search("Claim", created=["ge2026-11-01", "lt2026-12-01"], _sort="created")
    assert [c["created"] for c in found] == ["2026-11-01", "2026-11-19", "2026-11-30"]
    assert clean_peer.count("Claim", created=["gt2026-11-01", "le2026-12-01"]) == 3
    # Medplum 5.2.13 quirk: a month-precision value ("2026-11") is taken to end on 2026-12-01T23:59:59,
    # so it also matches 2026-12-01. Connectors should send ge/lt with full dates, as above.
    assert sorted(c["created"] for c in clean_peer.search("Claim", created="2026-11")) == \
        ["2026-11-01", "2026-11-19", "2026-11-30", "2026-12-01"]
    assert clean_peer.count("Claim", _lastUpdated=f"ge{time.strftime('%Y-%m-%d', time.gmtime(time.time() - 86400))}") == 5
    assert clean_peer.count("Claim", status="active", use="claim") == 5
    assert clean_peer.count("Claim", identifier=f"{CLAIM_SYS}|CB-2") == 1
    assert clean_peer.count("Claim", **{"patient.identifier": MRN}) == 5
    patient_id = clean_peer.search("Patient", identifier=MRN)[0]["id"]
    assert clean_peer.count("Claim", patient=f"Patient/{patient_id}") == 5


def test_no_search_param_for_serviced_date(clean_peer: FhirPeer) -> None:
    # R4 defines no Claim search parameter on item.serviced[x]: the peer says so instead of
    # silently matching nothing.
    r = clean_peer.fhir("GET", "Claim", params={"service-date": "2026-11-18"})
    assert r.status_code == 400
    text = issues_text(r.json())
    assert "service-date" in text and "created" in text


def test_search_paging(clean_peer: FhirPeer) -> None:
    for n in range(3):
        clean_peer.fhir("POST", "", json=example(claim_id=f"CB-{n}"))
    page = clean_peer.fhir("GET", "Claim", params={"_count": 2}).json()
    assert page["total"] == 3 and len(page["entry"]) == 2
    assert page["entry"][0]["fullUrl"].startswith(clean_peer.base_url + "/Claim/")
    nxt = next(ln["url"] for ln in page["link"] if ln["relation"] == "next")
    page2 = clean_peer.fhir("GET", nxt[len(clean_peer.base_url):]).json()
    assert len(page2["entry"]) == 1
    assert not any(ln["relation"] == "next" for ln in page2["link"])
    assert len(clean_peer.search("Claim", _count=1)) == 3


def test_metadata(clean_peer: FhirPeer) -> None:
    r = requests.get(f"{clean_peer.base_url}/metadata", timeout=30)
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    claim = next(res for res in cs["rest"][0]["resource"] if res["type"] == "Claim")
    assert {"created", "identifier", "patient"} <= {p["name"] for p in claim["searchParam"]}


# ------------------------------------------------------------------------- fault injection

def test_fault_429_with_retry_after(clean_peer: FhirPeer) -> None:
    assert clean_peer.fhir("GET", "Patient").status_code == 200  # the helper holds a token now
    clean_peer.fault(429, count=2, retry_after=7)
    for _ in range(2):
        r = clean_peer.fhir("GET", "Patient")
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"
        assert r.json()["issue"][0]["code"] == "throttled"
    assert clean_peer.fhir("GET", "Patient").status_code == 200
    assert clean_peer.stats()["faults_served"] == 2


def test_fault_503_only_under_path_prefix(clean_peer: FhirPeer) -> None:
    clean_peer.fault(503, count=1, path_prefix="/fhir")
    assert token_request(clean_peer, data={"grant_type": "client_credentials"},
                         auth=("chargebridge", "peer-secret")).status_code == 200
    r = clean_peer.fhir("POST", "Patient", json={"resourceType": "Patient"})
    assert r.status_code == 503
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Retry-After" not in r.headers
    assert clean_peer.count("Patient") == 0  # the faulted request was not processed
    log = clean_peer.requests_log()
    assert [(x["method"], x["status"], x["fault"]) for x in log if x["path"] == "/fhir/R4/Patient"][0] == \
        ("POST", 503, True)


def test_fault_on_token_endpoint(clean_peer: FhirPeer) -> None:
    clean_peer.fault(500, path_prefix="/oauth2/token")
    r = token_request(clean_peer, data={"grant_type": "client_credentials"}, auth=("chargebridge", "peer-secret"))
    assert r.status_code == 500
    assert clean_peer.get_token()


def test_fault_delay_causes_client_timeout(clean_peer: FhirPeer) -> None:
    token = clean_peer.get_token()
    headers = {"Authorization": f"Bearer {token}"}
    clean_peer.fault(delay_ms=1500, path_prefix="/fhir")
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=0.5)
    assert time.monotonic() - t0 < 1.4
    # only one request was delayed
    t0 = time.monotonic()
    assert requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=5).status_code == 200
    assert time.monotonic() - t0 < 1.0
    # delay + status: wait, then answer the status
    clean_peer.fault(504, delay_ms=300, path_prefix="/fhir")
    t0 = time.monotonic()
    r = requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=5)
    assert r.status_code == 504 and time.monotonic() - t0 >= 0.3


def test_fault_401_then_recovers(clean_peer: FhirPeer) -> None:
    token = clean_peer.get_token()
    clean_peer.fault(401, path_prefix="/fhir")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=5).status_code == 401
    assert requests.get(f"{clean_peer.base_url}/Patient", headers=headers, timeout=5).status_code == 200


def test_bad_fault_spec_is_rejected(fhir_peer: FhirPeer) -> None:
    r = requests.post(f"{fhir_peer.origin}/admin/faults", json={"status": "soon"}, timeout=5)
    assert r.status_code == 400


def test_reset_and_stats(clean_peer: FhirPeer) -> None:
    token = clean_peer.get_token()
    r = requests.post(clean_peer.base_url, json=EXAMPLE, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    clean_peer.fault(500, count=5)
    assert clean_peer.stats() == {"requests": 2, "fhir_requests": 1, "token_requests": 1, "faults_served": 0}
    clean_peer.reset()
    assert clean_peer.admin("faults")["faults"] == []
    assert clean_peer.stats() == {"requests": 0, "fhir_requests": 0, "token_requests": 0, "faults_served": 0}
    assert counts(clean_peer) == dict.fromkeys(TYPES, 0)
    r = requests.get(f"{clean_peer.base_url}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200  # tokens survive a reset
