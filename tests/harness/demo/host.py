"""Build, start, stop and describe the demo host (``python -m tests.harness.demo``)."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import typing as t

from tests.harness.demo import config, content, database, services
from tests.harness.demo.layout import Layout, load_state, new_password, save_state
from tests.harness.paths import COLLECTIONS, REPO, ensure_collection_link
from tests.harness.pgcluster import PgCluster, free_port

MB = 1 << 20


# Where the cluster goes when the postgres OS user cannot reach DIR/pg (a clone under /root or any 0700 parent).
RELOCATED_PG_PARENT = "/var/tmp"


def _postgres_reaches(path: str) -> bool:
    """Can the postgres OS user traverse every directory down to ``path``? (Asked as that user, not guessed.)"""
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", path], capture_output=True, cwd="/",
                          check=False)
    return proc.returncode == 0


def cluster_base(layout: Layout) -> str:
    """The cluster's directory: DIR/pg, or where DIR/pg points when the cluster had to live elsewhere.

    As root, initdb and the server run as ``postgres``, which cannot open DIR/pg/pwfile when a parent of DIR is
    mode 0700 (``/root/<clone>/.demo``). The cluster then goes to /var/tmp/ransomeye-demo-pg-<id> and DIR/pg
    becomes a symlink to it, so every other path of the demo host stays under DIR.
    """
    if os.path.islink(layout.pg_base) or os.path.isdir(layout.pg_base):
        return os.path.realpath(layout.pg_base)
    if os.geteuid() != 0 or _postgres_reaches(layout.root):
        return layout.pg_base
    import hashlib
    if not _postgres_reaches(RELOCATED_PG_PARENT):
        raise RuntimeError("the postgres OS user can reach neither %s nor %s: make a parent of the demo directory "
                           "traversable (chmod o+x) or run make demo with DEMO_DIR=<a directory postgres can reach>"
                           % (layout.root, RELOCATED_PG_PARENT))
    base = os.path.join(RELOCATED_PG_PARENT, "ransomeye-demo-pg-" + hashlib.sha256(
        layout.root.encode()).hexdigest()[:12])
    shutil.rmtree(base, ignore_errors=True)  # left by an earlier demo of the same DIR that was removed by hand
    os.makedirs(base, mode=0o700)
    os.symlink(base, layout.pg_base)
    print("demo: the postgres user cannot reach %s (a parent directory is not traversable); the PostgreSQL "
          "cluster lives in %s (%s links to it)" % (layout.root, base, layout.pg_base), flush=True)
    return base


def remove_cluster_dir(layout: Layout) -> None:
    """Remove DIR/pg, and the relocated cluster it points to."""
    if os.path.islink(layout.pg_base):
        shutil.rmtree(os.path.realpath(layout.pg_base), ignore_errors=True)
        os.unlink(layout.pg_base)
    else:
        shutil.rmtree(layout.pg_base, ignore_errors=True)


def cluster_for(layout: Layout, state: t.Dict[str, t.Any]) -> PgCluster:
    return PgCluster(base=cluster_base(layout), superuser_password=state["admin_password"], port=state["pg_port"])


def _cluster_running(cluster: PgCluster) -> bool:
    proc = subprocess.run(cluster._cmd([os.path.join(cluster.bindir, "pg_ctl"), "-D", cluster.data, "status"]),
                          capture_output=True, cwd="/", check=False)
    return proc.returncode == 0


def health_url(state: t.Dict[str, t.Any]) -> str:
    return "http://127.0.0.1:%d/health" % state["web_port"]


def inventory_vars(layout: Layout, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """Every variable of docs/INVENTORY_VARIABLES.md, with the demo host's values."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": layout.python,
        "ransomeye_root": layout.root,
        "ransomeye_db_host": "127.0.0.1",
        "ransomeye_db_port": state["pg_port"],
        "ransomeye_db_name": database.DB_NAME,
        "ransomeye_db_admin_user": "postgres",
        "ransomeye_db_admin_password": state["admin_password"],
        "ransomeye_db_ssl_mode": "disable",
        "ransomeye_app_role": "ransomeye_app",
        "ransomeye_app_role_alt": "ransomeye_app_b",
        "ransomeye_config_dir": layout.config_dir,
        "ransomeye_env_files": [layout.app_env, layout.worker_env],
        "ransomeye_gunicorn_config": layout.gunicorn_config,
        "ransomeye_celery_config": layout.celery_config,
        "ransomeye_tls_dir": layout.tls_dir,
        "ransomeye_artifact_dir": layout.artifact_dir,
        "ransomeye_log_dir": layout.log_dir,
        "ransomeye_tmp_dir": layout.tmp_dir,
        "ransomeye_buffer_dir": layout.buffer_dir,
        "ransomeye_signing_key_dir": layout.signing_key_dir,
        "ransomeye_backup_repo": layout.backup_repo,
        "ransomeye_backup_key_dir": layout.backup_key_dir,
        "ransomeye_report_dir": layout.report_dir,
        "ransomeye_service_manager": "supervisord",
        "ransomeye_supervisor_conf": layout.supervisor_conf,
        "ransomeye_supervisorctl": os.path.join(layout.bindir, "supervisorctl"),
        "ransomeye_pg_restart_command": _pg_restart_command(layout, state),
        "ransomeye_services": list(services.PROGRAMS),
        "ransomeye_health_url": health_url(state),
        # Long steps run as async jobs polled this often: a short poll keeps the demo's runs quick.
        "ransomeye_async_poll": 1,
    }


def _pg_restart_command(layout: Layout, state: t.Dict[str, t.Any]) -> t.List[str]:
    """How the demo host restarts PostgreSQL (no systemd here): pg_ctl as the cluster owner."""
    cluster = cluster_for(layout, state)
    # pylint: disable-next=protected-access
    return cluster._cmd([os.path.join(cluster.bindir, "pg_ctl"), "-D", cluster.data, "-l", cluster.logfile,
                         "-w", "-t", "60", "-m", "fast", "restart"])


def _yaml_scalar(value: t.Any) -> str:
    import json
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    # A JSON string is a valid YAML double-quoted scalar; {{ }} never appears in these values.
    return json.dumps(str(value))


def write_inventory(layout: Layout, state: t.Dict[str, t.Any]) -> None:
    os.makedirs(layout.inventory_dir, mode=0o700, exist_ok=True)
    lines = ["# RansomEye demo host inventory (written by python -m tests.harness.demo up; holds the admin password)",
             "all:", "  hosts:", "    localhost:", "      # docs/INVENTORY_VARIABLES.md"]
    for key, value in inventory_vars(layout, state).items():
        lines.append("      %s: %s" % (key, _yaml_scalar(value)))
    tmp = layout.inventory + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, layout.inventory)


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print("demo: " + msg, flush=True)


def build(layout: Layout, state: t.Dict[str, t.Any], quiet: bool = False) -> t.Dict[str, t.Any]:
    """Generate everything (state must hold seed, scale, ports and passwords)."""
    seed, scale = state["seed"], state["scale"]
    started = time.time()
    nhosts = max(8, min(2000, scale * 2))
    hosts = content.hostnames(seed, nhosts)
    large = min(6, scale // 400) if scale >= 512 else 0
    records = content.make_artifacts(layout.artifact_dir, seed, scale * MB // 2, hosts, large=large)
    content.make_logs(layout.log_dir, seed, min(16 * MB, max(8 << 10, scale * (4 << 10))))
    content.make_tmp(layout.tmp_dir, seed, 20 + min(scale, 500))
    content.make_buffer(layout.buffer_dir, seed, scale)
    _log(quiet, "%d artifacts (%.1f MB), logs, temp and buffer files" % (
        len(records), sum(r.size for r in records) / MB))
    cluster = cluster_for(layout, state)
    cluster.start()
    database.create(cluster, seed, max(1, scale // 2), hosts,
                    {"ransomeye_app": state["app_password"], "ransomeye_app_b": state["app_b_password"]})
    database.load_artifacts(cluster, records)
    _log(quiet, "database ransomeye on 127.0.0.1:%d, %.1f MB on disk: %s" % (
        state["pg_port"], database.database_size(cluster) / MB, database.row_counts(cluster)))
    config.write_config(layout, state)
    config.write_tls(layout)
    config.write_keys(layout)
    for path in (layout.backup_repo, layout.report_dir):
        os.makedirs(path, exist_ok=True)
    services.write_supervisor_conf(layout)
    write_inventory(layout, state)
    _log(quiet, "built in %.1f s" % (time.time() - started))
    return state


def up(root: str, scale: int = 64, seed: int = 1, quiet: bool = False) -> t.Dict[str, t.Any]:
    """Build the demo host if needed and start PostgreSQL and the services. Idempotent."""
    layout = Layout(root)
    ensure_collection_link()
    state = load_state(layout)
    if state and not state.get("built"):
        _log(quiet, "an earlier build of %s did not finish: rebuilding" % layout.root)
        down(root, quiet=True)
        for path in layout.data_dirs():
            shutil.rmtree(path, ignore_errors=True)
        remove_cluster_dir(layout)
        state = {}
    if not state:
        os.makedirs(layout.root, exist_ok=True)
        os.chmod(layout.root, 0o755)  # the postgres OS user must reach DIR/pg
        state = {"seed": seed, "scale": scale, "pg_port": free_port(), "web_port": free_port(),
                 "admin_password": new_password(), "app_password": new_password(),
                 "app_b_password": new_password(), "secret_key": secrets.token_hex(24), "built": False}
        save_state(layout, state)
        build(layout, state, quiet=quiet)
        state["built"] = True
        save_state(layout, state)
    else:
        if (state["seed"], state["scale"]) != (seed, scale):
            _log(quiet, "already built with seed %s, scale %s: keeping it (make demo-clean to rebuild)" % (
                state["seed"], state["scale"]))
        write_inventory(layout, state)
    cluster = cluster_for(layout, state)
    if not _cluster_running(cluster):
        cluster.start()
    try:
        services.start(layout, health_url(state))
    except RuntimeError as exc:
        raise RuntimeError("%s. If an earlier drill left the host without its database or config, rebuild it: "
                           "make demo-clean (or python -m tests.harness.demo down --dir %s; rm -rf %s)"
                           % (exc, layout.root, layout.root)) from exc
    pid = services.supervisord_pid(layout)
    if pid:
        content.write_live_sessions(layout.buffer_dir, state["seed"], pid)
    _log(quiet, "services up; %s answers 200" % health_url(state))
    return state


def down(root: str, quiet: bool = False) -> None:
    """Stop supervisord (and so the services) and the PostgreSQL cluster; files stay."""
    layout = Layout(root)
    state = load_state(layout)
    services.stop(layout)
    if state and os.path.isdir(layout.pg_base):
        cluster_for(layout, state).stop()
    _log(quiet, "stopped services and PostgreSQL of %s" % layout.root)


def replay_hint(layout: Layout, playbook: str) -> str:
    """The command printed before each playbook: it works as printed, from any shell (the checkout's ansible.cfg)."""
    import shlex
    return "cd %s && %s -i %s %s" % (shlex.quote(REPO), shlex.quote(os.path.join(layout.bindir, "ansible-playbook")),
                                     shlex.quote(layout.inventory), shlex.quote(os.path.relpath(playbook, REPO)))


def play(root: str, playbooks: t.Sequence[str] = (), extra_args: t.Sequence[str] = ()) -> int:
    """ansible-playbook -i DIR/inventory/hosts.yml <playbooks> (dr_drill.yml by default)."""
    layout = Layout(root)
    if not playbooks:
        main = os.path.join(REPO, "playbooks", "dr_drill.yml")
        if os.path.exists(main):
            playbooks = [main]
        else:
            pdir = os.path.join(REPO, "playbooks")
            playbooks = sorted(os.path.join(pdir, n) for n in os.listdir(pdir) if n.endswith(".yml")) \
                if os.path.isdir(pdir) else []
    if not playbooks:
        print("demo: no playbooks yet; nothing to play")
        return 0
    ensure_collection_link()
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
    env.setdefault("ANSIBLE_ROLES_PATH", os.path.join(REPO, "roles"))
    env.setdefault("LC_ALL", "C.UTF-8")
    env["PATH"] = layout.bindir + os.pathsep + env.get("PATH", "")
    rc = 0
    for playbook in playbooks:
        print("demo: %s" % replay_hint(layout, playbook), flush=True)
        proc = subprocess.run([os.path.join(layout.bindir, "ansible-playbook"), "-i", layout.inventory, playbook]
                              + list(extra_args), env=env, cwd=REPO, check=False)
        rc = rc or proc.returncode
    return rc


def info(root: str) -> str:
    layout = Layout(root)
    state = load_state(layout)
    if not state:
        return "demo: nothing built under %s (python -m tests.harness.demo up --dir %s)" % (layout.root, layout.root)
    pids = services.program_pids(layout) if services.supervisord_pid(layout) else {}
    status, _body = services.health(health_url(state), timeout=3)
    rows = [
        ("demo host", layout.root),
        ("seed / scale", "%s / %s MB" % (state["seed"], state["scale"])),
        ("inventory", layout.inventory),
        ("PostgreSQL", "127.0.0.1:%d, database ransomeye, log %s/postgresql.log" % (state["pg_port"], layout.pg_base)),
        ("passwords", "%s (0600)" % layout.state_file),
        ("config", layout.config_dir),
        ("artifacts", layout.artifact_dir),
        ("logs / tmp / buffer", "%s | %s | %s" % (layout.log_dir, layout.tmp_dir, layout.buffer_dir)),
        ("keys", "%s | %s" % (layout.signing_key_dir, layout.backup_key_dir)),
        ("backup repository", layout.backup_repo),
        ("reports", layout.report_dir),
        ("supervisord", "%s (%s)" % (layout.supervisor_conf, "running" if pids else "stopped")),
        ("services", ", ".join("%s pid %s" % kv for kv in pids.items()) or "stopped"),
        ("health URL", "%s -> %s" % (health_url(state), status or "no answer")),
    ]
    width = max(len(row[0]) for row in rows)
    text = "\n".join("  %s  %s" % (k.ljust(width), v) for k, v in rows)
    return ("RansomEye demo host\n%s\n\n  replay the drill:  python -m tests.harness.demo play --dir %s\n"
            "  tear it down:      make demo-clean   (or python -m tests.harness.demo down --dir %s)\n"
            % (text, layout.root, layout.root))


def main(argv: t.Optional[t.Sequence[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m tests.harness.demo", description=__doc__)
    parser.add_argument("command", choices=["up", "play", "info", "down"])
    parser.add_argument("--dir", required=True, help="demo host directory")
    parser.add_argument("--scale", type=int, default=64, help="approximate data size in MB (default 64)")
    parser.add_argument("--seed", type=int, default=1, help="seed of all non-secret content (default 1)")
    parser.add_argument("playbooks", nargs="*", help="play: playbooks to run (default playbooks/dr_drill.yml)")
    args, extra = parser.parse_known_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1 (MB)")
    try:
        if args.command == "up":
            up(args.dir, scale=args.scale, seed=args.seed)
        elif args.command == "down":
            down(args.dir)
        elif args.command == "play":
            return play(args.dir, args.playbooks, extra)
        else:
            print(info(args.dir))
    except Exception as exc:  # pylint: disable=broad-except
        print("demo %s failed: %s" % (args.command, exc), file=sys.stderr)
        return 1
    return 0
