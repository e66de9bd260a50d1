-- Search indexing off the append path (issues 13 and 18). Filling search_docs and its trigram
-- index in the append's own statement cost every append about as much again as the append
-- itself (pg_trgm's trigram extraction and GIN's insertions, per message), and the bots pay for
-- it while only compliance staff read it. An append now queues the range of seqs it wrote, one
-- small row; servers index the queue in batches (`chatledger_index_pending`, every 100 ms) and
-- a search first indexes what its tenant still has queued, in its own transaction: so a search
-- still finds every message committed before it, as API.md promises.
--
-- An erasure must never leave an erased message's text behind. Both sides take a per-tenant
-- advisory lock before touching search_docs, so that neither acts on a snapshot older than the
-- other's commit: the indexer takes it shared before it reads entries (a later statement, so a
-- newer snapshot, which sees an erasure that committed while it waited); an erasure takes it
-- exclusively before it changes entries (so an indexer that read a message before the erasure
-- has committed its copy, which the erasure's delete of the text, a later statement, then sees).

CREATE TABLE search_pending (
    tenant_id  bigint NOT NULL,
    session_pk bigint NOT NULL,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL
);
REVOKE ALL ON search_pending FROM PUBLIC;

CREATE FUNCTION chatledger_search_lock_key(p_tenant_id bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.hashint8(p_tenant_id)
$$;

CREATE OR REPLACE FUNCTION chatledger_index_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO search_pending (tenant_id, session_pk, first_seq, last_seq)
    SELECT n.tenant_id, n.session_pk, min(n.seq), max(n.seq)
      FROM new_entries n
     WHERE n.kind = 'message'
     GROUP BY n.tenant_id, n.session_pk;
    RETURN NULL;
END
$$;

-- An erasure (the only update entries take) locks its tenant's index before it changes a row;
-- entries' forced row-level security means it runs with its tenant bound.
CREATE FUNCTION chatledger_lock_index_for_erasure() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF chatledger_current_tenant() IS NOT NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(7263, chatledger_search_lock_key(chatledger_current_tenant()));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_erasure_locks_index BEFORE UPDATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_lock_index_for_erasure();

-- Indexes up to p_limit queued ranges of p_tenant_id, or all of them (p_limit NULL: a search,
-- which must also wait for an indexer that has claimed some, to see what it indexed); returns
-- how many ranges it took. The tenant is bound for entries' row-level security for the call.
CREATE FUNCTION chatledger_index_pending(p_tenant_id bigint, p_limit integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_bound text := pg_catalog.current_setting('chatledger.tenant_id', true);
    v_claimed tid[];
    v_ranges bigint;
BEGIN
    IF p_limit IS NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(7263, chatledger_search_lock_key(p_tenant_id));
    ELSIF NOT pg_catalog.pg_try_advisory_xact_lock_shared(7263, chatledger_search_lock_key(p_tenant_id)) THEN
        -- A background round does not wait for a tenant's erasure; it comes back next time.
        RETURN 0;
    END IF;
    PERFORM pg_catalog.set_config('chatledger.tenant_id', p_tenant_id::text, true);
    IF p_limit IS NULL THEN
        -- Waits for an indexer holding some of them: once it commits they are gone, indexed.
        v_claimed := ARRAY(SELECT q.ctid FROM search_pending q WHERE q.tenant_id = p_tenant_id
                              FOR UPDATE);
    ELSE
        v_claimed := ARRAY(SELECT q.ctid FROM search_pending q WHERE q.tenant_id = p_tenant_id
                            LIMIT p_limit FOR UPDATE SKIP LOCKED);
    END IF;
    WITH claimed AS (
        DELETE FROM search_pending p WHERE p.ctid = ANY (v_claimed)
        RETURNING p.session_pk, p.first_seq, p.last_seq
    ), indexed AS (
        INSERT INTO search_docs (tenant_id, session_pk, seq, created_at, role, author, metadata, text)
        SELECT e.tenant_id, e.session_pk, e.seq, e.created_at, e.role, e.author, e.metadata,
               chatledger_search_text(e.content, e.metadata)
          FROM claimed c
          JOIN entries e ON e.tenant_id = p_tenant_id AND e.session_pk = c.session_pk
                        AND e.seq BETWEEN c.first_seq AND c.last_seq
         WHERE e.kind = 'message' AND e.erased_at IS NULL
        ON CONFLICT DO NOTHING
    )
    SELECT count(*) INTO v_ranges FROM claimed;
    PERFORM pg_catalog.set_config('chatledger.tenant_id', coalesce(v_bound, ''), true);
    RETURN v_ranges;
END
$$;

-- The background indexer's round: up to p_limit ranges of the tenants with the most queued.
CREATE FUNCTION chatledger_index_some(p_limit integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_tenant bigint;
    v_ranges bigint := 0;
BEGIN
    FOR v_tenant IN SELECT DISTINCT q.tenant_id FROM search_pending q LOOP
        v_ranges := v_ranges + chatledger_index_pending(v_tenant, p_limit - v_ranges::integer);
        EXIT WHEN v_ranges >= p_limit;
    END LOOP;
    RETURN v_ranges;
END
$$;

-- A search indexes what its tenant has queued first (on a primary; a replica's copy comes from
-- the primary's indexers). The rest of the function is 0011's.
DO $do$
DECLARE
    v_body text := pg_catalog.pg_get_functiondef('chatledger_search'::regproc);
BEGIN
    IF pg_catalog.strpos(v_body, 'RAISE EXCEPTION ''chatledger_search: no tenant is bound'' USING ERRCODE = ''CL401'';
    END IF;') = 0 THEN
        RAISE EXCEPTION 'chatledger_search is not the function this migration expects';
    END IF;
    v_body := pg_catalog.replace(v_body,
        'RAISE EXCEPTION ''chatledger_search: no tenant is bound'' USING ERRCODE = ''CL401'';
    END IF;',
        'RAISE EXCEPTION ''chatledger_search: no tenant is bound'' USING ERRCODE = ''CL401'';
    END IF;
    IF NOT pg_catalog.pg_is_in_recovery()
       AND pg_catalog.current_setting(''transaction_read_only'') = ''off'' THEN
        PERFORM chatledger_index_pending(v_tenant, NULL);
    END IF;');
    EXECUTE v_body;
END
$do$;
ALTER FUNCTION chatledger_search VOLATILE;

REVOKE ALL ON FUNCTION chatledger_search_lock_key FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_lock_index_for_erasure FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_index_pending FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_index_some FROM PUBLIC;
CALL chatledger_pin_search_path();
