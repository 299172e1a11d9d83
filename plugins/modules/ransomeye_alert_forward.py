#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_alert_forward
short_description: Send a RansomEye alert to a syslog or SIEM receiver, with an offline spool
version_added: "0.1.0"
description:
  - Renders an alert as RFC 3164, RFC 5424 (metadata as structured data) or CEF and sends it over UDP, TCP (octet-counting
    framing, RFC 6587) or TLS (RFC 5425, CA verification, optional client certificate).
  - The timestamp comes from the local clock with its UTC offset; no NTP or name service is needed.
  - When the receiver cannot be reached (or no O(server) is given), the rendered alert goes into a bounded on-disk spool
    in O(spool_dir). Every later run first delivers the spool in order, then the new alert; O(flush=true) without a
    O(msg) only delivers the spool.
  - "Backlog and new alert go in one session. Over TCP and TLS the module then closes its side and waits until the
    receiver has read the whole stream and closed too; only then do the entries leave the spool. A receiver that is
    down, resets or does not confirm within O(timeout) loses nothing: the messages stay queued, in order. Each alert
    is therefore delivered exactly once when sessions complete; a session that breaks after the receiver read part of
    it is sent again (at least once, never lost). UDP has no confirmation (a lost datagram cannot be noticed); prefer
    TCP or TLS."
  - Nothing is dropped silently. When the spool is full the task fails and says so; the return values list what was sent
    and what was queued. With O(spool_when_full=drop) (a host with no SIEM) the new alert is dropped instead, counted in
    RV(dropped) and warned about; with O(spool_coalesce_key) a repeat of the newest queued alert is counted on it
    rather than queued again.
author:
  - ransomeye.ops contributors (@ransomeye)
attributes:
  check_mode:
    details: Renders the alert and reports what would be sent or queued; opens no connection and writes nothing.
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
options:
  server:
    description:
      - Host name or IP address of the receiver. Without it, the alert is queued in O(spool_dir).
    type: str
  port:
    description:
      - Port of the receiver, 1 to 65535. Defaults to 514 for V(udp) and V(tcp), 6514 for V(tls).
    type: int
  protocol:
    description:
      - Transport. V(tcp) and V(tls) use octet-counting framing. V(udp) sends one datagram per message, cut to
        65000 bytes.
    type: str
    choices: [udp, tcp, tls]
    default: udp
  format:
    description:
      - V(rfc3164) (BSD syslog, at most 1024 bytes, metadata appended as C(key="value") pairs), V(rfc5424) (metadata as
        structured data under O(sd_id)), or V(cef) (ArcSight CEF line carried as the MSG of an RFC 5424 message).
    type: str
    choices: [rfc3164, rfc5424, cef]
    default: rfc5424
  facility:
    description:
      - Syslog facility by name (V(local4), V(auth), ...) or number (0-23).
    type: str
    default: local4
  severity:
    description:
      - Syslog severity by name (V(emerg), V(alert), V(crit), V(err), V(warning), V(notice), V(info), V(debug)) or
        number (0-7).
    type: str
    default: warning
  hostname:
    description:
      - HOSTNAME field. Defaults to this host's name.
    type: str
  app_name:
    description:
      - APP-NAME (RFC 5424, at most 48 characters) and TAG (RFC 3164, cut to 32 characters).
    type: str
    default: ransomeye
  procid:
    description:
      - PROCID field (RFC 5424) or the C([pid]) part of the RFC 3164 TAG.
    type: str
  msgid:
    description:
      - MSGID field (RFC 5424, at most 32 characters); also the CEF signature id.
    type: str
  msg:
    description:
      - The alert text. Required unless O(flush=true).
      - Tasks may also spell it C(message), the name in the collection's interface. Ansible reserves C(message)
        as a module option name, so the collection's action plugin renames it to O(msg) before the module runs.
    type: str
  metadata:
    description:
      - Key/value pairs sent with the alert (RFC 5424 structured data, CEF extension, RFC 3164 C(key="value") pairs).
        Values that are not strings are sent as JSON. C("), C(\\) and C(]) are escaped as RFC 5424 requires.
    type: dict
    default: {}
  sd_id:
    description:
      - The SD-ID of the structured data element (C(name@private-enterprise-number)).
    type: str
    default: ransomeye@32473
  cef_vendor:
    description: CEF Device Vendor.
    type: str
    default: RansomEye
  cef_product:
    description: CEF Device Product.
    type: str
    default: RansomEye
  cef_version:
    description: CEF Device Version.
    type: str
    default: "1.0"
  cef_name:
    description: CEF Name. Defaults to the first line of O(msg).
    type: str
  ca_cert:
    description:
      - CA certificate(s) (PEM) that the receiver's certificate must chain to, for V(tls). Defaults to the system store.
    type: path
  client_cert:
    description:
      - Client certificate (PEM) presented to a receiver that requires one, for V(tls).
    type: path
  client_key:
    description:
      - Private key of O(client_cert) (PEM), when it is not in the same file.
    type: path
  validate_certs:
    description:
      - Verify the receiver's certificate and host name. Turn off only for tests.
    type: bool
    default: true
  tls_server_name:
    description:
      - Name expected in the receiver's certificate (and sent as SNI). Defaults to O(server).
    type: str
  timeout:
    description:
      - Seconds to wait for connecting and for each send.
    type: float
    default: 5
  spool_dir:
    description:
      - Directory of the offline spool (created 0700 when missing). Without it, an alert that cannot be sent fails the task.
    type: path
  spool_max_messages:
    description:
      - Most alerts the spool holds. Beyond it the task fails (the alert is not dropped silently).
    type: int
    default: 10000
  spool_max_bytes:
    description:
      - Most bytes the spool holds (C(16MB), C(512KB) or a number of bytes).
    type: str
    default: 16MB
  spool_coalesce_key:
    description:
      - A key for this alert (for example its host, status and failing checks). When the newest queued alert has the
        same key, no copy is queued; the queued one counts the repeat (C(repeats) in its spool entry). RV(coalesced)
        says so.
    type: str
    version_added: "0.2.0"
  spool_when_full:
    description:
      - V(fail) fails the task when the spool is full (nothing dropped silently). V(drop) drops the new alert, counts
        it (RV(dropped), kept until the spool is next delivered) and warns; for a host with no SIEM configured.
    type: str
    choices: [fail, drop]
    default: fail
    version_added: "0.2.0"
  flush:
    description:
      - Deliver the spool even when no O(msg) is given. The spool is always delivered first when the receiver is up.
    type: bool
    default: false
notes:
  - The spool keeps rendered messages, so a queued alert keeps its original timestamp. Entries are delivered in the order
    they were queued; a lock file stops two runs from delivering the same entry.
seealso:
  - name: RFC 5424 The Syslog Protocol
    description: Message format, structured data and its escaping.
    link: https://www.rfc-editor.org/rfc/rfc5424
  - name: RFC 5425 TLS Transport Mapping for Syslog
    description: Octet-counting framing over TLS.
    link: https://www.rfc-editor.org/rfc/rfc5425
  - module: ransomeye.ops.ransomeye_health_info
'''

EXAMPLES = r'''
- name: Forward a detection to the SIEM over TLS
  ransomeye.ops.ransomeye_alert_forward:
    server: siem.example.com
    protocol: tls
    ca_cert: /etc/ransomeye/tls/ca.crt
    client_cert: /etc/ransomeye/tls/client.crt
    client_key: /etc/ransomeye/tls/client.key
    severity: crit
    msgid: DETECTION
    msg: "Ransomware behaviour on host {{ inventory_hostname }}"
    metadata:
      rule: mass-rename
      files: 1432
    spool_dir: /var/spool/ransomeye/alerts

- name: Deliver whatever is queued
  ransomeye.ops.ransomeye_alert_forward:
    server: siem.example.com
    protocol: tcp
    port: 1514
    spool_dir: /var/spool/ransomeye/alerts
    flush: true

- name: CEF for ArcSight over UDP
  ransomeye.ops.ransomeye_alert_forward:
    server: 192.0.2.10
    format: cef
    msg: Health check critical
    metadata:
      status: critical
'''

RETURN = r'''
sent:
  description: Number of messages delivered in this run (spooled backlog plus the new alert).
  returned: always
  type: int
  sample: 3
sent_from_spool:
  description: How many of RV(sent) came from the spool.
  returned: always
  type: int
  sample: 2
queued:
  description: Number of messages waiting in the spool after this run (in check mode, that would wait).
  returned: always
  type: int
  sample: 0
spooled:
  description: Whether this run's alert went into the spool instead of to the receiver.
  returned: always
  type: bool
  sample: false
rendered:
  description: This run's alert as rendered, without transport framing (empty when only flushing).
  returned: always
  type: str
  sample: '<164>1 2026-11-27T17:41:28.123456+00:00 host ransomeye - DETECTION [ransomeye@32473 rule="x"] text'
coalesced:
  description: Whether this run's alert was counted as a repeat of the newest queued one (O(spool_coalesce_key)).
  returned: always
  type: bool
  version_added: "0.2.0"
dropped:
  description: Alerts dropped because the spool was full (O(spool_when_full=drop)) since it was last delivered.
  returned: always
  type: int
  version_added: "0.2.0"
receiver_error:
  description: Why the receiver could not be used, when it could not.
  returned: always
  type: str
  sample: "cannot connect to tcp://127.0.0.1:1514: [Errno 111] Connection refused"
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._spool import Spool, deliver
from ansible_collections.ransomeye.ops.plugins.module_utils._syslog import (
    FORMATS, PROTOCOLS, Alert, Sender, Target, parse_facility, parse_severity, render,
)
from ansible_collections.ransomeye.ops.plugins.module_utils._units import parse_size


def build_alert(params):
    return Alert(
        message=params["msg"] or "",
        facility=parse_facility(params["facility"]),
        severity=parse_severity(params["severity"]),
        hostname=params["hostname"] or "",
        app_name=params["app_name"] or "ransomeye",
        procid=params["procid"] or "",
        msgid=params["msgid"] or "",
        metadata=params["metadata"] or {},
        sd_id=params["sd_id"],
        cef_vendor=params["cef_vendor"],
        cef_product=params["cef_product"],
        cef_version=params["cef_version"],
        cef_name=params["cef_name"] or "",
    )


def forward(module):
    params = module.params
    alert = build_alert(params)  # validates facility and severity first
    if not params["msg"] and not params["flush"]:
        raise RansomeyeError("msg is required unless flush is true")
    rendered = render(alert, params["format"]) if params["msg"] else ""
    target = None
    if params["server"]:
        target = Target.build(
            params["server"], params["port"], params["protocol"], params["timeout"], params["ca_cert"],
            params["client_cert"], params["client_key"], params["validate_certs"], params["tls_server_name"],
        )
    elif params["port"] is not None and not 1 <= params["port"] <= 65535:
        raise RansomeyeError("port must be between 1 and 65535, not %d" % params["port"])
    spool = None
    if params["spool_dir"]:
        spool = Spool(params["spool_dir"], params["spool_max_messages"],
                      parse_size(params["spool_max_bytes"], "spool_max_bytes") or 1)
    if target is None and spool is None:
        raise RansomeyeError("set server (to send) or spool_dir (to queue), or both")
    messages = [rendered] if rendered else []

    if module.check_mode:
        backlog = spool.count() if spool is not None else 0
        return dict(changed=bool(messages or backlog), sent=0, sent_from_spool=0,
                    queued=backlog + (len(messages) if target is None else 0),
                    spooled=bool(messages) and target is None, rendered=rendered, receiver_error=None,
                    coalesced=False, dropped=0)

    open_sender = (lambda: Sender(target)) if target is not None else None
    result = deliver(messages, open_sender, spool, params["spool_coalesce_key"], params["spool_when_full"])
    if result.dropped:
        module.warn("alert spool %s is full: %d alert(s) dropped since it was last delivered; configure a SIEM "
                    "receiver (server) or raise spool_max_messages" % (params["spool_dir"], result.dropped))
    return dict(
        coalesced=bool(result.coalesced),
        dropped=result.dropped,
        changed=bool(result.sent or result.queued_now or result.coalesced),
        sent=len(result.sent),
        sent_from_spool=result.sent_from_spool,
        queued=result.queued_total,
        spooled=bool(result.queued_now),
        rendered=rendered,
        receiver_error=result.error,
    )


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            server=dict(type="str"),
            port=dict(type="int"),
            protocol=dict(type="str", default="udp", choices=list(PROTOCOLS)),
            format=dict(type="str", default="rfc5424", choices=list(FORMATS)),
            facility=dict(type="str", default="local4"),
            severity=dict(type="str", default="warning"),
            hostname=dict(type="str"),
            app_name=dict(type="str", default="ransomeye"),
            procid=dict(type="str"),
            msgid=dict(type="str"),
            msg=dict(type="str"),
            metadata=dict(type="dict", default={}),
            sd_id=dict(type="str", default="ransomeye@32473"),
            cef_vendor=dict(type="str", default="RansomEye"),
            cef_product=dict(type="str", default="RansomEye"),
            cef_version=dict(type="str", default="1.0"),
            cef_name=dict(type="str"),
            ca_cert=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path", no_log=False),
            validate_certs=dict(type="bool", default=True),
            tls_server_name=dict(type="str"),
            timeout=dict(type="float", default=5),
            spool_dir=dict(type="path"),
            spool_max_messages=dict(type="int", default=10000),
            spool_max_bytes=dict(type="str", default="16MB"),
            flush=dict(type="bool", default=False),
            spool_coalesce_key=dict(type="str", no_log=False),
            spool_when_full=dict(type="str", choices=["fail", "drop"], default="fail"),
        ),
        shared_specs=[ignored_connection_spec(exclude=("ca_cert",))],
        supports_check_mode=True,
    )
    module.run(forward)


if __name__ == "__main__":
    main()
