"""A real rsyslog receiver for tests: loopback UDP, TCP, TLS (anonymous and client-certificate) inputs.

rsyslogd runs in the foreground with its own config under a temp directory.
Every message it receives is written by omfile as one JSON line with the
fields rsyslog parsed (pri, timestamp, hostname, app-name, procid, msgid,
structured-data, msg, plus the input it came in on), so tests compare what a
real server parsed with what was sent. omfile writes asynchronously: use
``wait_for``.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key_pem(key: t.Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def make_pki(directory: str) -> t.Dict[str, str]:
    """A test CA, a server cert for localhost/127.0.0.1 and a client cert; returns file paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ransomeye-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": os.path.join(directory, "ca.pem")}
    with open(paths["ca"], "wb") as handle:
        handle.write(ca.public_bytes(serialization.Encoding.PEM))
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost" if role == "server" else "ransomeye-client")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[role + "_cert"] = os.path.join(directory, role + ".crt")
        paths[role + "_key"] = os.path.join(directory, role + ".key")
        with open(paths[role + "_cert"], "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(paths[role + "_key"], "wb") as handle:
            handle.write(_key_pem(key))
        os.chmod(paths[role + "_key"], 0o600)
    return paths


_CONFIG = '''
global(
  workDirectory="{work}"
  parser.escapeControlCharactersOnReceive="off"
  maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imudp")
module(load="imtcp" maxSessions="50")
input(type="imudp" address="127.0.0.1" port="{udp}" name="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" name="tcp" streamDriver.name="ptcp" streamDriver.mode="0")
input(type="imtcp" address="127.0.0.1" port="{tls}" name="tls" streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" name="mtls" streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="x509/certvalid")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="protocol_version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="syslogtag" name="syslogtag" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="raw" name="rawmsg" format="jsonf")
}}
action(type="omfile" file="{out}" template="fields" flushOnTXEnd="on" asyncWriting="off")
'''


class Rsyslog:
    """``start()``/``stop()`` a foreground rsyslogd; ``records()`` parses its output file."""

    def __init__(self, base: t.Optional[str] = None) -> None:
        self.base = base or tempfile.mkdtemp(prefix="re-rsyslog-")
        self.work = os.path.join(self.base, "work")
        os.makedirs(self.work, exist_ok=True)
        self.pki = make_pki(self.base)
        self.out = os.path.join(self.base, "received.jsonl")
        self.conf = os.path.join(self.base, "rsyslog.conf")
        self.pidfile = os.path.join(self.base, "rsyslogd.pid")
        self.log = os.path.join(self.base, "rsyslogd.log")
        self.ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(), "tls": free_port(), "mtls": free_port()}
        self.proc: t.Optional[subprocess.Popen] = None
        with open(self.conf, "w") as handle:
            handle.write(_CONFIG.format(work=self.work, ca=self.pki["ca"], cert=self.pki["server_cert"],
                                        key=self.pki["server_key"], out=self.out, **self.ports))

    def check_config(self) -> None:
        proc = subprocess.run([RSYSLOGD, "-N1", "-f", self.conf], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("rsyslog config invalid:\n%s%s" % (proc.stdout, proc.stderr))

    def start(self, timeout: float = 15.0) -> "Rsyslog":
        self.check_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        pending = ["tcp", "tls", "mtls"]
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError("rsyslogd exited with %s: %s" % (self.proc.returncode, self.log_text()))
            port = self.ports[pending[0]]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("rsyslogd did not listen on %s: %s" % (port, self.log_text()))
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def records(self) -> t.List[dict]:
        try:
            with open(self.out, encoding="utf-8") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []

    def wait_for(self, predicate: t.Callable[[dict], bool], count: int = 1, timeout: float = 10.0,
                 settle: float = 0.0) -> t.List[dict]:
        """Records matching ``predicate`` once there are at least ``count`` (then wait ``settle`` for extras)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if predicate(r)]
            if len(found) >= count:
                if settle:
                    time.sleep(settle)
                    found = [r for r in self.records() if predicate(r)]
                return found
            if time.monotonic() > deadline:
                raise AssertionError("rsyslog received %d matching records, expected %d; all records: %s\nlog: %s"
                                     % (len(found), count, self.records()[-20:], self.log_text()[-2000:]))
            time.sleep(0.05)
