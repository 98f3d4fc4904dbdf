"""The engine API's request and response bodies (pydantic v2), shared by the engine and its clients.

State fields use the :mod:`core.states` enums, so ``/openapi.json`` lists their values. Every
error the API answers has the body :class:`ErrorBody`; a client shows ``title`` and ``fix`` as
they are and puts the cursor on ``key`` (a config key such as ``rcm.base_url``, or a request
location such as ``page`` / ``body.name``) without parsing any text.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core.states import (
    AlertKind,
    AnswerKind,
    ClaimState,
    ConnectorKind,
    EligibilityStatus,
    EncounterKind,
    EncounterState,
    EngineState,
    FindingKind,
    FindingStatus,
    GoalDirection,
    GoalStatus,
    KpiBy,
    KpiGrain,
    OutboxState,
    ResolveAction,
    Role,
)

T = TypeVar("T")

MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
USER_NAME_MAX = 64


# -- errors ---------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every 4xx/5xx answer. ``request_id`` matches the engine log line of a server error."""

    title: str = Field(description="what happened, for people")
    fix: str = Field("", description="what to do about it")
    key: str | None = Field(None, description="the config key or request field at fault, if one is")
    request_id: str | None = Field(None, description="quote it to support; the engine log has the details")


# -- basics ---------------------------------------------------------------------------------------
class Health(BaseModel):
    ok: bool = True
    version: str
    setup_needed: bool = Field(description="no user exists yet: the first-run setup token is accepted")
    test_mode: bool = Field(False, description="[mode] test: sync sends nothing to the RCM (banner)")


class Caller(BaseModel):
    name: str
    role: Role


class Page(BaseModel, Generic[T]):
    total: int = Field(ge=0)
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    items: list[T]


class Ok(BaseModel):
    ok: bool = True


# -- status ---------------------------------------------------------------------------------------
class Connector(BaseModel):
    name: str
    kind: ConnectorKind
    healthy: bool
    detail: str


class Counts(BaseModel):
    ready: int = 0
    needs_review: int = 0
    expected: int = 0
    quarantined: int = 0


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")

    state: EngineState
    reason: str = ""
    version: str
    paused: bool
    counts: Counts
    outbox: dict[str, int]
    last_sync: dict[str, Any]
    next_sync: str = ""
    breaker_until: str = ""
    connectors: list[Connector]
    change_seq: int
    user: Caller | None = None
    test_mode: bool = Field(False, description="[mode] test: sync sends nothing to the RCM (banner)")
    alerts: list[AlertItem] = Field(default_factory=list, description="active alerts (agent/alerts.py)")
    eligibility: dict[str, int] = Field(default_factory=dict, description="upcoming scheduled visits whose "
                                        "latest eligibility answer is not active, by status (pending, inactive, "
                                        "unknown, no_coverage): the front desk calls these patients")


# -- encounters -----------------------------------------------------------------------------------
class EncounterItem(BaseModel):
    id: int
    state: EncounterState
    kind: EncounterKind
    source: str
    source_id: str
    dos: str
    mrn: str
    patient: str
    codes: list[str]
    total: str = Field(description="sum of units × unit charge, two decimals")
    findings: list[dict[str, Any]]
    sync_state: OutboxState | Literal[""] = Field(description="the latest outbox state; empty = never queued")
    sync_error: str
    version: int


class EncounterPage(Page[EncounterItem]):
    total_capped: bool = Field(False, description="a broad search stopped counting at 1,000 matches")


# -- quarantine -----------------------------------------------------------------------------------
class QuarantineItem(BaseModel):
    id: int
    document_id: int
    file: str
    part: str
    reason: str
    created_at: str
    resolved_at: str | None = None
    resolution: str | None = None


class QuarantineDocument(BaseModel):
    id: int
    document_id: int
    file: str
    part: str
    reason: str
    created_at: str
    format: str
    size: int
    stored: bool
    shown_bytes: int
    truncated: bool
    note: str
    text: str


class ReprocessResult(BaseModel):
    document_id: int | None
    status: str
    accepted: int
    quarantined: int
    reasons: list[str]


# -- sync -----------------------------------------------------------------------------------------
class SyncStarted(BaseModel):
    started: bool = True


class SyncResult(BaseModel):
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    remaining: int = 0
    error: str = ""
    error_kind: str = ""
    skipped: str = ""
    rejections: list[dict[str, Any]] = []


class Paused(BaseModel):
    paused: bool


class Changes(BaseModel):
    seq: int


# -- reconcile and mismatches ---------------------------------------------------------------------
class ReconcileResult(BaseModel):
    """Counts per finding kind and what happened to the queue; ``skipped`` alone when nothing ran
    (no RCM configured, or the RCM could not be read)."""

    model_config = ConfigDict(extra="allow")

    skipped: str = ""
    matched: int = 0
    missing_in_rcm: int = 0
    orphan_in_rcm: int = 0
    field_mismatch: int = 0
    missing_charge: int = 0
    opened: int = 0
    reopened: int = 0
    closed: int = 0


class Finding(BaseModel):
    id: int
    kind: FindingKind
    encounter_id: int | None
    remote_id: str
    dos: str
    local: dict[str, Any]
    remote: dict[str, Any]
    diff: list[dict[str, Any]]
    status: FindingStatus
    first_seen: str
    last_seen: str
    reopened: int
    assignee: str
    comments: list[dict[str, Any]]
    resolution: str
    resolved_by: str
    resolved_at: str
    age_days: int
    actions: list[ResolveAction]


class Resolution(BaseModel):
    action: ResolveAction
    reason: str = Field("", max_length=2000)


class Comment(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    assignee: str | None = Field(None, max_length=USER_NAME_MAX)


class ResolveResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: FindingStatus


# -- users and audit ------------------------------------------------------------------------------
class User(BaseModel):
    name: str
    role: Role
    created_at: str


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=USER_NAME_MAX, pattern=r"^[^\x00-\x1f\x7f/]+$")
    role: Role


class NewUserToken(BaseModel):
    name: str
    role: Role
    token: str = Field(description="shown once; the engine keeps only its hash")


class Revoked(BaseModel):
    name: str
    revoked: bool = True


class AuditEntry(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    before_sha256: str
    after_sha256: str
    detail: Any
    prev_hash: str
    hash: str


# -- configuration and RCM ------------------------------------------------------------------------
class ConfigView(BaseModel):
    config: dict[str, Any] = Field(description="chargebridge.toml as the engine reads it; never a secret")
    path: str
    problem: str = Field(description="why the file does not load (the running settings are shown then)")
    rcm_secret_set: bool
    restart_required: list[str] = Field(description="sections saved but not yet used by the running engine")


class ConfigSaved(BaseModel):
    saved: bool
    changed: list[str]
    applied: list[str]
    restart_required: list[str]
    message: str
    config: dict[str, Any]


class ConfigCheck(BaseModel):
    config: dict[str, Any]
    partial: bool = Field(False, description="validate only the sections given")


class RcmSecret(BaseModel):
    secret: str = Field(max_length=4096)


class RcmSecretSaved(BaseModel):
    saved: bool = True
    rcm_error: str = Field(description="why the RCM connection cannot be built now; empty when it can")


class RcmCandidate(BaseModel):
    """Unsaved RCM settings to test. ``secret`` may be empty only while both URLs are the saved
    ones: the stored secret is never sent to a new address."""

    base_url: str = Field(min_length=1, max_length=2048)
    token_url: str = Field("", max_length=2048)
    client_id: str = Field("", max_length=512)
    auth: Literal["client_credentials", "bearer"] = "client_credentials"
    ca_bundle: str = Field("", max_length=4096)
    timeout_seconds: float = Field(15.0, ge=1, le=30)
    secret: str = Field("", max_length=4096)


class RcmTestResult(BaseModel):
    ok: bool
    detail: str
    base_url: str = ""


# -- charge rules and the coder review queue (H7) -----------------------------------------------
class RuleInfo(BaseModel):
    id: str
    severity: Literal["info", "review", "error"] = Field(description="as this practice configured it")
    default_severity: Literal["info", "review", "error"]
    enabled: bool
    applies_to: str
    summary: str
    opportunity: bool = Field(description="a care-opportunity suggestion: shown, never billed")
    version: str = Field(description="the rule pack version every finding records")


class ReviewLine(BaseModel):
    index: int = Field(ge=0)
    code: str
    code_system: str
    modifiers: list[str]
    units: str
    dx_pointers: list[int]
    unit_charge: str
    findings: list[dict[str, Any]] = Field(description="findings about this line: code, message, fix, severity")


class ReviewItem(BaseModel):
    id: int
    state: EncounterState
    version: int
    dos: str
    source: str
    source_id: str
    mrn: str
    patient: str
    sex: str
    dob: str
    place_of_service: str
    payer: str
    diagnoses: list[str]
    lines: list[ReviewLine]
    findings: list[dict[str, Any]] = Field(description="findings about the encounter as a whole")
    holding: int = Field(ge=0, description="findings that hold it for review (review or error)")


class ApproveBody(BaseModel):
    note: str = Field("", max_length=500)


class RejectBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class LineEdit(BaseModel):
    """The fields to change on one charge line; the ones left out stay as they are."""

    code: str | None = Field(None, max_length=16)
    modifiers: list[str] | None = Field(None, max_length=4)
    units: str | None = Field(None, max_length=32)
    dx_pointers: list[int] | None = Field(None, max_length=4)


class ReviewDecision(BaseModel):
    id: int
    state: EncounterState
    version: int


class Opportunity(BaseModel):
    encounter_id: int
    dos: str
    mrn: str
    rule: str
    message: str
    fix: str
    rule_version: str


class RulesRerun(BaseModel):
    checked: int = Field(ge=0)
    changed: int = Field(ge=0)
    held: int = Field(ge=0)
    released: int = Field(ge=0)
    skipped_sent: int = Field(ge=0, description="already sent: never changed by a re-run")


# -- EHR databases (H6) ---------------------------------------------------------------------------
class DatabaseInfo(BaseModel):
    name: str
    url: str = Field(description="without any password (passwords live in the OS keyring)")
    profile: str
    poll_minutes: float
    rescan_days: int
    healthy: bool
    detail: str
    last_poll_at: str = ""
    rows_read: int = Field(0, ge=0, description="rows the last poll read")


class DatabasePoll(BaseModel):
    database: str
    new: int = Field(ge=0)
    changed: int = Field(ge=0)
    voided: int = Field(ge=0)
    unchanged: int = Field(ge=0)
    rows_read: int = Field(ge=0)
    quarantined: int = Field(ge=0)
    error: str = ""
    error_kind: str = ""
    skipped: str = ""


class DatabaseCheck(BaseModel):
    ok: bool
    server: str = ""
    problems: list[str]
    warnings: list[str]


# -- KPIs, goals and alerts (H5; agent/kpi.py, agent/alerts.py) -----------------------------------
KpiUnit = Literal["percent", "days", "hours", "count", "dollars"]


class KpiInfo(BaseModel):
    """One KPI the engine computes: what it measures and which way is better."""

    key: str
    label: str
    unit: KpiUnit
    direction: GoalDirection = Field(description="which way is better, unless the goal says otherwise")
    formula: str = Field(description="how it is computed (docs/kpi.md has the long form)")


class KpiValue(BaseModel):
    key: str
    label: str
    unit: KpiUnit
    value: float | None = Field(description="None when the window has nothing to compute it from")
    numerator: float | None = None
    denominator: float | None = None
    target: float | None = None
    direction: GoalDirection
    baseline: float | None = Field(None, description="the same KPI over the goals' baseline period")
    status: GoalStatus


class KpiBucket(BaseModel):
    label: str
    count: int = Field(ge=0)
    amount: str = Field("0.00", description="billed dollars in the bucket (decimal text)")


class DenialReason(BaseModel):
    kind: str = Field(description="carc | rarc | fhir …")
    code: str
    group: str = ""
    description: str = ""
    claims: int = Field(ge=0)
    amount: str = "0.00"


class KpiGroup(BaseModel):
    key: str = Field(description="the rendering NPI or payer id; '' when the claim had none")
    kpis: list[KpiValue]


class KpiReport(BaseModel):
    start: str = Field(description="first date of service in the window (YYYY-MM-DD)")
    end: str = Field(description="last date of service in the window (YYYY-MM-DD)")
    by: KpiBy | None = None
    provider: str = Field("", description="the rendering NPI every figure is narrowed to ('' = every provider)")
    payer: str = Field("", description="the payer every figure is narrowed to ('' = every payer); sync health "
                                       "stays the practice's")
    baseline_from: str = ""
    baseline_to: str = ""
    computed_at: str
    kpis: list[KpiValue]
    denial_reasons: list[DenialReason]
    ar_buckets: list[KpiBucket] = Field(description="open claims by age since first submission")
    charge_lag: list[KpiBucket] = Field(description="claims by days from date of service to delivery")
    groups: list[KpiGroup] = Field(default_factory=list, description="per provider or payer, when `by` is given")


class KpiPoint(BaseModel):
    period: str = Field(description="YYYY-MM-DD (day; week: its Monday) or YYYY-MM (month)")
    value: float | None
    numerator: float | None = None
    denominator: float | None = None


class KpiSeries(BaseModel):
    kpi: str
    label: str
    unit: KpiUnit
    grain: KpiGrain
    start: str
    end: str
    provider: str = ""
    payer: str = ""
    target: float | None = None
    direction: GoalDirection
    points: list[KpiPoint]


class GoalTarget(BaseModel):
    target: float = Field(ge=-1e9, le=1e9, allow_inf_nan=False)
    direction: GoalDirection | None = Field(None, description="default: the KPI's own (KpiInfo.direction)")


class Goals(BaseModel):
    """``[goals]``: a target per KPI and the baseline period each KPI is compared with."""

    model_config = ConfigDict(extra="forbid")

    baseline_from: str = Field("", max_length=10, description="YYYY-MM-DD or ''")
    baseline_to: str = Field("", max_length=10, description="YYYY-MM-DD or ''")
    missed_charge_days: int = Field(3, ge=0, le=365, description="an expected visit with no charge this many "
                                    "days after its date is a missed charge")
    targets: dict[str, GoalTarget] = Field(default_factory=dict, max_length=64)


class GoalsView(Goals):
    model_config = ConfigDict(extra="forbid")

    kpis: list[KpiInfo] = Field(default_factory=list, description="every KPI a goal may name")


class AlertItem(BaseModel):
    """An alert that is active now: what is wrong and what to do, never patient data."""

    kind: AlertKind
    title: str
    fix: str
    since: str = Field(description="when the condition was first seen (UTC)")
    last_fired_at: str = ""
    detail: dict[str, Any] = Field(default_factory=dict, description="counts and names of sources only")


Status.model_rebuild()  # ``alerts`` names AlertItem, defined after Status


# -- claims (H4) -------------------------------------------------------------------------------------
class ClaimReason(BaseModel):
    """A reason code on a claim's answer: CARC (``group`` + ``code``, e.g. CO-45), RARC, 277CA
    STC, 999 AK, or a FHIR ClaimResponse error code; ``text`` is the code's description."""

    kind: str
    code: str
    group: str = ""
    amount: str = ""
    text: str = ""


class ClaimItem(BaseModel):
    """One claim (one delivered encounter) and where it is in its life at the payer. Amounts
    are decimal text; dates are ISO (``*_at`` UTC timestamps, ``dos`` / ``adjudicated_on`` days)."""

    claim_id: str = Field(description="our stable claim id: the X12 CLM01 / the FHIR Claim identifier")
    encounter_id: int | None
    version: int
    target: str = Field(description="the RCM channel it went through (fhir, x12)")
    state: ClaimState
    dos: str
    provider_npi: str
    payer: str
    billed: str
    paid: str
    adjusted: str
    patient_resp: str
    payer_claim_id: str = Field(description="the RCM's / payer's number for the claim (for corrections)")
    control: dict[str, str] = Field(description="control numbers / remote ids of the delivery (ISA, GS, ST; Claim)")
    submissions: int
    reasons: list[ClaimReason]
    first_submitted_at: str
    submitted_at: str
    answered_at: str
    accepted_at: str
    adjudicated_on: str
    updated_at: str
    in_mismatch_queue: bool = Field(False, description="a rejected / denied claim waits in the mismatch queue")
    finding_id: int | None = Field(None, description="the open mismatch-queue finding, when there is one")


class ClaimAnswer(BaseModel):
    """One answer a claim received (999, 277CA, 835 or ClaimResponse), oldest first."""

    kind: AnswerKind
    state: str
    answered_on: str
    received_at: str
    detail: dict[str, Any]


class ClaimDetail(ClaimItem):
    answers: list[ClaimAnswer]


class UnmatchedAnswer(BaseModel):
    """An answer that matched no claim: kept and listed, never dropped."""

    id: int
    kind: AnswerKind
    claim_ref: str
    state: str
    answered_on: str
    received_at: str
    detail: dict[str, Any]


# -- test mode and go-live (H8) ------------------------------------------------------------------
class TestModeSend(BaseModel):
    """One push test mode recorded instead of (dry run) or besides (sandbox) sending it."""

    __test__ = False  # not a pytest class
    id: int
    at: str
    target: str
    route: Literal["dry-run", "sandbox"]
    action: str
    encounters: int = Field(ge=0)
    delivered: int = Field(ge=0)
    rejected: int = Field(ge=0)
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)


class TestModeFile(BaseModel):
    __test__ = False
    seq: int
    name: str
    size: int
    sha256: str


class TestModeSendDetail(TestModeSend):
    file_list: list[TestModeFile]


class TestModeExport(BaseModel):
    """A send's payload as one file (a ZIP when it had several): patient data, manager+."""

    __test__ = False
    id: int
    name: str
    size: int
    content_base64: str


class GoLiveItem(BaseModel):
    key: str = Field(description="folders | rcm | manager | backup | test_deliveries")
    ok: bool
    required: bool = Field(description="false: information only, never blocks go-live")
    title: str
    fix: str = ""


class GoLiveChecks(BaseModel):
    test_mode: bool
    ready: bool = Field(description="every required item is ok")
    missing: list[str] = Field(description="keys of the required items that are not ok")
    items: list[GoLiveItem]


class GoLiveRequest(BaseModel):
    force: bool = Field(False, description="go live although items are missing (needs a reason)")
    reason: str = Field("", max_length=2000)
    resend_test: bool = Field(False, description="re-queue what dry runs 'delivered', for the real RCM")


class GoLiveResult(BaseModel):
    live: bool
    forced: bool
    missing: list[str]
    requeued: int = Field(ge=0)
    message: str


# -- LAN pairing (H7: agent/pairing.py, core/pairing.py) --------------------------------------------
class PairCa(BaseModel):
    ca_pem: str = Field(description="the practice CA certificate (PEM); accept it only if its SHA-256 matches the "
                                    "pin in the pairing code")
    fingerprint: str = Field(description="SHA-256 of the CA certificate (DER), hex")


class PairRequest(BaseModel):
    code: str = Field(min_length=1, max_length=64, description="the one-time part of the pairing code")


class PairedToken(BaseModel):
    name: str
    role: Role
    token: str = Field(description="shown once; the engine keeps only its hash")
    ca_pem: str
    fingerprint: str


# -- eligibility 270/271 (H9: agent/eligibility.py, agent/eligibility_job.py) -----------------------
class EligibilityVisit(BaseModel):
    """A scheduled visit and its latest eligibility answer. MRN and appointment id only: the
    front desk looks the patient up in the EHR; no names cross this API."""

    visit: str = Field(description="the visit's business key (kind|system|appointment id)")
    appointment: str = Field(description="the appointment id in the EHR (SCH-1)")
    encounter_id: int | None = Field(description="the scheduled visit; None once it is no longer expected")
    mrn: str
    dos: str = Field(description="date of service (YYYY-MM-DD)")
    status: EligibilityStatus | None = Field(description="None: not asked yet")
    plan: str = Field(description="the payer's plan description or number, when the 271 gave one")
    copay: str = Field(description="office-visit copay (decimal text), when the 271 gave one")
    checked_at: str = Field(description="when the answer arrived (UTC); '' while none has")
    reasons: list[str] = Field(description="why not active (271 AAA codes with their text), no patient data")


class EligibilityCheckRequest(BaseModel):
    date: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                             description="the day of the visits to ask about (default: today)")
    ask: bool = Field(True, description="false: only read the 271 answers waiting, send no 270")


class EligibilityAsked(BaseModel):
    day: str
    visits: int = Field(ge=0, description="scheduled visits that day")
    asked: int = Field(ge=0, description="visits in the 270 sent")
    already_answered: int = Field(ge=0)
    no_coverage: int = Field(ge=0, description="visits with no payer / member id to ask about")
    file: str = Field(description="the 270 file's name at the clearinghouse ('' when none was sent)")
    control: int = Field(ge=0, description="its interchange control number (ISA13)")


class EligibilityRead(BaseModel):
    files: int = Field(ge=0)
    answers: int = Field(ge=0)
    matched: int = Field(ge=0)
    unmatched: int = Field(ge=0)
    duplicates: int = Field(ge=0, description="answers already applied (the same file twice)")
    errors: list[str] = Field(description="files that could not be read: name and reason")


class EligibilityCheck(BaseModel):
    day: str
    asked: EligibilityAsked
    read: EligibilityRead
    rules: RulesRerun | None = Field(None, description="the charge rules re-run for patients with new answers")


# -- first-week checklist (H15: agent/checklist.py) --------------------------------------------------
class ChecklistItem(BaseModel):
    key: str = Field(description="source | rcm_test | manager | backup | review | first_claim | reconcile")
    ok: bool = Field(description="done, as the engine can tell from its own state")
    title: str
    next: str = Field("", description="what to do next while it is not done")
    page: str = Field("", description="the window's page where it is done ('' none)")


class Checklist(BaseModel):
    items: list[ChecklistItem]
    done: int = Field(ge=0)
    total: int = Field(ge=0)
    all_done: bool
    dismissed: bool = Field(description="a manager hid it once every item was done (kept per home)")
    dismissed_at: str = ""
