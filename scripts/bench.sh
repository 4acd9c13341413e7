#!/usr/bin/env bash
# End-to-end benchmark: pgbridge against PostgreSQL's own logical replication (a native
# subscription), on the same backlog, in the same run, on this machine.
#
#   scripts/bench.sh                 # workloads 1 and 2 at full size
#   BENCH_TX=2000 BENCH_ROWS=100000 scripts/bench.sh   # smaller, for a quick look
#
# Workload 1: pgbench TPC-B-like, BENCH_TX transactions per client x 4 clients, written while
#             both consumers are stopped; then each drains the backlog alone, timed.
# Workload 2: one transaction inserting BENCH_ROWS rows, same procedure.
# Both consumers read the same WAL (one slot each) and write to separate blue databases.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
tx_per_client=${BENCH_TX:-5000}
rows=${BENCH_ROWS:-1000000}

scripts/ensure-postgres.sh
bindir=$(pg_config --bindir 2>/dev/null || true)
[[ -x ${PGBRIDGE_PG_BIN:-}/initdb ]] && bindir=$PGBRIDGE_PG_BIN
[[ -x $bindir/initdb ]] || bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r | head -n1)
echo "building pgbridge (release)..." >&2
cargo build --release --quiet
pgbridge=$repo/target/release/pgbridge

as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  id pgbridge-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pgbridge-test
  as_pg=(runuser -u pgbridge-test --)
fi
work=$(mktemp -d /tmp/pgbridge-bench.XXXXXX)
chmod 755 "$work"
bridge_pid=""
cleanup() {
  set +e
  [[ -n $bridge_pid ]] && kill "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
  for side in green blue; do
    [[ -d $work/$side ]] && "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/$side" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_cluster() { # name port
  local dir=$work/$1
  mkdir -p "$dir"
  [[ ${#as_pg[@]} -gt 0 ]] && chown pgbridge-test "$dir"
  "${as_pg[@]}" "$bindir/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  cat >>"$dir/postgresql.conf" <<CONF
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_wal_size = 4GB
shared_buffers = 256MB
CONF
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
}
gp=$(free_port); bp=$(free_port)
start_cluster green "$gp"
start_cluster blue "$bp"
psql_at() { local port=$1 db=$2; shift 2; "$bindir/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
green() { psql_at "$gp" app "$@"; }

psql_at "$gp" postgres -c "CREATE DATABASE app"
for db in native bridge; do psql_at "$bp" postgres -c "CREATE DATABASE $db"; done
"$bindir/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$gp" -U postgres app >/dev/null 2>&1
green -c "CREATE TABLE bulk (id bigint PRIMARY KEY, a int, b text, c timestamptz); ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
for db in native bridge; do
  "$bindir/pg_dump" -s -h 127.0.0.1 -p "$gp" -U postgres app | psql_at "$bp" "$db" >/dev/null
  # Same starting rows on both sides.
  "$bindir/pg_dump" -a -h 127.0.0.1 -p "$gp" -U postgres app | psql_at "$bp" "$db" >/dev/null
done
green -c "CREATE PUBLICATION native FOR ALL TABLES"
psql_at "$bp" native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$gp user=postgres dbname=app' PUBLICATION native WITH (copy_data = false, enabled = false)"

cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/app"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/bridge"
[metrics]
listen = "127.0.0.1:$(free_port)"
TOML
export PGBRIDGE_CONFIG=$work/pgbridge.toml
"$pgbridge" setup >/dev/null

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
caught_up_native() { # lsn
  [[ $(green -c "SELECT confirmed_flush_lsn >= '$1' FROM pg_replication_slots WHERE slot_name = 'native'") == t ]]
}
caught_up_bridge() { # lsn
  [[ $(psql_at "$bp" bridge -c "SELECT lsn >= '$1' FROM pgbridge.checkpoint") == t ]]
}

drain_native() { # target_lsn -> seconds
  local t0; t0=$(now)
  psql_at "$bp" native -c "ALTER SUBSCRIPTION native ENABLE"
  until caught_up_native "$1"; do sleep 0.01; done
  local t1; t1=$(now)
  psql_at "$bp" native -c "ALTER SUBSCRIPTION native DISABLE"
  calc "$t1 - $t0"
}
drain_bridge() { # target_lsn -> "seconds peak_rss_mb"
  local t0; t0=$(now)
  "$pgbridge" run >>"$work/pgbridge.log" 2>&1 &
  bridge_pid=$!
  until caught_up_bridge "$1"; do sleep 0.01; done
  local t1; t1=$(now)
  local rss; rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$bridge_pid/status")
  local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$bridge_pid/stat")
  echo "   pgbridge: $(calc "$t1 - $t0") s wall, $(calc "$ticks / $(getconf CLK_TCK)") s CPU" >&2
  kill -TERM "$bridge_pid"; wait "$bridge_pid" || true; bridge_pid=""
  echo "$(calc "$t1 - $t0") $rss"
}
# After each workload, wait until neither consumer is behind before the next backlog.
settle() {
  local lsn; lsn=$(green -c "SELECT pg_logical_emit_message(true, 'bench', 'settle')")
  drain_native "$lsn" >/dev/null
  drain_bridge "$lsn" >/dev/null
}
compare() { # table
  local q="SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM $1 t"
  [[ $(psql_at "$bp" native -c "$q") == $(psql_at "$bp" bridge -c "$q") ]] || { echo "MISMATCH in $1" >&2; exit 1; }
}

results=()
report() { # name unit amount native_s bridge_s rss
  local native_rate bridge_rate ratio
  native_rate=$(calc "$3 / $4"); bridge_rate=$(calc "$3 / $5"); ratio=$(calc "$bridge_rate / $native_rate")
  results+=("$(printf '| %-38s | %12.0f %-6s | %12.0f %-6s | %5.2fx | %6s MB |' "$1" "$native_rate" "$2" "$bridge_rate" "$2" "$ratio" "$6")")
}

echo "workload 1: pgbench -c 4 -t $tx_per_client on green with both consumers stopped..." >&2
"$bindir/pgbench" -n -c 4 -j 2 -t "$tx_per_client" -h 127.0.0.1 -p "$gp" -U postgres app >/dev/null 2>&1
target=$(green -c "SELECT pg_current_wal_lsn()")
n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do compare "$t"; done
report "1. backlog drain, pgbench TPC-B" "tx/s" "$((4 * tx_per_client))" "$n" "$b" "$rss"

echo "workload 2: one transaction inserting $rows rows..." >&2
green -c "INSERT INTO bulk SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, $rows) g"
target=$(green -c "SELECT pg_current_wal_lsn()")
n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"
compare bulk
report "2. backlog drain, one $rows-row tx" "rows/s" "$rows" "$n" "$b" "$rss"

if [[ -n ${BENCH_BIG_MB:-} ]]; then
  # Workload 4: pgbridge alone, one transaction of about BENCH_BIG_MB MB of row data; the point
  # is pgbridge's peak memory (target: under 150 MB for 1 GB).
  echo "workload 4: one transaction with about ${BENCH_BIG_MB} MB of row data..." >&2
  green -c "CREATE TABLE big (id bigint PRIMARY KEY, pad text)"
  psql_at "$bp" bridge -c "CREATE TABLE big (id bigint PRIMARY KEY, pad text)"
  green -c "ALTER PUBLICATION pgbridge ADD TABLE big" 2>/dev/null || true
  green -c "INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, ${BENCH_BIG_MB} * 2048) g"
  target=$(green -c "SELECT pg_current_wal_lsn()")
  read -r b rss <<<"$(drain_bridge "$target")"
  results+=("$(printf '| %-38s | %21s | %12.0f %-8s | %6s | %6s MB |' "4. one ${BENCH_BIG_MB} MB transaction" "-" "$(calc "${BENCH_BIG_MB} * 2048 / $b")" "rows/s" "-" "$rss")")
fi

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, $("$bindir/postgres" --version); identity mapping"
echo "| workload                               | native                | pgbridge              | ratio  | peak RSS  |"
echo "|----------------------------------------|-----------------------|-----------------------|--------|-----------|"
printf '%s\n' "${results[@]}"
