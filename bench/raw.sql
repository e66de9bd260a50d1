-- pgbench: the raw-SQL ceiling, one plain INSERT of the same two messages into a scratch
-- table (bench_raw: identity key, no chain, no lock, no row-level security, no function),
-- one statement per transaction. Variables (pgbench -D): prefix, sessions, user_content,
-- assistant_content.
\set sid random(1, :sessions)
INSERT INTO bench_raw (session_id, role, content)
VALUES (:prefix::text || :sid, 'user', :user_content::jsonb),
       (:prefix::text || :sid, 'assistant', :assistant_content::jsonb);
