# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: one glibc malloc arena for the threaded backup and restore paths.

glibc gives each thread that allocates its own arena (up to 8 per core).
The v2 backup and restore move MiB-sized buffers (file chunks, pack
plaintexts) between a few worker threads: memory a buffer freed in one
thread's arena is not reused by the next buffer allocated in another, so the
peak resident size grows by a few arenas' worth of free space (about 10 MiB
on shape A of bench/bench_repo.py, for no gain in time: every allocation of
such a buffer happens with the GIL held, so the threads do not contend for
the arena lock). ``one_arena`` asks glibc for a single arena, as
``MALLOC_ARENA_MAX=1`` would; the setting only applies to threads that have
not allocated yet, so it is called before the worker pools start. Elsewhere
(musl, macOS) it does nothing.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import ctypes

_M_ARENA_MAX = -8      # glibc's malloc.h
_done = False


def one_arena() -> bool:
    """Limit glibc to one malloc arena for this process; True when glibc accepted it."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(None)
        # gnu_get_libc_version only exists in glibc: another libc's mallopt may not know this parameter
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False
        _done = libc.mallopt(_M_ARENA_MAX, 1) == 1
    except (OSError, AttributeError, TypeError):
        return False
    return _done
