"""Which of cryptography, psycopg2, psutil and zstandard each module needs on the managed host, read from the source.

Every import of the four is guarded (a missing library fails the module with missing_required_lib only when it
reaches code that needs it), so "needs" is decided as follows:
- psycopg2: the module takes the PostgreSQL connection options (doc fragment ransomeye.ops.postgres);
- cryptography, psutil, zstandard: the module imports it, directly or through module_utils, except through the helpers in
  FALLBACKS, which work without it (then: "optional").
`python tools/module_deps.py` prints the Markdown table README.md carries (a test keeps them equal); `--text`
prints the plain table INSTALL.txt carries.
"""
from __future__ import annotations

import ast
import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBS = ("cryptography", "psycopg2", "psutil", "zstandard")
PREFIX = "ansible_collections.ransomeye.ops.plugins.module_utils."
# module_utils that use a library when present and fall back without it (/proc instead of psutil).
FALLBACKS = {"_open_files": "psutil", "_hardware": "psutil"}


def _imports(path: str) -> tuple:
    """(third-party libraries, module_utils names) a file imports anywhere, guarded imports included."""
    libs, utils = set(), set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module.rstrip(".") == PREFIX.rstrip("."):
                utils.update(a.name for a in node.names)
            elif node.module.startswith(PREFIX):
                # a package of module_utils (e.g. _backup): its submodules, as "_backup/fmt"
                package = node.module[len(PREFIX):].replace(".", "/")
                utils.update(package + "/" + a.name for a in node.names)
        for name in names:
            if name.startswith(PREFIX):
                utils.add(name[len(PREFIX):].replace(".", "/"))
            elif name.split(".")[0] in LIBS:
                libs.add(name.split(".")[0])
    return libs, utils


def module_deps() -> dict:
    """module name -> {library: "yes" | "optional"}."""
    utils_dir = os.path.join(REPO, "plugins", "module_utils")

    def closure(name: str, seen: set) -> set:
        path = os.path.join(utils_dir, name + ".py")
        if not os.path.isfile(path):
            path = os.path.join(utils_dir, name, "__init__.py")
        if not os.path.isfile(path) or name in seen:
            return set()
        libs, utils = _imports(path)
        libs = {(lib, "yes") for lib in libs}
        for util in utils:
            libs |= closure(util, seen | {name})
        # A fallback helper works without its library, also when it imports it through another helper (_psutil).
        return {(lib, "optional" if FALLBACKS.get(name) == lib else how) for lib, how in libs}

    result = {}
    for path in sorted(glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))):
        source = open(path, encoding="utf-8").read()
        libs, utils = _imports(path)
        found = {(lib, "yes") for lib in libs}
        for util in utils:
            found |= closure(util, set())
        needs = {}
        for lib, how in sorted(found, key=lambda item: item[1] != "yes"):
            needs.setdefault(lib, how)
        needs.pop("psycopg2", None)
        if "ransomeye.ops.postgres" in source:
            needs["psycopg2"] = "yes"
        result[os.path.basename(path)[:-3]] = needs
    return result


def markdown() -> str:
    rows = ["| module | " + " | ".join(LIBS) + " |", "|---|" + "---|" * len(LIBS)]
    for name, libs in module_deps().items():
        rows.append("| `%s` | " % name + " | ".join(libs.get(lib, "") for lib in LIBS) + " |")
    return "\n".join(rows) + "\n"


def text() -> str:
    deps = module_deps()
    width = max(len(n) for n in deps)
    return "".join("  %s  %s\n" % (n.ljust(width), ", ".join(
        lib + (" (optional)" if libs[lib] == "optional" else "") for lib in LIBS if lib in libs) or "-")
        for n, libs in deps.items())


if __name__ == "__main__":
    sys.stdout.write(text() if "--text" in sys.argv else markdown())
