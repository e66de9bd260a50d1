-- pgbench: the database work of one turn of the hot mix (few sessions, many clients): a
-- context read, then a blind append to the same session, each in its own transaction as the
-- server runs them. chatledger's hot mix appends with expected_seq and retries on 409, which
-- pgbench cannot do; this is the blind ceiling of the same turn.
-- Variables (pgbench -D): digest, prefix, sessions, user_content, assistant_content.
\set sid random(1, :sessions)
SELECT last_seq, context_start_seq, seq, kind, role, content, metadata, created_at,
       idempotency_key, author, salt, payload_digest, prev_hash, hash
  FROM chatledger_entries(decode(:digest, 'hex'), 'reader', :prefix::text || :sid, NULL, NULL, 20, true, true);
SELECT outcome, current_seq, seqs, created_ats, hashes
  FROM chatledger_append(decode(:digest, 'hex'), :prefix::text || :sid, true, NULL, NULL, NULL,
       ARRAY['message', 'message'], ARRAY['user', 'assistant'],
       ARRAY[:user_content, :assistant_content]::jsonb[], ARRAY['{}', '{}']::jsonb[],
       ARRAY[decode(md5(random()::text), 'hex'), decode(md5(random()::text), 'hex')],
       ARRAY[sha256(decode(md5(random()::text), 'hex')), sha256(decode(md5(random()::text), 'hex'))]);
