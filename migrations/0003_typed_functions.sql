-- The server now authenticates each request itself (a key cache that a NOTIFY from the trigger
-- below empties on every replica), so every tenant-scoped function takes the caller's tenant and
-- key id instead of a key digest: it checks by primary key that the key is still live, so no
-- request succeeds with a key revoked a moment ago on another server, and binds the tenant for
-- row-level security, transaction-local as before. The
-- append takes its batch as one typed array and answers a typed outcome; the header hash is one
-- function that the golden vectors (tests/vectors/hash_chain.json) check directly; every
-- function runs with a pinned search_path.

DROP FUNCTION chatledger_append(bytea, text, boolean, bigint, text, bytea, text[], text[], jsonb[], jsonb[], bytea[], bytea[]);
DROP FUNCTION chatledger_sessions(bytea, text, text, int);
DROP FUNCTION chatledger_entries(bytea, text, text, bigint, bigint, int, boolean, boolean);
DROP FUNCTION chatledger_audit_head(bytea, text);
DROP FUNCTION chatledger_authenticate(bytea, text);

-- Used by every row-level security policy, so it stays an inlinable SQL function (no SET clause)
-- and names everything it calls by schema.
CREATE OR REPLACE FUNCTION chatledger_current_tenant() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NULLIF(pg_catalog.current_setting('chatledger.tenant_id', true), '')::pg_catalog.int8
$$;

-- Checks that the key p_key_id (NULL: the operator, on the command line) is live and of
-- p_tenant_id, then binds the tenant for row-level security until the transaction ends. A key
-- revoked since the server cached it raises CL401.
CREATE FUNCTION chatledger_bind(p_tenant_id bigint, p_key_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_key_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM api_keys WHERE id = p_key_id AND tenant_id = p_tenant_id AND revoked_at IS NULL
    ) THEN
        RAISE EXCEPTION 'unauthenticated' USING ERRCODE = 'CL401';
    END IF;
    PERFORM set_config('chatledger.tenant_id', p_tenant_id::text, true);
END
$$;

-- One entry of a batch to append.
CREATE TYPE chatledger_new_entry AS (
    kind           text,
    role           text,
    content        jsonb,
    metadata       jsonb,
    salt           bytea,
    payload_digest bytea
);

CREATE TYPE chatledger_append_outcome AS ENUM (
    'appended', 'replayed', 'seq_conflict', 'session_not_found', 'idempotency_key_reused'
);

-- hash(n) = SHA-256(prev_hash || JCS(header)) of API.md "Hash chain". The keys are written in
-- RFC 8785 order, and to_json(text) escapes strings exactly as RFC 8785 does (\" \\ \b \f \n \r
-- \t, other control characters as lower-case \u00xx, everything else verbatim). Inlinable and
-- schema-qualified, like chatledger_current_tenant (STABLE only because to_json is).
CREATE FUNCTION chatledger_entry_hash(
    p_prev_hash bytea,
    p_tenant text,
    p_session_id text,
    p_seq bigint,
    p_kind text,
    p_role text,
    p_created_at text,
    p_idempotency_key text,
    p_author text,
    p_payload_digest bytea
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.sha256(p_prev_hash OPERATOR(pg_catalog.||) pg_catalog.convert_to(
        pg_catalog.concat(
            '{"author":', pg_catalog.to_json(p_author),
            ',"created_at":', pg_catalog.to_json(p_created_at),
            ',"idempotency_key":', COALESCE(pg_catalog.to_json(p_idempotency_key)::text, 'null'),
            ',"kind":', pg_catalog.to_json(p_kind),
            ',"payload_digest":"', pg_catalog.encode(p_payload_digest, 'hex'),
            '","role":', COALESCE(pg_catalog.to_json(p_role)::text, 'null'),
            ',"seq":', p_seq,
            ',"session_id":', pg_catalog.to_json(p_session_id),
            ',"tenant":', pg_catalog.to_json(p_tenant),
            '}'),
        'UTF8'))
$$;

-- Appends a batch to a session in one transaction: create the session if allowed, lock its head,
-- replay or refuse an idempotency key, check expected_seq, chain the hashes, insert, advance.
-- Payload digests come from the caller, which alone can canonicalise arbitrary JSON.
CREATE FUNCTION chatledger_append(
    p_tenant_id bigint,
    p_tenant text,
    p_author text,
    p_session_id text,
    p_create_session boolean,
    p_expected_seq bigint,
    p_idempotency_key text,
    p_request_digest bytea,
    p_entries chatledger_new_entry[]
) RETURNS TABLE (
    outcome chatledger_append_outcome,
    current_seq bigint,
    first_seq bigint,
    created_at timestamptz,
    hashes bytea[]
)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_session sessions%ROWTYPE;
    v_key idempotency_keys%ROWTYPE;
    v_count int := coalesce(cardinality(p_entries), 0);
    v_now timestamptz;
    v_created text;
    v_prev bytea;
    v_hashes bytea[] := '{}';
    v_first bigint;
BEGIN
    IF v_count = 0 THEN
        RAISE EXCEPTION 'chatledger_append: empty batch';
    END IF;
    PERFORM chatledger_bind(p_tenant_id, p_author);

    SELECT * INTO v_session FROM sessions
     WHERE tenant_id = p_tenant_id AND session_id = p_session_id
       FOR UPDATE;
    IF NOT FOUND THEN
        IF NOT p_create_session THEN
            RETURN QUERY SELECT 'session_not_found'::chatledger_append_outcome, 0::bigint, NULL::bigint,
                                NULL::timestamptz, NULL::bytea[];
            RETURN;
        END IF;
        IF p_expected_seq IS NOT NULL AND p_expected_seq <> 0 THEN
            RETURN QUERY SELECT 'seq_conflict'::chatledger_append_outcome, 0::bigint, NULL::bigint,
                                NULL::timestamptz, NULL::bytea[];
            RETURN;
        END IF;
        v_now := clock_timestamp();
        INSERT INTO sessions (tenant_id, session_id, created_at, updated_at, head_hash)
        VALUES (p_tenant_id, p_session_id, v_now, v_now, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        ON CONFLICT (tenant_id, session_id) DO NOTHING;
        -- A concurrent first append may have won the race; either way the row exists now.
        SELECT * INTO STRICT v_session FROM sessions
         WHERE tenant_id = p_tenant_id AND session_id = p_session_id
           FOR UPDATE;
    END IF;

    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_key FROM idempotency_keys
         WHERE tenant_id = p_tenant_id AND session_pk = v_session.id AND key = p_idempotency_key;
        IF FOUND THEN
            IF v_key.request_digest <> p_request_digest THEN
                RETURN QUERY SELECT 'idempotency_key_reused'::chatledger_append_outcome, v_session.last_seq,
                                    NULL::bigint, NULL::timestamptz, NULL::bytea[];
                RETURN;
            END IF;
            RETURN QUERY
                SELECT 'replayed'::chatledger_append_outcome, v_session.last_seq, v_key.first_seq,
                       min(e.created_at), array_agg(e.hash ORDER BY e.seq)
                  FROM entries e
                 WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
                   AND e.seq BETWEEN v_key.first_seq AND v_key.last_seq;
            RETURN;
        END IF;
    END IF;

    IF p_expected_seq IS NOT NULL AND p_expected_seq <> v_session.last_seq THEN
        RETURN QUERY SELECT 'seq_conflict'::chatledger_append_outcome, v_session.last_seq, NULL::bigint,
                            NULL::timestamptz, NULL::bytea[];
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
        v_prev := chatledger_entry_hash(v_prev, p_tenant, p_session_id, v_first + i - 1,
                                        (p_entries[i]).kind, (p_entries[i]).role, v_created,
                                        p_idempotency_key, p_author, (p_entries[i]).payload_digest);
        v_hashes := array_append(v_hashes, v_prev);
    END LOOP;

    INSERT INTO entries (tenant_id, session_pk, seq, kind, role, content, metadata, created_at,
                         idempotency_key, author, salt, payload_digest, prev_hash, hash)
    SELECT p_tenant_id, v_session.id, v_first + e.i - 1, e.kind, e.role, e.content, e.metadata,
           v_now, p_idempotency_key, p_author, e.salt, e.payload_digest,
           CASE WHEN e.i = 1 THEN v_session.head_hash ELSE v_hashes[e.i - 1] END, v_hashes[e.i]
      FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, i);

    UPDATE sessions
       SET last_seq = v_session.last_seq + v_count,
           head_hash = v_prev,
           updated_at = v_now,
           message_count = v_session.message_count
               + (SELECT count(*) FROM unnest(p_entries) AS e WHERE e.kind = 'message'),
           context_start_seq = coalesce(
               (SELECT max(v_first + e.i - 1)
                  FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, i)
                 WHERE e.kind = 'context_reset'),
               v_session.context_start_seq)
     WHERE id = v_session.id;

    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (tenant_id, session_pk, key, request_digest, first_seq, last_seq)
        VALUES (p_tenant_id, v_session.id, p_idempotency_key, p_request_digest,
                v_first, v_session.last_seq + v_count);
    END IF;

    RETURN QUERY SELECT 'appended'::chatledger_append_outcome, v_session.last_seq + v_count, v_first,
                        v_now, v_hashes;
END
$$;

-- One session's summary (p_session_id given) or a keyset page of the tenant's sessions.
CREATE FUNCTION chatledger_sessions(p_tenant_id bigint, p_key_id text, p_session_id text, p_after text, p_limit int)
RETURNS SETOF sessions
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    IF p_session_id IS NOT NULL THEN
        RETURN QUERY SELECT * FROM sessions WHERE tenant_id = p_tenant_id AND session_id = p_session_id;
    ELSE
        RETURN QUERY SELECT * FROM sessions
                      WHERE tenant_id = p_tenant_id AND session_id > coalesce(p_after, '')
                      ORDER BY session_id LIMIT p_limit;
    END IF;
END
$$;

-- A page of a session's entries with seq in (p_after_seq, p_before_seq), ascending or descending;
-- with p_context the lower bound is the session's latest context reset. Every row carries the
-- session's head; a session with no entry in range yields one row whose seq is NULL, a missing
-- session yields no row.
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
    payload_digest bytea, prev_hash bytea, hash bytea
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
                   e.prev_hash, e.hash
              FROM entries e
             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
             ORDER BY e.seq DESC
             LIMIT p_limit;
    ELSE
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, e.seq, e.kind, e.role, e.content,
                   e.metadata, e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest,
                   e.prev_hash, e.hash
              FROM entries e
             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
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

-- What an audit starts from: the session head, and the highest seq actually stored, which must
-- not exceed the head.
CREATE FUNCTION chatledger_audit_head(p_tenant_id bigint, p_key_id text, p_session_id text)
RETURNS TABLE (last_seq bigint, head_hash bytea, max_stored_seq bigint)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    RETURN QUERY
        SELECT s.last_seq, s.head_hash,
               (SELECT max(e.seq) FROM entries e WHERE e.tenant_id = s.tenant_id AND e.session_pk = s.id)
          FROM sessions s
         WHERE s.tenant_id = p_tenant_id AND s.session_id = p_session_id;
END
$$;

-- Every server keeps a cache of authenticated keys; a revocation (or any other change of a key)
-- tells each of them to drop it, at commit.
CREATE FUNCTION chatledger_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatledger_keys', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_notify AFTER UPDATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_keys_changed();

-- Pins the search_path of every chatledger function to pg_catalog and this schema, so no object
-- another role creates elsewhere can stand in for a built-in. The two inlinable SQL functions
-- above are left as they are: a SET clause would stop their inlining, and they name every
-- built-in by schema instead. Called again by later migrations that add functions.
CREATE PROCEDURE chatledger_pin_search_path() LANGUAGE plpgsql AS $$
DECLARE
    v_routine regprocedure;
    -- This procedure's own schema: once it is pinned itself, current_schema() is pg_catalog.
    v_schema regnamespace := (SELECT pronamespace FROM pg_catalog.pg_proc
                               WHERE oid = 'chatledger_pin_search_path'::regproc);
BEGIN
    FOR v_routine IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = v_schema
           AND p.proname LIKE 'chatledger\_%'
           AND p.proname NOT IN ('chatledger_current_tenant', 'chatledger_entry_hash')
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = pg_catalog, %I, pg_temp',
                                  v_routine, v_schema::text);
    END LOOP;
END
$$;
CALL chatledger_pin_search_path();

REVOKE ALL ON FUNCTION chatledger_bind FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_append FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_sessions FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_entries FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_audit_head FROM PUBLIC;
REVOKE ALL ON PROCEDURE chatledger_pin_search_path FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_bind TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_append TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_sessions TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_entries TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_audit_head TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_entry_hash TO chatledger_app;
