"""Builds the Linux package ``chargebridge_<version>_<arch>.deb`` from a frozen bundle.

    .venv/bin/python installer/deb/build_deb.py                 # dist/chargebridge -> dist/*.deb
    .venv/bin/python installer/deb/build_deb.py --bundle DIR --out DIR [--compress gzip]

What goes where (installer/README.md explains it for IT):

=================================================  =============================================
/opt/chargebridge/                                 the PyInstaller bundle (dist/chargebridge/)
/usr/bin/chargebridge                              symlink to /opt/chargebridge/chargebridge
/lib/systemd/system/chargebridge-engine.service    SYSTEM unit (dedicated user, passphrase key)
/usr/lib/systemd/user/chargebridge-engine.service  USER unit (signed-in user, OS keyring)
/etc/xdg/autostart/chargebridge-tray.desktop       the tray at desktop sign-in (conffile)
/etc/chargebridge/engine.env                       the system service's passphrase (0600, conffile)
/usr/share/chargebridge/chargebridge-system.toml   config seeded into /var/lib/chargebridge
/usr/share/doc/chargebridge/                       README.md (installer/README.md), copyright
=================================================  =============================================

The tree is staged in a temporary folder with normalised modes (directories 0755, files 0644,
executables 0755, engine.env 0600) and packed by ``dpkg-deb --build --root-owner-group`` (every
file root:root; no fakeroot needed). Maintainer scripts: installer/deb/{postinst,prerm,postrm}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LINUX = ROOT / "installer" / "linux"

PACKAGE = "chargebridge"
PREFIX = "/opt/chargebridge"
# The tray's system libraries (the bundle takes X11/xcb, fontconfig/freetype, D-Bus and GLib from
# the system: installer/chargebridge.spec, LINUX_SYSTEM_LIBS). GL/EGL pull in Mesa (~100 MB with
# LLVM): only the tray needs them, so they are Recommends — a headless server installs with
# --no-install-recommends and runs the engine and CLI, which load none of these.
DEPENDS = ["libc6 (>= 2.36)", "passwd", "libx11-6", "libx11-xcb1", "libxcb1", "libfontconfig1",
           "libfreetype6", "libdbus-1-3", "libglib2.0-0"]
RECOMMENDS = ["libgl1", "libegl1"]
CONFFILES = ["/etc/chargebridge/engine.env", "/etc/xdg/autostart/chargebridge-tray.desktop"]
SCRIPTS = ("postinst", "prerm", "postrm")
DESCRIPTION = """\
EHR-to-billing charge bridge for small medical practices
 ChargeBridge watches EHR export folders (HL7 v2, CSV, FHIR R4, C-CDA), validates every
 encounter, keeps it in an encrypted store and syncs the charges exactly once to the
 practice's billing system, with a tray icon and a review window.
 .
 The engine runs either as a systemd system service under a dedicated user (passphrase key)
 or as a user service for a signed-in user (key in the desktop keyring). Neither is enabled
 by the package; see /usr/share/doc/chargebridge/README.md."""


class BuildError(RuntimeError):
    pass


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()


def system_config() -> str:
    """The engine's default configuration with ``key_source = "passphrase"``: a system user has
    no desktop keyring. Derived from agent.config so every other default stays the product's."""
    sys.path.insert(0, str(ROOT))
    from agent.config import DEFAULT_CONFIG

    line = 'key_source = "keyring"'
    if DEFAULT_CONFIG.count(line) != 1:
        raise BuildError(f"agent.config.DEFAULT_CONFIG has no single '{line}' line to switch to passphrase mode")
    head = ("# ChargeBridge configuration of the SYSTEM service (/var/lib/chargebridge), seeded by the\n"
            "# package. The passphrase is CHARGEBRIDGE_PASSPHRASE in /etc/chargebridge/engine.env.\n")
    return head + DEFAULT_CONFIG.replace(line, 'key_source = "passphrase"')


def _copy(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _normalise(tree: Path) -> None:
    """Directories 0755, files 0644 or 0755 (any execute bit), symlinks as they are."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        d = Path(dirpath)
        d.chmod(0o755)
        for name in filenames:
            p = d / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"{p.relative_to(tree)} is not a regular file")
            p.chmod(0o755 if st.st_mode & 0o111 else 0o644)


def _installed_size_kib(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, filenames in os.walk(tree):
        for name in filenames:
            st = (Path(dirpath) / name).lstat()
            total += (st.st_size + 1023) // 1024 if stat.S_ISREG(st.st_mode) else 1
        total += 1
    return total


def control(version: str, arch: str, installed_kib: int) -> str:
    return (f"Package: {PACKAGE}\n"
            f"Version: {version}\n"
            f"Architecture: {arch}\n"
            "Maintainer: ChargeBridge IT <it@chargebridge.invalid>\n"
            f"Installed-Size: {installed_kib}\n"
            f"Depends: {', '.join(DEPENDS)}\n"
            f"Recommends: {', '.join(RECOMMENDS)}\n"
            "Section: misc\n"
            "Priority: optional\n"
            f"Description: {DESCRIPTION}\n")


def stage(bundle: Path, staging: Path, version: str, arch: str) -> Path:
    """Lays the package tree out under ``staging``; returns it."""
    exe = bundle / "chargebridge"
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise BuildError(f"{exe} is not an executable: build the bundle first (bash installer/build.sh)")
    opt = staging / PREFIX.lstrip("/")
    opt.parent.mkdir(parents=True)
    shutil.copytree(bundle, opt, symlinks=True)
    (staging / "usr" / "bin").mkdir(parents=True)
    (staging / "usr" / "bin" / "chargebridge").symlink_to(f"{PREFIX}/chargebridge")
    _copy(LINUX / "system" / "chargebridge-engine.service",
          staging / "lib/systemd/system/chargebridge-engine.service", 0o644)
    _copy(LINUX / "chargebridge-engine.service", staging / "usr/lib/systemd/user/chargebridge-engine.service", 0o644)
    _copy(LINUX / "chargebridge-tray.desktop", staging / "etc/xdg/autostart/chargebridge-tray.desktop", 0o644)
    _copy(HERE / "engine.env", staging / "etc/chargebridge/engine.env", 0o644)  # 0600 after _normalise
    share = staging / "usr/share/chargebridge"
    share.mkdir(parents=True)
    (share / "chargebridge-system.toml").write_text(system_config(), encoding="utf-8")
    doc = staging / "usr/share/doc/chargebridge"
    _copy(ROOT / "installer" / "README.md", doc / "README.md", 0o644)
    (doc / "copyright").write_text(
        "ChargeBridge\n\nThe bundle under /opt/chargebridge contains Python, Qt (PySide6, LGPLv3) and the\n"
        "Python packages listed in /opt/chargebridge/_internal/*.dist-info, each under its own licence.\n",
        encoding="utf-8")
    _normalise(staging)
    (staging / "etc/chargebridge/engine.env").chmod(0o600)
    (staging / "etc/chargebridge").chmod(0o755)

    debian = staging / "DEBIAN"
    debian.mkdir()
    for name in SCRIPTS:
        _copy(HERE / name, debian / name, 0o755)
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in CONFFILES), encoding="utf-8")
    (debian / "control").write_text(control(version, arch, _installed_size_kib(staging)), encoding="utf-8")
    for p in (debian / "conffiles", debian / "control"):
        p.chmod(0o644)
    debian.chmod(0o755)
    return staging


def build(bundle: Path, out_dir: Path, *, version: str | None = None, arch: str | None = None,
          compress: str = "xz") -> Path:
    """Stages and packs the .deb into ``out_dir``; returns its path."""
    version = version or project_version()
    arch = arch or host_arch()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    with tempfile.TemporaryDirectory(prefix="chargebridge-deb-") as tmp:
        staging = stage(bundle.resolve(), Path(tmp) / "root", version, arch)
        proc = subprocess.run(["dpkg-deb", "--build", "--root-owner-group", f"-Z{compress}", str(staging),
                               str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"dpkg-deb failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "dist" / "chargebridge",
                    help="the frozen onedir bundle (default dist/chargebridge)")
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes (default dist/)")
    ap.add_argument("--version", help="package version (default: pyproject's)")
    ap.add_argument("--arch", help="Debian architecture (default: this machine's)")
    ap.add_argument("--compress", default="xz", choices=["xz", "gzip", "zstd", "none"])
    ns = ap.parse_args(argv)
    try:
        deb = build(ns.bundle, ns.out, version=ns.version, arch=ns.arch, compress=ns.compress)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 2
    print(f"{deb} ({deb.stat().st_size / 1048576:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
