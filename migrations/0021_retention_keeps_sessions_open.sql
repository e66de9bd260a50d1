-- Retention never closes a session. An erasure of a whole session closes it (API.md), and the
-- sweeper's erasures did so only when one batch happened to reach the head: a session of three
-- expired messages was closed, one of 1,200 (two batches, the first batch's erasure entry then
-- being the head) stayed open. Retention ages payloads out; it does not end conversations: a
-- customer who returns after the retention period continues in the same session. The sweeper
-- is the only author `retention` (a key's id starts with key_). The rest of the function is
-- 0008's.
DO $do$
DECLARE
    v_body text := pg_catalog.pg_get_functiondef(
        'chatledger_erase(bigint, text, text, text, text, bigint, text, bytea, text, bytea)'::regprocedure);
    v_closes text := '               v_through >= v_session.last_seq);';
BEGIN
    IF pg_catalog.strpos(v_body, v_closes) = 0 THEN
        RAISE EXCEPTION 'chatledger_erase is not the function this migration expects';
    END IF;
    EXECUTE pg_catalog.replace(v_body, v_closes,
        '               v_through >= v_session.last_seq AND p_author <> ''retention'');');
END
$do$;
CALL chatledger_pin_search_path();
