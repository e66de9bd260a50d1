-- pgbench: one blind append of a 2-message turn, the same single function call that
-- POST /v1/sessions/{id}/messages makes (src/ledger/append.rs), with expected_seq NULL:
-- optimistic concurrency needs the head the client last saw, which pure pgbench cannot track,
-- so this is the ceiling for blind appends (and an upper bound for appends with expected_seq).
-- Variables (pgbench -D): tenant_id and key_id (a writer key's), prefix, sessions,
-- user_content and assistant_content (JSON strings). Salts and payload digests are random
-- bytes here, computed in Rust by the server (the chain hashes are computed in SQL by both).
\set sid random(1, :sessions)
SELECT outcome, current_seq, first_seq, created_at, hashes
  FROM chatledger_append(:tenant_id, 'bench', :key_id, :prefix::text || :sid, true, NULL, NULL, NULL,
       ARRAY[ROW('message', 'user', :user_content::jsonb, '{}'::jsonb,
                 decode(md5(random()::text), 'hex'), sha256(decode(md5(random()::text), 'hex')), 240),
             ROW('message', 'assistant', :assistant_content::jsonb, '{}'::jsonb,
                 decode(md5(random()::text), 'hex'), sha256(decode(md5(random()::text), 'hex')), 840)
            ]::chatledger_new_entry[]);
