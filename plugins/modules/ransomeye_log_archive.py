#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: ransomeye_log_archive
short_description: Compress old RansomEye logs, verify every archive, then remove the original
version_added: "0.1.0"
description:
  - Archives log files matching O(paths) whose modification time is older than O(retention_days) into
    O(archive_dir), and prunes archives older than O(archive_retention_days).
  - "Verify before delete: the original is hashed (SHA-256) while it is compressed into an exclusive temp file
    C(.ransomeye-archive.*.tmp) in the archive directory; the temp file is fsynced, decompressed completely and
    compared (hash and size) with the original; only then is it published with C(link(2)), which never replaces an
    existing file, and the directory is fsynced. Just before deleting the original the module re-checks that it is
    still the same file (inode, size, modification time) and that no process has it open."
  - Files that a process holds open or locked (C(/proc/*/fd), C(/proc/locks)), and files that change while they are
    read, are skipped and reported in RV(skipped_entries). Symlinks are never followed.
  - Archive names are C(<file name>.<YYYYMMDD>.<first 12 hex digits of the original's SHA-256>.gz) (or C(.zst)),
    the date being the original's modification date (UTC). The archive keeps the original's modification time.
    When an archive of that name exists already it is decompressed and compared; if identical, only the original is
    removed; if different, nothing is overwritten, the original is kept and the task fails.
  - Pruning removes only regular files whose names match that pattern, in the archive directories, whose modification
    time (the archived log's own) is older than O(archive_retention_days).
  - A crash at any point leaves the original, a verified archive, or both. The next run removes temp files left
    behind (only the module's own temp-name pattern, only when no process has them open, under a C(flock) on
    C(.ransomeye-archive.lock) in the archive directory, which also keeps two runs apart).
  - "Test hook, for the collection's own tests only: the environment variable C(RANSOMEYE_OPS_TEST_HOOK) set to
    C(kill:compressed), C(kill:verified), C(kill:linked), C(kill:tmp_removed) or C(kill:deleted) makes the module
    SIGKILL itself at that point; C(corrupt) damages the temp archive before it is verified. Never set it in production."
author:
  - ransomeye.ops maintainers (@ransomeye)
attributes:
  check_mode:
    details: Reads each candidate to name its archive and reports what would be archived and pruned; writes nothing.
extends_documentation_fragment:
  - ransomeye.ops.connection_ignored
  - ransomeye.ops.attributes
  - ransomeye.ops.attributes.no_diff
options:
  paths:
    description:
      - Absolute log file paths or globs (for example C(/var/log/ransomeye/*.log.*)).
      - A literal path that does not exist is ignored (it may have been archived already); its directory must exist.
      - Already compressed files (C(.gz), C(.zst), C(.xz), C(.bz2), C(.lz4), C(.zip), C(.tgz)) are skipped.
    type: list
    elements: path
    required: true
  archive_dir:
    description:
      - Directory receiving the archives; created (mode 0750) when missing, its parent must exist.
      - Default is an C(archive) directory next to each log file.
    type: path
  retention_days:
    description:
      - Archive files whose modification time is older than this.
      - A number of days, or a duration such as C(30d), C(12h), C(15m), C(45s).
    type: raw
    default: 7
  archive_retention_days:
    description:
      - Prune archives whose modification time is older than this (a number of days or a duration).
      - Must not be shorter than O(retention_days). Set to an empty value to never prune.
    type: raw
    default: 90
  compression:
    description:
      - C(gzip) is streamed through Python's zlib; C(zstd) is streamed through the C(zstd) command, which must be
        installed on the managed host (the task fails clearly when it is not).
    type: str
    choices: [gzip, zstd]
    default: gzip
  compression_level:
    description:
      - Compression level; default 5 for gzip and 3 for zstd.
      - "Why gzip 5 and not the C(gzip) command's 6: every archive is also decompressed completely and hashed before
        the original goes, which costs about a quarter of the compression time. Level 5 pays for that check, so the
        module archives at least as fast as C(gzip -6) alone, for archives about 3% larger (measured on RansomEye
        logs by C(bench/bench_maint.py), which prints both levels). Set 6 or 9 for smaller archives."
    type: int
seealso:
  - module: ransomeye.ops.ransomeye_disk_clean
'''

EXAMPLES = r'''
- name: Archive rotated RansomEye logs older than a week, keep archives a year
  ransomeye.ops.ransomeye_log_archive:
    paths:
      - /var/log/ransomeye/*.log.*
    archive_dir: /var/log/ransomeye/archive
    retention_days: 7
    archive_retention_days: 365

- name: Use zstd
  ransomeye.ops.ransomeye_log_archive:
    paths: [/var/log/ransomeye/*.log.*]
    retention_days: 12h
    compression: zstd
'''

RETURN = r'''
archived:
  description: Files archived (or, in check mode, that would be archived). All archives are made and verified
    first; then, after one fresh look at which files are open, the originals are removed.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The original file (removed unless check mode).
      type: str
    archive:
      description: Path of the archive.
      type: str
    sha256:
      description: SHA-256 of the archive file (null in check mode).
      type: str
    original_sha256:
      description: SHA-256 of the original content (equal to the decompressed archive's).
      type: str
    bytes_before:
      description: Size of the original.
      type: int
    bytes_after:
      description: Size of the archive (null in check mode).
      type: int
    reused:
      description: An identical archive existed already; only the original was removed.
      type: bool
    original_removed:
      description: The original was removed (false in check mode, and when it changed or was opened after archiving;
        then it is also listed in RV(skipped_entries) and the next run finishes the job).
      type: bool
  sample:
    - path: /var/log/ransomeye/app.log.1
      archive: /var/log/ransomeye/archive/app.log.1.20261120.3f1a2b4c5d6e.gz
      sha256: 9c1185a5c5e9fc54612808977ee8f548b2258d31a0a4b8ef4d1e5b3f8a2c6d7e
      original_sha256: 3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708
      bytes_before: 1048576
      bytes_after: 81234
      reused: false
      original_removed: true
pruned:
  description: Archives removed (or that would be removed) because they are older than O(archive_retention_days).
  returned: always
  type: list
  elements: str
skipped_entries:
  description: Files left alone, with the reason (open, locked, changing, symlink, already compressed...).
  returned: always
  type: list
  elements: dict
cleaned_temp:
  description: Temp files of an interrupted earlier run that were removed.
  returned: always
  type: list
  elements: str
created_dirs:
  description: Archive directories created.
  returned: always
  type: list
  elements: str
errors:
  description: Files whose archive failed verification or clashed with a different existing archive (originals kept).
  returned: always
  type: list
  elements: dict
bytes_before:
  description: Total size of the archived originals.
  returned: always
  type: int
bytes_after:
  description: Total size of their archives (0 in check mode).
  returned: always
  type: int
files_archived:
  description: Number of files archived (in check mode, that would be).
  returned: always
  type: int
  version_added: "0.2.0"
duration:
  description: Seconds the run took.
  returned: always
  type: float
  version_added: "0.2.0"
bytes_per_second:
  description: RV(bytes_before) (originals compressed and verified) over RV(duration); 0 in check mode.
  returned: always
  type: int
  version_added: "0.2.0"
'''

from ansible_collections.ransomeye.ops.plugins.module_utils._log_archive import run
from ansible_collections.ransomeye.ops.plugins.module_utils._postgres import ignored_connection_spec
from ansible_collections.ransomeye.ops.plugins.module_utils._module import RansomeyeModule


def main():
    module = RansomeyeModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            archive_dir=dict(type="path"),
            retention_days=dict(type="raw", default=7),
            archive_retention_days=dict(type="raw", default=90),
            compression=dict(type="str", default="gzip", choices=["gzip", "zstd"]),
            compression_level=dict(type="int"),
        ),
        shared_specs=[ignored_connection_spec()],
        supports_check_mode=True,
    )
    module.run(lambda m: run(m.params, m.check_mode))


if __name__ == "__main__":
    main()
