"""ransomeye_alert_forward against a real rsyslog: what rsyslog parsed must equal what was sent."""
from __future__ import annotations

import datetime
import json
import os
import re

import pytest

from tests.harness.rsyslog import Rsyslog

# Metadata that breaks naive encoders: quotes, brackets, backslashes, '=', non-ASCII, JSON values.
METADATA = {
    "rule": 'mass "rename" [x] \\ y] = z',
    "path": "C:\\Users\\bob\\Documents\\ünïcødé ☢.docx",
    "count": 1432,
    "tags": ["a", "b]"],
}
MESSAGE = 'Ransomware behaviour: "encrypt" [burst] \\ back ] – Größe ✓'


def _sd_params(sd: str) -> dict:
    """Parse one RFC 5424 SD-ELEMENT's params, undoing the escapes (an independent reader)."""
    match = re.match(r'^\[(\S+)(.*)\]$', sd, re.S)
    assert match, sd
    params = {}
    for name, value in re.findall(r' ([^= \]"]+)="((?:\\.|[^"\\])*)"', match.group(2)):
        params[name] = re.sub(r'\\(["\\\]])', r"\1", value)
    return params


def _expected_text(value):
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _args(rsyslog, protocol, marker, **extra):
    args = dict(server="127.0.0.1", port=rsyslog.ports[protocol], protocol=protocol, msgid=marker,
                app_name="ransomeye", procid="4242", facility="local3", severity="crit",
                hostname="re-host01", msg=MESSAGE, metadata=METADATA)
    if protocol == "tls":
        args.update(ca_cert=rsyslog.pki["ca"], tls_server_name="localhost")
    args.update(extra)
    return args


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_rfc5424_fields_parsed_by_rsyslog_equal_what_was_sent(rsyslog, run_module_direct, marker, protocol):
    # A local clock at +05:30 (POSIX TZ string, no tzdata needed): the offset must be on the wire.
    result = run_module_direct("ransomeye_alert_forward", _args(rsyslog, protocol, marker, format="rfc5424"),
                               env={"TZ": "IST-05:30"})
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["sent"] == 1 and result["queued"] == 0 and result["spooled"] is False
    (record,) = rsyslog.wait_for(lambda r: r["msgid"] == marker)
    assert record["input"] == protocol
    assert record["protocol_version"] == "1"
    assert int(record["pri"]) == 19 * 8 + 2  # local3.crit
    assert record["hostname"] == "re-host01"
    assert record["app_name"] == "ransomeye"
    assert record["procid"] == "4242"
    assert record["msg"] == MESSAGE
    assert record["raw"] == result["rendered"]
    params = _sd_params(record["structured_data"])
    assert params == {k: _expected_text(v) for k, v in METADATA.items()}
    assert record["structured_data"].startswith("[ransomeye@32473 ")
    # The timestamp carries the local offset and rsyslog read the same instant.
    sent_ts = result["rendered"].split(" ")[1]
    assert sent_ts.endswith("+05:30")
    assert datetime.datetime.fromisoformat(record["timestamp"]) == datetime.datetime.fromisoformat(sent_ts)
    assert abs(datetime.datetime.fromisoformat(sent_ts).timestamp() - datetime.datetime.now().timestamp()) < 60


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_rfc3164_header_and_message_parsed_by_rsyslog(rsyslog, run_module_direct, marker, protocol):
    result = run_module_direct("ransomeye_alert_forward",
                               _args(rsyslog, protocol, marker, format="rfc3164", msg=MESSAGE + " " + marker))
    assert result.get("failed") is not True, result
    (record,) = rsyslog.wait_for(lambda r: marker in r["msg"])
    assert record["protocol_version"] == "0"
    assert int(record["pri"]) == 19 * 8 + 2
    assert record["hostname"] == "re-host01"
    assert record["syslogtag"] == "ransomeye[4242]:"
    assert record["app_name"] == "ransomeye" and record["procid"] == "4242"
    # rsyslog keeps the space after "TAG:" in msg for RFC 3164 (historic behaviour).
    pairs = " ".join('%s="%s"' % (k, _expected_text(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))
                     for k, v in METADATA.items())
    assert record["msg"] == " " + MESSAGE + " " + marker + " " + pairs
    assert record["raw"] == result["rendered"]
    header = re.match(r"^<\d+>([A-Z][a-z]{2}) ([ \d]\d) (\d\d:\d\d:\d\d) ", result["rendered"])
    assert header, result["rendered"]
    parsed = datetime.datetime.fromisoformat(record["timestamp"])
    assert header.group(1) == parsed.strftime("%b")
    assert header.group(2) == "%2d" % parsed.day  # space-padded day
    assert header.group(3) == parsed.strftime("%H:%M:%S")


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_cef_line_arrives_intact(rsyslog, run_module_direct, marker, protocol):
    result = run_module_direct("ransomeye_alert_forward", _args(rsyslog, protocol, marker, format="cef"))
    assert result.get("failed") is not True, result
    (record,) = rsyslog.wait_for(lambda r: r["msgid"] == marker)
    cef = record["msg"]
    assert cef.startswith("CEF:0|RansomEye|RansomEye|1.0|%s|" % marker)
    fields = re.split(r"(?<!\\)\|", cef)
    assert len(fields) == 8, fields
    assert fields[6] == "8"  # syslog crit -> CEF 8
    extension = fields[7]
    # Extension values: '=' and '\' escaped; parse them back.
    pairs = dict((k, re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), v))
                 for k, v in re.findall(r"(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)", extension))
    assert pairs["msg"] == MESSAGE
    assert pairs["rule"] == METADATA["rule"]
    assert pairs["path"] == METADATA["path"]
    assert pairs["dvchost"] == "re-host01"


def test_tls_with_client_certificate(rsyslog, run_module_direct, marker):
    args = _args(rsyslog, "tls", marker, port=rsyslog.ports["mtls"], client_cert=rsyslog.pki["client_cert"],
                 client_key=rsyslog.pki["client_key"])
    result = run_module_direct("ransomeye_alert_forward", args)
    assert result.get("failed") is not True, result
    (record,) = rsyslog.wait_for(lambda r: r["msgid"] == marker)
    assert record["input"] == "mtls"
    assert record["msg"] == MESSAGE


def test_tls_refuses_a_receiver_signed_by_another_ca(rsyslog, run_module_direct, marker, tmp_path):
    other = Rsyslog(base=str(tmp_path / "other"))  # only for its freshly generated, unrelated CA
    result = run_module_direct("ransomeye_alert_forward", _args(rsyslog, "tls", marker, ca_cert=other.pki["ca"]))
    assert result["failed"] is True
    assert "TLS verification" in result["msg"] and "no spool_dir" in result["msg"]
    assert "Traceback" not in result["_stderr"]
    assert not [r for r in rsyslog.records() if r["msgid"] == marker]


def test_spool_receiver_down_then_up_delivers_in_order_exactly_once(run_module_direct, tmp_path, marker):
    receiver = Rsyslog(base=str(tmp_path / "rs"))  # configured, not yet running: the receiver is down
    spool = str(tmp_path / "spool")
    base = dict(server="127.0.0.1", port=receiver.ports["tcp"], protocol="tcp", format="rfc5424", msgid=marker,
                spool_dir=spool, timeout=2)
    try:
        for number in (1, 2, 3):
            result = run_module_direct("ransomeye_alert_forward", dict(base, msg="alert %d" % number))
            assert result.get("failed") is not True, result
            assert result["spooled"] is True and result["sent"] == 0 and result["queued"] == number
            assert "cannot connect" in result["receiver_error"]
        assert sorted(os.listdir(spool)) == [".lock", "000000000001.alert", "000000000002.alert",
                                             "000000000003.alert"]
        receiver.start()
        # The next run delivers the backlog first, then its own alert.
        result = run_module_direct("ransomeye_alert_forward", dict(base, msg="alert 4"))
        assert result.get("failed") is not True, result
        assert (result["sent"], result["sent_from_spool"], result["queued"], result["spooled"]) == (4, 3, 0, False)
        # flush with an empty spool sends nothing more.
        result = run_module_direct("ransomeye_alert_forward", dict(base, flush=True))
        assert (result["sent"], result["changed"]) == (0, False)
        records = receiver.wait_for(lambda r: r["msgid"] == marker, count=4, settle=1.0)
        assert [r["msg"] for r in records] == ["alert 1", "alert 2", "alert 3", "alert 4"]
        # The spooled alerts keep their original timestamps (rendered when queued).
        stamps = [datetime.datetime.fromisoformat(r["timestamp"]) for r in records]
        assert stamps == sorted(stamps)
    finally:
        receiver.destroy()


def test_flush_true_delivers_the_spool_without_a_message(rsyslog, run_module_direct, tmp_path, marker):
    spool = str(tmp_path / "spool")
    queued = run_module_direct("ransomeye_alert_forward", dict(msgid=marker, msg="queued while offline",
                                                               spool_dir=spool))
    assert (queued["spooled"], queued["queued"], queued["sent"]) == (True, 1, 0)
    flushed = run_module_direct("ransomeye_alert_forward", dict(server="127.0.0.1", port=rsyslog.ports["tcp"],
                                                                protocol="tcp", spool_dir=spool, flush=True))
    assert (flushed["sent"], flushed["sent_from_spool"], flushed["queued"], flushed["changed"]) == (1, 1, 0, True)
    (record,) = rsyslog.wait_for(lambda r: r["msgid"] == marker, settle=0.5)
    assert record["msg"] == "queued while offline"


def test_check_mode_sends_and_queues_nothing(rsyslog, run_module, tmp_path, marker):
    spool = str(tmp_path / "spool")
    result = run_module("ransomeye_alert_forward", dict(server="127.0.0.1", port=rsyslog.ports["tcp"],
                                                        protocol="tcp", msgid=marker, msg="dry run",
                                                        spool_dir=spool), check=True)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["sent"] == 0 and marker in result["rendered"]
    assert not os.path.exists(spool)
    with pytest.raises(AssertionError):
        rsyslog.wait_for(lambda r: r["msgid"] == marker, timeout=1.0)


def test_rfc3164_is_cut_to_1024_bytes_and_still_parsed(rsyslog, run_module_direct, marker):
    long_message = marker + " " + "é" * 2000
    result = run_module_direct("ransomeye_alert_forward", dict(server="127.0.0.1", port=rsyslog.ports["tcp"],
                                                               protocol="tcp", format="rfc3164",
                                                               app_name="a" * 40, msg=long_message))
    assert result.get("failed") is not True, result
    assert len(result["rendered"].encode("utf-8")) <= 1024
    (record,) = rsyslog.wait_for(lambda r: marker in r["msg"])
    assert record["syslogtag"] == "a" * 32 + ":"
    assert long_message.startswith(record["msg"].lstrip(" "))
    assert len(record["raw"].encode("utf-8")) <= 1024


@pytest.mark.parametrize("args, expected", [
    (dict(facility="local9"), "unknown syslog facility 'local9'"),
    (dict(severity="loud"), "unknown syslog severity 'loud'"),
    (dict(port=70000), "port must be between 1 and 65535"),
    (dict(port=0), "port must be between 1 and 65535"),
    (dict(protocol="tls", ca_cert="/nonexistent/ca.pem"), "ca_cert /nonexistent/ca.pem is not a readable file"),
    (dict(msg=None), "msg is required unless flush is true"),
    (dict(msgid="has space"), "msgid must be 1 to 32 printable ASCII"),
])
def test_bad_input_fails_clearly(run_module_direct, args, expected):
    base = dict(server="127.0.0.1", port=1514, msg="x")
    base.update(args)
    base = {k: v for k, v in base.items() if v is not None}
    result = run_module_direct("ransomeye_alert_forward", base)
    assert result["failed"] is True
    assert expected in result["msg"], result["msg"]
    assert "Traceback" not in result["_stderr"]


def test_garbage_ca_file_fails_clearly(run_module_direct, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    result = run_module_direct("ransomeye_alert_forward", dict(server="127.0.0.1", port=6514, protocol="tls",
                                                               ca_cert=str(bad), msg="x"))
    assert result["failed"] is True
    assert "could not be loaded as a PEM CA certificate" in result["msg"]
    assert "Traceback" not in result["_stderr"]


def test_bad_input_through_ansible_playbook_has_no_traceback(run_module):
    result = run_module("ransomeye_alert_forward", dict(server="127.0.0.1", facility="nope", msg="x"))
    # The recorder drops the 'failed' flag (Ansible reports it as the event type); a failed result has no 'sent'.
    assert "sent" not in result
    assert "unknown syslog facility 'nope'" in result["msg"]
    assert "Traceback" not in result["_stdout"]


def test_receiver_that_never_confirms_keeps_the_alert_queued(run_module_direct, tmp_path, marker):
    """A peer that accepts TCP but never reads or closes (hung SIEM): the alert must stay in the spool."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # the kernel completes handshakes; nobody ever reads
    spool = str(tmp_path / "spool")
    try:
        result = run_module_direct("ransomeye_alert_forward", dict(
            server="127.0.0.1", port=listener.getsockname()[1], protocol="tcp", timeout=1, msgid=marker,
            msg="must not be lost", spool_dir=spool))
    finally:
        listener.close()
    assert result.get("failed") is not True, result
    assert (result["sent"], result["spooled"], result["queued"]) == (0, True, 1)
    assert "did not confirm" in result["receiver_error"]
