#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries exist for the integration tests, which start their own
# clusters (tests/support/cluster.rs searches the same places in the same order). When they are
# missing, installs Debian's postgresql-15 without leaving the packaged "main" cluster running;
# also installs pgbouncer for tests/pooler.rs. Idempotent, and silent when both are there.
set -euo pipefail

# Prints the first directory holding initdb and psql: $PGBRIDGE_PG_BIN, pg_config --bindir, or
# the newest /usr/lib/postgresql/*/bin.
find_bindir() {
  if [[ -n "${PGBRIDGE_PG_BIN:-}" ]]; then
    echo "$PGBRIDGE_PG_BIN"
    return 0
  fi
  local dir
  if dir=$(pg_config --bindir 2>/dev/null) && [[ -x "$dir/initdb" ]]; then
    echo "$dir"
    return 0
  fi
  while read -r dir; do
    if [[ -x "$dir/initdb" ]]; then
      echo "$dir"
      return 0
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  return 1
}

complete() {
  [[ -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" && -x "$1/psql" ]]
}

# PgBouncer (Debian's package) for the tests that put a connection pooler in front of blue
# (tests/pooler.rs, which also honours PGBRIDGE_PGBOUNCER). Installed when missing, never left
# running.
ensure_pgbouncer() {
  [[ -n "${PGBRIDGE_PGBOUNCER:-}" || -x /usr/sbin/pgbouncer ]] && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "ensure-postgres: installing pgbouncer with apt-get" >&2
    # shellcheck source=lib/apt.sh
    . "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
    apt_install_quietly pgbouncer
    # Its packaged service is not wanted (the tests start their own); apt_install_quietly kept
    # it from starting, this is in case a policy allowed it.
    command -v service >/dev/null && { service pgbouncer stop >/dev/null 2>&1 || true; }
  else
    echo "ensure-postgres: pgbouncer not found, so tests/pooler.rs will fail; install Debian's pgbouncer package" >&2
  fi
  return 0
}
ensure_pgbouncer

if bindir=$(find_bindir) && complete "$bindir"; then
  exit 0
fi
if [[ -n "${PGBRIDGE_PG_BIN:-}" ]]; then
  echo "ensure-postgres: PGBRIDGE_PG_BIN=$PGBRIDGE_PG_BIN lacks initdb, pg_ctl, postgres or psql; fix it or unset it" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ensure-postgres: PostgreSQL server binaries not found; run this script as root or install postgresql-15" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-postgres: PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL and set PGBRIDGE_PG_BIN to its bin directory" >&2
  exit 1
fi

echo "ensure-postgres: installing PostgreSQL with apt-get" >&2
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt-get update -qq
if apt-cache show postgresql-15 >/dev/null 2>&1; then
  packages=(postgresql-15 postgresql-client-15)
else
  packages=(postgresql postgresql-client)
fi
apt_install_quietly "${packages[@]}"

# In case the cluster started anyway (a policy-rc.d existed already and allowed it).
for conf in /etc/postgresql/*/main; do
  [[ -d $conf ]] || continue
  version=$(basename "$(dirname "$conf")")
  pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
done

if ! bindir=$(find_bindir) || ! complete "$bindir"; then
  echo "ensure-postgres: installed ${packages[*]} but still found no initdb and psql" >&2
  exit 1
fi
echo "ensure-postgres: PostgreSQL binaries in $bindir" >&2
