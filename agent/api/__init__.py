"""The engine's local HTTP API (FastAPI): one router per resource over :class:`agent.service.EngineService`.

Bearer token per user; roles front_desk < manager < admin. Every error answers
:class:`core.schemas.ErrorBody`. Clients never busy-poll: ``GET /api/v1/changes?after=N`` returns as
soon as anything commits (or after ``timeout`` seconds) with the new change sequence number.
"""

from __future__ import annotations

from agent.api.app import create_app

__all__ = ["create_app"]
