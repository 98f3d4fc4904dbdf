"""A clearinghouse (and payer) simulator for tests: reads the 837P files ChargeBridge drops in an
outbound folder and answers in an inbound folder the way a clearinghouse does:

- a **999** per 837 file (005010X231A1): AK9*A for a well-formed file; for a broken one (an
  envelope that does not close, a segment count that is wrong, a claim whose total is not the sum
  of its lines) AK9*R with the IK3/IK5 error codes — and nothing else for that file;
- a **277CA** per accepted file (005010X214): one 2000D patient level per claim, TRN02 = CLM01,
  STC*A2:20 (accepted) or, for the claims the test names in ``reject``, STC*A7:<status>:<entity>
  (rejected for invalid information);
- an **835** per accepted file (005010X221A1) for the claims that were not rejected: paid in full
  (with the patient's share as PR-1/2/3 when the test gives one), partially paid (CO-151 for
  the amount the payer would not pay, or CO-45 above the fee schedule, which is paid under the
  contract), or denied (CLP02 4, CO-16 with LQ*HE N362 on the line).
  ``extra_claims`` adds CLPs for claims nobody sent (an answer that matches no claim).

Written from the X12 implementation guides' segment layouts (ISA/GS/ST envelopes, 2000A–2000D
HL levels, CLP/CAS/SVC/LQ), with its own small reader for the 837: it shares no code with
ChargeBridge's parsers, so a mistake there cannot hide behind the same mistake here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

# -- reading the 837 (our own reader, from the spec) ---------------------------------------------


@dataclass
class Line:
    charge: Decimal
    units: str
    code: str  # SV101 as sent, e.g. HC:99213:25
    control: str  # REF*6R


@dataclass
class Claim:
    clm01: str
    total: Decimal
    lines: list[Line] = field(default_factory=list)


@dataclass
class File837:
    name: str
    isa13: str
    gs06: str
    st02s: list[str]
    claims: list[Claim]
    errors: list[tuple[str, str, str]]  # (segment id, position, IK304 code) / ("", "", IK5 code)
    sender: str
    receiver: str


def read_837(name: str, data: bytes) -> File837:
    text = data.decode("latin-1")
    start = text.find("ISA")
    errors: list[tuple[str, str, str]] = []
    if start < 0 or len(text) < start + 106:
        return File837(name, "000000000", "0", ["0001"], [], [("ISA", "1", "3")], "", "")
    el, comp, term = text[start + 3], text[start + 104], text[start + 105]
    segs = [s.strip("\r\n ").split(el) for s in text[start:].split(term)]
    segs = [s for s in segs if s and s[0]]
    isa = segs[0]
    gs = next((s for s in segs if s[0] == "GS"), ["GS"] + [""] * 8)
    st02s: list[str] = []
    claims: list[Claim] = []
    cur_claim: Claim | None = None
    cur_line: Line | None = None
    st_at = 0
    for i, s in enumerate(segs):
        sid = s[0]
        if sid == "ST":
            st02s.append(s[2] if len(s) > 2 else "")
            st_at = i
        elif sid == "SE":
            if len(s) < 2 or s[1] != str(i - st_at + 1):
                errors.append(("", "", "4"))  # number of included segments does not match
        elif sid == "CLM":
            cur_claim = Claim(clm01=s[1], total=Decimal(s[2] or "0"))
            claims.append(cur_claim)
            cur_line = None
        elif sid == "SV1" and cur_claim is not None:
            cur_line = Line(charge=Decimal(s[2] or "0"), units=s[4] if len(s) > 4 else "1",
                            code=s[1].replace(comp, ":"), control="")
            cur_claim.lines.append(cur_line)
        elif sid == "REF" and cur_line is not None and len(s) > 2 and s[1] == "6R":
            cur_line.control = s[2]
    if not any(s[0] == "IEA" for s in segs):
        errors.append(("", "", "2"))  # trailer missing
    if not any(s[0] == "GE" for s in segs):
        errors.append(("", "", "2"))
    for c in claims:
        pos = next((str(i - st_at + 1) for i, s in enumerate(segs) if s[0] == "CLM" and s[1] == c.clm01), "0")
        if sum((ln.charge for ln in c.lines), Decimal(0)) != c.total or not c.lines:
            errors.append(("CLM", pos, "8"))  # segment has data element errors
    return File837(name=name, isa13=isa[13] if len(isa) > 13 else "", gs06=gs[6] if len(gs) > 6 else "",
                   st02s=st02s or ["0001"], claims=claims, errors=errors,
                   sender=isa[6].strip() if len(isa) > 6 else "", receiver=isa[8].strip() if len(isa) > 8 else "")


# -- writing the answers -------------------------------------------------------------------------


def _isa(sender: str, receiver: str, control: int, when: time.struct_time) -> str:
    return ("ISA*00*" + " " * 10 + "*00*" + " " * 10 + f"*ZZ*{sender:<15}*ZZ*{receiver:<15}*"
            f"{time.strftime('%y%m%d', when)}*{time.strftime('%H%M', when)}*^*00501*{control:09d}*0*T*:~")


def _envelope(kind: str, version: str, sender: str, receiver: str, control: int, body: list[str],
              when: time.struct_time) -> bytes:
    st = [f"ST*{kind}*0001*{version}", *body]
    st.append(f"SE*{len(st) + 1}*0001")
    functional_id = {"999": "FA", "277": "HN", "835": "HP"}[kind]
    segs = [_isa(sender, receiver, control, when).rstrip("~"),
            f"GS*{functional_id}*{sender}*{receiver}*{time.strftime('%Y%m%d', when)}*{time.strftime('%H%M', when)}"
            f"*{control}*X*{version}",
            *st, f"GE*1*{control}", f"IEA*1*{control:09d}"]
    return ("~\n".join(segs) + "~\n").encode()


def _m(d: Decimal) -> str:
    return f"{d.quantize(Decimal('0.01'))}"


@dataclass
class Outcome:
    """What the payer does with one claim."""

    kind: str = "paid"  # paid | partial | denied
    patient: tuple[str, Decimal] | None = None  # (CARC 1/2/3, amount) the patient owes
    allowed_ratio: Decimal = Decimal("0.8")  # partial: the share of the charge the payer allows
    # partial: the CARC (group CO) for the rest: 151 (frequency not supported) is a partial payment;
    # 45 (above the fee schedule) is the contract, so the claim counts as paid
    reduction: str = "151"


@dataclass
class Clearinghouse:
    outbound: Path
    inbound: Path
    reject: dict[str, str] = field(default_factory=dict)  # CLM01 -> STC status code (e.g. "562")
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # CLM01 -> payer decision (default paid)
    extra_claims: list[tuple[str, Decimal]] = field(default_factory=list)  # CLPs nobody sent
    sender: str = "CLEARINGHOUSE"
    next_control: int = 5000
    seen: set[str] = field(default_factory=set)
    answered: list[str] = field(default_factory=list)  # names of the files written

    def _ctl(self) -> int:
        self.next_control += 1
        return self.next_control

    def _write(self, name: str, data: bytes) -> None:
        self.inbound.mkdir(parents=True, exist_ok=True)
        tmp = self.inbound / f".{name}.part"
        tmp.write_bytes(data)
        tmp.rename(self.inbound / name)
        self.answered.append(name)

    def run(self, *, payment_date: str = "20260310") -> list[File837]:
        """Answer every 837 in ``outbound`` not answered before; the files read."""
        done: list[File837] = []
        for p in sorted(self.outbound.iterdir()):
            if not p.is_file() or p.name.startswith(".") or p.name in self.seen:
                continue
            self.seen.add(p.name)
            f = read_837(p.name, p.read_bytes())
            done.append(f)
            when = time.localtime()
            self._write(f"{p.stem}.999", self.ack_999(f, when))
            if f.errors:
                continue
            self._write(f"{p.stem}.277", self.ack_277ca(f, when))
            era = self.remit_835(f, when, payment_date)
            if era is not None:
                self._write(f"{p.stem}.835", era)
        return done

    def ack_999(self, f: File837, when: time.struct_time) -> bytes:
        body = [f"AK1*HC*{f.gs06}*005010X222A1"]
        for st02 in f.st02s:
            body.append(f"AK2*837*{st02}*005010X222A1")
            seg_errors = [e for e in f.errors if e[0]]
            set_errors = [e[2] for e in f.errors if not e[0]]
            for sid, pos, code in seg_errors:
                body.append(f"IK3*{sid}*{pos}**{code}")
                if code == "8":
                    body.append("IK4*2*782*7")  # CLM02 (data element 782): invalid value
            if seg_errors or set_errors:
                body.append("IK5*R*" + "*".join((set_errors or ["5"])[:5]))
            else:
                body.append("IK5*A")
        n = len(f.st02s)
        ok = 0 if f.errors else n
        body.append(f"AK9*{'A' if not f.errors else 'R'}*{n}*{n}*{ok}")
        return _envelope("999", "005010X231A1", self.sender, f.sender or "SUBMITTER", self._ctl(), body, when)

    def ack_277ca(self, f: File837, when: time.struct_time) -> bytes:
        day = time.strftime("%Y%m%d", when)
        total = sum((c.total for c in f.claims), Decimal(0))
        rejected = [c for c in f.claims if c.clm01 in self.reject]
        body = [f"BHT*0085*08*{f.isa13}*{day}*{time.strftime('%H%M', when)}*TH",
                "HL*1**20*1", "NM1*PR*2*SIMULATED PAYER*****PI*SIMPAYER", f"TRN*1*{f.gs06}",
                f"DTP*050*D8*{day}", f"DTP*009*D8*{day}",
                "HL*2*1*21*1", "NM1*41*2*SUBMITTER*****46*SUBMITTER", f"TRN*2*{f.isa13}",
                f"STC*A1:19*{day}*WQ*{_m(total)}",
                f"QTY*90*{len(f.claims) - len(rejected)}", f"QTY*AA*{len(rejected)}",
                f"AMT*YU*{_m(total - sum((c.total for c in rejected), Decimal(0)))}",
                f"AMT*YY*{_m(sum((c.total for c in rejected), Decimal(0)))}",
                "HL*3*2*19*1", "NM1*85*2*BILLING PROVIDER*****XX*1234567893"]
        hl = 3
        for i, c in enumerate(f.claims):
            hl += 1
            body += [f"HL*{hl}*3*PT", "NM1*QC*1*PATIENT*SIMULATED****MI*M" + str(i), f"TRN*2*{c.clm01}"]
            if c.clm01 in self.reject:
                body.append(f"STC*A7:{self.reject[c.clm01]}:85*{day}*U*{_m(c.total)}")
            else:
                body.append(f"STC*A2:20*{day}*WQ*{_m(c.total)}")
            body += [f"REF*1K*PCN{f.isa13}{i:04d}", f"REF*D9*CH{f.isa13}{i:04d}", f"DTP*472*D8*{day}"]
        return _envelope("277", "005010X214", self.sender, f.sender or "SUBMITTER", self._ctl(), body, when)

    def remit_835(self, f: File837, when: time.struct_time, payment_date: str) -> bytes | None:
        claims = [c for c in f.claims if c.clm01 not in self.reject]
        if not claims and not self.extra_claims:
            return None
        clps: list[str] = []
        total_paid = Decimal(0)
        for i, c in enumerate(claims):
            o = self.outcomes.get(c.clm01, Outcome())
            svcs: list[str] = []
            paid_sum = pr_sum = Decimal(0)
            pr_code, pr_amt = o.patient if o.patient else ("", Decimal(0))
            for ln in c.lines:
                svc_code = ln.code if ln.code.startswith(("HC:", "AD:", "ER:", "IV:", "N4:", "WK:")) else "HC:" + ln.code
                cas: list[str] = []
                lq: list[str] = []
                if o.kind == "denied":
                    paid = Decimal(0)
                    cas.append(f"CAS*CO*16*{_m(ln.charge)}")
                    lq.append("LQ*HE*N362")
                else:
                    allowed = ln.charge if o.kind == "paid" else (ln.charge * o.allowed_ratio).quantize(Decimal("0.01"))
                    if o.kind == "partial":
                        cas.append(f"CAS*CO*{o.reduction}*{_m(ln.charge - allowed)}")
                    share = min(pr_amt - pr_sum, allowed)  # the patient's share, line by line
                    if share:
                        cas.append(f"CAS*PR*{pr_code}*{_m(share)}")
                        pr_sum += share
                    paid = allowed - share
                paid_sum += paid
                svcs += [f"SVC*{svc_code}*{_m(ln.charge)}*{_m(paid)}**{ln.units}", f"DTM*472*{payment_date}", *cas]
                if ln.control:
                    svcs.append(f"REF*6R*{ln.control}")
                svcs += lq
            status = "4" if o.kind == "denied" else "1"
            clps += [f"CLP*{c.clm01}*{status}*{_m(c.total)}*{_m(paid_sum)}*{_m(pr_sum) if pr_sum else ''}*12*"
                     f"PAYER{f.isa13}{i:04d}*11*1",
                     "NM1*QC*1*PATIENT*SIMULATED****MI*M" + str(i), *svcs]
            total_paid += paid_sum
        for k, (ref, amount) in enumerate(self.extra_claims):
            clps += [f"CLP*{ref}*1*{_m(amount)}*{_m(amount)}**12*PAYERX{k:04d}*11*1",
                     "NM1*QC*1*PATIENT*UNKNOWN****MI*X" + str(k)]
            total_paid += amount
        body = [f"BPR*I*{_m(total_paid)}*C*CHK************{payment_date}", f"TRN*1*EFT{f.isa13}*1999999999",
                f"DTM*405*{payment_date}", "N1*PR*SIMULATED PAYER", "N3*1 PAYER WAY", "N4*ALBANY*NY*12207",
                "PER*BL*CLAIMS*TE*5185550100", "N1*PE*BILLING PROVIDER*XX*1234567893", "LX*1", *clps]
        self.extra_claims = []  # once
        return _envelope("835", "005010X221A1", self.sender, f.sender or "SUBMITTER", self._ctl(), body, when)
