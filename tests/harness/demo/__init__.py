"""The demo host: a RansomEye-like host under one directory (see docs/DEMO_HOST.md).

``python -m tests.harness.demo up|play|info|down --dir DIR [--scale MB] [--seed S]``.
Tests use :func:`tests.harness.demo.host.up` / ``down`` directly.
"""
import sys as _sys

from tests.harness.paths import ensure_collection_link as _ensure_link

# The generator uses the collection's own helpers (SCRAM verifier), as ansible_collections.ransomeye.ops.
_COLLECTIONS = _ensure_link()
if _COLLECTIONS not in _sys.path:
    _sys.path.insert(0, _COLLECTIONS)
