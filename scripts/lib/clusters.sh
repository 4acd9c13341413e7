# Sourced by demo.sh, rehearse.sh and bench.sh: throwaway PostgreSQL clusters under a temporary directory,
# run as an unprivileged user when the script runs as root (PostgreSQL refuses root).
#
#   clusters_init NAME        # sets $bindir, $clientbin, $as_pg and $work (/tmp/pgbridge-NAME.XXXXXX)
#   start_cluster NAME PORT   # initdb + start; extra postgresql.conf lines on stdin
#   start_side NAME           # start_cluster on a free port with fsync off, version printed; sets ${NAME}_port
#   psql_on PORT ARGS...      # psql as postgres on database postgres, unaligned, stops at errors
#   stop_clusters             # immediate stop of every cluster, then remove $work
#   free_port                 # a free loopback port

clusters_init() {
  bindir=$(pg_config --bindir 2>/dev/null || true)
  [[ -x ${PGBRIDGE_PG_BIN:-}/initdb ]] && bindir=$PGBRIDGE_PG_BIN
  [[ -x $bindir/initdb ]] || bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r | head -n1)
  # psql and pgbench: the servers' own, or Debian's when the server binaries come without clients
  # (scripts/ensure-postgres-version.sh installs only initdb, pg_ctl and postgres).
  clientbin=$bindir
  [[ -x $clientbin/psql ]] || clientbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r | head -n1)
  as_pg=()
  if [[ $(id -u) -eq 0 ]]; then
    id pgbridge-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pgbridge-test
    as_pg=(runuser -u pgbridge-test --)
  fi
  work=$(mktemp -d "/tmp/pgbridge-$1.XXXXXX")
  chmod 755 "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_cluster() { # name port, extra settings on stdin
  local dir=$work/$1
  mkdir -p "$dir"
  if [[ ${#as_pg[@]} -gt 0 ]]; then chown pgbridge-test "$dir"; fi
  "${as_pg[@]}" "$bindir/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  {
    printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nwal_level = logical\n" "$2" "$dir"
    cat
  } >>"$dir/postgresql.conf"
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
}

start_side() { # name
  local port
  port=$(free_port)
  echo "fsync = off" | start_cluster "$1" "$port"
  printf -v "${1}_port" %s "$port"
  echo "   $1 is PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

psql_on() { # port args...
  local port=$1
  shift
  "$clientbin/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"
}

stop_clusters() {
  local dir
  for dir in "$work"/*/; do
    [[ -f $dir/PG_VERSION ]] && "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$work"
}
