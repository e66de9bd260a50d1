#!/usr/bin/env python3
"""An independent verifier of chatledger exports.

It shares no code with the server: only Python's standard library, the `rfc8785` package and
the rules of API.md "Hash chain".
    verify_export.py EXPORT.ndjson [EXPECTED_HEAD_HASH]   exit 0 intact (and reaching the head), 1 not
    verify_export.py --vectors tests/vectors/hash_chain.json   checks the golden vectors
"""

import hashlib
import json
import sys

import rfc8785

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


def verify(path, expected_head):
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line, object_pairs_hook=unique_keys) for line in handle if line.strip()]
    if not lines or "export_trailer" not in lines[-1]:
        raise Broken("no trailer")
    trailer = lines[-1]["export_trailer"]
    entries = lines[:-1]
    prev = bytes(32)
    erased = 0
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
        prev = hashed
        reached = reached or hashed.hex() == expected_head
    if trailer["last_seq"] != len(entries) or trailer["head_hash"] != prev.hex():
        raise Broken("trailer does not match the chain")
    if not reached:
        raise Broken("expected head not reached")
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
        if sys.argv[1] == "--vectors":
            print(check_vectors(sys.argv[2]))
        else:
            print(verify(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
    except (Broken, KeyError, TypeError, ValueError) as why:
        print(f"BROKEN: {why}")
        sys.exit(1)


if __name__ == "__main__":
    main()
