-- pgbench: one blind append of a 2-message turn, the same single function call that
-- POST /v1/sessions/{id}/messages makes (src/ledger/append.rs), with expected_seq NULL:
-- optimistic concurrency needs the head the client last saw, which pure pgbench cannot track,
-- so this is the ceiling for blind appends (and an upper bound for appends with expected_seq).
-- Variables (pgbench -D): digest (hex SHA-256 of a writer key), prefix, sessions,
-- user_content and assistant_content (JSON strings). Salts and payload digests are random
-- bytes here, computed in Rust by the server (the chain hashes are computed in SQL by both).
\set sid random(1, :sessions)
SELECT outcome, current_seq, seqs, created_ats, hashes
  FROM chatledger_append(decode(:digest, 'hex'), :prefix::text || :sid, true, NULL, NULL, NULL,
       ARRAY['message', 'message'], ARRAY['user', 'assistant'],
       ARRAY[:user_content, :assistant_content]::jsonb[], ARRAY['{}', '{}']::jsonb[],
       ARRAY[decode(md5(random()::text), 'hex'), decode(md5(random()::text), 'hex')],
       ARRAY[sha256(decode(md5(random()::text), 'hex')), sha256(decode(md5(random()::text), 'hex'))]);
