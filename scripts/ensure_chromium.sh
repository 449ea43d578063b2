#!/usr/bin/env bash
# The live monitor's browser tests drive Debian's headless Chromium (Playwright's own browser
# download cannot work here). Installs it when missing; CI runs as root with Debian's registry.
set -euo pipefail
command -v chromium >/dev/null && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
