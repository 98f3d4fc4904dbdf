"""The EHR parser seam.

A parser is a module with ``NAME`` and ``parse(data, *, name, options) -> list[Parsed]``.
It turns one raw document (the bytes of one file) into canonical records
(:class:`~core.model.Encounter`, :class:`~core.model.PatientUpdate`) and
:class:`~core.model.Rejected` parts. A document that cannot be read at all raises
:class:`ParseError`; its message is shown to people, so it says what is wrong and what to do,
and never quotes patient data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from core.model import Parsed


class ParseError(Exception):
    """The whole document is unusable. ``str(exc)`` is a reason a person can act on (no PHI)."""


class Parser(Protocol):
    NAME: str

    def parse(self, data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]: ...
