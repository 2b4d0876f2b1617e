#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use answers on 127.0.0.1:5432; start the local cluster
# if it is installed but stopped. Fails loudly otherwise: the suite never skips PostgreSQL.
set -euo pipefail
# host and port come from CROUPIER_TEST_POSTGRES_URL when it is set
url=${CROUPIER_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}
port=5432; [ "$hostport" != "$host" ] && port=${hostport##*:}
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ready; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "PostgreSQL is down; starting the local cluster" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 60); do ready && exit 0; sleep 0.5; done
fi
echo "PostgreSQL is not reachable on $host:$port. Start it, or point CROUPIER_TEST_POSTGRES_URL" >&2
echo "at one (trust auth, a user that may CREATE DATABASE)." >&2
exit 1
