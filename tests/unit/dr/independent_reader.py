"""An independent reader of repository format v2 and of the WAL archive, written from docs/BACKUP_FORMAT.md
sections 1, 2.2, 4.2-4.3 and 5 alone.

It deliberately imports nothing from the collection (only the standard library and `cryptography`): if the
document is incomplete or wrong, this reader fails to decode what the collection wrote.

    python independent_reader.py REPO MANIFEST (--key-file F | --private-key F) COMPONENT DEST
extracts one component of one manifest under DEST (the database component: DEST/<db>.pgdump, a pg_dump
custom-format file);

    python independent_reader.py wal REPO DEST --trusted PUB (--key-file F | --private-key F)
writes every authentic archived WAL file (4.2: linked, covered by a valid signature) into DEST.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import zlib

import zstandard

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class ReaderError(Exception):
    pass


# ---------------------------------------------------------------- section 1: the container

def load_key_file(path):
    data = open(path, "rb").read()
    for end in (b"\r\n", b"\n"):
        if data.endswith(end):
            data = data[:-len(end)]
            break
    if len(data) == 32:
        return data
    if len(data) == 64:
        return bytes.fromhex(data.decode())
    return base64.b64decode(data, validate=True)


def _hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def decrypt_container(data, expected_id, key=None, private_key=None):
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(data):
            raise ReaderError("header truncated")
        out = data[pos:pos + n]
        pos += n
        return out

    if take(8) != b"RYECNTR\n":
        raise ReaderError("bad magic")
    version, suite, mode, reserved = take(4)
    if (version, suite, reserved) != (1, 1, 0) or mode not in (1, 2):
        raise ReaderError("unknown container version/suite/mode")
    (chunk_size,) = struct.unpack(">I", take(4))
    salt = take(32)
    (length,) = struct.unpack(">H", take(2))
    object_id = take(length).decode("utf-8")
    (count,) = struct.unpack(">H", take(2))
    stanzas = []
    for _stanza in range(count):
        key_id = take(16)
        (wlen,) = struct.unpack(">H", take(2))
        stanzas.append((key_id, take(wlen)))
    header = data[:pos]
    header_mac = take(32)
    file_key = None
    if mode == 2:
        wrapped = stanzas[0][1]
        file_key = AESGCM(key).decrypt(wrapped[:12], wrapped[12:], b"ransomeye.ops/v1 key-file wrap" + salt)
    else:
        der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        mine = hashlib.sha256(der).digest()[:16]
        for key_id, wrapped in stanzas:
            if key_id == mine:
                file_key = private_key.decrypt(wrapped, padding.OAEP(
                    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=b"ransomeye.ops/v1 file key"))
        if file_key is None:
            raise ReaderError("no stanza for this private key")
    k_header = _hkdf(file_key, salt, b"ransomeye.ops/v1 header")
    k_payload = _hkdf(file_key, salt, b"ransomeye.ops/v1 payload")
    if not hmac.compare_digest(hmac.new(k_header, header, hashlib.sha256).digest(), header_mac):
        raise ReaderError("header MAC")
    if object_id != expected_id:
        raise ReaderError("object id mismatch")
    aad = hashlib.sha256(header + header_mac).digest()
    aead = AESGCM(k_payload)
    body = data[pos:]
    out = []
    i = 0
    step = chunk_size + 16
    while True:
        piece = body[i * step:(i + 1) * step]
        last = (i + 1) * step >= len(body)
        if len(piece) < 16:
            raise ReaderError("truncated")
        nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        plain = aead.decrypt(nonce, piece, aad)
        if last and not plain and i:
            raise ReaderError("empty final chunk")
        out.append(plain)
        if last:
            break
        i += 1
    return b"".join(out)


# ---------------------------------------------------------------- section 5: v2

class Repo:
    def __init__(self, path, manifest_path, key=None, private_key=None):
        self.path = path
        self.key, self.private_key = key, private_key
        self.body = json.load(open(manifest_path, "rb"))["manifest"]
        self.objects = self.body["objects"]
        self.index = {}
        for oid, rec in self.objects.items():
            if rec["kind"] == "index":
                data = self._raw(oid)
                if hashlib.sha256(data).hexdigest() != rec["ciphertext_sha256"] or len(data) != rec["ciphertext_size"]:
                    raise ReaderError("index %s does not match the manifest" % oid)
                self._load_index(data)
        self.packs = {}

    def _raw(self, oid):
        return open(os.path.join(self.path, "objects", oid[:2], oid), "rb").read()

    def _load_index(self, data):
        magic, n_packs, n_blobs = struct.unpack(">8sII", data[:16])
        if magic != b"RYEIDX02" or len(data) != 16 + 32 * n_packs + 50 * n_blobs:
            raise ReaderError("bad index")
        packs = [data[16 + 32 * i:48 + 32 * i].hex() for i in range(n_packs)]
        base = 16 + 32 * n_packs
        for i in range(n_blobs):
            blob, pack_no, offset, length, raw_length, kind, comp = struct.unpack(
                ">32sIIIIBB", data[base + 50 * i:base + 50 * (i + 1)])
            pack = packs[pack_no]
            if pack in self.objects and self.objects[pack]["kind"] == "pack":
                self.index[blob.hex()] = (pack, offset, length, raw_length, kind, comp)

    def pack(self, pack_id):
        if pack_id not in self.packs:
            plain = decrypt_container(self._raw(pack_id), pack_id, self.key, self.private_key)
            rec = self.objects[pack_id]
            if hashlib.sha256(plain).hexdigest() != rec["plaintext_sha256"] or len(plain) != rec["plaintext_size"]:
                raise ReaderError("pack %s does not match the manifest" % pack_id)
            self.packs[pack_id] = plain
        return self.packs[pack_id]

    def blob(self, blob_hex, want_kind):
        pack, offset, length, raw_length, kind, comp = self.index[blob_hex]
        if kind != want_kind:
            raise ReaderError("blob type")
        stored = self.pack(pack)[offset:offset + length]
        if comp == 0:
            data = stored
        elif comp == 1:       # zlib (RFC 1950), written before format 5.13
            data = zlib.decompress(stored)
        elif comp == 2:       # 5.13: one zstd frame (RFC 8878) declaring raw_length, nothing after it
            if zstandard.frame_content_size(stored) != raw_length:
                raise ReaderError("zstd frame content size")
            data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_length, allow_extra_data=False)
        else:
            raise ReaderError("unknown compression %d" % comp)
        if len(data) != raw_length:
            raise ReaderError("raw length")
        return data

    def tree(self, tree_hex):
        doc = json.loads(self.blob(tree_hex, 2))
        assert doc["v"] == 2
        return [(base64.b64decode(e["name"]), e) for e in doc["entries"]]

    def extract(self, component, dest):
        comp = self.body["components"][component]
        if comp.get("layout") == "stream-v2":   # section 5.12: the database dump, one file in a one-entry tree
            return self._extract_stream(comp, os.fsencode(dest))
        assert comp["format"] == "tree-v2"
        dest = os.fsencode(dest)
        self._extract(self.tree(comp["tree"]), b"", dest, top=True)
        return None

    def _extract_stream(self, comp, dest):
        # 5.12: the top tree lists segments 00000000, 00000001, ... (dir entries); each segment's tree holds one
        # file entry named as the stream; the stream is the segments' contents in order
        name = base64.b64decode(comp["name"])
        if b"/" in name or name in (b"", b".", b".."):
            raise ReaderError("bad stream name")
        os.makedirs(dest, exist_ok=True)
        target = os.path.join(dest, name)
        digest = hashlib.sha256()
        size = 0
        with open(target, "wb") as handle:
            for number, (seg_name, seg) in enumerate(self.tree(comp["tree"])):
                if seg_name != b"%08d" % number or seg["type"] != "dir":
                    raise ReaderError("bad segment entry")
                entries = self.tree(seg["tree"])
                if len(entries) != 1 or entries[0][0] != name or entries[0][1]["type"] != "file":
                    raise ReaderError("a segment holds exactly one file entry named as the stream")
                entry = entries[0][1]
                part = hashlib.sha256()
                for blob in entry["chunks"]:   # chunk lengths do not matter to a reader: the stream is their concatenation
                    data = self.blob(blob, 1)
                    part.update(data)
                    digest.update(data)
                    size += len(data)
                    handle.write(data)
                if part.hexdigest() != entry["sha256"]:
                    raise ReaderError("segment hash")
        if digest.hexdigest() != comp["sha256"] or size != comp["size"]:
            raise ReaderError("stream hash")
        return target

    def _extract(self, entries, path, dest, top):
        dirs = []
        for name, entry in entries:
            full = name if top else path + b"/" + name
            target = dest + full
            if top:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            if entry["type"] == "dir":
                dirs.append((full, entry))
            elif entry["type"] == "file":
                data = b"".join(self.blob(c, 1) for c in entry["chunks"])
                if hashlib.sha256(data).hexdigest() != entry["sha256"] or len(data) != entry["size"]:
                    raise ReaderError("file hash")
                with open(target, "wb") as handle:
                    handle.write(data)
                os.chmod(target, entry["mode"])
                os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            elif entry["type"] == "symlink":
                os.symlink(base64.b64decode(entry["target"]), target)
            elif entry["type"] == "hardlink":
                os.link(dest + base64.b64decode(entry["target"]), target)
        for full, entry in dirs:
            os.mkdir(dest + full, 0o700)
            self._extract(self.tree(entry["tree"]), full, dest, top=False)
            os.chmod(dest + full, entry["mode"])


# ---------------------------------------------------------------- section 4: the WAL archive

def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _wal_docs(repo):
    docs = []
    chain = os.path.join(repo, "wal", "chain")
    for fname in sorted(os.listdir(chain)) if os.path.isdir(chain) else []:
        raw = open(os.path.join(chain, fname), "rb").read()
        docs.append((raw, json.loads(raw)))
    logdir = os.path.join(repo, "wal", "log")
    logs = sorted(f for f in os.listdir(logdir) if f.endswith(".log")) if os.path.isdir(logdir) else []
    for index, fname in enumerate(logs):
        lines = open(os.path.join(logdir, fname), "rb").read().split(b"\n")
        if lines.pop() and index != len(logs) - 1:
            raise ReaderError("unterminated line inside the chain")
        docs.extend((line, json.loads(line)) for line in lines)
    return docs


def _signature_ok(public, data, sig):
    raw = base64.b64decode(sig["sig"], validate=True)
    if base64.b64encode(raw).decode() != sig["sig"]:
        return False
    try:
        if sig["alg"] == "ed25519":
            public.verify(raw, data)
        else:
            public.verify(raw, data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def wal_authentic(repo, trusted_pub):
    """{name: entry} of the entries up to the last one with a valid signature by ``trusted_pub`` (4.2.2)."""
    der = trusted_pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = hashlib.sha256(der).hexdigest()[:32]
    docs = _wal_docs(repo)
    last_signed = -1
    for i, (raw, doc) in enumerate(docs):
        entry = doc["entry"]
        if _canonical(doc) != raw:
            raise ReaderError("entry %d is not canonical JSON" % i)
        if i and (entry["n"] != docs[i - 1][1]["entry"]["n"] + 1 or
                  entry["prev"] != hashlib.sha256(_canonical(docs[i - 1][1]["entry"])).hexdigest()):
            raise ReaderError("chain broken before entry %d" % entry["n"])
        for sig in doc["signatures"]:
            if sig["key_id"] == kid == entry["signer"] and _signature_ok(trusted_pub, _canonical(entry), sig):
                last_signed = i
    return {doc["entry"]["name"]: doc["entry"] for _raw, doc in docs[:last_signed + 1]}


def _unframe(data, compression):
    kinds = {"zlib-frames": (0, 1), "zstd-frames": (0, 2)}[compression]
    out = []
    pos = 0
    while pos < len(data):
        kind, raw_len, stored_len = struct.unpack(">BII", data[pos:pos + 9])
        body = data[pos + 9:pos + 9 + stored_len]
        if len(body) != stored_len or not 0 < raw_len <= 1 << 20:
            raise ReaderError("bad frame")
        if kind not in kinds:
            raise ReaderError("frame kind %d in a %s file" % (kind, compression))
        if kind == 1:
            inflater = zlib.decompressobj()
            body = inflater.decompress(body, raw_len + 1)
            if not inflater.eof:
                raise ReaderError("zlib frame does not end")
        elif kind == 2:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_len)
        if len(body) != raw_len:
            raise ReaderError("frame size")
        out.append(body)
        pos += 9 + stored_len
    return b"".join(out)


def wal_file(repo, entry, key=None, private_key=None):
    name = entry["name"]
    subdir = "history" if name.endswith(".history") else name[:16]
    data = open(os.path.join(repo, "wal", "segments", subdir, name), "rb").read()
    if hashlib.sha256(data).hexdigest() != entry["ciphertext_sha256"]:
        raise ReaderError("%s: ciphertext hash" % name)
    plain = decrypt_container(data, "wal/" + name, key, private_key)
    if entry.get("compression") in ("zlib-frames", "zstd-frames"):
        plain = _unframe(plain, entry["compression"])
    elif "compression" in entry:
        raise ReaderError("unknown compression")
    if hashlib.sha256(plain).hexdigest() != entry["plaintext_sha256"] or len(plain) != entry["plaintext_size"]:
        raise ReaderError("%s: plaintext hash" % name)
    return plain


def _secrets(args):
    """(key file bytes, RSA private key) of --key-file / --private-key, each None when not given."""
    key = load_key_file(args.key_file) if args.key_file else None
    private = None
    if args.private_key:
        private = serialization.load_pem_private_key(open(args.private_key, "rb").read(), password=None)
    return key, private


def wal_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("dest")
    parser.add_argument("--trusted", required=True)
    parser.add_argument("--key-file")
    parser.add_argument("--private-key")
    args = parser.parse_args(argv)
    key, private = _secrets(args)
    trusted = serialization.load_pem_public_key(open(args.trusted, "rb").read())
    for name, entry in wal_authentic(args.repo, trusted).items():
        with open(os.path.join(args.dest, name), "wb") as handle:
            handle.write(wal_file(args.repo, entry, key, private))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["wal"]:
        return wal_main(argv[1:])
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("manifest")
    parser.add_argument("component")
    parser.add_argument("dest")
    parser.add_argument("--key-file")
    parser.add_argument("--private-key")
    args = parser.parse_args(argv)
    key, private = _secrets(args)
    Repo(args.repo, args.manifest, key, private).extract(args.component, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
