"""Every command of docs/OPS_RUNBOOK.md, run in document order against a demo host.

The runbook marks each command block with an HTML comment

    <!-- runbook: <id> [rc: <n>] expect: <regex> -->
    ```bash
    <command>
    ```

This test builds a small demo host (tests/harness/demo), extracts the marked
blocks, and runs each one with bash from the repository root, in the
environment the runbook tells operators to use (the one `make` exports, plus
RANSOMEYE_INVENTORY). Each block must exit with its documented code (0 unless
`rc:` says otherwise) and its output must match its `expect` regex, so a
command changed into something that does not work fails here. Incidents are
simulated on the demo host right before the first command of their procedure
(SIMULATE below: an expired certificate, an immutable .env file, a crashed
upload filling the buffer, a stopped service, ransomware damage), and some
commands are followed by checks of the real outcome (CHECK below: the restored
rows are back, the certificate is valid again, the services answer).

Set RANSOMEYE_RUNBOOK_CAPTURE=<dir> to keep each command's output there (the
excerpts in the runbook were captured that way).
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
import urllib.error
import urllib.request

import pytest
import yaml

from tests.harness.paths import REPO

RUNBOOK = os.path.join(REPO, "docs", "OPS_RUNBOOK.md")
MARK = re.compile(
    r"^<!-- runbook: (?P<id>[a-z0-9_.-]+)(?: rc: (?P<rc>\d+))? expect: (?P<expect>.+?) -->\n"
    r"```bash\n(?P<cmd>.*?)\n```",
    re.M | re.S,
)
# The procedures the runbook must cover (issue 8); each heading must hold at least one marked command.
REQUIRED_SECTIONS = (
    "Daily backup and verify",
    "Nightly maintenance",
    "Health check",
    "Quarterly rotation",
    "DR drill",
    "Restore after ransomware",
    "Signing-key compromise",
    "A certificate that expired anyway",
    "A failed credential rotation",
    "A full disk",
    "A health alert",
)


class Block(t.NamedTuple):
    id: str
    rc: int
    expect: str
    cmd: str
    section: str


def parse_runbook(text: str) -> t.List[Block]:
    blocks = []
    for match in MARK.finditer(text):
        headings = re.findall(r"^#{2,3} (.+)$", text[:match.start()], re.M)
        blocks.append(Block(match.group("id"), int(match.group("rc") or 0), match.group("expect"),
                            match.group("cmd"), headings[-1] if headings else ""))
    return blocks


# --------------------------------------------------------------------------- incident simulations

class Ctx:
    """The demo host under test and what the simulations and checks remember."""

    def __init__(self, root: str):
        self.root = root
        with open(os.path.join(root, "inventory", "hosts.yml")) as handle:
            self.vars = yaml.safe_load(handle)["all"]["hosts"]["localhost"]
        self.memo: t.Dict[str, t.Any] = {}

    def psql(self, sql: str, db: t.Optional[str] = None) -> str:
        import psycopg2
        conn = psycopg2.connect(host=self.vars["ransomeye_db_host"], port=self.vars["ransomeye_db_port"],
                                user=self.vars["ransomeye_db_admin_user"],
                                password=self.vars["ransomeye_db_admin_password"],
                                dbname=db or self.vars["ransomeye_db_name"])
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return repr(cur.fetchall()) if cur.description else ""
        finally:
            conn.close()

    def supervisorctl(self, *args: str) -> str:
        proc = subprocess.run([self.vars["ransomeye_supervisorctl"], "-c", self.vars["ransomeye_supervisor_conf"]]
                              + list(args), capture_output=True, text=True, check=False)
        return proc.stdout + proc.stderr

    def health(self) -> t.Tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.vars["ransomeye_health_url"], timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except OSError:
            return 0, {}

    def wait_health(self, status: int = 200, timeout: float = 30) -> t.Tuple[int, dict]:
        deadline = time.time() + timeout
        while True:
            got = self.health()
            if got[0] == status or time.time() > deadline:
                return got
            time.sleep(0.5)

    def tls(self, name: str) -> str:
        return os.path.join(self.vars["ransomeye_tls_dir"], name)

    def active_pub(self) -> str:
        with open(os.path.join(self.vars["ransomeye_signing_key_dir"], "active.pub")) as handle:
            return handle.read()


def _not_after(path: str) -> datetime.datetime:
    from cryptography import x509
    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    return cert.not_valid_after_utc


def sim_ransomware(ctx: Ctx) -> None:
    """Ransomware: rows encrypted in place and tables emptied, forensic artifacts overwritten."""
    ctx.memo["counts_before"] = ctx.health()[1]["counts"]
    ctx.psql("UPDATE detections SET evidence = 'ENCRYPTED-BY-RANSOMWARE'")
    ctx.psql("TRUNCATE alerts, events CASCADE")
    victims = sorted(glob.glob(os.path.join(ctx.vars["ransomeye_artifact_dir"], "**", "*.bin"), recursive=True))[:3]
    assert victims, "the demo host has no .bin artifacts to encrypt"
    originals = {}
    for path in victims:
        with open(path, "rb") as handle:
            originals[path] = handle.read()
        with open(path, "wb") as handle:
            handle.write(b"RANSOM" + os.urandom(64))
    ctx.memo["victims"] = originals
    note = os.path.join(ctx.vars["ransomeye_artifact_dir"], "README-RANSOM.txt")
    with open(note, "w") as handle:
        handle.write("Your files are encrypted.\n")
    ctx.memo["ransom_note"] = note


def check_restored(ctx: Ctx, _out: str) -> None:
    status, body = ctx.wait_health()
    assert status == 200 and body["counts"] == ctx.memo["counts_before"], body
    assert ctx.psql("SELECT count(*) FROM detections WHERE evidence LIKE 'ENCRYPTED%'") == "[(0,)]"
    for path, data in ctx.memo["victims"].items():
        with open(path, "rb") as handle:
            assert handle.read() == data, "artifact %s not restored" % path


def check_compare_copy(ctx: Ctx, _out: str) -> None:
    copy = os.path.join(ctx.vars["ransomeye_tmp_dir"], "restore-compare") + ctx.vars["ransomeye_artifact_dir"]
    for path, data in ctx.memo["victims"].items():
        with open(copy + path[len(ctx.vars["ransomeye_artifact_dir"]):], "rb") as handle:
            assert handle.read() == data
    assert not os.path.exists(copy + "/README-RANSOM.txt")


def check_rolled_back_db(ctx: Ctx, _out: str) -> None:
    # The rollback brings back the database the restore replaced: the damaged one.
    assert ctx.psql("SELECT count(*) FROM events") == "[(0,)]"


def sim_remember_signing_key(ctx: Ctx) -> None:
    ctx.memo["signing_pub"] = ctx.active_pub()


def check_signing_rotated(ctx: Ctx, _out: str) -> None:
    assert ctx.active_pub() != ctx.memo["signing_pub"], "the signing key did not change"


def check_signing_rolled_back(ctx: Ctx, _out: str) -> None:
    assert ctx.active_pub() == ctx.memo["signing_pub"], "the rollback did not reactivate the previous key"


def sim_expired_cert(ctx: Ctx) -> None:
    """Replace the server certificate by one signed by the CA, same key, that expired two days ago."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    def load(name: str) -> bytes:
        with open(ctx.tls(name), "rb") as handle:
            return handle.read()

    ca = x509.load_pem_x509_certificate(load("ca.crt"))
    ca_key = serialization.load_pem_private_key(load("ca.key"), None)
    old = x509.load_pem_x509_certificate(load("server.crt"))
    key = serialization.load_pem_private_key(load("server.key"), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=400)).not_valid_after(now - datetime.timedelta(days=2)))
    for ext in old.extensions:
        if ext.oid not in (x509.ExtensionOID.SUBJECT_KEY_IDENTIFIER, x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    with open(ctx.tls("server.crt"), "wb") as handle:  # through the symlink, as an operator's copy would
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    assert _not_after(ctx.tls("server.crt")) < now


def check_cert_valid(ctx: Ctx, _out: str) -> None:
    left = _not_after(ctx.tls("server.crt")) - datetime.datetime.now(datetime.timezone.utc)
    assert left > datetime.timedelta(days=30), left
    proc = subprocess.run(["openssl", "verify", "-CAfile", ctx.tls("ca.crt"), ctx.tls("server.crt")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx.memo["renewed_cert_expiry"] = _not_after(ctx.tls("server.crt"))


def check_cert_rolled_back(ctx: Ctx, _out: str) -> None:
    assert _not_after(ctx.tls("server.crt")) < datetime.datetime.now(datetime.timezone.utc)


def sim_immutable_env(ctx: Ctx) -> None:
    """A rotation that cannot finish: the second .env file cannot be replaced (immutable attribute)."""
    env_files = ctx.vars["ransomeye_env_files"]
    ctx.memo["env_before"] = {p: open(p).read() for p in env_files}
    proc = subprocess.run(["chattr", "+i", env_files[-1]], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, "chattr +i is needed to simulate the failure here: %s" % proc.stderr
    ctx.memo["immutable"] = env_files[-1]


def check_rotation_rolled_back(ctx: Ctx, _out: str) -> None:
    # The failed rotation left the files (and so the password in the database) as they were.
    assert {p: open(p).read() for p in ctx.memo["env_before"]} == ctx.memo["env_before"]


def check_creds_rotated(ctx: Ctx, _out: str) -> None:
    after = {p: open(p).read() for p in ctx.memo["env_before"]}
    assert all(after[p] != ctx.memo["env_before"][p] for p in after), "the .env files were not rotated"
    status, body = ctx.wait_health()
    assert status == 200 and body["db_user"] == ctx.vars["ransomeye_app_role"], body


def sim_full_disk(ctx: Ctx) -> None:
    """An uploader crashed three hours ago and left 16 MB of chunks; rotated logs three days old."""
    buffer_dir = ctx.vars["ransomeye_buffer_dir"]
    session = os.path.join(buffer_dir, "upl-crashed-0001")
    os.makedirs(session)
    for i in range(16):
        with open(os.path.join(session, "chunk-%04d" % i), "wb") as handle:
            handle.write(os.urandom(1 << 20))
    with open(session + ".session", "w") as handle:
        json.dump({"pid": 4194999, "state": "uploading"}, handle)  # above pid_max: never a running process
    old = time.time() - 3 * 3600
    for path in glob.glob(os.path.join(session, "*")) + [session, session + ".session"]:
        os.utime(path, (old, old))
    log_dir = ctx.vars["ransomeye_log_dir"]
    for n in (1, 2):
        path = os.path.join(log_dir, "ingest.log.%d" % n)
        with open(path, "w") as handle:
            handle.write("2026-01-0%dT00:00:00Z ingest batch %d done\n" % (n, n) * 5000)
        stamp = time.time() - 3 * 86400
        os.utime(path, (stamp, stamp))
    ctx.memo["crashed_session"] = session


def check_disk_plan_only(ctx: Ctx, _out: str) -> None:
    assert os.path.isdir(ctx.memo["crashed_session"]), "check mode removed files"


def check_disk_freed(ctx: Ctx, out: str) -> None:
    assert not os.path.exists(ctx.memo["crashed_session"]), "the orphaned upload is still there"
    assert not os.path.exists(ctx.memo["crashed_session"] + ".session")
    assert not glob.glob(os.path.join(ctx.vars["ransomeye_log_dir"], "ingest.log.[12]"))
    freed = int(re.search(r"disk clean: \d+ removed, (\d+) bytes freed", out).group(1))
    assert freed >= 16 << 20, freed
    # Live and complete upload sessions survive.
    buffer_dir = ctx.vars["ransomeye_buffer_dir"]
    assert glob.glob(os.path.join(buffer_dir, "live-*")) and glob.glob(os.path.join(buffer_dir, "complete-*"))


def check_retention(ctx: Ctx, _out: str) -> None:
    manifests = glob.glob(os.path.join(ctx.vars["ransomeye_backup_repo"], "manifests", "*.json"))
    assert len(manifests) == 2, manifests


def sim_stopped_worker(ctx: Ctx) -> None:
    ctx.supervisorctl("stop", "ransomeye-worker")
    assert "STOPPED" in ctx.supervisorctl("status", "ransomeye-worker")


def check_worker_running(ctx: Ctx, _out: str) -> None:
    assert "RUNNING" in ctx.supervisorctl("status", "ransomeye-worker")


def check_drill_report(ctx: Ctx, _out: str) -> None:
    reports = sorted(glob.glob(os.path.join(ctx.vars["ransomeye_report_dir"], "dr-drill-*.json")))
    assert reports
    with open(reports[-1]) as handle:
        report = json.load(handle)
    assert report["result"] == "passed", report


def check_health_ok(ctx: Ctx, _out: str) -> None:
    assert ctx.wait_health()[0] == 200


SIMULATE: t.Dict[str, t.Callable[[Ctx], None]] = {
    "rotation-apply": sim_remember_signing_key,
    "ransomware-verify": sim_ransomware,
    "compromise-rotate": sim_remember_signing_key,
    "cert-detect": sim_expired_cert,
    "creds-failed": sim_immutable_env,
    "disk-find": sim_full_disk,
    "alert-detect": sim_stopped_worker,
}
CHECK: t.Dict[str, t.Callable[[Ctx, str], None]] = {
    "rotation-apply": check_signing_rotated,
    "rotation-rollback-signing": check_signing_rolled_back,
    "drill-run": check_drill_report,
    "ransomware-restore": check_restored,
    "ransomware-compare": check_compare_copy,
    "ransomware-rollback": check_rolled_back_db,
    "compromise-rotate": check_signing_rotated,
    "cert-renew": check_cert_valid,
    "cert-rollback": check_cert_rolled_back,
    "creds-failed": check_rotation_rolled_back,
    "creds-rotate": check_creds_rotated,
    "disk-plan": check_disk_plan_only,
    "disk-clean": check_disk_freed,
    "disk-backup-retention": check_retention,
    "alert-fix": check_worker_running,
}


# --------------------------------------------------------------------------- the test

def test_runbook_markers_are_well_formed():
    with open(RUNBOOK) as handle:
        text = handle.read()
    blocks = parse_runbook(text)
    ids = [b.id for b in blocks]
    assert len(ids) == len(set(ids)), "duplicate runbook ids"
    # Every ```bash block is marked, so no command escapes the test.
    assert text.count("```bash\n") == len(blocks), "a ```bash block without its <!-- runbook: ... --> marker"
    for block in blocks:
        re.compile(block.expect)
        if re.search(r"\bansible(-playbook)?\s", block.cmd):
            assert '-i "$RANSOMEYE_INVENTORY"' in block.cmd, block.id
        for module in re.findall(r"-m\s+(\S+)", block.cmd):
            assert module.count(".") == 2, "not a FQCN in %s: %s" % (block.id, module)
    assert set(SIMULATE) <= set(ids) and set(CHECK) <= set(ids), set(SIMULATE) | set(CHECK) - set(ids)
    for section in REQUIRED_SECTIONS:
        assert any(b.section.endswith(section) for b in blocks), "no command under '%s'" % section


@pytest.fixture(scope="module")
def demo_root():
    from tests.harness.demo import host

    root = tempfile.mkdtemp(prefix="re-runbook-")
    os.chmod(root, 0o755)  # the postgres OS user must reach the cluster below it
    try:
        host.up(root, scale=4, seed=8, quiet=True)
        yield root
    finally:
        try:
            for path in glob.glob(os.path.join(root, "etc", "ransomeye", "*.env")):
                subprocess.run(["chattr", "-i", path], capture_output=True, check=False)
        finally:
            host.down(root, quiet=True)
            shutil.rmtree(root, ignore_errors=True)


def _env(root: str, home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    bindir = os.path.dirname(sys.executable)
    env.update(
        # What `make` exports (Makefile), as the runbook's "Environment" section says.
        LC_ALL="C.UTF-8", LANG="C.UTF-8",
        ANSIBLE_COLLECTIONS_PATH=".build/collections",
        ANSIBLE_ROLES_PATH=os.path.join(REPO, "roles"),
        PYTHONPATH=os.path.join(REPO, ".build", "collections") + os.pathsep + REPO,
        PATH=bindir + os.pathsep + env.get("PATH", ""),
        RANSOMEYE_INVENTORY=os.path.join(root, "inventory", "hosts.yml"),
        # Keep the test's Ansible state out of ~/.ansible; plain output for the regexes.
        ANSIBLE_HOME=os.path.join(home, "ansible"),
        ANSIBLE_LOCAL_TEMP=os.path.join(home, "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return env


def test_every_runbook_command_runs_on_a_demo_host(demo_root):
    with open(RUNBOOK) as handle:
        blocks = parse_runbook(handle.read())
    assert len(blocks) >= 20
    ctx = Ctx(demo_root)
    capture = os.environ.get("RANSOMEYE_RUNBOOK_CAPTURE")
    errors: t.List[str] = []
    if capture:
        os.makedirs(capture, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="re-runbook-home-") as home:
        env = _env(demo_root, home)
        for number, block in enumerate(blocks, start=1):
            if block.id in SIMULATE:
                SIMULATE[block.id](ctx)
            started = time.time()
            proc = subprocess.run(["bash", "-eo", "pipefail", "-c", block.cmd], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=600, check=False)
            out = proc.stdout + proc.stderr
            if capture:
                with open(os.path.join(capture, "%02d-%s.txt" % (number, block.id)), "w") as handle:
                    handle.write("$ %s\n# rc=%d, %.1f s\n%s" % (block.cmd, proc.returncode, time.time() - started, out))
            try:
                assert ctx.vars["ransomeye_db_admin_password"] not in out, "%s printed the admin password" % block.id
                assert proc.returncode == block.rc, "%s (%s): rc %d, documented %d\n%s" % (
                    block.id, block.section, proc.returncode, block.rc, out[-6000:])
                assert re.search(block.expect, out, re.M), "%s: output does not match /%s/\n%s" % (
                    block.id, block.expect, out[-6000:])
                if block.id in CHECK:
                    CHECK[block.id](ctx, out)
            except AssertionError as exc:
                if not capture:
                    raise
                # Capture mode (writing the runbook): go on and report every failing block at the end.
                errors.append("%s: %s" % (block.id, str(exc)[:2000]))
    assert not errors, "\n\n".join(errors)
    check_health_ok(ctx, "")
