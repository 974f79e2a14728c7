#!/usr/bin/env bash
# Install what the test suite needs beyond Go and the services: Debian's
# Chromium, which the browser tests (internal/e2e/web_test.go) drive
# headless at /usr/bin/chromium. Does nothing when it is there already, so
# `make test` and CI can call it every time. Needs root (or sudo) and apt.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_test_tools: $CHROMIUM is missing and apt-get is not available;" \
       "install Chromium and set CHROMIUM to its path" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install_test_tools: installing chromium (for the browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing on a fresh machine or a slim image.
if ! $sudo apt-get install -y chromium; then
  $sudo apt-get update
  $sudo apt-get install -y chromium
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "install_test_tools: chromium installed, but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "install_test_tools: $("$CHROMIUM" --version 2>/dev/null | head -1)" >&2
