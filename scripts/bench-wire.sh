#!/usr/bin/env bash
# Binary against text on one identical backlog: every run drains the same pgbench WAL from its
# own slot into its own blue database, the two forms alternating, so load on the machine hits
# both alike. Per run: seconds to the first applied transaction (session start), seconds to
# the end, and what blue spent on pgbridge's statements (pg_stat_statements, where available).
#
#   scripts/bench-wire.sh                         # 3 pairs, pgbench -c 4 -t 2000
#   WIRE_PAIRS=5 WIRE_TX=5000 scripts/bench-wire.sh   # more rounds, a longer backlog
#   WIRE_STATEMENTS=1 scripts/bench-wire.sh       # also blue's busiest statements per run
#   WIRE_LOGS=/tmp/wire scripts/bench-wire.sh    # keep pgbridge's logs (PGBRIDGE_LOG applies)
#   WIRE_STARTS=10 scripts/bench-wire.sh          # then 10 rounds of session starts alone, caught up:
#                                                 # seconds from exec to "streaming from green"
#   WIRE_BEFORE=/tmp/pgbridge-old scripts/bench-wire.sh  # also another build, in both forms:
#                                                 # each round runs the four in turn
#   PGBRIDGE_PG_BIN=... scripts/bench-wire.sh     # another server version, as the tests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
pairs=${WIRE_PAIRS:-3}
tx_per_client=${WIRE_TX:-2000}
# The consumers of one round, each "form:build" (build "new" is this tree's).
forms=(binary:new text:new)
[[ -n ${WIRE_BEFORE:-} ]] && forms+=(binary:before text:before)
runs=$((${#forms[@]} * pairs))

scripts/ensure-postgres.sh
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init wire
echo "building pgbridge (release)..." >&2
cargo build --release --quiet
# A copy of its own: the target directory may be shared with other builds.
cp "${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge" "$work/pgbridge"
pgbridge=$work/pgbridge
[[ -n ${WIRE_BEFORE:-} ]] && cp "$WIRE_BEFORE" "$work/pgbridge-before"

bridge_pid=""
stop_bridge() { # the pgbridge started last, if it still runs
  [[ -n $bridge_pid ]] || return 0
  kill -TERM "$bridge_pid" 2>/dev/null
  wait "$bridge_pid" || true
  bridge_pid=""
}
trap 'set +e; stop_bridge; stop_clusters' EXIT
settings="max_wal_senders = $((runs + 4))
max_replication_slots = $((runs + 4))
max_wal_size = 4GB
shared_buffers = 256MB"
stats=""
[[ -f $("$bindir/pg_config" --pkglibdir 2>/dev/null || echo /none)/pg_stat_statements.so ||
  -f $bindir/../lib/postgresql/pg_stat_statements.so || -f $bindir/../lib/pg_stat_statements.so ]] &&
  stats="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_planning = on"
gp=$(free_port); bp=$(free_port)
start_cluster green "$gp" <<<"$settings"
start_cluster blue "$bp" <<<"$settings
$stats"
psql_at() { local port=$1 db=$2; shift 2; "$clientbin/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
pgbench_init() { "$clientbin/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$1" -U postgres "$2" >/dev/null 2>&1; }
psql_at "$gp" postgres -c "CREATE DATABASE app"
pgbench_init "$gp" app
psql_at "$gp" app -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
[[ -n $stats ]] && psql_at "$bp" postgres -c "CREATE EXTENSION pg_stat_statements"
for i in $(seq 1 "$runs"); do
  psql_at "$bp" postgres -c "CREATE DATABASE r$i"
  pgbench_init "$bp" "r$i"
  cat >"$work/r$i.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/app"
slot = "r$i"
origin = "any"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/r$i"
TOML
  PGBRIDGE_CONFIG=$work/r$i.toml "$pgbridge" setup >/dev/null
done

echo "backlog: pgbench -c 4 -t $tx_per_client on green, every consumer stopped..." >&2
"$clientbin/pgbench" -n -c 4 -j 2 -t "$tx_per_client" -h 127.0.0.1 -p "$gp" -U postgres app >/dev/null 2>&1
target=$(psql_at "$gp" app -c "SELECT pg_current_wal_lsn()")
transactions=$((4 * tx_per_client))

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
checkpoint() { psql_at "$bp" "$1" -c "SELECT lsn FROM pgbridge.checkpoint"; }
reached() { [[ $(psql_at "$bp" "$1" -c "SELECT lsn >= '$2' FROM pgbridge.checkpoint") == t ]]; }
launch() { # db form:build log: starts pgbridge in the background
  local form=${2%:*} build=${2#*:} exe=$pgbridge
  [[ $build == before ]] && exe=$work/pgbridge-before
  if [[ $form == text ]]; then
    PGBRIDGE_BINARY=off PGBRIDGE_CONFIG=$work/$1.toml "$exe" run >>"$3" 2>&1 &
  else
    PGBRIDGE_CONFIG=$work/$1.toml "$exe" run >>"$3" 2>&1 &
  fi
  bridge_pid=$!
}
drain() { # db form:build -> one line
  local db=$1 start t0 t1 first=""
  start=$(checkpoint "$db")
  [[ -n $stats ]] && psql_at "$bp" postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
  t0=$(now)
  launch "$db" "$2" "$work/$db.log"
  until reached "$db" "$target"; do
    if [[ -z $first && $(checkpoint "$db") != "$start" ]]; then first=$(now); fi
    sleep 0.01
  done
  t1=$(now)
  [[ -n $first ]] || first=$t1
  local cpu; cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$bridge_pid/stat")
  stop_bridge
  printf '%-13s %-4s %8.0f tx/s  %6.3f s  first applied after %6.3f s  pgbridge CPU %5s s  load %s\n' \
    "$2" "$db" "$(calc "$transactions / ($t1 - $t0)")" "$(calc "$t1 - $t0")" "$(calc "$first - $t0")" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
  if [[ -n $stats ]]; then # blue's own time on pgbridge's statements (not the polling here)
    psql_at "$bp" postgres -F ' ' -c "SELECT 'blue: statements ' || sum(calls) || ', commits (checkpoint updates) ' ||
        sum(calls) FILTER (WHERE query LIKE 'UPDATE \"pgbridge\".\"checkpoint\"%') || ', planning ' ||
        round(sum(total_plan_time)::numeric) || ' ms, executing ' || round(sum(total_exec_time)::numeric) || ' ms'
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
      WHERE d.datname = '$db' AND query NOT LIKE '%FROM pgbridge.checkpoint%'" | sed 's/^/         /'
  fi
  if [[ -n $stats && -n ${WIRE_STATEMENTS:-} ]]; then
    psql_at "$bp" postgres -F ' | ' -c "SELECT calls, round(total_plan_time::numeric, 1) AS plan_ms,
        round(total_exec_time::numeric, 1) AS exec_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '$db'
      ORDER BY total_exec_time + total_plan_time DESC LIMIT ${WIRE_STATEMENTS}" | sed 's/^/         /'
  fi
}

echo "$transactions transactions; $(nproc) cores; $("$bindir/postgres" --version)" >&2
# Round p runs the consumers in turn, each round starting one further along.
i=0
for p in $(seq 1 "$pairs"); do
  for k in $(seq 0 $((${#forms[@]} - 1))); do
    i=$((i + 1))
    drain "r$i" "${forms[$(((p - 1 + k) % ${#forms[@]}))]}"
  done
done
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
  want=$(psql_at "$gp" app -c "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM $t t")
  for i in $(seq 1 "$runs"); do
    [[ $(psql_at "$bp" "r$i" -c "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM $t t") == "$want" ]] ||
      { echo "MISMATCH in $t between green and r$i" >&2; exit 1; }
  done
done
# Session starts alone: each consumer restarts on its caught-up slot, in turn.
startup() { # db form:build -> seconds from exec to streaming
  local t0 log=$work/$1.start.log
  : >"$log"; t0=$(now)
  launch "$1" "$2" "$log"
  until grep -q "streaming from green" "$log"; do sleep 0.002; done
  calc "$(now) - $t0"
  stop_bridge
}
if [[ -n ${WIRE_STARTS:-} ]]; then
  declare -A starts
  for p in $(seq 1 "$WIRE_STARTS"); do
    for k in $(seq 0 $((${#forms[@]} - 1))); do
      f=${forms[$(((p - 1 + k) % ${#forms[@]}))]}
      starts[$f]+=" $(startup "r$((k + 1))" "$f")"
    done
  done
  for f in "${forms[@]}"; do
    # shellcheck disable=SC2086
    printf '%-13s start to streaming: median %s s, mean %s s (%s )\n' "$f" \
      "$(printf '%s\n' ${starts[$f]} | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')" \
      "$(printf '%s\n' ${starts[$f]} | awk '{ s += $1 } END { printf "%.3f", s / NR }')" "${starts[$f]}"
  done
fi
if [[ -n ${WIRE_LOGS:-} ]]; then mkdir -p "$WIRE_LOGS" && cp "$work"/r*.log "$WIRE_LOGS"/; fi
exit 0
