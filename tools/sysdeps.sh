#!/usr/bin/env bash
# Check the system packages the collection's tests and demo need; as root, install what is missing.
# Usage: sysdeps.sh [demo|test]  (the demo needs PostgreSQL, openssl and zstd; the tests also rsyslog)
set -euo pipefail
purpose="${1:-test}"

missing=()
have_server() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  compgen -G "/usr/pgsql-*/bin/initdb" >/dev/null && return 0
  return 1
}
have_server || missing+=(postgresql)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
if [ "$purpose" = test ]; then
  command -v rsyslogd >/dev/null 2>&1 || missing+=(rsyslog)
  compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null || compgen -G "/usr/lib64/rsyslog/lmnsd_gtls.so" >/dev/null \
    || missing+=(rsyslog-gnutls)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a default cluster and rsyslog on install; the tests run their own.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for c in /etc/postgresql/*/main; do [ -d "$c" ] && pg_ctlcluster "$(basename "$(dirname "$c")")" main stop 2>/dev/null || true; done
  fi
  exit 0
fi
echo "Missing system packages: ${missing[*]}" >&2
echo "Install them first, e.g. 'sudo apt-get install ${missing[*]}' (Debian/Ubuntu)" >&2
echo "or 'sudo dnf install postgresql-server postgresql openssl zstd rsyslog rsyslog-gnutls' (RHEL)." >&2
exit 1
