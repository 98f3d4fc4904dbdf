"""``coverage.inactive_on_dos``: the patient's coverage was not active on the date of service.

Two sources, either one fires the rule (default severity ``review``: a coder or the front desk
confirms the insurance before the claim goes out and comes back denied for eligibility, CARC 27):

* **the payer's answer** — the latest answered 270/271 eligibility check for this patient and
  this date of service (agent/eligibility.py) says ``inactive``. An answer for another date, an
  ``unknown`` answer or no answer at all is not a "no": the rule stays quiet (``coverage.missing``
  covers an encounter without coverage);
* **the EHR's own dates** — every coverage on the encounter carries plan dates (HL7 IN1-12
  effective / IN1-13 expiration) and none of them spans the date of service. A coverage without
  dates may be active, so one such coverage keeps the rule quiet. An ``active`` payer answer for
  that date wins over the EHR's dates (the payer knows; the EHR's copy may be stale).

It is a *history* rule: it needs the store (the eligibility answers), read once per batch in
:func:`agent.rules.history.read_history` and :func:`agent.rules.apply.rerun`. An answer that
arrives after the charge was ingested updates the findings through
:func:`agent.eligibility_job.after_answers`, which the engine calls after reading 271s: it
re-runs the rules for the patients that got an answer since the last refresh (encounters not
yet sent only, as every re-run).

Messages name no patient data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from agent.rules import EncounterFacts, History, Hit, Rule
from core.states import EligibilityStatus

if TYPE_CHECKING:
    from agent.store import Store

RULE_ID = "coverage.inactive_on_dos"


_PAYER_SAYS_INACTIVE = [Hit("coverages", "the payer's eligibility answer for this date of service says the coverage "
                            "was not active", "confirm the patient's insurance (a new card, another payer) and "
                            "correct the coverage in the EHR, or approve it as self-pay")]


def inactive_on_dos(enc: EncounterFacts, history: History) -> Sequence[Hit]:
    if not enc.dos:
        return ()
    answer = history.eligibility.get((enc.mrn, enc.dos[:10])) if history.eligibility else None
    if answer == EligibilityStatus.INACTIVE:
        return _PAYER_SAYS_INACTIVE
    if answer == EligibilityStatus.ACTIVE or not enc.coverage_dates:
        return ()
    dos = enc.dos[:10]
    for start, end in enc.coverage_dates:
        if not ((end and end < dos) or (start and start > dos)):
            return ()  # one coverage spans the date of service (or has no dates: may be active)
    ended = [end for _, end in enc.coverage_dates if end and end < dos]
    why = (f"ended on {max(ended)}" if ended else "starts after it")
    return [Hit("coverages", f"the coverage the EHR sent {why}, outside the date of service {dos}",
                "update the patient's insurance in the EHR (the plan dates or a new coverage) and re-export, "
                "or approve it as self-pay")]


RULES = [
    Rule(RULE_ID, "review", "encounter", "coverage not active on the date of service (payer's eligibility answer "
         "or the EHR's plan dates)", inactive_on_dos, history=True, whole_history=True),
]


def read_eligibility(store: Store, mrns: Iterable[str]) -> dict[tuple[str, str], str]:
    """(mrn, dos) -> the latest answered status, for the patients in ``mrns``."""
    from agent.eligibility import statuses

    return statuses(store, list(mrns))
