-- The access log (API.md "Access log"): one append-only record per read or change of
-- conversation data, tenant-isolated like the ledger; tenant policies as append-only history;
-- and audit search (API.md "Audit search") over a trigram index of every message's text.

-- pg_trgm and btree_gin are trusted extensions: the database's owner may create them.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The current policy of a tenant is its latest row; none means the defaults.
CREATE TABLE tenant_policies (
    tenant_id        bigint NOT NULL REFERENCES tenants (id),
    id               bigint GENERATED ALWAYS AS IDENTITY,
    set_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    retention_days   integer CHECK (retention_days BETWEEN 1 AND 36500),
    log_writer_reads boolean NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE access_records (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 64),
    role        text NOT NULL CHECK (role IN ('writer', 'reader', 'auditor', 'admin', 'operator')),
    action      text NOT NULL CHECK (action IN (
        'read_session', 'list_sessions', 'read_messages', 'read_context', 'verify', 'export',
        'search', 'tail', 'read_access_log', 'proof', 'hold_place', 'hold_release', 'erase',
        'policy_set', 'tenant_create', 'key_create', 'key_revoke')),
    session_id  text COLLATE "C",
    detail      jsonb NOT NULL,
    request_id  text CHECK (length(request_id) <= 128),
    client_addr text CHECK (length(client_addr) <= 64),
    status      smallint NOT NULL CHECK (status BETWEEN 100 AND 599),
    PRIMARY KEY (tenant_id, id)
);
-- "Who has read this transcript": a session's records in id order.
CREATE INDEX access_records_by_session ON access_records (tenant_id, session_id, id);

CREATE TRIGGER tenant_policies_append_only BEFORE UPDATE OR DELETE ON tenant_policies
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tenant_policies_no_truncate BEFORE TRUNCATE ON tenant_policies
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER access_records_append_only BEFORE UPDATE OR DELETE ON access_records
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER access_records_no_truncate BEFORE TRUNCATE ON access_records
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
-- Servers cache a tenant's policy with its keys: a new policy empties every cache, as a key
-- revocation does.
CREATE TRIGGER tenant_policies_notify AFTER INSERT ON tenant_policies
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_keys_changed();

ALTER TABLE access_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON access_records
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());

GRANT SELECT, INSERT ON tenant_policies, access_records TO chatledger_app;

-- Case folding for search, the same in every database whatever its LC_CTYPE: ICU's Unicode
-- lower-casing where PostgreSQL has ICU (und-x-icu), else the database's own. The text audit
-- search finds, folded: a string content, the string blocks and the `text` of object blocks of
-- an array content, and every string value of the metadata; an erased entry (content and
-- metadata gone) has none. chatledger_search_text is used by the index below and
-- chatledger_fold by queries on it, so both fold alike, name everything by schema (pg_dump
-- and autovacuum evaluate index expressions with an empty search_path) and stay inlinable.
DO $$
DECLARE
    v_collate text := CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu')
                           THEN ' COLLATE pg_catalog."und-x-icu"' ELSE '' END;
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE FUNCTION chatledger_fold(p_text text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN pg_catalog.lower(p_text%s)$f$, v_collate);
    EXECUTE pg_catalog.format($f$
        CREATE FUNCTION chatledger_search_text(p_content jsonb, p_metadata jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN pg_catalog.lower(pg_catalog.concat_ws(E'\n',
            CASE WHEN pg_catalog.jsonb_typeof(p_content) OPERATOR(pg_catalog.=) 'string'
                 THEN pg_catalog.jsonb_extract_path_text(p_content, VARIADIC '{}'::text[]) END,
            CASE WHEN pg_catalog.jsonb_typeof(p_content) OPERATOR(pg_catalog.=) 'array' THEN
                (SELECT pg_catalog.string_agg(
                            CASE WHEN pg_catalog.jsonb_typeof(b) OPERATOR(pg_catalog.=) 'string'
                                 THEN pg_catalog.jsonb_extract_path_text(b, VARIADIC '{}'::text[])
                                 ELSE pg_catalog.jsonb_extract_path_text(b, 'text') END,
                            E'\n')
                   FROM pg_catalog.jsonb_array_elements(p_content) AS b)
            END,
            (SELECT pg_catalog.string_agg(pg_catalog.jsonb_extract_path_text(v, VARIADIC '{}'::text[]), E'\n')
               FROM pg_catalog.jsonb_path_query(p_metadata, 'strict $.**') AS v
              WHERE pg_catalog.jsonb_typeof(v) OPERATOR(pg_catalog.=) 'string'))%s)$f$, v_collate);
END
$$;
GRANT EXECUTE ON FUNCTION chatledger_fold TO chatledger_app;
GRANT EXECUTE ON FUNCTION chatledger_search_text TO chatledger_app;

-- A trigram index with the tenant as its first column (btree_gin), so a substring of three or
-- more characters of any script is found by index in one tenant's messages. Needs a database
-- whose LC_CTYPE classifies non-ASCII letters (the embedded default uses C.UTF-8): under the C
-- locale, words in other scripts give no trigrams and their searches read every row.
CREATE INDEX entries_search ON entries
    USING gin (tenant_id, chatledger_search_text(content, metadata) gin_trgm_ops)
    WHERE kind = 'message';
-- Newest first, time ranges, and (later) retention.
CREATE INDEX entries_by_time ON entries (tenant_id, created_at, session_pk, seq);

-- chatledger_search_text joins the inlinable, schema-qualified functions left unpinned.
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
                                 'chatledger_search_text', 'chatledger_fold')
    LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = pg_catalog, %I, pg_temp',
                                  v_routine, v_schema::text);
    END LOOP;
END
$$;
CALL chatledger_pin_search_path();

-- Writes one access record for p_tenant_id (binding it, after checking a key actor is live).
CREATE FUNCTION chatledger_record_access(
    p_tenant_id bigint,
    p_key_id text,
    p_actor text,
    p_role text,
    p_action text,
    p_session_id text,
    p_detail jsonb,
    p_request_id text,
    p_client_addr text,
    p_status smallint
) RETURNS TABLE (id bigint, at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM chatledger_bind(p_tenant_id, p_key_id);
    RETURN QUERY
        INSERT INTO access_records (tenant_id, actor, role, action, session_id, detail,
                                    request_id, client_addr, status)
        VALUES (p_tenant_id, p_actor, p_role, p_action, p_session_id, p_detail, p_request_id,
                p_client_addr, p_status)
        RETURNING access_records.id, access_records.at;
END
$$;
REVOKE ALL ON FUNCTION chatledger_record_access FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_record_access TO chatledger_app;
CALL chatledger_pin_search_path();
