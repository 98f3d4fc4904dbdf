"""Real MariaDB and PostgreSQL servers for the EHR database connector tests.

Use from a test module:  ``from tests.db_fixture import mariadb, postgres  # noqa: F401``

Each is a session fixture: one server per test run, on loopback, with its own data directory
under a temp dir and a free port, stopped at the end. No systemd, no system-wide cluster:

- MariaDB: ``mariadb-install-db`` into the temp dir, then ``mariadbd --datadir --socket --port
  --bind-address=127.0.0.1`` (as root with ``--user=root``, else as the current user).
- PostgreSQL: ``initdb`` + ``postgres -D dir -k sockdir -p port -h 127.0.0.1``. PostgreSQL
  refuses to run as root, so when the tests run as root the server runs as the ``postgres`` OS
  user (created by Debian's package) in a temp dir it owns.

:class:`DbServer` gives SQLAlchemy URLs for an admin and lets a test create a fresh database
(``fresh_db``) and accounts (``add_user``), so tests never share data through the server.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {START_TIMEOUT:.0f} s")


@dataclass
class DbServer:
    kind: str  # mariadb | postgres
    port: int
    admin_user: str
    admin_password: str
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    run_as: str = ""
    start_cmd: list[str] = field(default_factory=list)
    log: Path | None = None

    @property
    def driver(self) -> str:
        return "mysql+pymysql" if self.kind == "mariadb" else "postgresql+psycopg"

    def url(self, db: str = "", user: str = "", password: str | None = None) -> str:
        u = user or self.admin_user
        p = self.admin_password if password is None and not user else (password or "")
        default = "mysql" if self.kind == "mariadb" else "postgres"
        return f"{self.driver}://{u}:{p}@127.0.0.1:{self.port}/{db or default}"

    def url_no_password(self, db: str, user: str) -> str:
        return f"{self.driver}://{user}@127.0.0.1:{self.port}/{db}"

    def admin_engine(self, db: str = ""):  # type: ignore[no-untyped-def]
        import sqlalchemy as sa

        return sa.create_engine(self.url(db), isolation_level="AUTOCOMMIT", pool_pre_ping=True)

    def fresh_db(self, prefix: str = "t") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        import sqlalchemy as sa

        eng = self.admin_engine()
        with eng.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
        eng.dispose()
        return name

    def add_user(self, db: str, *, write: bool = False) -> tuple[str, str]:
        """A login for ``db``: read-only (SELECT) unless ``write``. Returns (user, password)."""
        import sqlalchemy as sa

        user, pw = f"u_{secrets.token_hex(4)}", secrets.token_hex(12)
        stmts: list[str]
        if self.kind == "mariadb":
            stmts = [f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'",
                     f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{pw}'"]
            priv = "ALL PRIVILEGES" if write else "SELECT"
            stmts += [f"GRANT {priv} ON {db}.* TO '{user}'@'127.0.0.1'",
                      f"GRANT {priv} ON {db}.* TO '{user}'@'localhost'"]
            eng = self.admin_engine()
        else:
            stmts = [f"CREATE ROLE {user} LOGIN PASSWORD '{pw}'", f"GRANT CONNECT ON DATABASE {db} TO {user}",
                     f"GRANT USAGE ON SCHEMA public TO {user}",
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}"]
            if write:
                stmts.append(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {user}")
            eng = self.admin_engine(db)
        with eng.connect() as c:
            for s in stmts:
                c.execute(sa.text(s))
        eng.dispose()
        return user, pw

    # -- lifecycle ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        assert self.log is not None
        out = open(self.log, "ab")  # noqa: SIM115 - the server's lifetime, closed by the OS at exit
        preexec = None
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)

            def preexec() -> None:  # type: ignore[misc]
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        self.proc = subprocess.Popen(self.start_cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec,
                                     start_new_session=True)
        _wait_port(self.port, self.proc, self.log, self.kind)
        if self.kind == "postgres":  # the port opens before the server accepts logins
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    import psycopg

                    psycopg.connect(host="127.0.0.1", port=self.port, user=self.admin_user,
                                    password=self.admin_password, dbname="postgres", connect_timeout=2).close()
                    return
                except Exception:
                    time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self._spawn()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def start_mariadb(base: Path) -> DbServer:
    daemon = shutil.which("mariadbd") or shutil.which("mysqld") or ("/usr/sbin/mariadbd"
                                                                  if Path("/usr/sbin/mariadbd").exists() else None)
    installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not daemon or not installer:
        pytest.fail("MariaDB is not installed (scripts/setup.sh installs mariadb-server): the DB tests need the real server")
    data, sock = base / "data", base / "mysqld.sock"
    data.mkdir(parents=True)
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([installer, f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", *user], check=True, capture_output=True, timeout=120)
    srv = DbServer("mariadb", free_port(), "root", secrets.token_hex(12), workdir=base, log=base / "server.log")
    srv.start_cmd = [daemon, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={srv.port}",
                     "--bind-address=127.0.0.1", "--skip-name-resolve", f"--pid-file={base / 'mysqld.pid'}",
                     "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M", "--skip-log-bin",
                     "--innodb-flush-log-at-trx-commit=2", *user]
    srv._spawn()
    import pymysql

    conn = pymysql.connect(unix_socket=str(sock), user="root", password="")
    with conn.cursor() as cur:
        cur.execute(f"CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{srv.admin_password}'")
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
    conn.close()
    return srv


def start_postgres(base: Path) -> DbServer:
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (scripts/setup.sh installs postgresql): the DB tests need the real server")
    run_as = ""
    if os.geteuid() == 0:
        run_as = "postgres"
        pw = pwd.getpwnam(run_as)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, sockdir = base / "data", base / "sock"
    srv = DbServer("postgres", free_port(), "cbadmin", secrets.token_hex(12), workdir=base, run_as=run_as,
                   log=base / "server.log")
    pwfile = base / "pw"
    pwfile.write_text(srv.admin_password)
    if run_as:
        for p in (pwfile,):
            os.chown(p, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)

    def as_user() -> None:
        if run_as:
            os.setgid(pwd.getpwnam(run_as).pw_gid)
            os.setuid(pwd.getpwnam(run_as).pw_uid)

    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", srv.admin_user, f"--pwfile={pwfile}",
                    "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                   preexec_fn=as_user, timeout=120, cwd=base)
    sockdir.mkdir()
    if run_as:
        os.chown(sockdir, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)
    srv.start_cmd = [str(bindir / "postgres"), "-D", str(data), "-k", str(sockdir), "-p", str(srv.port),
                     "-h", "127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=64MB"]
    srv._spawn()
    return srv


@pytest.fixture(scope="session")
def mariadb() -> Iterator[DbServer]:
    base = Path(tempfile.mkdtemp(prefix="cb-mariadb-"))
    srv = start_mariadb(base)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[DbServer]:
    base = Path(tempfile.mkdtemp(prefix="cb-postgres-"))
    os.chmod(base, 0o755)
    srv = start_postgres(base)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
