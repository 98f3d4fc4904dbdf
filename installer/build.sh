#!/usr/bin/env bash
# Builds the onedir bundle dist/chargebridge/ (executable dist/chargebridge/chargebridge) from the
# project's venv, checks every bundled shared library resolves inside the bundle, and prints the
# size with what dominates it.  Usage:  bash installer/build.sh   (from anywhere)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY="${CHARGEBRIDGE_PYTHON:-$ROOT/.venv/bin/python}"
if ! "$PY" -c 'import PyInstaller' 2>/dev/null; then
  echo "build.sh: PyInstaller is not installed in $PY (pip install -e '.[test]')" >&2
  exit 2
fi
"$PY" -m PyInstaller installer/chargebridge.spec --noconfirm --clean \
  --workpath "$ROOT/build" --distpath "$ROOT/dist" --log-level "${PYI_LOG_LEVEL:-WARN}"
DIST="$ROOT/dist/chargebridge"
test -x "$DIST/chargebridge" || { echo "build.sh: $DIST/chargebridge was not produced" >&2; exit 1; }

# Every ELF in the bundle must find its libraries in the bundle or the base system.
if [ "$(uname -s)" = Linux ] && command -v ldd >/dev/null; then
  missing=$(find "$DIST/_internal" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 |
    LD_LIBRARY_PATH="$DIST/_internal" xargs -0 -n 50 ldd 2>/dev/null | grep 'not found' | sort -u || true)
  if [ -n "$missing" ]; then
    echo "build.sh: unresolved shared libraries in the bundle:" >&2
    echo "$missing" >&2
    exit 1
  fi
fi

set +o pipefail  # the report below pipes into head
echo
echo "dist/chargebridge: $(du -sh "$DIST" | cut -f1) ($(find "$DIST" -type f | wc -l) files)"
echo "largest parts:"
( cd "$DIST/_internal" && du -sk -- * .[!.]* 2>/dev/null | sort -rn | head -12 |
  awk '{printf "  %7.1f MB  %s\n", $1/1024, $2}' )
echo "largest files:"
find "$DIST" -type f -printf '%s %P\n' | sort -rn | head -12 | awk '{printf "  %7.1f MB  %s\n", $1/1048576, $2}'
exit 0
