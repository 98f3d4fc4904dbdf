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
    """An error answer of the engine: its status and :class:`core.schemas.ErrorBody` fields."""

    def __init__(self, status: int, title: str, fix: str = "", key: str | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"{status}: {title}")
        self.status = status
        self.title = title
        self.fix = fix
        self.key = key
        self.request_id = request_id

    @property
    def detail(self) -> str:
        return f"{self.title} — {self.fix}" if self.fix else self.title

    @classmethod
    def from_response(cls, r: requests.Response) -> ApiError:
        try:
            body = r.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("title"), str):
            def opt(name: str) -> str | None:
                v = body.get(name)
                return v if isinstance(v, str) else None

            return cls(r.status_code, body["title"], opt("fix") or "", opt("key"), opt("request_id"))
        return cls(r.status_code, f"the engine answered HTTP {r.status_code}")


class EngineClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0, ca_bundle: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = ca_bundle or True  # a paired engine: its pinned CA is the only trust anchor
        if ca_bundle:  # ... and no REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (requests lets them override it)
            self.session.trust_env = False

    @classmethod
    def discover(cls, paths: Paths, token: str | None = None) -> EngineClient | None:
        """The running engine of ``paths``, or None when none answers. With no engine of its
        own, a home that paired with a practice engine (``chargebridge pair --connect``) gets
        that one, verified against its pinned CA."""
        try:
            info = json.loads(paths.engine_info.read_text())
        except (OSError, ValueError):
            return cls._paired(paths, token)
        pid = int(info.get("pid", 0))
        if pid and os.name == "posix":
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        if token is None:
            from core.secrets import OWNER_TOKEN, get_secret

            # a saved login first; else the engine's local owner token, which only the OS user
            # who owns the home has (their keyring); anyone else gets 401 and is told to sign in
            token = get_secret(paths, TOKEN_SECRET) or get_secret(paths, OWNER_TOKEN) or ""
        client = cls(str(info["url"]), token)
        try:
            r = client.session.get(f"{client.url}/api/v1/health", timeout=3)
        except requests.RequestException:
            return None
        return client if r.status_code == 200 else None

    @classmethod
    def _paired(cls, paths: Paths, token: str | None) -> EngineClient | None:
        from core.pairing import load_remote

        remote = load_remote(paths)
        if remote is None:
            return None
        if token is None:
            from core.secrets import get_secret

            token = get_secret(paths, TOKEN_SECRET) or ""
        from core.errors import ChargeBridgeError

        client = cls(remote.url, token, ca_bundle=str(remote.ca_file))
        try:
            r = client.session.get(f"{client.url}/api/v1/health", timeout=5)
        except requests.exceptions.SSLError:
            raise ChargeBridgeError(f"the practice server at {remote.url} did not prove it holds the paired "
                                    "certificate", "if the server was reinstalled, pair again: chargebridge pair "
                                    "--connect URL CODE; otherwise tell IT") from None
        except requests.RequestException as exc:
            raise ChargeBridgeError(f"the practice server at {remote.url} cannot be reached ({type(exc).__name__})",
                                    "check that its engine runs and this PC is on the practice network") from None
        if r.status_code != 200:
            raise ChargeBridgeError(f"the practice server at {remote.url} answered HTTP {r.status_code}",
                                    "check that the address is the ChargeBridge engine's") from None
        return client

    def call(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=timeout or self.timeout, **kw)
        if r.status_code >= 400:
            raise ApiError.from_response(r)
        return r.json()
