"""Property-based fuzz of every module's options: whatever the values, a clear result, no traceback, no hang.

Each module runs in-process (its real ``main()``, as Ansible would run it,
with the arguments handed over through ansible's own ``_ANSIBLE_ARGS``), in
check mode, against a sandbox directory: path options point into it or are
hostile spellings (``//``, ``..``, a FIFO, a symlink, NUL bytes). The
connection options always name a closed loopback port, so nothing waits on a
network. Each call is bounded by SIGALRM; the whole fuzz stays well under a
minute (derandomized, so a failure reproduces).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible.module_utils import basic

from ansible_collections.ransomeye.ops.plugins.module_utils import _module
from tests.harness.paths import REPO

MODULES = sorted(n[:-3] for n in os.listdir(os.path.join(REPO, "plugins", "modules")) if n.startswith("ransomeye_"))
PER_CALL_SECONDS = 8
EXAMPLES = 30
FIXED = dict(login_host="127.0.0.1", login_port=1, connect_timeout=1)  # a closed port: refused at once

SANDBOX = "/tmp/ransomeye-fuzz-%d" % os.getuid()


class _Captured(Exception):
    def __init__(self, spec):
        super().__init__("captured")
        self.spec = spec


class _Hang(Exception):
    pass


def _spec_of(name):
    """The module's full argument spec, read by stopping its RansomeyeModule before it parses anything."""
    mod = importlib.import_module("ansible_collections.ransomeye.ops.plugins.modules." + name)
    real_init = _module.RansomeyeModule.__init__

    def capture(self, argument_spec, shared_specs=(), **kwargs):
        spec = {}
        for shared in shared_specs:
            spec.update(shared)
        spec.update(argument_spec)
        raise _Captured(spec)

    _module.RansomeyeModule.__init__ = capture
    try:
        mod.main()
    except _Captured as captured:
        return mod, captured.spec
    finally:
        _module.RansomeyeModule.__init__ = real_init
    raise AssertionError("%s did not build a RansomeyeModule" % name)


def _sandbox():
    os.makedirs(os.path.join(SANDBOX, "dir", "sub"), exist_ok=True)
    fifo = os.path.join(SANDBOX, "fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    link = os.path.join(SANDBOX, "link")
    if not os.path.lexists(link):
        os.symlink("/etc", link)
    with open(os.path.join(SANDBOX, "dir", "file.env"), "w") as handle:
        handle.write("DB_PASSWORD=x\n")


HOSTILE_TEXT = ["", " ", "a b", "//", "../..", "x\x00y", "\udcff", "é", "%s%n", "{{ lookup('env','HOME') }}",
                "host=127.0.0.1 port=1 dbname=x", "postgresql://u:p@127.0.0.1:1/x", "-1", "1e999", "nan", "30d",
                "x" * 300]
PATHS = [SANDBOX + "/dir", SANDBOX + "/dir/file.env", SANDBOX + "/fifo", SANDBOX + "/link", SANDBOX + "/missing",
         SANDBOX + "//dir/../dir", SANDBOX + "/dir/sub/../../dir", "relative/path", "", SANDBOX + "/dir/\udcff"]
TEXT = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12))
INTS = st.one_of(st.sampled_from([0, -1, 1, 2 ** 31, -(2 ** 63), 10 ** 12]), st.integers(-(10 ** 7), 10 ** 7))
SCALARS = st.one_of(TEXT, INTS, st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())


def _strategy(option, depth=0):
    kind = option.get("type", "str")
    if option.get("choices"):
        values = list(option["choices"])
        base = st.sampled_from(values + ["bogus"])
        return st.lists(base, max_size=3) if kind == "list" else base
    if kind == "path":
        return st.one_of(st.sampled_from(PATHS), TEXT)
    if kind == "int":
        return st.one_of(INTS, st.sampled_from(["12", "x", "1.5"]))
    if kind == "float":
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), INTS, st.sampled_from(["x"]))
    if kind == "bool":
        return st.one_of(st.booleans(), st.sampled_from(["yes", "maybe", 2]))
    if kind == "list":
        element = dict(type=option.get("elements", "str"))
        if option.get("options") and depth < 2:
            element = dict(type="dict", options=option["options"])
        return st.one_of(st.lists(_strategy(element, depth + 1), max_size=3), st.sampled_from(["a,b", ""]))
    if kind == "dict":
        if option.get("options") and depth < 2:
            return st.fixed_dictionaries({}, optional={k: _strategy(v, depth + 1) for k, v in option["options"].items()})
        return st.dictionaries(st.sampled_from(["a", "b", "shared_buffers", "max_connections", "workers", " ", ""]),
                               SCALARS, max_size=3)
    return SCALARS if kind == "raw" else TEXT


def _args_strategy(spec):
    optional = {}
    for name, option in spec.items():
        if name in FIXED or option.get("no_log") and option.get("type", "str") == "str" and name != "login_password":
            continue
        optional[name] = _strategy(option)
    return st.fixed_dictionaries({}, optional=optional)


def _run_in_process(mod, args):
    """(result dict, None) or (None, the exception a module let escape)."""
    args = dict(args, **FIXED, _ansible_check_mode=True, _ansible_diff=True, _ansible_tmpdir=None,
                _ansible_remote_tmp=SANDBOX, _ansible_keep_remote_files=False)
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": args}, default=str)  # \udcff escapes, as the controller sends them
    basic._ANSIBLE_ARGS = payload.encode("ascii")
    basic._ANSIBLE_PROFILE = "legacy"  # ansible-core 2.19 reads it; older versions ignore the attribute
    out = io.StringIO()

    def alarm(_signum, _frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(PER_CALL_SECONDS)
    cwd = os.getcwd()
    os.chdir(SANDBOX)  # relative paths (and report files an info module writes) land in the sandbox
    try:
        with contextlib.redirect_stdout(out):
            mod.main()
    except SystemExit:
        pass
    except _Hang:
        return None, "no result within %d s (hang)" % PER_CALL_SECONDS
    except BaseException as exc:  # the property under test: nothing but a result escapes
        return None, "%s: %s" % (type(exc).__name__, exc)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        basic._ANSIBLE_ARGS = None
        os.chdir(cwd)
    text = out.getvalue()
    try:
        return json.loads(text[text.index("{"):]), None
    except ValueError:
        return None, "no JSON result: %r" % text[-500:]


@pytest.mark.parametrize("name", MODULES)
def test_any_option_values_give_a_result_never_a_traceback_or_a_hang(name):
    _sandbox()
    mod, spec = _spec_of(name)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_args_strategy(spec))
    def fuzz(args):
        result, escaped = _run_in_process(mod, args)
        # ansible-core's own parameter decoder may refuse an undecodable escape before any module code runs
        # (depending on what else the process loaded); that input never reaches a module, so it proves nothing here.
        assume(escaped != "Exception: Failed to decode JSON module parameters.")
        assert escaped is None, "%s with %r: %s" % (name, args, escaped)
        assert "Traceback" not in str(result.get("msg", "")) and "exception" not in result or result.get("failed"), \
            result
        if result.get("failed"):
            assert isinstance(result.get("msg"), str) and result["msg"], result

    fuzz()


def test_a_value_that_is_not_utf8_fails_by_name_not_in_a_traceback(run_module_direct, tmp_path):
    result = run_module_direct("ransomeye_disk_clean", dict(roots=[str(tmp_path) + "/\udcff"]), check=True)
    assert result.get("failed") is True and "roots" in result["msg"] and "not UTF-8" in result["msg"], result
    assert "Traceback" not in result["_stderr"]
