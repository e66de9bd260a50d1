-- Live tail (issue 16): every advance of a session's head is announced on channel
-- `chatledger_tail`, after commit, to every server's listener, which wakes the streams following
-- that session; each stream then reads the new entries itself under its key's tenant binding.
--
-- Any role that may connect to the database may LISTEN on any channel, so a notification
-- carries no content and nothing from which a session's name can be recovered: the tenant's id,
-- a session key (the first 8 bytes of SHA-256 over a per-database secret, the tenant id and the
-- session id, as 16 hex digits) and the new last seq, "<tenant> <key> <last_seq>", well under
-- the 8000 bytes a payload may have. A stream on a session that does not exist yet computes
-- the same key, so it waits for exactly that session, and a stream of another tenant on the
-- same session id never shares one.
--
-- The server that committed an append sends the notification afterwards, in a transaction of
-- its own (src/tail.rs, Announcer): a NOTIFY inside the append's transaction would serialise
-- every append's commit behind one lock held through its WAL flush.

CREATE TABLE tail_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   bytea NOT NULL CHECK (length(secret) = 32)
);
-- gen_random_uuid draws from the server's strong random source: 244 random bits.
INSERT INTO tail_secret (secret)
VALUES (pg_catalog.sha256(pg_catalog.convert_to(
            gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));
CREATE TRIGGER tail_secret_no_change BEFORE UPDATE OR DELETE ON tail_secret
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER tail_secret_no_truncate BEFORE TRUNCATE ON tail_secret
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
GRANT SELECT ON tail_secret TO chatledger_app;

-- The session key of API.md "Live tail" notifications, as 16 lower-case hex digits. PL/pgSQL
-- rather than SQL: its plan is cached per connection, where a SQL function called from the
-- trigger would be planned again on every append.
CREATE FUNCTION chatledger_tail_key(p_tenant_id bigint, p_session_id text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_secret bytea;
BEGIN
    SELECT secret INTO STRICT v_secret FROM tail_secret;
    RETURN pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(
               v_secret || pg_catalog.int8send(p_tenant_id)
                        || pg_catalog.convert_to(p_session_id, 'UTF8')), 1, 8), 'hex');
END
$$;

REVOKE ALL ON FUNCTION chatledger_tail_key FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chatledger_tail_key TO chatledger_app;
CALL chatledger_pin_search_path();
