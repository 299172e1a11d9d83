#!/usr/bin/env bash
# Build one tarball for air-gapped installs: the collection tarball, the wheels of its Python dependencies for
# every supported target (and of ansible-core, for a control node), requirements, bindep and an INSTALL note.
# Usage: tools/offline_bundle.sh OUTDIR   -> OUTDIR/ransomeye-ops-offline-<version>.tar.gz
#
# Targets (TARGETS below): CPython 3.9-3.12 on x86_64 and aarch64 with glibc >= 2.28 (wheels tagged
# manylinux_2_28 or older: RHEL/Rocky/Alma 8 and 9, Ubuntu 20.04+, Debian 11+). A control node needs
# ansible-core >= 2.17, which needs CPython >= 3.10: CPython 3.9 is a managed-host target only.
# The wheels are downloaded once per requirements set into .build/wheelhouse/<hash> (a cache; PyPI is needed
# only to fill it) and reused by later builds.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
version="$(python -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$repo/galaxy.yml")"
core_spec='ansible-core>=2.17,<2.20'
pythons=(3.9 3.10 3.11 3.12)
controller_pythons=(3.10 3.11 3.12)
arches=(x86_64 aarch64)
# Every manylinux tag a glibc 2.28 host accepts, newest first (pip does not widen --platform by itself).
platform_args() {
  local arch="$1" tag
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014; do
    printf -- '--platform\n%s_%s\n' "$tag" "$arch"
  done
}
is_controller() { local p; for p in "${controller_pythons[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

# The cache key covers everything that decides which wheels are downloaded, and nothing else.
key="$( (cat "$repo/requirements.txt"; echo "$core_spec ${pythons[*]} ${controller_pythons[*]} ${arches[*]}";
         platform_args x86_64) | sha256sum | cut -c1-16)"
wheelhouse="$repo/.build/wheelhouse/$key"
if [ ! -f "$wheelhouse/.complete" ]; then
  rm -rf "$wheelhouse"
  mkdir -p "$wheelhouse"
  for arch in "${arches[@]}"; do
    for py in "${pythons[@]}"; do
      reqs=(-r "$repo/requirements.txt")
      is_controller "$py" && reqs+=("$core_spec")
      mapfile -t plat < <(platform_args "$arch")
      # A target pip cannot resolve fails the build (pipefail), so the bundle never misses one silently.
      python -m pip download -q --disable-pip-version-check --only-binary=:all: --dest "$wheelhouse" \
        --implementation cp --python-version "$py" "${plat[@]}" "${reqs[@]}" 2>&1 | { grep -v "is ignored" || true; }
    done
  done
  touch "$wheelhouse/.complete"
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
name="ransomeye-ops-offline-$version"
mkdir -p "$stage/$name"
cp -r "$wheelhouse" "$stage/$name/wheels"
rm -f "$stage/$name/wheels/.complete"
ansible-galaxy collection build --force --output-path "$stage/$name" "$repo" >/dev/null
cp "$repo/requirements.txt" "$repo/bindep.txt" "$stage/$name/"
{
  echo "# One line per target the wheels were checked for: arch python role"
  for arch in "${arches[@]}"; do
    for py in "${pythons[@]}"; do
      if is_controller "$py"; then echo "$arch $py controller"; else echo "$arch $py managed-host"; fi
    done
  done
} > "$stage/$name/TARGETS.txt"
cat > "$stage/$name/INSTALL.txt" <<TXT
Air-gapped install of ransomeye.ops $version

Contents
  ransomeye-ops-$version.tar.gz      the collection
  wheels/                         Python wheels for Linux x86_64 and aarch64 with glibc 2.28 or newer
                                  (manylinux_2_28 and older tags: RHEL/Rocky/Alma 8 and 9, Ubuntu 20.04 and
                                  newer, Debian 11 and newer)
  requirements.txt                what the modules import (cryptography, psycopg2-binary, psutil, zstandard)
  bindep.txt                      system packages
  TARGETS.txt                     every target the wheels were checked for

Targets
  control node   CPython 3.10 (gets ansible-core 2.17), 3.11 and 3.12 (ansible-core 2.19); x86_64, aarch64
  managed host   CPython 3.9, 3.10, 3.11, 3.12; x86_64, aarch64 (the modules' imports only)
  ansible-core 2.17 and newer need Python 3.10 or newer on the control node, so CPython 3.9 is a managed-host
  target only. Do not assume python3 is the right one: RHEL 9 and its derivatives ship python3 = 3.9, RHEL 8
  ships 3.6. Pick the interpreter by name.

Control node
  PY=python3.11        # or python3.12 / python3.10; on RHEL 8 and 9: dnf install python3.11 first
  \$PY -m venv /opt/ransomeye-ops/venv
  /opt/ransomeye-ops/venv/bin/pip install --no-index --find-links wheels -r requirements.txt '$core_spec'
  /opt/ransomeye-ops/venv/bin/ansible-galaxy collection install --offline ransomeye-ops-$version.tar.gz
  /opt/ransomeye-ops/venv/bin/ansible-doc -l ransomeye.ops

Managed hosts (the interpreter Ansible uses there: CPython 3.9 to 3.12)
  Copy wheels/ and requirements.txt to the host, then install into a venv and point Ansible at it:
  PY=/usr/bin/python3  # RHEL 9: 3.9; Ubuntu 22.04: 3.10; Debian 12: 3.11; RHEL 8: use python3.9 or newer
  \$PY -m venv /opt/ransomeye-ops/host
  /opt/ransomeye-ops/host/bin/pip install --no-index --find-links wheels -r requirements.txt
  and set ansible_python_interpreter=/opt/ransomeye-ops/host/bin/python for that host.
  Each module needs only some of them ("optional": it works without, with less detail):
$(python "$repo/tools/module_deps.py" --text)

System packages (bindep.txt): the PostgreSQL client matching the server's major version, openssl, gzip, zstd.
TXT
# The wheels are zip files already: gzip -1 keeps the bundle one .tar.gz without spending seconds on them.
tar -C "$stage" -cf - "$name" | gzip -1 > "$out/$name.tar.gz"
echo "$out/$name.tar.gz"
