"""Every state and kind ChargeBridge stores, sends or shows, as one set of ``StrEnum``s.

They are ``str`` subclasses, so a member compares equal to the text stored in SQLite or sent as
JSON (``EncounterState.READY == "ready"``), and the API schemas list their values.
"""

from __future__ import annotations

from enum import StrEnum


class DocumentStatus(StrEnum):
    """A raw document in the store: committed, then read."""

    PENDING = "pending"  # committed, not yet parsed (a restart finishes it)
    PROCESSED = "processed"
    QUARANTINED = "quarantined"


class EncounterState(StrEnum):
    READY = "ready"  # no error findings: will be synced
    NEEDS_REVIEW = "needs_review"  # validation found errors a person must fix
    EXPECTED = "expected"  # a scheduled visit (SIU) with no charge yet
    VOIDED = "voided"  # the EHR database no longer has an active line for it (a void)
    REJECTED = "rejected"  # a coder rejected it (with a reason): never billed unless the EHR re-exports it


class EncounterKind(StrEnum):
    CHARGE = "charge"
    EXPECTED = "expected"


class QuarantineStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class OutboxState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # committed before the request; a crash puts it back in the queue
    DELIVERED = "delivered"
    FAILED = "failed"  # retryable; next attempt after backoff
    REJECTED = "rejected"  # the RCM refused this encounter; a person must act


class FindingKind(StrEnum):
    """What reconciliation found for one visit."""

    MATCHED = "matched"
    MISSING_IN_RCM = "missing_in_rcm"
    ORPHAN_IN_RCM = "orphan_in_rcm"
    FIELD_MISMATCH = "field_mismatch"
    MISSING_CHARGE = "missing_charge"
    CLAIM_REJECTED = "claim_rejected"  # the clearinghouse / payer refused the claim (999, 277CA, ClaimResponse)
    CLAIM_DENIED = "claim_denied"  # adjudicated and denied (835, ClaimResponse): correct and resend, or ignore


class FindingStatus(StrEnum):
    OPEN = "open"
    REOPENED = "reopened"
    RESOLVED = "resolved"
    IGNORED = "ignored"
    CLOSED = "closed"  # gone at the RCM


class ResolveAction(StrEnum):
    RESEND = "resend"
    ACCEPT_RCM = "accept-rcm"
    IGNORE = "ignore"


class TargetErrorKind(StrEnum):
    """Why a push to the RCM failed as a whole."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    TLS = "tls"
    AUTH = "auth"
    THROTTLED = "throttled"
    SERVER = "server"
    PROTOCOL = "protocol"
    CONFIG = "config"
    CONNECTOR = "connector"  # the connector itself raised something unexpected

    @property
    def retryable(self) -> bool:
        return self not in NON_RETRYABLE


NON_RETRYABLE = frozenset({TargetErrorKind.AUTH, TargetErrorKind.TLS, TargetErrorKind.PROTOCOL,
                           TargetErrorKind.CONFIG})


class EngineState(StrEnum):
    """What the tray shows. ``offline`` is the client's own state when no engine answers."""

    IDLE = "idle"
    SYNCING = "syncing"
    PAUSED = "paused"
    ATTENTION = "attention"
    ERROR = "error"
    OFFLINE = "offline"


class Role(StrEnum):
    FRONT_DESK = "front_desk"
    MANAGER = "manager"
    ADMIN = "admin"
    CODER = "coder"  # the review queue (approve / edit lines / reject); ranks between front desk and manager

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.FRONT_DESK: 0, Role.CODER: 1, Role.MANAGER: 2, Role.ADMIN: 3}


class ConnectorKind(StrEnum):
    EHR = "ehr"
    RCM = "rcm"


class Severity(StrEnum):
    """Of a validation finding: an ``error`` holds the encounter for review."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    REVIEW = "review"  # a charge rule's finding a coder must look at: holds the encounter like an error


class ClaimState(StrEnum):
    """Where a delivered claim is in its life at the payer (agent/claims.py)."""

    SUBMITTED = "submitted"  # sent; no answer yet
    ACCEPTED = "accepted"  # the clearinghouse / payer took it in (999 / 277CA / ClaimResponse queued)
    REJECTED = "rejected"  # refused before adjudication (999 / 277CA / ClaimResponse error)
    PAID = "paid"
    PARTIALLY_PAID = "partially_paid"
    DENIED = "denied"

    @property
    def is_open(self) -> bool:
        """Still waiting for the payer's final word."""
        return self in (ClaimState.SUBMITTED, ClaimState.ACCEPTED)


class AnswerKind(StrEnum):
    """Where an answer about claims came from; its rank orders them (a later stage wins)."""

    ACK_999 = "999"
    CA_277 = "277CA"
    RA_835 = "835"
    CLAIM_RESPONSE = "ClaimResponse"

    @property
    def rank(self) -> int:
        return {AnswerKind.ACK_999: 1, AnswerKind.CA_277: 2, AnswerKind.RA_835: 3, AnswerKind.CLAIM_RESPONSE: 3}[self]


class GoalStatus(StrEnum):
    """Where a KPI stands against the practice's goal (agent/kpi.py, ``[goals]``)."""

    MET = "met"
    NOT_MET = "not_met"
    NO_DATA = "no_data"  # nothing in the window to compute it from
    NO_TARGET = "no_target"  # the practice set no goal for it


class GoalDirection(StrEnum):
    HIGHER = "higher"  # met when the value is at least the target
    LOWER = "lower"  # met when the value is at most the target


class KpiGrain(StrEnum):
    DAY = "day"
    WEEK = "week"  # ISO weeks, labelled by their Monday
    MONTH = "month"


class KpiBy(StrEnum):
    PROVIDER = "provider"  # rendering NPI
    PAYER = "payer"


class AlertKind(StrEnum):
    """Conditions the engine watches (agent/alerts.py); none carries patient data."""

    QUEUE_STALE = "queue_stale"  # charges waiting in the outbox longer than [alerts] queue_hours
    NO_EXPORT = "no_export"  # no export seen for [alerts] no_export_hours business hours
    SYNC_FAILING = "sync_failing"  # [alerts] sync_failures consecutive failed runs
    DENIAL_RATE = "denial_rate"  # denial rate over the last 7 days above the [goals] target
    MISSED_CHARGES = "missed_charges"  # expected visits with no charge after N days
    DATABASE_DOWN = "database_down"  # an EHR database source cannot be read


class EligibilityStatus(StrEnum):
    """A scheduled visit's coverage as the payer's 271 answered (agent/eligibility.py)."""

    PENDING = "pending"  # the 270 left; no 271 yet
    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"  # the payer could not say (AAA rejection, no EB 1/6)
    NO_COVERAGE = "no_coverage"  # nothing to ask about: no payer or member id on the visit
