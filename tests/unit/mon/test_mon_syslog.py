"""Rendering of RFC 3164, RFC 5424 and CEF, and the transport framing (pure functions)."""
from __future__ import annotations

import datetime
import socket
import threading

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _syslog as s
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

PLUS_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
WHEN = datetime.datetime(2026, 3, 7, 9, 4, 5, 123456, tzinfo=PLUS_0530)


def alert(**kw):
    base = dict(message="disk full", facility=s.FACILITIES["local4"], severity=s.SEVERITIES["crit"],
                hostname="re01.example.com", app_name="ransomeye", procid="77", msgid="HEALTH", timestamp=WHEN)
    base.update(kw)
    return s.Alert(**base)


def test_rfc3164_exact_header_with_space_padded_day_and_local_time():
    local = datetime.datetime(2026, 3, 7, 9, 4, 5, tzinfo=datetime.datetime.now().astimezone().tzinfo)
    line = s.render_rfc3164(alert(timestamp=local))
    # PRI 20*8+2; day 7 padded with a space; hostname without domain; TAG[pid]:
    assert line == "<162>Mar  7 09:04:05 re01 ransomeye[77]: disk full"


def test_rfc3164_tag_is_at_most_32_characters_and_sanitised():
    line = s.render_rfc3164(alert(app_name="x" * 40, procid=""))
    assert " " + "x" * 32 + ": disk full" in line
    assert s.rfc3164_tag("my app:1") == "my_app_1"


def test_rfc3164_truncates_to_1024_bytes_without_splitting_utf8():
    line = s.render_rfc3164(alert(message="€" * 1000))
    data = line.encode("utf-8")
    assert len(data) <= 1024 and len(data) > 1020
    data.decode("utf-8")  # still valid UTF-8


def test_rfc5424_header_structured_data_and_escaping():
    line = s.render_rfc5424(alert(metadata={"a": 'q"b]c\\d', "bad key=x": "ü", "n": 3, "l": [1, "x"]}))
    assert line == ('<162>1 2026-03-07T09:04:05.123456+05:30 re01.example.com ransomeye 77 HEALTH '
                    '[ransomeye@32473 a="q\\"b\\]c\\\\d" bad_key_x="ü" n="3" l="[1,\\"x\\"\\]"] disk full')


def test_rfc5424_nil_values_and_no_metadata():
    line = s.render_rfc5424(alert(procid="", msgid="", metadata={}))
    assert line.startswith("<162>1 2026-03-07T09:04:05.123456+05:30 re01.example.com ransomeye - - - disk full")


@pytest.mark.parametrize("field, value", [("hostname", "has space"), ("msgid", "x" * 33), ("app_name", "a" * 49),
                                          ("procid", "é")])
def test_rfc5424_rejects_bad_header_fields(field, value):
    with pytest.raises(RansomeyeError, match=field):
        s.render_rfc5424(alert(**{field: value}))


def test_cef_escapes_header_and_extension():
    line = s.render_cef_line(alert(message="a=b|c\\d\nnext", metadata={"file": "x=y", "weird key": "|"},
                                   cef_signature_id="SIG|1"))
    header, extension = line.rsplit("|", 1)[0], line.split("|", 7)[7]
    assert line.startswith("CEF:0|RansomEye|RansomEye|1.0|SIG\\|1|a=b\\|c\\\\d|8|")
    assert "msg=a\\=b|c\\\\d\\nnext" in extension
    assert "file=x\\=y" in extension and "weird_key=|" in extension
    assert "rt=%d" % int(WHEN.timestamp() * 1000) in extension
    assert header


def test_cef_rides_in_an_rfc5424_frame_without_structured_data():
    line = s.render_cef(alert(metadata={"k": "v"}))
    assert line.startswith("<162>1 2026-03-07T09:04:05.123456+05:30 re01.example.com ransomeye 77 HEALTH - CEF:0|")
    assert "k=v" in line


@pytest.mark.parametrize("value, number", [("local7", 23), ("AUTH", 4), (0, 0), ("23", 23), (None, 20)])
def test_facility_by_name_or_number(value, number):
    assert s.parse_facility(value) == number


@pytest.mark.parametrize("value", ["local8", "24", "-1", "kernel"])
def test_unknown_facility_is_a_clear_error(value):
    with pytest.raises(RansomeyeError, match="unknown syslog facility"):
        s.parse_facility(value)


@pytest.mark.parametrize("value, number", [("emerg", 0), ("warning", 4), ("7", 7), ("INFO", 6)])
def test_severity_by_name_or_number(value, number):
    assert s.parse_severity(value) == number


def test_unknown_severity_is_a_clear_error():
    with pytest.raises(RansomeyeError, match="unknown syslog severity '8'"):
        s.parse_severity("8")


def test_udp_datagram_is_capped_at_a_character_boundary():
    data = s.frame("ü" * 40000, "udp")
    assert len(data) <= s.UDP_MAX and len(data) >= s.UDP_MAX - 1
    data.decode("utf-8")
    assert len(s.frame("ü" * 40000, "tcp")) == len("80000 ") + 80000  # streams are never cut


def test_octet_counting_frame_counts_bytes_not_characters():
    assert s.frame("é", "tcp") == b"2 \xc3\xa9"
    assert s.frame("é", "tls") == b"2 \xc3\xa9"
    assert s.frame("é", "udp") == b"\xc3\xa9"


@pytest.mark.parametrize("port", [0, 65536, -1, "x"])
def test_target_rejects_ports_out_of_range(port):
    with pytest.raises(RansomeyeError, match="port must be"):
        s.Target.build("127.0.0.1", port, "tcp")


def test_target_defaults_ports_per_protocol():
    assert s.Target.build("h", None, "udp").port == 514
    assert s.Target.build("h", None, "tcp").port == 514


def test_tcp_sender_writes_octet_counted_frames_to_a_real_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received = []

    def accept():
        conn = server.accept()[0]
        with conn:
            chunks = []
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                chunks.append(data)
            received.append(b"".join(chunks))

    thread = threading.Thread(target=accept)
    thread.start()
    with s.Sender(s.Target.build("127.0.0.1", server.getsockname()[1], "tcp")) as sender:
        sender.send("one")
        sender.send("zwei ü")
    thread.join(5)
    server.close()
    assert received == [b"3 one7 zwei \xc3\xbc"]


def test_sender_reports_a_refused_connection_as_receiver_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(s.ReceiverError, match="cannot connect"):
        s.Sender(s.Target.build("127.0.0.1", port, "tcp", timeout=1)).open()
