"""The Linux package, with real tools: built by ``dpkg-deb`` (installer/deb/build_deb.py),
inspected with ``dpkg-deb -f/-c/-e``, its unit files checked by ``systemd-analyze verify`` (and
``security --offline``) in a temporary root, installed, re-installed, removed and purged with
``dpkg --root`` (the maintainer scripts run with ``$DPKG_ROOT`` and must touch nothing outside
it), and the installed engine started exactly as the system unit starts it — as the package's
user, with the unit's environment and EnvironmentFile, a NOTIFY_SOCKET we listen on — until it
says READY=1, pings the watchdog and stops on SIGTERM.

Fast tests use a stand-in bundle whose ``chargebridge`` runs the product from this source tree;
``test_real_frozen_bundle`` packs the PyInstaller bundle (the ``frozen_exe`` session fixture in
tests/e2e/conftest.py, shared with test_frozen.py: built once per session).
"""

from __future__ import annotations

import array
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from installer.deb import build_deb

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"
IS_ROOT = os.geteuid() == 0


def _run(*cmd: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


def _ok(*cmd: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = _run(*cmd, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


# -- building ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def standin_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle-shaped folder whose ``chargebridge`` runs the product from this source tree."""
    bundle = tmp_path_factory.mktemp("standin") / "chargebridge"
    (bundle / "_internal" / "agent").mkdir(parents=True)
    (bundle / "_internal" / "agent" / "marker.txt").write_text("bundle data\n")
    exe = bundle / "chargebridge"
    exe.write_text("#!/bin/sh\n"
                   f"PYTHONPATH={shlex.quote(str(ROOT))}\nexport PYTHONPATH\n"
                   f"exec {shlex.quote(sys.executable)} -m installer.entry \"$@\"\n")
    exe.chmod(0o700)  # the build normalises it to 0755
    return bundle


@pytest.fixture(scope="module")
def deb(standin_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_deb.build(standin_bundle, tmp_path_factory.mktemp("deb"), compress="none")


def _fields(deb: Path) -> dict[str, str]:
    out = _ok("dpkg-deb", "-f", deb)
    fields: dict[str, str] = {}
    key = ""
    for line in out.splitlines():
        if line[:1] in (" ", "\t"):
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """``dpkg-deb -c``: path -> (mode string, owner/group, symlink target or '')."""
    entries = {}
    for line in _ok("dpkg-deb", "-c", deb).splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix(".").rstrip("/") or "/"] = (mode, owner, target)
    return entries


def test_control_fields_conffiles_and_file_modes(deb: Path, tmp_path: Path) -> None:
    fields = _fields(deb)
    with (ROOT / "pyproject.toml").open("rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    assert fields["Package"] == "chargebridge"
    assert fields["Version"] == version
    assert fields["Architecture"] == _ok("dpkg", "--print-architecture").strip()
    depends = [d.strip().split()[0] for d in fields["Depends"].split(",")]
    for lib in ("libc6", "libxcb1", "libx11-xcb1", "libx11-6", "libfontconfig1", "libfreetype6", "libdbus-1-3",
                "libglib2.0-0", "passwd"):
        assert lib in depends, f"Depends lacks {lib}: {fields['Depends']}"
    assert int(fields["Installed-Size"]) > 0
    assert "Description" in fields and "\n" in fields["Description"]

    assert _ok("dpkg-deb", "-I", deb, "conffiles").split() == [
        "/etc/chargebridge/engine.env", "/etc/xdg/autostart/chargebridge-tray.desktop"]

    files = _contents(deb)
    expect = {
        "/opt/chargebridge/chargebridge": "-rwxr-xr-x",
        "/opt/chargebridge/_internal/agent/marker.txt": "-rw-r--r--",
        "/lib/systemd/system/chargebridge-engine.service": "-rw-r--r--",
        "/usr/lib/systemd/user/chargebridge-engine.service": "-rw-r--r--",
        "/etc/xdg/autostart/chargebridge-tray.desktop": "-rw-r--r--",
        "/etc/chargebridge/engine.env": "-rw-------",
        "/usr/share/chargebridge/chargebridge-system.toml": "-rw-r--r--",
        "/usr/share/doc/chargebridge/README.md": "-rw-r--r--",
        "/usr/share/doc/chargebridge/copyright": "-rw-r--r--",
        "/opt/chargebridge": "drwxr-xr-x",
    }
    for path, mode in expect.items():
        assert path in files, f"{path} is not in the package"
        assert files[path][0] == mode, f"{path}: {files[path][0]}, expected {mode}"
    assert files["/usr/bin/chargebridge"][0].startswith("l")
    assert files["/usr/bin/chargebridge"][2] == "/opt/chargebridge/chargebridge"
    assert {owner for _m, owner, _t in files.values()} == {"root/root"}
    assert not [p for p, (m, _o, _t) in files.items() if not m.startswith("l") and m[8] == "w"], "world-writable"

    tree = tmp_path / "tree"
    _ok("dpkg-deb", "-x", deb, tree)
    assert shutil.which("desktop-file-validate"), "desktop-file-utils is missing (scripts/setup.sh installs it)"
    _ok("desktop-file-validate", tree / "etc/xdg/autostart/chargebridge-tray.desktop")

    control = tmp_path / "control"
    _ok("dpkg-deb", "-e", deb, control)
    for name in ("postinst", "prerm", "postrm"):
        script = control / name
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text, name
        _ok("dash", "-n", script)          # parses as POSIX sh (dash: no bash extensions)
        _ok("bash", "--posix", "-n", script)


# -- systemd -------------------------------------------------------------------------------------
def _unit(path: Path) -> dict[str, list[str]]:
    """Unit file keys (section.Key -> every value, in order; systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _verify_root(deb: Path, where: Path) -> Path:
    """The package extracted, plus the host's targets/sockets/slices the units refer to."""
    root = where / "verify-root"
    _ok("dpkg-deb", "-x", deb, root)
    unit_dir = root / "lib" / "systemd" / "system"
    for pattern in ("*.target", "*.socket", "*.slice"):
        for f in Path("/lib/systemd/system").glob(pattern):
            if f.is_file() and not (unit_dir / f.name).exists():
                shutil.copyfile(f, unit_dir / f.name)
    return root


def test_units_pass_systemd_analyze_verify(deb: Path, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (apt-get install systemd; scripts/setup.sh)"
    root = _verify_root(deb, tmp_path)
    system_unit = "/lib/systemd/system/chargebridge-engine.service"
    out = _ok("systemd-analyze", "verify", f"--root={root}", system_unit)
    assert out.strip() == "", f"systemd-analyze verify warned:\n{out}"  # unknown keys only warn (rc 0)
    # The user unit: systemd 252 cannot verify user units under --root, so it is checked as a
    # system unit in the same root (the same parser: every key and value is checked).
    shutil.copyfile(root / "usr/lib/systemd/user/chargebridge-engine.service",
                    root / "lib/systemd/system/chargebridge-engine-user.service")
    out = _ok("systemd-analyze", "verify", f"--root={root}", "/lib/systemd/system/chargebridge-engine-user.service")
    assert out.strip() == "", f"systemd-analyze verify warned:\n{out}"

    # The check is real: without the ExecStart program, verify fails.
    (root / "opt/chargebridge/chargebridge").unlink()
    bad = _run("systemd-analyze", "verify", f"--root={root}", system_unit)
    assert bad.returncode != 0 and "/opt/chargebridge/chargebridge" in bad.stderr

    sec = _ok("systemd-analyze", "security", "--offline=true", f"--root={root}", system_unit)
    m = re.search(r"Overall exposure level for chargebridge-engine\.service: ([0-9.]+) (\w+)", sec)
    assert m, sec[-500:]
    print(f"\nsystem unit: systemd-analyze security exposure {m.group(1)} {m.group(2)} (0 = locked down, 10 = none)")
    assert float(m.group(1)) <= 2.0, f"the system unit's hardening regressed: exposure {m.group(1)}"

    system = _unit(root / system_unit.lstrip("/"))
    user = _unit(root / "usr/lib/systemd/user/chargebridge-engine.service")
    for unit in (system, user):
        assert unit["Service.Type"] == ["notify"] and unit["Service.NotifyAccess"] == ["main"]
        assert unit["Service.WatchdogSec"] == ["60"]
        assert unit["Service.Restart"] == ["on-failure"] and unit["Service.RestartPreventExitStatus"] == ["2"]
        assert unit["Service.ExecStart"] == ["/opt/chargebridge/chargebridge engine"]
    assert system["Service.User"] == system["Service.Group"] == ["chargebridge"]
    assert system["Service.EnvironmentFile"] == ["/etc/chargebridge/engine.env"]
    assert "CHARGEBRIDGE_HOME=/var/lib/chargebridge" in system["Service.Environment"]
    assert system["Service.ProtectSystem"] == ["strict"]
    assert "/var/lib/chargebridge" in system["Service.ReadWritePaths"]
    assert system["Install.WantedBy"] == ["multi-user.target"]
    assert "User" not in " ".join(user) and user["Install.WantedBy"] == ["default.target"]
    assert user["Service.Environment"] == ["CHARGEBRIDGE_HOME=%h/.local/share/ChargeBridge"]


# -- installing into a temporary root ------------------------------------------------------------
def _fake_root(where: Path) -> Path:
    root = where / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc", "usr/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text("")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    for name, line in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
        (root / "etc" / name).write_text(line)
        (root / "etc" / name).chmod(0o600)
    root.chmod(0o755)
    return root


def _dpkg(root: Path, *args: str | Path) -> str:
    return _ok("dpkg", f"--root={root}", "--force-not-root", "--force-script-chrootless", "--force-depends",
               "--log=/dev/null", *args)


def _entry(root: Path, db: str, name: str) -> list[str] | None:
    for line in (root / "etc" / db).read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line.split(":")
    return None


def _status(root: Path) -> str:
    proc = _run("dpkg", f"--root={root}", "-s", "chargebridge")
    m = re.search(r"^Status: (.*)$", proc.stdout, re.M)
    return m.group(1) if m else "not installed"


@pytest.fixture()
def host_accounts() -> Iterator[None]:
    """The host's account files must come out of every test unchanged."""
    before = {n: Path("/etc", n).read_bytes() for n in ("passwd", "group")}
    yield
    assert {n: Path("/etc", n).read_bytes() for n in ("passwd", "group")} == before, "the host's accounts changed"


def test_install_reinstall_remove_purge_in_a_temporary_root(deb: Path, tmp_path: Path, host_accounts: None) -> None:
    from agent.config import load

    root = _fake_root(tmp_path)
    _dpkg(root, "-i", deb)
    assert _status(root) == "install ok installed"

    user = _entry(root, "passwd", "chargebridge")
    assert user is not None, "postinst did not create the chargebridge user"
    assert user[5:] == ["/var/lib/chargebridge", "/usr/sbin/nologin"]
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000, "not a system user"
    group = _entry(root, "group", "chargebridge")
    assert group is not None and int(group[2]) == gid
    assert _entry(root, "shadow", "chargebridge") is not None

    home = root / "var/lib/chargebridge"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    config = home / "chargebridge.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    if IS_ROOT:
        assert (home.stat().st_uid, home.stat().st_gid) == (uid, gid)
        assert (config.stat().st_uid, config.stat().st_gid) == (uid, gid)
    assert load(config).key_source == "passphrase"  # the engine's own config loader
    env_file = root / "etc/chargebridge/engine.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert (root / "opt/chargebridge/chargebridge").is_file()
    assert os.readlink(root / "usr/bin/chargebridge") == "/opt/chargebridge/chargebridge"

    # IT configures it; the engine writes data.
    config.write_text(config.read_text() + "\n[api]\nport = 0\n")
    env_file.write_text(env_file.read_text() + f"CHARGEBRIDGE_PASSPHRASE={PASSPHRASE}\n")
    (home / "store.db").write_bytes(b"encrypted pages")

    _dpkg(root, "-i", deb)  # again: idempotent, keeps what IT changed
    assert [ln for ln in (root / "etc/passwd").read_text().splitlines() if ln.startswith("chargebridge:")] == [
        ":".join(user)]
    assert "port = 0" in config.read_text()
    assert PASSPHRASE in env_file.read_text()

    _dpkg(root, "-r", "chargebridge")  # remove: the program goes, the data stays
    assert _status(root) == "deinstall ok config-files"
    for gone in ("opt/chargebridge", "usr/bin/chargebridge", "lib/systemd/system/chargebridge-engine.service",
                 "usr/lib/systemd/user/chargebridge-engine.service", "usr/share/chargebridge"):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), f"{gone} survived remove"
    assert (home / "store.db").read_bytes() == b"encrypted pages"
    assert "port = 0" in config.read_text()
    assert PASSPHRASE in env_file.read_text()  # a conffile: kept until purge
    assert _entry(root, "passwd", "chargebridge") is not None  # the data's owner stays

    _dpkg(root, "-P", "chargebridge")  # purge: data, config and the user go
    assert _status(root) == "not installed"
    for gone in ("var/lib/chargebridge", "etc/chargebridge", "etc/xdg/autostart/chargebridge-tray.desktop"):
        assert not (root / gone).exists(), f"{gone} survived purge"
    for db in ("passwd", "group", "shadow", "gshadow"):
        assert _entry(root, db, "chargebridge") is None, f"chargebridge is still in {db}"

    # Purging again (or after a half-failed purge) is harmless.
    control = tmp_path / "control"
    _ok("dpkg-deb", "-e", deb, control)
    _ok(control / "postrm", "purge", env=dict(os.environ, DPKG_ROOT=str(root)))


# -- the installed engine, started the way the system unit starts it ----------------------------
def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _recv(sock: socket.socket) -> tuple[str, int, int]:
    """One datagram and its sender's (pid, uid), from SCM_CREDENTIALS as systemd reads them."""
    data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(3 * 4))
    pid = uid = -1
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            creds = array.array("i")
            creds.frombytes(payload[: 3 * creds.itemsize])
            pid, uid = creds[0], creds[1]
    return data.decode(), pid, uid


def run_installed_engine(deb: Path, where: Path, *, start_timeout: float, as_user: bool) -> dict[str, object]:
    """Installs ``deb`` into a temporary root under ``where`` and runs its engine with the system
    unit's ExecStart, Environment=, EnvironmentFile= and User= (mapped into that root), a notify
    socket and a watchdog; returns what happened. ``as_user``: switch to the package's user (needs
    root, and a program that user can run: the real bundle, copied into the root)."""
    root = _fake_root(where)
    _dpkg(root, "-i", deb)
    unit = _unit(root / "lib/systemd/system/chargebridge-engine.service")
    home = root / "var/lib/chargebridge"
    (home / "chargebridge.toml").write_text((home / "chargebridge.toml").read_text() + "\n[api]\nport = 0\n")
    env_path = root / unit["Service.EnvironmentFile"][0].lstrip("/")
    env_path.write_text(env_path.read_text() + f"CHARGEBRIDGE_PASSPHRASE={PASSPHRASE}\n")

    user = _entry(root, "passwd", unit["Service.User"][0])
    assert user is not None
    uid, gid = int(user[2]), int(user[3])
    cache = root / "var/cache/chargebridge"  # CacheDirectory= (systemd creates it, owned by User=)
    cache.mkdir(parents=True, mode=0o700)
    if IS_ROOT:
        os.chown(cache, uid, gid)

    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(root / user[5].lstrip("/"))}
    for item in unit["Service.Environment"]:
        k, _, v = item.partition("=")
        env[k] = str(root / v.lstrip("/")) if v.startswith("/") else v
    env.update(_env_file(env_path))
    sock_path = where / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock_path.chmod(0o777)  # the engine runs as the package's user
    env["NOTIFY_SOCKET"] = str(sock_path)
    env["WATCHDOG_USEC"] = "200000"  # pings every 0.1 s
    program, *args = shlex.split(unit["Service.ExecStart"][0])
    cmd = [str(root / program.lstrip("/")), *args]

    as_user = as_user and IS_ROOT
    result: dict[str, object] = {"uid": uid if as_user else os.geteuid(), "home": home}
    proc = subprocess.Popen(cmd, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, umask=0o077,
                            user=uid if as_user else None, group=gid if as_user else None,
                            extra_groups=[] if as_user else None)
    try:
        with sock:
            sock.settimeout(0.5)
            deadline = time.monotonic() + start_timeout
            while True:  # until READY=1, or the engine exits / the start timeout passes (as systemd)
                try:
                    ready, pid, sender_uid = _recv(sock)
                    break
                except TimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
            result.update(ready=ready, ready_pid=pid, ready_uid=sender_uid, main_pid=proc.pid)
            info = json.loads((home / "engine.json").read_text())
            result["health"] = requests.get(f"http://127.0.0.1:{info['port']}/api/v1/health", timeout=10).json()
            sock.settimeout(30)
            result["pings"] = [_recv(sock)[0] for _ in range(3)]
            proc.send_signal(signal.SIGTERM)
            msg = ""
            deadline = time.monotonic() + 60
            while msg != "STOPPING=1" and time.monotonic() < deadline:
                msg = _recv(sock)[0]
            result["stopping"] = msg
        result["exit"] = proc.wait(timeout=120)
    except (TimeoutError, OSError) as exc:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the installed engine did not notify ({type(exc).__name__}); stderr:\n{err.decode()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result["files"] = {p.name: (p.stat().st_uid, stat.S_IMODE(p.stat().st_mode)) for p in home.iterdir()}
    return result


def _check_engine_run(res: dict[str, object]) -> None:
    ready = str(res["ready"])
    assert ready.startswith("READY=1\n"), ready
    assert f"MAINPID={res['main_pid']}" in ready
    assert res["ready_pid"] == res["main_pid"], "READY=1 came from another process: NotifyAccess=main would drop it"
    assert res["ready_uid"] == res["uid"], "the engine did not run as the expected user"
    assert res["health"]["ok"] is True  # type: ignore[index]
    assert res["pings"] == ["WATCHDOG=1"] * 3
    assert res["stopping"] == "STOPPING=1"
    assert res["exit"] == 0
    files = res["files"]
    assert isinstance(files, dict)
    assert "store.salt" in files, "the store key was not derived from the passphrase (no salt file)"
    assert "store.db" in files
    owner, mode = files["store.db"]
    assert owner == res["uid"] and mode & 0o077 == 0, f"store.db uid {owner} mode {oct(mode)}"


def test_installed_engine_runs_as_the_system_unit_does(deb: Path, tmp_path: Path, host_accounts: None) -> None:
    # The stand-in's interpreter is this test's own (it may sit where the package's user cannot
    # go, e.g. under /root), so it keeps our user; test_real_frozen_bundle switches users.
    _check_engine_run(run_installed_engine(deb, tmp_path, start_timeout=120, as_user=False))


@pytest.mark.timeout(900)  # the session's PyInstaller build may happen in this test's setup
def test_real_frozen_bundle(frozen_exe: Path, tmp_path: Path, host_accounts: None) -> None:
    """The shipped thing: the PyInstaller bundle packed, listed, installed and run as a service."""
    bundle = frozen_exe.parent
    start = time.monotonic()
    deb = build_deb.build(bundle, tmp_path / "out", compress="gzip")
    seconds = time.monotonic() - start
    files = _contents(deb)
    bundled = [p for p in bundle.rglob("*") if p.is_file() or p.is_symlink()]
    packed = [p for p in files if p.startswith("/opt/chargebridge/") and not files[p][0].startswith("d")]
    assert len(packed) == len(bundled), f"{len(bundled)} files in the bundle, {len(packed)} under /opt/chargebridge"
    assert files["/opt/chargebridge/chargebridge"][0] == "-rwxr-xr-x"
    size_kib = int(_fields(deb)["Installed-Size"])
    print(f"\n.deb from the frozen bundle: {deb.stat().st_size / 1048576:.1f} MB (gzip) in {seconds:.1f} s, "
          f"Installed-Size {size_kib / 1024:.1f} MB, {len(packed)} files")
    # Under /tmp with 0755 parents: the engine runs as the package's user, which cannot enter
    # pytest's private 0700 temp folders.
    with tempfile.TemporaryDirectory(prefix="cb-deb-frozen-") as tmp:
        where = Path(tmp)
        where.chmod(0o755)
        res = run_installed_engine(deb, where, start_timeout=240, as_user=True)
    if IS_ROOT:
        assert res["uid"] != 0
    _check_engine_run(res)
