-- The scratch table of raw.sql, created by compare.sh as the schema owner.
CREATE TABLE IF NOT EXISTS bench_raw (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text NOT NULL,
    role       text NOT NULL,
    content    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
