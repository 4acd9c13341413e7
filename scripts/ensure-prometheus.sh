#!/usr/bin/env bash
# Makes sure Prometheus and promtool (Debian's `prometheus` package) exist for the tests that
# check the alert rules and scrape a running pgbridge. Idempotent; silent when installed.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "ensure-prometheus: prometheus/promtool not found; install Debian's prometheus package" >&2
  exit 1
fi
echo "ensure-prometheus: installing prometheus with apt-get" >&2
# shellcheck source=lib/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install_quietly prometheus
# The package may start its own server; the tests start theirs.
if command -v service >/dev/null; then service prometheus stop >/dev/null 2>&1 || true; fi
pkill -x prometheus >/dev/null 2>&1 || true
