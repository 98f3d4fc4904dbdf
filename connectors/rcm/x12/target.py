"""The ``x12`` RCM target: charges go to a clearinghouse as 837P files (``[rcm] type = "x12"``).

One push = one interchange. Exactly once, the X12 way:

- the claim id (CLM01) is deterministic from the encounter's business key, and line control
  numbers (REF*6R) from the claim id and the EHR's line id;
- the interchange control number comes from the engine's ledger for a *batch key* (the members'
  business keys, content hashes and correction data): a batch sent again after a failed upload
  gets the same ISA13 / GS06 and the same file name, so the far end sees the same interchange
  (replaced in place by the atomic rename, or refused as a duplicate by the clearinghouse);
- every file is validated with pyx12 before it leaves. A file that fails never leaves: the
  claims the validator's errors point at come back rejected with its message, and a new file
  without them is written (with its own control number) and validated again; an error outside
  any claim (envelope, headers) rejects the whole batch.

Answers (999 / 277CA / 835) come back through the inbound location; reading them is not this
module's job (``fetch_charges`` returns nothing: reconciliation of an X12 channel reads the
claim lifecycle instead).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from connectors.rcm.base import ControlLedger, PushResult, RemoteCharge, TargetError, TargetSettings
from connectors.rcm.x12.transport import FolderTransport, Transport, open_transport
from connectors.rcm.x12.validate import Issue, summary, validate
from connectors.rcm.x12.writer837 import (
    FREQ_CORRECTION,
    FREQ_ORIGINAL,
    Batch,
    ClaimError,
    ClaimInput,
    Envelope,
    Practice,
    claim_id,
    write_837,
)
from core.errors import ConfigError
from core.model import Encounter, content_hash
from core.states import TargetErrorKind

log = logging.getLogger("chargebridge.rcm.x12")

NAME = "x12"
KIND_837P = "837P"


def file_name(control: int) -> str:
    return f"837P-{control:09d}.x12"


def practice_of(d: Mapping[str, Any]) -> Practice:
    addr = d.get("address") or {}
    return Practice(name=str(d.get("name", "")), npi=str(d.get("npi", "")), tax_id=str(d.get("tax_id", "")),
                    street=str(addr.get("street", "")), city=str(addr.get("city", "")),
                    state=str(addr.get("state", "")), zip=str(addr.get("zip", "")), phone=str(d.get("phone", "")),
                    taxonomy=str(d.get("taxonomy", "")), pos=str(d.get("pos", "") or "11"))


def batch_key(items: Sequence[ClaimInput]) -> str:
    """Same members with the same content and correction data => same key (=> same ISA13)."""
    parts = sorted(f"{c.encounter.business_key}\x1f{content_hash(c.encounter.to_json())}\x1f{c.frequency}"
                   f"\x1f{c.payer_claim_id}" for c in items)
    return hashlib.sha256("\x1e".join(parts).encode("utf-8")).hexdigest()


class X12Target:
    """Writes 837P batches to the outbound location (a folder or SFTP)."""

    name = NAME

    def __init__(self, practice: Practice, x12: Mapping[str, Any], *, ledger: ControlLedger | None, secret: str = "",
                 timeout: float = 30.0) -> None:
        self.practice = practice
        self.x12 = dict(x12)
        self.ledger = ledger
        self.secret = secret
        self.timeout = timeout
        self.outbound = str(self.x12.get("outbound", ""))
        self.inbound = str(self.x12.get("inbound", ""))
        if not self.outbound:
            raise ConfigError("[x12] outbound is not set", "the folder or sftp://user@host:port/dir the clearinghouse "
                              "picks 837 files up from", key="x12.outbound")

    # -- the Target protocol ------------------------------------------------------------------
    def identifier(self, enc: Encounter) -> str:
        return claim_id(enc.business_key)

    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]:
        return []

    def check(self) -> tuple[bool, str]:
        said: list[str] = []
        for key, url, write in (("outbound", self.outbound, True), ("inbound", self.inbound, False)):
            if not url:
                continue
            try:
                t = self._transport(url, key=f"x12.{key}")
                try:
                    if isinstance(t, FolderTransport):
                        ok, why = t.check(write=write)
                    else:
                        t.list()
                        ok, why = True, f"the {key} location answers"
                finally:
                    t.close()
            except (TargetError, ConfigError) as exc:
                return False, f"{key}: {exc.title if isinstance(exc, ConfigError) else exc}"
            except Exception as exc:  # a check reports, never raises
                return False, f"{key}: the location could not be reached ({type(exc).__name__})"
            if not ok:
                return False, f"{key}: {why}"
            said.append(f"{key}: {why}")
        return True, "; ".join(said)

    def push(self, encounters: Sequence[Encounter], *,
             corrections: Mapping[str, str] | None = None) -> list[PushResult]:
        if self.ledger is None:
            raise TargetError("the X12 target has no control-number ledger (a defect: the engine supplies one)",
                              kind=TargetErrorKind.CONNECTOR)
        corrections = corrections or {}
        inputs = [self._input(enc, corrections.get(enc.business_key, "")) for enc in encounters]
        results: dict[int, PushResult] = {}
        members = list(range(len(inputs)))
        while members:
            # which claims the writer accepts does not depend on the control number: learn it first
            try:
                probe = write_837([inputs[i] for i in members], self.practice, self._envelope(1))
            except ClaimError as exc:  # the practice / envelope settings: nothing can go
                raise TargetError(f"the 837 cannot be written: {exc}", kind=TargetErrorKind.CONFIG) from None
            for local, why in probe.refused.items():
                g = members[local]
                results[g] = PushResult(encounters[g].business_key, False, reason=f"not sent to the clearinghouse: "
                                                                                     f"{why}")
            members = [members[local] for local in sorted(probe.spans)]
            if not members:
                break
            control = self.ledger.interchange(batch_key([inputs[i] for i in members]), KIND_837P)
            batch = write_837([inputs[i] for i in members], self.practice, self._envelope(control))
            issues = validate(batch.text)
            if issues:
                members = self._refuse(batch, issues, members, encounters, results)
                continue
            self._upload(batch, control)
            for local, g in enumerate(members):
                results[g] = PushResult(encounters[g].business_key, True, remote_ids={
                    "Claim": inputs[g].claim_id, "isa": f"{control:09d}", "gs": str(control),
                    "st": batch.st_of[local], "file": file_name(control)})
            log.info("837P interchange %09d: %d claim(s) written", control, len(members))
            break
        return [results[i] for i in range(len(inputs))]

    # -- helpers ------------------------------------------------------------------------------
    def _input(self, enc: Encounter, corrected: str) -> ClaimInput:
        cid = claim_id(enc.business_key)
        if not corrected:
            return ClaimInput(enc, cid, FREQ_ORIGINAL)
        payer = ""
        lookup = getattr(self.ledger, "payer_claim_id", None)
        if callable(lookup):
            payer = str(lookup(cid) or "")
        if not payer and corrected != cid:  # a caller that passes the payer's number itself
            payer = corrected
        return ClaimInput(enc, cid, FREQ_CORRECTION, payer_claim_id=payer)

    def _envelope(self, control: int) -> Envelope:
        return Envelope(sender_id=str(self.x12.get("sender_id", "")), receiver_id=str(self.x12.get("receiver_id", "")),
                        receiver_name=str(self.x12.get("receiver_name", "")), usage=str(self.x12.get("usage", "T")),
                        control=control)

    def _refuse(self, batch: Batch, issues: list[Issue], members: list[int], encounters: Sequence[Encounter],
                results: dict[int, PushResult]) -> list[int]:
        """Reject what the validator's errors point at; the members left for a new file."""
        per_claim: dict[int, list[Issue]] = {}
        outside: list[Issue] = []
        for iss in issues:
            local = batch.claim_at(iss.line)
            if local is None:
                outside.append(iss)
            else:
                per_claim.setdefault(local, []).append(iss)
        log.warning("837P interchange %09d failed validation: %d problem(s), %d claim(s) at fault; the file was "
                    "not sent", batch.control, len(issues), len(per_claim))
        if outside:
            why = f"the 837 file failed X12 validation and was not sent: {summary(outside)}"
            for g in members:
                results[g] = PushResult(encounters[g].business_key, False, reason=why)
            return []
        for local, found in per_claim.items():
            g = members[local]
            results[g] = PushResult(encounters[g].business_key, False,
                                    reason=f"the claim failed X12 validation and was not sent: {summary(found)}")
        return [g for local, g in enumerate(members) if local not in per_claim]

    def _transport(self, url: str, *, key: str) -> Transport:
        opts: dict[str, Any] = {}
        for k in ("host_key", "key_file"):
            if self.x12.get(k):
                opts[k] = str(self.x12[k])
        mb = self.x12.get("max_file_mb")
        if isinstance(mb, (int, float)) and mb > 0:
            opts["max_bytes"] = int(mb * 1024 * 1024)
        return open_transport(url, secret=self.secret, known_hosts=str(self.x12.get("known_hosts", "")),
                              timeout=self.timeout, key=key, **opts)

    def _upload(self, batch: Batch, control: int) -> None:
        name = file_name(control)
        t = self._transport(self.outbound, key="x12.outbound")
        try:
            t.put(name, batch.text.encode("ascii"))
        finally:
            t.close()
        assert self.ledger is not None
        self.ledger.sent(control, name)


def make(settings: TargetSettings, secret: str) -> X12Target:
    """The X12 target from ``settings.options`` (``practice`` and ``x12``, validated by the
    engine's config) and the engine's ledger. ``secret``: the SFTP password or key passphrase
    ("" for folders)."""
    opts = settings.options or {}
    x12 = opts.get("x12") or {}
    return X12Target(practice_of(opts.get("practice") or {}), x12, ledger=settings.ledger, secret=secret,
                     timeout=settings.timeout_seconds)
