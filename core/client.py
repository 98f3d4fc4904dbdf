"""A small client for the engine's local API (used by the CLI; the tray has its own Qt-side copy
of the same calls). Finds the engine through ``engine.json`` in the home."""

from __future__ import annotations

import json
import os
from typing import Any

import requests

from core.paths import Paths
from core.secrets import API_TOKEN as TOKEN_SECRET


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class EngineClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()

    @classmethod
    def discover(cls, paths: Paths, token: str | None = None) -> EngineClient | None:
        """The running engine of ``paths``, or None when none answers."""
        try:
            info = json.loads(paths.engine_info.read_text())
        except (OSError, ValueError):
            return None
        pid = int(info.get("pid", 0))
        if pid and os.name == "posix":
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        if token is None:
            from core.secrets import get_secret

            token = get_secret(paths, TOKEN_SECRET) or ""
        client = cls(str(info["url"]), token)
        try:
            r = client.session.get(f"{client.url}/api/v1/health", timeout=3)
        except requests.RequestException:
            return None
        return client if r.status_code == 200 else None

    def call(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=timeout or self.timeout, **kw)
        if r.status_code >= 400:
            try:
                detail = str(r.json().get("detail", ""))
            except ValueError:
                detail = r.text[:200]
            raise ApiError(r.status_code, detail)
        return r.json()
