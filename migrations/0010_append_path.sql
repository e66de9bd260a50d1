-- Performance (issue 18): the same rules at less cost per append and per read. Profiled with
-- perf on the backends: building the search index's text and checking an entry's constraints
-- were parsed and planned anew for every INSERT statement, and a page's size function for every
-- read. (The foreign keys from entries to their session cost a trigger per entry, about 4%; they
-- stay: they keep an entry from pointing at another tenant's session.)

-- 1. The search text in PL/pgSQL. As a SQL function with subqueries it could not be inlined, so
-- every INSERT parsed and planned its body twice (once trying to inline it, once to run it):
-- a quarter of the append's time in PostgreSQL. PL/pgSQL compiles it once per connection and
-- keeps its plans. Same text for every input (the previous definition's, checked on the
-- migration's test data); the index entries stay valid.
DO $do$
DECLARE
    v_collate text := CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu')
                           THEN ' COLLATE pg_catalog."und-x-icu"' ELSE '' END;
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION chatledger_search_text(p_content jsonb, p_metadata jsonb) RETURNS text
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $body$
        DECLARE
            v_content text;
            v_metadata text;
        BEGIN
            IF pg_catalog.jsonb_typeof(p_content) OPERATOR(pg_catalog.=) 'string' THEN
                v_content := pg_catalog.jsonb_extract_path_text(p_content, VARIADIC '{}'::text[]);
            ELSIF pg_catalog.jsonb_typeof(p_content) OPERATOR(pg_catalog.=) 'array' THEN
                v_content := (SELECT pg_catalog.string_agg(
                                  CASE WHEN pg_catalog.jsonb_typeof(b) OPERATOR(pg_catalog.=) 'string'
                                       THEN pg_catalog.jsonb_extract_path_text(b, VARIADIC '{}'::text[])
                                       ELSE pg_catalog.jsonb_extract_path_text(b, 'text') END,
                                  E'\n')
                                FROM pg_catalog.jsonb_array_elements(p_content) AS b);
            END IF;
            -- An empty object has no string values: the usual metadata costs no query.
            IF p_metadata IS NOT NULL AND p_metadata OPERATOR(pg_catalog.<>) '{}'::jsonb THEN
                v_metadata := (SELECT pg_catalog.string_agg(pg_catalog.jsonb_extract_path_text(v, VARIADIC '{}'::text[]), E'\n')
                                 FROM pg_catalog.jsonb_path_query(p_metadata, 'strict $.**') AS v
                                WHERE pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.=) 'string');
            END IF;
            RETURN pg_catalog.lower(pg_catalog.concat_ws(E'\n', v_content, v_metadata)%s);
        END
        $body$ $f$, v_collate);
END
$do$;

-- 2. One CHECK for all of an entry's rules, in a PL/pgSQL function. Every INSERT parsed and
-- planned each CHECK expression from its stored text anew (ten of them: a tenth of the append's
-- time in PostgreSQL); a call is short to parse, and the function's body is compiled once per
-- connection. Same rules as the ten constraints it replaces.
CREATE FUNCTION chatledger_entry_valid(
    p_seq bigint, p_kind text, p_role text, p_content jsonb, p_metadata jsonb, p_salt bytea,
    p_payload_digest bytea, p_prev_hash bytea, p_hash bytea, p_payload_bytes integer,
    p_erased_at timestamptz
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN p_seq >= 1
        AND p_kind IN ('message', 'context_reset', 'erasure')
        AND (p_role IS NULL OR p_role IN ('system', 'user', 'assistant', 'tool'))
        AND (p_kind = 'message') = (p_role IS NOT NULL)
        AND (p_salt IS NULL OR length(p_salt) = 16)
        AND length(p_payload_digest) = 32
        AND length(p_prev_hash) = 32
        AND length(p_hash) = 32
        AND (p_payload_bytes IS NULL OR p_payload_bytes >= 0)
        AND CASE WHEN p_erased_at IS NULL
                 THEN p_metadata IS NOT NULL AND p_salt IS NOT NULL
                      AND (p_kind <> 'message' OR p_content IS NOT NULL)
                 ELSE p_kind = 'message' AND p_content IS NULL AND p_metadata IS NULL AND p_salt IS NULL
            END;
END
$$;
REVOKE ALL ON FUNCTION chatledger_entry_valid FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_entry_valid TO chatledger_app;

ALTER TABLE entries
    DROP CONSTRAINT entries_seq_check,
    DROP CONSTRAINT entries_kind_check,
    DROP CONSTRAINT entries_role_check,
    DROP CONSTRAINT entries_role_only_of_messages,
    DROP CONSTRAINT entries_salt_check,
    DROP CONSTRAINT entries_payload_digest_check,
    DROP CONSTRAINT entries_prev_hash_check,
    DROP CONSTRAINT entries_hash_check,
    DROP CONSTRAINT entries_payload_bytes_check,
    DROP CONSTRAINT entries_payload_or_erased,
    ADD CONSTRAINT entries_valid CHECK (chatledger_entry_valid(
        seq, kind, role, content, metadata, salt, payload_digest, prev_hash, hash, payload_bytes,
        erased_at)) NOT VALID;
-- The ten constraints it replaces held for every row; checking again takes a lighter lock.
ALTER TABLE entries VALIDATE CONSTRAINT entries_valid;

-- 3. chatledger_entry_bytes inlined again into the page queries: pinning its search_path made it
-- a function call per entry read, parsed and planned anew for every page (a fifth of a context
-- read's time in PostgreSQL). Its body is a SQL-standard one, resolved when it was created, so
-- no search_path can change what it calls; it joins the other inlined functions left unpinned.
ALTER FUNCTION chatledger_entry_bytes(integer, jsonb, jsonb) RESET search_path;
CREATE OR REPLACE PROCEDURE chatledger_pin_search_path() LANGUAGE plpgsql AS $$
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
           AND p.proname NOT IN ('chatledger_current_tenant', 'chatledger_entry_hash',
                                 'chatledger_search_text', 'chatledger_fold',
                                 'chatledger_entry_bytes')
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = pg_catalog, %I, pg_temp',
                                  v_routine, v_schema::text);
    END LOOP;
END
$$;
CALL chatledger_pin_search_path();
