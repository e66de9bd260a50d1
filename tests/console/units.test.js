// The console's pure modules (snippet parsing, plain-word verdicts, the SSE parser), in node:
// no browser needed.

import { test } from "node:test";
import assert from "node:assert/strict";

import { parseSnippet, describeVerify, contentParts, pageStart, describeProblem, describeLag } from "../../console/format.js";
import { SseParser } from "../../console/sse.js";

test("snippets split into plain runs and matches, markup staying text", () => {
  assert.deepEqual(parseSnippet("我的订单号是 [[8892]], again [[8892]]."), [
    { text: "我的订单号是 ", match: false },
    { text: "8892", match: true },
    { text: ", again ", match: false },
    { text: "8892", match: true },
    { text: ".", match: false },
  ]);
  assert.deepEqual(parseSnippet("<img src=x [[onerror]]=alert(1)>"), [
    { text: "<img src=x ", match: false },
    { text: "onerror", match: true },
    { text: "=alert(1)>", match: false },
  ]);
  assert.deepEqual(parseSnippet("unclosed [[ marker"), [{ text: "unclosed [[ marker", match: false }]);
  assert.deepEqual(parseSnippet(""), []);
});

test("verify answers read as plain words naming the seq and the reason", () => {
  const ok = describeVerify({ ok: true, verified_through_seq: 9, head_hash: "ab".repeat(32), erased_entries: 0 });
  assert.equal(ok.headline, "Intact through seq 9.");
  const erased = describeVerify({ ok: true, verified_through_seq: 6, head_hash: "ab".repeat(32), erased_entries: 5 });
  assert.match(erased.detail, /5 erased entries verify/);
  const bad = describeVerify({ ok: false, first_bad_seq: 3, reason: "payload_digest_mismatch" });
  assert.equal(bad.headline, "Tampered: the first bad entry is seq 3.");
  assert.match(bad.detail, /not what was written.*Entries 1 to 2 verify/);
  for (const reason of ["prev_hash_mismatch", "hash_mismatch", "seq_gap", "head_mismatch"]) {
    assert.doesNotMatch(describeVerify({ ok: false, first_bad_seq: 1, reason }).detail, /the check failed/);
  }
});

test("content blocks become text, other blocks JSON", () => {
  assert.deepEqual(contentParts("hi"), [{ text: "hi", json: false }]);
  assert.deepEqual(contentParts([{ type: "text", text: "a" }, "b", { type: "image" }]), [
    { text: "a", json: false },
    { text: "b", json: false },
    { text: '{\n  "type": "image"\n}', json: true },
  ]);
  assert.deepEqual(contentParts(null), []);
});

test("pages start after multiples of their size", () => {
  assert.equal(pageStart(1, 100), 0);
  assert.equal(pageStart(100, 100), 0);
  assert.equal(pageStart(101, 100), 100);
  assert.equal(pageStart(50007, 100), 50000);
});

test("problems read as sentences", () => {
  assert.match(describeProblem({ status: 503, retryAfter: 1 }), /database is unavailable.*1 s/);
  assert.match(describeProblem({ status: 404, code: "session_not_found" }, { session: "x" }), /no session “x”/);
  assert.match(describeProblem({ status: 409, code: "legal_hold", holds: [4, 7] }), /legal hold #4, #7/);
  assert.match(describeProblem({ status: 0 }), /cannot be reached/);
  // An export whose transfer broke off (it was "Request failed (undefined)").
  assert.match(describeProblem({ status: 0, code: "export_incomplete" }), /stopped before its end.*Download it again/);
});

test("an answer from a replica behind by a second or more says so", () => {
  assert.equal(describeLag(null), null, "not read from a replica");
  assert.equal(describeLag(0), null);
  assert.equal(describeLag(999), null);
  assert.match(describeLag(5620), /may be up to 6 s behind the primary/);
  assert.match(describeLag(9223372036854775807), /an unknown time behind/);
});

test("the SSE parser takes events in any chunks, CRLF or LF, and skips comments", () => {
  const parser = new SseParser();
  const stream = ': keep-alive\r\nid: 7\r\nevent: entry\r\ndata: {"seq":7}\r\n\r\nid: 8\nevent: entry\ndata: {"seq":\ndata: 8}\n\n';
  const events = [];
  for (const char of stream) events.push(...parser.push(char));
  assert.deepEqual(events, [
    { id: "7", event: "entry", data: '{"seq":7}' },
    { id: "8", event: "entry", data: '{"seq":\n8}' },
  ]);
  assert.equal(parser.lastEventId, "8");
  assert.deepEqual(parser.push(":only a comment\n\n"), []);
});
