"""Test mode's target: the configured RCM target, wrapped so that nothing reaches the real RCM.

Not a registered vendor (``[rcm] type`` stays what the practice will go live with): the engine
wraps the configured target when ``[mode] test = true``. The wrapped target still builds its
real payload — the FHIR Bundles, the 837 file — through its ``render`` capability
(:class:`Renderer`), and a :class:`Recorder` (the engine's encrypted store) keeps exactly those
bytes. Then either

- **dry run** (no sandbox): every encounter counts as delivered, with a stable made-up claim id
  (``dryrun-…``, the same for the same claim, as a conditional create would give), and the RCM's
  view for reconciliation is what was recorded: reconciliation and the KPIs run as usual; or
- **sandbox**: the same push goes to a second target built on the RCM's sandbox address, and
  its answers are the results (and its claims the view for reconciliation).

Nothing else of the wrapped target is reachable through this one: an optional capability added
to a target later (cancel, answers) does not silently talk to the real RCM in test mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Protocol, runtime_checkable

from connectors.rcm.base import PushResult, RemoteCharge, Target, TargetError
from core.model import Encounter
from core.states import TargetErrorKind

DRY_RUN = "dry-run"
SANDBOX = "sandbox"


@runtime_checkable
class Renderer(Protocol):
    """A target that can say what it would send, without sending it."""

    def render(self, encounters: Sequence[Encounter], *,
               corrections: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
        """(file name, bytes) for each payload :meth:`Target.push` would send for ``encounters``."""
        ...


class Recorder(Protocol):
    """Where test mode keeps what would have been sent (the engine's encrypted store)."""

    def record(self, *, target: str, route: str, action: str, files: list[tuple[str, bytes]],
               sent: list[tuple[Encounter, str, PushResult]]) -> int:
        """Keep one send: its payload ``files`` and, per encounter, (encounter, claim identifier,
        result). Returns the send's id."""
        ...

    def cancelled(self, remote_id: str) -> bool:
        """Mark the recorded claim ``remote_id`` cancelled; False when no such claim was recorded."""
        ...

    def charges(self, start: date, end: date) -> list[RemoteCharge]:
        """The recorded (not cancelled) claims with a date of service in [start, end]."""
        ...


def dry_run_id(identifier: str) -> str:
    """The made-up RCM claim id of a dry-run claim: stable per claim identifier, a valid FHIR id."""
    return "dryrun-" + hashlib.sha256(identifier.encode()).hexdigest()[:20]


class TestModeTarget:
    """``inner`` (the configured target) in test mode; ``sandbox`` (the same vendor on the RCM's
    sandbox address) when one is configured, else a dry run."""

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, inner: Target, recorder: Recorder, *, sandbox: Target | None = None) -> None:
        if not isinstance(inner, Renderer):
            raise TargetError(f"the {inner.name} RCM connector cannot show what it would send, so test mode "
                              "cannot use it; switch test mode off or use a sandbox RCM", kind=TargetErrorKind.CONFIG)
        self.inner = inner
        self.recorder = recorder
        self.sandbox = sandbox
        self.name = inner.name  # claims and KPIs count per vendor, as they will after go-live
        self.route = SANDBOX if sandbox is not None else DRY_RUN

    def identifier(self, enc: Encounter) -> str:
        return self.inner.identifier(enc)

    def push(self, encounters: Sequence[Encounter], *,
             corrections: Mapping[str, str] | None = None) -> list[PushResult]:
        if not encounters:
            return []
        renderer = self.inner
        assert isinstance(renderer, Renderer)
        files = renderer.render(encounters, corrections=corrections)
        if self.sandbox is not None:
            results = self.sandbox.push(encounters, corrections=corrections)
        else:
            results = [PushResult(e.business_key, True, remote_ids={"Claim": dry_run_id(self.identifier(e))})
                       for e in encounters]
        by_key = {r.business_key: r for r in results}
        sent = [(e, self.identifier(e), by_key[e.business_key]) for e in encounters if e.business_key in by_key]
        self.recorder.record(target=self.name, route=self.route, action="push", files=files, sent=sent)
        return results

    def cancel(self, claim_id: str) -> tuple[bool, str]:
        """A voided visit: the sandbox cancels it there; a dry run marks the recorded claim."""
        if self.sandbox is not None:
            cancel = getattr(self.sandbox, "cancel", None)
            if cancel is None:
                return False, "the sandbox RCM cannot cancel claims"
            ok, why = cancel(claim_id)
            return bool(ok), str(why)
        if self.recorder.cancelled(claim_id):
            return True, "test mode: the recorded claim is marked cancelled (nothing was sent)"
        return True, "test mode: no such recorded claim"

    def fetch_charges(self, start: date, end: date) -> list[RemoteCharge]:
        if self.sandbox is not None:
            return self.sandbox.fetch_charges(start, end)
        return self.recorder.charges(start, end)

    def check(self) -> tuple[bool, str]:
        """The connection that go-live will use (the sandbox's in sandbox mode), for people."""
        ok, detail = (self.sandbox or self.inner).check()
        where = "the sandbox RCM" if self.sandbox is not None else "the RCM (test mode: sync sends nothing)"
        return ok, f"{where}: {detail}"
