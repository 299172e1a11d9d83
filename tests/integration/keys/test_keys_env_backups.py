"""Rotation's .env backup copies are bounded (issue 12, section 5): kept in a 0700 directory, the newest N only."""
from __future__ import annotations

import os
import stat

from tests.integration.keys.conftest import failed


def test_env_backups_go_to_a_0700_dir_and_only_the_newest_are_kept(creds, run_module_direct):
    env_dir = os.path.dirname(creds.env_files[0])
    backup_dir = os.path.join(env_dir, ".env-backups")
    for dummy in range(4):
        result = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(force=True, backup=True,
                                                                                  backup_keep=2))
        assert not failed(result), result
        assert all(os.path.dirname(p) == backup_dir for p in result["backup_files"]), result["backup_files"]
    assert stat.S_IMODE(os.stat(backup_dir).st_mode) == 0o700
    for env_file in creds.env_files:
        name = os.path.basename(env_file)
        copies = [n for n in os.listdir(backup_dir) if n.startswith(name + ".")]
        assert len(copies) == 2, copies
    # Nothing is left next to the env files any more.
    assert not [n for n in os.listdir(env_dir) if n.endswith("~")]
