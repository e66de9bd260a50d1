#!/usr/bin/env python3
"""Writes hash_chain.json, the golden vectors of API.md "Hash chain".

Computed with Python's standard library and the `rfc8785` package only, so they share no code
with chatledger's Rust or SQL writers, which the tests check against them (as they check the
independent verifier, tests/independent/verify_export.py). Run it only to add cases:
    python3 -m pip install 'rfc8785>=0.1.4,<0.2'; python3 tests/vectors/make_hash_chain.py
"""

import hashlib
import json
import pathlib

import rfc8785

GENESIS = "00" * 32
HEADER_FIELDS = ("tenant", "session_id", "seq", "kind", "role", "created_at",
                 "idempotency_key", "author", "payload_digest")


def case(name, header, content, metadata, salt, prev=GENESIS, api_reachable=True):
    payload = rfc8785.dumps({"content": content, "metadata": metadata})
    digest = hashlib.sha256(bytes.fromhex(salt) + payload).hexdigest()
    header = dict(header, payload_digest=digest)
    assert tuple(sorted(header)) == tuple(sorted(HEADER_FIELDS)), name
    canonical_header = rfc8785.dumps(header)
    entry_hash = hashlib.sha256(bytes.fromhex(prev) + canonical_header).hexdigest()
    return {
        "name": name,
        "api_reachable": api_reachable,
        "prev_hash": prev,
        "salt": salt,
        "content": content,
        "metadata": metadata,
        "header": header,
        "canonical_payload": payload.decode("utf-8"),
        "payload_digest": digest,
        "canonical_header": canonical_header.decode("utf-8"),
        "hash": entry_hash,
    }


def header(seq=1, kind="message", role="user", key=None, session="user-42", tenant="acme",
           at="2026-11-21T10:15:30.123456Z", author="key_01JD5X2E4K9M7Q8R3S6T0V1W2Y"):
    return {"tenant": tenant, "session_id": session, "seq": seq, "kind": kind, "role": role,
            "created_at": at, "idempotency_key": key, "author": author}


def main():
    salt = "000102030405060708090a0b0c0d0e0f"
    cases = [
        case("first entry of a session", header(), "My order number is 8892", {}, salt),
        case("empty content, assistant", header(seq=2, role="assistant"), "", {"model": "gpt-x"},
             "ffffffffffffffffffffffffffffffff", prev="ab" * 32),
        case("context reset: role and content null", header(seq=3, kind="context_reset", role=None),
             None, {"why": "new topic"}, salt, prev="cd" * 32),
        case("idempotency key with quotes and backslashes",
             header(key='turn-"5f3a"\\x\\\\y\'/', role="tool"), "ok", {}, salt),
        case("idempotency key of 255 visible characters",
             header(key="".join(chr(33 + i % 94) for i in range(255))), "x", {}, salt),
        case("every session id character, 128 long",
             header(session=("A.b_c:d@e-f0123456789" * 7)[:128]), "x", {}, salt),
        case("largest seq that every JSON reader holds", header(seq=9007199254740991),
             "x", {}, salt, prev="ef" * 32),
        case("tenant with digits and dashes", header(tenant="a-1-b-2"), "x", {}, salt),
        case("text with control characters, quotes and non-ASCII", header(),
             "tab\tnl\ncr\rbs\b ff\f \u0001\u001f\u007f \"q\" \\ / Grüße 🌍 退货 \u2028\u2029 \ufeff",
             {"note": "ü-free", "emoji": "😀"}, salt),
        case("content blocks with numbers", header(role="assistant"),
             ["plain", {"type": "text", "text": "hi", "n": [0, -1, 1.5, 0.1, 1e-7, 1e21, 123456789.125,
                                                          9007199254740991, -9007199254740991,
                                                          818689267909465.25, 5e-324, 4.5, 2e-3]},
              "", {}], {"tokens": {"prompt": 1234, "completion": 210}}, salt),
        case("metadata keys sorted by UTF-16 code units", header(),
             "x", {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001F600": 5, "\u0080": 6,
                   "\u00f6": 7, "a": {"b": [True, False, None]}}, salt),
        case("numbers tied between two doubles round to even", header(),
             [{"n": 818689267909465.25}, {"n": 1099511627776.375}, {"n": 4503599627370495.5}], {}, salt),
        case("control characters and non-ASCII in header strings", header(
                 session="ses\u0001\u001f\"\\sion-ü", key="k\n\t\u007f-退货", tenant="ténant"),
             "x", {}, salt, api_reachable=False),
    ]
    out = {
        "description": "Golden vectors of API.md 'Hash chain', computed by make_hash_chain.py "
                       "with Python's hashlib and rfc8785. Cases with api_reachable false use "
                       "header strings the API never accepts; the hash rule still defines them.",
        "cases": cases,
    }
    path = pathlib.Path(__file__).with_name("hash_chain.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
