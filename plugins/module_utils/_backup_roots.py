# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the roots a config or artifacts component backs up (normalised, checked).

Apart from _backup_tree (the v1 tar and object writer) so that a v2 backup does not import what only v1 needs.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import os
import stat
import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import is_within


def normalize_roots(paths: t.Sequence[str], what: str) -> t.List[str]:
    """Absolute, normalised, de-duplicated roots; each must exist and be readable."""
    roots: t.List[str] = []
    for path in paths or []:
        if not path:
            continue
        root = os.path.normpath(os.path.abspath(path))
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            raise RansomeyeError("%s path %s does not exist" % (what, root), path=root)
        if stat.S_ISDIR(st.st_mode) and not os.access(root, os.R_OK | os.X_OK):
            raise RansomeyeError("%s path %s is not readable" % (what, root), path=root)
        if stat.S_ISREG(st.st_mode) and not os.access(root, os.R_OK):
            raise RansomeyeError("%s path %s is not readable" % (what, root), path=root)
        if root not in roots:
            roots.append(root)
    # a root inside another root would be walked twice
    roots = sorted(roots)
    kept: t.List[str] = []
    for root in roots:
        if not any(root.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(root)
    return kept


def refuse_overlaps(roots: t.Sequence[str], repo: str, cache_dir: t.Optional[str]) -> None:
    """Refuse the host-local cache inside the repository, the repository (or the cache) inside a root, or a root
    inside the repository: the cache and its key are what an attacker who can write the repository must not
    reach, and each backup would store the repository's own packs again (and the cache's host key)."""
    real_repo = os.path.realpath(repo)
    places = [("repo", real_repo)]
    if cache_dir:
        if is_within(real_repo, os.path.realpath(cache_dir)):
            raise RansomeyeError("cache_dir %s must not be inside the repository: the host-local cache and key are "
                                 "what an attacker who can write the repository must not reach" % cache_dir)
        places.append(("cache_dir", os.path.realpath(cache_dir)))
    for root in roots:
        real = os.path.realpath(root)
        for option, place in places:
            if is_within(real, place):
                raise RansomeyeError("%s %s is inside the backed-up path %s: each backup would store it again; "
                                     "move it out of the backed-up paths" % (option, place, root), path=root)
            if option == "repo" and is_within(place, real):
                raise RansomeyeError("backed-up path %s is inside the repository %s" % (root, place), path=root)
