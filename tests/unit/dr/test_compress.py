"""Blob compression (docs/BACKUP_FORMAT.md 5.3, 5.13): zstd per blob, raw when it does not pay, zlib still read.

Strict decoding is what an attacker who can write the repository meets once a pack authenticated (or a buggy
writer): every malformed piece is refused with a FormatError, never a traceback or an unbounded allocation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest
import zstandard

from tests.harness.paths import REPO
from tests.integration.dr.conftest import dr_keys  # noqa: F401 pylint: disable=unused-import

from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt

TEXT = b"2026-11-27T10:00:00Z host-17 proc=svchost.exe op=rename path=C:\\Users\\a\\doc.docx.locked\n" * 4000


@pytest.mark.parametrize("data", [TEXT, TEXT[:70000], TEXT[:5000], json.dumps({"entries": []}).encode() * 10])
def test_compressible_blobs_are_zstd_frames_that_round_trip(data):
    stored, comp = fmt.encode_blob(data)
    assert comp == fmt.COMP_ZSTD and len(stored) < len(data) * 0.97
    assert zstandard.frame_content_size(stored) == len(data)     # what 5.13 asks a reader to check
    assert fmt.decode_blob(stored, comp, len(data)) == data


@pytest.mark.parametrize("data", [os.urandom(1 << 20), os.urandom(3000), b"tiny", b""])
def test_incompressible_or_tiny_blobs_are_stored_raw(data):
    stored, comp = fmt.encode_blob(data)
    assert comp == fmt.COMP_NONE and stored == data
    assert fmt.decode_blob(stored, comp, len(data)) == data


def test_a_large_blob_whose_sample_is_random_is_stored_raw_even_if_its_tail_compresses():
    data = os.urandom(20000) + bytes(200000)
    assert fmt.encode_blob(data) == (data, fmt.COMP_NONE)


def test_zlib_blobs_written_before_5_13_still_decode():
    for level in (1, 6):
        assert fmt.decode_blob(zlib.compress(TEXT, level), fmt.COMP_ZLIB, len(TEXT)) == TEXT


def _frame_without_size(data):
    return zstandard.ZstdCompressor(write_content_size=False).compress(data)


@pytest.mark.parametrize("stored,comp,raw,reason", [
    (zstandard.ZstdCompressor().compress(TEXT) + b"x", fmt.COMP_ZSTD, len(TEXT), "unused data"),    # appended
    (zstandard.ZstdCompressor().compress(TEXT)[:-4], fmt.COMP_ZSTD, len(TEXT), "does not decompress"),  # truncated
    (zstandard.ZstdCompressor().compress(TEXT), fmt.COMP_ZSTD, len(TEXT) - 1, "declares"),        # length lie
    (_frame_without_size(TEXT), fmt.COMP_ZSTD, len(TEXT), "frame header"),   # content size missing: no bomb
    (b"not zstd at all", fmt.COMP_ZSTD, 15, "frame header"),
    (zlib.compress(TEXT) + b"x", fmt.COMP_ZLIB, len(TEXT), "followed by data"),
    (zlib.compress(bytes(1 << 20)), fmt.COMP_ZLIB, 10, "longer than"),      # a bomb stops at raw_len + 1
    (b"abc", fmt.COMP_NONE, 4, "3 bytes"),
    (b"abc", 7, 3, "unknown compression"),
])
def test_malformed_compressed_blobs_are_refused(stored, comp, raw, reason):
    with pytest.raises(fmt.FormatError) as caught:
        fmt.decode_blob(stored, comp, raw)
    assert reason in caught.value.msg


def test_compressors_are_per_thread():
    import concurrent.futures
    pieces = [TEXT[i:] for i in range(0, 4000, 97)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fmt.encode_blob, pieces))
    for piece, (stored, comp) in zip(pieces, results):
        assert fmt.decode_blob(stored, comp, len(piece)) == piece


# Without zstandard (hidden by a stub that raises ImportError, as on a host where it is not installed): the
# modules still import, a v2 backup fails before it touches the repository with the usual missing-library text,
# and a repository holding only zlib or raw blobs stays readable.
HIDE = "raise ImportError('No module named zstandard (hidden by the test)')\n"


def _run_module(tmp_path, name, args):
    stub = tmp_path / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "zstandard.py").write_text(HIDE)
    argfile = tmp_path / ("%s.json" % name)
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_remote_tmp=str(tmp_path))}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")]),
               LC_ALL="C.UTF-8")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "plugins", "modules", name + ".py"), str(argfile)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_without_zstandard_a_v2_backup_fails_clearly_before_writing(tmp_path, dr_keys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_bytes(TEXT)
    repo = tmp_path / "repo"
    result = _run_module(tmp_path, "ransomeye_backup", dict(
        repo=str(repo), components=["artifacts"], artifact_paths=[str(data)], mode="rsa",
        recipients=[dr_keys["recipient_pub"]], signing_key=dr_keys["signing_key"], cache_dir=str(tmp_path / "c")))
    assert result["failed"] is True
    assert "zstandard" in result["msg"] and "Failed to import the required Python library" in result["msg"]
    assert not repo.exists()


def test_without_zstandard_decoding_a_zstd_blob_fails_clearly_and_zlib_still_decodes():
    code = ("import sys; sys.modules['zstandard'] = None\n"
            "from ansible_collections.ransomeye.ops.plugins.module_utils._backup import fmt\n"
            "from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError\n"
            "import zlib\n"
            "assert fmt.decode_blob(zlib.compress(b'x' * 500), fmt.COMP_ZLIB, 500) == b'x' * 500\n"
            "assert fmt.decode_blob(b'y' * 300, fmt.COMP_NONE, 300) == b'y' * 300\n"
            "try:\n"
            "    fmt.decode_blob(bytes.fromhex(sys.argv[1]), fmt.COMP_ZSTD, 500)\n"
            "except RansomeyeError as exc:\n"
            "    print(exc.msg)\n")
    frame = zstandard.ZstdCompressor().compress(b"x" * 500).hex()
    proc = subprocess.run([sys.executable, "-c", code, frame], capture_output=True, text=True, check=False,
                          env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "zstandard" in proc.stdout and "Failed to import the required Python library" in proc.stdout
