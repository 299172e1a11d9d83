# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the storage engine of backup repository format v2.

Holds the v2 formats (``fmt``: blob ids, tree objects, pack index), pack
writing and reading (``pack``), the host-local authenticated cache (``cache``),
the backup side (``engine``) and the restore/verify side (``reader``) of the
``config`` and ``artifacts`` components, and the database dump as a stream
(``stream``) cut by the keyed content-defined chunker (``chunker``).
docs/BACKUP_FORMAT.md section 5 is the specification.

May import: the standard library, ``_errors``, ``_files``, ``_crypto_container``
and ``_signing`` (through ``_backup_keys``), ``_backup_repo`` (repository
layout, lock, manifests) and ``_backup_hooks``. Nothing outside this package
imports its internals except ``_backup_run``, ``_backup_verify`` and
``_backup_restore``, which call ``engine``/``reader`` entry points, and
``_backup_db``, which feeds pg_dump's output to ``Engine.stream``.
"""
