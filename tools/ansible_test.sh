#!/usr/bin/env bash
# ansible-test over a copy of the tracked tree (ansible-test resolves symlinks, so the
# collection must really live under ansible_collections/ransomeye/ops).
# Usage: tools/ansible_test.sh sanity|integration DEST [ansible-test args...]
set -euo pipefail
command="$1"
dest="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
case "$dest" in
  "$repo"/*) echo "ansible_test.sh: $dest must lie outside the checkout (its .gitignore would hide the copy)" >&2; exit 2 ;;
esac
rm -rf "$dest"
mkdir -p "$dest"
cd "$repo"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest" 2>/dev/null || true
# Files deleted in the work tree but still in the index are skipped by cp; that is what we want.

# ansible-test fetches a get-pip script from the internet; seed its cache with an
# ensurepip stand-in so sanity works offline (CI here has no internet).
at_dir="$(python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')"
pipv="$(grep -oP "pip='\K[0-9.]+" "$at_dir/_internal/python_requirements.py" | head -1 || true)"
if [ -n "$pipv" ]; then
  cache="${HOME}/.ansible/test/cache"
  mkdir -p "$cache"
  cat > "$cache/get_pip_${pipv//./_}.py" <<'PY'
import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
PY
fi
cd "$dest"
case "$command" in
  sanity)
    out="$(mktemp)"
    set +e
    ansible-test sanity --python 3.11 --color no "${@:3}" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    # A run that checked nothing must not pass as green.
    if grep -q "All targets skipped" "$out"; then echo "ansible_test.sh: sanity checked no file" >&2; rc=1; fi
    rm -f "$out"
    exit "$rc" ;;
  integration) ansible-test integration --python 3.11 --local --color no "${@:3}" ;;
  *) echo "usage: $0 sanity|integration DEST [args]" >&2; exit 2 ;;
esac
