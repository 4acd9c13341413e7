# Sourced by the ensure-*.sh scripts: installs Debian packages without letting their maintainer
# scripts start services (the tests start their own servers).
# Usage: apt_install_quietly PACKAGE...
apt_install_quietly() {
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d created=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created=yes
  fi
  local status=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || status=$?
  [[ -n $created ]] && rm -f "$policy"
  return $status
}
