-- An erasure locks the search index of every tenant it erases in, bound or not. 0012 took the
-- lock in a BEFORE trigger, and only for the bound tenant; a superuser's manual erasure runs
-- with none bound (row-level security does not apply to it), took no lock, and could delete the
-- text before an indexer that had read the message committed its copy: erased text left
-- searchable. The AFTER trigger knows the erased rows, so it locks their tenants (in order, as
-- nothing else takes two) before it deletes their text, and the BEFORE trigger goes: one lock,
-- one place. Taken after the rows changed, the lock still orders the two sides: an indexer
-- holding it has committed once the delete, a later statement, runs; an indexer that comes
-- after waits for the erasure's commit and then reads the rows erased. The rest of the function
-- is 0011's.
DO $do$
DECLARE
    v_body text := pg_catalog.pg_get_functiondef('chatledger_unindex_erased'::regproc);
    v_delete text := 'BEGIN
    DELETE FROM search_docs d';
BEGIN
    IF pg_catalog.strpos(v_body, v_delete) = 0 THEN
        RAISE EXCEPTION 'chatledger_unindex_erased is not the function this migration expects';
    END IF;
    EXECUTE pg_catalog.replace(v_body, v_delete, 'BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(7263, chatledger_search_lock_key(t.tenant_id))
       FROM (SELECT DISTINCT n.tenant_id FROM erased_entries n WHERE n.erased_at IS NOT NULL
              ORDER BY n.tenant_id) t;
    DELETE FROM search_docs d');
END
$do$;
DROP TRIGGER entries_erasure_locks_index ON entries;
DROP FUNCTION chatledger_lock_index_for_erasure();
