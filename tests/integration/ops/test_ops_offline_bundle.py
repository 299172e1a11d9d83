"""The air-gapped bundle fits the hosts RansomEye runs on, installs with no package index, and its modules run.

The bundle is built once per test session with `tools/offline_bundle.sh`; its wheels come from the cache
.build/wheelhouse/<hash of the requirements> (PyPI is needed only the first time), so a rerun takes seconds.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from tests.harness.paths import REPO

# What the bundle promises (INSTALL.txt): CPython 3.9-3.12 on x86_64 and aarch64 with glibc >= 2.28; a control
# node needs ansible-core >= 2.17, hence CPython >= 3.10.
ARCHES = ("x86_64", "aarch64")
PYTHONS = ("3.9", "3.10", "3.11", "3.12")
CONTROLLER_PYTHONS = ("3.10", "3.11", "3.12")
CORE = "ansible-core>=2.17,<2.20"
MANYLINUX = ("manylinux_2_28", "manylinux_2_27", "manylinux_2_26", "manylinux_2_24", "manylinux_2_17", "manylinux2014")


def _run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (argv, proc.stdout, proc.stderr)
    return proc.stdout


def _clean_env(tmp) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    # PIP_CONFIG_FILE: the machine's pip config adds find-links of its own; only the bundle may count.
    env.update(LC_ALL="C.UTF-8", HOME=str(tmp / "home"), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    path = _run(["bash", os.path.join(REPO, "tools", "offline_bundle.sh"), str(tmp / "out")], env=env).strip()
    with tarfile.open(path) as tar:
        tar.extractall(tmp / "x", filter="data")
    return glob.glob(str(tmp / "x" / "ransomeye-ops-offline-*"))[0]


def _dry_run(root, tmp_path, arch, python, with_core):
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--only-binary=:all:",
            "--find-links", os.path.join(root, "wheels"), "--implementation", "cp", "--python-version", python,
            "--target", str(tmp_path / "target"), "-r", os.path.join(root, "requirements.txt")]
    for tag in MANYLINUX:
        argv += ["--platform", "%s_%s" % (tag, arch)]
    if with_core:
        argv.append(CORE)
    return subprocess.run(argv, capture_output=True, text=True, env=_clean_env(tmp_path), check=False)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("python", PYTHONS)
def test_every_target_installs_from_the_bundle_alone(bundle, tmp_path, arch, python):
    controller = python in CONTROLLER_PYTHONS
    proc = _dry_run(bundle, tmp_path, arch, python, controller)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    would = re.search(r"Would install (.*)", proc.stdout).group(1).split()
    names = {w.rsplit("-", 1)[0].lower() for w in would}
    assert {"cryptography", "psycopg2-binary", "psutil", "zstandard"} <= names
    assert ("ansible-core" in names) == controller
    with open(os.path.join(bundle, "TARGETS.txt")) as handle:
        assert "%s %s %s" % (arch, python, "controller" if controller else "managed-host") in handle.read()


def test_a_target_the_bundle_does_not_cover_fails(bundle, tmp_path):
    # Attack: the dry run must be able to fail, or a green matrix would prove nothing.
    proc = _dry_run(bundle, tmp_path, "x86_64", "3.13", True)
    assert proc.returncode != 0
    assert "No matching distribution" in proc.stderr or "Could not find" in proc.stderr


def test_no_wheel_needs_a_glibc_newer_than_2_28(bundle):
    too_new = []
    for wheel in glob.glob(os.path.join(bundle, "wheels", "*.whl")):
        platforms = os.path.basename(wheel)[:-4].split("-")[-1].split(".")
        if platforms == ["any"]:
            continue
        glibcs = [(2, 17) if p.startswith(("manylinux2014", "manylinux2010")) else
                  tuple(int(x) for x in re.match(r"manylinux_(\d+)_(\d+)_", p).groups())
                  for p in platforms if p.startswith("manylinux")]
        if not glibcs or min(glibcs) > (2, 28):
            too_new.append(os.path.basename(wheel))
    assert not too_new


def test_install_txt_names_the_targets_and_no_default_python3(bundle):
    with open(os.path.join(bundle, "INSTALL.txt")) as handle:
        text = handle.read()
    for python in PYTHONS:
        assert "CPython" in text and python in text
    for arch in ARCHES:
        assert arch in text
    assert "manylinux_2_28" in text
    # Every command line names its interpreter through $PY, never a bare python3 that may be 3.6 or 3.9.
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith(("$PY", "/opt", "python"))]
    assert commands and not [c for c in commands if c.startswith("python3 ")]
    for module in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")):
        assert os.path.basename(module)[:-3] in text  # what each module needs on the managed host


def test_offline_bundle_installs_without_index_and_runs_a_module(bundle, tmp_path):
    root = bundle
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    clean_env = _clean_env(tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", os.path.join(root, "wheels"),
          "-r", os.path.join(root, "requirements.txt"), CORE], env=clean_env)
    collections = tmp_path / "collections"
    tarball = glob.glob(os.path.join(root, "ransomeye-ops-*.tar.gz"))[0]
    # Outside the checkout, as on a fresh host: the checkout's ansible.cfg lists .build/collections, where
    # ansible-galaxy would find the collection "already installed" and install nothing.
    _run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), tarball],
         env=clean_env, cwd=str(tmp_path))
    assert os.path.isfile(collections / "ansible_collections" / "ransomeye" / "ops" / "MANIFEST.json")
    clean_env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    listing = _run([str(venv / "bin" / "ansible-doc"), "-l", "ransomeye.ops"], env=clean_env, cwd=str(tmp_path))
    modules = {line.split()[0] for line in listing.splitlines() if line.strip()}
    expected = {"ransomeye.ops." + os.path.basename(p)[:-3]
                for p in glob.glob(os.path.join(REPO, "plugins", "modules", "ransomeye_*.py"))}
    assert expected and expected <= modules
    # A module runs from the installed collection, with the venv's own interpreter.
    out = _run([str(venv / "bin" / "ansible"), "localhost", "-c", "local",
                "-e", "ansible_python_interpreter=%s" % (venv / "bin" / "python"),
                "-m", "ransomeye.ops.ransomeye_pg_tune",
                "-a", json.dumps({"memory": "4GB", "cpus": 2, "pg_version": "15", "apply": "none"})],
               env=clean_env, cwd=str(tmp_path))
    assert '"shared_buffers": "1GB"' in out
