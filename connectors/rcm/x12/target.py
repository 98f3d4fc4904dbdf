"""The ``x12`` RCM target: charges go to a clearinghouse as 837P files (``[rcm] type = "x12"``).

One push = one interchange. Exactly once, the X12 way:

- the claim id (CLM01) is deterministic from the encounter's business key, and line control
  numbers (REF*6R) from the claim id and the EHR's line id;
- the interchange control number comes from the engine's ledger for a *batch key* (the members'
  business keys, content hashes and correction data): a batch sent again after a failed upload
  gets the same ISA13 / GS06 and the same file name, so the far end sees the same interchange
  (replaced in place by the atomic rename, or refused as a duplicate by the clearinghouse);
- a push of more than :data:`CLAIMS_PER_FILE` claims goes out as several interchanges (one
  per consecutive slice of that many claims, so a batch sent again splits the same way and keeps
  its numbers), validated side by side in worker processes (:func:`validate_many`);
- every file is validated with pyx12 before it leaves. A file that fails never leaves: the
  claims the validator's errors point at come back rejected with its message, and a new file
  without them is written (with its own control number) and validated again; an error outside
  any claim (envelope, headers) rejects the whole batch.

Voids: an encounter voided in the EHR after delivery is cancelled with a frequency-8 claim (the
last content ChargeBridge has for it, REF*F8 = the payer's claim number when one came back),
validated like any other file (:meth:`X12Target.cancel`). Test mode: :meth:`X12Target.render`
builds and validates the same files without sending them; their control numbers come from the
same never-reused sequence (under a ``test:`` batch key, so production batches never reuse a
test file's number), which leaves gaps in the production numbering — harmless: clearinghouses
check that ISA13 is not repeated, not that it is contiguous.

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
from connectors.rcm.x12.validate import Issue, summary, validate_many
from connectors.rcm.x12.writer837 import (
    FREQ_CORRECTION,
    FREQ_ORIGINAL,
    FREQ_VOID,
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
KIND_837P_TEST = "837P-test"  # test mode's rendered files (never sent)
CLAIMS_PER_FILE = 1000  # claims per interchange: bigger pushes are split and validated in parallel


def file_name(control: int, *, test: bool = False) -> str:
    return f"837P-test-{control:09d}.x12" if test else f"837P-{control:09d}.x12"


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
        corrections = corrections or {}
        inputs = [self._input(enc, corrections.get(enc.business_key, "")) for enc in encounters]
        ready, results = self._build(inputs, encounters, test=False)
        for members, batch, control in ready:
            self._upload(batch, control)
            for local, g in enumerate(members):
                results[g] = PushResult(encounters[g].business_key, True, remote_ids={
                    "Claim": inputs[g].claim_id, "isa": f"{control:09d}", "gs": str(control),
                    "st": batch.st_of[local], "file": file_name(control)})
            log.info("837P interchange %09d: %d claim(s) written", control, len(members))
        return [results[i] for i in range(len(inputs))]

    def render(self, encounters: Sequence[Encounter], *,
               corrections: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
        """What :meth:`push` would send, as (file name, bytes), without sending it (test mode,
        connectors/rcm/dryrun.py): the same 837 files, validated with pyx12, control numbers from
        the ledger under a ``test:`` batch key. Claims the writer or the validator refuses are in
        no file, as in a live push."""
        if not encounters:
            return []
        corrections = corrections or {}
        inputs = [self._input(enc, corrections.get(enc.business_key, "")) for enc in encounters]
        ready, _ = self._build(inputs, encounters, test=True)
        return [(file_name(control, test=True), batch.text.encode("ascii")) for _, batch, control in ready]

    def cancel(self, claim: str, *, encounter: Encounter | None = None) -> tuple[bool, str]:
        """Void ``claim`` (the EHR voided the visit after it was sent): a frequency-8 claim with
        the encounter's last content and, when the payer numbered the claim, REF*F8. Validated
        with pyx12 and never sent when invalid. Returns (done, what happened); a transport failure
        raises :class:`TargetError` (the next sync tries again, with the same control number)."""
        if encounter is None:
            return False, ("the voided encounter's content is not available, so no void (frequency 8) claim can "
                           "be written")
        if self.identifier(encounter) != claim:
            return False, "the voided encounter does not belong to this claim id"
        void = ClaimInput(encounter, claim, FREQ_VOID, payer_claim_id=self._payer_number(claim))
        ready, results = self._build([void], [encounter], test=False)
        if not ready:
            return False, results[0].reason
        _, batch, control = ready[0]
        self._upload(batch, control)
        log.info("837P interchange %09d: 1 void claim written", control)
        return True, f"void claim (frequency 8) sent in {file_name(control)}"

    # -- building and validating --------------------------------------------------------------
    def _build(self, inputs: Sequence[ClaimInput], encounters: Sequence[Encounter], *,
               test: bool) -> tuple[list[tuple[list[int], Batch, int]], dict[int, PushResult]]:
        """The interchanges for ``inputs`` that pass pyx12, as (member indices, batch, control),
        and a refusal for every claim left out. A file that fails is written again without the
        claims at fault (with its own control number) and validated again."""
        if self.ledger is None:
            raise TargetError("the X12 target has no control-number ledger (a defect: the engine supplies one)",
                              kind=TargetErrorKind.CONNECTOR)
        results: dict[int, PushResult] = {}
        ready: list[tuple[list[int], Batch, int]] = []
        pending = [list(range(i, min(i + CLAIMS_PER_FILE, len(inputs))))
                   for i in range(0, len(inputs), CLAIMS_PER_FILE)]
        while pending:
            written: list[tuple[list[int], Batch, int]] = []
            for members in pending:
                members = self._writable(inputs, members, encounters, results)
                if not members:
                    continue
                key = batch_key([inputs[i] for i in members])
                control = (self.ledger.interchange(f"test:{key}", KIND_837P_TEST) if test
                           else self.ledger.interchange(key, KIND_837P))
                written.append((members, write_837([inputs[i] for i in members], self.practice,
                                                   self._envelope(control)), control))
            pending = []
            found = validate_many([batch.text for _, batch, _ in written])
            for (members, batch, control), issues in zip(written, found, strict=True):
                if not issues:
                    ready.append((members, batch, control))
                    continue
                left = self._refuse(batch, issues, members, encounters, results)
                if left:
                    pending.append(left)
        return ready, results

    def _writable(self, inputs: Sequence[ClaimInput], members: list[int], encounters: Sequence[Encounter],
                  results: dict[int, PushResult]) -> list[int]:
        """The members the writer accepts (which does not depend on the control number); the
        others get the writer's reason."""
        try:
            probe = write_837([inputs[i] for i in members], self.practice, self._envelope(1))
        except ClaimError as exc:  # the practice / envelope settings: nothing can go
            raise TargetError(f"the 837 cannot be written: {exc}", kind=TargetErrorKind.CONFIG) from None
        for local, why in probe.refused.items():
            g = members[local]
            results[g] = PushResult(encounters[g].business_key, False, reason=f"not sent to the clearinghouse: {why}")
        return [members[local] for local in sorted(probe.spans)]

    # -- helpers ------------------------------------------------------------------------------
    def _input(self, enc: Encounter, corrected: str) -> ClaimInput:
        cid = claim_id(enc.business_key)
        if not corrected:
            return ClaimInput(enc, cid, FREQ_ORIGINAL)
        payer = self._payer_number(cid)
        if not payer and corrected != cid:  # a caller that passes the payer's number itself
            payer = corrected
        return ClaimInput(enc, cid, FREQ_CORRECTION, payer_claim_id=payer)

    def _payer_number(self, cid: str) -> str:
        """The payer's claim number for ``cid`` (REF*F8), "" when none came back yet."""
        lookup = getattr(self.ledger, "payer_claim_id", None)
        return str(lookup(cid) or "") if callable(lookup) else ""

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
