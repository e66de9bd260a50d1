-- pgbench: one context read (the last 20 messages after the latest reset), the same single
-- function call that GET /v1/sessions/{id}/context?limit=20 makes (src/ledger/read.rs).
-- Variables (pgbench -D): tenant_id, key_id, prefix, sessions.
\set sid random(1, :sessions)
SELECT last_seq, context_start_seq, seq, kind, role, content, metadata, created_at,
       idempotency_key, author, salt, payload_digest, prev_hash, hash, erased
  FROM chatledger_entries(:tenant_id, :key_id, :prefix::text || :sid, NULL, NULL, 20, true, true);
