# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: which stored objects a manifest's components need, and whether it lists them.

Kept apart from _backup_verify (which imports the v2 reader) because every backup run checks each manifest it
scans with ``content_reasons``: a backup after nothing changed should not pay for importing the reader.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import typing as t

from ansible_collections.ransomeye.ops.plugins.module_utils import _backup_repo as brepo

TREE_FORMAT = "tree-v2"        # _backup.fmt.COMPONENT_FORMAT: a config or artifacts component in v2 packs
STREAM_LAYOUT = "stream-v2"    # _backup.stream.STREAM_LAYOUT: a database dump in v2 packs


def component_object_refs(body: dict) -> t.List[t.Tuple[str, str]]:
    """(object id, what refers to it) for every object a component needs."""
    refs: t.List[t.Tuple[str, str]] = []
    components = body.get("components") or {}
    v2 = [name for name in ("config", "artifacts")
          if isinstance(components.get(name), dict) and components[name].get("format") == TREE_FORMAT]
    database = components.get("database")
    if isinstance(database, dict) and database.get("layout") == STREAM_LAYOUT:
        v2.append("database")
    if v2:
        # v2 components share packs and indexes; each needs all of them (which blob is where is in the indexes)
        for object_id, record in sorted((body.get("objects") or {}).items()):
            if isinstance(record, dict) and record.get("kind") in ("pack", "index"):
                refs.extend((object_id, name) for name in v2)
    for name in ("database", "config", "physical"):
        comp = components.get(name)
        if isinstance(comp, dict) and name not in v2:
            refs.append((str(comp.get("object")), name))
    art = components.get("artifacts")
    if isinstance(art, dict) and "artifacts" not in v2:
        for path, record in sorted((art.get("files") or {}).items()):
            if isinstance(record, dict) and record.get("type") == "file":
                refs.append((str(record.get("object")), path))
    return refs


def content_reasons(body: dict) -> t.List[str]:
    """Format-specific reasons why a manifest body is not well formed (v1: component objects must be listed)."""
    reasons: t.List[str] = []
    for object_id, what in component_object_refs(body):
        if object_id not in body["objects"]:
            reasons.append("%s refers to object %s that the manifest does not list" % (what, object_id))
    for object_id in body["objects"]:
        if not brepo.OBJECT_ID_RE.match(object_id):
            reasons.append("invalid object id %r" % object_id)
    return reasons
