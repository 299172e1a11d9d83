#!/usr/bin/env bash
# make lint: the ecosystem's own checkers, offline, with the tools of .venv-lint (requirements-lint.txt).
#   1. galaxy-importer on the built tarball (ansible-doc, ansible-lint, flake8, changelog, required tags)
#   2. antsibull-docs lint-collection-docs --plugin-docs
#   3. ansible-lint, production profile (.ansible-lint)
#   4. antsibull-changelog lint, CHANGELOG.md generated from changelogs/changelog.yaml, a simulated release,
#      version_added against the releases, role argument-spec defaults, EE and offline-bundle requirements
# Usage: tools/lint.sh LINT_VENV_BIN [step...]   (steps: importer docs ansible-lint checks; default all)
set -euo pipefail
bin="$(cd "$1" && pwd)"
shift
# One step at a time: galaxy-importer gives its ansible-lint run 180 s (as Galaxy does), and a second
# ansible-lint beside it on a busy machine would make that run time out.
steps=("${@:-importer docs ansible-lint checks}")
steps=(${steps[*]})
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$bin:$PATH" NO_COLOR=1 LC_ALL=C.UTF-8
work="$(mktemp -d "${TMPDIR:-/tmp}/ransomeye-ops-lint.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Keep every tool's state (ansible-lint's .ansible/, caches, ansible's local temp) out of the checkout.
export XDG_CACHE_HOME="$work/cache" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" ANSIBLE_HOME="$work/ansible-home"
failed=()

step() {  # step NAME COMMAND...: run, time, remember failures, go on with the next step
  local name="$1" t0=$SECONDS rc=0
  shift
  echo "== lint: $name"
  "$@" || rc=$?
  echo "== lint: $name: $([ $rc -eq 0 ] && echo ok || echo FAILED) ($((SECONDS - t0)) s)"
  [ $rc -eq 0 ] || failed+=("$name")
}

# The collection as a release would ship it: the tracked and new (not ignored) files, under
# ansible_collections/ransomeye/ops so that the tools resolve ransomeye.ops.* names.
coll="$work/collections/ansible_collections/ransomeye/ops"
mkdir -p "$coll"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$coll" 2>/dev/null || true)
export ANSIBLE_COLLECTIONS_PATH="$work/collections"

importer() {
  local src="$work/import-src" out="$work/import.log"
  cp -a "$coll" "$src"
  # Galaxy requires `repository`; galaxy.yml names none until the project has a public one (never a
  # placeholder). The import check then runs on a tarball that names this checkout, so everything else is checked.
  if ! grep -q '^repository:' "$src/galaxy.yml"; then
    echo "lint: galaxy.yml has no repository (Galaxy requires one to publish); checking with file://$repo" >&2
    printf 'repository: file://%s\n' "$repo" >> "$src/galaxy.yml"
  fi
  ansible-galaxy collection build --force --output-path "$work/dist" "$src" >/dev/null
  local rc=0
  (cd "$work" && GALAXY_IMPORTER_CONFIG="$repo/tools/galaxy-importer.cfg" GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP="$work/ansible-tmp" \
     python -m galaxy_importer.main "$work"/dist/ransomeye-ops-*.tar.gz) >"$out" 2>&1 || rc=$?
  # Galaxy imports with warnings too; a collection kept clean has none.
  if [ $rc -ne 0 ] || grep -qE '^(ERROR|WARNING)' "$out"; then
    grep -E '^(ERROR|WARNING)|Traceback|Error' "$out" | head -60 >&2
    echo "galaxy-importer: exit $rc, $(grep -cE '^ERROR' "$out") errors, $(grep -cE '^WARNING' "$out") warnings" >&2
    return 1
  fi
  grep -E "^(Running|Loading role|Importing|Linting collection via)" "$out" | sed 's/^/  /' | tail -3
}

docs() {
  (cd "$coll" && antsibull-docs lint-collection-docs --plugin-docs .)
}

ansible_lint() {
  (cd "$coll" && ansible-lint -q -f pep8 --nocolor 2>&1 | grep -v '(warning)$'; exit "${PIPESTATUS[0]}")
}

checks() {
  (cd "$coll" && antsibull-changelog lint) && python "$repo/tools/lint_checks.py" "$coll" "$work/release-sim"
}

for s in "${steps[@]}"; do
  case "$s" in
    importer) step "galaxy-importer" importer ;;
    docs) step "antsibull-docs lint-collection-docs" docs ;;
    ansible-lint) step "ansible-lint (production)" ansible_lint ;;
    checks) step "changelog, version_added, argument specs, requirements" checks ;;
    *) echo "lint.sh: unknown step $s" >&2; exit 2 ;;
  esac
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "make lint FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "make lint: all checks passed"
