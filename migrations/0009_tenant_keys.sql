-- Every tenant-scoped table's primary and unique keys include tenant_id, so that the schema can be
-- sharded by tenant (Citus distributes a table by one column and enforces a primary or unique key
-- only when it includes that column; docs/scaling.md). `sessions` was the one exception: its
-- primary key was its identity column alone. It becomes (tenant_id, id), and entries and
-- idempotency records now reference their session by both, which also makes it impossible for a
-- row to point at another tenant's session. tests/api/database.rs checks every table.

-- The ledger functions look a session up by id alone (UPDATE ... WHERE id = ...): a plain index
-- keeps that an index scan; ids stay unique because they come from an identity column.
CREATE INDEX sessions_by_id ON sessions (id);

ALTER TABLE entries DROP CONSTRAINT entries_session_pk_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_session_pk_fkey;
ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
ALTER TABLE sessions ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE entries ADD CONSTRAINT entries_session_fkey
    FOREIGN KEY (tenant_id, session_pk) REFERENCES sessions (tenant_id, id);
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_session_fkey
    FOREIGN KEY (tenant_id, session_pk) REFERENCES sessions (tenant_id, id);
