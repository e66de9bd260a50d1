//! Audit search (API.md "Audit search"): every message of a tenant whose text holds every term
//! as a case-insensitive substring, in any script, newest first, with filters. The text is
//! `chatledger_search_text(content, metadata)` (migration 0004), kept per message in
//! `search_docs` with a trigram index and read by `chatledger_search` (migration 0011), which
//! builds its statement per request so that each term is one indexable `LIKE`. Appends queue
//! their messages for it; servers index the queue in the background (migration 0012).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, Row};

use super::hash::Timestamp;
use super::read::{Entry, RawJson};
use super::types::{MessageRole, SessionId};
use crate::access::{Action, Outcome, Recorded};
use crate::auth::Scope;
use crate::error::{Error, Invalid};

/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 200;

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Substrings every hit holds (terms and quoted phrases of `q`).
    pub terms: Vec<String>,
    pub session_id: Option<SessionId>,
    pub role: Option<MessageRole>,
    pub author: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// An object the entry's metadata must contain (`@>`).
    pub metadata: Option<Map<String, Value>>,
    pub after: Option<Cursor>,
    pub limit: i64,
}

/// Where a page of results ends: the last hit's time, session and seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    micros: i64,
    session_pk: i64,
    seq: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}.{}", self.micros, self.session_pk, self.seq))
    }

    pub fn decode(text: &str) -> Result<Self, Invalid> {
        let invalid = || Invalid::parameter("after is not a cursor this server gave out");
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let mut parts = raw.split('.').map(str::parse::<i64>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(micros)), Some(Ok(session_pk)), Some(Ok(seq)), None) => Ok(Cursor {
                micros,
                session_pk,
                seq,
            }),
            _ => Err(invalid()),
        }
    }
}

/// The terms of `q`: separated by spaces, a `"quoted phrase"` is one term.
pub fn parse_terms(q: &str) -> Result<Vec<String>, Invalid> {
    let mut terms = Vec::new();
    let mut rest = q;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| Invalid::parameter("q has a phrase without its closing quote"))?;
            let phrase = &quoted[..end];
            if !phrase.trim().is_empty() {
                terms.push(phrase.to_owned());
            }
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            terms.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    if terms.iter().any(|term| term.contains('\0')) {
        return Err(Invalid::parameter("q must not contain NUL"));
    }
    Ok(terms)
}

/// One result.
#[derive(Debug, Clone)]
pub struct Hit {
    pub session_id: String,
    pub entry: Entry,
    pub snippet: String,
}

/// A page of results, and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Hits {
    pub hits: Vec<Hit>,
    pub next: Option<Cursor>,
}

/// Runs `query` in the tenant of `scope`; must run inside a transaction (the tenant binding
/// lasts for it).
pub async fn search(
    db: &mut PgConnection,
    scope: Scope<'_>,
    query: &SearchQuery,
) -> Result<Hits, Error> {
    sqlx::query!(
        "SELECT chatledger_bind($1, $2)",
        scope.tenant.id,
        scope.key_id
    )
    .execute(&mut *db)
    .await?;
    // chatledger_search (migration 0011) reads the text index, which the runtime role cannot,
    // for the tenant just bound; each term is one indexable LIKE of the folded text.
    let patterns: Vec<String> = query.terms.iter().map(|term| like_escape(term)).collect();
    let (after_created_at, after_session_pk, after_seq) = match query.after {
        Some(cursor) => (
            Some(micros_to_time(cursor.micros)?),
            Some(cursor.session_pk),
            Some(cursor.seq),
        ),
        None => (None, None, None),
    };
    let rows = sqlx::query(
        "SELECT * FROM chatledger_search(
             ARRAY(SELECT '%' || chatledger_fold(t) || '%' FROM unnest($1::text[]) AS t),
             $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&patterns)
    .bind(query.session_id.as_ref().map(|id| id.as_str()))
    .bind(query.role.map(|role| role.as_str()))
    .bind(query.author.as_deref())
    .bind(query.from.map(|from| from.0))
    .bind(query.to.map(|to| to.0))
    .bind(
        query
            .metadata
            .as_ref()
            .map(|metadata| sqlx::types::Json(Value::Object(metadata.clone()))),
    )
    .bind(after_created_at)
    .bind(after_session_pk)
    .bind(after_seq)
    .bind(i32::try_from(query.limit + 1).unwrap_or(i32::MAX))
    .fetch_all(&mut *db)
    .await?;

    let more = rows.len() as i64 > query.limit;
    let mut hits = Vec::with_capacity(rows.len());
    let mut next = None;
    for row in rows.into_iter().take(query.limit as usize) {
        let created_at: chrono::DateTime<chrono::Utc> = row.try_get("created_at")?;
        let entry = Entry {
            seq: row.try_get("seq")?,
            kind: row.try_get("kind")?,
            role: row.try_get("role")?,
            content: row.try_get::<Option<RawJson>, _>("content")?,
            metadata: row.try_get("metadata")?,
            created_at: Timestamp(created_at),
            idempotency_key: row.try_get("idempotency_key")?,
            author: row.try_get("author")?,
            salt: row.try_get("salt")?,
            payload_digest: row.try_get("payload_digest")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            erased: row.try_get("erased")?,
        };
        next = Some(Cursor {
            micros: created_at.timestamp_micros(),
            session_pk: row.try_get("session_pk")?,
            seq: entry.seq,
        });
        let snippet = snippet(&searchable_text(&entry), &query.terms);
        hits.push(Hit {
            session_id: row.try_get("session_id")?,
            entry,
            snippet,
        });
    }
    Ok(Hits {
        hits,
        next: next.filter(|_| more),
    })
}

/// Most queued appends one indexing round takes (each is a range of an append's messages).
pub const INDEX_BATCH: i32 = 500;

/// Indexes up to `limit` queued appends of any tenants (migration 0012), on an owner
/// connection; returns how many it took. Appends queue their messages for the search index
/// rather than indexing them themselves; a search indexes its own tenant's queue first, so
/// this only keeps that queue short.
pub async fn index_some(db: &mut PgConnection, limit: i32) -> Result<i64, Error> {
    let taken = sqlx::query_scalar!(r#"SELECT chatledger_index_some($1) AS "taken!""#, limit)
        .fetch_one(db)
        .await?;
    Ok(taken)
}

fn micros_to_time(micros: i64) -> Result<chrono::DateTime<chrono::Utc>, Invalid> {
    chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Invalid::parameter("after is not a cursor this server gave out"))
}

/// `term` as a LIKE pattern that matches it literally.
fn like_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text search sees in an entry, as `chatledger_search_text` builds it (not lower-cased).
pub fn searchable_text(entry: &Entry) -> String {
    let parse = |raw: &RawJson| serde_json::from_str::<Value>(raw.0.get()).ok();
    let mut parts: Vec<String> = Vec::new();
    match entry.content.as_ref().and_then(parse) {
        Some(Value::String(text)) => parts.push(text),
        Some(Value::Array(blocks)) => {
            parts.extend(blocks.into_iter().filter_map(|block| match block {
                Value::String(text) => Some(text),
                Value::Object(mut object) => match object.remove("text") {
                    Some(Value::String(text)) => Some(text),
                    _ => None,
                },
                _ => None,
            }))
        }
        _ => {}
    }
    if let Some(metadata) = entry.metadata.as_ref().and_then(parse) {
        collect_strings(&metadata, &mut parts);
    }
    parts.join("\n")
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(object) => object.values().for_each(|item| collect_strings(item, out)),
        _ => {}
    }
}

/// Up to 200 characters of `text` around the first match of any term, each match in the window
/// wrapped in `[[` and `]]`; the start of the text when nothing matches (a filter-only search).
pub fn snippet(text: &str, terms: &[String]) -> String {
    let chars: Vec<char> = text.chars().collect();
    let folded: Vec<char> = chars.iter().map(|&c| fold(c)).collect();
    let mut matches: Vec<(usize, usize)> = Vec::new();
    for term in terms {
        let needle: Vec<char> = term.chars().map(fold).collect();
        if needle.is_empty() || needle.len() > folded.len() {
            continue;
        }
        let mut start = 0;
        while start + needle.len() <= folded.len() {
            if folded[start..start + needle.len()] == needle[..] {
                matches.push((start, start + needle.len()));
                start += needle.len();
            } else {
                start += 1;
            }
        }
    }
    matches.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in matches {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let (first_start, first_end) = merged.first().copied().unwrap_or((0, 0));
    // Centred on the first match, and shifted back from the end of the text to stay full.
    let context = SNIPPET_CHARS.saturating_sub(first_end - first_start) / 2;
    let window_end = (first_start.saturating_sub(context) + SNIPPET_CHARS).min(chars.len());
    let window_start = window_end.saturating_sub(SNIPPET_CHARS);
    let mut out = String::new();
    let mut at = window_start;
    for (start, end) in merged {
        if end <= window_start || start >= window_end {
            continue;
        }
        let (start, end) = (start.max(window_start), end.min(window_end));
        out.extend(&chars[at..start]);
        out.push_str("[[");
        out.extend(&chars[start..end]);
        out.push_str("]]");
        at = end;
    }
    out.extend(&chars[at..window_end]);
    out
}

/// One character as matching sees it: lower-cased where that keeps it one character, so that
/// positions in the folded text are positions in the original, and final sigma as σ (as
/// chatledger_fold folds it: migration 0020).
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some('ς'), None) => 'σ',
        (Some(single), None) => single,
        _ => c,
    }
}

/// A search, as the access log records it: the query and filters, and what was found.
pub struct Search(pub SearchQuery);

impl Recorded for Search {
    type Output = Hits;

    fn action(&self) -> Action {
        Action::Search
    }

    fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_ref().map(SessionId::as_str)
    }

    async fn run(&self, db: &mut PgConnection, scope: Scope<'_>) -> Result<Hits, Error> {
        search(db, scope, &self.0).await
    }

    fn outcome(&self, hits: &Hits) -> Outcome {
        let query = &self.0;
        Outcome::ok(json!({
            "q": query.terms,
            "role": query.role.map(MessageRole::as_str),
            "author": query.author,
            "from": query.from,
            "to": query.to,
            "metadata": query.metadata,
            "count": hits.hits.len(),
            "sessions": hits.hits.iter().map(|hit| hit.session_id.as_str()).collect::<std::collections::BTreeSet<_>>(),
        }))
    }

    fn needs_transaction(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split_on_spaces_and_phrases_stay_whole() {
        assert_eq!(
            parse_terms(r#"  order  "has shipped" 8892 """#).expect("terms"),
            ["order", "has shipped", "8892"]
        );
        assert_eq!(parse_terms("退货").expect("terms"), ["退货"]);
        assert!(parse_terms(r#""unclosed"#).is_err());
        assert!(parse_terms("   ").expect("terms").is_empty());
    }

    #[test]
    fn snippets_mark_every_match_in_a_window_around_the_first() {
        assert_eq!(
            snippet(
                "我的订单号是 8892，我想退货",
                &["8892".into(), "退货".into()]
            ),
            "我的订单号是 [[8892]]，我想[[退货]]"
        );
        assert_eq!(
            snippet("Die Überweisung ist da", &["überweisung".into()]),
            "Die [[Überweisung]] ist da"
        );
        let long = format!("{} needle {}", "a".repeat(500), "b".repeat(500));
        let cut = snippet(&long, &["NEEDLE".into()]);
        assert!(cut.contains("[[needle]]"), "{cut}");
        assert_eq!(cut.chars().count(), SNIPPET_CHARS + 4);
        assert_eq!(snippet("no match here", &[]), "no match here");
        assert_eq!(
            snippet(&"x".repeat(300), &[]).chars().count(),
            SNIPPET_CHARS
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            micros: 1_790_000_000_000_000,
            session_pk: 42,
            seq: 7,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        for bad in ["", "!!", "MS4y", "MS4yLjMuNA"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }
}
