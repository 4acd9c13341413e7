# shellcheck shell=bash
# Sourced by the benchmark scripts (bench.sh, bench-latency.sh): the server version they run on,
# the settings both servers get, psql on either, building pgbridge and cleaning up.
#
#   bench_select_server        # PostgreSQL 15 from Debian, or BENCH_PG=16|17|18 from npm (as the
#                              # tests select it); exports PGBRIDGE_PG_BIN for clusters_init
#   bench_settings             # postgresql.conf lines for green and blue, on stdout
#   psql_at PORT DB ARGS...    # psql as postgres, unaligned, quiet, stops at errors ($clientbin)
#   bench_build                # builds pgbridge (release) into $pgbridge ($repo: the checkout)
#   trap bench_cleanup EXIT    # on exit: stops the pgbridge in $bridge_pid, then the clusters

bench_select_server() {
  scripts/ensure-postgres.sh
  if [[ -n ${BENCH_PG:-} ]]; then
    PGBRIDGE_PG_BIN=$(scripts/ensure-postgres-version.sh "$BENCH_PG")
    export PGBRIDGE_PG_BIN
  fi
}

bench_settings() {
  cat <<'CONF'
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = 4GB
shared_buffers = 256MB
track_commit_timestamp = on
# the launcher restarts a just-enabled subscription's worker only after this
wal_retrieve_retry_interval = 50ms
CONF
}

# shellcheck disable=SC2154 # $clientbin is set by clusters_init (lib/clusters.sh)
psql_at() { # port db args...
  local port=$1 db=$2
  shift 2
  "$clientbin/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}

bench_build() {
  echo "building pgbridge (release)..." >&2
  cargo build --release --quiet
  # shellcheck disable=SC2034 # used by the scripts that source this
  pgbridge=${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge
}

bridge_pid=""
bench_cleanup() {
  set +e
  [[ -n $bridge_pid ]] && kill "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
  stop_clusters
}
