#!/usr/bin/env bash
# End-to-end benchmark: pgbridge against PostgreSQL's own logical replication (a native
# subscription), on the same backlog, in the same run, on this machine.
#
#   scripts/bench.sh                 # workloads 1 and 2 at full size
#   BENCH_TX=2000 BENCH_ROWS=100000 scripts/bench.sh   # smaller, for a quick look
#   BENCH_WORKLOADS="3" scripts/bench.sh                 # only some workloads
#   BENCH_PG=18 scripts/bench.sh     # on another server version (16-18 from npm, as the tests)
#
# Workload 1: pgbench TPC-B-like, BENCH_TX transactions per client x 4 clients, written while
#             both consumers are stopped; then each drains the backlog alone, timed.
# Workload 2: one transaction inserting BENCH_ROWS rows, same procedure.
# Workload 3: steady state, green commit to blue visibility.
# Workload 4 (BENCH_BIG_MB): pgbridge's peak memory on one huge transaction.
# Workloads 1m and 2m: 1 and 2 again on the schema of mappings/example/, where pgbridge maps
#             every row to blue's older schema (renamed table and column, jsonb to text,
#             numeric to integer) and the native subscription writes a same-schema copy.
# Every consumer reads the same WAL (one slot each) and writes to its own blue database.
# Workloads 1 and 2 also drain, alone and in turn: native at its strongest for the server
# version (binary = true, and streaming = parallel on 16+ or on on 15) and the decode ceiling,
# pg_recvlogical discarding the stream with the protocol options pgbridge uses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
tx_per_client=${BENCH_TX:-5000}
rows=${BENCH_ROWS:-1000000}
workloads=" ${BENCH_WORKLOADS:-1 2 3 1m 2m} "
[[ -n ${BENCH_BIG_MB:-} ]] && workloads+="4 "
selected() { [[ $workloads == *" $1 "* ]]; }

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_select_server
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init bench
bench_build
trap bench_cleanup EXIT
settings=$(bench_settings)
gp=$(free_port); bp=$(free_port)
start_cluster green "$gp" <<<"$settings"
start_cluster blue "$bp" <<<"$settings"
green() { psql_at "$gp" app "$@"; }

# The consumer pair under test: the native subscription (also its slot's name) and its blue
# database, pgbridge's blue database. `use_suite shop` switches to the example-mapping pair.
use_suite() {
  case $1 in
    app) nsub=native ndb=native bdb=bridge PGBRIDGE_CONFIG=$work/pgbridge.toml ;;
    shop) nsub=native_shop ndb=shop_native bdb=shop_bridge PGBRIDGE_CONFIG=$work/pgbridge-shop.toml ;;
  esac
  export PGBRIDGE_CONFIG
}
psql_at "$gp" postgres -c "CREATE DATABASE app"
for db in native native_max bridge; do psql_at "$bp" postgres -c "CREATE DATABASE $db"; done
# The same schema and starting rows everywhere without pg_dump (the npm server packages carry
# none, and Debian's refuses a newer server): pgbench's initial rows are deterministic.
schema() { # port db
  "$clientbin/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$1" -U postgres "$2" >/dev/null 2>&1
  psql_at "$1" "$2" -c "CREATE TABLE bulk (id bigint PRIMARY KEY, a int, b text, c timestamptz);
    ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE TABLE lat (id bigserial PRIMARY KEY, v int)"
}
schema "$gp" app
for db in native native_max bridge; do
  schema "$bp" "$db"
  # Blue's apply time per row for workload 3: native apply stamps commits with green's commit
  # time, so a trigger that fires for replicated rows (ENABLE ALWAYS) records the arrival.
  psql_at "$bp" "$db" -c "ALTER TABLE lat ADD COLUMN arrived timestamptz;
    CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.arrived := clock_timestamp(); RETURN NEW; END';
    CREATE TRIGGER stamp BEFORE INSERT ON lat FOR EACH ROW EXECUTE FUNCTION stamp();
    ALTER TABLE lat ENABLE ALWAYS TRIGGER stamp;" >/dev/null
done
green -c "CREATE PUBLICATION native FOR ALL TABLES"
psql_at "$bp" native -c "CREATE SUBSCRIPTION native CONNECTION 'host=127.0.0.1 port=$gp user=postgres dbname=app' PUBLICATION native WITH (copy_data = false, enabled = false)"
version=$(green -c "SHOW server_version_num")
strongest="binary = true, streaming = $([[ $version -ge 160000 ]] && echo parallel || echo on)"
psql_at "$bp" native_max -c "CREATE SUBSCRIPTION native_max CONNECTION 'host=127.0.0.1 port=$gp user=postgres dbname=app' PUBLICATION native WITH (copy_data = false, enabled = false, $strongest)"

cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/app"
# One direction, as the native subscription (origin = any): on PostgreSQL 15, skipping
# transactions by origin would mean receiving large ones whole.
origin = "any"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/bridge"
[metrics]
listen = "127.0.0.1:$(free_port)"
TOML
use_suite app
"$pgbridge" setup >/dev/null
# After setup: pgoutput looks the publication up as of each change it decodes.
green -c "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')" >/dev/null

# The example-mapping suite: green's migrated schema in database shop; blue's older schema in
# shop_bridge (pgbridge maps to it), green's schema in shop_native (what a native subscription
# can write). Same starting rows everywhere, written through the same mapping by hand.
psql_at "$gp" postgres -c "CREATE DATABASE shop"
for db in shop_native shop_bridge; do psql_at "$bp" postgres -c "CREATE DATABASE $db"; done
psql_at "$gp" shop -f mappings/example/green.sql >/dev/null
psql_at "$bp" shop_native -f mappings/example/green.sql >/dev/null
psql_at "$bp" shop_bridge -f mappings/example/blue.sql >/dev/null
shop_rows="FROM generate_series(1, 10000) i"
psql_at "$gp" shop -c "INSERT INTO customers (id, name, email_address, location_structured, created_at)
    SELECT i, 'customer ' || i, 'c' || i || '@example.com', jsonb_build_object('city', 'city ' || i % 50), '2026-01-01' $shop_rows;
  INSERT INTO jobs SELECT i, i, i % 7 + 0.5, 'job ' || i $shop_rows;
  CREATE SEQUENCE purchase_ids;"
psql_at "$bp" shop_native -c "INSERT INTO customers (id, name, email_address, location_structured, created_at)
    SELECT i, 'customer ' || i, 'c' || i || '@example.com', jsonb_build_object('city', 'city ' || i % 50), '2026-01-01' $shop_rows;
  INSERT INTO jobs SELECT i, i, i % 7 + 0.5, 'job ' || i $shop_rows;"
psql_at "$bp" shop_bridge -c "INSERT INTO customers (id, name, email, location, created_at)
    SELECT i, 'customer ' || i, 'c' || i || '@example.com', 'city ' || i % 50, '2026-01-01' $shop_rows;
  INSERT INTO jobs SELECT i, i, (i % 7 + 0.5)::numeric(10,2), 'job ' || i $shop_rows;"
psql_at "$gp" shop -c "CREATE PUBLICATION native FOR ALL TABLES"
psql_at "$bp" shop_native -c "CREATE SUBSCRIPTION native_shop CONNECTION 'host=127.0.0.1 port=$gp user=postgres dbname=shop' PUBLICATION native WITH (copy_data = false, enabled = false)"
cat >"$work/pgbridge-shop.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/shop"
slot = "pgbridge_shop"
origin = "any"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/shop_bridge"
[mapping]
dir = "$repo/mappings/example"
[metrics]
listen = "127.0.0.1:$(free_port)"
TOML
PGBRIDGE_CONFIG=$work/pgbridge-shop.toml "$pgbridge" setup >/dev/null

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
caught_up_native() { # lsn
  [[ $(green -c "SELECT confirmed_flush_lsn >= '$1' FROM pg_replication_slots WHERE slot_name = '$nsub'") == t ]]
}
caught_up_bridge() { # lsn
  [[ $(psql_at "$bp" "$bdb" -c "SELECT lsn >= '$1' FROM pgbridge.checkpoint") == t ]]
}

drain_native() { # target_lsn [subscription database] -> seconds
  local nsub=${2:-$nsub} ndb=${3:-$ndb} t0; t0=$(now)
  psql_at "$bp" "$ndb" -c "ALTER SUBSCRIPTION $nsub ENABLE"
  until caught_up_native "$1"; do sleep 0.01; done
  local t1; t1=$(now)
  psql_at "$bp" "$ndb" -c "ALTER SUBSCRIPTION $nsub DISABLE"
  calc "$t1 - $t0"
}
drain_ceiling() { # target_lsn -> seconds: decode and send only, with pgbridge's options
  # pgbridge asks for binary values unless PGBRIDGE_BINARY=off (the benchmark's tables have
  # built-in types only, which always travel in binary).
  local t0 binary=(-o binary=true); t0=$(now)
  if [[ ${PGBRIDGE_BINARY:-} == off ]]; then binary=(); fi
  "$clientbin/pg_recvlogical" -h 127.0.0.1 -p "$gp" -U postgres -d app --slot ceiling --start \
    --endpos "$1" -f /dev/null --no-loop -o proto_version=2 -o publication_names=pgbridge \
    -o messages=true -o streaming=on "${binary[@]}" 2>>"$work/ceiling.log"
  calc "$(now) - $t0"
}
# Workloads 1 and 2: the strongest native configuration and the ceiling, alone and in turn.
drain_others() { # target_lsn -> "native_max_seconds ceiling_seconds"
  echo "$(drain_native "$1" native_max native_max) $(drain_ceiling "$1")"
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
  if [[ -n ${BENCH_CPU:-} ]]; then # the busiest server processes, in CPU seconds
    for p in $(pgrep -u "$(stat -c %U "$work/green")" postgres); do
      awk -v hz="$(getconf CLK_TCK)" -v cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-70)" \
        '{ printf "     %6.2f s CPU: %s\n", ($14 + $15) / hz, cmd }' "/proc/$p/stat"
    done | sort -rn | head -3 >&2
  fi
  kill -TERM "$bridge_pid"; wait "$bridge_pid" || true; bridge_pid=""
  echo "$(calc "$t1 - $t0") $rss"
}
# After each workload, wait until neither consumer is behind before the next backlog.
settle() { # [green database]
  local lsn; lsn=$(psql_at "$gp" "${1:-app}" -c "SELECT pg_logical_emit_message(true, 'bench', 'settle')")
  drain_native "$lsn" >/dev/null
  drain_bridge "$lsn" >/dev/null
  if [[ ${1:-app} == app ]]; then drain_others "$lsn" >/dev/null; fi
}
digest() { # port db select
  psql_at "$1" "$2" -c "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM ($3) t"
}
compare() { # table [columns]
  local q="SELECT ${2:-*} FROM $1"
  [[ $(digest "$bp" native "$q") == $(digest "$bp" bridge "$q") ]] || { echo "MISMATCH in $1" >&2; exit 1; }
  if [[ -n ${3:-} ]]; then
    [[ $(digest "$bp" native_max "$q") == $(digest "$bp" bridge "$q") ]] || { echo "MISMATCH in $1 (native_max)" >&2; exit 1; }
  fi
}
# The example suite: green's rows through the mapping (written out in SQL) against blue's.
compare_shop() {
  local pairs=(
    "SELECT id, name, email_address, location_structured ->> 'city', created_at FROM customers"
    "SELECT id, name, email, location, created_at FROM customers"
    "SELECT id, customer_id, quantity::integer, description FROM jobs"
    "SELECT id, customer_id, quantity, description FROM jobs"
    "SELECT * FROM purchases"
    "SELECT * FROM orders"
  )
  local i
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    [[ $(digest "$bp" shop_native "${pairs[i]}") == $(digest "$bp" shop_bridge "${pairs[i + 1]}") ]] ||
      { echo "MISMATCH: ${pairs[i + 1]}" >&2; exit 1; }
  done
}

results=()
report() { # name unit amount native_s bridge_s rss [strongest_s ceiling_s]
  local native_rate bridge_rate ratio
  native_rate=$(calc "$3 / $4"); bridge_rate=$(calc "$3 / $5"); ratio=$(calc "$bridge_rate / $native_rate")
  results+=("$(printf '| %-38s | %12.0f %-6s | %12.0f %-6s | %5.2fx | %6s MB |' "$1" "$native_rate" "$2" "$bridge_rate" "$2" "$ratio" "$6")")
  if [[ -n ${7:-} ]]; then
    strongest_results+=("$(printf '| %-38s | %12.0f %-6s | %5.2fx | %12.0f %-6s | %5.2fx |' "$1" "$(calc "$3 / $7")" "$2" \
      "$(calc "$bridge_rate / ($3 / $7)")" "$(calc "$3 / $8")" "$2" "$(calc "$bridge_rate / ($3 / $8)")")")
  fi
}
strongest_results=()

if selected 1; then
echo "workload 1: pgbench -c 4 -t $tx_per_client on green with both consumers stopped..." >&2
"$clientbin/pgbench" -n -c 4 -j 2 -t "$tx_per_client" -h 127.0.0.1 -p "$gp" -U postgres app >/dev/null 2>&1
target=$(green -c "SELECT pg_current_wal_lsn()")
n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"; read -r m c <<<"$(drain_others "$target")"
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do compare "$t" "*" max; done
report "1. backlog drain, pgbench TPC-B" "tx/s" "$((4 * tx_per_client))" "$n" "$b" "$rss" "$m" "$c"
fi

if selected 2; then
echo "workload 2: one transaction inserting $rows rows..." >&2
green -c "INSERT INTO bulk SELECT g, g % 1000, md5(g::text), now() FROM generate_series(1, $rows) g"
target=$(green -c "SELECT pg_current_wal_lsn()")
n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"; read -r m c <<<"$(drain_others "$target")"
compare bulk "*" max
report "2. backlog drain, one $rows-row tx" "rows/s" "$rows" "$n" "$b" "$rss" "$m" "$c"
fi

# Workload 3: steady state. Each consumer alone, streaming while pgbench commits a one-row
# insert at a fixed rate; per row, blue's apply time (trigger) minus green's commit time.
rate=${BENCH_RATE:-1000}
seconds=${BENCH_SECONDS:-10}
printf '\\set v random(1, 1000)\nINSERT INTO lat (v) VALUES (:v);\n' >"$work/lat.sql"
commit_times() { # port db first last column -> "id|epoch" lines
  psql_at "$1" "$2" -c "SELECT id, extract(epoch FROM $5) FROM lat WHERE id > $3 AND id <= $4"
}
latency() { # consumer
  local first last target
  if [[ $1 == native ]]; then
    psql_at "$bp" native -c "ALTER SUBSCRIPTION native ENABLE"
  else
    "$pgbridge" run >>"$work/pgbridge.log" 2>&1 &
    bridge_pid=$!
  fi
  sleep 1 # let the consumer connect before the load starts
  first=$(green -c "SELECT coalesce(max(id), 0) FROM lat")
  "$clientbin/pgbench" -n -c 2 -j 2 -R "$rate" -T "$seconds" -f "$work/lat.sql" -h 127.0.0.1 -p "$gp" -U postgres app >/dev/null 2>&1
  last=$(green -c "SELECT max(id) FROM lat")
  target=$(green -c "SELECT pg_current_wal_lsn()")
  if [[ $1 == native ]]; then
    until caught_up_native "$target"; do sleep 0.01; done
    psql_at "$bp" native -c "ALTER SUBSCRIPTION native DISABLE"
  else
    until caught_up_bridge "$target"; do sleep 0.01; done
    kill -TERM "$bridge_pid"; wait "$bridge_pid" || true; bridge_pid=""
  fi
  commit_times "$gp" app "$first" "$last" "pg_xact_commit_timestamp(xmin)" >"$work/green.times"
  commit_times "$bp" "$1" "$first" "$last" "arrived" >"$work/blue.times"
  python3 - "$work/green.times" "$work/blue.times" <<'PY'
import sys
green = dict(l.split('|') for l in open(sys.argv[1]) if l.strip())
blue = dict(l.split('|') for l in open(sys.argv[2]) if l.strip())
d = sorted((float(blue[k]) - float(green[k])) * 1000 for k in green if k in blue)
if len(d) != len(green):
    sys.exit("blue lacks rows")
q = lambda p: d[min(len(d) - 1, int(p * len(d)))]
print(f"{q(0.5):.2f} {q(0.99):.2f} {len(d)}")
PY
}
if selected 3; then
echo "workload 3: $rate inserts/s for ${seconds}s, each consumer streaming..." >&2
read -r n50 n99 nn <<<"$(latency native)"
read -r b50 b99 bn <<<"$(latency bridge)"
settle
compare lat "id, v"
results+=("$(printf '| %-38s | p50 %5.2f p99 %5.2f ms | p50 %5.2f p99 %5.2f ms | %6s | %6s    |' "3. steady $rate tx/s, green commit to blue" "$n50" "$n99" "$b50" "$b99" "-" "-")")
fi

use_suite shop
shop() { psql_at "$gp" shop "$@"; }
# Both shop consumers first read past the WAL of the workloads above.
if selected 1m || selected 2m; then settle shop; fi
if selected 1m; then
  echo "workload 1m: the example schema, pgbench -c 4 -t $tx_per_client (3 tables per transaction)..." >&2
  cat >"$work/shop.sql" <<'SQL'
\set c random(1, 10000)
\set j random(1, 10000)
BEGIN;
UPDATE customers SET email_address = 'u' || :c || '@example.com', location_structured = jsonb_build_object('city', 'town ' || :j) WHERE id = :c;
UPDATE jobs SET quantity = quantity + 0.25 WHERE id = :j;
INSERT INTO purchases (id, customer_id, total, status) VALUES (nextval('purchase_ids'), :c, :j / 100.0, 'new');
END;
SQL
  "$clientbin/pgbench" -n -c 4 -j 2 -t "$tx_per_client" -f "$work/shop.sql" -h 127.0.0.1 -p "$gp" -U postgres shop >/dev/null 2>&1
  target=$(shop -c "SELECT pg_current_wal_lsn()")
  n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"
  compare_shop
  report "1m. backlog drain, example mapping" "tx/s" "$((4 * tx_per_client))" "$n" "$b" "$rss"
fi
if selected 2m; then
  echo "workload 2m: the example schema, one transaction inserting $rows purchases..." >&2
  shop -c "INSERT INTO purchases SELECT nextval('purchase_ids'), g % 10000 + 1, g % 997 + 0.99, 'imported' FROM generate_series(1, $rows) g"
  target=$(shop -c "SELECT pg_current_wal_lsn()")
  n=$(drain_native "$target"); read -r b rss <<<"$(drain_bridge "$target")"
  compare_shop
  report "2m. one $rows-row tx, example mapping" "rows/s" "$rows" "$n" "$b" "$rss"
fi
use_suite app

if selected 4; then
  # Workload 4: pgbridge alone, one transaction of about BENCH_BIG_MB MB of row data; the point
  # is pgbridge's peak memory (target: under 150 MB for 1 GB).
  echo "workload 4: one transaction with about ${BENCH_BIG_MB} MB of row data..." >&2
  green -c "CREATE TABLE big (id bigint PRIMARY KEY, pad text)"
  psql_at "$bp" "$bdb" -c "CREATE TABLE big (id bigint PRIMARY KEY, pad text)"
  green -c "ALTER PUBLICATION pgbridge ADD TABLE big" 2>/dev/null || true
  green -c "INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, ${BENCH_BIG_MB} * 2048) g"
  target=$(green -c "SELECT pg_current_wal_lsn()")
  read -r b rss <<<"$(drain_bridge "$target")"
  results+=("$(printf '| %-38s | %21s | %12.0f %-8s | %6s | %6s MB |' "4. one ${BENCH_BIG_MB} MB transaction" "-" "$(calc "${BENCH_BIG_MB} * 2048 / $b")" "rows/s" "-" "$rss")")
fi

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, $("$bindir/postgres" --version); identity mapping except 1m and 2m"
echo "| workload                               | native                | pgbridge              | ratio  | peak RSS  |"
echo "|----------------------------------------|-----------------------|-----------------------|--------|-----------|"
printf '%s\n' "${results[@]}"
if [[ ${#strongest_results[@]} -gt 0 ]]; then
  echo
  echo "pgbridge against native at its strongest ($strongest) and the decode ceiling (pg_recvlogical, pgbridge's options):"
  echo "| workload                               | native strongest      | ratio  | decode ceiling        | ratio  |"
  echo "|----------------------------------------|-----------------------|--------|-----------------------|--------|"
  printf '%s\n' "${strongest_results[@]}"
fi
