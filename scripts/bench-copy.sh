#!/usr/bin/env bash
# Initial copy and verify, measured side by side with pg_dump | psql on the same tables.
#
#   scripts/bench-copy.sh                    # 1,000,000 rows in each of the example tables
#   BENCH_COPY_ROWS=300000 scripts/bench-copy.sh
#   BENCH_COPY_JOBS="1 2 4" BENCH_COPY_RUNS=3 scripts/bench-copy.sh
#   BENCH_COPY_PGBRIDGE=/path/to/pgbridge scripts/bench-copy.sh   # that build instead of building
#   BENCH_COPY_BEFORE=/path/to/older/pgbridge scripts/bench-copy.sh  # also that build, in the same rounds
#
# Green holds the example schema (mappings/example/green.sql). pg_dump | psql loads a copy of
# green's schema (it cannot map); pgbridge setup --copy loads blue's older schema through the
# example mapping. Both targets start empty with their primary keys in place. Each round runs
# pg_dump | psql and setup --copy at each --jobs in turn (the order rotates from round to
# round, so the machine's noise falls on every variant alike), emptying the targets and taking
# a checkpoint on both servers before each; every ratio is against the same round's pg_dump.
# Peak memory of pgbridge is /usr/bin/time's maximum resident set size. Then pgbridge verify
# compares green through the mapping with blue.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
rows=${BENCH_COPY_ROWS:-1000000}
jobs_list=${BENCH_COPY_JOBS:-4}
runs=${BENCH_COPY_RUNS:-1}

scripts/ensure-postgres.sh
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init bench-copy
if [[ -n ${BENCH_COPY_PGBRIDGE:-} ]]; then
  pgbridge=$BENCH_COPY_PGBRIDGE
else
  echo "building pgbridge (release)..." >&2
  cargo build --release --quiet
  pgbridge=${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge
fi
trap stop_clusters EXIT
settings="max_wal_size = 4GB
shared_buffers = 256MB"
gp=$(free_port); bp=$(free_port)
start_cluster green "$gp" <<<"$settings"
start_cluster blue "$bp" <<<"$settings"
psql_at() { local port=$1 db=$2; shift 2; "$bindir/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }

psql_at "$gp" postgres -c "CREATE DATABASE app"
for db in dump bridge; do psql_at "$bp" postgres -c "CREATE DATABASE $db"; done
psql_at "$gp" app -f mappings/example/green.sql >/dev/null
psql_at "$bp" dump -f mappings/example/green.sql >/dev/null
psql_at "$bp" bridge -f mappings/example/blue.sql >/dev/null
echo "filling green: $rows rows in each of customers, jobs, purchases..." >&2
psql_at "$gp" app -c "
  INSERT INTO customers (id, name, email_address, location_structured, preferences, created_at)
    SELECT i, 'customer ' || i, 'c' || i || '@example.com', jsonb_build_object('city', 'city ' || i % 97, 'zip', i % 10000),
           jsonb_build_object('theme', 'dark'), timestamptz '2026-01-01' + i * interval '1 second'
    FROM generate_series(1, $rows) i;
  INSERT INTO jobs SELECT i, i % 50000 + 1, i % 100 + 0.25, 'job number ' || i FROM generate_series(1, $rows) i;
  INSERT INTO purchases SELECT i, i % 50000 + 1, i % 997 + 0.99, 'paid' FROM generate_series(1, $rows) i;"
psql_at "$gp" app -c "VACUUM ANALYZE"
size=$(psql_at "$gp" app -c "SELECT pg_size_pretty(sum(pg_table_size(c))) FROM unnest(ARRAY['customers', 'jobs', 'purchases']::regclass[]) c")

cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/app"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/bridge"
[mapping]
dir = "$repo/mappings/example"
[metrics]
listen = "127.0.0.1:$(free_port)"
TOML
export PGBRIDGE_CONFIG=$work/pgbridge.toml

# CPU seconds a cluster's processes have used so far: the live ones, and the exited backends
# through the postmaster's children times.
ticks=$(getconf CLK_TCK)
cluster_cpu() { # name
  local pm c
  pm=$(head -n1 "$work/$1/postmaster.pid")
  {
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true; done
  } | awk -v t="$ticks" '{s += $1} END {printf "%.2f", s / t}'
}

# Empty targets, dirty pages written out: every variant starts alike.
reset() {
  psql_at "$bp" dump -c "TRUNCATE customers, jobs, purchases"
  psql_at "$bp" bridge -c "TRUNCATE customers, jobs, orders"
  psql_at "$bp" postgres -c "CHECKPOINT"
  psql_at "$gp" postgres -c "CHECKPOINT"
}
run_dump() { # "seconds client_cpu" into $work/time
  local t0 t1
  t0=$(now)
  /usr/bin/time -o "$work/time.dump" -f "%U %S" "$bindir/pg_dump" -a -t customers -t jobs -t purchases \
    -h 127.0.0.1 -p "$gp" -U postgres app |
    /usr/bin/time -o "$work/time.psql" -f "%U %S" "$bindir/psql" -X -q -h 127.0.0.1 -p "$bp" -U postgres -d dump \
      -v ON_ERROR_STOP=1 >/dev/null
  t1=$(now)
  echo "$(calc "$t1 - $t0") $(cat "$work/time.dump" "$work/time.psql" | awk '{s += $1 + $2} END {printf "%.2f", s}')" >"$work/time"
}
run_copy() { # binary jobs name; "seconds peak_kB client_cpu" into $work/time
  /usr/bin/time -o "$work/time.raw" -f "%e %M %U %S" "$1" setup --copy --jobs "$2" >"$work/copy-$3.log" ||
    { cat "$work/copy-$3.log" "$work/time.raw"; exit 1; }
  awk '{printf "%s %s %.2f\n", $1, $2, $3 + $4}' "$work/time.raw" >"$work/time"
}
blue_wal() { psql_at "$bp" postgres -c "SELECT pg_current_wal_lsn() - '0/0'"; }
# Runs a variant; prints "seconds peak_kB client_cpu green_cpu blue_cpu blue_wal_MB".
measure() { # variant
  local g0 b0 w0 s kb cpu
  g0=$(cluster_cpu green); b0=$(cluster_cpu blue); w0=$(blue_wal)
  if [[ $1 == dump ]]; then
    run_dump
    read -r s cpu <"$work/time"
    kb=0
  else
    local bin=$pgbridge
    [[ ${1%%:*} == old ]] && bin=$BENCH_COPY_BEFORE
    run_copy "$bin" "${1#*:}" "${1/:/-}"
    read -r s kb cpu <"$work/time"
  fi
  echo "$s $kb $cpu $(calc "$(cluster_cpu green) - $g0") $(calc "$(cluster_cpu blue) - $b0") $(calc "($(blue_wal) - $w0) / 1048576")"
}

# A variant is "dump", or "<build>:<jobs>" with build "new" (this one) or "old" (BENCH_COPY_BEFORE).
builds=(new)
[[ -n ${BENCH_COPY_BEFORE:-} ]] && builds+=(old)
variants=(dump)
for b in "${builds[@]}"; do for j in $jobs_list; do variants+=("$b:$j"); done; done
declare -A ratios=() peaks=()
results=$work/results
cpus=$work/cpus
: >"$results"
: >"$cpus"
for ((round = 0; round < runs; round++)); do
  n=${#variants[@]}
  dump_s=""
  declare -A secs=()
  for ((k = 0; k < n; k++)); do
    v=${variants[$(((k + round) % n))]}
    reset
    echo "round $((round + 1)): $v..." >&2
    measure "$v" >"$work/measured"
    read -r s kb cpu gcpu bcpu wal <"$work/measured"
    echo "$v $s $cpu $gcpu $bcpu $wal" >>"$cpus"
    if [[ $v == dump ]]; then
      dump_s=$s
    else
      secs[$v]=$s
      peaks[$v]="${peaks[$v]:-} $kb"
    fi
  done
  for v in "${variants[@]:1}"; do
    r=$(calc "$dump_s / ${secs[$v]}")
    ratios[$v]="${ratios[$v]:-} $r"
    echo "$((round + 1)) $dump_s $v ${secs[$v]} $r" >>"$results"
  done
  unset secs
done
last=${jobs_list##* }
cat "$work/copy-new-$last.log" >&2

# The rounds may end with another variant: blue gets this build's copy again for verify.
reset
run_copy "$pgbridge" "$last" verify
[[ -s $work/time ]] || exit 1
echo "pgbridge verify..." >&2
t0=$(now)
"$pgbridge" verify >"$work/verify.log" || { cat "$work/verify.log"; echo "verify found differences" >&2; exit 1; }
t1=$(now)
verify_s=$(calc "$t1 - $t0")
cat "$work/verify.log" >&2
total=$((3 * rows))
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, load $(cut -d' ' -f1-3 /proc/loadavg), $("$bindir/postgres" --version); 3 tables x $rows rows, $size on green; $runs round(s)"
echo "| round | pg_dump -a \| psql s | build:--jobs | setup --copy s | copy / pg_dump speed |"
echo "|-------|---------------------|--------------|----------------|----------------------|"
while read -r round d v s r; do
  printf '| %5s | %19s | %12s | %14s | %19sx |\n' "$round" "$d" "$v" "$s" "$r"
done <"$results"
echo
echo "| build:--jobs | median copy / pg_dump speed | pgbridge peak RSS (max over rounds) |"
echo "|--------------|-----------------------------|-------------------------------------|"
for v in "${variants[@]:1}"; do
  peak=$(tr ' ' '\n' <<<"${peaks[$v]}" | grep . | sort -g | tail -n1)
  printf '| %12s | %26sx | %32s MB |\n' "$v" "$(median <<<"${ratios[$v]}")" "$(calc "$peak / 1024")"
done
echo
echo "CPU seconds per variant (median over rounds): the client (pg_dump + psql, or pgbridge), green's and blue's servers; WAL blue wrote"
echo "| variant      | wall s | client CPU s | green CPU s | blue CPU s | blue WAL MB |"
echo "|--------------|--------|--------------|-------------|------------|-------------|"
for v in "${variants[@]}"; do
  col() { awk -v v="$v" -v c="$1" '$1 == v {print $c}' "$cpus" | median; }
  printf '| %12s | %6s | %12s | %11s | %10s | %11s |\n' "$v" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)"
done
# verify (checksums) and verify --full (every row compared row by row, as before), paired:
# BENCH_VERIFY_ROUNDS alternating rounds, the median of each; BENCH_VERIFY_BASELINE=path adds
# another pgbridge binary (e.g. main's) to each round.
rounds=${BENCH_VERIFY_ROUNDS:-3}
declare -A vtimes=()
for ((r = 1; r <= rounds; r++)); do
  for kind in checksums full ${BENCH_VERIFY_BASELINE:+baseline}; do
    case $kind in
      checksums) cmd=("$pgbridge" verify) ;;
      full) cmd=("$pgbridge" verify --full) ;;
      baseline) cmd=("$BENCH_VERIFY_BASELINE" verify) ;;
    esac
    t0=$(now)
    "${cmd[@]}" >"$work/verify-$kind.log" || { cat "$work/verify-$kind.log"; echo "verify ($kind) found differences" >&2; exit 1; }
    t1=$(now)
    vtimes[$kind]+="$(calc "$t1 - $t0") "
  done
done
median_of() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo
echo "verify (example mapping), $rounds paired round(s): checksums, --full${BENCH_VERIFY_BASELINE:+, baseline}"
echo "| verify                                 | median s | rows/s    |"
echo "|----------------------------------------|----------|-----------|"
for kind in checksums full ${BENCH_VERIFY_BASELINE:+baseline}; do
  m=$(median_of "${vtimes[$kind]}")
  printf '| %-38s | %8s | %9.0f |\n' "verify $kind" "$m" "$(calc "$total / $m")"
done
echo "verify checksums / --full speed: $(calc "$(median_of "${vtimes[full]}") / $(median_of "${vtimes[checksums]}")")x (rounds: checksums ${vtimes[checksums]}; full ${vtimes[full]})"
if [[ -n ${BENCH_VERIFY_BASELINE:-} ]]; then
  echo "verify checksums / baseline speed: $(calc "$(median_of "${vtimes[baseline]}") / $(median_of "${vtimes[checksums]}")")x (baseline ${vtimes[baseline]})"
fi
