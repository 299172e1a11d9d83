"""The long steps return the figures their summary lines print (bytes, seconds, bytes per second): a full verify,
a restore (repository v2 files; the database from its dump), and a log archive run over a directory of 200 files.

The playbooks' lines themselves (and the async heartbeat) are asserted where those playbooks already run on the
demo host: test_demo_dr_drill.py, test_demo_operator_output.py, test_maint_playbook.py.
"""
from __future__ import annotations

import gzip
import os
import time


def _consistent(result, nbytes):
    """bytes_per_second is nbytes over duration (int), and 0 only when the step was too fast to measure."""
    assert isinstance(result["duration"], float) and result["duration"] >= 0
    if result["duration"] >= 0.001:
        # duration is reported in whole milliseconds, the rate from the unrounded one: a 46 ms step is off by up
        # to 1.1 % (a fixed rel=0.01 failed on exactly that)
        low, high = result["duration"] - 0.0005, result["duration"] + 0.0005
        assert nbytes / high - 1 <= result["bytes_per_second"] <= nbytes / max(low, 1e-6) + 1, result
    else:
        assert result["bytes_per_second"] == 0


def test_full_verify_and_v2_file_restore_return_size_duration_and_rate(dr_site, run_module_direct, tmp_path):
    site = dr_site
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["config", "artifacts"]))
    assert backup["_rc"] == 0, backup.get("msg")

    verify = run_module_direct("ransomeye_backup_verify", dict(site["verify_args"], backup=backup["backup_id"],
                                                               level="full"))
    assert verify["_rc"] == 0 and verify["problems"] == [], verify.get("msg")
    assert verify["bytes_checked"] > 1 << 20  # two 1 MiB memory dumps and the rest, encrypted
    _consistent(verify, verify["bytes_checked"])

    info = run_module_direct("ransomeye_backup_info", dict(repo=site["repo"], trusted_keys=[site["keys"]["signing_pub"]],
                                                           backup=backup["backup_id"]))
    plan = run_module_direct("ransomeye_restore", dict(site["verify_args"], backup=backup["backup_id"],
                                                       components=["config", "artifacts"], dest=str(tmp_path / "r")),
                             check=True)
    assert plan["_rc"] == 0, plan.get("msg")
    assert plan["backup_size"] == info["backups"][0]["size"] > 1 << 20   # the start line's size, before acting

    done = run_module_direct("ransomeye_restore", dict(site["verify_args"], backup=backup["backup_id"],
                                                       components=["config", "artifacts"], dest=str(tmp_path / "r")))
    assert done["_rc"] == 0 and done["changed"], done.get("msg")
    written = done["stats"]["config"]["bytes_written"] + done["stats"]["artifacts"]["bytes_written"]
    assert done["bytes_restored"] == written > 2 << 20
    _consistent(done, done["bytes_restored"])
    for stats in done["stats"].values():
        _consistent(dict(duration=float(stats["duration"]), bytes_per_second=stats["bytes_per_second"]),
                    stats["bytes_written"])


def test_database_restore_counts_the_dump_bytes(dr_site, run_module_direct):
    site = dr_site
    backup = run_module_direct("ransomeye_backup", dict(site["args"], components=["database"]))
    assert backup["_rc"] == 0, backup.get("msg")
    site["pg"].execute("DELETE FROM forensics.artifact_index", dbname=site["db"])
    done = run_module_direct("ransomeye_restore", dict(site["verify_args"], **site["pg"].conn_params(),
                                                       backup=backup["backup_id"], components=["database"],
                                                       db=site["db"]))
    assert done["_rc"] == 0 and done["changed"], done.get("msg")
    assert done["bytes_restored"] == done["stats"]["database"]["bytes"] > 10_000   # the dump read (compressed)
    _consistent(done, done["bytes_restored"])


def test_log_archive_over_a_large_directory_returns_files_bytes_duration_and_rate(tmp_path, run_module_direct):
    logs = tmp_path / "logs"
    logs.mkdir()
    old = time.time() - 30 * 86400
    line = b"2026-11-01T00:00:00Z worker-3 INFO detection pipeline heartbeat seq=%08d ok\n"
    for i in range(200):
        path = logs / ("app-%03d.log.1" % i)
        path.write_bytes(b"".join(line % n for n in range(i * 500, i * 500 + 500)))
        os.utime(path, (old, old))
    total = sum(p.stat().st_size for p in logs.iterdir())
    args = dict(paths=[str(logs / "*.log.*")], retention_days=7)

    plan = run_module_direct("ransomeye_log_archive", args, check=True)
    assert plan["_rc"] == 0, plan.get("msg")
    assert plan["files_archived"] == 200 and plan["bytes_before"] == total
    assert plan["bytes_per_second"] == 0     # check mode compresses nothing: no rate is claimed

    done = run_module_direct("ransomeye_log_archive", args)
    assert done["_rc"] == 0 and done["changed"], done.get("msg")
    assert done["files_archived"] == 200 == len(done["archived"])
    assert done["bytes_before"] == total and 0 < done["bytes_after"] < total
    assert done["duration"] > 0
    _consistent(done, total)
    with gzip.open(done["archived"][0]["archive"], "rb") as handle:
        assert handle.read().startswith(b"2026-11-01T00:00:00Z")
