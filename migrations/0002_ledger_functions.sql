-- The functions below run with plan_cache_mode = force_generic_plan: their statements look
-- rows up by key, so one plan fits every argument, and without it PL/pgSQL re-planned them on
-- every call (custom plans), which cost more than executing them. The setting, like the tenant
-- binding made inside, lasts only for the call.
--
-- Every tenant-scoped operation is one function call that authenticates the caller's key digest,
-- binds its tenant for row-level security (transaction-local), and acts, so each request is a
-- single round trip in its own implicit transaction, no key is ever cached, and no connection is
-- returned to the pool inside an open transaction.

-- Authenticates a key digest for a role: raises CL401 for an unknown or revoked key, CL403 for
-- a role that may not act, else binds the key's tenant. Writers and auditors may also read.
CREATE FUNCTION chatledger_authenticate(
    p_key_digest bytea,
    p_role text,
    OUT key_id text,
    OUT tenant_id bigint,
    OUT tenant_name text
) LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
    v_revoked_at timestamptz;
BEGIN
    SELECT k.id, k.tenant_id, t.name, k.role, k.revoked_at
      INTO key_id, tenant_id, tenant_name, v_role, v_revoked_at
      FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
     WHERE k.digest = p_key_digest;
    IF NOT FOUND OR v_revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'unauthenticated' USING ERRCODE = 'CL401';
    END IF;
    IF NOT (v_role = p_role OR (p_role = 'reader' AND v_role IN ('writer', 'auditor'))) THEN
        RAISE EXCEPTION 'forbidden' USING ERRCODE = 'CL403';
    END IF;
    PERFORM set_config('chatledger.tenant_id', tenant_id::text, true);
END
$$;

-- Appends a batch to a session in one transaction: create the session if allowed, lock its head,
-- replay or refuse an idempotency key, check expected_seq, chain the hashes, insert, advance.
--
-- The header hash follows API.md "Hash chain": SHA-256(prev_hash || JCS(header)). The header's keys
-- are written here in RFC 8785 order, and to_json(text) escapes strings exactly as RFC 8785 does
-- (\" \\ \b \f \n \r \t, other control characters as lower-case \u00xx, everything else verbatim).
-- Payload digests are computed by the caller, which alone can canonicalise arbitrary JSON.
CREATE FUNCTION chatledger_append(
    p_key_digest bytea,
    p_session_id text,
    p_create_session boolean,
    p_expected_seq bigint,
    p_idempotency_key text,
    p_request_digest bytea,
    p_kinds text[],
    p_roles text[],
    p_contents jsonb[],
    p_metadata jsonb[],
    p_salts bytea[],
    p_payload_digests bytea[]
) RETURNS TABLE (outcome text, current_seq bigint, seqs bigint[], created_ats timestamptz[], hashes bytea[])
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_caller record;
    v_session sessions%ROWTYPE;
    v_key idempotency_keys%ROWTYPE;
    v_count int := coalesce(cardinality(p_kinds), 0);
    v_now timestamptz;
    v_created text;
    v_prev bytea;
    v_hashes bytea[] := '{}';
    v_first bigint;
BEGIN
    IF v_count = 0 THEN
        RAISE EXCEPTION 'chatledger_append: empty batch';
    END IF;
    SELECT * INTO STRICT v_caller FROM chatledger_authenticate(p_key_digest, 'writer');

    SELECT * INTO v_session FROM sessions
     WHERE tenant_id = v_caller.tenant_id AND session_id = p_session_id
       FOR UPDATE;
    IF NOT FOUND THEN
        IF NOT p_create_session THEN
            RETURN QUERY SELECT 'session_not_found', 0::bigint, NULL::bigint[], NULL::timestamptz[], NULL::bytea[];
            RETURN;
        END IF;
        IF p_expected_seq IS NOT NULL AND p_expected_seq <> 0 THEN
            RETURN QUERY SELECT 'seq_conflict', 0::bigint, NULL::bigint[], NULL::timestamptz[], NULL::bytea[];
            RETURN;
        END IF;
        v_now := clock_timestamp();
        INSERT INTO sessions (tenant_id, session_id, created_at, updated_at, head_hash)
        VALUES (v_caller.tenant_id, p_session_id, v_now, v_now, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        ON CONFLICT (tenant_id, session_id) DO NOTHING;
        -- A concurrent first append may have won the race; either way the row exists now.
        SELECT * INTO STRICT v_session FROM sessions
         WHERE tenant_id = v_caller.tenant_id AND session_id = p_session_id
           FOR UPDATE;
    END IF;

    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_key FROM idempotency_keys
         WHERE tenant_id = v_caller.tenant_id AND session_pk = v_session.id AND key = p_idempotency_key;
        IF FOUND THEN
            IF v_key.request_digest <> p_request_digest THEN
                RETURN QUERY SELECT 'idempotency_key_reused', v_session.last_seq,
                                    NULL::bigint[], NULL::timestamptz[], NULL::bytea[];
                RETURN;
            END IF;
            RETURN QUERY
                SELECT 'replayed', v_session.last_seq,
                       array_agg(e.seq ORDER BY e.seq), array_agg(e.created_at ORDER BY e.seq),
                       array_agg(e.hash ORDER BY e.seq)
                  FROM entries e
                 WHERE e.tenant_id = v_caller.tenant_id AND e.session_pk = v_session.id
                   AND e.seq BETWEEN v_key.first_seq AND v_key.last_seq;
            RETURN;
        END IF;
    END IF;

    IF p_expected_seq IS NOT NULL AND p_expected_seq <> v_session.last_seq THEN
        RETURN QUERY SELECT 'seq_conflict', v_session.last_seq, NULL::bigint[], NULL::timestamptz[], NULL::bytea[];
        RETURN;
    END IF;

    -- created_at never decreases along a session, whatever the clock does; a session created
    -- just now (last_seq 0 is never committed) shares its first entry's time.
    IF v_session.last_seq > 0 THEN
        v_now := greatest(clock_timestamp(), v_session.updated_at);
    ELSE
        v_now := v_session.created_at;
    END IF;
    v_created := to_char(v_now AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    v_first := v_session.last_seq + 1;
    v_prev := v_session.head_hash;
    FOR i IN 1..v_count LOOP
        v_prev := sha256(v_prev || convert_to(
            '{"author":' || to_json(v_caller.key_id)::text
            || ',"created_at":"' || v_created || '"'
            || ',"idempotency_key":' || coalesce(to_json(p_idempotency_key)::text, 'null')
            || ',"kind":' || to_json(p_kinds[i])::text
            || ',"payload_digest":"' || encode(p_payload_digests[i], 'hex') || '"'
            || ',"role":' || coalesce(to_json(p_roles[i])::text, 'null')
            || ',"seq":' || (v_first + i - 1)::text
            || ',"session_id":' || to_json(p_session_id)::text
            || ',"tenant":' || to_json(v_caller.tenant_name)::text
            || '}', 'UTF8'));
        v_hashes := array_append(v_hashes, v_prev);
    END LOOP;

    INSERT INTO entries (tenant_id, session_pk, seq, kind, role, content, metadata, created_at,
                         idempotency_key, author, salt, payload_digest, prev_hash, hash)
    SELECT v_caller.tenant_id, v_session.id, v_first + i - 1, p_kinds[i], p_roles[i], nullif(p_contents[i], 'null'::jsonb), p_metadata[i],
           v_now, p_idempotency_key, v_caller.key_id, p_salts[i], p_payload_digests[i],
           CASE WHEN i = 1 THEN v_session.head_hash ELSE v_hashes[i - 1] END, v_hashes[i]
      FROM generate_series(1, v_count) AS i;

    UPDATE sessions
       SET last_seq = v_session.last_seq + v_count,
           head_hash = v_prev,
           updated_at = v_now,
           message_count = v_session.message_count
               + (SELECT count(*) FROM unnest(p_kinds) AS k WHERE k = 'message'),
           context_start_seq = coalesce(
               (SELECT max(v_first + i - 1) FROM generate_series(1, v_count) AS i
                 WHERE p_kinds[i] = 'context_reset'),
               v_session.context_start_seq)
     WHERE id = v_session.id;

    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (tenant_id, session_pk, key, request_digest, first_seq, last_seq)
        VALUES (v_caller.tenant_id, v_session.id, p_idempotency_key, p_request_digest,
                v_first, v_session.last_seq + v_count);
    END IF;

    RETURN QUERY SELECT 'appended', v_session.last_seq + v_count,
                        array(SELECT v_first + i - 1 FROM generate_series(1, v_count) AS i),
                        array_fill(v_now, ARRAY[v_count]), v_hashes;
END
$$;

-- One session's summary (p_session_id given) or a keyset page of the tenant's sessions.
CREATE FUNCTION chatledger_sessions(p_key_digest bytea, p_session_id text, p_after text, p_limit int)
RETURNS SETOF sessions
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_caller record;
BEGIN
    SELECT * INTO STRICT v_caller FROM chatledger_authenticate(p_key_digest, 'reader');
    IF p_session_id IS NOT NULL THEN
        RETURN QUERY SELECT * FROM sessions WHERE tenant_id = v_caller.tenant_id AND session_id = p_session_id;
    ELSE
        RETURN QUERY SELECT * FROM sessions
                      WHERE tenant_id = v_caller.tenant_id AND session_id > coalesce(p_after, '')
                      ORDER BY session_id LIMIT p_limit;
    END IF;
END
$$;

-- A page of a session's entries with seq in (p_after_seq, p_before_seq), ascending or descending;
-- with p_context the lower bound is the session's latest context reset. p_role is the role the
-- caller needs: reader to read, auditor to verify or export. Every row carries the
-- session's head; a session with no entry in range yields one row whose seq is NULL, a missing
-- session yields no row.
CREATE FUNCTION chatledger_entries(
    p_key_digest bytea,
    p_role text,
    p_session_id text,
    p_after_seq bigint,
    p_before_seq bigint,
    p_limit int,
    p_descending boolean,
    p_context boolean
) RETURNS TABLE (
    last_seq bigint, context_start_seq bigint, seq bigint, kind text, role text, content jsonb,
    metadata jsonb, created_at timestamptz, idempotency_key text, author text, salt bytea,
    payload_digest bytea, prev_hash bytea, hash bytea
)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_caller record;
    v_session sessions%ROWTYPE;
    v_low bigint;
    v_high bigint;
BEGIN
    SELECT * INTO STRICT v_caller FROM chatledger_authenticate(p_key_digest, p_role);
    SELECT * INTO v_session FROM sessions WHERE tenant_id = v_caller.tenant_id AND session_id = p_session_id;
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
                   e.prev_hash, e.hash
              FROM entries e
             WHERE e.tenant_id = v_caller.tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
             ORDER BY e.seq DESC
             LIMIT p_limit;
    ELSE
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, e.seq, e.kind, e.role, e.content,
                   e.metadata, e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest,
                   e.prev_hash, e.hash
              FROM entries e
             WHERE e.tenant_id = v_caller.tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
             ORDER BY e.seq
             LIMIT p_limit;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_session.last_seq, v_session.context_start_seq, NULL::bigint, NULL::text,
                            NULL::text, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::text,
                            NULL::text, NULL::bytea, NULL::bytea, NULL::bytea, NULL::bytea;
    END IF;
END
$$;

-- What an audit starts from (role auditor): the tenant's name, which every entry hash commits
-- to, the session head, and the highest seq actually stored, which must not exceed the head.
CREATE FUNCTION chatledger_audit_head(p_key_digest bytea, p_session_id text)
RETURNS TABLE (tenant text, last_seq bigint, head_hash bytea, max_stored_seq bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_caller record;
BEGIN
    SELECT * INTO STRICT v_caller FROM chatledger_authenticate(p_key_digest, 'auditor');
    RETURN QUERY
        SELECT v_caller.tenant_name, s.last_seq, s.head_hash,
               (SELECT max(e.seq) FROM entries e WHERE e.tenant_id = s.tenant_id AND e.session_pk = s.id)
          FROM sessions s
         WHERE s.tenant_id = v_caller.tenant_id AND s.session_id = p_session_id;
END
$$;

REVOKE ALL ON FUNCTION chatledger_authenticate FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_audit_head FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_append FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_sessions FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_entries FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_authenticate TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_audit_head TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_append TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_sessions TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_entries TO chatledger_app;
