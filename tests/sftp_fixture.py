"""A real OpenSSH SFTP server (Debian's ``openssh-server``) for the clearinghouse-drop tests.

Use from a test module:  ``from tests.sftp_fixture import sftp_server  # noqa: F401``

One ``sshd`` per test session, started as a child process (``sshd -D -e -f config``: no systemd,
no PAM) on a free loopback port with its own ed25519 host key and config, stopped at the end.
The login is a throw-away OS account made for the session (``cbsftp_<hex>``, with a random
password and an ed25519 client key protected by a passphrase), removed at teardown; its
``internal-sftp`` subsystem is not chrooted and lands in a temp directory it owns. OpenSSH
needs root for password logins (it reads /etc/shadow) and for a second account, so the fixture
fails (not skips) without it; scripts/setup.sh installs the package.

:class:`SftpServer` gives the URL of a fresh directory per test (``new_dir``), the known_hosts
file and pinned key line for its host key, and :meth:`SftpServer.drop_connections`, which kills
the per-connection sshd processes — the connection drops as it would when a network fails.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.db_fixture import _wait_port, free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class SftpServer:
    port: int
    user: str
    password: str
    base: Path  # config, keys, log
    drop: Path  # the login's directory (owned by it)
    host_key_line: str  # "ssh-ed25519 AAAA..." (the server's public key)
    client_key: Path  # private key, encrypted with key_passphrase
    key_passphrase: str
    proc: subprocess.Popen[bytes] | None = None
    cmd: list[str] = field(default_factory=list)

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    def new_dir(self, name: str = "") -> tuple[str, Path]:
        """A fresh directory in the drop: (its sftp:// URL, its path on disk)."""
        d = self.drop / (name or f"d{secrets.token_hex(4)}")
        d.mkdir()
        pw = pwd.getpwnam(self.user)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        return f"sftp://{self.user}@127.0.0.1:{self.port}{d}", d

    def child_pids(self) -> list[int]:
        """Every process below the listening sshd (one or two per open connection)."""
        if self.proc is None:
            return []
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents[int(entry)] = ppid
        found, frontier = [], {self.proc.pid}
        while frontier:
            kids = {pid for pid, pp in parents.items() if pp in frontier}
            found += sorted(kids)
            frontier = kids
        return found

    def drop_connections(self) -> int:
        """Kill every per-connection sshd process (the listener stays). Returns how many."""
        pids = self.child_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def start(self) -> None:
        out = open(self.base / "sshd.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc, self.base / "sshd.log", "sshd")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.drop_connections()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None


def _keygen(path: Path, passphrase: str = "") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "chargebridge-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    pub = path.with_name(path.name + ".pub").read_text().split()
    return f"{pub[0]} {pub[1]}"


def start_sftp_server() -> SftpServer:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.fail("OpenSSH's server is not installed (scripts/setup.sh installs openssh-server): "
                    "the SFTP tests need the real sshd")
    if os.geteuid() != 0:
        pytest.fail("the SFTP tests need root: sshd checks passwords against /etc/shadow and the fixture "
                    "makes a throw-away login")
    base = Path(tempfile.mkdtemp(prefix="cb-sftp-"))
    base.chmod(0o755)  # the login's sshd process reads authorized_keys and lands in drop/
    user, password = f"cbsftp_{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    drop = base / "drop"
    drop.mkdir()
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(drop), "--shell",
                    "/usr/sbin/nologin", user], check=True, capture_output=True, timeout=60)
    subprocess.run(["chpasswd"], input=f"{user}:{password}".encode(), check=True, capture_output=True, timeout=60)
    pw = pwd.getpwnam(user)
    os.chown(drop, pw.pw_uid, pw.pw_gid)
    host_line = _keygen(base / "ssh_host_ed25519_key")
    passphrase = secrets.token_urlsafe(12)
    client_line = _keygen(base / "client_key", passphrase)
    (base / "authorized_keys").write_text(client_line + "\n")
    (base / "authorized_keys").chmod(0o644)
    port = free_port()
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_line}\n")
    (base / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {base / 'ssh_host_ed25519_key'}
PidFile {base / 'sshd.pid'}
UsePAM no
UseDNS no
PermitRootLogin no
AllowUsers {user}
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {base / 'authorized_keys'}
StrictModes no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
MaxStartups 100
LogLevel INFO
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    srv = SftpServer(port, user, password, base, drop, host_line, base / "client_key", passphrase,
                     cmd=[SSHD, "-D", "-e", "-f", str(base / "sshd_config")])
    check = subprocess.run([SSHD, "-t", "-f", str(base / "sshd_config")], capture_output=True, timeout=60)
    if check.returncode != 0:
        raise RuntimeError(f"sshd refused the test config: {check.stderr.decode(errors='replace')[-2000:]}")
    srv.start()
    return srv


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpServer]:
    srv = start_sftp_server()
    try:
        yield srv
    finally:
        srv.stop()
        subprocess.run(["userdel", srv.user], capture_output=True, timeout=60)
        shutil.rmtree(srv.base, ignore_errors=True)
