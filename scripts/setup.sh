#!/usr/bin/env bash
# Installs what ChargeBridge needs on a fresh Debian + Python 3.11 machine: the system packages
# for the real test peers (gnome-keyring's Secret Service, D-Bus) and a venv with the project.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gnome-keyring-daemon >/dev/null 2>&1 || need_apt+=(gnome-keyring)
command -v dbus-run-session >/dev/null 2>&1 || need_apt+=(dbus-bin dbus-daemon)
# the tray's end-to-end tests: a virtual screen, a real XEmbed tray, Qt's xcb needs, screenshots
command -v Xvfb >/dev/null 2>&1 || need_apt+=(xvfb)
command -v trayer >/dev/null 2>&1 || need_apt+=(trayer)
command -v import >/dev/null 2>&1 || need_apt+=(imagemagick)
command -v xdotool >/dev/null 2>&1 || need_apt+=(xdotool x11-utils)
# the EHR database connectors' tests: real MariaDB and PostgreSQL servers started by fixtures
command -v mariadbd >/dev/null 2>&1 || need_apt+=(mariadb-server)
[ -x "$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | tail -n1)" ] || need_apt+=(postgresql)
# the clearinghouse SFTP tests: a real OpenSSH server started by tests/sftp_fixture.py
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
# the .deb tests (tests/e2e/test_deb.py): unit files checked by systemd-analyze, the autostart entry
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v desktop-file-validate >/dev/null 2>&1 || need_apt+=(desktop-file-utils)
# the monthly PDF report's test renders its first page to PNG (poppler's pdftoppm)
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
for pkg in libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0 \
           libxcb-render-util0 libxcb-image0 libxcb-shape0 libegl1 libgl1 libfontconfig1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")  # each one: a machine may have some of them
done
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please run: sudo apt-get install ${need_apt[*]}" >&2
    exit 2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.chargebridge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# The local FHIR R4 RCM peer (Medplum's engine on Node 22 from npm) used by the demo and tests.
if command -v npm >/dev/null 2>&1; then
  bash tests/peer/install.sh >/dev/null
else
  echo "setup: npm not found; the demo's local RCM and the sync tests need it (apt-get install npm)" >&2
fi
