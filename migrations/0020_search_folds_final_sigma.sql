-- Search folds Greek final sigma (ς) to σ, in the text it indexes and in the terms it looks for.
-- ICU lower-cases Σ by its place in the word: ς at a word's end, σ inside one. A term is lower-cased
-- on its own, so a term ending in Σ ended in ς and missed the same letters inside a longer word
-- (ΛΟΓΑΡΙΑΣ did not find ΛΟΓΑΡΙΑΣΜΟΣ), and the other way round. Both functions keep their
-- definitions but for the translate around what they return; the stored text is folded again.
DO $do$
DECLARE
    v_collate text := CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu')
                           THEN ' COLLATE pg_catalog."und-x-icu"' ELSE '' END;
    v_body text := pg_catalog.pg_get_functiondef('chatledger_search_text'::regproc);
    v_return text := 'RETURN (pg_catalog\.lower\(.*\));';
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION chatledger_fold(p_text text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        RETURN pg_catalog.translate(pg_catalog.lower(p_text%s), 'ς', 'σ')$f$, v_collate);
    IF v_body !~ v_return THEN
        RAISE EXCEPTION 'chatledger_search_text is not the function this migration expects';
    END IF;
    EXECUTE pg_catalog.regexp_replace(v_body, v_return,
                                      'RETURN pg_catalog.translate(\1, ''ς'', ''σ'');');
END
$do$;
UPDATE search_docs SET text = pg_catalog.translate(text, 'ς', 'σ')
 WHERE pg_catalog.strpos(text, 'ς') > 0;
