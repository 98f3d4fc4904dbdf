#!/usr/bin/env bash
# Runs a command with a real OS keyring: a private D-Bus session with gnome-keyring's Secret
# Service unlocked on a throw-away keyring directory. Used by the demo and the test suite so
# they exercise the same keyring path a desktop session would, without touching the user's.
set -euo pipefail
if [ "${CHARGEBRIDGE_IN_KEYRING_SESSION:-}" != 1 ]; then
  export CHARGEBRIDGE_IN_KEYRING_SESSION=1
  exec dbus-run-session -- "$0" "$@"
fi
kdir=$(mktemp -d)
trap 'rm -rf "$kdir"' EXIT
export XDG_DATA_HOME="$kdir"
# The login keyring is created unlocked with this throw-away password (it guards nothing real).
eval "$(printf 'chargebridge-session' | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"
export GNOME_KEYRING_CONTROL
"$@"
