# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Point-in-time restore options of ransomeye_restore (argument spec: _pitr_restore.pitr_argument_spec).
    DOCUMENTATION = r'''
options:
  target_time:
    description:
      - Point-in-time restore to this time (ISO 8601 with a zone, for example V(2026-12-03T15:04:05Z)).
      - "A point-in-time restore (any C(target*) option) uses the newest verified base backup (component
        V(physical)) that ended before the target, replays the archived WAL (docs/BACKUP_FORMAT.md section 4) into the
        new O(data_dir) on a side port, checks it, and with O(live_data_dir) swaps it in (one-step rollback with
        O(state=rolled_back)). A target the archived WAL cannot reach fails before anything is touched and says how
        far replay can go."
    type: str
    version_added: "0.2.0"
  target_lsn:
    description:
      - Point-in-time restore up to this WAL location (V(0/16B3748)).
    type: str
    version_added: "0.2.0"
  target_xid:
    description:
      - Point-in-time restore up to this transaction id.
    type: str
    version_added: "0.2.0"
  target_name:
    description:
      - Point-in-time restore up to this named restore point (C(pg_create_restore_point), see
        M(ransomeye.ops.ransomeye_restore_point)).
    type: str
    version_added: "0.2.0"
  target:
    description:
      - V(latest) replays all the archived WAL (the newest point the archive holds).
    type: str
    choices: [latest]
    version_added: "0.2.0"
  stop_at_gap:
    description:
      - With O(target=latest), when a WAL segment is missing or fails verification while later WAL exists, recover
        up to the gap instead of failing (the result's C(reachable.first_missing) names the segment).
    type: bool
    default: false
    version_added: "0.2.0"
  target_exclusive:
    description:
      - Stop just before the target instead of just after it (C(recovery_target_inclusive=off)).
    type: bool
    default: false
    version_added: "0.2.0"
  target_timeline:
    description:
      - Timeline to recover along. Default V(current) (the base backup's timeline) for a target, V(latest) for
        O(target=latest).
    type: str
    choices: [current, latest]
    version_added: "0.2.0"
  data_dir:
    description:
      - New, empty (or absent) directory for the restored cluster. Required for a point-in-time restore. It must be
        on the same filesystem as O(live_data_dir).
    type: path
    version_added: "0.2.0"
  live_data_dir:
    description:
      - Data directory of the running cluster to replace. Given, the live cluster is stopped (C(pg_ctl stop -m fast),
        or through O(pg_service)) only after the recovered cluster passed its checks, renamed to
        C(<live_data_dir>.pre_pitr_<UTC time>), and the recovered one renamed into place and started. Without it, the
        recovered cluster is left stopped in O(data_dir).
      - With O(state=rolled_back), the newest C(<live_data_dir>.pre_pitr_*) is put back in place and started.
    type: path
    version_added: "0.2.0"
  side_port:
    description:
      - Port of the side instance that recovers and is checked (loopback only). Default is a free port.
    type: int
    version_added: "0.2.0"
  recovery_timeout:
    description:
      - Seconds the side instance may take to replay the WAL and accept connections.
    type: int
    default: 600
    version_added: "0.2.0"
  os_user:
    description:
      - OS user the PostgreSQL server runs as; the restored files belong to it and it runs the WAL program.
    type: str
    default: postgres
    version_added: "0.2.0"
  python:
    description:
      - Interpreter for the WAL program during recovery (needs C(cryptography)); default the one running the module.
    type: path
    version_added: "0.2.0"
  server_log:
    description:
      - Log file of the swapped-in cluster when it is started with C(pg_ctl). Default
        C(<parent of live_data_dir>/postgresql-pitr.log).
    type: path
    version_added: "0.2.0"
  pg_config_file:
    description:
      - The cluster's C(postgresql.conf) when it lives outside the data directory, as on Debian and Ubuntu
        (C(/etc/postgresql/<major>/<cluster>/postgresql.conf)). A base backup of such a cluster holds no
        configuration, so without this option the restore refuses before anything live is touched.
      - The side instance then starts with C(-c config_file=) this file and C(-c data_directory=) O(data_dir), with
        C(external_pid_file) cleared (and, before PostgreSQL 15, its own C(stats_temp_directory)), so that it shares
        nothing with the live server. A swapped-in cluster started with C(pg_ctl) uses it too.
    type: path
    version_added: "0.2.0"
  pg_service:
    description:
      - The systemd unit that runs the live cluster (for example C(postgresql@15-main) on Debian). Given, the swap
        and O(state=rolled_back) stop and start the live cluster with C(systemctl) instead of C(pg_ctl), so that the
        unit keeps tracking the server. Needs O(live_data_dir) (or O(state=rolled_back)); the unit is checked before
        anything is extracted.
      - The side instance that recovers is always started with C(pg_ctl).
    type: str
    version_added: "0.2.0"
'''
