#!/usr/bin/env bash
# The integration and end-to-end tests talk to a real PostgreSQL (127.0.0.1:5432, user postgres)
# and a real Redis (127.0.0.1:6379). Start them when they are installed but stopped; in CI
# (CI=true) a missing server is an error, elsewhere the tests that need it are skipped with a reason.
set -u
PG_HOST=${TRAINYARD_TEST_PG_HOST:-127.0.0.1}
REDIS_PORT=6379

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if ! port_open "$PG_HOST" 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! port_open 127.0.0.1 "$REDIS_PORT"; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no || true
  fi
fi
sleep 0.5
missing=""
port_open "$PG_HOST" 5432 || missing="$missing PostgreSQL(127.0.0.1:5432)"
port_open 127.0.0.1 "$REDIS_PORT" || missing="$missing Redis(127.0.0.1:$REDIS_PORT)"
if [ -n "$missing" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "error: test servers not reachable:$missing. Install and start them (Debian: postgresql redis-server)." >&2
    exit 1
  fi
  echo "warning: not reachable:$missing; tests that need them will be skipped." >&2
fi
exit 0
