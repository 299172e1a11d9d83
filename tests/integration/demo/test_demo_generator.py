"""The demo host generator: deterministic for a seed, the layout of docs/INVENTORY_VARIABLES.md, idempotent up."""
from __future__ import annotations

import json
import os
import re
import stat
import time

import yaml

from tests.harness.demo import content, database, host
from tests.harness.demo.layout import Layout, load_state

DOC_VARS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "INVENTORY_VARIABLES.md")


def _seeded_hashes(layout: Layout) -> dict:
    """Hashes of everything seeded: artifacts, rotated logs, temp files, buffer (minus live, pid-bearing sessions)."""
    out = {}
    for name, root in (("artifacts", layout.artifact_dir), ("tmp", layout.tmp_dir), ("buffer", layout.buffer_dir)):
        for rel, digest in content.tree_hashes(root, skip=("live-",)).items():
            out["%s/%s" % (name, rel)] = digest
    for rel, digest in content.tree_hashes(layout.log_dir).items():
        if re.search(r"\.log\.\d+$", rel):
            out["log/" + rel] = digest
    return out


def test_demo_generator_same_seed_same_content_other_seed_differs(demo_factory):
    first = demo_factory(scale=2, seed=11)
    second = demo_factory(scale=2, seed=11)
    third = demo_factory(scale=2, seed=12)
    h1, h2, h3 = (_seeded_hashes(d.layout) for d in (first, second, third))
    assert len([k for k in h1 if k.startswith("artifacts/")]) >= 10
    assert h1 == h2
    assert h1 != h3
    d1, d2, d3 = (database.content_digest(d.cluster()) for d in (first, second, third))
    assert d1 == d2
    assert d1 != d3
    # The artifact index lists exactly the artifact files, with their real hashes.
    conn = first.cluster().connect("ransomeye")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT relpath, sha256 FROM artifacts")
            index = dict(cur.fetchall())
    finally:
        conn.close()
    on_disk = content.tree_hashes(first.layout.artifact_dir)
    assert index == on_disk
    # Secrets are not seeded: two builds never share a password.
    assert first.state["app_password"] != second.state["app_password"]


def test_demo_generator_inventory_has_every_documented_variable(demo_host):
    with open(demo_host.inventory) as handle:
        inv = yaml.safe_load(handle)
    hostvars = inv["all"]["hosts"]["localhost"]
    with open(DOC_VARS) as handle:
        rows = [line.split("|")[1] for line in handle if line.startswith("| `ransomeye_")]
    documented = {name for cell in rows for name in re.findall(r"`(ransomeye_[a-z_]+)`", cell)}
    assert len(documented) > 20
    optional = {"ransomeye_syslog_server", "ransomeye_syslog_port", "ransomeye_syslog_protocol",
                "ransomeye_hosts", "ransomeye_serial",  # play-level choices with defaults
                "ransomeye_db_delegate_to"}  # fleets only: a single host does its own database work
    missing = sorted(documented - optional - set(hostvars))
    assert missing == []
    assert hostvars["ansible_connection"] == "local"
    assert os.path.isabs(hostvars["ansible_python_interpreter"])
    assert hostvars["ransomeye_service_manager"] == "supervisord"
    for key in ("ransomeye_config_dir", "ransomeye_artifact_dir", "ransomeye_log_dir", "ransomeye_tmp_dir",
                "ransomeye_buffer_dir", "ransomeye_tls_dir", "ransomeye_signing_key_dir", "ransomeye_backup_key_dir"):
        assert os.path.isdir(hostvars[key]), key
        assert hostvars[key].startswith(hostvars["ransomeye_root"] + "/")
    assert stat.S_IMODE(os.stat(demo_host.inventory).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(demo_host.layout.state_file).st_mode) == 0o600


def test_demo_generator_config_tree_keys_and_buffer_rule(demo_host):
    lay = demo_host.layout
    for path in (lay.app_env, lay.worker_env):
        text = open(path).read()
        pw = re.search(r"^DB_PASSWORD=(\S+)$", text, re.M).group(1)
        url = re.search(r"^DATABASE_URL=(\S+)$", text, re.M).group(1)
        assert pw == demo_host.state["app_password"]
        assert ":%s@" % pw in url and "#" in text
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"):
        assert os.path.isfile(os.path.join(lay.tls_dir, name)), name
    assert stat.S_IMODE(os.stat(os.path.join(lay.tls_dir, "server.key")).st_mode) == 0o600
    from cryptography import x509
    ca = x509.load_pem_x509_certificate(open(os.path.join(lay.tls_dir, "ca.crt"), "rb").read())
    server = x509.load_pem_x509_certificate(open(os.path.join(lay.tls_dir, "server.crt"), "rb").read())
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           __import__("cryptography.hazmat.primitives.asymmetric.padding", fromlist=["x"]).PKCS1v15(),
                           server.signature_hash_algorithm)
    assert len(open(os.path.join(lay.backup_key_dir, "backup.key"), "rb").read()) == 32
    assert os.path.isfile(os.path.join(lay.signing_key_dir, "active.key"))
    # Buffer: markers parse as the documented rule says; orphans are old, live ones carry a running pid.
    buf = lay.buffer_dir
    now = time.time()
    markers = {n[:-len(".session")]: n for n in os.listdir(buf) if n.endswith(".session")}
    assert any(n.startswith("orphan-nomarker-") for n in os.listdir(buf)) and not any(
        m.startswith("orphan-nomarker-") for m in markers)
    for session, marker in markers.items():
        raw = open(os.path.join(buf, marker), "rb").read()
        if session.startswith("orphan-badmarker"):
            continue
        info = json.loads(raw)
        assert info["state"] in ("uploading", "complete")
        if session.startswith("live-"):
            os.kill(info["pid"], 0)  # running
        if session.startswith("orphan-deadpid"):
            assert info["pid"] > 4194304
            assert now - os.stat(os.path.join(buf, session)).st_mtime > 2 * 86400
    rotated = [n for n in os.listdir(lay.log_dir) if re.search(r"\.log\.\d+$", n)]
    assert rotated and all(now - os.stat(os.path.join(lay.log_dir, n)).st_mtime > 7 * 86400 for n in rotated)


def test_demo_generator_up_is_idempotent_and_down_stops_everything(demo_factory):
    demo = demo_factory(scale=1, seed=3)
    before = content.tree_hashes(demo.layout.artifact_dir)
    state = host.up(demo.root, scale=1, seed=3, quiet=True)
    assert state["pg_port"] == demo.state["pg_port"] and state["admin_password"] == demo.state["admin_password"]
    assert content.tree_hashes(demo.layout.artifact_dir) == before
    host.down(demo.root, quiet=True)
    from tests.harness.demo import services
    assert services.supervisord_pid(demo.layout) is None
    assert services.health(demo.health_url, timeout=2)[0] == 0
    assert not os.path.exists(os.path.join(demo.layout.pg_base, "data", "postmaster.pid"))
    # up again after down: same passwords, services back, data intact.
    host.up(demo.root, scale=1, seed=3, quiet=True)
    assert load_state(demo.layout)["admin_password"] == demo.state["admin_password"]
    status, body = services.health(demo.health_url)
    assert status == 200 and body["counts"]["artifacts"] == len(before)
