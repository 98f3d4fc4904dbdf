"""Answers about claims, as every source gives them (X12 999 / 277CA / 835, FHIR
ClaimResponse): the connectors parse into these, the engine applies them (agent/claims.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.states import AnswerKind, ClaimState


@dataclass
class Reason:
    """One reason code on an answer. ``kind``: ``carc`` (group + code, e.g. CO-45), ``rarc``,
    ``stc`` (277CA category:status), ``ak`` (999 error code), ``fhir`` (ClaimResponse code)."""

    kind: str
    code: str
    group: str = ""
    amount: str = ""
    text: str = ""


@dataclass
class Answer:
    """One answer about one claim (or, for a 999, about every claim of a functional group).

    ``fingerprint`` identifies the answer itself (e.g. file control number + position + content
    hash): applying an answer with a fingerprint already seen changes nothing."""

    kind: AnswerKind
    fingerprint: str
    state: ClaimState | None = None
    claim_ref: str = ""  # CLM01 as echoed: 277CA REF*1K/TRN, 835 CLP01, ClaimResponse request identifier
    group_control: str = ""  # 999: GS06 of the acknowledged 837 (all its claims)
    paid: str | None = None
    adjusted: str | None = None
    patient_resp: str | None = None
    payer_claim_id: str = ""  # CLP07 / ClaimResponse id: the payer's number, for corrections
    reasons: list[Reason] = field(default_factory=list)
    answered_on: str = ""  # ISO date the answer carries (payment / status date)
    detail: dict[str, Any] = field(default_factory=dict)  # lines, control numbers, free text
