# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: syslog rendering (RFC 3164, RFC 5424, CEF) and transports.

Rendering is pure (an ``Alert`` in, ``str`` out) so that the module, the
``ransomeye.ops.siem`` callback, the spool and the tests share it. Transports:
UDP (one datagram per message), TCP with octet-counting framing (RFC 6587) and
TLS (RFC 5425: octet counting over TLS, CA verification, optional client
certificate). Timestamps come from the local clock with its UTC offset; no NTP
or network lookup is needed.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import datetime
import json
import os
import re
import socket
import ssl
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
SEVERITIES = {
    "emerg": 0, "emergency": 0, "panic": 0, "alert": 1, "crit": 2, "critical": 2, "err": 3, "error": 3,
    "warning": 4, "warn": 4, "notice": 5, "info": 6, "informational": 6, "debug": 7,
}
# Syslog severity (0 most severe) to CEF severity (10 most severe).
CEF_SEVERITY = {0: 10, 1: 9, 2: 8, 3: 7, 4: 5, 5: 3, 6: 1, 7: 0}
FORMATS = ("rfc3164", "rfc5424", "cef")
PROTOCOLS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}
DEFAULT_SD_ID = "ransomeye@32473"
RFC3164_MAX = 1024
UDP_MAX = 65000  # below the IPv4/IPv6 UDP payload limit (65507)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SD_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.\-/]")
_CEF_KEY_BAD = re.compile(r"[^A-Za-z0-9_]")


def _printusascii(value: str, name: str, limit: int) -> str:
    """A header field: 1..limit printable US-ASCII characters without spaces (RFC 5424 PRINTUSASCII)."""
    if not value:
        return "-"
    if len(value) > limit or any(not 33 <= ord(c) <= 126 for c in value):
        raise RansomeyeError("%s must be 1 to %d printable ASCII characters without spaces, not %r" % (name, limit, value))
    return value


def _code(value: t.Union[str, int, None], names: t.Dict[str, int], default: str, top: int, what: str) -> int:
    """A syslog code by name or number (0..top); ``default`` when empty."""
    if value is None or value == "":
        return names[default]
    text = str(value).strip().lower()
    if text.isdigit() and 0 <= int(text) <= top:
        return int(text)
    if text in names:
        return names[text]
    raise RansomeyeError("unknown syslog %s %r; use a number 0-%d or one of %s" % (what, value, top, ", ".join(names)))


def parse_facility(value: t.Union[str, int, None]) -> int:
    """Facility by name (``local4``) or number (0..23)."""
    return _code(value, FACILITIES, "local4", 23, "facility")


def parse_severity(value: t.Union[str, int, None]) -> int:
    """Severity by name (``warning``) or number (0..7)."""
    return _code(value, SEVERITIES, "warning", 7, "severity")


def local_now() -> datetime.datetime:
    """The local wall-clock time with its UTC offset (no NTP, no network)."""
    return datetime.datetime.now(datetime.timezone.utc).astimezone()


def default_hostname() -> str:
    name = socket.gethostname() or "localhost"
    return name.replace(" ", "_")


class Alert(t.NamedTuple):
    """One alert, independent of its wire format."""

    message: str
    facility: int = FACILITIES["local4"]
    severity: int = SEVERITIES["warning"]
    hostname: str = ""
    app_name: str = "ransomeye"
    procid: str = ""
    msgid: str = ""
    metadata: t.Mapping[str, t.Any] = {}
    timestamp: t.Optional[datetime.datetime] = None
    sd_id: str = DEFAULT_SD_ID
    cef_vendor: str = "RansomEye"
    cef_product: str = "RansomEye"
    cef_version: str = "1.0"
    cef_signature_id: str = ""
    cef_name: str = ""

    @property
    def pri(self) -> int:
        return self.facility * 8 + self.severity

    def when(self) -> datetime.datetime:
        return self.timestamp or local_now()

    def host(self) -> str:
        return self.hostname or default_hostname()


def metadata_text(value: t.Any) -> str:
    """A metadata value as text: strings as is, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def sd_escape(value: str) -> str:
    """Escape an RFC 5424 PARAM-VALUE: ``"``, ``\\`` and ``]`` get a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def sd_name(key: t.Any) -> str:
    """An SD-NAME (PARAM-NAME): printable ASCII without ``= ]"`` and space, at most 32 characters."""
    name = _SD_NAME_BAD.sub("_", str(key))[:32]
    return name or "_"


def structured_data(alert: Alert) -> str:
    if not alert.metadata:
        return "-"
    sd_id = _printusascii(alert.sd_id, "sd_id", 32)
    if _SD_NAME_BAD.search(sd_id):
        raise RansomeyeError("sd_id %r may not contain '=', ']', '\"' or spaces" % sd_id)
    params = "".join(' %s="%s"' % (sd_name(k), sd_escape(metadata_text(v))) for k, v in alert.metadata.items())
    return "[%s%s]" % (sd_id, params)


def rfc5424_timestamp(when: datetime.datetime) -> str:
    """``2026-11-27T17:41:28.123456+01:00`` (``Z`` is allowed too, but the offset is kept)."""
    if when.tzinfo is None:
        when = when.astimezone()
    return when.isoformat(timespec="microseconds")


def rfc3164_timestamp(when: datetime.datetime) -> str:
    """``Mmm dd hh:mm:ss`` in local time, English month, day padded with a space."""
    if when.tzinfo is not None:
        when = when.astimezone()
    return "%s %2d %02d:%02d:%02d" % (_MONTHS[when.month - 1], when.day, when.hour, when.minute, when.second)


def render_rfc5424(alert: Alert, message: t.Optional[str] = None) -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`` (MSG in UTF-8, no BOM)."""
    header = "<%d>1 %s %s %s %s %s %s" % (
        alert.pri,
        rfc5424_timestamp(alert.when()),
        _printusascii(alert.host(), "hostname", 255),
        _printusascii(alert.app_name, "app_name", 48),
        _printusascii(alert.procid, "procid", 128),
        _printusascii(alert.msgid, "msgid", 32),
        structured_data(alert),
    )
    text = alert.message if message is None else message
    return header + (" " + text if text else "")


def rfc3164_tag(app_name: str) -> str:
    """The TAG: alphanumeric program name of at most 32 characters."""
    tag = _TAG_BAD.sub("_", app_name or "ransomeye")[:32]
    return tag or "ransomeye"


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, never cutting a character in half."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def render_rfc3164(alert: Alert) -> str:
    """``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG key="value"...``, at most 1024 bytes."""
    host = _printusascii(alert.host().split(".")[0] if not _is_ip(alert.host()) else alert.host(), "hostname", 255)
    tag = rfc3164_tag(alert.app_name)
    if alert.procid:
        tag += "[%s]" % _printusascii(alert.procid, "procid", 128)
    text = alert.message
    if alert.metadata:
        pairs = " ".join('%s="%s"' % (sd_name(k), sd_escape(metadata_text(v))) for k, v in alert.metadata.items())
        text = (text + " " + pairs) if text else pairs
    line = "<%d>%s %s %s: %s" % (alert.pri, rfc3164_timestamp(alert.when()), host, tag, text)
    return truncate_utf8(line, RFC3164_MAX)


def _is_ip(value: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return True
        except (OSError, ValueError):
            continue
    return False


def cef_header_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def cef_value_escape(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("=", "\\=")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r"))


def cef_key(key: t.Any) -> str:
    return _CEF_KEY_BAD.sub("_", str(key)) or "_"


def render_cef_line(alert: Alert) -> str:
    """``CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension``."""
    when = alert.when()
    extension = [
        ("rt", str(int(when.timestamp() * 1000))),
        ("dvchost", alert.host()),
        ("msg", alert.message),
    ]
    for key, value in alert.metadata.items():
        extension.append((cef_key(key), metadata_text(value)))
    header = [
        "CEF:0",
        cef_header_escape(alert.cef_vendor),
        cef_header_escape(alert.cef_product),
        cef_header_escape(alert.cef_version),
        cef_header_escape(alert.cef_signature_id or alert.msgid or "ransomeye-alert"),
        cef_header_escape(alert.cef_name or _first_line(alert.message) or "RansomEye alert"),
        str(CEF_SEVERITY[alert.severity]),
    ]
    return "|".join(header) + "|" + " ".join("%s=%s" % (k, cef_value_escape(v)) for k, v in extension)


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:128]


def render_cef(alert: Alert) -> str:
    """A CEF line carried as the MSG of an RFC 5424 message (no structured data, so parsers see CEF only)."""
    return render_rfc5424(alert._replace(metadata={}), message=render_cef_line(alert))


def render(alert: Alert, fmt: str) -> str:
    if fmt == "rfc3164":
        return render_rfc3164(alert)
    if fmt == "rfc5424":
        return render_rfc5424(alert)
    if fmt == "cef":
        return render_cef(alert)
    raise RansomeyeError("unknown format %r; use one of %s" % (fmt, ", ".join(FORMATS)))


def frame(message: str, protocol: str) -> bytes:
    """Wire bytes: one datagram for UDP, ``LEN SP MSG`` octet counting (RFC 6587/5425) for TCP and TLS.

    A datagram is cut to UDP_MAX bytes (at a character boundary): an oversized
    one could never be sent and would block the spool behind it forever.
    """
    if protocol == "udp":
        return truncate_utf8(message, UDP_MAX).encode("utf-8")
    data = message.encode("utf-8")
    return b"%d %s" % (len(data), data)


class Target(t.NamedTuple):
    """Where and how to send; validated by ``Target.build``."""

    server: str
    port: int
    protocol: str = "udp"
    timeout: float = 5.0
    ca_cert: t.Optional[str] = None
    client_cert: t.Optional[str] = None
    client_key: t.Optional[str] = None
    validate_certs: bool = True
    tls_server_name: t.Optional[str] = None

    @classmethod
    def build(cls, server: str, port: t.Optional[int] = None, protocol: str = "udp", timeout: float = 5.0,
              ca_cert: t.Optional[str] = None, client_cert: t.Optional[str] = None,
              client_key: t.Optional[str] = None, validate_certs: bool = True,
              tls_server_name: t.Optional[str] = None) -> "Target":
        protocol = (protocol or "udp").lower()
        if protocol not in PROTOCOLS:
            raise RansomeyeError("unknown protocol %r; use one of %s" % (protocol, ", ".join(PROTOCOLS)))
        if port is None:
            port = DEFAULT_PORTS[protocol]
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise RansomeyeError("port must be a number between 1 and 65535, not %r" % (port,))
        if not 1 <= port <= 65535:
            raise RansomeyeError("port must be between 1 and 65535, not %d" % port)
        if not server:
            raise RansomeyeError("server is required to send")
        if timeout is None or float(timeout) <= 0:
            raise RansomeyeError("timeout must be a positive number of seconds")
        if client_key and not client_cert:
            raise RansomeyeError("client_key needs client_cert")
        target = cls(server, port, protocol, float(timeout), ca_cert, client_cert, client_key,
                     bool(validate_certs), tls_server_name)
        if protocol == "tls":
            target.ssl_context()  # fail early on an unreadable CA or key
        return target

    def describe(self) -> str:
        return "%s://%s:%d" % (self.protocol, self.server, self.port)

    def ssl_context(self) -> ssl.SSLContext:
        for label, path in (("ca_cert", self.ca_cert), ("client_cert", self.client_cert), ("client_key", self.client_key)):
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise RansomeyeError("%s %s is not a readable file" % (label, path))
        try:
            context = ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else ssl.create_default_context()
        except (ssl.SSLError, OSError) as exc:
            raise RansomeyeError("ca_cert %s could not be loaded as a PEM CA certificate: %s" % (self.ca_cert, exc))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            try:
                context.load_cert_chain(self.client_cert, self.client_key)
            except (ssl.SSLError, OSError) as exc:
                raise RansomeyeError("client certificate %s (key %s) could not be loaded: %s"
                                     % (self.client_cert, self.client_key or self.client_cert, exc))
        return context


class Sender:
    """An open connection to a receiver; ``send(message)`` frames and writes one message.

    ``with Sender(target) as sender: sender.send(text)``. Connection and send
    failures raise ``ReceiverError`` so that callers can spool.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sock: t.Optional[socket.socket] = None

    def __enter__(self) -> "Sender":
        self.open()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()

    def open(self) -> None:
        target = self.target
        kind = socket.SOCK_DGRAM if target.protocol == "udp" else socket.SOCK_STREAM
        try:
            infos = socket.getaddrinfo(target.server, target.port, 0, kind)
        except (socket.gaierror, UnicodeError) as exc:
            raise ReceiverError("cannot resolve %s: %s" % (target.server, exc))
        last: t.Optional[Exception] = None
        for family, socktype, proto, _name, address in infos:
            sock = socket.socket(family, socktype, proto)
            sock.settimeout(target.timeout)
            try:
                sock.connect(address)
                if target.protocol == "tls":
                    context = target.ssl_context()
                    sock = context.wrap_socket(sock, server_hostname=target.tls_server_name or target.server)
                self.sock = sock
                return
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise ReceiverError("TLS verification of %s failed: %s" % (target.describe(), exc.verify_message or exc))
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                last = exc
        raise ReceiverError("cannot connect to %s: %s" % (target.describe(), last))

    def send(self, message: str) -> None:
        if self.sock is None:
            raise ReceiverError("not connected")
        data = frame(message, self.target.protocol)
        try:
            if self.target.protocol == "udp":
                self.sock.send(data)
            else:
                self.sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ReceiverError("sending to %s failed: %s" % (self.target.describe(), exc))

    def confirm(self) -> None:
        """End the session and wait until the receiver has read everything (TCP/TLS) and closed its side.

        Octet-counted syslog has no application acknowledgement; a receiver closes
        its side only after reading up to our end of stream, so its EOF is the
        best confirmation the transport gives. UDP has none: this is a no-op.
        Raises ReceiverError when the receiver resets or does not answer in time;
        the caller then keeps the session's messages queued.
        """
        if self.sock is None:
            raise ReceiverError("not connected")
        if self.target.protocol == "udp":
            return
        sock = self.sock
        try:
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock = sock.unwrap()  # close_notify both ways
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    return  # the receiver closed the connection after reading our stream
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass  # a syslog receiver sends nothing; wait for its EOF
        except socket.timeout:
            raise ReceiverError("%s did not confirm the end of the session within %ss"
                                % (self.target.describe(), self.target.timeout))
        except (OSError, ssl.SSLError) as exc:
            raise ReceiverError("session with %s broke before it was confirmed: %s" % (self.target.describe(), exc))
        finally:
            self.sock = sock
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                if isinstance(self.sock, ssl.SSLSocket):
                    try:
                        self.sock = self.sock.unwrap()  # close_notify, so the receiver sees a clean end
                    except (OSError, ValueError):
                        pass
                if self.target.protocol != "udp":
                    try:
                        self.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                self.sock.close()
            finally:
                self.sock = None


class ReceiverError(RansomeyeError):
    """The receiver could not be reached or refused the data (the caller may spool)."""
