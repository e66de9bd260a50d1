-- A page's byte bound (migration 0008) was two window aggregates over the page query, whose
-- executor setup cost more than the rows: pgbench's context read (bench/context.sql, 40-entry
-- sessions, 32 clients) did 10,800 calls/s with them and 12,500 without. The function now
-- returns each entry's size as migration 0008 counts it, and the reader, which takes the rows
-- as they stream in, stops the page where they would pass its bound. The rows past a bound
-- are still sent: the window version read every one of them too, to sum their sizes.
DROP FUNCTION chatledger_entries(bigint, text, text, bigint, bigint, int, boolean, boolean, bigint);
CREATE FUNCTION chatledger_entries(
    p_tenant_id bigint,
    p_key_id text,
    p_session_id text,
    p_after_seq bigint,
    p_before_seq bigint,
    p_limit int,
    p_descending boolean,
    p_context boolean
) RETURNS TABLE (
    last_seq bigint, context_start_seq bigint, seq bigint, kind text, role text, content jsonb,
    metadata jsonb, created_at timestamptz, idempotency_key text, author text, salt bytea,
    payload_digest bytea, prev_hash bytea, hash bytea, erased boolean, size bigint
)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_session sessions%ROWTYPE;
    v_low bigint;
    v_high bigint;
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    SELECT * INTO v_session FROM sessions WHERE tenant_id = p_tenant_id AND session_id = p_session_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_low := CASE WHEN p_context THEN v_session.context_start_seq ELSE coalesce(p_after_seq, 0) END;
    v_high := coalesce(p_before_seq, v_session.last_seq + 1);
    -- Two queries rather than a computed ORDER BY, so both directions walk the primary key.
    IF p_descending THEN
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, e.seq, e.kind, e.role, e.content,
                   e.metadata, e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest,
                   e.prev_hash, e.hash, e.erased_at IS NOT NULL,
                   chatledger_entry_bytes(e.payload_bytes, e.content, e.metadata)
              FROM entries e
             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
               AND (NOT p_context OR e.kind = 'message')
             ORDER BY e.seq DESC
             LIMIT p_limit;
    ELSE
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, e.seq, e.kind, e.role, e.content,
                   e.metadata, e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest,
                   e.prev_hash, e.hash, e.erased_at IS NOT NULL,
                   chatledger_entry_bytes(e.payload_bytes, e.content, e.metadata)
              FROM entries e
             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
             ORDER BY e.seq
             LIMIT p_limit;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_session.last_seq, v_session.context_start_seq, NULL::bigint, NULL::text,
                            NULL::text, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::text,
                            NULL::text, NULL::bytea, NULL::bytea, NULL::bytea, NULL::bytea, NULL::boolean,
                            NULL::bigint;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION chatledger_entries FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_entries TO chatledger_app;
CALL chatledger_pin_search_path();
