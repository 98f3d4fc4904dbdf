"""The RCM target seam.

A target takes canonical encounters and answers, per encounter, what happened to it. Pushing
the same encounter twice must create nothing new on the RCM (conditional create on a stable
identifier), which is what makes the outbox's "at least once" delivery exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from core.model import Encounter


class TargetError(Exception):
    """The whole push failed (nothing known to be delivered). ``str()`` is for people, no PHI.

    ``retryable`` says whether trying again later may help; ``retry_after`` is the server's
    Retry-After in seconds when it gave one; ``kind`` is a short machine word for the status.
    """

    def __init__(self, message: str, *, retryable: bool, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind  # unreachable | timeout | tls | auth | throttled | server | protocol
        self.retry_after = retry_after


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


class Target(Protocol):
    name: str

    def push(self, encounters: Sequence[Encounter]) -> list[PushResult]: ...

    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]: ...

    def check(self) -> tuple[bool, str]: ...
