"""What a directory tree holds, to assert that a run changed nothing (or restored everything)."""
from __future__ import annotations

import hashlib
import os


def tree_digest(root: str) -> dict:
    """Relative path -> SHA-256 of every regular file below ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def tree_snapshot(directory: str) -> dict:
    """Absolute path -> content of every file, target of every symlink, or "dir", below ``directory``."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in files + dirs:
            full = os.path.join(root, name)
            out[full] = os.readlink(full) if os.path.islink(full) else (
                open(full, "rb").read() if os.path.isfile(full) else "dir")
    return out
