#!/usr/bin/env bash
# Thousands of tables: how check, setup --copy, run (start-up, memory, the periodic schema
# check), verify, status and lag grow with the number of published tables.
#
#   scripts/scale.sh                                  # 200 tenant schemas x 10 tables
#   SCALE_SIZES="25 50 100 200" scripts/scale.sh      # several sizes (schema counts), with ratios
#   SCALE_TABLES=10 SCALE_ROWS=5 SCALE_STEADY=120 SCALE_RATE=200 scripts/scale.sh
#   PGBRIDGE_BIN=/path/to/pgbridge scripts/scale.sh   # measure that binary instead of building
#
# Each tenant schema tenant_N holds SCALE_TABLES tables on green and blue: most map implicitly
# (same name, same columns); in each schema three map through mapping files: a renamed column
# (contacts.email_address -> email), an expression (lines.total = qty * price) and a renamed
# table (items_v2 -> items). The publication is FOR ALL TABLES; blue starts empty and
# `setup --copy` fills it. `run` streams SCALE_STEADY seconds of load touching random tables
# across all schemas at SCALE_RATE transactions per second; then `verify` must find blue equal.
# Every size gets its own databases and slot in the same two clusters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
sizes=${SCALE_SIZES:-${SCALE_SCHEMAS:-200}}
per_schema=${SCALE_TABLES:-10}
rows=${SCALE_ROWS:-5}
steady=${SCALE_STEADY:-120}
rate=${SCALE_RATE:-200}
idle=${SCALE_IDLE:-20}
((per_schema >= 4)) || { echo "SCALE_TABLES must be at least 4" >&2; exit 2; }

scripts/ensure-postgres.sh
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init scale
# PGBRIDGE_BIN: a binary built elsewhere (an older version, to compare); else build this one.
pgbridge=${PGBRIDGE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge}
[[ -n ${PGBRIDGE_BIN:-} ]] || { echo "building pgbridge (release)..." >&2; cargo build --release --quiet; }

bridge_pid=""
trap 'set +e; [[ -z $bridge_pid ]] || { kill "$bridge_pid"; wait "$bridge_pid"; } 2>/dev/null; stop_clusters' EXIT
# Thousands of tables: locks for a transaction touching many, slots for a bridge per size.
for side in green blue; do
  printf -v "${side:0:1}p" %s "$(free_port)"
  port_var=${side:0:1}p
  start_cluster "$side" "${!port_var}" <<CONF
max_wal_senders = 20
max_replication_slots = 20
max_locks_per_transaction = 1024
shared_buffers = 256MB
max_wal_size = 4GB
CONF
done
psql_at() { local port=$1 db=$2; shift 2; "$bindir/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
now() { date +%s.%N; }
hz=$(getconf CLK_TCK)
# CPU ticks used so far by cluster $1 (green or blue): the postmaster with the children it
# reaped (a session that ended), and every live child.
cluster_cpu() {
  local pm p total
  pm=$(head -1 "$work/$1/postmaster.pid")
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
pid_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk "/$2/ {printf \"%.0f\", \$2/1024}" "/proc/$1/status"; }

# One timed pgbridge command: "seconds peak_rss_mb"; its output goes to $work/NAME.out.
timed() { # name args...
  local name=$1 rc=0
  shift
  /usr/bin/time -f '%e %M' -o "$work/$name.time" "$pgbridge" "$@" >"$work/$name.out" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "pgbridge $* exited $rc:" >&2
    tail -20 "$work/$name.out" >&2
    exit 1
  fi
  awk '{printf "%s %.0f\n", $1, $2 / 1024}' "$work/$name.time"
}

# The schema of one side, for tenant schemas $2..$3 (green or blue).
schema_sql() { # side first last
  local side=$1 s t
  for ((s = $2; s <= $3; s++)); do
    echo "CREATE SCHEMA tenant_$s;"
    for ((t = 0; t < per_schema - 3; t++)); do
      echo "CREATE TABLE tenant_$s.t$t (id bigint PRIMARY KEY, a int NOT NULL, b text, c timestamptz DEFAULT now());"
    done
    if [[ $side == green ]]; then
      echo "CREATE TABLE tenant_$s.contacts (id bigint PRIMARY KEY, name text, email_address text);"
      echo "CREATE TABLE tenant_$s.lines (id bigint PRIMARY KEY, qty int, price numeric(10,2));"
      echo "CREATE TABLE tenant_$s.items_v2 (id bigint PRIMARY KEY, label text, weight real);"
    else
      echo "CREATE TABLE tenant_$s.contacts (id bigint PRIMARY KEY, name text, email text);"
      echo "CREATE TABLE tenant_$s.lines (id bigint PRIMARY KEY, qty int, price numeric(10,2), total numeric(12,2));"
      echo "CREATE TABLE tenant_$s.items (id bigint PRIMARY KEY, label text, weight real);"
    fi
  done
}

rows_sql() { # first last
  local s t
  for ((s = $1; s <= $2; s++)); do
    for ((t = 0; t < per_schema - 3; t++)); do
      echo "INSERT INTO tenant_$s.t$t SELECT g, g, md5(g::text) FROM generate_series(1, $rows) g;"
    done
    echo "INSERT INTO tenant_$s.contacts SELECT g, 'name ' || g, g || '@example.com' FROM generate_series(1, $rows) g;"
    echo "INSERT INTO tenant_$s.lines SELECT g, g, g * 1.25 FROM generate_series(1, $rows) g;"
    echo "INSERT INTO tenant_$s.items_v2 SELECT g, 'item ' || g, g / 3.0 FROM generate_series(1, $rows) g;"
  done
}

mapping_files() { # dir schemas
  local dir=$1 s
  mkdir -p "$dir"
  for ((s = 0; s < $2; s++)); do
    printf 'target = "tenant_%s.contacts"\n[columns]\nemail = { from = "email_address" }\n' "$s" >"$dir/contacts_$s.toml"
    printf 'target = "tenant_%s.lines"\n[columns]\ntotal = { expr = "qty * price" }\n' "$s" >"$dir/lines_$s.toml"
    printf 'target = "tenant_%s.items"\nsource = "tenant_%s.items_v2"\n' "$s" "$s" >"$dir/items_$s.toml"
  done
}

# In batches of 50 schemas, so no single transaction locks thousands of tables.
create_side() { # side port db schemas
  local s last
  for ((s = 0; s < $4; s += 50)); do
    last=$((s + 49 < $4 - 1 ? s + 49 : $4 - 1))
    {
      schema_sql "$1" "$s" "$last"
      if [[ $1 == green ]]; then rows_sql "$s" "$last"; fi
    } | psql_at "$2" "$3" >/dev/null
  done
}

# The load: each transaction updates one random implicit table, inserts into one
# mapped table and updates another, in random schemas.
load_sql() {
  cat <<'SQL'
CREATE FUNCTION touch(s int, t int, k int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('UPDATE %I.%I SET a = a + 1, b = md5(random()::text) WHERE id = $1', 'tenant_' || s, 't' || t) USING k;
  EXECUTE format('INSERT INTO %I.lines VALUES (nextval(''seq''), $1, $1 * 0.5)', 'tenant_' || ((s * 7 + k) % current_setting('scale.schemas')::int)) USING k;
  EXECUTE format('UPDATE %I.contacts SET email_address = md5(random()::text) WHERE id = $1', 'tenant_' || ((s * 13 + k) % current_setting('scale.schemas')::int)) USING k;
END $$;
SQL
}

results=()
declare -A figure
row='| %6s | %8s | %12s | %9s | %9s | %10s | %12s | %22s | %8s | %8s | %7s |\n'
measure() { # schemas
  local n=$1 tables=$(($1 * per_schema)) db="s$1" dir="$work/mappings-$1" config="$work/pgbridge-$1.toml"
  echo "== $n schemas x $per_schema tables = $tables tables" >&2
  psql_at "$gp" postgres -c "CREATE DATABASE $db"
  psql_at "$bp" postgres -c "CREATE DATABASE $db"
  create_side green "$gp" "$db" "$n"
  create_side blue "$bp" "$db" "$n"
  psql_at "$gp" "$db" -c "CREATE SEQUENCE seq START 1000000; ALTER DATABASE $db SET scale.schemas = '$n'"
  load_sql | psql_at "$gp" "$db" >/dev/null
  psql_at "$gp" "$db" -c "CREATE PUBLICATION pgbridge_$db FOR ALL TABLES"
  mapping_files "$dir" "$n"
  local metrics_port; metrics_port=$(free_port)
  cat >"$config" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/$db"
publication = "pgbridge_$db"
slot = "pgbridge_$db"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/$db"
[mapping]
dir = "$dir"
[metrics]
listen = "127.0.0.1:$metrics_port"
TOML
  export PGBRIDGE_CONFIG=$config

  read -r figure[$n,check] figure[$n,check_rss] <<<"$(timed check-$n check)"
  echo "   check: ${figure[$n,check]} s" >&2
  read -r figure[$n,setup] figure[$n,setup_rss] <<<"$(timed setup-$n setup --copy)"
  echo "   setup --copy: ${figure[$n,setup]} s" >&2

  local t0 t1
  t0=$(now)
  PGBRIDGE_LOG=info,pgbridge::ops::run::catalogs=debug "$pgbridge" run >"$work/run-$n.log" 2>&1 &
  bridge_pid=$!
  until curl -sf "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; do
    kill -0 "$bridge_pid" 2>/dev/null || { tail -20 "$work/run-$n.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  figure[$n,start]=$(calc "$t1 - $t0")
  figure[$n,start_rss]=$(rss_mb "$bridge_pid" VmRSS)
  echo "   run ready after ${figure[$n,start]} s, RSS ${figure[$n,start_rss]} MB" >&2

  # Idle: what the periodic schema check costs, in CPU seconds of pgbridge, green and blue,
  # per check (one every 5 s by default).
  sleep 2
  local b0 g0 p0
  b0=$(cluster_cpu blue); g0=$(cluster_cpu green); p0=$(pid_cpu "$bridge_pid")
  sleep "$idle"
  local checks; checks=$(calc "$idle / 5")
  figure[$n,chk_blue]=$(calc "($(cluster_cpu blue) - $b0) / $hz / $checks * 1000")
  figure[$n,chk_green]=$(calc "($(cluster_cpu green) - $g0) / $hz / $checks * 1000")
  figure[$n,chk_bridge]=$(calc "($(pid_cpu "$bridge_pid") - $p0) / $hz / $checks * 1000")
  figure[$n,chk_wall]=$({ grep -o 'elapsed_ms=[0-9.]*' "$work/run-$n.log" || true; } | tail -3 | awk -F= '{s += $2; n++} END {if (n) printf "%.0f", s / n; else print "-"}')
  echo "   per schema check: ${figure[$n,chk_wall]} ms wall; CPU ms: pgbridge ${figure[$n,chk_bridge]}, green ${figure[$n,chk_green]}, blue ${figure[$n,chk_blue]}" >&2

  echo "   steady load: $rate tx/s for ${steady}s across all schemas..." >&2
  printf '\\set s random(0, %d)\n\\set t random(0, %d)\n\\set k random(1, %d)\nSELECT touch(:s, :t, :k);\n' \
    "$((n - 1))" "$((per_schema - 4))" "$rows" >"$work/load.sql"
  "$bindir/pgbench" -n -c 2 -j 2 -R "$rate" -T "$steady" -f "$work/load.sql" -h 127.0.0.1 -p "$gp" -U postgres "$db" >/dev/null 2>&1
  timed wait-$n wait --timeout 120s >/dev/null
  figure[$n,steady_rss]=$(rss_mb "$bridge_pid" VmRSS)
  figure[$n,peak_rss]=$(rss_mb "$bridge_pid" VmHWM)
  echo "   after load: RSS ${figure[$n,steady_rss]} MB (peak ${figure[$n,peak_rss]} MB)" >&2

  read -r figure[$n,status] _ <<<"$(timed status-$n status)"
  read -r figure[$n,lag] _ <<<"$(timed lag-$n lag)"
  read -r figure[$n,verify] figure[$n,verify_rss] <<<"$(timed verify-$n verify)"
  echo "   verify: ${figure[$n,verify]} s, status ${figure[$n,status]} s, lag ${figure[$n,lag]} s" >&2

  kill -TERM "$bridge_pid"; wait "$bridge_pid" || true; bridge_pid=""
  "$pgbridge" teardown >/dev/null 2>&1 || true
  psql_at "$gp" postgres -c "DROP DATABASE $db" >/dev/null
  psql_at "$bp" postgres -c "DROP DATABASE $db" >/dev/null
  results+=("$(printf "$row" "$tables" "${figure[$n,check]} s" "${figure[$n,setup]} s" "${figure[$n,start]} s" \
    "${figure[$n,start_rss]} MB" "${figure[$n,steady_rss]} MB" "${figure[$n,chk_wall]} ms" \
    "${figure[$n,chk_bridge]}/${figure[$n,chk_green]}/${figure[$n,chk_blue]} ms" "${figure[$n,verify]} s" \
    "${figure[$n,status]} s" "${figure[$n,lag]} s")")
}

read -ra size_list <<<"$sizes"
for n in "${size_list[@]}"; do measure "$n"; done

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, $("$bindir/postgres" --version); $per_schema tables per schema (3 through mapping files), $rows rows each; load $rate tx/s for ${steady}s"
# shellcheck disable=SC2059 # $row is the format
printf "$row" tables check "setup --copy" "run ready" "RSS ready" "RSS steady" "schema check" "check CPU bridge/g/b" verify status lag
printf "$row" | tr ' ' '-'
printf '%s\n' "${results[@]}"
if ((${#size_list[@]} > 1)); then
  first=${size_list[0]}
  echo
  echo "growth against $((first * per_schema)) tables (linear growth: each ratio about the table ratio):"
  for n in "${size_list[@]:1}"; do
    ratio() { calc "${figure[$n,$1]} / (${figure[$first,$1]} > 0 ? ${figure[$first,$1]} : 0.01)"; }
    echo "  $((n * per_schema)) tables (x$(calc "$n / $first")): check x$(ratio check), setup x$(ratio setup), run ready x$(ratio start), verify x$(ratio verify), RSS steady x$(ratio steady_rss)"
  done
fi
