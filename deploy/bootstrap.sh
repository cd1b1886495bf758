#!/usr/bin/env bash
# Sets up everything buzón and its tests need on a fresh Debian machine with Python 3.11:
# the Debian packages the real-server tests use, and a virtualenv with buzón installed.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# postfix: tests/test_postfix.py starts private instances; systemd: systemd-analyze;
# chromium + chromium-driver: the console's browser tests (no browser download).
DEBS=(python3-venv dovecot-imapd swaks ca-certificates postfix systemd chromium chromium-driver)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  # Postfix "No configuration": no /etc/postfix/main.cf, so no system-wide MTA starts
  # or listens on port 25; the tests run their own instances on loopback ports.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.buzon-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
