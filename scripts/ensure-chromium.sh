#!/bin/sh
# Installs Debian's headless Chromium and its driver for the dashboard's browser tests
# (tests/test_dashboard_*.py drive /usr/bin/chromium through Playwright). Quiet, idempotent.
set -e
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-noto-cjk >/dev/null
