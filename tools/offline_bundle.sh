#!/usr/bin/env bash
# Build one tarball for air-gapped installs: the collection tarball, the wheels of its Python
# dependencies (and of ansible-core, for a controller), requirements, bindep and an INSTALL note.
# Usage: tools/offline_bundle.sh OUTDIR   -> OUTDIR/ransomeye-ops-offline-<version>.tar.gz
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
version="$(python -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$repo/galaxy.yml")"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
name="ransomeye-ops-offline-$version"
mkdir -p "$stage/$name/wheels"

ansible-galaxy collection build --force --output-path "$stage/$name" "$repo" >/dev/null
python -m pip download -q --dest "$stage/$name/wheels" -r "$repo/requirements.txt" 'ansible-core>=2.17,<2.20' 2>&1 \
  | grep -v "is ignored" || true
cp "$repo/requirements.txt" "$repo/bindep.txt" "$stage/$name/"
cat > "$stage/$name/INSTALL.txt" <<TXT
Air-gapped install of ransomeye.ops $version

  python3 -m venv /opt/ransomeye-ops/venv
  /opt/ransomeye-ops/venv/bin/pip install --no-index --find-links wheels -r requirements.txt 'ansible-core>=2.17,<2.20'
  /opt/ransomeye-ops/venv/bin/ansible-galaxy collection install --offline ransomeye-ops-$version.tar.gz
  /opt/ransomeye-ops/venv/bin/ansible-doc -l ransomeye.ops

System packages (bindep.txt): the PostgreSQL client matching the server's major version, openssl, gzip, zstd.
The wheels are for $(python -c 'import sys,platform; print("CPython %d.%d on %s" % (sys.version_info[0], sys.version_info[1], platform.machine()))').
TXT
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
