"""ransomeye_pg_tune apply=file never puts in place a file the server would refuse at its next start.

The candidate file is checked with the server's own ``postgres`` binary
(``postgres --config-file=<candidate> -C <name> -D <data dir>``, run as the
data directory's owner), the same judge a restart would be.
"""
from __future__ import annotations

import os

import pytest

TUNE = dict(memory="4GB", cpus=2, pg_version=15)


@pytest.mark.parametrize("overrides,fragment", [
    ({"shared_buffers": "abc"}, "shared_buffers"),
    ({"no_such_param": "1"}, "no_such_param"),
    ({"max_connections": "-5"}, "max_connections"),
    ({"wal_level": "verbose"}, "wal_level"),
])
def test_a_file_the_server_would_refuse_is_never_written(tmp_path, pg, run_module_direct, overrides, fragment):
    dest = str(tmp_path / "ransomeye-tune.conf")
    for check in (True, False):
        result = run_module_direct("ransomeye_pg_tune", dict(TUNE, apply="file", dest=dest, overrides=overrides,
                                                             data_dir=pg.data), check=check)
        assert result.get("failed") is True, result
        assert fragment in result["msg"] and "refuse" in result["msg"], result
        assert not os.path.exists(dest)
        assert os.listdir(str(tmp_path)) == []  # no temp file left behind either


def test_a_valid_file_is_checked_and_written_without_a_data_dir_too(tmp_path, pg, run_module_direct):
    for data_dir in (pg.data, None):
        dest = str(tmp_path / ("with" if data_dir else "without") / "ransomeye-tune.conf")
        os.makedirs(os.path.dirname(dest))
        args = dict(TUNE, apply="file", dest=dest, overrides={"work_mem": "8MB"})
        if data_dir:
            args["data_dir"] = data_dir
        result = run_module_direct("ransomeye_pg_tune", args)
        assert result["_rc"] == 0 and result["changed"] is True, result
        with open(dest) as handle:
            assert "work_mem = '8MB'" in handle.read() or "work_mem = 8MB" in open(dest).read()
