#!/bin/sh
# Installs the ChargeBridge engine's LaunchAgent for the user running it (not root) and starts it:
#   sh install-launchagent.sh            install + load (launchctl bootstrap gui/<uid>)
#   sh install-launchagent.sh --print    print the plist for this user, change nothing
#   sh install-launchagent.sh --remove   unload and delete it (the home and its data stay)
# launchd expands neither ~ nor $HOME in a plist: @HOME@ is replaced here. Untested on macOS in
# this project's CI (Linux); see installer/README.md, "macOS".
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
LABEL=com.chargebridge.engine
TEMPLATE="$HERE/$LABEL.plist"
TARGET="$HOME/Library/LaunchAgents/$LABEL.plist"

render() {
    case "$HOME" in
        *'#'*|*'&'*|*'<'*|*'>'*) echo "install-launchagent: unsupported character in HOME ($HOME)" >&2; exit 2 ;;
    esac
    sed "s#@HOME@#$HOME#g" "$TEMPLATE"
}

case "${1:-}" in
    --print)
        render
        ;;
    --remove)
        launchctl bootout "gui/$(id -u)/$LABEL" 2>/dev/null || true
        rm -f "$TARGET"
        ;;
    "")
        if [ "$(id -u)" = 0 ]; then
            echo "install-launchagent: run it as the practice user, not root" >&2
            exit 2
        fi
        mkdir -p "$HOME/Library/LaunchAgents" "$HOME/Library/Logs/ChargeBridge"
        render > "$TARGET.tmp"
        mv "$TARGET.tmp" "$TARGET"
        launchctl bootout "gui/$(id -u)/$LABEL" 2>/dev/null || true
        launchctl bootstrap "gui/$(id -u)" "$TARGET"
        ;;
    *)
        echo "usage: install-launchagent.sh [--print | --remove]" >&2
        exit 2
        ;;
esac
