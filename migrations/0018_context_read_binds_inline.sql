-- The context read (and every page of messages) checks its key and binds its tenant itself, as
-- chatledger_bind would, instead of calling it: the call, a PL/pgSQL function with its own
-- pinned search_path run through PERFORM, was about 5% of the read (pgbench of
-- bench/context.sql at 32 clients, alternating, three pairs of 10 s: 11,860 -> 12,470,
-- 12,020 -> 12,790, 12,160 -> 12,710 calls/s). The same check and the same binding, so the
-- same errors; the rest of the function is 0016's. (The append gained nothing measurable the
-- same way and keeps its call.)
DO $do$
DECLARE
    v_body text := pg_catalog.pg_get_functiondef(
        'chatledger_entries(bigint, text, text, bigint, bigint, integer, boolean, boolean)'::regprocedure);
    v_call text := '    PERFORM chatledger_bind(p_tenant_id, p_key_id);';
BEGIN
    IF pg_catalog.strpos(v_body, v_call) = 0 THEN
        RAISE EXCEPTION 'chatledger_entries is not the function this migration expects';
    END IF;
    EXECUTE pg_catalog.replace(v_body, v_call,
        '    IF p_key_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM api_keys WHERE id = p_key_id AND tenant_id = p_tenant_id AND revoked_at IS NULL
    ) THEN
        RAISE EXCEPTION ''unauthenticated'' USING ERRCODE = ''CL401'';
    END IF;
    PERFORM set_config(''chatledger.tenant_id'', p_tenant_id::text, true);');
END
$do$;
CALL chatledger_pin_search_path();
