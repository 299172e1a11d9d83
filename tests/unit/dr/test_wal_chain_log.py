"""The WAL chain log and frames (docs/BACKUP_FORMAT.md 4.2-4.3), driven through the program's own functions.

No PostgreSQL is needed here: segments are synthetic 1 MiB WAL files (a segment size the server supports) with a
valid long page header, encrypted with real AES-256-GCM containers and signed with a real Ed25519 key.
"""
from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as container
from ansible_collections.ransomeye.ops.plugins.module_utils import _pitr_chain as pchain
from ansible_collections.ransomeye.ops.plugins.module_utils import _signing as signing
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_format as wf
from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_program as wp
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError

SEG = 1 << 20
SYSID = "7300000000000000001"
PEM = serialization.Encoding.PEM


def seg_name(i: int) -> str:
    return wf.segment_name(1, 0x100 + i, SEG)


def segment(path: str, name: str, fill: bytes = b"", sysid: str = SYSID) -> str:
    """1 MiB of WAL for ``name``: random first half (incompressible), ``fill`` repeated (or zeros) after."""
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, wf.segment_number(name, SEG) * SEG, 0, int(sysid),
                         SEG, 8192)
    body = header + os.urandom(SEG // 2 - len(header))
    body += ((fill or b"\0") * SEG)[:SEG - len(body)]
    with open(path, "wb") as handle:
        handle.write(body)
    return path


@pytest.fixture
def repo(tmp_path):
    """A WAL archive (wal.json) with an AES key file and an Ed25519 signing key; returns the program config."""
    root = tmp_path / "repo"
    (root / "wal").mkdir(parents=True)
    (root / "wal" / "wal.json").write_text(json.dumps({
        "format": wf.WAL_FORMAT, "version": 1, "repo_id": "r1", "system_identifier": SYSID, "segment_size": SEG}))
    key_file = tmp_path / "wal.key"
    key_file.write_text(os.urandom(32).hex())
    signer = ed25519.Ed25519PrivateKey.generate()
    sig_path = tmp_path / "sign.key"
    sig_path.write_bytes(signer.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "sign.pub").write_bytes(signer.public_key().public_bytes(
        PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    config = {"format": wp.PROGRAM_FORMAT, "repo": str(root), "repo_id": "r1", "mode": "aes",
              "key_file": str(key_file), "signing_key": str(sig_path), "system_identifier": SYSID, "sign_every": 1}
    config["_signer"] = signer
    config["_dir"] = str(tmp_path)
    return config


def _cfg(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _push(config, i, fill=b"", name=None):
    name = name or seg_name(i)
    path = segment(os.path.join(config["_dir"], "src-%s" % name), name, fill)
    return wp.push(_cfg(config), path, name), path, name


def _check(config, level="full"):
    trusted = {signing.key_id(config["_signer"].public_key()): config["_signer"].public_key()}
    return pchain.check_chain(config["repo"], trusted, level, {"key": container.load_key_file(config["key_file"])})


def _logs(config):
    return wf.WalLayout(config["repo"]).log_files()


def _get(config, name, entry, dest):
    plan = dict(_cfg(config), files={name: {"plaintext_sha256": entry["plaintext_sha256"],
                                            "plaintext_size": entry["plaintext_size"],
                                            "compression": entry.get("compression", "none")}})
    return wp.get(plan, name, dest)


def test_entries_are_lines_of_one_log_and_restore_byte_for_byte(repo):
    sources = {}
    for i in range(3):
        outcome, path, name = _push(repo, i, fill=b"INSERT INTO alerts VALUES (1, 'burst');\n")
        assert outcome == "archived"
        sources[name] = path
    logs = _logs(repo)
    assert len(logs) == 1 and not os.path.isdir(os.path.join(repo["repo"], "wal", "chain"))
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == sorted(sources) and report.unsigned_tail == []
    for name, path in sources.items():
        entry = report.good[name].entry
        assert entry["compression"] == wf.COMPRESSION_ZSTD and entry["version"] == wf.LOG_VERSION
        # half random, half text: the text frames were compressed, the random ones stored as is
        assert SEG // 2 < entry["ciphertext_size"] < SEG
        dest = os.path.join(repo["_dir"], "restored")
        assert _get(repo, name, entry, dest) == "restored"
        with open(dest, "rb") as got, open(path, "rb") as want:
            assert got.read() == want.read()
        os.unlink(dest)


def test_same_content_is_acknowledged_different_content_refused(repo):
    _outcome, path, name = _push(repo, 0)
    assert wp.push(_cfg(repo), path, name) == "already archived"
    other = segment(os.path.join(repo["_dir"], "other"), name)
    with pytest.raises(RansomeyeError, match="already archived with different content"):
        wp.push(_cfg(repo), other, name)
    os.unlink(wf.WalLayout(repo["repo"]).stored_path(name))  # damaged repository: entry without its file
    with pytest.raises(RansomeyeError, match="stored file is missing"):
        wp.push(_cfg(repo), path, name)
    assert len(_check(repo, "quick").good) == 0


def test_stored_file_without_entry_is_rewritten(repo):
    """A run killed between the rename and the chain line leaves a stored file the chain does not name."""
    _outcome, _path, name = _push(repo, 0)
    layout = wf.WalLayout(repo["repo"])
    later = seg_name(1)
    with open(layout.stored_path(later), "wb") as handle:
        handle.write(b"left by a killed run")
    outcome, _path, _name = _push(repo, 1)
    assert outcome == "archived"
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == [name, later]


def test_unfinished_line_is_cut_and_never_counted(repo):
    _push(repo, 0)
    log = _logs(repo)[-1][1]
    with open(log, "ab") as handle:
        handle.write(b'{"entry":{"ciphertext_sha256":"00')  # power lost during the append: never acknowledged
    report = _check(repo)
    assert report.problems == [] and len(report.good) == 1
    _push(repo, 1)
    with open(log, "rb") as handle:
        lines = handle.read().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""
    report = _check(repo)
    assert report.problems == [] and len(report.good) == 2


def test_empty_log_left_by_a_killed_rotation_is_dropped(repo, monkeypatch):
    monkeypatch.setattr(wf, "LOG_SPAN", 2)
    for i in range(2):
        _push(repo, i)
    layout = wf.WalLayout(repo["repo"])
    open(layout.log_path(3), "wb").close()
    _push(repo, 2)
    assert [k for k, _p in _logs(repo)] == [1, 3]
    report = _check(repo)
    assert report.problems == [] and len(report.good) == 3


def test_rotation_and_prune_keep_the_chain_verifiable(repo, monkeypatch):
    monkeypatch.setattr(wf, "LOG_SPAN", 2)
    names = [_push(repo, i)[2] for i in range(5)]
    assert [k for k, _p in _logs(repo)] == [1, 3, 5]
    layout = wf.WalLayout(repo["repo"])
    dry = pchain.prune_chain(layout, lambda n: n < names[3], check_mode=True)
    assert dry["segments"] == 3 and len(_check(repo).good) == 5
    out = pchain.prune_chain(layout, lambda n: n < names[3])
    assert out["segments"] == 3 and out["bytes"] > 0
    assert [k for k, _p in _logs(repo)] == [3, 5]  # log 1 gone, log 3 rewritten without entry 3
    assert not os.path.exists(layout.stored_path(names[2])) and os.path.exists(layout.stored_path(names[3]))
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == names[3:]
    _push(repo, 5)
    assert _check(repo).problems == []
    # never the last entry: the next push links to it
    everything = pchain.prune_chain(layout, lambda n: True)
    assert everything["segments"] == 2 and wf.chain_names(layout) == [seg_name(5)]


def _legacy(repo, i, prev):
    """A chain entry as repositories before the log stored it: its own file, a raw (unframed) container."""
    layout = wf.WalLayout(repo["repo"])
    name = seg_name(i)
    src = segment(os.path.join(repo["_dir"], "legacy-" + name), name)
    os.makedirs(os.path.dirname(layout.stored_path(name)), exist_ok=True)
    with open(src, "rb") as plain, open(layout.stored_path(name), "wb") as dst:
        info = container.encrypt_stream(plain, dst, key=container.load_key_file(repo["key_file"]),
                                        object_id="wal/" + name)
    signer = repo["_signer"]
    entry = {"format": wf.CHAIN_FORMAT, "version": 1, "repo_id": "r1", "system_identifier": SYSID, "n": i + 1,
             "name": name, "kind": "segment", "timeline": 1, "prev": prev, "time": "2026-12-01T00:00:00Z",
             "signer": signing.key_id(signer.public_key()), "plaintext_sha256": info.plaintext_sha256,
             "plaintext_size": info.plaintext_size, "ciphertext_sha256": info.ciphertext_sha256,
             "ciphertext_size": info.ciphertext_size}
    os.makedirs(layout.chain, exist_ok=True)
    with open(layout.chain_path(i + 1, name), "wb") as handle:
        handle.write(signing.canonical_json({"entry": entry, "signatures": [
            signing.sign(signer, signing.canonical_json(entry))]}))
    return wf.entry_digest(entry), src


def test_repository_of_one_file_per_entry_is_read_and_continued(repo):
    prev, first = _legacy(repo, 0, None)
    prev, _second = _legacy(repo, 1, prev)
    _push(repo, 2)
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == [seg_name(0), seg_name(1), seg_name(2)]
    new = report.good[seg_name(2)]
    assert new.n == 3 and new.entry["prev"] == prev  # the running hash continues across the formats
    assert wp.push(_cfg(repo), first, seg_name(0)) == "already archived"  # found among the old files
    dest = os.path.join(repo["_dir"], "restored-legacy")
    assert _get(repo, seg_name(0), report.good[seg_name(0)].entry, dest) == "restored"
    with open(dest, "rb") as got, open(first, "rb") as want:
        assert got.read() == want.read()


def test_sign_every_leaves_an_unsigned_tail_that_is_never_trusted(repo):
    repo["sign_every"] = 3
    names = [_push(repo, i)[2] for i in range(4)]
    report = _check(repo, "quick")
    assert sorted(report.good) == names[:3] and report.unsigned_tail == [names[3]]


@pytest.mark.parametrize("data", [os.urandom(wf.FRAME_SIZE), bytes(wf.FRAME_SIZE), b"x" * 100,
                                  os.urandom(5000) + bytes(wf.FRAME_SIZE - 5000)])
def test_frames_round_trip(data):
    header, body = wf.frame(data)
    stream = header + body
    out = b"".join(wf.unframe(stream[i:i + 4096] for i in range(0, len(stream), 4096)))
    assert out == data


@pytest.mark.parametrize("data", [os.urandom(wf.FRAME_SIZE), bytes(wf.FRAME_SIZE), b"x" * 100,
                                  os.urandom(5000) + bytes(wf.FRAME_SIZE - 5000)])
def test_zstd_frames_round_trip(data):
    framer = wf.Framer()
    header, body = framer.frame(data)
    assert framer.compression == (wf.COMPRESSION if body is data else wf.COMPRESSION_ZSTD)
    stream = header + body
    out = b"".join(wf.unframe((stream[i:i + 4096] for i in range(0, len(stream), 4096)), framer.compression))
    assert out == data


def test_zlib_framed_segments_stay_readable_beside_zstd_ones(repo, monkeypatch):
    """What earlier versions (or an interpreter without zstandard) wrote verifies and restores in the same chain."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _compress
    monkeypatch.setattr(_compress, "HAS_ZSTD", False)
    _outcome, old_path, old = _push(repo, 0, fill=b"INSERT INTO alerts VALUES (1, 'burst');\n")
    monkeypatch.setattr(_compress, "HAS_ZSTD", True)
    _outcome, new_path, new = _push(repo, 1, fill=b"INSERT INTO alerts VALUES (1, 'burst');\n")
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == [old, new]
    assert report.good[old].entry["compression"] == wf.COMPRESSION
    assert report.good[new].entry["compression"] == wf.COMPRESSION_ZSTD
    assert report.good[new].entry["ciphertext_size"] < report.good[old].entry["ciphertext_size"]
    for name, path in ((old, old_path), (new, new_path)):
        dest = os.path.join(repo["_dir"], "restored")
        assert _get(repo, name, report.good[name].entry, dest) == "restored"
        with open(dest, "rb") as got, open(path, "rb") as want:
            assert got.read() == want.read()
        os.unlink(dest)


def _frame(kind, raw_len, body, stored_len=None):
    return wf.FRAME_HEADER.pack(kind, raw_len, len(body) if stored_len is None else stored_len) + body


@pytest.mark.parametrize("stream,words", [
    (_frame(7, 3, b"abc"), "malformed frame header"),
    (_frame(wf.FRAME_RAW, wf.FRAME_SIZE + 1, b""), "malformed frame header"),
    (_frame(wf.FRAME_RAW, 3, b"abcd"), "malformed frame header"),
    (_frame(wf.FRAME_RAW, 3, b"ab", stored_len=3), "ends inside a frame"),
    (_frame(wf.FRAME_ZLIB, 10, zlib.compress(bytes(1 << 20))), "size differs"),  # a bomb stops at raw_len + 1
    (_frame(wf.FRAME_ZLIB, 4, b"not zlib"), "does not decompress"),
])
def test_malformed_frames_are_refused(stream, words):
    with pytest.raises(wf.WalError, match=words):
        b"".join(wf.unframe([stream]))


def _zstd(data, content_size=True):
    import zstandard
    return zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(data)


@pytest.mark.parametrize("stream,compression,words", [
    (_frame(wf.FRAME_ZSTD, 3, b"abc"), wf.COMPRESSION, "malformed frame header"),  # zstd kind in a zlib file
    (_frame(wf.FRAME_ZLIB, 3, zlib.compress(b"abc")), wf.COMPRESSION_ZSTD, "malformed frame header"),
    (_frame(wf.FRAME_ZSTD, 10, _zstd(bytes(1 << 20))), wf.COMPRESSION_ZSTD, "does not decompress"),  # bomb
    (_frame(wf.FRAME_ZSTD, 4, b"not zstd"), wf.COMPRESSION_ZSTD, "does not decompress"),
    (_frame(wf.FRAME_ZSTD, 4, _zstd(b"abcd", content_size=False)), wf.COMPRESSION_ZSTD, "does not decompress"),
    (_frame(wf.FRAME_ZSTD, 4, _zstd(b"abcd") + b"x"), wf.COMPRESSION_ZSTD, "does not decompress"),
])
def test_malformed_zstd_frames_are_refused(stream, compression, words):
    with pytest.raises(wf.WalError, match=words):
        b"".join(wf.unframe([stream], compression))


def test_unknown_compression_is_refused():
    with pytest.raises(wf.WalError, match="unknown compression"):
        wf.plaintext([b"x"], "lz4-frames")


def test_fast_key_loading_matches_cryptography(tmp_path):
    """The program decodes the usual PEM forms itself (import cost); the keys and ids must be the same."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "rec.pub"
    pub.write_bytes(rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    fast = wp._recipient(str(pub))
    assert fast.public_numbers() == rsa_key.public_key().public_numbers()
    assert container.public_key_id(fast) == container.public_key_id(container.load_public_key(str(pub)))
    pkcs1 = tmp_path / "rec-pkcs1.pub"  # another form: left to cryptography
    pkcs1.write_bytes(rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.PKCS1))
    assert wp._recipient(str(pkcs1)).public_numbers() == rsa_key.public_key().public_numbers()
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert wp._rsa_spki(der + b"\0") is None and wp._rsa_spki(der[:-1]) is None
    ed = ed25519.Ed25519PrivateKey.generate()
    key = tmp_path / "ed.key"
    key.write_bytes(ed.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    fast_signer = wp._signer({"signing_key": str(key)})
    assert signing.key_id(fast_signer) == signing.key_id(ed) and fast_signer.sign(b"m") == ed.sign(b"m")
    wrong = tmp_path / "small.pub"
    wrong.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_bytes(
        PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(RansomeyeError, match="at least 2048 bits"):
        container.encryptor(open(os.devnull, "wb"), recipients=[wp._recipient(str(wrong))])


def test_fast_private_key_loading_matches_cryptography(tmp_path):
    """get decodes an unencrypted PKCS#8 RSA key itself; the key must be the same, and every other form, a
    truncated or padded one, or a too small key goes through cryptography (which explains what is wrong)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none = serialization.NoEncryption()
    path = tmp_path / "rec.key"
    path.write_bytes(rsa_key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, none))
    fast = wp._restore_key(str(path))
    assert fast.private_numbers() == rsa_key.private_numbers()
    sealed = rsa_key.public_key().encrypt(b"file key", container._oaep())
    assert fast.decrypt(sealed, container._oaep()) == b"file key"
    der = rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, none)
    assert wp._rsa_pkcs8(der) is not None
    assert wp._rsa_pkcs8(der + b"\0") is None and wp._rsa_pkcs8(der[:-1]) is None
    assert wp._rsa_pkcs8(der[:6] + b"\x01" + der[7:]) is None  # version 1 (with public key): not this path
    traditional = tmp_path / "rec-pkcs1.key"  # another form: left to cryptography
    traditional.write_bytes(rsa_key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, none))
    assert wp._restore_key(str(traditional)).private_numbers() == rsa_key.private_numbers()
    small = tmp_path / "small.key"
    small.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, none))
    with pytest.raises(RansomeyeError, match="2048"):
        wp._restore_key(str(small))


def test_a_reader_written_from_the_document_reads_the_wal_archive(repo):
    """docs/BACKUP_FORMAT.md 4.2-4.3 are complete: the independent reader (no collection code) gets every file back,
    from both chain forms, and trusts nothing after the last signature."""
    import subprocess
    import sys
    prev, first = _legacy(repo, 0, None)
    sources = {seg_name(0): first}
    for i in (1, 2):
        _outcome, path, name = _push(repo, i, fill=b"INSERT INTO alerts VALUES (1, 'burst');\n")
        sources[name] = path
    repo["sign_every"] = 5
    _outcome, _path, unsigned = _push(repo, 3)
    dest = os.path.join(repo["_dir"], "independent")
    os.mkdir(dest)
    reader = os.path.join(os.path.dirname(__file__), "independent_reader.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, reader, "wal", repo["repo"], dest, "--trusted",
                           os.path.join(repo["_dir"], "sign.pub"), "--key-file", repo["key_file"]],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(dest)) == sorted(sources) and unsigned not in os.listdir(dest)
    for name, path in sources.items():
        with open(os.path.join(dest, name), "rb") as got, open(path, "rb") as want:
            assert got.read() == want.read()


@pytest.mark.parametrize("spare_cpu", [True, False])
def test_look_ahead_in_process_one_or_two_cpus(repo, monkeypatch, spare_cpu):
    """The look-ahead (BACKUP_FORMAT 4.3.2) with the second segment of a pair on a thread, and inline on one CPU:
    the same chain, in PostgreSQL's order, and a marker the launcher's check accepts for each segment ahead."""
    from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_install as inst
    from ansible_collections.ransomeye.ops.plugins.module_utils import _wal_spool as spool
    monkeypatch.setattr(wp, "_spare_cpu", lambda: spare_cpu)
    prog = os.path.join(repo["_dir"], "prog")
    os.makedirs(os.path.join(prog, "spool"))
    config = dict(_cfg(repo), look_ahead=3)
    config_path = os.path.join(prog, "archive.json")
    with open(config_path, "wb") as handle:
        handle.write(inst.config_bytes(config))  # the installer's form: the launcher reads "repo" from it
    wal = os.path.join(repo["_dir"], "pg_wal")
    os.makedirs(os.path.join(wal, "archive_status"))
    names = [seg_name(i) for i in range(5)]
    for name in names:
        segment(os.path.join(wal, name), name, b"INSERT INTO alerts VALUES (1, 'burst');\n")
        open(os.path.join(wal, "archive_status", name + ".ready"), "w").close()
    assert wp.push(config, os.path.join(wal, names[0]), names[0], config_path=config_path) == "archived"
    assert wf.chain_names(wf.WalLayout(repo["repo"])) == names[:4]  # look_ahead 3: the next three, in order
    assert sorted(os.listdir(os.path.join(prog, "spool"))) == [n + ".ok" for n in names[1:4]]
    for name in names[1:4]:
        assert spool.acknowledged(config_path, os.path.join(wal, name), name)
    assert not spool.acknowledged(config_path, os.path.join(wal, names[4]), names[4])  # never archived
    report = _check(repo)
    assert report.problems == [] and sorted(report.good) == names[:4]
