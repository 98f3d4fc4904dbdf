#!/usr/bin/env bash
# Static checks that run with the test suite (make test, .ci/run): ruff, mypy, import contracts.
# Each runs even if an earlier one failed, so one run shows everything; the exit code is non-zero
# if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "check: ruff";          .venv/bin/ruff check . || rc=1
echo "check: mypy";          .venv/bin/mypy || rc=1
echo "check: import contracts"; .venv/bin/lint-imports || rc=1
exit $rc
