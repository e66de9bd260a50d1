-- Erasure, legal holds and retention (API.md "Retention, holds and erasure"). A payload can go
-- while the chain stays verifiable, because every entry commits to its payload through a salted
-- digest: erasing sets content, metadata and salt to NULL, once, and keeps payload_digest and the
-- header. That one-way update is the only change the database accepts of an entry.

ALTER TABLE entries
    ALTER COLUMN metadata DROP NOT NULL,
    ALTER COLUMN salt DROP NOT NULL,
    ADD COLUMN erased_at timestamptz,
    DROP CONSTRAINT entries_check,
    DROP CONSTRAINT entries_kind_check,
    ADD CONSTRAINT entries_kind_check CHECK (kind IN ('message', 'context_reset', 'erasure')),
    ADD CONSTRAINT entries_role_only_of_messages CHECK ((kind = 'message') = (role IS NOT NULL)),
    ADD CONSTRAINT entries_payload_or_erased CHECK (
        CASE WHEN erased_at IS NULL
             THEN metadata IS NOT NULL AND salt IS NOT NULL AND (kind <> 'message' OR content IS NOT NULL)
             ELSE kind = 'message' AND content IS NULL AND metadata IS NULL AND salt IS NULL
        END);

-- An erased entry keeps everything but its payload, and is erased once.
CREATE FUNCTION chatledger_entry_erases_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.erased_at IS NOT NULL OR NEW.erased_at IS NULL OR OLD.kind <> 'message'
       OR NEW.content IS NOT NULL OR NEW.metadata IS NOT NULL OR NEW.salt IS NOT NULL
       OR (NEW.tenant_id, NEW.session_pk, NEW.seq, NEW.kind, NEW.role, NEW.created_at,
           NEW.idempotency_key, NEW.author, NEW.payload_digest, NEW.prev_hash, NEW.hash)
          IS DISTINCT FROM
          (OLD.tenant_id, OLD.session_pk, OLD.seq, OLD.kind, OLD.role, OLD.created_at,
           OLD.idempotency_key, OLD.author, OLD.payload_digest, OLD.prev_hash, OLD.hash) THEN
        RAISE EXCEPTION 'chatledger: an entry may only have its payload erased, once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER entries_append_only ON entries;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER entries_erase_only BEFORE UPDATE ON entries
    FOR EACH ROW EXECUTE FUNCTION chatledger_entry_erases_once();
GRANT UPDATE (content, metadata, salt, erased_at) ON entries TO chatledger_app;

-- A session erased whole is closed: no more appends or resets.
ALTER TABLE sessions ADD COLUMN closed_at timestamptz;

CREATE OR REPLACE FUNCTION chatledger_session_head_advances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id
       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.session_id IS DISTINCT FROM OLD.session_id
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.last_seq <= OLD.last_seq
       OR NEW.updated_at < OLD.updated_at
       OR NEW.message_count < OLD.message_count
       OR NEW.context_start_seq < OLD.context_start_seq
       OR (OLD.closed_at IS NOT NULL AND NEW.closed_at IS DISTINCT FROM OLD.closed_at) THEN
        RAISE EXCEPTION 'chatledger: a session row may only advance its head'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

-- Legal holds: named, with a reason and several sessions each, released once and never deleted.
CREATE TABLE holds (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    placed_by   text NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    released_by text,
    released_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);

-- The sessions a hold covers, by id: a hold may name a session that has no entry yet.
CREATE TABLE hold_sessions (
    tenant_id  bigint NOT NULL,
    hold_id    bigint NOT NULL,
    session_id text COLLATE "C" NOT NULL
        CHECK (session_id ~ '^[A-Za-z0-9._:@-]{1,128}$' AND session_id NOT IN ('.', '..')),
    added_by   text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, hold_id, session_id),
    FOREIGN KEY (tenant_id, hold_id) REFERENCES holds (tenant_id, id)
);
CREATE INDEX hold_sessions_by_session ON hold_sessions (tenant_id, session_id);

CREATE FUNCTION chatledger_hold_releases_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.released_at IS NOT NULL OR NEW.released_at IS NULL
       OR (NEW.tenant_id, NEW.id, NEW.name, NEW.reason, NEW.placed_by, NEW.placed_at)
          IS DISTINCT FROM (OLD.tenant_id, OLD.id, OLD.name, OLD.reason, OLD.placed_by, OLD.placed_at) THEN
        RAISE EXCEPTION 'chatledger: a legal hold may only be released, once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER holds_release_only BEFORE UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION chatledger_hold_releases_once();
CREATE TRIGGER holds_no_delete BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON holds
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER hold_sessions_append_only BEFORE UPDATE OR DELETE ON hold_sessions
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER hold_sessions_no_truncate BEFORE TRUNCATE ON hold_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();

ALTER TABLE holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE holds FORCE ROW LEVEL SECURITY;
ALTER TABLE hold_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE hold_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON holds
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());
CREATE POLICY tenant_isolation ON hold_sessions
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());
GRANT SELECT, INSERT ON holds, hold_sessions TO chatledger_app;
GRANT UPDATE (released_by, released_at) ON holds TO chatledger_app;

-- The unreleased holds covering a session (of the bound tenant), ascending.
CREATE FUNCTION chatledger_session_holds(p_tenant_id bigint, p_session_id text) RETURNS bigint[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(h.id ORDER BY h.id), '{}')
      FROM hold_sessions hs JOIN holds h ON h.tenant_id = hs.tenant_id AND h.id = hs.hold_id
     WHERE hs.tenant_id = p_tenant_id AND hs.session_id = p_session_id AND h.released_at IS NULL
$$;

ALTER TYPE chatledger_append_outcome ADD VALUE 'session_closed';
ALTER TYPE chatledger_append_outcome ADD VALUE 'legal_hold';

-- Appends entries to a session whose row the caller holds locked: chains the hashes, inserts,
-- advances the head (closing the session when p_close), stores the idempotency key. The one
-- writer of entries, for appends, resets and erasure records alike.
CREATE FUNCTION chatledger_extend(
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
                         idempotency_key, author, salt, payload_digest, prev_hash, hash)
    SELECT p_session.tenant_id, p_session.id, first_seq + e.i - 1, e.kind, e.role, e.content,
           e.metadata, chatledger_extend.created_at, p_idempotency_key, p_author, e.salt,
           e.payload_digest,
           CASE WHEN e.i = 1 THEN p_session.head_hash ELSE hashes[e.i - 1] END, hashes[e.i]
      FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, i);

    UPDATE sessions
       SET last_seq = p_session.last_seq + v_count,
           head_hash = v_prev,
           updated_at = chatledger_extend.created_at,
           message_count = p_session.message_count
               + (SELECT count(*) FROM unnest(p_entries) AS e WHERE e.kind = 'message'),
           context_start_seq = coalesce(
               (SELECT max(first_seq + e.i - 1)
                  FROM unnest(p_entries) WITH ORDINALITY AS e (kind, role, content, metadata, salt, payload_digest, i)
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

-- The replay of an append made with an idempotency key, if there is one for this session.
CREATE FUNCTION chatledger_replay(
    p_session sessions,
    p_idempotency_key text,
    p_request_digest bytea,
    OUT outcome chatledger_append_outcome,
    OUT first_seq bigint,
    OUT created_at timestamptz,
    OUT hashes bytea[]
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_key idempotency_keys%ROWTYPE;
BEGIN
    IF p_idempotency_key IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO v_key FROM idempotency_keys
     WHERE tenant_id = p_session.tenant_id AND session_pk = p_session.id AND key = p_idempotency_key;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_key.request_digest <> p_request_digest THEN
        outcome := 'idempotency_key_reused';
        RETURN;
    END IF;
    outcome := 'replayed';
    first_seq := v_key.first_seq;
    SELECT min(e.created_at), array_agg(e.hash ORDER BY e.seq) INTO created_at, hashes
      FROM entries e
     WHERE e.tenant_id = p_session.tenant_id AND e.session_pk = p_session.id
       AND e.seq BETWEEN v_key.first_seq AND v_key.last_seq;
END
$$;

DROP FUNCTION chatledger_append(bigint, text, text, text, boolean, bigint, text, bytea, chatledger_new_entry[]);

-- Appends a batch to a session in one transaction: create the session if allowed, lock its head,
-- replay or refuse an idempotency key, refuse a closed session, check expected_seq, extend.
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
    v_replay record;
    v_now timestamptz;
    v_extended record;
BEGIN
    IF coalesce(cardinality(p_entries), 0) = 0 THEN
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

    SELECT * INTO v_replay FROM chatledger_replay(v_session, p_idempotency_key, p_request_digest);
    IF v_replay.outcome IS NOT NULL THEN
        RETURN QUERY SELECT v_replay.outcome, v_session.last_seq, v_replay.first_seq,
                            v_replay.created_at, v_replay.hashes;
        RETURN;
    END IF;
    IF v_session.closed_at IS NOT NULL THEN
        RETURN QUERY SELECT 'session_closed'::chatledger_append_outcome, v_session.last_seq, NULL::bigint,
                            NULL::timestamptz, NULL::bytea[];
        RETURN;
    END IF;
    IF p_expected_seq IS NOT NULL AND p_expected_seq <> v_session.last_seq THEN
        RETURN QUERY SELECT 'seq_conflict'::chatledger_append_outcome, v_session.last_seq, NULL::bigint,
                            NULL::timestamptz, NULL::bytea[];
        RETURN;
    END IF;

    SELECT * INTO v_extended
      FROM chatledger_extend(v_session, p_tenant, p_author, p_idempotency_key, p_request_digest,
                             p_entries, false);
    RETURN QUERY SELECT 'appended'::chatledger_append_outcome,
                        v_session.last_seq + cardinality(p_entries), v_extended.first_seq,
                        v_extended.created_at, v_extended.hashes;
END
$$;

-- Erases the payload of every message entry up to p_through_seq (default: the whole session)
-- and appends one `erasure` entry recording it, in one transaction; erasing the whole session
-- closes it. Refused (legal_hold, with the hold ids in current_holds) while a hold covers the
-- session. p_author is the caller's key id, or `retention` for the sweeper (p_key_id NULL). p_reason is at most 500 characters. The erasure entry's payload is built here, where
-- its count is known: JCS({"content": null, "metadata": {"erased_count", "erased_through_seq",
-- "reason"}}), keys in RFC 8785 order, integers and a to_json string being their own JCS.
CREATE FUNCTION chatledger_erase(
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
                         sha256(p_salt || convert_to(v_payload, 'UTF8')))::chatledger_new_entry],
               v_through >= v_session.last_seq);
    RETURN QUERY SELECT 'appended'::chatledger_append_outcome, v_session.last_seq + 1,
                        v_extended.first_seq, v_extended.created_at, v_extended.hashes,
                        v_count, v_through, '{}'::bigint[];
END
$$;

-- The summary of one session, or a keyset page of the tenant's sessions, with its state.
DROP FUNCTION chatledger_sessions(bigint, text, text, text, int);
CREATE FUNCTION chatledger_sessions(p_tenant_id bigint, p_key_id text, p_session_id text, p_after text, p_limit int)
RETURNS TABLE (
    session_id text, created_at timestamptz, updated_at timestamptz, last_seq bigint,
    head_hash bytea, message_count bigint, context_start_seq bigint, closed boolean, holds bigint[]
)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    IF p_session_id IS NOT NULL THEN
        RETURN QUERY
            SELECT s.session_id, s.created_at, s.updated_at, s.last_seq, s.head_hash, s.message_count,
                   s.context_start_seq, s.closed_at IS NOT NULL,
                   chatledger_session_holds(p_tenant_id, s.session_id)
              FROM sessions s WHERE s.tenant_id = p_tenant_id AND s.session_id = p_session_id;
    ELSE
        RETURN QUERY
            SELECT s.session_id, s.created_at, s.updated_at, s.last_seq, s.head_hash, s.message_count,
                   s.context_start_seq, s.closed_at IS NOT NULL,
                   chatledger_session_holds(p_tenant_id, s.session_id)
              FROM sessions s
             WHERE s.tenant_id = p_tenant_id AND s.session_id > coalesce(p_after, '')
             ORDER BY s.session_id LIMIT p_limit;
    END IF;
END
$$;

-- Entries now say whether they are erased.
DROP FUNCTION chatledger_entries(bigint, text, text, bigint, bigint, int, boolean, boolean);
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
    -- Two queries rather than a computed ORDER BY, so both directions walk the primary key.
    IF p_descending THEN
        RETURN QUERY
            SELECT v_session.last_seq, v_session.context_start_seq, e.seq, e.kind, e.role, e.content,
                   e.metadata, e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest,
                   e.prev_hash, e.hash, e.erased_at IS NOT NULL
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
                   e.prev_hash, e.hash, e.erased_at IS NOT NULL
              FROM entries e
             WHERE e.tenant_id = p_tenant_id AND e.session_pk = v_session.id
               AND e.seq > v_low AND e.seq < v_high
             ORDER BY e.seq
             LIMIT p_limit;
    END IF;
    IF NOT FOUND THEN
        RETURN QUERY SELECT v_session.last_seq, v_session.context_start_seq, NULL::bigint, NULL::text,
                            NULL::text, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::text,
                            NULL::text, NULL::bytea, NULL::bytea, NULL::bytea, NULL::bytea, NULL::boolean;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION chatledger_extend FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_replay FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_append FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_erase FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_sessions FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_entries FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_session_holds FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_extend TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_replay TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_append TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_erase TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_sessions TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_entries TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_session_holds TO chatledger_app;
CALL chatledger_pin_search_path();
