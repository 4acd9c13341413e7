#!/usr/bin/env bash
# Steady-state latency: how long after a transaction commits on green its row is visible on
# blue, for pgbridge and for PostgreSQL's own logical replication (a native subscription with
# the version's defaults, and one at its strongest), on the same servers, in one run.
#
#   scripts/bench-latency.sh                       # 1,000 tx/s for 60 s per consumer, 2 rounds
#   BENCH_PG=18 scripts/bench-latency.sh           # on another server version (16-18 from npm)
#   BENCH_SECONDS=20 BENCH_ROUNDS=1 scripts/bench-latency.sh   # a quick look
#   BENCH_OUT=/tmp/lat scripts/bench-latency.sh    # also keep every transaction's delays (CSV)
#   BENCH_CPU=1 ...                                # also each process's CPU time per run
#   BENCH_PGBRIDGE_CONFIG=$'[apply]\norigin = ""' ... # lines added to pgbridge's configuration
#
# Green: pgbench commits one-row inserts into `lat` at BENCH_RATE tx/s (Poisson arrivals,
# BENCH_CLIENTS clients) for BENCH_SECONDS; the first BENCH_WARMUP seconds are not counted.
# Each consumer streams alone (the others stopped, the servers otherwise idle), into its own
# blue database on the same blue server, in turn; round 2 runs them in the reverse order.
#
# One clock (both servers run here). Start: green's commit timestamp of the transaction
# (track_commit_timestamp: taken when green writes the commit record, just before it flushes
# its WAL). End: on blue, a deferred constraint trigger (ENABLE ALWAYS, so it fires under any
# session_replication_role) stamps clock_timestamp() into blue's `arrival` while blue commits
# the transaction holding the row, right before blue writes the commit record; both consumers
# commit on blue with synchronous_commit = off, so the row is visible microseconds later. The
# interval includes green's WAL flush, the walsender's decoding and sending, the consumer's
# receiving and applying, and everything blue's transaction does up to its COMMIT (pgbridge:
# its checkpoint row update; native: its replication origin). A BEFORE INSERT trigger also
# stamps the row's insert on blue, which splits the interval in two.
#
# Keeping up: after the load a marker row is inserted on green and its delay to blue is timed
# (a consumer with a backlog shows it there), and the median of the last 10 s is printed beside
# the median of the first 10 s counted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
rate=${BENCH_RATE:-1000}
seconds=${BENCH_SECONDS:-60}
warmup=${BENCH_WARMUP:-10}
rounds=${BENCH_ROUNDS:-2}
clients=${BENCH_CLIENTS:-4}
read -r -a consumers <<<"${BENCH_CONSUMERS:-pgbridge native native_max}"
((seconds > warmup)) || { echo "BENCH_SECONDS must exceed BENCH_WARMUP ($warmup)" >&2; exit 2; }

# shellcheck source=lib/bench.sh
. scripts/lib/bench.sh
bench_select_server
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init latency
bench_build
trap bench_cleanup EXIT
gp=$(free_port); bp=$(free_port)
bench_settings | start_cluster green "$gp"
bench_settings | start_cluster blue "$bp"
green() { psql_at "$gp" app "$@"; }

psql_at "$gp" postgres -c "CREATE DATABASE app"
green -c "CREATE TABLE lat (id bigserial PRIMARY KEY, v int NOT NULL, created timestamptz NOT NULL DEFAULT clock_timestamp())"
# Blue: one database per consumer. `inserted` is stamped when the row is inserted, `arrival`
# when the transaction holding it commits (deferred to COMMIT).
for db in "${consumers[@]}"; do
  psql_at "$bp" postgres -c "CREATE DATABASE $db"
  psql_at "$bp" "$db" >/dev/null <<'SQL'
CREATE TABLE lat (id bigint PRIMARY KEY, v int NOT NULL, created timestamptz NOT NULL, inserted timestamptz);
CREATE TABLE arrival (id bigint NOT NULL, committed timestamptz NOT NULL);
CREATE FUNCTION stamp_insert() RETURNS trigger LANGUAGE plpgsql AS
  'BEGIN NEW.inserted := clock_timestamp(); RETURN NEW; END';
CREATE FUNCTION stamp_commit() RETURNS trigger LANGUAGE plpgsql AS
  'BEGIN INSERT INTO public.arrival VALUES (NEW.id, clock_timestamp()); RETURN NULL; END';
CREATE TRIGGER stamp_insert BEFORE INSERT ON lat FOR EACH ROW EXECUTE FUNCTION stamp_insert();
CREATE CONSTRAINT TRIGGER stamp_commit AFTER INSERT ON lat DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION stamp_commit();
ALTER TABLE lat ENABLE ALWAYS TRIGGER stamp_insert;
ALTER TABLE lat ENABLE ALWAYS TRIGGER stamp_commit;
SQL
done
version=$(green -c "SHOW server_version_num")
strongest="binary = true, streaming = $([[ $version -ge 160000 ]] && echo parallel || echo on)"
green -c "CREATE PUBLICATION native FOR TABLE lat"
for c in "${consumers[@]}"; do
  case $c in
    native) options="" ;;
    native_max) options=", $strongest" ;;
    *) continue ;;
  esac
  psql_at "$bp" "$c" -c "CREATE SUBSCRIPTION $c CONNECTION 'host=127.0.0.1 port=$gp user=postgres dbname=app' PUBLICATION native WITH (copy_data = false, enabled = false$options)"
done
# pgbridge with its default configuration.
cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$gp/app"
[blue]
dsn = "postgres://postgres@127.0.0.1:$bp/pgbridge"
[metrics]
listen = "127.0.0.1:$(free_port)"
${BENCH_PGBRIDGE_CONFIG:-}
TOML
export PGBRIDGE_CONFIG=$work/pgbridge.toml
if [[ " ${consumers[*]} " == *" pgbridge "* ]]; then "$pgbridge" setup >/dev/null; fi

now() { date +%s.%N; }
# A marker row committed on green now: its id. Each consumer applies green's transactions in
# commit order, so once blue shows it, everything before it is there.
mark() {
  green -c "INSERT INTO lat (v) VALUES (-1) RETURNING id"
}
await_row() { # db id start_time -> seconds from start_time until blue database db shows row id
  local i
  for ((i = 0; i < 24000; i++)); do
    if [[ $(psql_at "$bp" "$1" -c "SELECT count(*) FROM lat WHERE id = $2") == 1 ]]; then
      awk "BEGIN { printf \"%.3f\", $(now) - $3 }"
      return
    fi
    sleep 0.005
  done
  echo "blue database $1 did not receive green's row $2 within 2 minutes; blue's log ends:" >&2
  tail -n 20 "$work/blue/server.log" >&2
  [[ $1 != pgbridge ]] || tail -n 20 "$work/pgbridge.log" >&2
  exit 1
}
consumer_start() {
  case $1 in
    pgbridge)
      "$pgbridge" run >>"$work/pgbridge.log" 2>&1 &
      bridge_pid=$!
      ;;
    *) psql_at "$bp" "$1" -c "ALTER SUBSCRIPTION $1 ENABLE" ;;
  esac
}
consumer_stop() {
  case $1 in
    pgbridge)
      kill -TERM "$bridge_pid"
      wait "$bridge_pid" || true
      bridge_pid=""
      ;;
    *)
      psql_at "$bp" "$1" -c "ALTER SUBSCRIPTION $1 DISABLE"
      until [[ $(psql_at "$bp" "$1" -c "SELECT count(pid) FROM pg_stat_subscription WHERE subname = '$1'") == 0 ]]; do sleep 0.05; done
      ;;
  esac
}
# The processes that do the consumer's work: green's walsender, and pgbridge with its blue
# backends or the native apply worker(s).
sender_pids() {
  green -c "SELECT active_pid FROM pg_replication_slots WHERE active"
}
consumer_pids() {
  case $1 in
    pgbridge)
      echo "$bridge_pid"
      psql_at "$bp" pgbridge -c "SELECT pid FROM pg_stat_activity WHERE datname = 'pgbridge' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
      ;;
    *) psql_at "$bp" "$1" -c "SELECT pid FROM pg_stat_subscription WHERE subname = '$1' AND pid IS NOT NULL" ;;
  esac
}
cpu_ticks() { # pids... -> clock ticks of user + system time
  local p total=0
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

cat >"$work/stats.py" <<'PY'
# stats.py green.times blue.times load_start warmup out.csv -> one line of figures
import sys
green_file, blue_file, start, warmup, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
committed = {}
for line in open(green_file):
    if line.strip():
        i, t = line.split('|')
        committed[i] = float(t)
rows, missing = [], 0
for line in open(blue_file):
    if not line.strip():
        continue
    i, created, inserted, arrived = line.strip().split('|')
    if i not in committed:
        missing += 1
        continue
    c = committed[i]
    if c - start < warmup:
        continue
    rows.append((c, (float(arrived) - c) * 1000, (float(inserted) - c) * 1000, (float(arrived) - float(inserted)) * 1000))
if missing or len(committed) != len({l.split('|')[0] for l in open(blue_file) if l.strip()}):
    sys.exit(f"blue's rows do not match green's ({len(committed)} on green, {missing} unknown on blue)")
rows.sort()
with open(out, 'w') as f:
    f.write('green_commit_epoch,delay_ms,to_insert_ms,insert_to_commit_ms\n')
    for r in rows:
        f.write('%.6f,%.3f,%.3f,%.3f\n' % r)
def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]
d = [r[1] for r in rows]
first = [r[1] for r in rows if r[0] < rows[0][0] + 10]
last = [r[1] for r in rows if r[0] > rows[-1][0] - 10]
print(len(d), *('%.2f' % x for x in (q(d, .5), q(d, .9), q(d, .99), max(d),
      q([r[2] for r in rows], .5), q([r[3] for r in rows], .5), q(first, .5), q(last, .5))))
PY
cat >"$work/pool.py" <<'PY'
# pool.py csv... -> the figures over every transaction of these runs
import sys
d = []
for name in sys.argv[1:]:
    with open(name) as f:
        next(f)
        d += [float(l.split(',')[1]) for l in f]
d.sort()
q = lambda p: d[min(len(d) - 1, int(p * len(d)))]
print(len(d), *('%.2f' % x for x in (q(.5), q(.9), q(.99), d[-1])))
PY

hz=$(getconf CLK_TCK)
results=()
declare -A pooled ticks
measure() { # consumer round
  local c=$1 round=$2 first last start t0 catchup load sender consumer s0 c0 s1 c1 tps p
  consumer_start "$c"
  await_row "$c" "$(mark)" "$(now)" >/dev/null # caught up with what the others' runs wrote
  sleep 1
  read -r -a sender <<<"$(sender_pids | tr '\n' ' ')"
  read -r -a consumer <<<"$(consumer_pids "$c" | tr '\n' ' ')"
  s0=$(cpu_ticks "${sender[@]}"); c0=$(cpu_ticks "${consumer[@]}")
  for p in "${sender[@]}" "${consumer[@]}"; do ticks[$p]=$(cpu_ticks "$p"); done
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  first=$(green -c "SELECT max(id) FROM lat")
  start=$(green -c "SELECT extract(epoch FROM clock_timestamp())")
  echo "   $c, round $round: $rate tx/s for ${seconds}s (load average $load)..." >&2
  "$clientbin/pgbench" -n -c "$clients" -j 2 -R "$rate" -T "$seconds" -f "$work/lat.sql" \
    -h 127.0.0.1 -p "$gp" -U postgres app >"$work/pgbench.log" 2>&1
  tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$work/pgbench.log")
  t0=$(now)
  last=$(mark)
  catchup=$(await_row "$c" "$last" "$t0")
  s1=$(cpu_ticks "${sender[@]}"); c1=$(cpu_ticks "${consumer[@]}")
  if [[ -n ${BENCH_CPU:-} ]]; then # per process, while the load ran
    for p in "${sender[@]}" "${consumer[@]}"; do
      echo "     $((($(cpu_ticks "$p") - ticks[$p]) * 1000 / hz / seconds)) ms/s CPU: $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-60)"
    done >&2
  fi
  consumer_stop "$c"
  green -c "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM lat WHERE id > $first AND id < $last" >"$work/green.times"
  psql_at "$bp" "$c" -c "SELECT l.id, extract(epoch FROM l.created), extract(epoch FROM l.inserted), extract(epoch FROM a.committed)
    FROM lat l JOIN arrival a USING (id) WHERE l.id > $first AND l.id < $last" >"$work/blue.times"
  local csv=$work/$c.$round.csv n p50 p90 p99 max ins com head tail
  read -r n p50 p90 p99 max ins com head tail <<<"$(python3 "$work/stats.py" "$work/green.times" "$work/blue.times" "$start" "$warmup" "$csv")"
  pooled[$c]+=" $csv"
  results+=("$(printf '| %-10s | %5s | %5s | %7s | %5s | %5s | %6s | %7s | %9s | %9s | %6s / %-6s | %7.0f ms | %4s / %-4s | %s |' \
    "$c" "$round" "$tps" "$n" "$p50" "$p90" "$p99" "$max" "$ins" "$com" "$head" "$tail" "$(awk "BEGIN { print $catchup * 1000 }")" \
    "$(((s1 - s0) * 1000 / hz / seconds))" "$(((c1 - c0) * 1000 / hz / seconds))" "$load")")
}

printf '\\set v random(1, 1000)\nINSERT INTO lat (v) VALUES (:v);\n' >"$work/lat.sql"
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}'): ${#consumers[@]} consumers, $rounds round(s)..." >&2
for ((round = 1; round <= rounds; round++)); do
  order=("${consumers[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#consumers[@]} - 1; i >= 0; i--)); do order+=("${consumers[i]}"); done
  fi
  for c in "${order[@]}"; do measure "$c" "$round"; done
done
# Every blue database holds exactly green's rows, once each consumer has caught up.
last=$(mark)
for c in "${consumers[@]}"; do
  consumer_start "$c"
  await_row "$c" "$last" "$(now)" >/dev/null
  consumer_stop "$c"
done
digest="SELECT count(*) || ' ' || md5(string_agg(id || ':' || v || ':' || created, ',' ORDER BY id)) FROM lat"
expected=$(green -c "$digest")
for c in "${consumers[@]}"; do
  got=$(psql_at "$bp" "$c" -c "$digest")
  [[ $got == "$expected" ]] || { echo "MISMATCH: blue database $c ($got) differs from green ($expected)" >&2; exit 1; }
done
if [[ -n ${BENCH_OUT:-} ]]; then
  mkdir -p "$BENCH_OUT"
  cp "$work"/*.csv "$BENCH_OUT"/
fi

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, PostgreSQL $("$bindir/postgres" --version | awk '{print $3}');" \
  "$rate tx/s ($clients clients, Poisson arrivals) for ${seconds}s per run, the first ${warmup}s not counted;" \
  "native_max: $strongest"
echo "green commit to blue commit in ms; to insert / to commit: medians of green commit to the row's insert on blue, and of the rest"
echo "| consumer   | round | tx/s  | counted | p50   | p90   | p99    | max     | to insert | to commit | p50 first / last 10 s | marker after load | CPU ms/s sender / consumer | load average |"
echo "|------------|-------|-------|---------|-------|-------|--------|---------|-----------|-----------|-----------------|------------|-------------|----------------|"
printf '%s\n' "${results[@]}"
if ((rounds > 1)); then
  echo
  echo "all rounds together:"
  echo "| consumer   | counted | p50   | p90    | p99    | max     |"
  echo "|------------|---------|-------|--------|--------|---------|"
  for c in "${consumers[@]}"; do
    read -r -a files <<<"${pooled[$c]}"
    read -r n p50 p90 p99 max <<<"$(python3 "$work/pool.py" "${files[@]}")"
    printf '| %-10s | %7s | %5s | %6s | %6s | %7s |\n' "$c" "$n" "$p50" "$p90" "$p99" "$max"
  done
fi
