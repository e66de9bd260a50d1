-- The transparency log of API.md "Checkpoints": one append-only RFC 6962 Merkle tree for the
-- whole deployment, whose leaves commit to every append and every access record, and whose
-- signed checkpoints let anyone holding one prove that the database was not rewritten since.
--
-- Leaves are queued by triggers in the transaction of the work they record, so a committed
-- append always has its queued leaf and a rolled-back one never has. A sequencer (one server at
-- a time, under an advisory lock) drains the queue: it reads whatever queued rows are visible,
-- in id order, integrates them into the tree and signs the new checkpoint, and deletes them, in
-- one transaction. Draining instead of scanning by a high-water mark matters: ids become
-- visible out of commit order, and a scan past id n would skip for ever a row with a lower id
-- that commits later. Within a session, leaves keep seq order: an append takes the session's
-- row lock before it draws its queue id, so a later append of the session always has a higher
-- id and commits after the earlier one.
--
-- The runtime role can neither read nor write the queue directly (the triggers are SECURITY
-- DEFINER), and may only read the tree, its leaves (of its own tenant) and the checkpoints;
-- the sequencer runs as the owner. The tree tables are append-only for everyone, the owner
-- included; a superuser who disables the triggers can rewrite them, which is why checkpoints
-- also go to --checkpoint-dir and to witnesses.

CREATE TABLE tlog_pending (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    -- An append: the session's new run of seqs and its head.
    session_id text COLLATE "C",
    first_seq  bigint,
    last_seq   bigint,
    head_hash  bytea CHECK (length(head_hash) = 32),
    -- An access record.
    access_id  bigint,
    queued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((session_id IS NOT NULL AND first_seq IS NOT NULL AND last_seq >= first_seq
            AND head_hash IS NOT NULL AND access_id IS NULL)
        OR (session_id IS NULL AND first_seq IS NULL AND last_seq IS NULL AND head_hash IS NULL
            AND access_id IS NOT NULL))
);

-- One row per leaf, by its index in the tree. `leaf` holds the exact bytes whose RFC 6962 leaf
-- hash is in the tree (the JCS of API.md's leaf object); the other columns find it.
CREATE TABLE tlog_leaves (
    leaf_index    bigint PRIMARY KEY CHECK (leaf_index >= 0),
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    session_id    text COLLATE "C",
    first_seq     bigint,
    last_seq      bigint,
    access_id     bigint,
    leaf          bytea NOT NULL,
    queued_at     timestamptz NOT NULL,
    integrated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The proof of (session, seq): the first append leaf of the session whose last_seq >= seq.
CREATE INDEX tlog_leaves_by_session ON tlog_leaves (tenant_id, session_id, last_seq)
    WHERE session_id IS NOT NULL;

-- The tree as "stored hashes" (src/tlog/merkle.rs): about two rows per leaf, never changed.
CREATE TABLE tlog_hashes (
    idx  bigint PRIMARY KEY CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (length(hash) = 32)
);

-- Every signed checkpoint; the latest is the tree's size. The note is kept as signed.
CREATE TABLE tlog_checkpoints (
    tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
    root      bytea NOT NULL CHECK (length(root) = 32),
    note      text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TRIGGER tlog_leaves_append_only BEFORE UPDATE OR DELETE ON tlog_leaves
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tlog_leaves_no_truncate BEFORE TRUNCATE ON tlog_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tlog_hashes_append_only BEFORE UPDATE OR DELETE ON tlog_hashes
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tlog_hashes_no_truncate BEFORE TRUNCATE ON tlog_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tlog_checkpoints_append_only BEFORE UPDATE OR DELETE ON tlog_checkpoints
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tlog_checkpoints_no_truncate BEFORE TRUNCATE ON tlog_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();

-- A session's head advanced (an append, a reset or an erasure record): queue its leaf.
CREATE FUNCTION chatledger_queue_append_leaf() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO tlog_pending (tenant_id, session_id, first_seq, last_seq, head_hash)
    VALUES (NEW.tenant_id, NEW.session_id, OLD.last_seq + 1, NEW.last_seq, NEW.head_hash);
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_queue_leaf AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (NEW.last_seq > OLD.last_seq) EXECUTE FUNCTION chatledger_queue_append_leaf();

CREATE FUNCTION chatledger_queue_access_leaf() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO tlog_pending (tenant_id, access_id) VALUES (NEW.tenant_id, NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER access_records_queue_leaf AFTER INSERT ON access_records
    FOR EACH ROW EXECUTE FUNCTION chatledger_queue_access_leaf();

REVOKE ALL ON FUNCTION chatledger_queue_append_leaf FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_queue_access_leaf FROM PUBLIC;

-- A tenant sees its own leaves (its proofs); hashes and checkpoints are public by design. The
-- owner (the sequencer, `verify --checkpoints`) sees every leaf: RLS is not forced here.
ALTER TABLE tlog_leaves ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tlog_leaves
    USING (tenant_id = chatledger_current_tenant());
GRANT SELECT ON tlog_leaves, tlog_hashes, tlog_checkpoints TO chatledger_app;

CALL chatledger_pin_search_path();
