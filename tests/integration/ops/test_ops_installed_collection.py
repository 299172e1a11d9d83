"""The collection as an operator installs it: ``ansible-galaxy collection build`` of this checkout, ``ansible-galaxy
collection install`` into a fresh home, then the README's plain command ``ansible-playbook -i <inventory>
ransomeye.ops.backup`` (and the playbook path inside the installed collection) run from a directory outside the
checkout, with no ANSIBLE_* variable set, against a throwaway PostgreSQL cluster. The backup must exist afterwards:
listed by ransomeye_backup_info and verified by ransomeye_backup_verify.

Everything runs outside the checkout and with a HOME of its own: the checkout's ansible.cfg (which lists
.build/collections) must not be what makes it work (see 18e98df).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from tests.harness.paths import REPO


def _clean_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", HOME=str(home), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _run(argv, env, cwd, timeout=600):
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s failed (rc %d):\n%s\n%s" % (argv, proc.returncode, proc.stdout[-4000:],
                                                                 proc.stderr[-3000:])
    return proc.stdout


def test_backup_playbook_from_an_installed_collection(tmp_path, pg, pg_db, run_module_direct):
    bindir = os.path.dirname(sys.executable)
    work = tmp_path / "operator"           # the operator's directory: no ansible.cfg, not in the checkout
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = _clean_env(home)
    assert not str(work).startswith(REPO)

    # The host: a database with rows, a config tree, artifacts, the encryption and signing keys.
    pg.execute("CREATE TABLE alerts (id int PRIMARY KEY, summary text)", dbname=pg_db)
    pg.execute("INSERT INTO alerts SELECT g, 'alert ' || g FROM generate_series(1, 500) g", dbname=pg_db)
    site = tmp_path / "site"
    for sub in ("etc", "artifacts", "keys/backup"):
        (site / sub).mkdir(parents=True)
    (site / "etc" / "app.env").write_text("DB_PASSWORD=x\n")
    (site / "artifacts" / "sample.bin").write_bytes(os.urandom(4096))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (site / "keys" / "backup" / "recipient.pub").write_bytes(recipient.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    genesis = run_module_direct("ransomeye_rotate_signing_keys", dict(
        key_dir=str(site / "keys" / "signing"), key_type="ed25519", state="initialized"))
    assert genesis["_rc"] == 0, genesis.get("msg")
    repo = site / "repo"
    params = pg.conn_params()
    inventory = work / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: %s\n" % sys.executable
        # This test's HOME is not its user's home in /etc/passwd: with the local connection, Ansible's async
        # wrapper writes its job files under $HOME while async_status looks under ~<user>. An operator's HOME is
        # their home, so only the test names the directory.
        + "      ansible_async_dir: %s\n  vars:\n" % (home / ".ansible_async")
        + "".join("    %s: %s\n" % (k, v) for k, v in dict(
            ransomeye_db_host=params["login_host"], ransomeye_db_port=params["login_port"], ransomeye_db_name=pg_db,
            ransomeye_db_admin_user=params["login_user"], ransomeye_db_admin_password=params["login_password"],
            ransomeye_db_ssl_mode="disable", ransomeye_config_dir=site / "etc",
            ransomeye_artifact_dir=site / "artifacts", ransomeye_backup_repo=repo,
            ransomeye_backup_key_dir=site / "keys" / "backup",
            ransomeye_signing_key_dir=site / "keys" / "signing",
            ransomeye_async_poll=1).items()))   # the async verification is polled every second, not every 15

    # Build and install as the README says, from the operator's directory.
    _run([os.path.join(bindir, "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"), REPO],
         env, str(work))
    tarball = glob.glob(str(work / "dist" / "ransomeye-ops-*.tar.gz"))
    assert len(tarball) == 1
    _run([os.path.join(bindir, "ansible-galaxy"), "collection", "install", tarball[0]], env, str(work))
    installed = home / ".ansible" / "collections" / "ansible_collections" / "ransomeye" / "ops"
    assert (installed / "MANIFEST.json").is_file() and not (installed / "ansible.cfg").exists()
    assert not installed.is_symlink()

    # 1. The FQCN form of the README, no ANSIBLE_* variable, no ansible.cfg anywhere it would look.
    out = _run([os.path.join(bindir, "ansible-playbook"), "-i", str(inventory), "ransomeye.ops.backup"],
               env, str(work))
    assert "Backup 00000001-" in out and "(seq 1)" in out, out[-3000:]
    assert "ASYNC OK on localhost" in out   # its verification ran as an async job
    assert "failed=0" in out
    # 2. The playbook file inside the installed collection (a path, as an operator may run it).
    playbook = installed / "playbooks" / "backup.yml"
    out = _run([os.path.join(bindir, "ansible-playbook"), "-i", str(inventory), str(playbook)], env, str(work))
    assert "(seq 2)" in out and "failed=0" in out, out[-3000:]

    # The backups really exist: both listed from their signed manifests, and they verify (ciphertext level).
    info = run_module_direct("ransomeye_backup_info", dict(repo=str(repo), trusted_keys=[str(site / "keys" / "signing")],
                                                           backup="all"))
    assert info["_rc"] == 0, info.get("msg")
    assert [b["seq"] for b in info["backups"]] == [1, 2]
    assert set(info["backups"][0]["components"]) == {"database", "config", "artifacts"}
    verify = run_module_direct("ransomeye_backup_verify", dict(repo=str(repo), backup="all", level="ciphertext",
                                                               trusted_keys=[str(site / "keys" / "signing")]))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    shutil.rmtree(work / "dist")
