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

-- 4. The head's counters from the loop that links the hashes, rather than from two more passes
-- over the batch in subqueries of the UPDATE (each unnesting the batch's array again).
CREATE OR REPLACE FUNCTION chatledger_extend(
    p_session sessions,
    p_tenant text,
    p_author text,
    p_idempotency_key text,
    p_request_digest bytea,
    p_entries chatledger_new_entry[],
    p_close boolean,
    OUT first_seq bigint,
    OUT created_at timestamptz,
    OUT hashes bytea[]
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_count int := cardinality(p_entries);
    v_created text;
    v_prev bytea;
    v_messages bigint := 0;
    v_context_start bigint := p_session.context_start_seq;
BEGIN
    -- created_at never decreases along a session, whatever the clock does; a session created
    -- just now (last_seq 0 is never committed) shares its first entry's time.
    IF p_session.last_seq > 0 THEN
        created_at := greatest(clock_timestamp(), p_session.updated_at);
    ELSE
        created_at := p_session.created_at;
    END IF;
    v_created := to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    first_seq := p_session.last_seq + 1;
    v_prev := p_session.head_hash;
    hashes := '{}';
    FOR i IN 1..v_count LOOP
        v_prev := chatledger_entry_hash(v_prev, p_tenant, p_session.session_id, first_seq + i - 1,
                                        (p_entries[i]).kind, (p_entries[i]).role, v_created,
                                        p_idempotency_key, p_author, (p_entries[i]).payload_digest);
        hashes := array_append(hashes, v_prev);
        IF (p_entries[i]).kind = 'message' THEN
            v_messages := v_messages + 1;
        ELSIF (p_entries[i]).kind = 'context_reset' THEN
            v_context_start := first_seq + i - 1;
        END IF;
    END LOOP;

    INSERT INTO entries (tenant_id, session_pk, seq, kind, role, content, metadata, created_at,
                         idempotency_key, author, salt, payload_digest, prev_hash, hash,
                         payload_bytes)
    SELECT p_session.tenant_id, p_session.id, first_seq + e.i - 1, e.kind, e.role, e.content,
           e.metadata, chatledger_extend.created_at, p_idempotency_key, p_author, e.salt,
           e.payload_digest,
           CASE WHEN e.i = 1 THEN p_session.head_hash ELSE hashes[e.i - 1] END, hashes[e.i],
           e.payload_bytes
      FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, payload_bytes, i);

    UPDATE sessions
       SET last_seq = p_session.last_seq + v_count,
           head_hash = v_prev,
           updated_at = chatledger_extend.created_at,
           message_count = p_session.message_count + v_messages,
           context_start_seq = v_context_start,
           closed_at = CASE WHEN p_close THEN coalesce(p_session.closed_at, chatledger_extend.created_at)
                            ELSE p_session.closed_at END
     WHERE id = p_session.id;

    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (tenant_id, session_pk, key, request_digest, first_seq, last_seq)
        VALUES (p_session.tenant_id, p_session.id, p_idempotency_key, p_request_digest,
                first_seq, p_session.last_seq + v_count);
    END IF;
END
$$;
