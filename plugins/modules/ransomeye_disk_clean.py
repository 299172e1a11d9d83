#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_disk_clean
short_description: Remove stale temp files, orphaned upload chunks and empty directories under allowlisted roots
version_added: "0.1.0"
description:
  - Cleans only below the directories listed in O(roots). It never follows a symlink (directories are opened with
    C(O_NOFOLLOW) relative to their parent's descriptor and checked to be the inode that was listed; symlinks are
    neither followed nor removed), never crosses onto another filesystem or through a mount point (bind mounts
    included, from C(/proc/self/mountinfo)), and skips sockets, FIFOs, devices, and files that any process holds
    open or locked (C(/proc/*/fd), C(/proc/locks)).
  - "B(Temp files): a regular file under a root (outside O(buffer_dirs)) is removed when the newest of its
    modification time and its inode change time (ctime) is older than O(temp_age). The access time is ignored
    unless O(use_atime=true), because backups, scanners and C(relatime) make it unreliable in both directions."
  - "B(Upload buffer) (each of O(buffer_dirs), laid out as C(<buffer>/<session_id>/chunk-NNNN) plus a marker
    C(<buffer>/<session_id>.session) holding JSON C({\"pid\": N, \"state\": \"uploading\"|\"complete\"})): a session
    is B(live) when its marker parses, its state is C(uploading) and its pid is a running process; it is never
    touched whatever its age. A C(complete) session waits for ingestion and is kept unless
    O(remove_complete_sessions=true). A session is B(orphaned) when its marker is missing, unreadable or not valid
    JSON, or says C(uploading) with a pid that is not running (or, with O(remove_complete_sessions), says
    C(complete)), B(and) the newest modification time of the session directory, its entries and its marker is older
    than O(orphan_age). An orphaned session goes as a whole: its C(chunk-NNNN) regular files, then its directory,
    then its marker; when anything else is in the directory, or a chunk is open or excluded, the whole session stays.
    A marker without a directory, and a stray C(chunk-NNNN) file directly in the buffer, are orphaned by the same
    rule (their own modification time)."
  - "B(Empty directories) (O(remove_empty_dirs)), bottom-up: a directory below a root (never a root or a buffer dir)
    whose every entry was removed in this run, or that was empty, and whose own times (taken before it was emptied)
    are older than O(temp_age)."
  - "Just before each unlink the entry is stat'ed again through its directory descriptor and must still be the same
    regular file (device, inode, mtime, ctime); it is unlinked by name relative to that descriptor, so a path swapped
    for a symlink after the decision only causes a skip."
  - O(max_runtime) caps the run; when reached the module stops, reports RV(truncated), and the next run continues.
  - RV(bytes_freed) counts C(st_blocks * 512) of a removed file only when its last link went (C(st_nlink == 1)), so
    hard-linked files are counted once, and only when really freed.
author:
  - ransomeye.ops maintainers (@ransomeye)
attributes:
  check_mode:
    details: Lists what would go (RV(removed)) and the bytes that would be freed; removes nothing.
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
options:
  roots:
    description:
      - Absolute directories to clean (the allowlist); each must exist and must not be a symlink or C(/).
    type: list
    elements: path
    required: true
  temp_age:
    description:
      - Files older than this (newest of mtime and ctime) are removed. A number of days or a duration such as C(7d),
        C(12h), C(15m), C(45s). An empty value disables the temp-file rule (and the removal of empty directories).
    type: raw
    default: 7d
  buffer_dirs:
    description:
      - Upload buffer directories, each inside one of O(roots); the buffer-session rule applies there, never the
        temp-file rule.
    type: list
    elements: path
    default: []
  orphan_age:
    description:
      - Minimum age of an orphaned upload session (newest mtime of its directory, chunks and marker).
    type: raw
    default: 1d
  remove_complete_sessions:
    description:
      - Treat sessions marked C(complete) as orphaned (once older than O(orphan_age)). Off by default, because a
        complete session is evidence not yet ingested.
    type: bool
    default: false
  remove_empty_dirs:
    description:
      - Remove directories left empty, bottom-up.
    type: bool
    default: true
  exclude:
    description:
      - Glob patterns (C(fnmatch)) of entries never to touch. A pattern without C(/) is matched against the entry's
        name; a pattern with C(/) against its absolute path and its path relative to the root. An excluded directory
        is not entered.
    type: list
    elements: str
    default: []
  max_runtime:
    description:
      - Stop after this long (a duration); the next run continues. An empty value means no cap.
    type: raw
    default: 10m
  use_atime:
    description:
      - Also keep files whose access time is newer than the cutoff.
    type: bool
    default: false
  report_limit:
    description:
      - At most this many entries in RV(removed) and RV(skipped_paths) (counts are always complete).
    type: int
    default: 1000
seealso:
  - module: ransomeye.ops.ransomeye_log_archive
'''

EXAMPLES = r'''
- name: Clean RansomEye temp and upload buffer
  ransomeye.ops.ransomeye_disk_clean:
    roots:
      - /var/tmp/ransomeye
      - /var/spool/ransomeye/buffer
    buffer_dirs:
      - /var/spool/ransomeye/buffer
    temp_age: 3d
    orphan_age: 12h
    exclude:
      - "*.keep"
    max_runtime: 15m
'''

RETURN = r'''
removed:
  description: What was removed (or would be, in check mode), at most O(report_limit) entries.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The removed entry.
      type: str
    reason:
      description: C(temp), C(orphan_chunk), C(orphan_session), C(orphan_marker) or C(empty_dir).
      type: str
    size:
      description: Apparent size in bytes (0 for directories).
      type: int
removed_count:
  description: Number of entries removed (all of them, even beyond O(report_limit)).
  returned: always
  type: int
counts:
  description: Removed entries by reason.
  returned: always
  type: dict
  sample: {temp: 12, orphan_chunk: 40, orphan_session: 3, orphan_marker: 2, empty_dir: 4}
bytes_freed:
  description: Disk space freed (blocks of files whose last link was removed); in check mode, what would be freed.
  returned: always
  type: int
skipped_entries:
  description: Entries left alone, counted by reason (open, locked, symlink, fifo, socket, device, excluded,
    other filesystem or mount point, changed during the run, ...). Named so that Ansible, which reads a
    result key C(skipped), never reports a run that removed files as skipped.
  returned: always
  type: dict
skipped_paths:
  description: The skipped entries with their reason, at most O(report_limit).
  returned: always
  type: list
  elements: dict
truncated:
  description: O(max_runtime) was reached before the scan finished.
  returned: always
  type: bool
scanned:
  description: Number of directory entries examined.
  returned: always
  type: int
elapsed:
  description: Seconds the scan took.
  returned: always
  type: float
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._disk_clean import run
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule


def _action(module):
    result = run(module.params, module.check_mode)
    if result["truncated"]:
        module.warn("max_runtime reached: the scan stopped early; the next run continues")
    return result


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            roots=dict(type="list", elements="path", required=True),
            temp_age=dict(type="raw", default="7d"),
            buffer_dirs=dict(type="list", elements="path", default=[]),
            orphan_age=dict(type="raw", default="1d"),
            remove_complete_sessions=dict(type="bool", default=False),
            remove_empty_dirs=dict(type="bool", default=True),
            exclude=dict(type="list", elements="str", default=[]),
            max_runtime=dict(type="raw", default="10m"),
            use_atime=dict(type="bool", default=False),
            report_limit=dict(type="int", default=1000),
        ),
        shared_specs=[ignored_connection_spec()],
        supports_check_mode=True,
    )
    module.run(_action)


if __name__ == "__main__":
    main()
