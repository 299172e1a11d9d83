"""The interface's option name `message` reaches the receiver (renamed to `msg` by the action plugin)."""
from __future__ import annotations


def test_message_option_is_delivered_to_rsyslog(rsyslog, run_module, marker):
    result = run_module("ransomeye_alert_forward", dict(
        server="127.0.0.1", port=rsyslog.ports["tcp"], protocol="tcp", format="rfc5424", msgid=marker,
        message="ransomware canary touched on %s" % marker))
    assert result.get("failed") is not True, result
    assert result["sent"] == 1
    (record,) = rsyslog.wait_for(lambda r: r["msgid"] == marker)
    assert record["msg"] == "ransomware canary touched on %s" % marker


def test_message_and_a_different_msg_together_fail_clearly(rsyslog, run_module, marker):
    result = run_module("ransomeye_alert_forward", dict(
        server="127.0.0.1", port=rsyslog.ports["tcp"], protocol="tcp", msgid=marker, message="a", msg="b"))
    assert result["failed"] is True
    assert "give the alert text once" in result["msg"]
    assert rsyslog.wait_for(lambda r: r["msgid"] == marker, count=0, settle=1.0) == []
