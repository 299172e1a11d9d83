"""The air-gapped bundle installs with no package index and its modules run."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile

from tests.harness.paths import REPO


def _run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (argv, proc.stdout, proc.stderr)
    return proc.stdout


def test_offline_bundle_installs_without_index_and_runs_a_module(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    bundle = _run(["bash", os.path.join(REPO, "tools", "offline_bundle.sh"), str(tmp_path / "out")], env=env).strip()
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    root = glob.glob(str(tmp_path / "x" / "ransomeye-ops-offline-*"))[0]
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    clean_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PIP_", "ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    clean_env.update(LC_ALL="C.UTF-8", HOME=str(tmp_path / "home"),
                     PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", os.path.join(root, "wheels"),
          "-r", os.path.join(root, "requirements.txt"), "ansible-core>=2.17,<2.20"], env=clean_env)
    collections = tmp_path / "collections"
    tarball = glob.glob(os.path.join(root, "ransomeye-ops-*.tar.gz"))[0]
    _run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), tarball],
         env=clean_env)
    clean_env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    listing = _run([str(venv / "bin" / "ansible-doc"), "-l", "ransomeye.ops"], env=clean_env)
    modules = {line.split()[0] for line in listing.splitlines() if line.strip()}
    expected = {"ransomeye.ops." + os.path.basename(p)[:-3]
                for p in glob.glob(os.path.join(REPO, "plugins", "modules", "ransomeye_*.py"))}
    assert expected and expected <= modules
    # A module runs from the installed collection, with the venv's own interpreter.
    out = _run([str(venv / "bin" / "ansible"), "localhost", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % (venv / "bin" / "python"),
                "-m", "ransomeye.ops.ransomeye_pg_tune",
                "-a", json.dumps({"memory": "4GB", "cpus": 2, "pg_version": "15", "apply": "none"})],
               env=clean_env)
    assert '"shared_buffers": "1GB"' in out
