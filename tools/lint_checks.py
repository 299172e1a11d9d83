"""Checks of `make lint` that no ecosystem tool makes, run with .venv-lint's Python over a copy of the collection.

- CHANGELOG.md is exactly what antsibull-changelog generates from changelogs/changelog.yaml (the single source).
- A simulated release 0.2.0 (in a throwaway copy) puts the pending fragments and the 0.2.0 modules under 0.2.0 only,
  and repeats nothing of 0.1.0.
- version_added of every module and plugin is the release that first shipped it (changelogs/changelog.yaml), or the
  next release for one not shipped yet.
- Every role has a README.md, and every templated default in a role's argument spec is the one its defaults/main.yml
  uses (same fallbacks), so validation never fails on an inventory variable the role itself does not need.
- The EE (meta/execution-environment.yml, execution-environment.yml) and the offline bundle install the same runtime
  Python requirements, and README.md's table of what each module needs is the one tools/module_deps.py derives.
Usage: lint_checks.py COLLECTION_DIR SCRATCH_DIR
"""
from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
import sys

import yaml

PLUGIN_DIRS = ("modules", "callback", "lookup", "filter", "inventory", "connection", "become", "cache", "test", "vars")


def _version(text: str) -> tuple:
    return tuple(int(p) for p in str(text).split("."))


def _run(argv: list, cwd: str) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s%s" % (" ".join(argv), proc.stdout, proc.stderr))
    return proc.stdout


def released_plugins(changelog: dict) -> dict:
    """(type, name) -> first release that lists it."""
    first: dict = {}
    for version in sorted(changelog.get("releases", {}), key=_version):
        release = changelog["releases"][version]
        for entry in release.get("modules", []) or []:
            first.setdefault(("modules", entry["name"]), version)
        for ptype, entries in (release.get("plugins") or {}).items():
            for entry in entries or []:
                first.setdefault((ptype, entry["name"]), version)
    return first


def doc_version_added(path: str):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            doc = yaml.safe_load(node.value.value)
            return doc.get("version_added") if isinstance(doc, dict) else None
    return False  # no DOCUMENTATION: not a documented plugin (e.g. a module's action plugin)


def check_version_added(coll: str, changelog: dict, next_version: str) -> list:
    problems = []
    first = released_plugins(changelog)
    for ptype in PLUGIN_DIRS:
        for path in sorted(glob.glob(os.path.join(coll, "plugins", ptype, "*.py"))):
            name = os.path.basename(path)[:-3]
            if name == "__init__":
                continue
            added = doc_version_added(path)
            if added is False:
                continue
            want = first.get((ptype, name), next_version)
            if str(added) != want:
                problems.append("plugins/%s/%s.py: version_added is %r, want %r (%s)" % (
                    ptype, name, added, want, "first shipped in %s" % want if (ptype, name) in first
                    else "not released yet: the next release"))
    return problems


def check_changelog_generated(coll: str, scratch: str) -> list:
    copy = os.path.join(scratch, "generate", "ansible_collections", "ransomeye", "ops")
    shutil.copytree(coll, copy)
    _run(["antsibull-changelog", "generate"], copy)
    want = open(os.path.join(copy, "CHANGELOG.md"), encoding="utf-8").read()
    have = open(os.path.join(coll, "CHANGELOG.md"), encoding="utf-8").read()
    if want != have:
        return ["CHANGELOG.md differs from what `antsibull-changelog generate` makes of changelogs/changelog.yaml: "
                "edit changelog.yaml (or add a fragment), then run antsibull-changelog generate"]
    return []


def _section(text: str, version: str) -> str:
    """The text of one release's section in a generated CHANGELOG.md."""
    marker = '<a id="v%s"></a>' % version.replace(".", "-")
    start = text.index(marker)
    nxt = text.find('<a id="v', start + len(marker))
    return text[start:nxt if nxt >= 0 else len(text)]


def check_release(coll: str, scratch: str, changelog: dict, next_version: str) -> list:
    problems = []
    copy = os.path.join(scratch, "release", "ansible_collections", "ransomeye", "ops")
    shutil.copytree(coll, copy)
    probe = "lint probe %s" % os.getpid()
    fragdir = os.path.join(copy, "changelogs", "fragments")
    pending = glob.glob(os.path.join(fragdir, "*.y*ml"))
    with open(os.path.join(fragdir, "zz-lint-probe.yml"), "w") as handle:
        yaml.safe_dump({"release_summary": "Simulated release (%s)." % probe,
                        "minor_changes": ["probe - %s." % probe]}, handle)
    _run(["antsibull-changelog", "release", "--version", next_version, "--date", "2099-12-31"], copy)
    text = open(os.path.join(copy, "CHANGELOG.md"), encoding="utf-8").read()
    new = _section(text, next_version)
    # Compare in the generated (escaped) form: antsibull-changelog escapes Markdown.
    plain = " ".join(re.sub(r"\\(.)", r"\1", text).split())
    plain_new = " ".join(re.sub(r"\\(.)", r"\1", new).split())
    # The "New Modules" / "New Plugins" lists of the new release (fragments may mention old modules by name).
    starts = [i for i in (plain_new.find("New Modules"), plain_new.find("New Plugins")) if i >= 0]
    new_listing = plain_new[min(starts):] if starts else ""
    if probe not in plain_new:
        problems.append("simulated release %s: the pending fragment is not in its section" % next_version)
    for old_version, release in changelog.get("releases", {}).items():
        for key, entries in (release.get("changes") or {}).items():
            for entry in [entries] if isinstance(entries, str) else entries:
                words = " ".join(str(entry).split())
                if plain.count(words) != 1 or words in plain_new:
                    problems.append("simulated release %s: %s text of %s (%r...) appears %d times" % (
                        next_version, key, old_version, words[:60], plain.count(words)))
        for entry in release.get("modules", []) or []:
            if "ransomeye.ops.%s " % entry["name"] in new_listing:
                problems.append("simulated release %s lists %s (released in %s) as new" % (
                    next_version, entry["name"], old_version))
    for path in glob.glob(os.path.join(coll, "plugins", "modules", "*.py")):
        name = os.path.basename(path)[:-3]
        if str(doc_version_added(path)) == next_version and "ransomeye.ops.%s " % name not in new_listing:
            problems.append("simulated release %s does not list new module %s" % (next_version, name))
    left = [os.path.basename(p) for p in glob.glob(os.path.join(fragdir, "*.y*ml"))]
    if left:
        problems.append("simulated release %s left fragments behind: %s" % (next_version, left))
    released = yaml.safe_load(open(os.path.join(copy, "changelogs", "changelog.yaml")))
    if next_version not in released.get("releases", {}):
        problems.append("simulated release %s is not in changelog.yaml" % next_version)
    print("  simulated release %s: %d pending fragments + a probe; CHANGELOG.md %d lines" % (
        next_version, len(pending), text.count("\n")))
    return problems


def check_roles(coll: str) -> list:
    problems = []
    for role in sorted(glob.glob(os.path.join(coll, "roles", "*"))):
        name = os.path.basename(role)
        if not os.path.isfile(os.path.join(role, "README.md")):
            problems.append("roles/%s has no README.md (Galaxy refuses the import)" % name)
        spec_path = os.path.join(role, "meta", "argument_specs.yml")
        defaults_path = os.path.join(role, "defaults", "main.yml")
        if not os.path.isfile(spec_path):
            problems.append("roles/%s has no meta/argument_specs.yml" % name)
            continue
        defaults = (yaml.safe_load(open(defaults_path)) or {}) if os.path.isfile(defaults_path) else {}
        spec = yaml.safe_load(open(spec_path))["argument_specs"]
        for entry, entry_spec in spec.items():
            for opt, opt_spec in (entry_spec.get("options") or {}).items():
                if "default" not in opt_spec or "{{" not in str(opt_spec["default"]):
                    continue
                if opt not in defaults:
                    problems.append("roles/%s %s: option %s has a templated default but defaults/main.yml has none"
                                    % (name, entry, opt))
                elif opt_spec["default"] != defaults[opt]:
                    problems.append("roles/%s %s: option %s: argument spec default %r differs from defaults/main.yml "
                                    "%r (validation templates the spec's; give it the same fallbacks)"
                                    % (name, entry, opt, opt_spec["default"], defaults[opt]))
    return problems


def _req_names(path: str) -> set:
    names = set()
    for line in open(path):
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-"))
    return names


def check_requirements(coll: str) -> list:
    problems = []
    meta_ee = yaml.safe_load(open(os.path.join(coll, "meta", "execution-environment.yml")))
    deps = meta_ee.get("dependencies", {})
    for key in ("python", "system"):
        if not os.path.isfile(os.path.join(coll, deps.get(key, "-"))):
            problems.append("meta/execution-environment.yml: dependencies.%s %r does not exist" % (key, deps.get(key)))
    if problems:
        return problems
    runtime = _req_names(os.path.join(coll, deps["python"]))
    bundle = _req_names(os.path.join(coll, "requirements.txt"))
    if runtime != bundle:
        problems.append("runtime requirements differ: %s has %s, requirements.txt (offline bundle) has %s"
                        % (deps["python"], sorted(runtime), sorted(bundle)))
    for line in open(os.path.join(coll, deps["system"])):
        if re.search(r"\btest\b|\bdoc\b", line.split("#")[0]):
            problems.append("%s: %r is not a runtime requirement" % (deps["system"], line.strip()))
    sys.path.insert(0, os.path.join(coll, "tools"))
    import module_deps  # pylint: disable=import-outside-toplevel,import-error
    if module_deps.markdown() not in open(os.path.join(coll, "README.md"), encoding="utf-8").read():
        problems.append("README.md: the table of what each module needs differs from `python tools/module_deps.py`")
    ee = yaml.safe_load(open(os.path.join(coll, "execution-environment.yml")))
    ee_python = ee.get("dependencies", {}).get("python")
    if ee_python and _req_names(os.path.join(coll, ee_python)) != runtime:
        problems.append("execution-environment.yml: python %r differs from %s" % (ee_python, deps["python"]))
    return problems


def main() -> int:
    coll, scratch = sys.argv[1], sys.argv[2]
    os.makedirs(scratch, exist_ok=True)
    changelog = yaml.safe_load(open(os.path.join(coll, "changelogs", "changelog.yaml")))
    releases = sorted(changelog.get("releases", {}), key=_version)
    galaxy_version = str(yaml.safe_load(open(os.path.join(coll, "galaxy.yml")))["version"])
    if releases and _version(galaxy_version) <= _version(releases[-1]):
        major, minor = _version(releases[-1])[:2]
        next_version = "%d.%d.0" % (major, minor + 1)
    else:
        next_version = galaxy_version
    problems = (check_version_added(coll, changelog, next_version) + check_changelog_generated(coll, scratch)
                + check_release(coll, scratch, changelog, next_version) + check_roles(coll)
                + check_requirements(coll))
    for problem in problems:
        print("lint: " + problem, file=sys.stderr)
    print("  released: %s; next release: %s; %d problems" % (", ".join(releases), next_version, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
