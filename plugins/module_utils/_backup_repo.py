# -*- coding: utf-8 -*-
# Copyright: contributors to ransomeye.ops
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to ransomeye.ops: the backup repository on disk.

Layout (see docs/BACKUP_FORMAT.md, "Repository and manifest")::

    <repo>/repo.json                 {"format", "version", "repo_id"}
    <repo>/lock                      flock(2) target: exclusive for backup/prune, shared for verify/restore
    <repo>/objects/<id[:2]>/<id>     encrypted containers, written once, never modified
    <repo>/manifests/<seq:08d>.json  one signed manifest per complete backup (canonical JSON)
    <repo>/tmp/                      objects being written (removed by the next run holding the lock)
    <repo>/cache/stat-cache.json     artifact stat cache (untrusted hint, never needed for restore)
    <repo>/keys/dedup.key            content-id key for rsa mode (0600)

Write order: objects, then ``syncfs``, then the manifest (atomic rename). A
backup without a manifest does not exist; prune deletes old manifests first
and then only objects that no remaining manifest references.
"""

from __future__ import absolute_import, division, print_function, annotations

__metaclass__ = type

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import shutil
import time
import typing as t
import uuid

from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError
from ansible_collections.ransomeye.ops.plugins.module_utils._files import atomic_write, ensure_directory, fsync_dir, wait_flock

REPO_FORMAT = "ransomeye-backup-repo"
MANIFEST_FORMAT = "ransomeye-backup-manifest"
FORMAT_VERSION = 1
MANIFEST_RE = re.compile(r"^(\d{8})\.json$")
OBJECT_ID_RE = re.compile(r"^[0-9a-f]{64}$")


class RepoError(RansomeyeError):
    """The repository is missing, malformed or locked."""


def backup_id_for(seq: int, when: float) -> str:
    return "%08d-%s" % (seq, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)))


def seq_of_backup_id(backup_id: str) -> t.Optional[int]:
    match = re.match(r"^(\d{8})(?:-|$)", backup_id or "")
    return int(match.group(1)) if match else None


def iso_time(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def parse_iso_time(text: t.Any) -> t.Optional[float]:
    try:
        import calendar
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def new_object_id() -> str:
    """A random id for objects that are not content-addressed (dumps, config tars)."""
    return hashlib.sha256(uuid.uuid4().bytes + os.urandom(16)).hexdigest()


def start_writeback(fd: int) -> None:
    """Start writing a finished file's data to disk without waiting for it (on POSIX_FADV_DONTNEED Linux starts
    the write-back of the file's dirty pages; pages still dirty are kept). ``Repo.sync`` fsyncs the file later, by
    then mostly written."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass   # only advice: the fsync in Repo.sync is what makes the file durable


def _syncfs(path: str) -> None:
    """Flush every write on the repository's filesystem (one call instead of one fsync per object)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        if libc is not None and hasattr(libc, "syncfs"):
            if libc.syncfs(fd) == 0:
                return
        os.sync()
    finally:
        os.close(fd)


class Repo:
    """A repository directory. ``Repo.open(path)`` for readers, ``Repo.create(path)`` for the writer."""

    def __init__(self, path: str, repo_id: str) -> None:
        self.path = os.path.abspath(path)
        self.repo_id = repo_id
        self.objects_dir = os.path.join(self.path, "objects")
        self.manifests_dir = os.path.join(self.path, "manifests")
        self.tmp_dir = os.path.join(self.path, "tmp")
        self.cache_dir = os.path.join(self.path, "cache")
        self.keys_dir = os.path.join(self.path, "keys")
        self._made: t.Set[str] = set()
        # what sync() must make durable: objects whose writer started their write-back (fsynced one by one
        # there), the directories objects were renamed into, and whether any other object was committed (then
        # one syncfs covers everything, as before)
        self._to_fsync: t.List[str] = []
        self._renamed_into: t.Set[str] = set()
        self._unsynced = False

    def _ensure(self, directory: str) -> None:
        if directory not in self._made:
            ensure_directory(directory, 0o700)
            self._made.add(directory)

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(cls, path: str) -> "Repo":
        config = os.path.join(path, "repo.json")
        if not os.path.isdir(path):
            raise RepoError("backup repository %s does not exist" % path, repo=path)
        try:
            with open(config, "rb") as handle:
                data = json.loads(handle.read(65536).decode("utf-8"))
        except FileNotFoundError:
            raise RepoError("%s is not a backup repository (no repo.json)" % path, repo=path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RepoError("repository config %s is not valid JSON: %s" % (config, exc), repo=path)
        if not isinstance(data, dict) or data.get("format") != REPO_FORMAT:
            raise RepoError("%s is not a ransomeye.ops backup repository" % path, repo=path)
        if data.get("version") != FORMAT_VERSION:
            raise RepoError("repository %s has format version %r; this collection reads version %d"
                            % (path, data.get("version"), FORMAT_VERSION), repo=path)
        repo_id = data.get("repo_id")
        if not isinstance(repo_id, str) or not repo_id:
            raise RepoError("repository config %s has no repo_id" % config, repo=path)
        return cls(path, repo_id)

    @classmethod
    def create(cls, path: str) -> "Repo":
        """Open ``path``, creating an empty repository (0700) when it does not exist or is empty."""
        path = os.path.abspath(path)
        if os.path.exists(os.path.join(path, "repo.json")):
            return cls.open(path)
        if os.path.isdir(path) and os.listdir(path):
            raise RepoError("%s exists, is not empty and is not a backup repository" % path, repo=path)
        ensure_directory(path, 0o700)
        repo = cls(path, uuid.uuid4().hex)
        atomic_write(os.path.join(path, "repo.json"), json.dumps(
            {"format": REPO_FORMAT, "version": FORMAT_VERSION, "repo_id": repo.repo_id}, sort_keys=True).encode() + b"\n",
            mode=0o644)
        repo.ensure_layout()
        return repo

    def ensure_layout(self) -> None:
        for directory in (self.objects_dir, self.manifests_dir, self.tmp_dir, self.cache_dir, self.keys_dir):
            ensure_directory(directory, 0o700)
        fsync_dir(self.path)

    # -- lock ------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, exclusive: bool, timeout: float) -> t.Iterator[None]:
        """flock the repository; wait up to ``timeout`` seconds for another run, then fail clearly."""
        lock_path = os.path.join(self.path, "lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM) or exclusive:
                raise
            fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            wait_flock(fd, exclusive, timeout, lambda: RepoError(
                "backup repository %s is locked by another run (waited %ss); try again later or raise "
                "lock_timeout" % (self.path, timeout), repo=self.path))
            yield
        finally:
            os.close(fd)

    # -- objects ---------------------------------------------------------------
    def object_path(self, object_id: str) -> str:
        if not OBJECT_ID_RE.match(object_id or ""):
            raise RepoError("invalid object id %r" % (object_id,))
        return os.path.join(self.objects_dir, object_id[:2], object_id)

    def object_size(self, object_id: str) -> t.Optional[int]:
        try:
            return os.lstat(self.object_path(object_id)).st_size
        except FileNotFoundError:
            return None

    def new_tmp_path(self, object_id: str) -> str:
        self._ensure(self.tmp_dir)
        return os.path.join(self.tmp_dir, "%s.%d.%s.tmp" % (object_id, os.getpid(), uuid.uuid4().hex[:8]))

    def commit_object(self, tmp_path: str, object_id: str, flushing: bool = False) -> str:
        """Move a finished object into place (renaming over a leftover of a crashed run is fine). ``flushing``:
        the writer started the file's write-back (``start_writeback``); ``sync`` then fsyncs this file alone."""
        final = self.object_path(object_id)
        directory = os.path.dirname(final)
        self._ensure(directory)
        os.rename(tmp_path, final)
        self._renamed_into.add(directory)
        if flushing:
            self._to_fsync.append(final)
        else:
            self._unsynced = True
        return final

    def sync(self) -> None:
        """Make every object written so far durable before the manifest refers to it.

        When every object's writer started its write-back (packs and indexes do, on the thread that writes
        them, while the backup goes on), those files and the directories they were renamed into are fsynced:
        a whole-filesystem sync would also wait for every other program's dirty data on that filesystem (a
        database, the files being backed up). Otherwise one syncfs covers everything, as before."""
        if self._unsynced:
            _syncfs(self.path)
        else:
            for path in self._to_fsync:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._to_fsync = []
        for directory in sorted(self._renamed_into) + [self.objects_dir, self.tmp_dir, self.path]:
            if os.path.isdir(directory):
                fsync_dir(directory)

    def iter_object_files(self) -> t.Iterator[t.Tuple[str, str]]:
        """(object id or '', path) of every file under objects/ (leftover temp files have id '')."""
        if not os.path.isdir(self.objects_dir):
            return
        for sub in sorted(os.listdir(self.objects_dir)):
            sub_path = os.path.join(self.objects_dir, sub)
            if not os.path.isdir(sub_path) or os.path.islink(sub_path):
                continue
            for name in sorted(os.listdir(sub_path)):
                yield (name if OBJECT_ID_RE.match(name) and name[:2] == sub else ""), os.path.join(sub_path, name)

    # -- manifests -------------------------------------------------------------
    def manifest_path(self, seq: int) -> str:
        return os.path.join(self.manifests_dir, "%08d.json" % seq)

    def manifest_files(self) -> t.List[t.Tuple[int, str]]:
        """(seq from the file name, path) of every manifest, oldest first."""
        if not os.path.isdir(self.manifests_dir):
            return []
        found = []
        for name in os.listdir(self.manifests_dir):
            match = MANIFEST_RE.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.manifests_dir, name)))
        return sorted(found)

    def write_manifest(self, seq: int, data: bytes) -> str:
        path = self.manifest_path(seq)
        if os.path.lexists(path):
            raise RepoError("manifest %s already exists; refusing to overwrite a backup" % path)
        ensure_directory(self.manifests_dir, 0o700)
        atomic_write(path, data, mode=0o644)
        return path

    def clean_tmp(self) -> int:
        """Remove objects left half-written by a crashed run (call with the exclusive lock held)."""
        removed = 0
        if os.path.isdir(self.tmp_dir):
            for name in os.listdir(self.tmp_dir):
                path = os.path.join(self.tmp_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                removed += 1
        return removed


class LoadedManifest(t.NamedTuple):
    seq_in_name: int
    path: str
    raw: bytes
    sha256: str
    document: dict

    @property
    def body(self) -> dict:
        return self.document["manifest"]

    @property
    def backup_id(self) -> str:
        return str(self.body.get("backup_id"))


class ManifestError(RansomeyeError):
    """A manifest file that cannot be parsed or is not shaped like a manifest."""


def load_manifest(seq: int, path: str) -> LoadedManifest:
    """Read and parse one manifest file (small: a few MB at most for very large artifact trees)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        document = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError("manifest %s is not valid JSON: %s" % (os.path.basename(path), exc))
    if not isinstance(document, dict) or not isinstance(document.get("manifest"), dict) \
            or not isinstance(document.get("signatures"), list):
        raise ManifestError("manifest %s does not have the manifest/signatures shape" % os.path.basename(path))
    body = document["manifest"]
    if body.get("format") != MANIFEST_FORMAT or body.get("version") != FORMAT_VERSION:
        raise ManifestError("manifest %s has an unknown format or version" % os.path.basename(path))
    for key, kind in (("seq", int), ("backup_id", str), ("repo_id", str), ("objects", dict), ("components", dict)):
        if not isinstance(body.get(key), kind) or isinstance(body.get(key), bool):
            raise ManifestError("manifest %s: field %s is missing or malformed" % (os.path.basename(path), key))
    return LoadedManifest(seq, path, raw, digest, document)


def load_manifest_digest(path: str) -> str:
    """SHA-256 of a manifest file's bytes (what the next manifest records as prev_manifest_sha256)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def referenced_objects(body: dict) -> t.Dict[str, dict]:
    objects = body.get("objects") or {}
    return {k: v for k, v in objects.items() if isinstance(v, dict)}


def prune(repo: Repo, keep_last: t.Optional[int], check_mode: bool = False,
          remove_seqs: t.Optional[t.Sequence[int]] = None) -> dict:
    """Remove the manifests of ``remove_seqs`` (decided by _backup_retention over authentic manifests only), or
    the oldest beyond ``keep_last`` by file name, then mark and sweep (call with the exclusive lock held).

    Manifests that cannot be parsed are never deleted here (verify reports them)
    and their objects cannot be marked, so with any unreadable manifest present
    the sweep is skipped: better to keep garbage than to delete live data.
    Parseable manifests that do not verify are not deleted either, and their
    objects stay marked (a manifest signed by a key this run does not know may
    still be a real backup).
    """
    result = {"manifests": [], "objects": 0, "bytes": 0, "sweep_skipped": False}
    files = repo.manifest_files()
    if keep_last is not None and keep_last < 1:
        raise RansomeyeError("keep_last must be at least 1, not %d" % keep_last)
    remove: t.List[t.Tuple[int, str]] = []
    if remove_seqs is not None:
        wanted = set(remove_seqs)
        remove = [(seq, path) for seq, path in files if seq in wanted]
    elif keep_last is not None and len(files) > keep_last:
        remove = files[:len(files) - keep_last]
    marked: t.Set[str] = set()
    for seq, path in files:
        if (seq, path) in remove:
            continue
        try:
            loaded = load_manifest(seq, path)
        except (ManifestError, OSError):
            result["sweep_skipped"] = True
            continue
        marked.update(referenced_objects(loaded.body))
    for seq, path in remove:
        try:
            result["manifests"].append(load_manifest(seq, path).backup_id)
        except (ManifestError, OSError):
            result["manifests"].append(os.path.basename(path))
        if not check_mode:
            os.unlink(path)
    if remove and not check_mode:
        fsync_dir(repo.manifests_dir)
    if result["sweep_skipped"]:
        return result
    touched: t.Set[str] = set()
    for object_id, path in list(repo.iter_object_files()):
        if object_id and object_id in marked:
            continue
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            continue
        result["objects"] += 1
        result["bytes"] += size
        if not check_mode:
            os.unlink(path)
            touched.add(os.path.dirname(path))
    for directory in touched:
        fsync_dir(directory)
    return result
