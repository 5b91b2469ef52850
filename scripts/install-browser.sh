#!/usr/bin/env bash
# The dashboard's browser test drives Debian's chromium (/usr/bin/chromium) through the Python
# playwright package; it never runs `playwright install` (no browser is downloaded). Install the
# Debian package when it is missing and we can (root, or passwordless sudo). Idempotent.
# Without it the browser test skips with the reason, except under CI=true where it fails.
set -u
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    SUDO=none
  fi
  if [ "$SUDO" != none ]; then
    echo "installing Debian's chromium for the browser test"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; }
  fi
fi
if [ -x "$CHROMIUM" ]; then
  echo "browser: $("$CHROMIUM" --version 2>/dev/null)"
  exit 0
fi
msg="chromium is not installed (sudo apt-get install chromium); the dashboard's browser test will skip"
if [ "${CI:-}" = "true" ]; then
  echo "error: $msg, and under CI it fails" >&2
  exit 1
fi
echo "note: $msg" >&2
exit 0
