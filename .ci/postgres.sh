#!/usr/bin/env bash
# Starts a PostgreSQL server from Debian's packages for defsync's tests and for `defsync serve
# --store postgres://…`, with a role and a database `defsync` (password `defsync`, local use
# only). Idempotent: it installs, creates and starts only what is missing. Runs as root (CI) or
# with sudo:
#
#   sudo bash .ci/postgres.sh
#   export DEFSYNC_TEST_POSTGRES=postgres://defsync:defsync@127.0.0.1:5432/defsync
#
# The last line it prints is that export, for `eval "$(bash .ci/postgres.sh | tail -n 1)"`.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  echo "postgres.sh: installing PostgreSQL from the distribution's packages" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
# A cluster listening on 5432, created if the package made none (as in some containers).
if ! pg_lsclusters -h | awk '{print $3}' | grep -qx 5432; then
  as_root pg_createcluster --port 5432 "$version" main >/dev/null
fi
cluster="$(pg_lsclusters -h | awk '$3 == 5432 {print $1 " " $2; exit}')"
if ! pg_lsclusters -h | awk '$3 == 5432 {print $4}' | grep -qx online; then
  # shellcheck disable=SC2086 # "version name", two words
  as_root pg_ctlcluster $cluster start
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
pg_isready -h 127.0.0.1 -p 5432 >&2

psql_admin() { as_root runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt -p 5432 "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'defsync'")" != 1 ]; then
  psql_admin -c "CREATE ROLE defsync LOGIN CREATEDB PASSWORD 'defsync'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'defsync'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE defsync OWNER defsync ENCODING 'UTF8' TEMPLATE template0"
fi

echo "export DEFSYNC_TEST_POSTGRES=postgres://defsync:defsync@127.0.0.1:5432/defsync"
