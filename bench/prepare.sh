#!/usr/bin/env bash
# What `make bench` needs besides the venv: Debian's wrk, and PostgreSQL up on 127.0.0.1:5432.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)"
  $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null; }
fi

# A server named by BENCH_POSTGRES_URL is the caller's to run.
[ -n "${BENCH_POSTGRES_URL:-}" ] && exit 0

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is down; starting it"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    for _ in $(seq 1 30); do
      pg_isready -h 127.0.0.1 -p 5432 -q && break
      sleep 1
    done
  fi
  pg_isready -h 127.0.0.1 -p 5432 -q \
    || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 (set BENCH_POSTGRES_URL)" >&2; exit 1; }
fi
