#!/bin/sh
# Installs Debian's chromium for tests/test_report_browser.py (headless rendering of the HTML report).
# Does nothing when a chromium is already on PATH; needs root and apt-get otherwise.
set -eu
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium: already installed ($(command -v chromium || command -v chromium-browser))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium: not installed and apt-get is not available; install chromium with your package manager" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium: not installed; run as root (or: sudo sh tools/install_browser.sh)" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
echo "chromium: installed ($(command -v chromium))"
