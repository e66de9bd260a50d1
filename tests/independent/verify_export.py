#!/usr/bin/env python3
"""An independent verifier of chatledger exports.

It shares no code with the server: only Python's standard library, the `rfc8785` and
`cryptography` packages and the rules of API.md "Hash chain" and "Checkpoints".
    verify_export.py EXPORT.ndjson [EXPECTED_HEAD_HASH] [--log-key VKEY]
        exit 0 intact (and reaching the head; with --log-key, its head leaf proved in a
        checkpoint signed by that C2SP note verifier key), 1 not
    verify_export.py --vectors tests/vectors/hash_chain.json   checks the golden vectors
"""

import base64
import binascii
import hashlib
import json
import sys

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HEADER_FIELDS = ("tenant", "session_id", "seq", "kind", "role", "created_at",
                 "idempotency_key", "author", "payload_digest")


class Broken(Exception):
    pass


def unique_keys(pairs):
    """Refuses an object with a key twice: the digest could not tell which one was hashed."""
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Broken("an object holds a key twice")
    return dict(pairs)


def payload_digest(salt_hex, content, metadata):
    payload = rfc8785.dumps({"content": content, "metadata": metadata})
    return hashlib.sha256(bytes.fromhex(salt_hex) + payload).hexdigest()


def entry_hash(prev: bytes, entry) -> bytes:
    header = rfc8785.dumps({field: entry[field] for field in HEADER_FIELDS})
    return hashlib.sha256(prev + header).digest()


def b64(text):
    """Strict standard base64 (padding and trailing bits canonical)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Broken("not base64")
    if base64.b64encode(raw).decode() != text:
        raise Broken("not canonical base64")
    return raw


def parse_verifier_key(text):
    """`<name>+<8 hex key id>+<base64(0x01 || 32-byte Ed25519 key)>` (C2SP signed-note)."""
    name, key_id, material = text.strip().split("+", 2)
    raw = b64(material)
    if len(raw) != 33 or raw[0] != 0x01 or len(key_id) != 8:
        raise Broken("--log-key is not an Ed25519 note verifier key")
    expected_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if expected_id.hex() != key_id:
        raise Broken("--log-key: its key id is not that of its key")
    return name, expected_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(note, log_key):
    """The (size, root) of a signed checkpoint note with a valid signature by log_key."""
    name, key_id, public_key = log_key
    text, sep, signatures = note.partition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise Broken("the checkpoint is not a signed note")
    text += "\n"
    signed = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise Broken("the checkpoint has a malformed signature line")
        signer, _, blob = line[2:].partition(" ")
        raw = b64(blob)
        if signer != name or raw[:4] != key_id:
            continue
        try:
            public_key.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise Broken("the checkpoint's signature does not verify")
        signed = True
    if not signed:
        raise Broken("the checkpoint is not signed by the log key")
    lines = text.split("\n")
    if len(lines) < 4 or not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise Broken("the checkpoint's text is malformed")
    root = b64(lines[2])
    if len(root) != 32:
        raise Broken("the checkpoint's root is not 32 bytes")
    return int(lines[1]), root


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf_hash, index, size, path, root):
    """RFC 9162 section 2.1.3.2, every path element used, none left over."""
    if index >= size:
        raise Broken("the head leaf's index is beyond the checkpoint")
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise Broken("the inclusion path is too long")
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise Broken("the head leaf is not in the checkpoint's tree")


def check_log(trailer, log_key):
    for field in ("leaf_index", "leaf", "checkpoint", "inclusion_path"):
        if field not in trailer:
            raise Broken(f"the trailer has no {field}")
    size, root = open_checkpoint(trailer["checkpoint"], log_key)
    leaf = trailer["leaf"]
    first_seq = leaf.get("first_seq")
    expected = {"type": "append", "tenant": trailer["tenant"], "session_id": trailer["session_id"],
                "first_seq": first_seq, "last_seq": trailer["last_seq"],
                "head_hash": trailer["head_hash"]}
    if (leaf != expected or type(first_seq) is not int
            or not 1 <= first_seq <= trailer["last_seq"]):
        raise Broken("the trailer's leaf is not the append of this head")
    leaf_hash = hashlib.sha256(b"\x00" + rfc8785.dumps(leaf)).digest()
    path = [b64(h) for h in trailer["inclusion_path"]]
    if any(len(h) != 32 for h in path):
        raise Broken("the inclusion path holds a malformed hash")
    verify_inclusion(leaf_hash, trailer["leaf_index"], size, path, root)


def verify(path, expected_head, log_key=None):
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line, object_pairs_hook=unique_keys) for line in handle if line.strip()]
    if not lines or "export_trailer" not in lines[-1]:
        raise Broken("no trailer")
    trailer = lines[-1]["export_trailer"]
    entries = lines[:-1]
    prev = bytes(32)
    erased = 0
    # Erased seqs no erasure entry has accounted for yet: an erased entry must be followed by an
    # erasure entry whose erased_through_seq reaches it.
    unaccounted = []
    reached = expected_head is None
    for position, entry in enumerate(entries, start=1):
        if entry["seq"] != position:
            raise Broken(f"seq {position}: gap")
        if (entry["tenant"], entry["session_id"]) != (trailer["tenant"], trailer["session_id"]):
            raise Broken(f"seq {position}: another session")
        if entry.get("erased"):
            # The payload is gone: the digest is taken as stored, and the chain checks it.
            if (entry["content"], entry["metadata"], entry["salt"]) != (None, None, None):
                raise Broken(f"seq {position}: an erased entry kept its payload")
            erased += 1
        else:
            digest = payload_digest(entry["salt"], entry["content"], entry["metadata"])
            if digest != entry["payload_digest"]:
                raise Broken(f"seq {position}: payload digest")
        if entry["prev_hash"] != prev.hex():
            raise Broken(f"seq {position}: prev hash")
        hashed = entry_hash(prev, entry)
        if hashed.hex() != entry["hash"]:
            raise Broken(f"seq {position}: hash")
        if entry.get("erased"):
            unaccounted.append(position)
        elif entry["kind"] == "erasure":
            through = (entry["metadata"] or {}).get("erased_through_seq", 0)
            unaccounted = [seq for seq in unaccounted if seq > through]
        prev = hashed
        reached = reached or hashed.hex() == expected_head
    if trailer["last_seq"] != len(entries) or trailer["head_hash"] != prev.hex():
        raise Broken("trailer does not match the chain")
    if unaccounted:
        raise Broken(f"seq {unaccounted[0]}: erased, and no erasure entry accounts for it")
    if not reached:
        raise Broken("expected head not reached")
    if log_key is not None:
        check_log(trailer, log_key)
    return f"intact through seq {len(entries)}, head {prev.hex()}, {erased} erased"


def check_vectors(path):
    with open(path, encoding="utf-8") as handle:
        cases = json.load(handle)["cases"]
    for case in cases:
        digest = payload_digest(case["salt"], case["content"], case["metadata"])
        if digest != case["payload_digest"]:
            raise Broken(f"{case['name']}: payload digest")
        if entry_hash(bytes.fromhex(case["prev_hash"]), case["header"]).hex() != case["hash"]:
            raise Broken(f"{case['name']}: hash")
    return f"{len(cases)} golden vectors hash alike"


def main():
    try:
        args = sys.argv[1:]
        log_key = None
        if "--log-key" in args:
            at = args.index("--log-key")
            log_key = parse_verifier_key(args[at + 1])
            del args[at:at + 2]
        if args[0] == "--vectors":
            print(check_vectors(args[1]))
        else:
            print(verify(args[0], args[1] if len(args) > 1 else None, log_key))
    except (Broken, KeyError, TypeError, ValueError) as why:
        print(f"BROKEN: {why}")
        sys.exit(1)


if __name__ == "__main__":
    main()
