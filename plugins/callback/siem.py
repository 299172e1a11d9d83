# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: siem
type: notification
short_description: Send failed tasks, unreachable hosts and the play recap to a syslog/SIEM receiver
version_added: "0.1.0"
description:
  - When enabled (C(callbacks_enabled = ransomeye.ops.siem)), sends every failed task (not the ignored ones unless
    O(send_ignored)), every unreachable host, and a recap line per host at the end of the playbook to a syslog or SIEM
    receiver, through the same rendering and transports as M(ransomeye.ops.ransomeye_alert_forward).
  - "Never sends secrets: results of C(no_log) tasks arrive censored from Ansible and the plugin sends no task
    arguments, only the host, play, task and action names and the result's C(msg) (C(censored) for C(no_log) tasks)."
  - When the receiver is unreachable and O(spool_dir) is set, messages are queued and delivered first on the next
    send; otherwise a warning is shown. The plugin never fails the play.
author:
  - ransomeye.ops contributors (@ransomeye)
requirements:
  - enable it in ansible.cfg (C(callbacks_enabled)) or with E(ANSIBLE_CALLBACKS_ENABLED)
options:
  server:
    description: Receiver host name or address. Without it (and without O(spool_dir)) the plugin sends nothing.
    type: str
    env:
      - name: RANSOMEYE_SIEM_SERVER
    ini:
      - section: callback_ransomeye_siem
        key: server
  port:
    description: Receiver port (default 514 for udp/tcp, 6514 for tls).
    type: int
    env:
      - name: RANSOMEYE_SIEM_PORT
    ini:
      - section: callback_ransomeye_siem
        key: port
  protocol:
    description: Transport; V(tcp) and V(tls) use octet-counting framing.
    type: str
    default: udp
    choices: [udp, tcp, tls]
    env:
      - name: RANSOMEYE_SIEM_PROTOCOL
    ini:
      - section: callback_ransomeye_siem
        key: protocol
  format:
    description: Message format.
    type: str
    default: rfc5424
    choices: [rfc3164, rfc5424, cef]
    env:
      - name: RANSOMEYE_SIEM_FORMAT
    ini:
      - section: callback_ransomeye_siem
        key: format
  facility:
    description: Syslog facility by name or number.
    type: str
    default: local4
    env:
      - name: RANSOMEYE_SIEM_FACILITY
    ini:
      - section: callback_ransomeye_siem
        key: facility
  failure_severity:
    description: Severity of failed-task and unreachable-host messages.
    type: str
    default: err
    env:
      - name: RANSOMEYE_SIEM_FAILURE_SEVERITY
    ini:
      - section: callback_ransomeye_siem
        key: failure_severity
  recap_severity:
    description: Severity of recap messages (hosts with failures use O(failure_severity)).
    type: str
    default: info
    env:
      - name: RANSOMEYE_SIEM_RECAP_SEVERITY
    ini:
      - section: callback_ransomeye_siem
        key: recap_severity
  app_name:
    description: APP-NAME / TAG of the messages.
    type: str
    default: ansible
    env:
      - name: RANSOMEYE_SIEM_APP_NAME
    ini:
      - section: callback_ransomeye_siem
        key: app_name
  hostname:
    description: HOSTNAME field (default the controller's host name).
    type: str
    env:
      - name: RANSOMEYE_SIEM_HOSTNAME
    ini:
      - section: callback_ransomeye_siem
        key: hostname
  ca_cert:
    description: CA certificate file to verify the receiver (V(tls)).
    type: path
    env:
      - name: RANSOMEYE_SIEM_CA_CERT
    ini:
      - section: callback_ransomeye_siem
        key: ca_cert
  client_cert:
    description: Client certificate for V(tls).
    type: path
    env:
      - name: RANSOMEYE_SIEM_CLIENT_CERT
    ini:
      - section: callback_ransomeye_siem
        key: client_cert
  client_key:
    description: Key of O(client_cert).
    type: path
    env:
      - name: RANSOMEYE_SIEM_CLIENT_KEY
    ini:
      - section: callback_ransomeye_siem
        key: client_key
  tls_server_name:
    description: Name expected in the receiver's certificate (default O(server)).
    type: str
    env:
      - name: RANSOMEYE_SIEM_TLS_SERVER_NAME
    ini:
      - section: callback_ransomeye_siem
        key: tls_server_name
  timeout:
    description: Seconds to wait for connecting and sending.
    type: float
    default: 5
    env:
      - name: RANSOMEYE_SIEM_TIMEOUT
    ini:
      - section: callback_ransomeye_siem
        key: timeout
  spool_dir:
    description: Offline spool directory on the controller (bounded, ordered; shared format with the module).
    type: path
    env:
      - name: RANSOMEYE_SIEM_SPOOL_DIR
    ini:
      - section: callback_ransomeye_siem
        key: spool_dir
  send_ignored:
    description: Also send failures of tasks with C(ignore_errors).
    type: bool
    default: false
    env:
      - name: RANSOMEYE_SIEM_SEND_IGNORED
    ini:
      - section: callback_ransomeye_siem
        key: send_ignored
  send_recap:
    description: Send one recap message per host at the end of the playbook.
    type: bool
    default: true
    env:
      - name: RANSOMEYE_SIEM_SEND_RECAP
    ini:
      - section: callback_ransomeye_siem
        key: send_recap
'''

import os

from ansible.plugins.callback import CallbackBase

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._spool import Spool, deliver
from ansible_collections.ransomeye.ops.plugins.module_utils._syslog import (
    Alert, Sender, Target, parse_facility, parse_severity, render,
)


def _text(value):
    """``value`` as valid UTF-8 text: undecodable bytes (surrogate escapes) become U+FFFD, never an exception."""
    if not isinstance(value, str):
        value = str(value)
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        errors = "surrogateescape" if _escapes_only(value) else "replace"
        return value.encode("utf-8", errors).decode("utf-8", "replace")


def _escapes_only(value):
    try:
        value.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
MAX_MSG = 2000


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "ransomeye.ops.siem"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display=display)
        self._target = None
        self._spool = None
        self._ready = False
        self._play = ""
        self._playbook = ""
        self._warned = False

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self.configure()

    def configure(self):
        """Validate the options once, at load time: a bad value is sanitised (and said so) or disables the plugin."""
        self._app_name = self._header_option("app_name", "ansible", 48)
        self._hostname = self._header_option("hostname", "", 255)
        try:
            self._facility = parse_facility(self.get_option("facility"))
            self._failure_severity = parse_severity(self.get_option("failure_severity"))
            self._recap_severity = parse_severity(self.get_option("recap_severity"))
            server = self.get_option("server")
            if server:
                self._target = Target.build(
                    server, self.get_option("port"), self.get_option("protocol"), self.get_option("timeout"),
                    self.get_option("ca_cert"), self.get_option("client_cert"), self.get_option("client_key"),
                    True, self.get_option("tls_server_name"),
                )
            if self.get_option("spool_dir"):
                self._spool = Spool(self.get_option("spool_dir"))
            self._ready = self._target is not None or self._spool is not None
            if not self._ready:
                self._display.warning("ransomeye.ops.siem: no server or spool_dir configured; sending nothing")
        except RansomeyeError as exc:
            self._ready = False
            self._display.warning("ransomeye.ops.siem is disabled: %s" % exc.msg)

    def _header_option(self, name, default, limit):
        """A syslog header field (RFC 5424 PRINTUSASCII, no spaces): invalid characters become ``_``, with a warning.

        Checked here rather than per alert: a value the renderer refuses used
        to drop every alert of the run behind one warning.
        """
        value = self.get_option(name) or default
        if not isinstance(value, str):
            value = str(value)
        clean = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
        if clean != value:
            self._display.warning("ransomeye.ops.siem: %s %r is not 1 to %d printable ASCII characters without "
                                  "spaces; sending %r instead (fix %s in the callback configuration)"
                                  % (name, value, limit, clean, name))
        return clean

    # -- sending ------------------------------------------------------------------
    def _send(self, message, severity, msgid, metadata):
        if not self._ready:
            return
        alert = Alert(
            message=_text(message),
            facility=self._facility,
            severity=severity,
            hostname=self._hostname,
            app_name=self._app_name,
            procid=str(os.getpid()),
            msgid=msgid,
            metadata=dict((_text(k), _text(v) if isinstance(v, str) else v) for k, v in metadata.items()),
        )
        try:
            try:
                rendered = render(alert, self.get_option("format"))
            except RansomeyeError as exc:
                # Spool rather than drop: the message alone, with our own header fields, always renders.
                self._display.warning("ransomeye.ops.siem: alert rendered without metadata: %s" % exc.msg)
                rendered = render(alert._replace(metadata={}, hostname="", app_name="ansible"),
                                  self.get_option("format"))
            target = self._target
            result = deliver([rendered], (lambda: Sender(target)) if target is not None else None, self._spool)
            if result.error and not self._warned:
                self._warned = True
                self._display.warning("ransomeye.ops.siem: %s (%d message(s) queued in %s)"
                                      % (result.error, result.queued_total, self.get_option("spool_dir")))
        except RansomeyeError as exc:
            self._display.warning("ransomeye.ops.siem could not send or queue a message: %s" % exc.msg)
        except Exception as exc:  # pylint: disable=broad-except
            # A notification plugin must never break the play.
            self._display.warning("ransomeye.ops.siem: unexpected %s: %s" % (type(exc).__name__, exc))

    @staticmethod
    def _no_log(result):
        return getattr(result._task, "no_log", False) is True or bool(result._result.get("_ansible_no_log")) \
            or "censored" in result._result

    @staticmethod
    def _result_msg(result):
        data = result._result
        task = result._task
        if getattr(task, "no_log", False) is True or data.get("_ansible_no_log") or "censored" in data:
            return data.get("censored") or CENSORED
        msg = data.get("msg") or data.get("stderr") or data.get("reason") or ""
        if not isinstance(msg, str):
            msg = str(msg)
        return msg[:MAX_MSG]

    def _task_metadata(self, result):
        task = result._task
        # A no_log task's name may be templated from a secret: its rendered name never leaves the controller.
        name = "(name hidden: no_log task)" if self._no_log(result) else task.get_name()
        return {
            "host": result._host.get_name(),
            "task": name,
            "action": task.action,
            "play": self._play,
            "playbook": self._playbook,
        }

    # -- events -------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(getattr(playbook, "_file_name", "") or "")

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors and not self.get_option("send_ignored"):
            return
        meta = self._task_metadata(result)
        msg = self._result_msg(result)
        meta["msg"] = msg
        self._send("task failed: %s on %s: %s" % (meta["task"], meta["host"], msg),
                   self._failure_severity, "TASK_FAILED", meta)

    def v2_runner_on_unreachable(self, result):
        meta = self._task_metadata(result)
        msg = self._result_msg(result)
        meta["msg"] = msg
        self._send("host unreachable: %s (task %s): %s" % (meta["host"], meta["task"], msg),
                   self._failure_severity, "HOST_UNREACHABLE", meta)

    def v2_playbook_on_stats(self, stats):
        if not self.get_option("send_recap"):
            return
        for host in sorted(stats.processed.keys()):
            summary = stats.summarize(host)
            bad = summary.get("failures", 0) or summary.get("unreachable", 0)
            meta = {"host": host, "playbook": self._playbook}
            keys = ("ok", "changed", "unreachable", "failures", "skipped", "rescued", "ignored")
            meta.update((key, int(summary.get(key, 0))) for key in keys)
            text = "play recap %s: %s" % (host, " ".join("%s=%d" % (key, meta[key]) for key in keys))
            self._send(text, self._failure_severity if bad else self._recap_severity, "PLAY_RECAP", meta)
