#!/usr/bin/env bash
# Debian tools the test suite drives for real, installed when missing and we can (root, or
# passwordless sudo). Idempotent.
# - chromium (/usr/bin/chromium): the dashboard's browser tests, through the Python playwright
#   package; never `playwright install` (no browser is downloaded).
# - docker-compose: validates docker-compose.yml offline (`docker-compose config`).
# Without them those tests skip with the reason, except under CI=true where they fail.
set -u
CHROMIUM=/usr/bin/chromium
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    SUDO=none
  fi
  if [ "$SUDO" != none ]; then
    echo "installing Debian's ${missing[*]} for the tests"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; }
  fi
fi
status=0
if [ -x "$CHROMIUM" ]; then
  echo "browser: $("$CHROMIUM" --version 2>/dev/null)"
else
  msg="chromium is not installed (sudo apt-get install chromium); the browser tests will skip"
  if [ "${CI:-}" = "true" ]; then echo "error: $msg, and under CI they fail" >&2; status=1
  else echo "note: $msg" >&2; fi
fi
if command -v docker-compose >/dev/null 2>&1; then
  echo "compose: $(docker-compose version --short 2>/dev/null || docker-compose --version)"
else
  msg="docker-compose is not installed (sudo apt-get install docker-compose); the compose test will skip"
  if [ "${CI:-}" = "true" ]; then echo "error: $msg, and under CI it fails" >&2; status=1
  else echo "note: $msg" >&2; fi
fi
exit $status
