"""Charge capture rules: what payers deny, what coders fix, and money left on the table.

Each rule is a small documented unit (:class:`Rule`) in one module per family (``dx``, ``units``,
``modifiers``, ``setting``, ``history``, ``coverage``): an id such as ``units.mue``, a
default severity, what it looks at, and a check that returns :class:`Hit` s a coder understands
(which line, which code, why, what to do). :class:`RuleSet` applies the practice's ``[rules]``
settings (on/off, severity per rule) and stamps every finding with :data:`PACK_VERSION`, so a
finding always says which version of the rules produced it.

Severities: ``info`` (a suggestion; never holds an encounter, never billed), ``review`` (a coder
looks before it is sent) and ``error`` (a payer will deny it as it is). ``review`` and ``error``
hold the encounter in ``needs_review`` until a coder approves, edits or rejects it.

Rules split by what they need. *Encounter rules* look at one encounter and tables loaded once
(ICD-10-CM facts, the MUE table): they run in :meth:`agent.pipeline.Pipeline.prepare`, also in
parse workers. *History rules* compare with the patient's other encounters (duplicates, chronic
care in the month, wellness visits in a year): they run where the store is, just before the
encounters are written, over a :class:`History` read once per batch.

Messages name codes and positions, never patient data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from core.model import Encounter, Finding
from core.states import Severity

if TYPE_CHECKING:
    from agent.store import Store

PACK_VERSION = "2026.06-4"  # bump whenever a rule, a table or a default severity changes
SEVERITIES = (Severity.INFO.value, Severity.REVIEW.value, Severity.ERROR.value)
HOLDS = frozenset({Severity.REVIEW.value, Severity.ERROR.value})


class RulesSettings(Protocol):
    """What the rules read of ``[rules]`` (:class:`agent.config.RulesConfig`; not imported here:
    the config validates rule ids against :data:`RULES`, so it imports this package)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def disabled(self) -> frozenset[str]: ...
    @property
    def severity(self) -> dict[str, str]: ...


class Hit(NamedTuple):  # a tuple: made and hashed per finding in a re-run, 3x cheaper than a dataclass
    """One thing a rule found: where (``field``; ``line`` = 0-based charge line or -1), why, and
    what to do. ``message`` and ``fix`` may name codes, never patient data."""

    field: str
    message: str
    fix: str = ""
    line: int = -1


@dataclass(frozen=True)
class Facts:
    """What an encounter rule may read besides the encounter: the MUE table and today."""

    mue: dict[str, int] = field(default_factory=dict)
    today: date | None = None


@dataclass
class Visit:
    """Another encounter of the same patient, as the history rules see it (no patient data)."""

    key: str
    dos: str
    codes: Sequence[str]
    dx: Sequence[str]


@dataclass
class History:
    """The patient's other encounters by MRN, read once per batch (or once per re-run)."""

    visits: dict[str, list[Visit]] = field(default_factory=dict)
    # (mrn, dos) -> the latest answered eligibility status (agent/eligibility.py), for the rules
    # that read payer answers (``coverage.inactive_on_dos``)
    eligibility: dict[tuple[str, str], str] = field(default_factory=dict)

    def of(self, mrn: str, key: str) -> list[Visit]:
        return [v for v in self.visits.get(mrn, ()) if v.key != key]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # the default: info | review | error
    applies_to: str  # diagnoses | lines | encounter | history
    summary: str  # one line for `chargebridge rules list` and the window
    check: Callable[..., Iterable[Hit]]
    history: bool = False  # needs the patient's other encounters (runs where the store is)
    opportunity: bool = False  # a suggestion (care-opportunity alert), never billed
    whole_history: bool = False  # history rule whose check takes the whole History, not the other visits


@dataclass
class RuleFinding(Finding):
    """A :class:`core.model.Finding` from a rule: the rule id is its ``code``."""

    fix: str = ""
    line: int = -1
    rule_version: str = PACK_VERSION
    kind: str = "rule"  # rule | opportunity

    def to_dict(self) -> dict[str, Any]:  # same keys as asdict, without its deep copies (10x faster)
        return {"code": self.code, "field": self.field, "message": self.message, "severity": self.severity,
                "fix": self.fix, "line": self.line, "rule_version": self.rule_version, "kind": self.kind}


RULES: dict[str, Rule] = {}  # filled at the end of this module, once the types the rule modules use exist


def rule_ids() -> list[str]:
    return list(RULES)


class RuleSet:
    """The rules a practice turned on, with their severities, and the tables they read."""

    def __init__(self, *, disabled: Iterable[str] = (), severity: dict[str, str] | None = None,
                 mue: dict[str, int] | None = None, today: date | None = None, version: str = PACK_VERSION) -> None:
        self.version = version  # stamped on every finding (another value only in tests and benchmarks)
        self.disabled = frozenset(disabled)
        self.severity = {rid: (severity or {}).get(rid, r.severity) for rid, r in RULES.items()}
        self.facts = Facts(mue=dict(mue or {}), today=today)
        self.local = [r for r in RULES.values() if not r.history and r.id not in self.disabled]
        self.historic = [r for r in RULES.values() if r.history and r.id not in self.disabled]
        self.owned = frozenset(RULES)  # validator findings with these codes yield to the rule
        self._index: dict[str, dict[Hit, int]] = {r: {} for r in RULES}  # :meth:`run`'s distinct findings
        self._local_plan = [(r, self._index[r.id], r.check, self.severity[r.id] in HOLDS) for r in self.local]
        self._history_plan = [(r, self._index[r.id], r.check, self.severity[r.id] in HOLDS, r.whole_history)
                              for r in self.historic]
        self.bodies: list[str] = []

    @classmethod
    def for_config(cls, store: Store | None, cfg: RulesSettings) -> RuleSet | None:
        """``None`` when ``[rules] enabled = false``; else the practice's rules and MUE table."""
        if not cfg.enabled:
            return None
        return cls(disabled=cfg.disabled, severity=cfg.severity, mue=load_mue(store) if store else {})

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": r.id, "severity": self.severity[r.id], "default_severity": r.severity,
                 "enabled": r.id not in self.disabled, "applies_to": r.applies_to, "summary": r.summary,
                 "opportunity": r.opportunity, "version": PACK_VERSION} for r in RULES.values()]

    # -- running -------------------------------------------------------------------------------
    def _finding(self, rule: Rule, hit: Hit) -> RuleFinding:
        return RuleFinding(rule.id, hit.field, hit.message, self.severity[rule.id], fix=hit.fix, line=hit.line,
                           rule_version=self.version, kind="opportunity" if rule.opportunity else "rule")

    def apply_local(self, enc: Encounter | EncounterFacts, findings: list[Finding]) -> list[Finding]:
        """``findings`` (from standardize + validate) with the encounter rules' findings added. A
        validator finding a rule owns (``dx.not_billable``) is replaced by the rule's, so the
        practice's severity applies to it."""
        out = [f for f in findings if f.code not in self.owned]
        if isinstance(enc, Encounter):
            if enc.kind != "charge":
                return out
            enc = EncounterFacts.of(enc)
        facts = self.facts
        for rule in self.local:
            for hit in rule.check(enc, facts):
                out.append(self._finding(rule, hit))
        return out

    def apply_history(self, enc_facts: EncounterFacts, history: History) -> list[RuleFinding]:
        others = history.of(enc_facts.mrn, enc_facts.key)
        return [self._finding(rule, hit) for rule in self.historic
                for hit in rule.check(enc_facts, history if rule.whole_history else others)]

    def run(self, x: EncounterFacts, history: History) -> tuple[tuple[int, ...], bool]:
        """Every rule over one encounter: its findings, as indexes into :attr:`bodies` (each
        distinct finding's stored JSON, made once: the same code on the same line reads the same on
        every encounter), and whether they hold it. The re-run's path: the same checks as
        :meth:`apply_local` + :meth:`apply_history`."""
        found: list[int] = []
        hold = False
        facts = self.facts
        for rule, index, check, holding in self._local_plan:
            for hit in check(x, facts):
                i = index.get(hit)
                found.append(self._add(rule, hit) if i is None else i)
                hold = hold or holding
        if self._history_plan:
            others = history.of(x.mrn, x.key)
            for rule, index, check, holding, whole in self._history_plan:
                for hit in check(x, history if whole else others):
                    i = index.get(hit)
                    found.append(self._add(rule, hit) if i is None else i)
                    hold = hold or holding
        return tuple(found), hold

    def _add(self, rule: Rule, hit: Hit) -> int:
        i = self._index[rule.id][hit] = len(self.bodies)
        self.bodies.append(body(self._finding(rule, hit).to_dict()))
        return i


def body(finding: dict[str, Any]) -> str:
    """One finding as stored (``rule_texts.body``): compact JSON, the same text for the same finding."""
    return json.dumps(finding, separators=(",", ":"))


FACTS_FORMAT = 2  # bump when EncounterFacts changes shape: stored inputs of another format are rebuilt


class EncounterFacts(NamedTuple):
    """Everything the rules read of one charge encounter, and nothing else (no names, no
    addresses): codes, units, modifiers, pointers, diagnoses, dates, sex, place of service, what
    the coverage and the documentation say. Built from an :class:`Encounter` at ingest, kept in
    the store as compact JSON (:meth:`to_json`), read back by a re-run (:meth:`from_json`)
    without decoding the encounter; small enough to cross processes.

    Lines and diagnoses are columns (``codes[i]``, ``units[i]``, ``modifiers[i]`` ... are line
    ``i``): read back from JSON as they are, with no object per line."""

    key: str
    mrn: str
    dos: str
    sex: str
    dob: str
    medicare: bool
    codes: Sequence[str]  # per charge line
    dx: Sequence[str]  # diagnosis codes, in order
    coverage_dates: Sequence[Sequence[str]] = ()  # (start, end) per coverage, "" when the EHR sent none
    pos: str = ""
    covered: bool = True  # any coverage with a payer or a member id
    modifiers: Sequence[Sequence[str]] = ()  # per charge line
    units: Sequence[str] = ()  # per charge line, as stored (a checked decimal text)
    dates: Sequence[str] = ()  # per charge line: its own date of service, "" when it is the encounter's
    pointers: Sequence[Sequence[int]] = ()  # per charge line: its diagnosis pointers
    dx_systems: Sequence[str] = ()  # per diagnosis: its code system
    ordered: Collection[str] = ()  # order / result codes the source carried (upper case)
    minutes: int = 0  # the visit's length, when the source gave one

    @classmethod
    def of(cls, enc: Encounter) -> EncounterFacts:
        p, covs, lines, dxs = enc.patient, enc.coverages, enc.lines, enc.diagnoses
        ev = enc.evidence  # list comprehensions: generator expressions cost 2x here
        return cls(enc.business_key, p.mrn, enc.dos_start, p.sex, p.dob,
                   "MEDICARE" in " ".join([c.payer_name for c in covs]).upper(),
                   [ln.code for ln in lines], [d.code for d in dxs], [[c.start, c.end] for c in covs],
                   enc.place_of_service or "", any(c.payer_name or c.payer_id or c.member_id for c in covs),
                   [list(ln.modifiers) for ln in lines], [ln.units for ln in lines],
                   [ln.service_date or "" for ln in lines], [list(ln.dx_pointers) for ln in lines],
                   [d.system for d in dxs],
                   sorted({e.code.upper() for e in ev if e.kind in ("order", "result")}) if ev else [],
                   max([e.minutes for e in ev if e.kind == "time"], default=0) if ev else 0)

    def to_json(self) -> str:
        return json.dumps([FACTS_FORMAT, *self], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EncounterFacts | None:
        """The facts a :meth:`to_json` wrote; ``None`` for text of another format or no facts at
        all (the caller rebuilds them from the encounter)."""
        try:
            v = json.loads(text)
        except ValueError:
            return None
        if type(v) is not list or len(v) != _FIELDS or v[0] != FACTS_FORMAT:
            return None
        return cls._make(v[1:])

    def visit(self) -> Visit:
        return Visit(self.key, self.dos, self.codes, self.dx)


_FIELDS = 1 + len(EncounterFacts._fields)


def holds(findings: Iterable[Finding]) -> bool:
    """Any finding that keeps the encounter from being sent (validation error, rule review/error)."""
    return any(f.severity in HOLDS for f in findings)


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([f.to_dict() for f in findings])


def load_mue(store: Store) -> dict[str, int]:
    """The imported MUE table (``chargebridge rules import-mue FILE``): code -> max units per day."""
    try:
        return {str(c): int(n) for c, n in store.conn.execute("SELECT code, max_units FROM rule_mue")}
    except Exception:  # a store from before migration 7 (opened read-only elsewhere): no table yet
        return {}


def _load_rules() -> list[Rule]:
    from agent.rules import coverage, dx, history, modifiers, setting, units

    return [*dx.RULES, *units.RULES, *modifiers.RULES, *setting.RULES, *history.RULES, *coverage.RULES]


RULES.update((r.id, r) for r in _load_rules())
