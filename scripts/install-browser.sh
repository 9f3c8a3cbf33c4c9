#!/usr/bin/env bash
# Installs the headless browser the dashboard's test drives: Debian's Chromium.
# Idempotent; run by `make test` (through the Makefile's browser stamp). Needs root
# or sudo, as the CI machine and a developer's container have.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install Chromium yourself (the browser test is skipped without it)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
