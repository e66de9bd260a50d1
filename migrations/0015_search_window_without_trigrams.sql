-- A search whose terms give the trigram index nothing (every term shorter than three letters or
-- digits, as a 2-character Chinese word is) looks for its page in the newest 50,000 messages
-- before it reads the tenant's every message. Such a pattern makes pg_trgm's index return the
-- whole tenant, and the planner, which cannot estimate how common the term is, then scans and
-- sorts every message: about 250 ms a search at a million messages (bench/search.sh), however
-- many matches the newest messages hold. Walking the time index stops at the page's last
-- match; at 50,000 messages without a full page it has cost about 45 ms more than before.
-- "Letters or digits" is the database's own classification ([[:alnum:]] under its LC_CTYPE),
-- the one pg_trgm uses to find words, so the two agree on which terms give trigrams.
DO $do$
DECLARE
    v_body text := pg_catalog.pg_get_functiondef('chatledger_search'::regproc);
    v_window_then text := '    -- A common term: its newest matches are among the newest messages, which the time index
    -- walks in order; the trigram index would return every match to be sorted. So look first in
    -- the newest 2,000 messages the filters let through: a full page there is the page
    -- (no newer match lies outside the window); else ask the trigram index.';
    v_window_now text := '    -- A common term: its newest matches are among the newest messages, which the time index
    -- walks in order; the trigram index would return every match to be sorted. So look first in
    -- the newest 2,000 messages the filters let through (50,000 when no term gives a trigram,
    -- migration 0015): a full page there is the page (no newer match lies outside the window);
    -- else ask the trigram index.';
    v_limit_then text := '|| v_order || '' LIMIT 2000) d';
    v_limit_now text := '|| v_order || '' LIMIT ''
                || CASE WHEN EXISTS (SELECT 1 FROM unnest(p_patterns) AS t WHERE t ~ ''[[:alnum:]]{3}'')
                        THEN 2000 ELSE 50000 END || '') d';
BEGIN
    IF pg_catalog.strpos(v_body, v_window_then) = 0 OR pg_catalog.strpos(v_body, v_limit_then) = 0 THEN
        RAISE EXCEPTION 'chatledger_search is not the function this migration expects';
    END IF;
    v_body := pg_catalog.replace(v_body, v_window_then, v_window_now);
    v_body := pg_catalog.replace(v_body, v_limit_then, v_limit_now);
    EXECUTE v_body;
END
$do$;
