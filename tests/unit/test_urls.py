"""The one URL rule (core.urls.check_url): https everywhere, plain http only to this computer,
decided on the parsed host — never on a string prefix."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.urls import check_url, is_loopback_host, same_origin

ALLOWED = [
    "https://rcm.example.com/fhir/R4",
    "https://rcm.example.com:8443/fhir/R4?tenant=7",
    "HTTPS://RCM.EXAMPLE.COM/fhir",
    "https://10.0.0.5/fhir",  # https to any host: TLS is verified
    "http://127.0.0.1:8080/fhir/R4",
    "http://127.1.2.3/fhir",  # all of 127.0.0.0/8 is loopback
    "http://localhost/fhir",
    "http://LOCALHOST:9000/oauth2/token",
    "http://[::1]:8080/fhir",
]

REFUSED = [
    # (url, words the title must carry)
    ("http://rcm.example.com/fhir", "must use https"),
    ("http://localhost.attacker.example/fhir", "must use https"),
    ("http://127.0.0.1.attacker.example/fhir", "must use https"),
    ("http://localhost.:8080/fhir", "must use https"),  # a trailing dot is a DNS name, not "localhost"
    ("http://127.0.0.1@attacker.example/fhir", "user name or password"),
    ("https://user:pw@rcm.example.com/fhir", "user name or password"),
    ("http://localhost:80@attacker.example/", "user name or password"),
    ("http://127.0.0.1%40attacker.example/", "must use https"),
    ("http://127.0.0.1\\@attacker.example/", "backslash"),
    ("http://10.0.0.5/fhir", "must use https"),  # a LAN address is not this computer
    ("http://0x7f000001/fhir", "must use https"),  # no numeric tricks: only dotted loopback literals
    ("http://2130706433/fhir", "must use https"),
    ("http://127.1/fhir", "must use https"),
    ("http://[::ffff:127.0.0.1]/fhir", "must use https"),
    ("ftp://rcm.example.com/fhir", "must start with https://"),
    ("file:///etc/passwd", "must start with https://"),
    ("javascript:alert(1)", "must start with https://"),
    ("rcm.example.com/fhir", "must start with https://"),
    ("//rcm.example.com/fhir", "must start with https://"),
    ("https:///fhir", "has no host"),
    ("https://", "has no host"),
    ("http://:8080/fhir", "has no host"),
    ("", "is empty"),
    ("https://rcm.example.com/fh ir", "spaces or control characters"),
    ("https://rcm.example.com/fhir\r\nX-Injected: 1", "spaces or control characters"),
    ("https://rcm.example.com\t/fhir", "spaces or control characters"),
    ("https://rcm.example.com/fhir\x00", "spaces or control characters"),
    (" https://rcm.example.com/fhir", "spaces or control characters"),
    ("https://rcm.example.com\x7f/fhir", "spaces or control characters"),
    ("https://rcm.exämple.com/fhir", "outside ASCII"),
    ("http://ｌｏｃａｌｈｏｓｔ/fhir", "outside ASCII"),  # full-width letters that NFKC-fold to localhost
    ("https://rcm.example.com:99999/fhir", "not a valid URL"),
    ("https://rcm.example.com:port/fhir", "not a valid URL"),
    ("https://[::1/fhir", "not a valid URL"),
    ("https://rcm.example.com/fhir#frag", "fragment"),
]


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed_urls_come_back_unchanged(url: str) -> None:
    assert check_url(url, key="rcm.base_url", what="the RCM base URL") == url


@pytest.mark.parametrize("url,words", REFUSED)
def test_refused_urls_name_the_key_and_a_fix(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        check_url(url, key="rcm.token_url", what="the RCM token URL")
    err = ei.value
    assert err.key == "rcm.token_url" and err.title.startswith("the RCM token URL ") and err.fix
    assert words in err.title, err.title
    assert err.to_dict()["key"] == "rcm.token_url"


@pytest.mark.parametrize("url", ["https://user:s3cret@rcm.example.com/fhir",
                                 "http://admin:s3cret@127.0.0.1@attacker.example/"])
def test_message_never_repeats_a_password_from_the_url(url: str) -> None:
    with pytest.raises(ConfigError) as ei:
        check_url(url, key="rcm.base_url", what="the RCM base URL")
    assert "s3cret" not in str(ei.value) and "s3cret" not in repr(ei.value.to_dict())


def test_non_text_is_refused() -> None:
    with pytest.raises(ConfigError, match="is empty"):
        check_url(None, key="k", what="the URL")
    with pytest.raises(ConfigError, match="is empty"):
        check_url(b"https://rcm.example.com", key="k", what="the URL")


@pytest.mark.parametrize("host,loopback", [
    ("localhost", True), ("LocalHost", True), ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True),
    ("localhost.", False), ("localhost.attacker.example", False), ("128.0.0.1", False), ("0.0.0.0", False),
    ("::", False), ("10.0.0.1", False), ("", False), ("127.0.0.1.nip.io", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("a,b,same", [
    ("https://rcm.example.com/fhir", "https://rcm.example.com:443/other?x=1", True),
    ("https://RCM.example.com/fhir", "https://rcm.example.com/fhir/Claim?page=2", True),
    ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b", True),
    ("https://rcm.example.com/fhir", "http://rcm.example.com/fhir", False),  # downgrade
    ("https://rcm.example.com/fhir", "https://rcm.example.com:8443/fhir", False),
    ("https://rcm.example.com/fhir", "https://attacker.example/fhir", False),
    ("http://127.0.0.1:8080/a", "http://localhost:8080/a", False),
    ("https://rcm.example.com/fhir", "https://rcm.example.com:notaport/", False),
])
def test_same_origin(a: str, b: str, same: bool) -> None:
    assert same_origin(a, b) is same
