-- pgbench: one page of 100 entries at a random offset, the same single function call that
-- GET /v1/sessions/{id}/messages?after_seq=N&limit=100 makes (src/ledger/read.rs).
-- Variables (pgbench -D): tenant_id, key_id, prefix, sessions, max_after.
\set sid random(1, :sessions)
\set after random(0, :max_after)
SELECT last_seq, context_start_seq, seq, kind, role, content, metadata, created_at,
       idempotency_key, author, salt, payload_digest, prev_hash, hash, erased
  FROM chatledger_entries(:tenant_id, :key_id, :prefix::text || :sid, :after, NULL, 100, false, false);
