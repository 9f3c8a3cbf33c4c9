#!/usr/bin/env bash
# Installs what the tests need beyond Python, from Debian's packages:
#   chromium      the headless browser the dashboard's test drives
#   redis-server  the private Redis the backend tests start (127.0.0.1, a free port,
#                 a password; started and stopped by the tests themselves)
# Idempotent; run by `make test` (through the Makefile's stamp). Needs root or sudo,
# as the CI machine and a developer's container have.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-services: no apt-get here; install ${missing[*]} yourself" \
        "(the tests that need them are skipped without them, except under CI)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-test-services: installed ${missing[*]}"
