#!/usr/bin/env bash
# Runs every test target, after making sure PostgreSQL is installed for the integration tests.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- harness`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh
exec cargo test --all-targets "$@"
