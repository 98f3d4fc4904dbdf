"""One rule for every URL ChargeBridge sends secrets or charges to: parsed, never prefix-checked.

``https`` everywhere; plain ``http`` only when the *parsed* host is this computer — a loopback
IP literal (127.0.0.0/8, ::1) or exactly ``localhost``. A string test such as
``url.startswith("http://localhost")`` lets ``http://localhost.attacker.example`` and
``http://127.0.0.1@attacker.example`` through (the first is another host, the second puts
"127.0.0.1" in the user name), and the client secret would leave in clear. So the URL is split
by :func:`urllib.parse.urlsplit` and the decision is made on its hostname, with user info,
control characters, whitespace and backslashes (which browsers and some HTTP stacks read as
``/``) refused outright.

The message never repeats the URL itself (it may carry a password in its user info); it names
the setting (``key``) and, where that helps, the host.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from core.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1); never resolves a name."""
    h = host.lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_url(url: object, *, key: str, what: str) -> str:
    """``url`` if it is an http(s) URL that may carry secrets, else :class:`ConfigError` with ``key``.

    ``what`` names the URL for people ("the RCM base URL"). Returns the URL unchanged.
    """
    parts = _split(url, key=key, what=what)
    assert isinstance(url, str)
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"{what} must use https ({host} is not this computer, and plain http would send "
                          "credentials and charges unencrypted)",
                          "an https:// address; plain http is allowed only to this computer "
                          "(localhost, 127.0.0.1, [::1])", key=key)
    return url


def same_origin(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` have the same scheme, host and port (default ports filled in)."""
    pa, pb = urlsplit(a), urlsplit(b)
    try:
        return (pa.scheme.lower(), (pa.hostname or "").lower(), _port(pa)) == (
            pb.scheme.lower(), (pb.hostname or "").lower(), _port(pb))
    except ValueError:
        return False


def _port(p: SplitResult) -> int | None:
    return p.port or {"https": 443, "http": 80}.get(p.scheme.lower())


def _split(url: object, *, key: str, what: str) -> SplitResult:
    def bad(problem: str, fix: str = "an address like https://rcm.example.com/fhir/R4") -> ConfigError:
        return ConfigError(f"{what} {problem}", fix, key=key)

    if not isinstance(url, str) or not url:
        raise bad("is empty")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise bad("contains spaces or control characters", "remove them (percent-encode a space as %20)")
    if not url.isascii():
        raise bad("contains characters outside ASCII",
                  "write an international host name in its xn-- form and percent-encode the path")
    if "\\" in url:
        raise bad("contains a backslash", "use forward slashes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError:
        raise bad("is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("https", "http"):
        raise bad(f"must start with https:// (not {parts.scheme + ':' if parts.scheme else 'a bare host'})")
    if "@" in parts.netloc:
        raise bad("contains a user name or password before the host",
                  "remove the part before '@' (credentials belong in the OS keyring, not in a URL)")
    if not parts.hostname:
        raise bad("has no host")
    if parts.fragment or url.endswith("#"):
        raise bad("contains a '#' fragment", "remove everything from '#' on")
    return parts
