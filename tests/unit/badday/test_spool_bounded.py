"""The alert spool with no SIEM configured (issue 12, section 2): repeats coalesce, a full spool drops and counts
instead of failing the health check, and a delivery resets the count. Real files, the real module."""
from __future__ import annotations

import json
import os

MODULE = "ransomeye_alert_forward"


def _alert(run_module_direct, spool, msg, key, **extra):
    args = dict(spool_dir=str(spool), msg=msg, spool_coalesce_key=key, spool_max_messages=3,
                spool_when_full="drop")
    args.update(extra)
    return run_module_direct(MODULE, args)


def test_repeats_coalesce_and_a_full_spool_drops_counts_and_warns(tmp_path, run_module_direct):
    spool = tmp_path / "spool"
    first = _alert(run_module_direct, spool, "host critical: disk", "h|critical|disk")
    assert first["_rc"] == 0 and first["queued"] == 1 and not first["coalesced"]
    for dummy in range(4):
        again = _alert(run_module_direct, spool, "host critical: disk", "h|critical|disk")
        assert again["_rc"] == 0 and again["coalesced"] and again["queued"] == 1, again
    [entry] = [n for n in os.listdir(spool) if n.endswith(".alert")]
    assert json.loads((spool / entry).read_text())["repeats"] == 4
    for n, key in enumerate(["a", "b", "c", "d"]):
        result = _alert(run_module_direct, spool, "other %d" % n, key)
        assert result["_rc"] == 0, result
    assert result["queued"] == 3 and result["dropped"] == 2
    assert "2 alert(s) dropped" in json.dumps(result.get("warnings")), result
    # The default still refuses to drop anything silently.
    strict = _alert(run_module_direct, spool, "one more", "e", spool_when_full="fail")
    assert strict["_rc"] != 0 and "full" in strict["msg"]
