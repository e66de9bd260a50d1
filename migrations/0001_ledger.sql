-- The ledger schema: tenants, sessions with their head, the append-only entries, idempotency
-- records, and the runtime role that every request runs as.

-- The runtime role is global to the cluster; several databases (or concurrent test migrations)
-- may race to create it, hence the exception handlers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chatledger_app') THEN
        IF NOT (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RAISE EXCEPTION 'the runtime role chatledger_app does not exist and % may not create it', current_user
                USING HINT = format(
                    'Ask a DBA to run: CREATE ROLE chatledger_app NOLOGIN NOSUPERUSER NOBYPASSRLS; GRANT chatledger_app TO %I;',
                    current_user);
        END IF;
        BEGIN
            CREATE ROLE chatledger_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'chatledger_app', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT chatledger_app TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text COLLATE "C" NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9-]{1,63}$'),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- API keys are stored only as the SHA-256 digest of the key, looked up by index. A key can be
-- revoked once and never deleted, so authorship stays attributable.
CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY CHECK (id ~ '^key_[0-9A-Z]{26}$'),
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    role       text NOT NULL CHECK (role IN ('writer', 'reader', 'auditor')),
    label      text CHECK (length(label) <= 200),
    digest     bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at timestamptz
);

CREATE TABLE sessions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         bigint NOT NULL REFERENCES tenants (id),
    session_id        text COLLATE "C" NOT NULL
        CHECK (session_id ~ '^[A-Za-z0-9._:@-]{1,128}$' AND session_id NOT IN ('.', '..')),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    last_seq          bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    head_hash         bytea NOT NULL CHECK (length(head_hash) = 32),
    message_count     bigint NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    context_start_seq bigint NOT NULL DEFAULT 0 CHECK (context_start_seq >= 0),
    UNIQUE (tenant_id, session_id)
);

CREATE TABLE entries (
    tenant_id       bigint NOT NULL,
    session_pk      bigint NOT NULL REFERENCES sessions (id),
    seq             bigint NOT NULL CHECK (seq >= 1),
    kind            text NOT NULL CHECK (kind IN ('message', 'context_reset')),
    role            text CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         jsonb,
    metadata        jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    idempotency_key text,
    author          text NOT NULL,
    salt            bytea NOT NULL CHECK (length(salt) = 16),
    payload_digest  bytea NOT NULL CHECK (length(payload_digest) = 32),
    prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea NOT NULL CHECK (length(hash) = 32),
    -- The last line of defence against two values at one seq.
    PRIMARY KEY (tenant_id, session_pk, seq),
    CHECK ((kind = 'message') = (role IS NOT NULL AND content IS NOT NULL))
);

CREATE TABLE idempotency_keys (
    tenant_id      bigint NOT NULL,
    session_pk     bigint NOT NULL REFERENCES sessions (id),
    key            text NOT NULL,
    request_digest bytea NOT NULL,
    first_seq      bigint NOT NULL,
    last_seq       bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, session_pk, key)
);

-- Append-only, enforced by the database for every role, the owner included.
CREATE FUNCTION chatledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chatledger: % on % is not allowed (append-only ledger)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION chatledger_session_head_advances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id
       OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.session_id IS DISTINCT FROM OLD.session_id
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.last_seq <= OLD.last_seq
       OR NEW.updated_at < OLD.updated_at
       OR NEW.message_count < OLD.message_count
       OR NEW.context_start_seq < OLD.context_start_seq THEN
        RAISE EXCEPTION 'chatledger: a session row may only advance its head'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION chatledger_key_revokes_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL
       OR (NEW.id, NEW.tenant_id, NEW.role, NEW.label, NEW.digest, NEW.created_at)
          IS DISTINCT FROM (OLD.id, OLD.tenant_id, OLD.role, OLD.label, OLD.digest, OLD.created_at) THEN
        RAISE EXCEPTION 'chatledger: an API key may only be revoked, once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER api_keys_revoke_only BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION chatledger_key_revokes_once();
CREATE TRIGGER api_keys_no_delete BEFORE DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER api_keys_no_truncate BEFORE TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER idempotency_keys_append_only BEFORE UPDATE OR DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER idempotency_keys_no_truncate BEFORE TRUNCATE ON idempotency_keys
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER sessions_head_only_advances BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION chatledger_session_head_advances();
CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION chatledger_refuse_change();
CREATE TRIGGER sessions_no_truncate BEFORE TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION chatledger_refuse_change();

-- Row-level security: every tenant-scoped row is visible only while the transaction has bound
-- its tenant with set_config('chatledger.tenant_id', ..., true). An unset setting reads as NULL
-- or '' and matches no row.
CREATE FUNCTION chatledger_current_tenant() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('chatledger.tenant_id', true), '')::bigint
$$;

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE entries FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON sessions
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());
CREATE POLICY tenant_isolation ON entries
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = chatledger_current_tenant()) WITH CHECK (tenant_id = chatledger_current_tenant());

-- Least privilege for the runtime role: read and insert, advance a session head, revoke a key.
GRANT SELECT, INSERT ON tenants, api_keys, entries, idempotency_keys TO chatledger_app;
GRANT UPDATE (revoked_at) ON api_keys TO chatledger_app;
GRANT SELECT, INSERT, UPDATE ON sessions TO chatledger_app;
GRANT SELECT ON _sqlx_migrations TO chatledger_app;
