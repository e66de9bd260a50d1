-- The append path, part 3 (issue 18): the same rules for the checkpoint log's queue, without
-- parsing stored expressions on every append. Like entries' CHECKs in 0010 and sessions' in 0013,
-- each CHECK of tlog_pending and the queue trigger's WHEN clause were read from their stored
-- node trees anew for every statement that wrote a head advance (pgbench of chatledger_append,
-- 32 clients, alternating: about 4% more appends without them).

-- 1. tlog_pending's two CHECKs as one, in a PL/pgSQL function compiled once per connection.
-- The same rules, and also none left to NULL: a leaf is an append (a session's seq range and
-- head) or an access record. (The old CHECKs took a NULL last_seq for true.)
CREATE FUNCTION chatledger_pending_valid(
    p_session_id text, p_first_seq bigint, p_last_seq bigint, p_head_hash bytea, p_access_id bigint
) RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    -- Never NULL, which a CHECK would take for true.
    RETURN coalesce(CASE WHEN p_access_id IS NULL
                         THEN p_session_id IS NOT NULL AND p_last_seq >= p_first_seq
                              AND length(p_head_hash) = 32
                         ELSE p_session_id IS NULL AND p_first_seq IS NULL AND p_last_seq IS NULL
                              AND p_head_hash IS NULL
                    END, false);
END
$$;
REVOKE ALL ON FUNCTION chatledger_pending_valid FROM PUBLIC;

ALTER TABLE tlog_pending
    DROP CONSTRAINT tlog_pending_head_hash_check,
    DROP CONSTRAINT tlog_pending_check,
    ADD CONSTRAINT tlog_pending_valid CHECK (chatledger_pending_valid(
        session_id, first_seq, last_seq, head_hash, access_id)) NOT VALID;
ALTER TABLE tlog_pending VALIDATE CONSTRAINT tlog_pending_valid;

-- 2. The queue trigger without `WHEN (NEW.last_seq > OLD.last_seq)`: sessions_head_only_advances
-- refuses every update of a session that does not advance its head, so the clause always held.
DROP TRIGGER sessions_queue_leaf ON sessions;
CREATE TRIGGER sessions_queue_leaf AFTER UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION chatledger_queue_append_leaf();
