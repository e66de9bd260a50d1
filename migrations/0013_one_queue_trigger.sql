-- The append path, part 2 (issue 18). Profiled at 8 clients (perf on the backends,
-- pg_stat_statements with nested statements): after the search index left the append, a
-- fifth of PostgreSQL's time went to checking constraints and running triggers that add no
-- rule of their own.

-- 1. One trigger queues a head advance for both its consumers, the transparency log's sequencer
-- and the search indexer, in one statement. The search queue had its own statement trigger on
-- entries, with a transition table built for every append; every entry is written by an advance
-- of its session's head (sessions' rules allow nothing else, and entries come only from
-- chatledger_extend), so the advance names the same range. A range holding no message (a context
-- reset, an erasure marker) is queued too and indexes nothing: the indexer takes messages only.
CREATE OR REPLACE FUNCTION chatledger_queue_append_leaf() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    WITH leaf AS (
        INSERT INTO tlog_pending (tenant_id, session_id, first_seq, last_seq, head_hash)
        VALUES (NEW.tenant_id, NEW.session_id, OLD.last_seq + 1, NEW.last_seq, NEW.head_hash)
    )
    INSERT INTO search_pending (tenant_id, session_pk, first_seq, last_seq)
    VALUES (NEW.tenant_id, NEW.id, OLD.last_seq + 1, NEW.last_seq);
    RETURN NULL;
END
$$;
DROP TRIGGER entries_index ON entries;
DROP FUNCTION chatledger_index_entries();

-- 2. The queue's foreign key to tenants checked, for every append, what the session row's own
-- key already holds (a leaf's tenant is its session's; an access leaf's, its access record's),
-- and took a share lock on the tenant's row, which every concurrent append of the tenant shares.
ALTER TABLE tlog_pending DROP CONSTRAINT tlog_pending_tenant_id_fkey;

-- 3. Sessions' five CHECKs as one, in a PL/pgSQL function, as entries' ten became one in 0010:
-- every UPDATE of a head parsed and planned each stored expression anew. Same rules.
CREATE FUNCTION chatledger_session_valid(
    p_session_id text, p_last_seq bigint, p_head_hash bytea, p_message_count bigint,
    p_context_start_seq bigint
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RETURN p_session_id ~ '^[A-Za-z0-9._:@-]{1,128}$' AND p_session_id <> ALL (ARRAY['.', '..'])
        AND p_last_seq >= 0
        AND length(p_head_hash) = 32
        AND p_message_count >= 0
        AND p_context_start_seq >= 0;
END
$$;
REVOKE ALL ON FUNCTION chatledger_session_valid FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_session_valid TO chatledger_app;

ALTER TABLE sessions
    DROP CONSTRAINT sessions_session_id_check,
    DROP CONSTRAINT sessions_last_seq_check,
    DROP CONSTRAINT sessions_head_hash_check,
    DROP CONSTRAINT sessions_message_count_check,
    DROP CONSTRAINT sessions_context_start_seq_check,
    ADD CONSTRAINT sessions_valid CHECK (chatledger_session_valid(
        session_id, last_seq, head_hash, message_count, context_start_seq)) NOT VALID;
ALTER TABLE sessions VALIDATE CONSTRAINT sessions_valid;
