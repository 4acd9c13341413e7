#!/usr/bin/env bash
# Initial copy and verify, measured side by side with pg_dump | psql on the same tables.
#
#   scripts/bench-copy.sh                    # 1,000,000 rows in each of the example tables
#   BENCH_COPY_ROWS=100000 scripts/bench-copy.sh
#
# Green holds the example schema (mappings/example/green.sql). pg_dump | psql loads a copy of
# green's schema (it cannot map); pgbridge setup --copy loads blue's older schema through the
# example mapping. Both targets start empty with their primary keys in place. Then
# pgbridge verify compares green through the mapping with blue.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
rows=${BENCH_COPY_ROWS:-1000000}

scripts/ensure-postgres.sh
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init bench-copy
echo "building pgbridge (release)..." >&2
cargo build --release --quiet
pgbridge=${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge
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

echo "pg_dump | psql..." >&2
t0=$(now)
"$bindir/pg_dump" -a -t customers -t jobs -t purchases -h 127.0.0.1 -p "$gp" -U postgres app |
  psql_at "$bp" dump >/dev/null
t1=$(now)
dump_s=$(calc "$t1 - $t0")

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
echo "pgbridge setup --copy..." >&2
t0=$(now)
"$pgbridge" setup --copy --jobs "${BENCH_COPY_JOBS:-4}" >"$work/copy.log"
t1=$(now)
copy_s=$(calc "$t1 - $t0")
cat "$work/copy.log" >&2

echo "pgbridge verify..." >&2
t0=$(now)
"$pgbridge" verify >"$work/verify.log" || { cat "$work/verify.log"; echo "verify found differences" >&2; exit 1; }
t1=$(now)
verify_s=$(calc "$t1 - $t0")
cat "$work/verify.log" >&2
total=$((3 * rows))
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
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, $("$bindir/postgres" --version); 3 tables x $rows rows, $size on green"
echo "| step                                   | seconds | rows/s    |"
echo "|----------------------------------------|---------|-----------|"
printf '| %-38s | %7s | %9.0f |\n' "pg_dump -a | psql (green's schema)" "$dump_s" "$(calc "$total / $dump_s")"
printf '| %-38s | %7s | %9.0f |\n' "pgbridge setup --copy (example mapping)" "$copy_s" "$(calc "$total / $copy_s")"
printf '| %-38s | %7s | %9.0f |\n' "pgbridge verify (example mapping)" "$verify_s" "$(calc "$total / $verify_s")"
for kind in checksums full ${BENCH_VERIFY_BASELINE:+baseline}; do
  m=$(median "${vtimes[$kind]}")
  printf '| %-38s | %7s | %9.0f |\n' "verify $kind, median of $rounds paired" "$m" "$(calc "$total / $m")"
done
echo "verify checksums / --full speed: $(calc "$(median "${vtimes[full]}") / $(median "${vtimes[checksums]}")")x (rounds: checksums ${vtimes[checksums]}; full ${vtimes[full]})"
if [[ -n ${BENCH_VERIFY_BASELINE:-} ]]; then
  echo "verify checksums / baseline speed: $(calc "$(median "${vtimes[baseline]}") / $(median "${vtimes[checksums]}")")x (baseline ${vtimes[baseline]})"
fi
echo "copy / pg_dump speed: $(calc "$dump_s / $copy_s")x"
