#!/usr/bin/env bash
# How cutover and rollback scripts gate on pgbridge. Adapt the three placeholder functions to
# your deployment (load balancer, feature flag, DNS...); the pgbridge calls are the real gates.
#
#   scripts/cutover-example.sh cutover    # traffic blue -> green; pgbridge then keeps blue current
#   scripts/cutover-example.sh rollback   # traffic green -> blue without losing a transaction
#
# PGBRIDGE_CONFIG (or ./pgbridge.toml) points at the bridge's configuration.
set -euo pipefail
pgbridge=${PGBRIDGE:-pgbridge}

stop_writes_on() { echo "   [placeholder] put the application in maintenance mode for $1 (or fence its role)"; }
send_traffic_to() { echo "   [placeholder] switch the application's database to $1"; }
resume_writes() { echo "   [placeholder] leave maintenance mode"; }

abort() {
  echo "ABORT: $*; traffic was not switched" >&2
  resume_writes
  exit 1
}

case "${1:-}" in
  cutover)
    echo "1. preflight: the mapping still fits both live schemas"
    "$pgbridge" check >/dev/null || abort "pgbridge check found problems (run it for details)"
    echo "2. the bridge is set up and streaming (it will carry green's writes back to blue)"
    "$pgbridge" status --json | grep -q '"state": "streaming"' || abort "pgbridge run is not streaming"
    echo "3. switch traffic to green"
    stop_writes_on blue
    send_traffic_to green
    resume_writes
    echo "4. during the stabilization window, alert on lag (docker/prometheus/alerts.yml)"
    "$pgbridge" lag
    ;;
  rollback)
    echo "1. stop writes on green so nothing commits there after the final wait"
    stop_writes_on green
    echo "2. wait until blue has every transaction green committed"
    "$pgbridge" wait --timeout 30s || abort "blue did not catch up within 30 s"
    "$pgbridge" lag --max-bytes 0 >/dev/null || echo "   (non-transactional WAL only; wait already proved blue has every commit)"
    echo "3. sequences are not replicated: move blue's ahead of green's before anything writes there"
    "$pgbridge" sync-sequences --margin 1000 || abort "sync-sequences failed"
    echo "4. prove blue holds everything green has"
    "$pgbridge" verify || abort "blue differs from green (the keys are listed above); traffic stays on green, writes stopped"
    echo "5. switch traffic back to blue"
    send_traffic_to blue
    resume_writes
    ;;
  *)
    echo "usage: $0 cutover|rollback" >&2
    exit 2
    ;;
esac
