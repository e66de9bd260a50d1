#!/usr/bin/env python3
"""An independent verifier of chatledger exports.

It shares no code with the server: only Python's standard library, the `rfc8785` package and
the rules of API.md "Hash chain". Usage: verify_export.py EXPORT.ndjson [EXPECTED_HEAD_HASH]
Exit 0 when the chain is intact (and reaches the expected head), 1 when it is not.
"""

import hashlib
import json
import sys

import rfc8785

HEADER_FIELDS = ("tenant", "session_id", "seq", "kind", "role", "created_at",
                 "idempotency_key", "author", "payload_digest")


def fail(why: str) -> None:
    print(f"BROKEN: {why}")
    sys.exit(1)


def main() -> None:
    path = sys.argv[1]
    expected_head = sys.argv[2] if len(sys.argv) > 2 else None
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    if not lines or "export_trailer" not in lines[-1]:
        fail("no trailer")
    trailer = lines[-1]["export_trailer"]
    entries = lines[:-1]
    prev = bytes(32)
    reached = expected_head is None
    for position, entry in enumerate(entries, start=1):
        if entry["seq"] != position:
            fail(f"seq {position}: gap")
        if (entry["tenant"], entry["session_id"]) != (trailer["tenant"], trailer["session_id"]):
            fail(f"seq {position}: another session")
        payload = rfc8785.dumps({"content": entry["content"], "metadata": entry["metadata"]})
        digest = hashlib.sha256(bytes.fromhex(entry["salt"]) + payload).hexdigest()
        if digest != entry["payload_digest"]:
            fail(f"seq {position}: payload digest")
        if entry["prev_hash"] != prev.hex():
            fail(f"seq {position}: prev hash")
        header = rfc8785.dumps({field: entry[field] for field in HEADER_FIELDS})
        hashed = hashlib.sha256(prev + header).digest()
        if hashed.hex() != entry["hash"]:
            fail(f"seq {position}: hash")
        prev = hashed
        reached = reached or hashed.hex() == expected_head
    if trailer["last_seq"] != len(entries) or trailer["head_hash"] != prev.hex():
        fail("trailer does not match the chain")
    if not reached:
        fail("expected head not reached")
    print(f"intact through seq {len(entries)}, head {prev.hex()}")


if __name__ == "__main__":
    main()
