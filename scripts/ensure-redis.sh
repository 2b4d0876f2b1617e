#!/usr/bin/env bash
# Make sure the Redis the receiver SDK's tests use answers on 127.0.0.1:6379; start the
# local server if it is installed but stopped. Fails loudly otherwise: the suite never skips
# Redis.
set -euo pipefail
host=127.0.0.1
port=${CROUPIER_TEST_REDIS_PORT:-6379}
ready() { redis-cli -h "$host" -p "$port" ping 2>/dev/null | grep -q PONG; }
if ready; then exit 0; fi
if command -v redis-server >/dev/null 2>&1; then
  echo "Redis is down; starting a local server that keeps nothing on disk" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 60); do ready && exit 0; sleep 0.5; done
fi
echo "Redis is not reachable on $host:$port. Start it (see docs/operations.md)." >&2
exit 1
