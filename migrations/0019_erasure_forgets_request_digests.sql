-- An erasure also forgets the request digests of the appends it erased. An idempotency key keeps
-- SHA-256 over the canonical request body, unsalted, so that a retry can be told from another
-- request; after an erasure that digest still confirmed a guess of what was erased: a retry
-- with the same key and the guessed body was replayed (201), any other body refused (422), and
-- anyone reading the table could test guesses offline ("yes" is one guess away). Now every
-- statement that erases messages replaces the digest of each key whose append it erased with
-- one byte, 0x00, which no request's digest equals (from an AFTER trigger, like the search
-- index's removal, so every way of erasing does it): any request with such a key, whatever its
-- body and whichever route it is sent to, is refused as idempotency_key_reused
-- (chatledger_replay). Nothing is written twice, no answer tells a right guess from a wrong one,
-- and an erasure sent with an erased append's key is refused rather than taken for its replay.
CREATE FUNCTION chatledger_request_forgotten_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.request_digest = '\x00'::bytea OR NEW.request_digest <> '\x00'::bytea
       OR (NEW.tenant_id, NEW.session_pk, NEW.key, NEW.first_seq, NEW.last_seq, NEW.created_at)
          IS DISTINCT FROM
          (OLD.tenant_id, OLD.session_pk, OLD.key, OLD.first_seq, OLD.last_seq, OLD.created_at) THEN
        RAISE EXCEPTION 'chatledger: an idempotency key may only forget its request digest, once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER idempotency_keys_append_only ON idempotency_keys;
CREATE TRIGGER idempotency_keys_no_delete BEFORE DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER idempotency_keys_forget_only BEFORE UPDATE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION chatledger_request_forgotten_once();

-- The keys of the appends the statement erased. An erasure erases every message up to its seq
-- that was not erased before, so each session's erased seqs span a range in which every message
-- is erased now or was before; an append's entries are all messages, so the keys to forget are
-- those of that range whose first entry is a message (a reset's or an erasure's key stays).
CREATE FUNCTION chatledger_forget_erased_requests() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE idempotency_keys k SET request_digest = '\x00'::bytea
      FROM (SELECT n.tenant_id, n.session_pk, min(n.seq) AS first_seq, max(n.seq) AS last_seq
              FROM erased_entries n WHERE n.erased_at IS NOT NULL
             GROUP BY n.tenant_id, n.session_pk) r
     WHERE k.tenant_id = r.tenant_id AND k.session_pk = r.session_pk
       AND k.first_seq BETWEEN r.first_seq AND r.last_seq
       AND k.request_digest <> '\x00'::bytea
       AND EXISTS (SELECT 1 FROM entries e
                    WHERE e.tenant_id = k.tenant_id AND e.session_pk = k.session_pk
                      AND e.seq = k.first_seq AND e.kind = 'message');
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_erasure_forgets_requests AFTER UPDATE ON entries
    REFERENCING NEW TABLE AS erased_entries
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_forget_erased_requests();
REVOKE ALL ON FUNCTION chatledger_request_forgotten_once FROM PUBLIC;
REVOKE ALL ON FUNCTION chatledger_forget_erased_requests FROM PUBLIC;
CALL chatledger_pin_search_path();
