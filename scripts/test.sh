#!/usr/bin/env bash
# Runs every test target (unit tests, the integration-test binary against real PostgreSQL
# clusters, and the benches in test mode), after making sure PostgreSQL is installed.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- harness`. Ends with one summary
# line over all test binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh
scripts/ensure-prometheus.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
