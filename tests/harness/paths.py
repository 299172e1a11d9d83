"""Where the repository and the collection symlink live (the Makefile makes the same link)."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, ".build")
COLLECTIONS = os.path.join(BUILD, "collections")
COLLECTION_LINK = os.path.join(COLLECTIONS, "ansible_collections", "ransomeye", "ops")


def ensure_collection_link() -> str:
    """Make ``.build/collections/ansible_collections/ransomeye/ops`` point at the repository."""
    os.makedirs(os.path.dirname(COLLECTION_LINK), exist_ok=True)
    if not os.path.islink(COLLECTION_LINK):
        os.symlink(REPO, COLLECTION_LINK)
    return COLLECTIONS
