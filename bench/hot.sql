-- pgbench: the database work of one turn of the hot mix (few sessions, many clients): a
-- context read, then a blind append to the same session, each in its own transaction as the
-- server runs them. chatledger's hot mix appends with expected_seq and retries on 409, which
-- pgbench cannot do; this is the blind ceiling of the same turn.
-- Variables (pgbench -D): tenant_id, key_id, prefix, sessions, user_content, assistant_content.
\set sid random(1, :sessions)
SELECT last_seq, context_start_seq, seq, kind, role, content, metadata, created_at,
       idempotency_key, author, salt, payload_digest, prev_hash, hash, erased
  FROM chatledger_entries(:tenant_id, :key_id, :prefix::text || :sid, NULL, NULL, 20, true, true);
SELECT outcome, current_seq, first_seq, created_at, hashes
  FROM chatledger_append(:tenant_id, 'bench', :key_id, :prefix::text || :sid, true, NULL, NULL, NULL,
       ARRAY[ROW('message', 'user', :user_content::jsonb, '{}'::jsonb,
                 decode(md5(random()::text), 'hex'), sha256(decode(md5(random()::text), 'hex')), 240),
             ROW('message', 'assistant', :assistant_content::jsonb, '{}'::jsonb,
                 decode(md5(random()::text), 'hex'), sha256(decode(md5(random()::text), 'hex')), 840)
            ]::chatledger_new_entry[]);
