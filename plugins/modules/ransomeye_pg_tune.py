#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_pg_tune
short_description: Tune PostgreSQL with PGTune's formulas and apply the result idempotently
version_added: "0.1.0"
description:
  - Computes the settings that PGTune (le0pard/pgtune, in its 2026 formulas) prints for the host's memory,
    CPUs, workload and storage, formatted exactly as PGTune prints them (memory in the largest unit that
    divides exactly, V(kB), V(MB) or V(GB)); settings PGTune leaves out are left out.
  - Memory and CPUs are detected when omitted, from psutil and the cgroup memory limit, and from the CPU
    affinity and the cgroup CPU quota (cgroup v1 and v2).
  - With O(apply=alter_system) the settings are written with C(ALTER SYSTEM), values quoted by psycopg2.
    Idempotency compares with the B(pending) configuration (C(pg_file_settings), which includes
    C(postgresql.auto.conf)), so a restart-only parameter already written is not changed again before the
    restart. The configuration is reloaded (C(pg_reload_conf())) when a reloadable parameter changed.
  - With O(apply=file) a complete, commented include file for C(conf.d) is written atomically to O(dest).
  - With O(apply=none) the settings are only computed and returned.
author:
  - ransomeye.ops contributors (@ransomeye)
extends_documentation_fragment:
  - ransomeye.ops.postgres
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.diff
options:
  memory:
    description:
      - Memory to tune for, such as V(16GB) or V(512MB) (binary units, as PGTune uses).
      - Detected when omitted, as the smaller of the physical memory and the cgroup memory limit, rounded down
        to whole MB (PGTune's finest input unit).
    type: str
  cpus:
    description:
      - Number of CPUs. Detected when omitted from the CPU affinity and the cgroup CPU quota.
    type: int
  db_type:
    description:
      - Workload, as PGTune names it.
    type: str
    choices: [web, oltp, dw, desktop, mixed]
    default: mixed
  storage:
    description:
      - Data storage type.
    type: str
    choices: [ssd, hdd, san, nvme]
    default: ssd
  max_connections:
    description:
      - Maximum number of connections. PGTune's default for O(db_type) when omitted
        (web 200, oltp 300, dw 40, desktop 20, mixed 100).
    type: int
  pg_version:
    description:
      - PostgreSQL major version. Taken from the server when connected; 18 (PGTune's default) otherwise.
    type: int
  os_type:
    description:
      - Operating system of the database server.
    type: str
    choices: [linux, windows, mac]
    default: linux
  data_size:
    description:
      - Size of the data compared with the memory.
    type: str
    choices: [less_than_ram, up_to_3x_ram, more_than_3x_ram]
    default: up_to_3x_ram
  overrides:
    description:
      - Extra parameters pinned by the operator; they win over the computed ones.
      - Booleans are written as V(on) or V(off).
    type: dict
    default: {}
  apply:
    description:
      - How to apply the settings. Defaults to V(file) when O(dest) is set, else V(alter_system).
    type: str
    choices: [alter_system, file, none]
  data_dir:
    description:
      - Data directory of the cluster, for O(apply=file). Before the file is put in place, the server's own
        C(postgres) binary (of the version in C(PG_VERSION)) reads it as its configuration, as the owner of this
        directory; a file it refuses (unknown parameter, invalid value) is never written.
      - Without it, the check runs against an empty directory as the C(postgres) user.
    type: path
    version_added: "0.2.0"
  dest:
    description:
      - Include file to write with O(apply=file), for example C(/etc/postgresql/15/main/conf.d/ransomeye-tune.conf).
    type: path
  backup:
    description:
      - With O(apply=file), keep a timestamped copy of the previous file.
    type: bool
    default: false
  reload:
    description:
      - With O(apply=alter_system), call C(pg_reload_conf()) when a reloadable parameter changed.
    type: bool
    default: true
  cgroup_root:
    description:
      - Mount point of the cgroup file system, read for the CPU quota and memory limit.
    type: path
    default: /sys/fs/cgroup
notes:
  - Restart-only parameters such as C(shared_buffers) take effect only after a restart; the module reports
    RV(restart_required) and never restarts the server itself.
seealso:
  - name: PGTune
    description: The public calculator whose formulas this module follows.
    link: https://pgtune.leopard.in.ua/
'''

EXAMPLES = r'''
- name: Tune the local cluster for the detected hardware and apply with ALTER SYSTEM
  ransomeye.ops.ransomeye_pg_tune:
    db_type: mixed
    storage: ssd
    login_host: 127.0.0.1
    login_password: "{{ ransomeye_db_admin_password }}"
  register: tune

- name: Compute only, for a 64GB, 16 CPU OLTP server on NVMe
  ransomeye.ops.ransomeye_pg_tune:
    memory: 64GB
    cpus: 16
    db_type: oltp
    storage: nvme
    pg_version: 17
    apply: none

- name: Write a conf.d include file instead, pinning one setting
  ransomeye.ops.ransomeye_pg_tune:
    memory: 8GB
    cpus: 4
    pg_version: 15
    dest: /etc/postgresql/15/main/conf.d/ransomeye-tune.conf
    overrides:
      max_connections: 150
    backup: true
'''

RETURN = r'''
settings:
  description: Every computed setting (after O(overrides)), name to the value as PGTune prints it.
  returned: always
  type: dict
  sample: {"max_connections": "100", "shared_buffers": "4GB", "work_mem": "10485kB"}
changed_settings:
  description: Settings whose pending value differs from the wanted one, with the value before and after.
  returned: always
  type: dict
  sample: {"shared_buffers": {"before": "128MB", "after": "4GB", "context": "postmaster"}}
restart_required:
  description: A restart-only parameter's wanted value is not the running one (also before the restart on a second run).
  returned: always
  type: bool
reload_required:
  description: A reloadable parameter changed (the module reloads itself unless O(reload=false) or check mode).
  returned: always
  type: bool
reloaded:
  description: Whether the module called C(pg_reload_conf()).
  returned: always
  type: bool
inputs:
  description: The inputs used, with where the detected ones came from.
  returned: always
  type: dict
  sample: {"memory": 17179869184, "memory_source": "given", "cpus": 4, "cpus_source": "CPU affinity"}
warnings_pgtune:
  description: The warning lines PGTune prints above its output for these inputs.
  returned: always
  type: list
  elements: str
reasoning:
  description: Where the main numbers come from.
  returned: always
  type: dict
dest:
  description: The include file written with O(apply=file).
  returned: when O(apply=file)
  type: str
backup_file:
  description: The copy of the previous include file.
  returned: when O(backup=true) and the file changed
  type: str
'''

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils import _postgres, _pgtune, _hardware, _pg_settings, _units
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, read_if_exists


def _override_value(name: str, value: t.Any) -> str:
    _pg_settings.check_name(name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or isinstance(value, (dict, list)):
        raise RansomeyeError("overrides.%s must be a string, number or boolean" % name)
    return str(value)


def _inputs(module: RansomeyeModule) -> t.Tuple[dict, dict]:
    params = module.params
    found = {}
    if params["memory"] is not None:
        memory = _units.parse_size(params["memory"], "memory")
        found["memory_source"] = "given"
    else:
        detected = _hardware.detect_memory(params["cgroup_root"])
        # PGTune takes whole MB at the finest; round the detected amount down to one.
        memory = detected.value // (1024 * 1024) * (1024 * 1024)
        found["memory_source"] = detected.reason + ", rounded down to whole MB as PGTune takes it"
    if params["cpus"] is not None:
        cpus = params["cpus"]
        found["cpus_source"] = "given"
    else:
        detected = _hardware.detect_cpus(params["cgroup_root"])
        cpus = detected.value
        found["cpus_source"] = detected.reason
    if cpus < 1:
        raise RansomeyeError("cpus must be a whole number of at least 1, not %d" % cpus)
    found.update(memory=memory, cpus=cpus)
    return found, dict(memory=memory, cpus=cpus)


def _pg_version(module: RansomeyeModule, conn: t.Any) -> t.Tuple[int, str]:
    if module.params["pg_version"] is not None:
        return module.params["pg_version"], "given"
    if conn is not None:
        return _postgres.server_major(conn), "server"
    return _pgtune.DEFAULT_PG_VERSION, "PGTune default (no server connection)"


def _apply_file(module: RansomeyeModule, settings: dict, inp: _pgtune.PgTuneInput, result: dict) -> None:
    dest = module.params["dest"]
    if not dest:
        raise RansomeyeError("apply=file needs dest, the include file to write")
    header = [
        "PostgreSQL settings computed by ransomeye.ops.ransomeye_pg_tune (PGTune formulas).",
        "Managed file: changes are overwritten. Include it from postgresql.conf (include_dir 'conf.d').",
        "Inputs: memory %s, cpus %s, db_type %s, storage %s, pg_version %s, os_type %s, data_size %s, "
        "max_connections %s" % (_pgtune.format_memory(inp.memory // 1024), inp.cpus, inp.db_type, inp.storage,
                                inp.pg_version, inp.os_type, inp.data_size, inp.max_connections or "default"),
    ] + _pgtune.warnings(inp)
    comments = dict((k, v) for k, v in result["reasoning"].items() if k in settings)
    content = _pg_settings.render_conf(settings, header, comments)
    old_bytes = read_if_exists(dest)
    old = old_bytes.decode("utf-8", "replace") if old_bytes is not None else None
    changed = old != content
    old_settings = _pg_settings.parse_conf(old or "")
    changes = {}
    for name, value in settings.items():
        if old_settings.get(name) != value:
            changes[name] = dict(before=old_settings.get(name), after=value,
                                 context="postmaster" if name in _pg_settings.STATIC_RESTART_SETTINGS else "reload")
    result.update(
        dest=dest,
        changed=changed,
        changed_settings=changes,
        restart_required=any(c["context"] == "postmaster" for c in changes.values()),
        reload_required=any(c["context"] != "postmaster" for c in changes.values()),
    )
    if module._diff:
        result["diff"] = dict(before=old or "", after=content, before_header=dest, after_header=dest)
    if changed:
        # The server itself judges the file, in check mode too: a file it refuses would stop the next start.
        _pg_settings.check_conf_with_server(content, module.params["data_dir"], inp.pg_version)
    if changed and not module.check_mode:
        backup_file = atomic_write(dest, content.encode("utf-8"), mode=0o644 if old is None else None,
                                   backup=module.params["backup"])
        if backup_file:
            result["backup_file"] = backup_file


def _apply_alter_system(module: RansomeyeModule, conn: t.Any, settings: dict, result: dict) -> None:
    current = _pg_settings.read_settings(conn, settings)
    _pg_settings.validate_wanted(current, settings, _postgres.server_major(conn))
    plan = _pg_settings.plan_alter_system(current, settings)
    for name in _pg_settings.overriding_sources(current, settings):
        module.warn("%s is set on the server's command line or environment (%s), which wins over ALTER SYSTEM; "
                    "change it there" % (name, current[name].source))
    result.update(
        changed=bool(plan.changes),
        changed_settings=plan.changes,
        restart_required=plan.restart_required,
        reload_required=plan.reload_required,
    )
    if module._diff:
        before = "".join("%s = %s\n" % (n, c["before"]) for n, c in plan.changes.items())
        after = "".join("%s = %s\n" % (n, c["after"]) for n, c in plan.changes.items())
        result["diff"] = dict(before=before, after=after, before_header="pending configuration",
                              after_header="ALTER SYSTEM")
    if module.check_mode:
        return
    _pg_settings.alter_system(conn, plan.changes, current)
    if plan.reload_required and module.params["reload"]:
        result["reloaded"] = _pg_settings.reload_conf(conn)


def tune(module: RansomeyeModule) -> dict:
    params = module.params
    apply_mode = params["apply"] or ("file" if params["dest"] else "alter_system")
    found, hw = _inputs(module)
    conn = None
    if apply_mode == "alter_system":
        _postgres.require_psycopg2(module)
        conn = _postgres.connect(_postgres.ConnInfo.from_params(params))
    elif params["pg_version"] is None and _postgres.HAS_PSYCOPG2:
        try:
            conn = _postgres.connect(_postgres.ConnInfo.from_params(params))
        except RansomeyeError:
            conn = None
    try:
        version, version_source = _pg_version(module, conn)
        inp = _pgtune.PgTuneInput(
            memory=hw["memory"], cpus=hw["cpus"], db_type=params["db_type"], storage=params["storage"],
            max_connections=params["max_connections"], pg_version=version, os_type=params["os_type"],
            data_size=params["data_size"],
        )
        settings = _pgtune.compute(inp)
        reasoning = _pgtune.explain(inp)
        for name, value in (params["overrides"] or {}).items():
            settings[name] = _override_value(name, value)
            reasoning[name] = "pinned by overrides"
        found.update(pg_version=version, pg_version_source=version_source, db_type=inp.db_type, storage=inp.storage,
                     os_type=inp.os_type, data_size=inp.data_size, max_connections=inp.max_connections or _pgtune.DEFAULT_MAX_CONNECTIONS[inp.db_type])
        result: t.Dict[str, t.Any] = dict(
            changed=False, settings=settings, changed_settings={}, restart_required=False, reload_required=False,
            reloaded=False, inputs=found, warnings_pgtune=_pgtune.warnings(inp), reasoning=reasoning,
        )
        if apply_mode == "file":
            _apply_file(module, settings, inp, result)
        elif apply_mode == "alter_system":
            try:
                _apply_alter_system(module, conn, settings, result)
            except _postgres.psycopg2.Error as exc:
                # e.g. a login that may not read pg_file_settings (superuser or pg_read_all_settings needed)
                text = str(exc).strip().splitlines()
                raise RansomeyeError("PostgreSQL refused to read or change the configuration: %s"
                                     % (text[0] if text else type(exc).__name__))
        return result
    finally:
        if conn is not None:
            conn.close()


def main() -> None:
    argument_spec = dict(
        memory=dict(type="str"),
        cpus=dict(type="int"),
        db_type=dict(type="str", default="mixed", choices=list(_pgtune.DB_TYPES)),
        storage=dict(type="str", default="ssd", choices=list(_pgtune.STORAGES)),
        max_connections=dict(type="int"),
        pg_version=dict(type="int"),
        os_type=dict(type="str", default="linux", choices=list(_pgtune.OS_TYPES)),
        data_size=dict(type="str", default="up_to_3x_ram", choices=list(_pgtune.DATA_SIZES)),
        overrides=dict(type="dict", default={}),
        apply=dict(type="str", choices=["alter_system", "file", "none"]),
        dest=dict(type="path"),
        data_dir=dict(type="path"),
        backup=dict(type="bool", default=False),
        reload=dict(type="bool", default=True),
        cgroup_root=dict(type="path", default=_hardware.CGROUP_ROOT),
    )
    module = RansomeyeModule(argument_spec, shared_specs=[_postgres.postgres_argument_spec()], supports_check_mode=True)
    module.run(tune)


if __name__ == "__main__":
    main()
