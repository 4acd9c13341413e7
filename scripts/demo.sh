#!/usr/bin/env bash
# A working pgbridge in one command: two throwaway PostgreSQL clusters ("green" and "blue")
# under a temporary directory, green migrated and blue not (mappings/example: a renamed column,
# jsonb on green for text on blue, numeric for integer, a renamed table), `pgbridge check`,
# `setup`, `run` in the background, writes on green, and blue catching up through the mapping
# with the lag shown as it goes. Everything is stopped and removed on exit, also on Ctrl-C.
#
#   scripts/demo.sh            # about 20 seconds of live streaming
#   DEMO_SECONDS=60 scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
seconds=${DEMO_SECONDS:-20}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "checking PostgreSQL and building pgbridge"
scripts/ensure-postgres.sh
# shellcheck source=lib/clusters.sh
. scripts/lib/clusters.sh
clusters_init demo
cargo build --quiet
pgbridge=${CARGO_TARGET_DIR:-$repo/target}/debug/pgbridge

bridge_pid=""
cleanup() {
  set +e
  [[ -n $bridge_pid ]] && kill -TERM "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
  stop_clusters
}
trap cleanup EXIT

step "starting green and blue under $work"
start_side green
start_side blue
green() { psql_on "$green_port" "$@"; }
blue() { psql_on "$blue_port" "$@"; }

step "creating the example schemas (mappings/example): green was migrated, blue was not"
green -f "$repo/mappings/example/green.sql"
blue -f "$repo/mappings/example/blue.sql"
# Green has 100 customers and 1,000 purchases; blue starts empty (setup --copy fills it).
green -c "INSERT INTO customers (id, name, email_address, location_structured, created_at)
          SELECT g, 'customer ' || g, 'user' || g || '@example.com', jsonb_build_object('city', 'Lisbon'), '2026-01-01'
          FROM generate_series(1, 100) g;
          INSERT INTO purchases SELECT g, 1 + g % 100, g % 50 + 0.5, 'old' FROM generate_series(1, 1000) g"

cat >"$work/pgbridge.toml" <<TOML
[green]
dsn = "postgres://postgres@127.0.0.1:$green_port/postgres"
publication = "pgbridge"
slot = "pgbridge_to_blue"

[blue]
dsn = "postgres://postgres@127.0.0.1:$blue_port/postgres"
schema = "pgbridge"

[mapping]
dir = "$repo/mappings/example"
TOML
export PGBRIDGE_CONFIG=$work/pgbridge.toml

same=yes
step "pgbridge check: the plan, validated against both live catalogs"
"$pgbridge" check

step "pgbridge setup --copy: publication, slot, and green's rows copied into blue through the mapping"
"$pgbridge" setup --copy

step "pgbridge run (in the background; log in $work/pgbridge.log)"
"$pgbridge" run >"$work/pgbridge.log" 2>&1 &
bridge_pid=$!

step "writing on green for ${seconds}s; blue follows"
printf '%6s  %16s  %12s  %10s\n' "second" "green purchases" "blue orders" "lag bytes"
for ((i = 1; i <= seconds; i++)); do
  green -c "
    INSERT INTO purchases (id, customer_id, total, status)
      SELECT $i * 1000 + g, 1 + (random() * 99)::int, round((random() * 500)::numeric, 2), 'new' FROM generate_series(1, 200) g;
    INSERT INTO jobs (id, customer_id, quantity, description)
      SELECT $i * 1000 + g, 1 + (random() * 99)::int, round((random() * 10)::numeric, 2), 'job' FROM generate_series(1, 20) g;
    UPDATE purchases SET status = 'paid' WHERE id % 7 = $((i % 7)) AND status = 'new';
    UPDATE customers SET location_structured = jsonb_build_object('city', (ARRAY['Lisbon','Porto','Faro'])[1 + $i % 3]),
                         email_address = 'user' || id || '@new.example' WHERE id % 10 = $((i % 10));
    DELETE FROM purchases WHERE id % 97 = $((i % 97)) AND status = 'paid';"
  lag=$("$pgbridge" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag_bytes"])')
  printf '%6d  %16s  %12s  %10s\n' "$i" "$(green -c 'SELECT count(*) FROM purchases')" "$(blue -c 'SELECT count(*) FROM orders')" "$lag"
  sleep 1
done

step "waiting for blue to catch up"
marker=$(green -c "SELECT pg_logical_emit_message(true, 'pgbridge_demo', 'done')")
for _ in $(seq 1 300); do
  [[ $(blue -c "SELECT lsn >= '$marker' FROM pgbridge.checkpoint") == t ]] && break
  sleep 0.1
done
"$pgbridge" status

step "pgbridge verify: green through the mapping against blue, by key"
"$pgbridge" verify || same=no

step "comparing green, passed through the mapping by hand, with blue row by row"
compare() { # name green_query blue_query
  local g b
  g=$(green -c "SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM ($2) r")
  b=$(blue -c "SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM ($3) r")
  printf '   %-10s green: %s\n   %-10s blue:  %s\n' "$1" "$g" "" "$b"
  [[ $g == "$b" ]] || same=no
}
compare customers "SELECT id, name, email_address, location_structured ->> 'city', created_at FROM customers" \
                  "SELECT id, name, email, location, created_at FROM customers"
compare jobs "SELECT id, customer_id, round(quantity)::int, description FROM jobs" \
             "SELECT id, customer_id, quantity, description FROM jobs"
compare orders "SELECT id, customer_id, total, status FROM purchases" \
               "SELECT id, customer_id, total, status FROM orders"
if [[ $same == yes ]]; then
  echo "   blue holds exactly what green committed."
else
  echo "   MISMATCH: see $work/pgbridge.log" >&2
  exit 1
fi
