"""Run playbooks and single modules against localhost and return structured results.

``run_module`` goes through ansible-playbook (the real controller, check and
diff mode, no_log censoring). ``run_module_direct`` executes the module file as
Ansible's own debugging path does (python module.py args.json): much faster,
for tests that call a module dozens of times.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import typing as t

from tests.harness.paths import COLLECTIONS, REPO, ensure_collection_link

CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")


class PlaybookRun(t.NamedTuple):
    rc: int
    stdout: str
    stderr: str
    results: t.List[dict]
    stats: dict

    def task(self, name: str, host: t.Optional[str] = None) -> dict:
        """The last result of the task called ``name`` (and ``host``); KeyError when absent.

        A task inside a role is also found by its bare name (without ``role : ``).
        """
        for record in reversed(self.results):
            named = record["task"] == name or record["task"].endswith(" : " + name)
            if named and (host is None or record["host"] == host):
                return record
        raise KeyError("no result for task %r; tasks: %s" % (name, [r["task"] for r in self.results]))

    def failed(self) -> t.List[dict]:
        return [r for r in self.results if r["status"] in ("failed", "unreachable")
                and not r["result"].get("_ansible_ignore_errors")]


def ansible_env(extra: t.Optional[dict] = None, home: t.Optional[str] = None) -> dict:
    ensure_collection_link()
    env = dict(os.environ)
    env.update(
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_CALLBACK_PLUGINS=CALLBACK_DIR,
        ANSIBLE_CALLBACKS_ENABLED="ransomeye_recorder",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_ROLES_PATH=os.path.join(REPO, "roles"),
        PYTHONPATH=COLLECTIONS + os.pathsep + env.get("PYTHONPATH", ""),
    )
    if home:
        env["ANSIBLE_HOME"] = home
        env["ANSIBLE_LOCAL_TEMP"] = os.path.join(home, "tmp")
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if extra:
        env.update(extra)
    return env


LOCAL_INVENTORY = "localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable


def run_playbook(
    playbook: str,
    extra_vars: t.Optional[dict] = None,
    inventory: t.Optional[str] = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    env: t.Optional[dict] = None,
    args: t.Sequence[str] = (),
    timeout: int = 900,
) -> PlaybookRun:
    """Run ``ansible-playbook``; ``inventory`` is a path, or None for local-connection localhost."""
    with tempfile.TemporaryDirectory(prefix="re-play-") as tmp:
        record = os.path.join(tmp, "record.jsonl")
        if inventory is None:
            inventory = os.path.join(tmp, "inventory.ini")
            with open(inventory, "w") as handle:
                handle.write(LOCAL_INVENTORY)
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, playbook]
        if extra_vars:
            vars_file = os.path.join(tmp, "extra_vars.json")
            with open(vars_file, "w") as handle:
                json.dump(extra_vars, handle)
            argv += ["-e", "@" + vars_file]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        argv += list(args)
        run_env = ansible_env(dict(env or {}, RANSOMEYE_RECORD_FILE=record), home=os.path.join(tmp, "home"))
        proc = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=timeout, cwd=tmp, check=False)
        results, stats = [], {}
        if os.path.exists(record):
            with open(record, encoding="utf-8") as handle:
                for line in handle:
                    item = json.loads(line)
                    if item["status"] == "stats":
                        stats = item["stats"]
                    else:
                        results.append(item)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, results, stats)


def run_module(
    module: str,
    module_args: t.Optional[dict] = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    env: t.Optional[dict] = None,
) -> dict:
    """Run one module (``ransomeye_backup`` or an FQCN) through ansible-playbook; return its result.

    The returned dict is the module result plus ``_rc`` (ansible-playbook's exit
    code) and ``_stdout`` (the whole controller output, for leak checks).
    """
    fqcn = module if "." in module else "ransomeye.ops." + module
    play = [{
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "under test", fqcn: module_args or {}, "ignore_errors": True}],
    }]
    with tempfile.TemporaryDirectory(prefix="re-mod-") as tmp:
        playbook = os.path.join(tmp, "play.yml")
        with open(playbook, "w") as handle:
            json.dump(play, handle)  # JSON is YAML; no templating surprises from quoting
        run = run_playbook(playbook, check=check, diff=diff, verbosity=verbosity, env=env)
    try:
        record = run.task("under test")
    except KeyError:
        raise AssertionError("module produced no result:\n%s\n%s" % (run.stdout, run.stderr))
    result = dict(record["result"])
    if record["status"] in ("failed", "unreachable"):
        # Failures raised by action plugins carry no "failed" key in the callback's result.
        result["failed"] = True
    result["_rc"] = run.rc
    result["_stdout"] = run.stdout + run.stderr
    return result


def run_module_direct(
    module: str,
    module_args: t.Optional[dict] = None,
    check: bool = False,
    diff: bool = False,
    env: t.Optional[dict] = None,
    timeout: int = 600,
    cwd: t.Optional[str] = None,
) -> dict:
    """Execute ``plugins/modules/<module>.py`` directly with an args file (in ``cwd``); return its JSON result."""
    name = module.split(".")[-1]
    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    args = dict(module_args or {})
    args["_ansible_check_mode"] = check
    args["_ansible_diff"] = diff
    args["_ansible_tmpdir"] = None
    args["_ansible_remote_tmp"] = tempfile.gettempdir()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
        args_file = handle.name
    try:
        proc = subprocess.run([sys.executable, path, args_file], capture_output=True, text=True,
                              env=ansible_env(env), timeout=timeout, check=False, cwd=cwd)
    finally:
        os.unlink(args_file)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc %d):\nstdout: %s\nstderr: %s"
                             % (name, proc.returncode, proc.stdout, proc.stderr))
    result["_rc"] = proc.returncode
    result["_stderr"] = proc.stderr
    return result
