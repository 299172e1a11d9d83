"""200 MB through the container with flat memory, measured in a fresh process (peak RSS via getrusage)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.harness.paths import COLLECTIONS

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, random, resource, sys
    sys.path.insert(0, %(collections)r)
    from ansible_collections.ransomeye.ops.plugins.module_utils import _crypto_container as cc

    MIB = 1 << 20

    def stream(seed, total):
        rng = random.Random(seed)
        left = total
        while left:
            n = min(MIB, left)
            yield rng.randbytes(n)
            left -= n

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    key = os.urandom(32)
    path = %(path)r
    total = %(total)d

    def round_trip(size):
        expected = hashlib.sha256()
        with open(path, "wb") as dst:
            with cc.encryptor(dst, key=key, object_id="big") as writer:
                for block in stream(5, size):
                    expected.update(block)
                    writer.write(block)
        got = hashlib.sha256()
        with open(path, "rb") as src:
            for chunk in cc.decrypt_chunks(src, key=key, expected_object_id="big"):
                got.update(chunk)
        return writer.info, expected.hexdigest(), got.hexdigest()

    round_trip(3 * MIB + 5)          # warm up: every code path and buffer once
    before = peak()
    info, expected, got = round_trip(total)
    after = peak()
    print(json.dumps({"before": before, "after": after, "size": info.plaintext_size,
                      "ct_size": info.ciphertext_size, "file_size": os.path.getsize(path),
                      "expected": expected, "got": got, "pt": info.plaintext_sha256}))
    """
)


@pytest.mark.slow
def test_200mb_round_trip_with_flat_memory(tmp_path):
    total = 200 * (1 << 20)
    script = SCRIPT % {"collections": COLLECTIONS, "path": str(tmp_path / "big.rye"), "total": total}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["size"] == total
    assert result["got"] == result["expected"] == result["pt"]
    assert result["file_size"] == result["ct_size"] > total
    growth = result["after"] - result["before"]
    assert growth < 20 * (1 << 20), "peak RSS grew by %.1f MiB" % (growth / (1 << 20))
