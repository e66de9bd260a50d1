-- Audit search through its index under row-level security (issue 13). PostgreSQL evaluates a
-- query's own conditions on a table with row-level security only after the policy's, unless
-- they are leakproof, and only a superuser can mark a function leakproof: so as the runtime
-- role a `LIKE` on entries could never use the trigram index, and every search read the
-- tenant's messages newest first, testing each (seconds at a million messages).
--
-- The searchable text of each message therefore lives in its own table, `search_docs`, which
-- has no row-level security and which the runtime role cannot read at all. Its only reader is
-- chatledger_search, a SECURITY DEFINER function that looks up the tenant the transaction has
-- bound (chatledger_bind: a live key of that tenant) and nothing else, then reads the entries
-- themselves under their row-level security. Triggers keep the table in step with entries in
-- the same transaction: an insert adds a message's text, an erasure removes it. Entries lose
-- the expression index, which also spares every append evaluating chatledger_search_text in it.

-- A search is answered from this table alone (the filters' columns are copied here too) and
-- only its page of hits is read from entries: a query that also joined entries would put the
-- patterns back under entries' row-level security, which the planner carries over to any table
-- joined on the tenant.
CREATE TABLE search_docs (
    tenant_id  bigint NOT NULL,
    session_pk bigint NOT NULL,
    seq        bigint NOT NULL,
    created_at timestamptz NOT NULL,
    role       text NOT NULL,
    author     text NOT NULL,
    metadata   jsonb NOT NULL,
    -- chatledger_search_text(content, metadata): folded, as chatledger_fold folds the terms.
    text       text NOT NULL,
    PRIMARY KEY (tenant_id, session_pk, seq)
);
REVOKE ALL ON search_docs FROM PUBLIC;
-- Rare terms: the trigram index. Common ones: newest first until a page is full.
CREATE INDEX search_docs_text ON search_docs USING gin (tenant_id, text gin_trgm_ops);
CREATE INDEX search_docs_by_time ON search_docs (tenant_id, created_at, session_pk, seq);

CREATE FUNCTION chatledger_index_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO search_docs (tenant_id, session_pk, seq, created_at, role, author, metadata, text)
    SELECT n.tenant_id, n.session_pk, n.seq, n.created_at, n.role, n.author, n.metadata,
           chatledger_search_text(n.content, n.metadata)
      FROM new_entries n
     WHERE n.kind = 'message' AND n.erased_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_index AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_index_entries();

CREATE FUNCTION chatledger_unindex_erased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    DELETE FROM search_docs d
     USING erased_entries n
     WHERE d.tenant_id = n.tenant_id AND d.session_pk = n.session_pk AND d.seq = n.seq
       AND n.erased_at IS NOT NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_unindex AFTER UPDATE ON entries
    REFERENCING NEW TABLE AS erased_entries
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_unindex_erased();

-- The messages of the bound tenant holding every pattern (LIKE patterns, already folded and
-- wrapped in %), newest first, after the cursor, with the filters that are not NULL. The
-- statement is built per call so that each pattern is its own condition, which the trigram
-- index answers, and planned with the values at hand.
CREATE FUNCTION chatledger_search(
    p_patterns text[],
    p_session_id text,
    p_role text,
    p_author text,
    p_from timestamptz,
    p_to timestamptz,
    p_metadata jsonb,
    p_after_created_at timestamptz,
    p_after_session_pk bigint,
    p_after_seq bigint,
    p_limit integer
) RETURNS TABLE (
    session_id text, session_pk bigint, seq bigint, kind text, role text, content jsonb,
    metadata jsonb, created_at timestamptz, idempotency_key text, author text, salt bytea,
    payload_digest bytea, prev_hash bytea, hash bytea, erased boolean
)
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE
    v_tenant bigint := chatledger_current_tenant();
    v_session_pk bigint;
    v_filters text := '';
    v_patterns text := '';
    v_order text := ' ORDER BY d.created_at DESC, d.session_pk DESC, d.seq DESC';
    v_hits text;
    v_recent_pks bigint[];
    v_recent_seqs bigint[];
    v_recent_times timestamptz[];
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'chatledger_search: no tenant is bound' USING ERRCODE = 'CL401';
    END IF;
    FOR i IN 1..coalesce(cardinality(p_patterns), 0) LOOP
        v_patterns := v_patterns || format(' AND d.text LIKE $2[%s]', i);
    END LOOP;
    IF p_session_id IS NOT NULL THEN
        SELECT s.id INTO v_session_pk FROM sessions s
         WHERE s.tenant_id = v_tenant AND s.session_id = p_session_id;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        v_filters := v_filters || ' AND d.session_pk = $3';
    END IF;
    IF p_role IS NOT NULL THEN v_filters := v_filters || ' AND d.role = $4'; END IF;
    IF p_author IS NOT NULL THEN v_filters := v_filters || ' AND d.author = $5'; END IF;
    IF p_from IS NOT NULL THEN v_filters := v_filters || ' AND d.created_at >= $6'; END IF;
    IF p_to IS NOT NULL THEN v_filters := v_filters || ' AND d.created_at < $7'; END IF;
    IF p_metadata IS NOT NULL THEN v_filters := v_filters || ' AND d.metadata @> $8'; END IF;
    IF p_after_created_at IS NOT NULL THEN
        v_filters := v_filters || ' AND (d.created_at, d.session_pk, d.seq) < ($9, $10, $11)';
    END IF;
    v_hits := 'SELECT d.session_pk, d.seq, d.created_at FROM search_docs d WHERE d.tenant_id = $1'
              || v_filters || v_patterns || v_order || ' LIMIT $12';
    -- A common term: its newest matches are among the newest messages, which the time index
    -- walks in order; the trigram index would return every match to be sorted. So look first in
    -- the newest 2,000 messages the filters let through: a full page there is the page
    -- (no newer match lies outside the window); else ask the trigram index.
    IF v_patterns <> '' THEN
        EXECUTE 'SELECT array_agg(r.session_pk), array_agg(r.seq), array_agg(r.created_at)
                   FROM (SELECT d.session_pk, d.seq, d.created_at
                           FROM (SELECT d.* FROM search_docs d WHERE d.tenant_id = $1' || v_filters
                || v_order || ' LIMIT 2000) d
                          WHERE true' || v_patterns || v_order || ' LIMIT $12) r'
            INTO v_recent_pks, v_recent_seqs, v_recent_times
            USING v_tenant, p_patterns, v_session_pk, p_role, p_author, p_from, p_to, p_metadata,
                  p_after_created_at, p_after_session_pk, p_after_seq, p_limit;
        -- The page found there, as it is: not searched again.
        IF coalesce(cardinality(v_recent_pks), 0) >= p_limit THEN
            v_hits := 'SELECT * FROM unnest($13::bigint[], $14::bigint[], $15::timestamptz[])
                          AS d (session_pk, seq, created_at)';
        END IF;
    END IF;
    -- The page of hits is a subquery with its own LIMIT, planned on its own; its rows are then
    -- read from entries, under their row-level security.
    RETURN QUERY EXECUTE
        'SELECT s.session_id, e.session_pk, e.seq, e.kind, e.role, e.content, e.metadata,
                e.created_at, e.idempotency_key, e.author, e.salt, e.payload_digest, e.prev_hash,
                e.hash, false
           FROM (' || v_hits || ') h
           JOIN entries e ON e.tenant_id = $1 AND e.session_pk = h.session_pk AND e.seq = h.seq
           JOIN sessions s ON s.tenant_id = $1 AND s.id = e.session_pk
          WHERE e.erased_at IS NULL
          ORDER BY h.created_at DESC, h.session_pk DESC, h.seq DESC'
        USING v_tenant, p_patterns, v_session_pk, p_role, p_author, p_from, p_to, p_metadata,
              p_after_created_at, p_after_session_pk, p_after_seq, p_limit,
              v_recent_pks, v_recent_seqs, v_recent_times;
END
$$;

REVOKE ALL ON FUNCTION chatledger_index_entries FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_unindex_erased FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_search FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_search TO chatledger_app;
CALL chatledger_pin_search_path();

-- The text of every message written so far, tenant by tenant (entries' row-level security
-- shows the owner one bound tenant at a time).
DO $$
DECLARE
    v_tenant bigint;
BEGIN
    FOR v_tenant IN SELECT id FROM tenants LOOP
        PERFORM pg_catalog.set_config('chatledger.tenant_id', v_tenant::text, true);
        INSERT INTO search_docs (tenant_id, session_pk, seq, created_at, role, author, metadata, text)
        SELECT e.tenant_id, e.session_pk, e.seq, e.created_at, e.role, e.author, e.metadata,
               chatledger_search_text(e.content, e.metadata)
          FROM entries e
         WHERE e.tenant_id = v_tenant AND e.kind = 'message' AND e.erased_at IS NULL;
    END LOOP;
    PERFORM pg_catalog.set_config('chatledger.tenant_id', '', true);
END
$$;

DROP INDEX entries_search;
