"""docs/BACKUP_FORMAT.md section 5 is complete: a reader written from it alone decodes what the collection writes."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.integration.dr.conftest import dr_keys, module_namespace  # noqa: F401 pylint: disable=unused-import
from tests.integration.dr.test_dr_v2 import build_tree, restored_view, snapshot

from ansible_collections.ransomeye.ops.plugins.module_utils._backup_run import run_backup

READER = os.path.join(os.path.dirname(__file__), "independent_reader.py")


def test_the_independent_reader_imports_nothing_from_the_collection():
    tree = ast.parse(open(READER).read())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module or "")
    assert modules and not any(m.startswith(("ansible", "tests", "plugins")) for m in modules), modules
    assert {m.split(".")[0] for m in modules} <= {"argparse", "base64", "hashlib", "hmac", "json", "os", "struct",
                                                  "sys", "zlib", "zstandard", "cryptography",
                                                  "__future__"}


@pytest.mark.parametrize("mode", ["aes", "rsa"])
def test_a_reader_written_from_the_document_decodes_a_v2_repository(tmp_path, dr_keys, mode):
    base = os.fsencode(str(tmp_path / "site"))
    build_tree(base, small_files=60)
    roots = [os.fsdecode(base + b"/x/app/sub"), os.fsdecode(base + b"/x/app-x")]
    repo = str(tmp_path / "repo")
    args = dict(repo=repo, components=["artifacts"], artifact_paths=roots, mode=mode, signing_key=dr_keys["signing_key"],
                cache_dir=str(tmp_path / "cache"), lock_timeout=5)
    if mode == "aes":
        args["key_file"] = dr_keys["aes_key"]
        secret = ["--key-file", dr_keys["aes_key"]]
    else:
        args["recipients"] = [dr_keys["recipient_pub"]]
        secret = ["--private-key", dr_keys["recipient_key"]]
    run_backup(module_namespace(**args))
    # a second backup after a change: its trees reference packs of both runs and two indexes
    with open(base + b"/x/app-x/events/d01/e00001.json", "ab") as handle:
        handle.write(b"\n")
    second = run_backup(module_namespace(**args))
    dest = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # nothing of the collection is importable
    proc = subprocess.run([sys.executable, READER, repo, second["manifest"], "artifacts", str(dest)] + secret,
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for root in roots:
        got = restored_view(dest, root)
        want = snapshot(os.fsencode(root))
        # the reader does not set directory mtimes or owners; everything else must match
        assert got == want
