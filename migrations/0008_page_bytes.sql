-- Hardening (issue 11): pages bounded by bytes as well as by count. Every entry records the
-- size of its canonical payload when it is written, so a read can stop before its page grows
-- past the limit without serializing anything to find out.

ALTER TABLE entries ADD COLUMN payload_bytes integer CHECK (payload_bytes >= 0);
ALTER TYPE chatledger_new_entry ADD ATTRIBUTE payload_bytes integer;

-- What an entry weighs in a page: its payload as written (for entries written before sizes were
-- kept, as PostgreSQL would print it), nothing once erased, and a share for the chain fields.
CREATE FUNCTION chatledger_entry_bytes(p_payload_bytes integer, p_content jsonb, p_metadata jsonb)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 512 + CASE WHEN p_metadata IS NULL AND p_content IS NULL THEN 0
                  ELSE coalesce(p_payload_bytes,
                                pg_catalog.octet_length(p_content::text)
                                + pg_catalog.octet_length(p_metadata::text)) END;

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
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_count int := cardinality(p_entries);
    v_created text;
    v_prev bytea;
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
           message_count = p_session.message_count
               + (SELECT count(*) FROM unnest(p_entries) AS e WHERE e.kind = 'message'),
           context_start_seq = coalesce(
               (SELECT max(first_seq + e.i - 1)
                  FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, payload_bytes, i)
                 WHERE e.kind = 'context_reset'),
               p_session.context_start_seq),
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

CREATE OR REPLACE FUNCTION chatledger_erase(
    p_tenant_id bigint,
    p_tenant text,
    p_key_id text,
    p_author text,
    p_session_id text,
    p_through_seq bigint,
    p_reason text,
    p_salt bytea,
    p_idempotency_key text,
    p_request_digest bytea
) RETURNS TABLE (
    outcome chatledger_append_outcome,
    current_seq bigint,
    first_seq bigint,
    created_at timestamptz,
    hashes bytea[],
    erased_count bigint,
    erased_through_seq bigint,
    current_holds bigint[]
)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_session sessions%ROWTYPE;
    v_replay record;
    v_holds bigint[];
    v_through bigint;
    v_count bigint;
    v_payload text;
    v_extended record;
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    SELECT * INTO v_session FROM sessions
     WHERE tenant_id = p_tenant_id AND session_id = p_session_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'session_not_found'::chatledger_append_outcome, 0::bigint, NULL::bigint,
                            NULL::timestamptz, NULL::bytea[], NULL::bigint, NULL::bigint, NULL::bigint[];
        RETURN;
    END IF;
    SELECT * INTO v_replay FROM chatledger_replay(v_session, p_idempotency_key, p_request_digest);
    IF v_replay.outcome IS NOT NULL THEN
        RETURN QUERY SELECT v_replay.outcome, v_session.last_seq, v_replay.first_seq,
                            v_replay.created_at, v_replay.hashes, NULL::bigint, NULL::bigint, NULL::bigint[];
        RETURN;
    END IF;
    v_holds := chatledger_session_holds(p_tenant_id, p_session_id);
    IF cardinality(v_holds) > 0 THEN
        RETURN QUERY SELECT 'legal_hold'::chatledger_append_outcome, v_session.last_seq, NULL::bigint,
                            NULL::timestamptz, NULL::bytea[], NULL::bigint, NULL::bigint, v_holds;
        RETURN;
    END IF;

    v_through := least(coalesce(p_through_seq, v_session.last_seq), v_session.last_seq);
    UPDATE entries SET content = NULL, metadata = NULL, salt = NULL, erased_at = clock_timestamp()
     WHERE tenant_id = p_tenant_id AND session_pk = v_session.id AND seq <= v_through
       AND kind = 'message' AND erased_at IS NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    v_payload := pg_catalog.concat('{"content":null,"metadata":{"erased_count":', v_count,
                                   ',"erased_through_seq":', v_through,
                                   ',"reason":', pg_catalog.to_json(p_reason), '}}');
    SELECT * INTO v_extended
      FROM chatledger_extend(
               v_session, p_tenant, p_author, p_idempotency_key, p_request_digest,
               ARRAY[ROW('erasure', NULL, NULL, (v_payload::jsonb) -> 'metadata', p_salt,
                         sha256(p_salt || convert_to(v_payload, 'UTF8')),
                         octet_length(v_payload))::chatledger_new_entry],
               v_through >= v_session.last_seq);
    RETURN QUERY SELECT 'appended'::chatledger_append_outcome, v_session.last_seq + 1,
                        v_extended.first_seq, v_extended.created_at, v_extended.hashes,
                        v_count, v_through, '{}'::bigint[];
END
$$;

DROP FUNCTION chatledger_entries(bigint, text, text, bigint, bigint, int, boolean, boolean);
CREATE FUNCTION chatledger_entries(
    p_tenant_id bigint,
    p_key_id text,
    p_session_id text,
    p_after_seq bigint,
    p_before_seq bigint,
    p_limit int,
    p_descending boolean,
    p_context boolean,
    p_max_bytes bigint
) RETURNS TABLE (
    last_seq bigint, context_start_seq bigint, seq bigint, kind text, role text, content jsonb,
    metadata jsonb, created_at timestamptz, idempotency_key text, author text, salt bytea,
    payload_digest bytea, prev_hash bytea, hash bytea, erased boolean
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
    -- Two queries rather than a computed ORDER BY, so both directions walk the primary key. A
    -- page also stops before its entries would pass p_max_bytes (the first is always in it).
    IF p_descending THEN
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, x.seq, x.kind, x.role, x.content,
                   x.metadata, x.created_at, x.idempotency_key, x.author, x.salt, x.payload_digest,
                   x.prev_hash, x.hash, x.erased
              FROM (SELECT p.*, sum(p.size) OVER (ORDER BY p.seq DESC) AS running,
                           row_number() OVER (ORDER BY p.seq DESC) AS n
                      FROM (SELECT e.seq, e.kind, e.role, e.content, e.metadata, e.created_at,
                                   e.idempotency_key, e.author, e.salt, e.payload_digest,
                                   e.prev_hash, e.hash, e.erased_at IS NOT NULL AS erased,
                                   chatledger_entry_bytes(e.payload_bytes, e.content, e.metadata) AS size
                              FROM entries e
                             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
                               AND e.seq > v_low AND e.seq < v_high
                               AND (NOT p_context OR e.kind = 'message')
                             ORDER BY e.seq DESC
                             LIMIT p_limit) p) x
             WHERE x.n = 1 OR x.running <= p_max_bytes
             ORDER BY x.seq DESC;
    ELSE
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, x.seq, x.kind, x.role, x.content,
                   x.metadata, x.created_at, x.idempotency_key, x.author, x.salt, x.payload_digest,
                   x.prev_hash, x.hash, x.erased
              FROM (SELECT p.*, sum(p.size) OVER (ORDER BY p.seq) AS running,
                           row_number() OVER (ORDER BY p.seq) AS n
                      FROM (SELECT e.seq, e.kind, e.role, e.content, e.metadata, e.created_at,
                                   e.idempotency_key, e.author, e.salt, e.payload_digest,
                                   e.prev_hash, e.hash, e.erased_at IS NOT NULL AS erased,
                                   chatledger_entry_bytes(e.payload_bytes, e.content, e.metadata) AS size
                              FROM entries e
                             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
                               AND e.seq > v_low AND e.seq < v_high
                             ORDER BY e.seq
                             LIMIT p_limit) p) x
             WHERE x.n = 1 OR x.running <= p_max_bytes
             ORDER BY x.seq;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_session.last_seq, v_session.context_start_seq, NULL::bigint, NULL::text,
                            NULL::text, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::text,
                            NULL::text, NULL::bytea, NULL::bytea, NULL::bytea, NULL::bytea, NULL::boolean;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION chatledger_entries FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_entries TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_entry_bytes TO chatledger_app;
CALL chatledger_pin_search_path();
