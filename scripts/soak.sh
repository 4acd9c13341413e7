#!/usr/bin/env bash
# Soak test: pgbridge streaming for minutes or hours under steady load on green, with faults at
# random intervals, printing lag, memory and file descriptors as it goes, and ending with
# `pgbridge wait` and `pgbridge verify`, which must find blue identical to green.
#
#   scripts/soak.sh                          # 5 minutes on PostgreSQL 15
#   scripts/soak.sh --pg 17 --minutes 30     # green primary + standby, failovers included
#   scripts/soak.sh --hours 8 --faults 60-300 --seed 1234
#
# Options (each also an environment variable):
#   --minutes N     SOAK_MINUTES    how long the load and the faults run (default 5)
#   --hours N                       the same in hours
#   --faults A-B    SOAK_FAULTS     seconds between two faults, drawn uniformly (default 30-90)
#   --seed N        SOAK_SEED       seeds the fault schedule and kinds (default: random, printed;
#                                   the same seed draws the same faults at the same times)
#   --pg V          SOAK_PG         PostgreSQL major version of both servers: 15 (Debian's) or
#                                   16/17/18 (scripts/ensure-postgres-version.sh); default: the
#                                   servers in PGBRIDGE_PG_BIN, else 15
#   --no-failover   SOAK_FAILOVER=0 no green standby and no failover fault (PostgreSQL 17+ only)
#   --kinds K,K     SOAK_KINDS      only these fault kinds (names as in faults.csv, e.g.
#                                   kill9,failover; default all)
#   --rate TPS      SOAK_RATE       pgbench transactions per second on green (default 40)
#   --sample S      SOAK_SAMPLE     seconds between two lines of the table (default 10)
#   --out DIR       SOAK_OUT        where samples.csv, faults.csv and the logs go (kept; default
#                                   /tmp/pgbridge-soak-<time>)
#   --startup-exit fail|tolerate    SOAK_STARTUP_EXIT (default fail): what an exit 2 of a
#                                   pgbridge started while green or blue is down is; pgbridge
#                                   retries transient failures at start, so by default a finding;
#                                   `tolerate` (for older builds) reports it and starts pgbridge
#                                   again once the database is up
#
# The clusters: blue, and green (the example schema of mappings/example plus `documents`, whose
# 10 kB bodies are TOASTed, and `events`, keyless and insert-only, so a lost or doubled
# transaction shows), under a temporary directory removed at the end. On 17+ green is a primary
# with a physical standby that synchronizes failover slots (a copy of the cleanly stopped
# primary's data directory with standby.signal, primary_conninfo with dbname,
# primary_slot_name, hot_standby_feedback and sync_replication_slots; the primary has
# synchronized_standby_slots), and pgbridge's green DSN lists both servers with
# target_session_attrs=read-write. The failover is offered only when pgbridge created its slot
# with FAILOVER (said once at the start otherwise).
#
# The load: pgbench at --rate on green (2 clients): customers and jobs updated through the
# mapping's renames and expressions, purchases inserted, paid and deleted, events inserted,
# documents rewritten, deleted and reinserted, or updated with the TOASTed body unchanged.
#
# The faults, one at a time, kind drawn at random: SIGKILL of pgbridge (restarted), SIGTERM
# (must exit 0; restarted), immediate restart of green / of blue, pgbridge restarted while green /
# blue is down, and the green failover: the primary stopped immediately, the standby promoted,
# then a new standby made from the new primary (a clean stop and copy of it, so one more short
# green outage) for the next failover; a failover waits until the standby holds the slot
# synchronized. After each fault a logical message is written on green, and the fault counts
# as recovered when blue's applied position passes it (time printed and in faults.csv); for a
# failover the same is measured from the promotion and /readyz 200 as well.
#
# Findings stop the soak with exit 1 and the last lines of pgbridge's log: pgbridge exiting
# by itself (exit 2) or not exiting 0 on SIGTERM, no recovery within 180 s of a fault, not
# streaming for 120 s, `wait` or `verify` failing, RSS or descriptors growing (last quarter of
# the run against the second, after a minute of warm-up and the first 30 s of each process).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

usage() { sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p}' "$0"; }
minutes=${SOAK_MINUTES:-5}
faults=${SOAK_FAULTS:-30-90}
seed=${SOAK_SEED:-$(( $(od -An -N2 -tu2 /dev/urandom) % 32768 ))}
pg=${SOAK_PG:-}
failover=${SOAK_FAILOVER:-1}
rate=${SOAK_RATE:-40}
only_kinds=${SOAK_KINDS:-}
sample_every=${SOAK_SAMPLE:-10}
out=${SOAK_OUT:-/tmp/pgbridge-soak-$(date +%Y%m%d-%H%M%S)}
startup_exit=${SOAK_STARTUP_EXIT:-fail}
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=$2; shift ;;
    --hours) minutes=$(($2 * 60)); shift ;;
    --faults) faults=$2; shift ;;
    --seed) seed=$2; shift ;;
    --pg) pg=$2; shift ;;
    --no-failover) failover=0 ;;
    --rate) rate=$2; shift ;;
    --kinds) only_kinds=$2; shift ;;
    --sample) sample_every=$2; shift ;;
    --out) out=$2; shift ;;
    --startup-exit) startup_exit=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ $faults =~ ^([0-9]+)-([0-9]+)$ ]] || ((BASH_REMATCH[1] == 0 || BASH_REMATCH[1] > BASH_REMATCH[2])); then
  echo "soak: --faults wants MIN-MAX seconds, e.g. 30-90" >&2
  exit 2
fi
fault_min=${BASH_REMATCH[1]} fault_max=${BASH_REMATCH[2]}
[[ $minutes =~ ^[0-9]+$ && $seed =~ ^[0-9]+$ && $rate =~ ^[0-9]+$ && $sample_every =~ ^[0-9]+$ ]] ||
  { echo "soak: --minutes, --seed, --rate and --sample want whole numbers" >&2; exit 2; }
[[ $startup_exit == tolerate || $startup_exit == fail ]] || { echo "soak: --startup-exit tolerate|fail" >&2; exit 2; }
RANDOM=$seed
duration=$((minutes * 60))
recovery_timeout=180 stall_timeout=120

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$out"
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$out/soak.log"; }

step "checking PostgreSQL and building pgbridge (release)"
scripts/ensure-postgres.sh
if [[ -n $pg && $pg != 15 ]]; then
  PGBRIDGE_PG_BIN=$(scripts/ensure-postgres-version.sh "$pg")
  export PGBRIDGE_PG_BIN
elif [[ $pg == 15 ]]; then
  export PGBRIDGE_PG_BIN=/usr/lib/postgresql/15/bin
fi
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init soak
cargo build --release --quiet
pgbridge=${CARGO_TARGET_DIR:-$repo/target}/release/pgbridge
major=$("$bindir/postgres" --version | awk '{print int($3)}')
if [[ $failover == 1 && $major -lt 17 ]]; then
  failover=0
  echo "   no failover fault: PostgreSQL $major has no failover slots (17+)"
fi

now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
t_start=$(now_us)
elapsed() { echo $((($(now_us) - t_start) / 1000000)); }
secs() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000000 }'; } # microseconds -> "1.2"
rand_between() { echo $(($1 + RANDOM % ($2 - $1 + 1))); }
lsn_num() { local hi=${1%/*} lo=${1#*/}; echo $(((16#$hi << 32) + 16#$lo)); }

# ---- processes: pgbridge, the load, the clusters -------------------------------------------
bridge_pid="" load_pid="" bridge_starts=0 bridge_since=0
cleanup() {
  set +e
  [[ -n $load_pid ]] && stop_load
  if [[ -n $bridge_pid ]] && kill -TERM "$bridge_pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$bridge_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$bridge_pid" 2>/dev/null
    wait "$bridge_pid" 2>/dev/null
  fi
  for dir in "$work"/*/; do [[ -f $dir/server.log ]] && cp "$dir/server.log" "$out/server-$(basename "$dir").log"; done
  stop_clusters
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_bridge() {
  echo "---- soak: starting pgbridge at $(elapsed)s" >>"$out/pgbridge.log"
  "$pgbridge" run >>"$out/pgbridge.log" 2>&1 &
  bridge_pid=$!
  bridge_since=$(now_us)
  bridge_starts=$((bridge_starts + 1))
}
bridge_alive() { [[ -n $bridge_pid ]] && kill -0 "$bridge_pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$bridge_pid/stat" 2>/dev/null) != Z ]]; }
bridge_reap() { # sets rc to the exit code of the pgbridge that ended
  rc=0
  wait "$bridge_pid" 2>/dev/null || rc=$?
  bridge_pid=""
}
bridge_tail() { grep -v '^---- soak' "$out/pgbridge.log" | tail -n "${1:-25}" | sed 's/^/   | /'; }

findings=() known_findings=()
finding() { # fatal: print, keep the logs, stop with exit 1
  log "FINDING: $*"
  findings+=("$*")
  echo "   last lines of $out/pgbridge.log:"
  bridge_tail 30
  summary || true
  exit 1
}

metrics=127.0.0.1:$(free_port)
status_doc=""
fetch_status() { status_doc=$(curl -s -m 2 "http://$metrics/status" 2>/dev/null) || status_doc=""; }
field() { sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" <<<"$status_doc" | head -n1; }
applied=0 # blue's applied position (a number), from /status
poll_applied() { fetch_status; local a; a=$(field applied_lsn); if [[ -n $a ]]; then applied=$(lsn_num "$a"); else applied=0; fi; }
ready_now() { [[ $(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$metrics/readyz" 2>/dev/null) == 200 ]]; }

# ---- clusters ------------------------------------------------------------------------------
step "starting green and blue under $work (results in $out)"
blue_port="" green_port=""
start_side blue
blue() { psql_on "$blue_port" "$@"; }
green() { psql_on "$green_port" "$@"; }
node_ctl() { "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/$1" -l "$work/$1/server.log" -t 120 -w "${@:2}" >/dev/null; }
as_pg_write() { "${as_pg[@]}" tee "$1" >/dev/null; } # file, contents on stdin
# Ports by node. With a standby, green1 and green2 keep their ports whatever their role.
declare -A port
primary=green1 standby=""
if [[ $failover == 1 ]]; then
  port[green1]=$(free_port)
  port[green2]=$(free_port)
  printf "fsync = off\nmax_wal_senders = 10\nmax_replication_slots = 10\ninclude_if_exists = 'role.conf'\n" |
    start_cluster green1 "${port[green1]}"
  green_hosts=127.0.0.1,127.0.0.1 green_ports=${port[green1]},${port[green2]}
else
  start_side green
  primary=green port[green]=$green_port
  green_hosts=127.0.0.1 green_ports=$green_port
fi
green_port=${port[$primary]}
[[ $failover == 0 ]] || echo "   green is PostgreSQL $major on 127.0.0.1:$green_port, its standby will be on ${port[green2]}"

# A node's role settings, in role.conf (included last, so it overrides the copied postgresql.conf).
role_conf() { # node role [primary]
  local dir=$work/$1
  {
    printf "port = %s\nunix_socket_directories = '%s'\n" "${port[$1]}" "$dir"
    if [[ $2 == primary ]]; then
      echo "synchronized_standby_slots = 'soak_standby'"
    else
      printf "primary_conninfo = 'host=127.0.0.1 port=%s user=postgres dbname=postgres application_name=soak_standby'\n" "${port[$3]}"
      printf "primary_slot_name = 'soak_standby'\nhot_standby_feedback = on\nsync_replication_slots = on\n"
    fi
  } | as_pg_write "$dir/role.conf"
  if [[ $2 == standby ]]; then as_pg_write "$dir/standby.signal" </dev/null; fi
}
# A standby of the primary without pg_basebackup: the primary stopped cleanly, its data
# directory copied (slots removed: they are the primary's), both started.
make_standby() { # primary node -> standby node (the other one)
  local from=$1 to
  to=$([[ $1 == green1 ]] && echo green2 || echo green1)
  psql_on "${port[$from]}" -c "SELECT pg_create_physical_replication_slot('soak_standby') WHERE NOT EXISTS
                              (SELECT FROM pg_replication_slots WHERE slot_name = 'soak_standby')" >/dev/null
  node_ctl "$from" -m fast stop
  if [[ -f $work/$to/server.log ]]; then
    cat "$work/$to/server.log" >>"$out/server-$to-before.log"
  fi
  rm -rf "${work:?}/$to"
  cp -a --sparse=always "$work/$from" "$work/$to"
  rm -rf "${work:?}/$to/pg_replslot/"* "$work/$to/postmaster.pid" "$work/$to/server.log"
  role_conf "$from" primary
  role_conf "$to" standby "$from"
  node_ctl "$from" start
  node_ctl "$to" start
  primary=$from standby=$to
}

step "schemas: the example mapping (renamed table and column, jsonb to text, numeric to integer), documents (TOAST), events (keyless)"
extra="CREATE TABLE documents (id bigint PRIMARY KEY, version int NOT NULL, title text NOT NULL, body text NOT NULL);
       CREATE TABLE events (customer_id bigint NOT NULL, kind text NOT NULL, at timestamptz NOT NULL, note text);"
green -f "$repo/mappings/example/green.sql" >/dev/null
green -c "$extra ALTER TABLE events REPLICA IDENTITY FULL; CREATE SEQUENCE purchase_ids START 20001;"
blue -f "$repo/mappings/example/blue.sql" >/dev/null
blue -c "$extra"
mkdir -p "$work/mapping"
cp "$repo"/mappings/example/*.toml "$work/mapping/"
body="(SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 300) i)" # 9.6 kB, hardly compressible
green -c "INSERT INTO customers (id, name, email_address, location_structured, created_at)
            SELECT g, 'customer ' || g, 'c' || g || '@example.com', jsonb_build_object('city', 'city ' || g % 50), '2026-01-01' FROM generate_series(1, 2000) g;
          INSERT INTO jobs SELECT g, 1 + g % 2000, g % 7 + 0.5, 'job ' || g FROM generate_series(1, 2000) g;
          INSERT INTO purchases SELECT g, 1 + g % 2000, g % 997 + 0.99, 'old' FROM generate_series(1, 20000) g;
          INSERT INTO documents SELECT g, 1, 'doc ' || g, $body FROM generate_series(1, 500) g;
          INSERT INTO events SELECT 1 + g % 2000, 'seed', '2026-01-01', md5(g::text) FROM generate_series(1, 1000) g;"
if [[ $failover == 1 ]]; then
  green_dsn="postgres://postgres@127.0.0.1:${port[green1]},127.0.0.1:${port[green2]}/postgres?target_session_attrs=read-write"
else
  green_dsn="postgres://postgres@127.0.0.1:$green_port/postgres"
fi
cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "$green_dsn"
publication = "pgbridge"
slot = "pgbridge_soak"

[blue]
dsn = "postgres://postgres@127.0.0.1:$blue_port/postgres"

[mapping]
dir = "$work/mapping"

[metrics]
listen = "$metrics"
TOML
cp "$work/pgbridge.toml" "$out/"
export PGBRIDGE_CONFIG=$work/pgbridge.toml

if [[ $failover == 1 ]]; then
  step "green's standby: a copy of the cleanly stopped primary, synchronizing failover slots"
  make_standby green1
  echo "   green1 (primary) on ${port[green1]}, green2 (standby) on ${port[green2]}; pgbridge's green DSN: $green_dsn"
fi

step "pgbridge setup --copy"
"$pgbridge" setup --copy 2>&1 | tail -n 5
if [[ $failover == 1 ]]; then
  if [[ $(green -c "SELECT failover FROM pg_replication_slots WHERE slot_name = 'pgbridge_soak'") != t ]]; then
    failover=0
    echo "   no failover fault: pgbridge created its slot without FAILOVER, so it would not survive a promotion (this pgbridge lacks failover support)"
  fi
fi

# ---- the load ------------------------------------------------------------------------------
cat >"$work/shop.sql" <<'SQL'
\set c random(1, 2000)
\set j random(1, 2000)
BEGIN;
UPDATE customers SET email_address = 'u' || :c || '.' || :j || '@example.com', location_structured = jsonb_build_object('city', 'town ' || :j) WHERE id = :c;
UPDATE jobs SET quantity = quantity + 0.25 WHERE id = :j;
INSERT INTO purchases (id, customer_id, total, status) VALUES (nextval('purchase_ids'), :c, :j / 100.0, 'new');
INSERT INTO events (customer_id, kind, at, note) VALUES (:c, 'order', now(), md5(random()::text));
END;
SQL
cat >"$work/churn.sql" <<'SQL'
BEGIN;
UPDATE purchases SET status = 'paid', total = total + 1 WHERE id = (SELECT id FROM purchases WHERE id >= (SELECT (random() * max(id))::bigint FROM purchases) AND status <> 'paid' ORDER BY id LIMIT 1);
DELETE FROM purchases WHERE id = (SELECT id FROM purchases WHERE id >= (SELECT (random() * max(id))::bigint FROM purchases) ORDER BY id LIMIT 1);
END;
SQL
cat >"$work/docs.sql" <<SQL
\\set d random(1, 500)
\\set k random(1, 4)
\\if :k = 1
BEGIN;
DELETE FROM documents WHERE id = :d;
INSERT INTO documents VALUES (:d, 1, 'reborn ' || :d, $body);
END;
\\elif :k = 2
UPDATE documents SET version = version + 1, body = $body WHERE id = :d;
\\else
UPDATE documents SET version = version + 1, title = 'doc ' || :d || ' v' || version WHERE id = :d;
\\endif
SQL
# pgbench in one-minute rounds, so clients a fault aborted come back; it finds green's primary
# by itself (target_session_attrs).
load_loop() {
  while [[ ! -f $work/stop-load ]]; do
    PGTARGETSESSIONATTRS=read-write "$clientbin/pgbench" -n -c 2 -j 2 -R "$rate" -T 60 -h "$green_hosts" -p "$green_ports" -U postgres \
      -f "$work/shop.sql@6" -f "$work/churn.sql@3" -f "$work/docs.sql@1" postgres >>"$out/pgbench.log" 2>&1 &
    echo $! >"$work/pgbench.pid"
    wait $! || true
    sleep 1
  done
}
stop_load() {
  touch "$work/stop-load"
  kill -TERM "$(cat "$work/pgbench.pid" 2>/dev/null)" 2>/dev/null || true
  wait "$load_pid" 2>/dev/null || true
  load_pid=""
}

# ---- faults --------------------------------------------------------------------------------
kinds=(kill9 term green-restart blue-restart bridge-during-green-restart bridge-during-blue-restart)
[[ $failover == 1 ]] && kinds+=(failover)
if [[ -n $only_kinds ]]; then
  wanted=() # in the order of kinds: failover stays last
  for k in "${kinds[@]}"; do [[ ",$only_kinds," == *",$k,"* ]] && wanted+=("$k"); done
  for k in ${only_kinds//,/ }; do
    [[ " ${kinds[*]} " == *" $k "* ]] || echo "   fault kind $k is not available here (kinds: ${kinds[*]})"
  done
  [[ ${#wanted[@]} -gt 0 ]] || { echo "soak: no fault kind left to inject" >&2; exit 2; }
  kinds=("${wanted[@]}")
fi
fault_count=0
echo "t_s,kind,outage_s,recovery_s,ready_s,note" >"$out/faults.csv"
record_fault() { # kind outage recovery ready note
  fault_count=$((fault_count + 1))
  echo "$(elapsed),$1,$2,$3,$4,$5" >>"$out/faults.csv"
}
node_of() { [[ $1 == blue ]] && echo blue || echo "$primary"; }
named() { [[ $1 == "$2" ]] && echo "$1" || echo "$1 ($2)"; } # side node: "green (green2)"

# Waits until blue's applied position passes a logical message written on green now: the time
# from the end of a fault until pgbridge has applied what green committed since (in $recovered).
# A pgbridge exit 2 is a finding, except the known start-up case when tolerated (then it is
# started again).
recovered=""
recover() { # may_exit_at_startup
  local tolerate=$1 t0 mark deadline
  t0=$(now_us)
  deadline=$((t0 + recovery_timeout * 1000000))
  until mark=$(green -c "SELECT pg_logical_emit_message(true, 'soak', 'fault $fault_count')" 2>/dev/null); do
    (($(now_us) < deadline)) || finding "green did not accept a write within ${recovery_timeout}s after a fault"
    sleep 0.2
  done
  mark=$(lsn_num "$mark")
  while poll_applied && ((applied < mark)); do
    if ! bridge_alive; then
      bridge_reap
      if [[ $rc == 2 && $tolerate == yes && $startup_exit == tolerate ]]; then
        local why
        why=$(grep -v '^---- soak' "$out/pgbridge.log" | grep -i error | tail -n1 | cut -c1-220)
        known_findings+=("pgbridge started while a database restarted exited 2: $why")
        log "   known finding (tolerated): pgbridge started during the restart exited 2; starting it again"
        log "   | $why"
        start_bridge
        tolerate=no
      else
        finding "pgbridge exited with code $rc during the recovery from a fault"
      fi
    fi
    (($(now_us) < deadline)) || finding "blue did not pass green's position ${recovery_timeout}s after a fault (pgbridge state: $(field state))"
    sleep 0.1
  done
  recovered=$(secs $(($(now_us) - t0)))
}

fault_bridge() { # kill9 | term
  local t0
  t0=$(now_us)
  if [[ $1 == kill9 ]]; then
    kill -KILL "$bridge_pid"
    bridge_reap
  else
    kill -TERM "$bridge_pid"
    local i
    for ((i = 0; i < 600; i++)); do bridge_alive || break; sleep 0.1; done
    bridge_alive && { kill -KILL "$bridge_pid"; bridge_reap; finding "pgbridge did not stop within 60s of SIGTERM"; }
    bridge_reap
    ((rc == 0)) || finding "pgbridge exited with code $rc on SIGTERM (a clean stop exits 0)"
  fi
  start_bridge
  local down; down=$(secs $(($(now_us) - t0)))
  recover no
  record_fault "$1" "$down" "$recovered" "" ""
  log "fault $fault_count: $1 of pgbridge (stopped in ${down}s), restarted; caught up ${recovered}s later"
}

# An immediate stop of green's primary or of blue, 0-4 s down, and a start; with `bridge`,
# pgbridge is killed and started again while the server is down.
fault_restart() { # green | blue, [bridge]
  local node t0 pause kind=$1-restart what
  node=$(node_of "$1")
  pause=$(rand_between 0 4)
  what="immediate restart of $(named "$1" "$node")"
  t0=$(now_us)
  node_ctl "$node" -m immediate stop
  if [[ ${2:-} == bridge ]]; then
    kind=bridge-during-$kind what="pgbridge killed and started while $(named "$1" "$node") was down"
    kill -KILL "$bridge_pid"
    bridge_reap
    start_bridge
  fi
  sleep "$pause"
  node_ctl "$node" start
  local down; down=$(secs $(($(now_us) - t0)))
  recover "$([[ ${2:-} == bridge ]] && echo yes || echo no)"
  record_fault "$kind" "$down" "$recovered" "" ""
  log "fault $fault_count: $what, down ${down}s; caught up ${recovered}s later"
}

failover_ready() { # the standby streams and holds pgbridge's slot, synchronized and persistent
  [[ -n $standby ]] &&
    [[ $(psql_on "${port[$primary]}" -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'soak_standby' AND state = 'streaming'" 2>/dev/null) == 1 ]] &&
    [[ $(psql_on "${port[$standby]}" -c "SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'pgbridge_soak'" 2>/dev/null) == t ]]
}

failover_times=()
fault_failover() {
  local old=$primary new=$standby t0 t1 mark ready="" caught=""
  t0=$(now_us)
  node_ctl "$old" -m immediate stop
  psql_on "${port[$new]}" -c "SELECT pg_promote(true, 60)" >/dev/null
  t1=$(now_us)
  primary=$new standby="" green_port=${port[$new]}
  mark=$(lsn_num "$(green -c "SELECT pg_logical_emit_message(true, 'soak', 'promoted')")")
  local deadline=$((t1 + recovery_timeout * 1000000))
  while [[ -z $caught ]]; do
    bridge_alive || { bridge_reap; finding "pgbridge exited with code $rc after the failover"; }
    if [[ -z $ready ]] && ready_now; then ready=$(secs $(($(now_us) - t1))); fi
    poll_applied
    if ((applied >= mark)); then caught=$(secs $(($(now_us) - t1))); fi
    (($(now_us) < deadline)) || finding "pgbridge did not apply past the promotion point ${recovery_timeout}s after the failover (state: $(field state))"
    sleep 0.1
  done
  [[ -n $ready ]] || ready=$caught
  local promote made tb
  promote=$(secs $((t1 - t0)))
  failover_times+=("$old -> $new: primary stopped to promotion done ${promote}s; after the promotion: /readyz 200 ${ready}s, applied past the promotion ${caught}s")
  log "fault $((fault_count + 1)): failover of green: $old stopped immediately, $new promoted ${promote}s later; pgbridge ready ${ready}s and applying ${caught}s after the promotion"
  tb=$(now_us)
  make_standby "$new"
  made=$(secs $(($(now_us) - tb)))
  recover no
  record_fault failover "$promote" "$caught" "$ready" "new standby $standby made in ${made}s; caught up ${recovered}s later"
  log "   new standby $standby made from $new in ${made}s (clean stop, copy, start); caught up ${recovered}s later"
}

inject() {
  local kind=${kinds[RANDOM % ${#kinds[@]}]}
  if [[ $kind == failover ]] && ! failover_ready; then
    log "   (failover postponed: the standby does not hold pgbridge's slot synchronized yet)"
    [[ ${#kinds[@]} -gt 1 ]] || return 0
    kind=${kinds[RANDOM % (${#kinds[@]} - 1)]}
  fi
  case $kind in
    kill9 | term) fault_bridge "$kind" ;;
    green-restart) fault_restart green ;;
    blue-restart) fault_restart blue ;;
    bridge-during-green-restart) fault_restart green bridge ;;
    bridge-during-blue-restart) fault_restart blue bridge ;;
    failover) fault_failover ;;
  esac
}

# ---- samples -------------------------------------------------------------------------------
echo "t_s,faults,pid,process_age_s,state,lag_bytes,lag_seconds,applied_lsn,rss_kb,fds,threads,green_events,blue_events" >"$out/samples.csv"
header() {
  printf '%6s %6s %-12s %10s %7s %7s %5s %4s %9s %9s %s\n' elapsed faults state lag_bytes lag_s rss_MB fds thr green_ev blue_ev applied_lsn
}
not_streaming_since="" samples=0
sample() {
  local t rss="" fds="" thr="" age="" state lag_b lag_s applied ge be
  t=$(elapsed)
  fetch_status
  state=$(field state) lag_b=$(field lag_bytes) lag_s=$(field lag_seconds) applied=$(field applied_lsn)
  [[ -n $state ]] || state=$(bridge_alive && echo "no-endpoint" || echo down)
  if bridge_alive; then
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$bridge_pid/status")
    thr=$(awk '/^Threads/ {print $2}' "/proc/$bridge_pid/status")
    fds=$(find "/proc/$bridge_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    age=$((($(now_us) - bridge_since) / 1000000))
  fi
  ge=$(green -c "SELECT count(*) FROM events" 2>/dev/null) || ge=-
  be=$(blue -c "SELECT count(*) FROM events" 2>/dev/null) || be=-
  samples=$((samples + 1))
  if ((samples % 20 == 1)); then header; fi
  echo "$t,$fault_count,$bridge_pid,$age,$state,$lag_b,$lag_s,$applied,$rss,$fds,$thr,$ge,$be" >>"$out/samples.csv"
  printf '%5ss %6s %-12s %10s %7.7s %7s %5s %4s %9s %9s %s\n' "$t" "$fault_count" "$state" "${lag_b:--}" "${lag_s:--}" \
    "$([[ -n $rss ]] && awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }' || echo -)" "${fds:--}" "${thr:--}" "$ge" "$be" "${applied:--}"
  if [[ $state == streaming ]]; then
    not_streaming_since=""
  elif [[ -z $not_streaming_since ]]; then
    not_streaming_since=$t
  elif ((t - not_streaming_since > stall_timeout)); then
    finding "pgbridge not streaming for ${stall_timeout}s (state $state) outside any fault"
  fi
}

# ---- summary -------------------------------------------------------------------------------
wait_result="not run" verify_result="not run" flat=""
summary() {
  step "summary"
  echo "   seed $seed; repeat with: scripts/soak.sh --seed $seed --minutes $minutes --faults $fault_min-$fault_max --pg $major --rate $rate$([[ $failover == 1 ]] || echo " --no-failover")${only_kinds:+ --kinds $only_kinds}"
  echo "   PostgreSQL $major, ran $(elapsed)s, pgbridge started $bridge_starts times; results in $out"
  local growth=0
  python3 - "$out/samples.csv" "$out/faults.csv" "$duration" <<'PY' | tee "$out/summary.txt" || growth=$?
import csv, statistics, sys
samples = list(csv.DictReader(open(sys.argv[1])))
faults = list(csv.DictReader(open(sys.argv[2])))
duration = int(sys.argv[3])
warm = max(60, duration // 10)
steady = [s for s in samples if s["rss_kb"] and int(s["t_s"]) >= warm and int(s["process_age_s"] or 0) >= 30]
by_kind = {}
for f in faults:
    by_kind.setdefault(f["kind"], []).append(float(f["recovery_s"]))
print(f"   faults: {len(faults)}" + "".join(f"; {k} {len(v)}" for k, v in sorted(by_kind.items())))
for k, v in sorted(by_kind.items()):
    print(f"     {k:28s} caught up after min {min(v):.1f}s, median {statistics.median(v):.1f}s, max {max(v):.1f}s")
lags = [int(s["lag_bytes"]) for s in samples if s["lag_bytes"]]
if lags:
    print(f"   lag_bytes in samples: median {statistics.median(lags):.0f}, max {max(lags)}")
growth = []
if len(steady) >= 8:
    for col, unit, scale in (("rss_kb", "MB", 1024), ("fds", "", 1), ("threads", "", 1)):
        v = [int(s[col]) / scale for s in steady]
        n = len(v)
        q2, q4 = v[n // 4: n // 2], v[3 * n // 4:]
        a2, a4 = sum(q2) / len(q2), sum(q4) / len(q4)
        print(f"   {col:8s} after warm-up ({n} samples): min {min(v):.1f}, max {max(v):.1f}, first {v[0]:.1f}, last {v[-1]:.1f}; "
              f"2nd-quarter avg {a2:.1f}, last-quarter avg {a4:.1f} {unit}")
        if (col == "rss_kb" and a4 > a2 * 1.2 and a4 - a2 > 5) or (col != "rss_kb" and a4 > a2 + 3):
            growth.append(f"{col} grew from {a2:.1f} to {a4:.1f} {unit} (2nd to last quarter)")
    oldest = {}
    for s in steady:
        oldest.setdefault(s["pid"], []).append(s)
    pid, rows = max(oldest.items(), key=lambda kv: int(kv[1][-1]["process_age_s"]))
    print(f"   longest-lived pgbridge (pid {pid}, {rows[-1]['process_age_s']}s): RSS {int(rows[0]['rss_kb'])/1024:.1f} -> "
          f"{int(rows[-1]['rss_kb'])/1024:.1f} MB, fds {rows[0]['fds']} -> {rows[-1]['fds']}")
else:
    print("   too few samples after warm-up to judge memory and descriptors")
    sys.exit(4)
for g in growth:
    print(f"   GROWTH: {g}")
sys.exit(3 if growth else 0)
PY
  for f in "${failover_times[@]}"; do echo "   failover: $f"; done
  for f in "${known_findings[@]}"; do echo "   known finding: $f"; done
  for f in "${findings[@]}"; do echo "   FINDING: $f"; done
  echo "   pgbridge wait: $wait_result; pgbridge verify: $verify_result"
  if [[ $growth == 0 ]]; then flat="; memory and descriptors flat"; fi
  [[ $growth == 0 || $growth == 4 ]]
}

# ---- the run -------------------------------------------------------------------------------
step "pgbridge run (log: $out/pgbridge.log), load at $rate tx/s, faults every $fault_min-${fault_max}s for $minutes min, seed $seed"
echo "   fault kinds: ${kinds[*]}"
start_bridge
load_loop &
load_pid=$!
for _ in $(seq 300); do ready_now && break; sleep 0.1; done
t_start=$(now_us)
next_fault=$(rand_between "$fault_min" "$fault_max")
next_sample=0
while (($(elapsed) < duration)); do
  if ! bridge_alive; then
    bridge_reap
    finding "pgbridge exited by itself with code $rc"
  fi
  if (($(elapsed) >= next_sample)); then
    sample
    next_sample=$(($(elapsed) + sample_every))
  fi
  if (($(elapsed) >= next_fault)); then
    inject
    next_fault=$(($(elapsed) + $(rand_between "$fault_min" "$fault_max")))
  fi
  sleep 1
done
sample

step "stopping the load; pgbridge wait and verify"
stop_load
bridge_alive || { bridge_reap; finding "pgbridge exited with code $rc"; }
if "$pgbridge" wait --timeout 300s 2>&1 | tee "$out/wait.txt" | sed 's/^/   /'; then wait_result="caught-up"; else wait_result="FAILED (exit ${PIPESTATUS[0]})"; fi
if "$pgbridge" verify 2>&1 | tee "$out/verify.txt" | sed 's/^/   /'; then verify_result=identical; else verify_result="DIFFERENT or error (exit ${PIPESTATUS[0]})"; fi
echo "   events: green $(green -c 'SELECT count(*) FROM events'), blue $(blue -c 'SELECT count(*) FROM events')"
sample
kill -TERM "$bridge_pid"
bridge_reap
((rc == 0)) || findings+=("pgbridge exited with code $rc on the final SIGTERM")
ok=yes
summary || ok=no
[[ $wait_result == "caught-up" && $verify_result == identical && ${#findings[@]} -eq 0 ]] || ok=no
if [[ $ok == yes ]]; then
  echo "   soak passed: blue equals green after $fault_count faults$flat."
else
  echo "   SOAK FAILED: see above and $out" >&2
  exit 1
fi
