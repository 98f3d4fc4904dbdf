"""The RCM target seam.

A target takes canonical encounters and answers, per encounter, what happened to it. Pushing
the same encounter twice must create nothing new on the RCM (conditional create on a stable
identifier), which is what makes the outbox's "at least once" delivery exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

from core.model import Encounter
from core.states import TargetErrorKind


class TargetError(Exception):
    """The whole push failed (nothing known to be delivered). ``str()`` is for people, no PHI.

    ``kind`` says why (:class:`~core.states.TargetErrorKind`); ``retryable`` (whether trying
    again later may help) follows from it unless the connector knows better — a garbled answer
    is a ``protocol`` error yet worth a retry. ``retry_after`` is the server's Retry-After in
    seconds when it gave one.
    """

    def __init__(self, message: str, *, kind: TargetErrorKind, retryable: bool | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = TargetErrorKind(kind)
        self.retryable = self.kind.retryable if retryable is None else retryable
        self.retry_after = retry_after


class ControlLedger(Protocol):
    """Interchange control numbers, persisted by the engine (X12: ISA13 = GS06). A batch sent
    again (the same ``batch_key``) gets the number it had; any other batch a number never used
    before."""

    def interchange(self, batch_key: str, kind: str) -> int:
        """The control number for ``batch_key`` (``kind``: e.g. ``"837P"``, ``"270"``)."""
        ...

    def sent(self, control: int, file_name: str) -> None:
        """Record that the interchange ``control`` left as ``file_name``."""
        ...


@dataclass(frozen=True)
class TargetSettings:
    """What a target is built from: the ``[rcm]`` section minus the engine's own keys (type,
    batch size). Vendors read what they need; the secret comes separately, from the keyring."""

    base_url: str
    token_url: str = ""
    client_id: str = ""
    auth: str = "client_credentials"  # client_credentials | bearer (static token)
    timeout_seconds: float = 30.0
    ca_bundle: str = ""
    bundle: str = "batch"  # FHIR: batch (phased) | transaction
    # vendor sections beyond [rcm] (X12: {"practice": {...}, "x12": {...}}), already validated
    options: Mapping[str, Any] = field(default_factory=dict)
    ledger: ControlLedger | None = None  # X12 control numbers (the engine's store)


@dataclass
class PushResult:
    """One encounter's fate: delivered (with the RCM's ids) or rejected (with the RCM's reason)."""

    business_key: str
    delivered: bool
    remote_ids: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass
class RemoteLine:
    code: str
    modifiers: list[str]
    units: str
    unit_charge: str
    service_date: str
    dx_codes: list[str]


@dataclass
class RemoteCharge:
    """The RCM's view of one claim, for reconciliation."""

    remote_id: str
    identifier: str  # our stable identifier when the claim came from us, else ""
    patient_mrn: str
    patient_family: str
    patient_given: str
    patient_dob: str
    dos: str
    rendering_npi: str
    diagnoses: list[str]
    lines: list[RemoteLine]


@runtime_checkable
class Target(Protocol):
    """Everything sync, reconcile and the mismatch queue call on an RCM connector."""

    name: str

    def identifier(self, enc: Encounter) -> str:
        """The stable identifier our claims carry at the RCM for ``enc`` (reconciliation pairs on
        it; :attr:`RemoteCharge.identifier` holds the same value for claims that came from us)."""
        ...

    def push(self, encounters: Sequence[Encounter], *,
             corrections: Mapping[str, str] | None = None) -> list[PushResult]:
        """One :class:`PushResult` per encounter, in order; idempotent (the same encounter twice
        creates nothing new). ``corrections``: business key -> the RCM's claim id that a re-sent
        encounter replaces (a new version of that claim, not a second claim). Raises
        :class:`TargetError` when the push failed as a whole."""
        ...

    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]:
        """The RCM's claims with a date of service in [start, end]. Raises :class:`TargetError`."""
        ...

    def check(self) -> tuple[bool, str]:
        """Test the connection and credentials: (ok, what happened, for people). Never raises."""
        ...
