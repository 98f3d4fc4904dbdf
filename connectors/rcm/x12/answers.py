"""What the clearinghouse and the payer answer, read from X12 files into :class:`core.answers.Answer`.

=========  ==================================================================================
999        one answer per acknowledged functional group (AK1: the 837's GS06): accepted (AK9 A/E)
           or rejected (R); a partly accepted group (P) gives one answer per transaction set
           (AK2 + IK5). IK3/IK4/IK5/AK9 error codes become ``ak`` reasons.
277CA      one answer per claim (2000D patient level): the claim ref is TRN02 (our CLM01 echoed),
           the payer's claim number REF*1K; STC category A0/A1/A2/A5 -> accepted, A3/A4/A6/A7/A8
           -> rejected; every STC composite (and the line-level ones) becomes an ``stc`` reason.
835        one answer per CLP: CLP01 claim ref, CLP02 status, CLP03 billed, CLP04 paid, CLP05
           patient responsibility, CLP07 payer claim number; CAS group/CARC/amount triplets at
           claim and service level -> ``carc`` reasons; LQ*HE/RM and MOA remark codes -> ``rarc``;
           SVC lines with REF*6R line control numbers in ``detail["lines"]``.
=========  ==================================================================================

835 states: CLP02 4 -> denied; processed (1/2/3/19/20/21) with nothing paid and an adjustment
that is not the patient's -> denied; a service line paid nothing for a payer-side reason ->
partially_paid; paid + patient responsibility + contractual write-offs (CO-45 fee schedule,
CO-253 sequestration) >= billed -> paid; else partially_paid. A reversal (22) and the other
statuses (pended, forwarded, predetermination) carry no state: they are kept with the claim, its
state stays.

Fingerprints: sender + interchange control + group + transaction set + position + a hash of the
answer's own segments, so the same file imported twice is recognised, and two answers that only
differ in content are not. Nothing here logs or raises with patient data (NM1*QC is never read).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from connectors.rcm.x12.segments import (
    DEFAULT_BUDGET,
    Budget,
    Delimiters,
    Interchange,
    X12FormatError,
    element,
    tokenize,
)
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState

__all__ = ["ParsedFile", "X12FormatError", "parse", "state_835"]

ACCEPTED_CATEGORIES = frozenset({"A0", "A1", "A2", "A5"})
REJECTED_CATEGORIES = frozenset({"A3", "A4", "A6", "A7", "A8"})
PROCESSED_835 = frozenset({"1", "2", "3", "19", "20", "21"})
MAX_AMOUNT = Decimal("9999999999.99")


@dataclass
class ParsedFile:
    """The answers of one file, the kinds of transaction sets it held, and what the envelope
    checks noticed but could live with (no patient data in either)."""

    answers: list[Answer] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, kind: AnswerKind) -> int:
        return sum(1 for a in self.answers if a.kind == kind)


def parse(data: bytes | str, *, budget: Budget = DEFAULT_BUDGET) -> ParsedFile:
    """Every answer in one 999 / 277CA / 835 file. Raises :class:`X12FormatError` for anything
    else (an 837, a 270, a broken file) — before any answer is returned, so a file is applied
    whole or not at all."""
    out = ParsedFile()
    for ic in tokenize(data, budget=budget):
        out.warnings += ic.warnings
        for gs, st, body, pos in _transactions(ic):
            kind = element(st, 1)
            if kind == "999":
                out.answers += _parse_999(ic, gs, st, body)
            elif kind == "277":
                out.answers += _parse_277(ic, gs, st, body, pos)
            elif kind == "835":
                out.answers += _parse_835(ic, gs, st, body, pos)
            else:
                raise X12FormatError(
                    f"transaction set {kind or '(none)'} is not an answer ChargeBridge reads",
                    "import only 999, 277CA and 835 files; 837 files are what ChargeBridge sends")
            if kind not in out.kinds:
                out.kinds.append(kind)
    if not out.kinds:
        raise X12FormatError("the file holds no transaction set", "ask the clearinghouse to send it again")
    return out


def _transactions(ic: Interchange) -> list[tuple[list[str], list[str], list[list[str]], int]]:
    """(GS, ST, the segments between ST and SE, ST's position) for every transaction set."""
    out: list[tuple[list[str], list[str], list[list[str]], int]] = []
    gs: list[str] = []
    st: list[str] | None = None
    body: list[list[str]] = []
    start = 0
    for i, seg in enumerate(ic.segments):
        sid = seg[0]
        if sid == "GS":
            gs = seg
        elif sid == "ST":
            st, body, start = seg, [], i
        elif sid == "SE":
            if st is not None:
                out.append((gs, st, body, start))
            st = None
        elif st is not None:
            body.append(seg)
    return out


def _fp(ic: Interchange, gs: list[str], st: list[str], where: str, segs: list[list[str]]) -> str:
    h = hashlib.sha256()
    for s in segs:
        h.update("*".join(s).encode())
        h.update(b"~")
    head = "\x1f".join((ic.sender, ic.control, element(gs, 6), element(st, 2), where, h.hexdigest()))
    return hashlib.sha256(head.encode()).hexdigest()


def _date(value: str) -> str:
    """CCYYMMDD -> ISO date ("" when it is not one)."""
    if len(value) == 8 and value.isdigit():
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
        except ValueError:
            return ""
    return ""


def _amount(value: str, what: str) -> Decimal:
    """An X12 ``R`` amount, checked: a number within budget, or an error naming the element."""
    got = _read_amount(value)
    if isinstance(got, str):
        raise X12FormatError(f"{what} {got}", "ask the clearinghouse to send the file again")
    return got


@lru_cache(maxsize=16384)
def _read_amount(value: str) -> Decimal | str:
    """The amount, or why it is not one (cached: remittances repeat the same amounts a lot)."""
    if value == "":
        return Decimal(0)
    if len(value) > 18:
        return "is not an amount (too long)"
    try:
        d = Decimal(value)
    except InvalidOperation:
        return "is not an amount"
    if not d.is_finite() or abs(d) > MAX_AMOUNT:
        return "is out of range"
    return d


def _money(d: Decimal) -> str:
    return format(d, ".2f")


# -- 999 -----------------------------------------------------------------------------------------

def _parse_999(ic: Interchange, gs: list[str], st: list[str], body: list[list[str]]) -> list[Answer]:
    answers: list[Answer] = []
    ak1: list[str] | None = None
    group_segs: list[list[str]] = []
    sets: list[dict[str, Any]] = []  # per AK2: {"st": ..., "code": IK501, "reasons": [...], "segs": [...]}
    group_reasons: list[Reason] = []
    cur: dict[str, Any] | None = None
    seg_id = ""

    def close_group(ak9: list[str]) -> None:
        assert ak1 is not None
        control = element(ak1, 2)
        code = element(ak9, 1)
        for c in ak9[5:10]:
            if c:
                group_reasons.append(Reason(kind="ak", code=f"AK9:{c}"))
        base = {"interchange": ic.control, "group": element(gs, 6), "transaction": element(st, 2),
                "acknowledged_group": control, "functional_id": element(ak1, 1), "ak9": code,
                "sets": {"included": element(ak9, 2), "received": element(ak9, 3), "accepted": element(ak9, 4)}}
        if code == "P":
            for n, s in enumerate(sets):
                set_state = ClaimState.ACCEPTED if s["code"] in ("A", "E") else ClaimState.REJECTED
                answers.append(Answer(kind=AnswerKind.ACK_999, group_control=control, state=set_state,
                                      fingerprint=_fp(ic, gs, st, f"{control}/{n}", s["segs"]),
                                      reasons=s["reasons"], answered_on=_date(element(gs, 4)),
                                      detail={**base, "acknowledged_set": s["st"], "ik5": s["code"]}))
        else:
            state = ClaimState.ACCEPTED if code in ("A", "E") else ClaimState.REJECTED if code in ("R", "M", "W", "X") \
                else None
            reasons = [r for s in sets for r in s["reasons"]] + group_reasons
            answers.append(Answer(kind=AnswerKind.ACK_999, group_control=control, state=state,
                                  fingerprint=_fp(ic, gs, st, control, group_segs), reasons=reasons,
                                  answered_on=_date(element(gs, 4)), detail=base))

    for seg in body:
        sid = seg[0]
        if sid == "AK1":
            ak1, group_segs, sets, group_reasons, cur = seg, [seg], [], [], None
            continue
        if ak1 is None:
            continue
        group_segs.append(seg)
        if sid == "AK2":
            cur = {"st": element(seg, 2), "code": "", "reasons": [], "segs": [seg]}
            sets.append(cur)
        elif sid == "IK3" and cur is not None:
            cur["segs"].append(seg)
            seg_id = element(seg, 1)
            cur["reasons"].append(Reason(kind="ak", code=f"IK3:{element(seg, 4)}",
                                         text=f"segment {seg_id} at position {element(seg, 2)}"))
        elif sid == "IK4" and cur is not None:
            cur["segs"].append(seg[:4])  # IK404 copies the bad value (may be patient data): never kept
            where = element(seg, 1).split(ic.delimiters.component)[0]
            cur["reasons"].append(Reason(kind="ak", code=f"IK4:{element(seg, 3)}",
                                         text=f"element {seg_id}{where.zfill(2)}" if seg_id else f"element {where}"))
        elif sid == "IK5" and cur is not None:
            cur["segs"].append(seg)
            cur["code"] = element(seg, 1)
            for c in seg[2:7]:
                if c:
                    cur["reasons"].append(Reason(kind="ak", code=f"IK5:{c}"))
        elif sid == "AK9":
            close_group(seg)
            ak1 = None
    if ak1 is not None:
        raise X12FormatError("a 999 acknowledges a group (AK1) without its AK9 result",
                             "ask the clearinghouse to send the file again")
    return answers


# -- 277CA ---------------------------------------------------------------------------------------

def _stc_reasons(seg: list[str], d: Delimiters) -> tuple[list[Reason], list[str]]:
    """Reasons and categories of one STC: STC01, STC10 and STC11 are category:status[:entity]."""
    reasons: list[Reason] = []
    cats: list[str] = []
    for i in (1, 10, 11):
        comp = element(seg, i)
        if not comp:
            continue
        parts = comp.split(d.component)
        cats.append(parts[0])
        reasons.append(Reason(kind="stc", code=":".join(p for p in parts[:3] if p),
                              amount=element(seg, 4) if i == 1 else ""))
    return reasons, cats


def _parse_277(ic: Interchange, gs: list[str], st: list[str], body: list[list[str]], pos: int) -> list[Answer]:
    answers: list[Answer] = []
    d = ic.delimiters
    # split into HL blocks; the patient (or subscriber-as-patient) level carries the claim
    blocks: list[tuple[list[str], list[list[str]]]] = []
    for seg in body:
        if seg[0] == "HL":
            blocks.append((seg, [seg]))
        elif blocks:
            blocks[-1][1].append(seg)
    levels = {element(hl, 1): element(hl, 3) for hl, _ in blocks}
    for n, (hl, segs) in enumerate(blocks):
        code = element(hl, 3)
        if code not in ("PT", "22", "23"):
            continue
        if code == "22" and any(levels.get(element(h, 2)) == element(hl, 1) and element(h, 3) == "PT"
                                for h, _ in blocks):
            continue  # a subscriber with its own patient level below: the claim is there
        # a 2000D level may hold several claims (one TRN per 2200D): split on TRN
        claims: list[list[list[str]]] = []
        for seg in segs[1:]:
            if seg[0] == "TRN":
                claims.append([seg])
            elif claims:
                claims[-1].append(seg)
        for k, csegs in enumerate(claims):
            claim_ref = element(csegs[0], 2)
            reasons: list[Reason] = []
            cats: list[str] = []
            lines: list[dict[str, Any]] = []
            line: dict[str, Any] | None = None
            payer_claim = trace = ""
            answered = ""
            for seg in csegs[1:]:
                sid = seg[0]
                if sid == "SVC":
                    line = {"code": element(seg, 1), "billed": element(seg, 2), "reasons": [], "control": ""}
                    lines.append(line)
                elif sid == "STC":
                    rs, cs = _stc_reasons(seg, d)
                    if line is None:
                        reasons += rs
                        cats += cs
                        answered = answered or _date(element(seg, 2))
                    else:
                        line["reasons"] += [r.__dict__ for r in rs]
                        reasons += rs
                        cats += cs
                elif sid == "REF":
                    q = element(seg, 1)
                    if line is not None and q == "FJ":
                        line["control"] = element(seg, 2)
                    elif q == "1K":
                        payer_claim = element(seg, 2)
                    elif q == "D9":
                        trace = element(seg, 2)
            if not claim_ref:
                raise X12FormatError(f"a 277CA claim (HL {element(hl, 1)}) has no TRN02 claim reference",
                                     "ask the clearinghouse to send the file again")
            if any(c in REJECTED_CATEGORIES for c in cats):
                state: ClaimState | None = ClaimState.REJECTED
            elif any(c in ACCEPTED_CATEGORIES for c in cats):
                state = ClaimState.ACCEPTED
            else:
                state = None  # pended / finalized / request-for-information: kept, no stage change
            answers.append(Answer(
                kind=AnswerKind.CA_277, claim_ref=claim_ref, state=state, payer_claim_id=payer_claim,
                fingerprint=_fp(ic, gs, st, f"{pos}/{n}/{k}", csegs), reasons=reasons,
                answered_on=answered or _date(element(gs, 4)),
                detail={"interchange": ic.control, "group": element(gs, 6), "transaction": element(st, 2),
                        "categories": cats, "clearinghouse_trace": trace, "lines": lines}))
    return answers


# -- 835 -----------------------------------------------------------------------------------------

# Adjustments that are the contract, not a shortfall: the charge above the fee schedule (45) and
# sequestration (253). A claim paid at the contracted amount is paid, not "partially paid" — the
# same reading as a FHIR ClaimResponse whose benefit covers the eligible amount.
CONTRACTUAL_CARCS = frozenset({"45", "253"})


def state_835(status: str, billed: Decimal, paid: Decimal, patient_resp: Decimal,
              reasons: list[Reason], *, line_denied: bool = False) -> ClaimState | None:
    """The claim state an 835 CLP says (see the module text). ``reasons``: every adjustment on
    the claim and its lines; ``line_denied``: a service line was paid nothing for a reason that
    is not the patient's."""
    if status == "4":
        return ClaimState.DENIED
    if status not in PROCESSED_835:
        return None
    payer_side = [r for r in reasons if r.kind == "carc" and r.group != "PR"]
    if paid <= 0 and payer_side:
        return ClaimState.DENIED
    if line_denied:
        return ClaimState.PARTIALLY_PAID
    shortfall = billed - paid - patient_resp
    if shortfall <= 0:
        return ClaimState.PAID
    contractual = sum((Decimal(r.amount or 0) for r in payer_side
                       if r.group == "CO" and r.code in CONTRACTUAL_CARCS), Decimal(0))
    return ClaimState.PAID if contractual >= shortfall else ClaimState.PARTIALLY_PAID


def _cas(seg: list[str], what: str) -> list[Reason]:
    """CAS01 group, then up to six reason/amount/quantity triplets."""
    group = element(seg, 1)
    out: list[Reason] = []
    for i in range(2, 20, 3):
        code = element(seg, i)
        if not code:
            continue
        amt = _amount(element(seg, i + 1), f"{what} CAS{i + 1:02d}")
        out.append(Reason(kind="carc", code=code, group=group, amount=_money(amt)))
    if not out:
        raise X12FormatError(f"{what} has a CAS segment without a reason code",
                             "ask the clearinghouse to send the file again")
    return out


def _parse_835(ic: Interchange, gs: list[str], st: list[str], body: list[list[str]], pos: int) -> list[Answer]:
    pay_date = check = ""
    payer = ""
    claims: list[list[list[str]]] = []
    in_claims = False
    for seg in body:
        sid = seg[0]
        if sid == "CLP":
            claims.append([seg])
            in_claims = True
        elif sid in ("PLB", "SE"):
            in_claims = False
        elif in_claims and sid not in ("LX", "TS3", "TS2"):
            claims[-1].append(seg)
        elif not in_claims:
            if sid == "BPR":
                pay_date = _date(element(seg, 16))
            elif sid == "TRN" and not check:
                check = element(seg, 2)
            elif sid == "DTM" and element(seg, 1) == "405" and not pay_date:
                pay_date = _date(element(seg, 2))
            elif sid == "N1" and element(seg, 1) == "PR":
                payer = element(seg, 2)
    # the production date when the payment has none (BPR16 is required; DTM*405 is its fallback)
    answers: list[Answer] = []
    for n, csegs in enumerate(claims):
        clp = csegs[0]
        ref = element(clp, 1)
        where = f"claim {n + 1} of transaction set {element(st, 2) or '?'}"
        if not ref:
            raise X12FormatError(f"{where} has no CLP01 claim reference",
                                 "ask the clearinghouse to send the file again")
        status = element(clp, 2)
        billed = _amount(element(clp, 3), f"{where} CLP03")
        paid = _amount(element(clp, 4), f"{where} CLP04")
        pr = _amount(element(clp, 5), f"{where} CLP05")
        reasons: list[Reason] = []
        lines: list[dict[str, Any]] = []
        line: dict[str, Any] | None = None
        adjusted = Decimal(0)
        for seg in csegs[1:]:
            sid = seg[0]
            if sid == "SVC":
                line = {"code": element(seg, 1).replace(ic.delimiters.component, ":"),
                        "billed": _money(_amount(element(seg, 2), f"{where} SVC02")),
                        "paid": _money(_amount(element(seg, 3), f"{where} SVC03")),
                        "units": element(seg, 5) or "1", "control": "", "reasons": [], "service_date": ""}
                lines.append(line)
            elif sid == "CAS":
                rs = _cas(seg, where)
                for r in rs:
                    if r.group != "PR":
                        adjusted += Decimal(r.amount)
                reasons += rs
                if line is not None:
                    line["reasons"] += [r.__dict__ for r in rs]
            elif sid == "LQ" and element(seg, 1) in ("HE", "RM"):
                r = Reason(kind="rarc", code=element(seg, 2))
                reasons.append(r)
                if line is not None:
                    line["reasons"].append(r.__dict__)
            elif sid == "MOA" and line is None:
                reasons += [Reason(kind="rarc", code=c) for c in seg[3:8] if c]
            elif sid == "MIA" and line is None:
                reasons += [Reason(kind="rarc", code=c) for c in [element(seg, 5), *seg[20:25]] if c]
            elif sid == "REF" and line is not None and element(seg, 1) == "6R":
                line["control"] = element(seg, 2)
            elif sid == "DTM" and line is not None and element(seg, 1) in ("472", "150"):
                line["service_date"] = _date(element(seg, 2))
        line_denied = any(Decimal(ln["billed"]) > 0 and Decimal(ln["paid"]) == 0
                          and any(r.get("kind") == "carc" and r.get("group") != "PR" for r in ln["reasons"])
                          for ln in lines)
        state = state_835(status, billed, paid, pr, reasons, line_denied=line_denied)
        detail: dict[str, Any] = {
            "interchange": ic.control, "group": element(gs, 6), "transaction": element(st, 2), "status": status,
            "billed": _money(billed), "check": check, "payer": payer, "lines": lines}
        if status == "22":
            detail["reversal"] = True
        answers.append(Answer(
            kind=AnswerKind.RA_835, claim_ref=ref, state=state, paid=_money(paid), adjusted=_money(adjusted),
            patient_resp=_money(pr), payer_claim_id=element(clp, 7), reasons=reasons,
            fingerprint=_fp(ic, gs, st, f"{pos}/{n}", csegs), answered_on=pay_date or _date(element(gs, 4)),
            detail=detail))
    return answers
