#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis that the integration tests use are up: start
# whichever is down (Debian's packages), then wait for both. Fails if either stays down.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis_up; then
  echo "services: starting Redis" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

for _ in $(seq 1 60); do
  if pg_up && redis_up; then
    echo "services: PostgreSQL and Redis are up" >&2
    exit 0
  fi
  sleep 0.5
done
pg_up || echo "services: PostgreSQL at 127.0.0.1:5432 is unreachable" >&2
redis_up || echo "services: Redis at 127.0.0.1:6379 is unreachable" >&2
exit 1
