"""The clearinghouse drop over SFTP, against a real OpenSSH server (tests/sftp_fixture.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from connectors.rcm.x12.sftp import SftpError, SftpTransport, parse_sftp_url
from core.errors import ConfigError
from core.states import TargetErrorKind
from tests.sftp_fixture import SftpServer, sftp_server  # noqa: F401

TIMEOUT = 15.0


def _transport(srv: SftpServer, url: str, **kw) -> SftpTransport:  # type: ignore[no-untyped-def]
    kw.setdefault("secret", srv.password)
    kw.setdefault("known_hosts", str(srv.known_hosts))
    return SftpTransport(url, timeout=TIMEOUT, **kw)


def _other_key_line(tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True, capture_output=True, timeout=60)
    return " ".join((tmp_path / "other.pub").read_text().split()[:2])


def test_put_list_get_archive_round_trip(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    payload = b"ISA*00*          *00*          *ZZ*SENDER~" * 100
    with _transport(sftp_server, url) as t:
        t.put("batch-000000001.x12", payload)
        assert (d / "batch-000000001.x12").read_bytes() == payload
        assert sorted(os.listdir(d)) == ["batch-000000001.x12"]  # no .part left behind
        (d / "answer-999.x12").write_bytes(b"999 answer")
        (d / ".incoming.x12.part").write_bytes(b"half")  # someone else's upload in progress
        (d / "sub").mkdir()
        assert t.list() == ["answer-999.x12", "batch-000000001.x12"]
        assert t.get("answer-999.x12") == b"999 answer"
        assert t.archive("answer-999.x12") == "answer-999.x12"
        assert (d / "processed" / "answer-999.x12").read_bytes() == b"999 answer"
        assert t.list() == ["batch-000000001.x12"]
        # a second answer with the same name does not overwrite the archived one
        (d / "answer-999.x12").write_bytes(b"second")
        second = t.archive("answer-999.x12")
        assert second != "answer-999.x12"
        assert (d / "processed" / "answer-999.x12").read_bytes() == b"999 answer"
        assert (d / "processed" / second).read_bytes() == b"second"
        # the same name again replaces the file (a re-send carries the same bytes)
        t.put("batch-000000001.x12", payload)
        assert (d / "batch-000000001.x12").read_bytes() == payload


def test_key_file_with_passphrase_and_pinned_host_key(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    t = SftpTransport(url, secret=sftp_server.key_passphrase, key_file=str(sftp_server.client_key),
                      host_key=sftp_server.host_key_line, timeout=TIMEOUT)
    try:
        t.put("k.x12", b"by key")
    finally:
        t.close()
    assert (d / "k.x12").read_bytes() == b"by key"
    # one setting may carry the pinned line instead of a file path
    with _transport(sftp_server, url, known_hosts=sftp_server.host_key_line) as t2:
        assert t2.list() == ["k.x12"]
    # the wrong passphrase for the key is an auth error, not a crash
    bad = SftpTransport(url, secret="not-the-passphrase", key_file=str(sftp_server.client_key),
                        host_key=sftp_server.host_key_line, timeout=TIMEOUT)
    with pytest.raises(SftpError) as e:
        bad.list()
    assert e.value.kind is TargetErrorKind.AUTH and "passphrase" in e.value.title


def test_wrong_host_key_is_refused_and_nothing_is_sent(sftp_server: SftpServer, tmp_path: Path) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    log_before = (sftp_server.base / "sshd.log").read_text(errors="replace")
    t = _transport(sftp_server, url, known_hosts="", host_key=_other_key_line(tmp_path))
    with pytest.raises(SftpError) as e:
        t.put("batch.x12", b"must not arrive")
    err = e.value
    assert err.kind is TargetErrorKind.TLS and not err.retryable
    assert "does not match" in err.title and err.fix
    server_fp = subprocess.run(["ssh-keygen", "-l", "-f", str(sftp_server.base / "ssh_host_ed25519_key.pub")],
                               capture_output=True, text=True, check=True).stdout.split()[1]
    assert server_fp in err.title  # IT can compare it with the clearinghouse's published one
    assert sftp_server.password not in str(err)
    assert os.listdir(d) == []
    # the password was never offered to the impostor: sshd logged no login attempt for it
    log_after = (sftp_server.base / "sshd.log").read_text(errors="replace")[len(log_before):]
    assert "password for" not in log_after and "Accepted" not in log_after
    # the same key in a known_hosts file under the right name is refused just the same
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sftp_server.port} {_other_key_line(tmp_path / '..')}\n")
    with pytest.raises(SftpError) as e2:
        _transport(sftp_server, url, known_hosts=str(wrong)).list()
    assert e2.value.kind is TargetErrorKind.TLS


def test_unknown_host_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    other_host = tmp_path / "known_hosts"  # the right key, but for another server name
    other_host.write_text(f"sftp.elsewhere.example {sftp_server.host_key_line}\n"
                          f"127.0.0.1 {sftp_server.host_key_line}\n")  # port 22 entry: not this server
    with pytest.raises(SftpError) as e:
        _transport(sftp_server, url, known_hosts=str(other_host)).put("x.x12", b"no")
    assert e.value.kind is TargetErrorKind.CONFIG and "not in the configured known hosts" in e.value.title
    assert f"[127.0.0.1]:{sftp_server.port}" in e.value.fix
    assert os.listdir(d) == []
    with pytest.raises(SftpError) as e2:  # nothing configured at all: refused before connecting
        SftpTransport(url, secret=sftp_server.password, timeout=TIMEOUT)
    assert e2.value.kind is TargetErrorKind.CONFIG and "never accepts an unknown" in e2.value.fix


def test_dropped_connection_mid_upload_leaves_no_final_file_and_retry_succeeds(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    payload = os.urandom(4 * 1024 * 1024)
    dropped: list[int] = []

    def drop_once(sent: int, total: int) -> None:
        if not dropped and 0 < sent < total:
            dropped.append(sftp_server.drop_connections())

    t = _transport(sftp_server, url, on_progress=drop_once)
    with pytest.raises(SftpError) as e:
        t.put("batch-000000007.x12", payload)
    assert dropped and dropped[0] >= 1  # the server side really went away mid-file
    assert e.value.kind in (TargetErrorKind.UNREACHABLE, TargetErrorKind.TIMEOUT) and e.value.retryable
    assert not (d / "batch-000000007.x12").exists()
    part = d / ".batch-000000007.x12.part"
    assert not part.exists() or part.stat().st_size < len(payload)
    # the next attempt (same object: it reconnects) sends the same bytes under the final name
    t.on_progress = None
    t.put("batch-000000007.x12", payload)
    t.close()
    assert (d / "batch-000000007.x12").read_bytes() == payload
    assert os.listdir(d) == ["batch-000000007.x12"]


def test_wrong_password_is_a_clear_auth_error(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    with pytest.raises(SftpError) as e:
        _transport(sftp_server, url, secret="wrong-" + sftp_server.password).put("x.x12", b"no")
    err = e.value
    assert err.kind is TargetErrorKind.AUTH and not err.retryable
    assert "refused the login" in err.title and "set-secret" in err.fix
    assert sftp_server.password not in str(err) and sftp_server.user not in str(err)
    assert os.listdir(d) == []
    with pytest.raises(SftpError) as e2:
        _transport(sftp_server, url, secret="").list()
    assert e2.value.kind is TargetErrorKind.AUTH and "no SFTP password" in e2.value.title


def test_budgets_on_list_and_get(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    for i in range(5):
        (d / f"f{i}.x12").write_bytes(b"x" * (10 + i))
    with _transport(sftp_server, url, max_names=3, max_bytes=12) as t:
        names = t.list()
        assert len(names) == 3 and set(names) <= {f"f{i}.x12" for i in range(5)}
        assert t.get("f2.x12") == b"x" * 12
        with pytest.raises(SftpError) as e:
            t.get("f4.x12")
        assert e.value.kind is TargetErrorKind.PROTOCOL and "larger than" in e.value.title
        with pytest.raises(SftpError):
            t.get("../etc/passwd")  # only plain names in the directory


def test_missing_directory_and_unreachable_server(sftp_server: SftpServer) -> None:  # noqa: F811
    url, d = sftp_server.new_dir()
    with _transport(sftp_server, url + "/nope") as t:
        with pytest.raises(SftpError) as e:
            t.put("x.x12", b"x")
        assert e.value.kind is TargetErrorKind.CONFIG and "no such directory" in e.value.title
    from tests.db_fixture import free_port

    closed = f"sftp://{sftp_server.user}@127.0.0.1:{free_port()}/tmp"
    with pytest.raises(SftpError) as e2:
        SftpTransport(closed, secret="x", host_key=sftp_server.host_key_line, timeout=TIMEOUT).list()
    assert e2.value.kind is TargetErrorKind.UNREACHABLE and e2.value.retryable


def test_url_rules() -> None:
    u = parse_sftp_url("sftp://billing@sftp.example.com:2222/out/837")
    assert (u.user, u.host, u.port, u.directory) == ("billing", "sftp.example.com", 2222, "/out/837")
    assert u.known_hosts_name == "[sftp.example.com]:2222"
    assert parse_sftp_url("sftp://b@h/~/drop").directory == "drop"
    assert parse_sftp_url("sftp://b@h/").port == 22
    for bad in ("sftp://b:hunter2pw@h/x", "https://h/x", "sftp://h/x", "sftp://b@h/a/../b", "sftp://b@h/a b"):
        with pytest.raises(ConfigError) as e:
            parse_sftp_url(bad)
        assert "hunter2pw" not in str(e.value)
