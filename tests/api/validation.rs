//! Every bad input of API.md gets its exact 4xx problem document and writes nothing; no input gets
//! a 5xx; the valid edge cases succeed.
//!
//! Each rejected append is sent twice: to a session that holds one entry (whose summary must not
//! move) and as the first append of a new session (which must still not exist afterwards).

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::Response;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, assert_problem, json_ok};

/// The session every fixture creates with one message.
const EXISTING: &str = "existing";
const MIB: usize = 1024 * 1024;
const KIB: usize = 1024;

fn summary_path(session: &str) -> String {
    format!("/v1/sessions/{session}")
}

fn messages_path(session: &str) -> String {
    format!("/v1/sessions/{session}/messages")
}

fn reset_path(session: &str) -> String {
    format!("/v1/sessions/{session}/reset")
}

fn user(content: impl Into<Value>) -> Value {
    json!({"role": "user", "content": content.into()})
}

/// `{"messages": [message]}`.
fn one(message: Value) -> Value {
    json!({ "messages": [message] })
}

/// A POST that can be sent any number of times.
#[derive(Clone)]
struct Post {
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Post {
    fn json(body: &Value) -> Self {
        Self::raw(
            Some("application/json"),
            serde_json::to_vec(body).expect("serializable"),
        )
    }

    fn raw(content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    async fn send(&self, app: &TestApp, path: &str) -> Response {
        let mut request = app.client.post(app.url(path));
        if let Some(content_type) = self.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        for (name, value) in &self.headers {
            request = request.header(*name, value.clone());
        }
        request
            .body(self.body.clone())
            .send()
            .await
            .expect("request sent")
    }
}

/// `assert_problem`, with `label` and the body in the message when the status is wrong.
async fn problem(label: &str, response: Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    if got != status {
        let body = response.text().await.unwrap_or_default();
        panic!("{label}: expected {status} {code}, got {got}: {body}");
    }
    let problem = assert_problem(response, status, code).await;
    let text = problem.to_string();
    for leak in ["SQL", "sqlx", "postgres", "panicked", "stack backtrace"] {
        assert!(
            !text.contains(leak),
            "{label}: the problem leaks internals: {text}"
        );
    }
    problem
}

fn assert_detail_names(label: &str, problem: &Value, needle: Option<&str>) {
    if let Some(needle) = needle {
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{label}: detail {detail:?} should name {needle:?}"
        );
    }
}

/// A raw header: name and value bytes.
type Header<'a> = (&'a str, &'a [u8]);

/// Sends a raw HTTP/1.1 request over TCP, so that nothing rewrites the target (reqwest's URL
/// parser resolves `.`, `..`, `%2E` and `%2E%2E` segments before sending).
async fn raw(
    app: &TestApp,
    method: &str,
    target: &str,
    headers: &[Header<'_>],
    body: &[u8],
) -> Response {
    let authority = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: Bearer {}\r\n",
        body.len(),
        app.database.writer_key,
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("request written");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("response read");
    parse_response(&reply)
}

fn parse_response(reply: &[u8]) -> Response {
    let end = reply
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(reply)));
    let head = std::str::from_utf8(&reply[..end]).expect("ASCII response head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let mut builder = axum::http::Response::builder().status(status);
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        } else {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let mut body = reply[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Response::from(builder.body(body).expect("response"))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// An app with the session `existing` holding one message.
struct Fixture {
    app: TestApp,
    summary: Value,
    fresh: AtomicUsize,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        app.append(EXISTING, &[("user", "hello")]).await;
        let summary = json_ok(app.get(&summary_path(EXISTING)).await).await;
        assert_eq!(summary["last_seq"], 1);
        assert!(
            summary["head_hash"]
                .as_str()
                .is_some_and(|hash| hash.len() == 64),
            "{summary}"
        );
        Self {
            app,
            summary,
            fresh: AtomicUsize::new(0),
        }
    }

    /// A session id not used before in this fixture.
    fn fresh_id(&self) -> String {
        format!("fresh-{}", self.fresh.fetch_add(1, Ordering::SeqCst))
    }

    /// The existing session still has exactly its one entry.
    async fn assert_untouched(&self, label: &str) {
        let now = json_ok(self.app.get(&summary_path(EXISTING)).await).await;
        assert_eq!(now["last_seq"], 1, "{label}: last_seq moved: {now}");
        assert_eq!(
            now["head_hash"], self.summary["head_hash"],
            "{label}: head_hash moved"
        );
        assert_eq!(now, self.summary, "{label}: the summary changed");
    }

    /// Only `existing` exists (with its one entry): nothing else was created.
    async fn assert_no_other_session(&self, label: &str) {
        let page = json_ok(self.app.get("/v1/sessions?limit=1000").await).await;
        let ids: Vec<&str> = page["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .filter_map(|s| s["session_id"].as_str())
            .collect();
        assert_eq!(ids, [EXISTING], "{label}: sessions {page}");
        self.assert_untouched(label).await;
    }

    async fn assert_absent(&self, label: &str, session: &str) {
        problem(
            &format!("{label} (summary of {session})"),
            self.app.get(&summary_path(session)).await,
            404,
            "session_not_found",
        )
        .await;
    }

    /// `post` to `messages` is refused with `status`/`code` both for the existing session and as
    /// the first append of a new one, and writes nothing.
    async fn append_rejected(
        &self,
        label: &str,
        post: &Post,
        status: u16,
        code: &str,
        needle: Option<&str>,
    ) {
        let response = post.send(&self.app, &messages_path(EXISTING)).await;
        let found = problem(
            &format!("{label} (existing session)"),
            response,
            status,
            code,
        )
        .await;
        assert_detail_names(label, &found, needle);
        self.assert_untouched(label).await;

        let fresh = self.fresh_id();
        let response = post.send(&self.app, &messages_path(&fresh)).await;
        let found = problem(&format!("{label} (new session)"), response, status, code).await;
        assert_detail_names(label, &found, needle);
        self.assert_absent(label, &fresh).await;
    }

    /// `post` to `reset` is refused with `status`/`code` for the existing session and (the body is
    /// checked before existence) for a missing one, and writes nothing.
    async fn reset_rejected(
        &self,
        label: &str,
        post: &Post,
        status: u16,
        code: &str,
        needle: Option<&str>,
    ) {
        let response = post.send(&self.app, &reset_path(EXISTING)).await;
        let found = problem(&format!("{label} (reset existing)"), response, status, code).await;
        assert_detail_names(label, &found, needle);
        self.assert_untouched(label).await;

        let fresh = self.fresh_id();
        let response = post.send(&self.app, &reset_path(&fresh)).await;
        let found = problem(&format!("{label} (reset missing)"), response, status, code).await;
        assert_detail_names(label, &found, needle);
        self.assert_absent(label, &fresh).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Conventions: JSON, content type, empty bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let fixture = Fixture::new().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "truncated",
            br#"{"messages": [{"role": "user", "content": "hi""#,
        ),
        (
            "truncated after a comma",
            br#"{"messages": [{"role": "user", "content": "hi"},"#,
        ),
        (
            "trailing garbage",
            br#"{"messages": [{"role": "user", "content": "hi"}]} trailing"#,
        ),
        (
            "two documents",
            br#"{"messages": [{"role": "user", "content": "hi"}]}{}"#,
        ),
        (
            "invalid UTF-8 inside a string",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"caf\xe9\"}]}",
        ),
        (
            "invalid UTF-8 bytes 0xFF 0xFE",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
        ),
        (
            "invalid UTF-8 outside strings",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\xff",
        ),
        (
            "overlong UTF-8 encoding of a slash",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xc0\xaf\"}]}",
        ),
        (
            "single quotes",
            br#"{'messages': [{'role': 'user', 'content': 'hi'}]}"#,
        ),
        (
            "trailing comma",
            br#"{"messages": [{"role": "user", "content": "hi"},]}"#,
        ),
        (
            "NaN",
            br#"{"messages": [{"role": "user", "content": [{"n": NaN}]}]}"#,
        ),
        (
            "Infinity",
            br#"{"messages": [{"role": "user", "content": [{"n": Infinity}]}]}"#,
        ),
        (
            "comment",
            br#"{"messages": [{"role": "user", "content": "hi"}] /* note */}"#,
        ),
        (
            "unquoted key",
            br#"{messages: [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "raw control character in a string",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"a\x01b\"}]}",
        ),
        (
            "bad escape",
            br#"{"messages": [{"role": "user", "content": "\q"}]}"#,
        ),
        ("empty body declared as JSON", b""),
        ("whitespace only", b"  \r\n "),
    ];
    for (label, body) in cases {
        let post = Post::raw(Some("application/json"), *body);
        fixture
            .append_rejected(label, &post, 400, "malformed_json", None)
            .await;
        fixture
            .reset_rejected(label, &post, 400, "malformed_json", None)
            .await;
    }
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_refused_with_a_4xx_and_writes_nothing() {
    // "\ud800" is valid JSON syntax but no Unicode text: it cannot be stored byte-for-byte. API.md
    // does not say whether that is malformed JSON or invalid text, so either is accepted here.
    let fixture = Fixture::new().await;
    let bodies: [&[u8]; 2] = [
        br#"{"messages": [{"role": "user", "content": "a\ud800b"}]}"#,
        br#"{"messages": [{"role": "user", "content": "\udc00"}]}"#,
    ];
    for body in bodies {
        for session in [EXISTING.to_owned(), fixture.fresh_id()] {
            let response = Post::raw(Some("application/json"), body)
                .send(&fixture.app, &messages_path(&session))
                .await;
            let status = response.status().as_u16();
            let code = if status == 400 {
                "malformed_json"
            } else {
                "invalid_text"
            };
            problem(
                "lone surrogate",
                response,
                if status == 400 { 400 } else { 422 },
                code,
            )
            .await;
            if session == EXISTING {
                fixture.assert_untouched("lone surrogate").await;
            } else {
                fixture.assert_absent("lone surrogate", &session).await;
            }
        }
    }
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_415_and_writes_nothing() {
    let fixture = Fixture::new().await;
    let body = serde_json::to_vec(&one(user("hi"))).expect("json");
    let cases: &[(&str, Option<&'static str>)] = &[
        ("text/plain", Some("text/plain")),
        ("text/plain with utf-8", Some("text/plain; charset=utf-8")),
        ("no content type", None),
        ("charset latin1", Some("application/json; charset=latin1")),
        ("charset utf-16", Some("application/json; charset=utf-16")),
        ("form", Some("application/x-www-form-urlencoded")),
        ("multipart", Some("multipart/form-data; boundary=x")),
        ("json-ld", Some("application/ld+json")),
        ("jsonx", Some("application/jsonx")),
        ("octet-stream", Some("application/octet-stream")),
    ];
    for (label, content_type) in cases {
        let post = Post::raw(*content_type, body.clone());
        fixture
            .append_rejected(label, &post, 415, "unsupported_media_type", None)
            .await;
        fixture
            .reset_rejected(
                label,
                &Post::raw(*content_type, &b"{}"[..]),
                415,
                "unsupported_media_type",
                None,
            )
            .await;
    }
}

#[tokio::test]
async fn json_with_a_utf8_charset_in_any_letter_case_is_accepted() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_vec(&one(user("hi"))).expect("json");
    let accepted = [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=\"UTF-8\"",
        "application/json ; charset=UTF-8",
    ];
    for (index, content_type) in accepted.into_iter().enumerate() {
        let response = Post::raw(Some(content_type), body.clone())
            .send(&app, &messages_path("charsets"))
            .await;
        assert_eq!(
            response.status().as_u16(),
            201,
            "{content_type}: {}",
            response.text().await.unwrap_or_default()
        );
        let reset = Post::raw(Some(content_type), &b"{}"[..])
            .send(&app, &reset_path("charsets"))
            .await;
        assert_eq!(reset.status().as_u16(), 201, "reset with {content_type}");
        let summary = json_ok(app.get(&summary_path("charsets")).await).await;
        assert_eq!(summary["last_seq"], 2 * (index as i64 + 1));
    }
}

#[tokio::test]
async fn an_empty_post_without_content_type_counts_as_an_empty_object() {
    let fixture = Fixture::new().await;
    let empty = Post::raw(None, Vec::new());
    // {} for messages lacks the required `messages`.
    fixture
        .append_rejected(
            "empty append",
            &empty,
            422,
            "validation_failed",
            Some("messages"),
        )
        .await;
    // {} is a complete reset; a missing session is still 404.
    let missing = fixture.fresh_id();
    problem(
        "empty reset of a missing session",
        empty.send(&fixture.app, &reset_path(&missing)).await,
        404,
        "session_not_found",
    )
    .await;
    fixture.assert_absent("empty reset", &missing).await;
    let response = empty.send(&fixture.app, &reset_path(EXISTING)).await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let summary = json_ok(fixture.app.get(&summary_path(EXISTING)).await).await;
    assert_eq!(summary["last_seq"], 2);
    assert_eq!(summary["context_start_seq"], 2);
    let entries = fixture.app.all_entries(EXISTING).await;
    assert_eq!(entries[1]["kind"], "context_reset");
    assert_eq!(entries[1]["metadata"], json!({}));
    assert_eq!(entries[1]["role"], Value::Null);
    assert_eq!(entries[1]["content"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Session ids and check order
// ---------------------------------------------------------------------------------------------

/// Session ids API.md rejects, as they are written into the request target.
fn bad_session_ids() -> Vec<(String, String)> {
    let named = |label: &str, raw: &str| (label.to_owned(), raw.to_owned());
    vec![
        named("dot", "."),
        named("dot, percent-encoded", "%2E"),
        named("dot dot", ".."),
        named("dot dot, percent-encoded", "%2E%2E"),
        named("dot dot, mixed", ".%2e"),
        ("129 characters".to_owned(), "x".repeat(129)),
        ("10000 characters".to_owned(), "x".repeat(10_000)),
        named("space", "a%20b"),
        named("slash", "%2F"),
        named("slash inside", "a%2Fb"),
        named("non-ASCII", "%C3%A9"),
        named("invalid UTF-8", "%FF"),
        named("NUL", "a%00b"),
        named("semicolon", "a;b"),
        named("plus", "a+b"),
        named("percent", "a%25b"),
        named("comma", "a,b"),
        named("tilde", "a~b"),
    ]
}

#[tokio::test]
async fn an_invalid_session_id_is_400_on_every_session_route() {
    let fixture = Fixture::new().await;
    let json: [Header; 1] = [("Content-Type", b"application/json")];
    let append = serde_json::to_vec(&one(user("hi"))).expect("json");
    for (label, id) in bad_session_ids() {
        let routes: [(&str, String, &[Header], &[u8]); 5] = [
            ("POST", messages_path(&id), &json, &append),
            ("POST", reset_path(&id), &json, b"{}"),
            ("GET", summary_path(&id), &[], b""),
            ("GET", messages_path(&id), &[], b""),
            ("GET", format!("/v1/sessions/{id}/context"), &[], b""),
        ];
        for (method, target, headers, body) in routes {
            let response = raw(&fixture.app, method, &target, headers, body).await;
            problem(
                &format!("{label}: {method} {target}"),
                response,
                400,
                "invalid_session_id",
            )
            .await;
        }
    }
    // The empty id: on the summary route `/v1/sessions/` is another URL (404 not_found, tested
    // below), but between two slashes it is an empty session_id.
    for (method, target, headers, body) in [
        ("POST", messages_path(""), &json[..], &append[..]),
        ("POST", reset_path(""), &json[..], &b"{}"[..]),
        ("GET", messages_path(""), &[][..], &b""[..]),
        ("GET", "/v1/sessions//context".to_owned(), &[][..], &b""[..]),
    ] {
        let response = raw(&fixture.app, method, &target, headers, body).await;
        problem(
            &format!("empty id: {method} {target}"),
            response,
            400,
            "invalid_session_id",
        )
        .await;
    }
    fixture.assert_no_other_session("bad session ids").await;
}

#[tokio::test]
async fn session_ids_at_the_edges_of_the_alphabet_are_accepted() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(128);
    for id in [
        "a",
        "...",
        "A.b_c:d@e-f",
        "Z9",
        "a..b",
        ".hidden",
        "..x",
        &long,
    ] {
        let response = raw(
            &app,
            "POST",
            &messages_path(id),
            &[("Content-Type", b"application/json")],
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
        assert_eq!(
            response.status().as_u16(),
            201,
            "{id}: {}",
            response.text().await.unwrap_or_default()
        );
        let summary = json_ok(raw(&app, "GET", &summary_path(id), &[], b"").await).await;
        assert_eq!(summary["session_id"], id);
        assert_eq!(summary["last_seq"], 1);
    }
}

#[tokio::test]
async fn path_parameters_are_checked_before_content_type_before_body_before_existence() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let garbage: &[u8] = b"{not json";
    // Bad session id beats a bad content type, a bad Idempotency-Key and a bad body.
    for target in [
        messages_path("a%20b"),
        reset_path("a%20b"),
        messages_path("%2E%2E"),
        reset_path("."),
    ] {
        let cases: [(&str, Vec<Header>, &[u8]); 4] = [
            (
                "bad content type",
                vec![("Content-Type", b"text/plain")],
                garbage,
            ),
            ("no content type, non-empty body", vec![], garbage),
            (
                "bad idempotency key",
                vec![
                    ("Content-Type", b"application/json"),
                    ("Idempotency-Key", b"a b"),
                ],
                garbage,
            ),
            (
                "malformed body",
                vec![("Content-Type", b"application/json")],
                garbage,
            ),
        ];
        for (label, headers, body) in cases {
            let response = raw(app, "POST", &target, &headers, body).await;
            problem(
                &format!("{label} on {target}"),
                response,
                400,
                "invalid_session_id",
            )
            .await;
        }
    }
    // Bad session id beats bad query parameters.
    for target in [
        "/v1/sessions/a%20b/messages?limit=0",
        "/v1/sessions/a;b/context?limit=abc",
        "/v1/sessions/./messages?order=up",
    ] {
        problem(
            target,
            raw(app, "GET", target, &[], b"").await,
            400,
            "invalid_session_id",
        )
        .await;
    }
    // Content type beats a bad body and a missing session.
    let missing = fixture.fresh_id();
    for path in [
        messages_path(EXISTING),
        reset_path(EXISTING),
        messages_path(&missing),
        reset_path(&missing),
    ] {
        let post = Post::raw(Some("text/plain"), garbage);
        problem(
            &format!("text/plain garbage to {path}"),
            post.send(app, &path).await,
            415,
            "unsupported_media_type",
        )
        .await;
        let post = Post::raw(
            Some("text/plain"),
            serde_json::to_vec(&json!({"messages": []})).expect("json"),
        );
        problem(
            &format!("text/plain invalid body to {path}"),
            post.send(app, &path).await,
            415,
            "unsupported_media_type",
        )
        .await;
    }
    // The body beats existence: a reset of a missing session with a bad body is about the body.
    let post = Post::raw(Some("application/json"), garbage);
    problem(
        "malformed reset of a missing session",
        post.send(app, &reset_path(&missing)).await,
        400,
        "malformed_json",
    )
    .await;
    let post = Post::json(&json!({"metadata": "x"}));
    problem(
        "invalid reset of a missing session",
        post.send(app, &reset_path(&missing)).await,
        422,
        "validation_failed",
    )
    .await;
    // Query parameters are checked before existence too.
    for target in [
        format!("/v1/sessions/{missing}/messages?limit=0"),
        format!("/v1/sessions/{missing}/context?limit=1001"),
    ] {
        problem(&target, app.get(&target).await, 400, "invalid_parameter").await;
    }
    fixture.assert_no_other_session("check order").await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key
// ---------------------------------------------------------------------------------------------

fn bad_idempotency_keys() -> Vec<(&'static str, HeaderValue)> {
    vec![
        ("empty", HeaderValue::from_static("")),
        (
            "256 characters",
            HeaderValue::from_str(&"k".repeat(256)).expect("header"),
        ),
        (
            "1000 characters",
            HeaderValue::from_str(&"k".repeat(1000)).expect("header"),
        ),
        ("a space", HeaderValue::from_static("turn 1")),
        (
            "a tab",
            HeaderValue::from_bytes(b"turn\t1").expect("header"),
        ),
        (
            "non-ASCII UTF-8",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header"),
        ),
        (
            "a Latin-1 byte",
            HeaderValue::from_bytes(b"caf\xe9").expect("header"),
        ),
        (
            "a 0xFF byte",
            HeaderValue::from_bytes(b"\xff").expect("header"),
        ),
    ]
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400_and_writes_nothing() {
    let fixture = Fixture::new().await;
    for (label, key) in bad_idempotency_keys() {
        let append = Post::json(&one(user("hi"))).header("Idempotency-Key", key.clone());
        fixture
            .append_rejected(label, &append, 400, "invalid_idempotency_key", None)
            .await;
        let reset = Post::json(&json!({})).header("Idempotency-Key", key);
        fixture
            .reset_rejected(label, &reset, 400, "invalid_idempotency_key", None)
            .await;
    }
}

#[tokio::test]
async fn idempotency_keys_of_1_and_255_visible_characters_are_accepted() {
    let app = TestApp::spawn().await;
    let long = "k".repeat(255);
    for (index, key) in ["k", "turn-5f3a\"\\!~{}", &long].into_iter().enumerate() {
        let response = app
            .post_with_key(&messages_path("keys"), key, &one(user(format!("m{index}"))))
            .await;
        assert_eq!(
            response.status().as_u16(),
            201,
            "{key}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let entries = app.all_entries("keys").await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["idempotency_key"], long);
}

#[tokio::test]
async fn a_rejected_request_does_not_store_its_idempotency_key() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let path = messages_path(EXISTING);
    let bad = json!({"messages": [{"role": "robot", "content": "x"}]});
    problem(
        "rejected with a key",
        app.post_with_key(&path, "retry-me", &bad).await,
        422,
        "validation_failed",
    )
    .await;
    fixture.assert_untouched("rejected with a key").await;
    // Had the key been stored, another body would be 422 idempotency_key_reused.
    let response = app
        .post_with_key(&path, "retry-me", &one(user("fixed")))
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    assert!(response.headers().get("idempotent-replayed").is_none());
}

// ---------------------------------------------------------------------------------------------
// 422 validation_failed
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn append_validation_failures_are_422_naming_the_field_and_write_nothing() {
    let fixture = Fixture::new().await;
    let too_many: Vec<Value> = (0..101).map(|n| user(format!("m{n}"))).collect();
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("no messages field", json!({}), Some("messages")),
        ("messages null", json!({"messages": null}), Some("messages")),
        ("messages an object", json!({"messages": {"role": "user", "content": "x"}}), Some("messages")),
        ("messages a string", json!({"messages": "hi"}), Some("messages")),
        ("empty messages", json!({"messages": []}), Some("messages")),
        ("101 messages", json!({ "messages": too_many }), Some("messages")),
        ("a message that is a string", json!({"messages": ["hi"]}), Some("messages")),
        ("a message that is null", json!({"messages": [null]}), Some("messages")),
        ("missing role", one(json!({"content": "x"})), Some("role")),
        ("unknown role", one(json!({"role": "robot", "content": "x"})), Some("role")),
        ("role in the wrong case", one(json!({"role": "User", "content": "x"})), Some("role")),
        ("role context_reset", one(json!({"role": "context_reset", "content": "x"})), Some("role")),
        ("role a number", one(json!({"role": 1, "content": "x"})), Some("role")),
        ("role null", one(json!({"role": null, "content": "x"})), Some("role")),
        ("missing content", one(json!({"role": "user"})), Some("content")),
        ("content null", one(json!({"role": "user", "content": null})), Some("content")),
        ("content a number", one(user(42)), Some("content")),
        ("content a boolean", one(user(true)), Some("content")),
        ("content an object", one(user(json!({"text": "x"}))), Some("content")),
        ("content an array holding a number", one(user(json!(["ok", 1]))), Some("content")),
        ("content an array holding null", one(user(json!([null]))), Some("content")),
        ("content an array holding an array", one(user(json!([["nested"]]))), Some("content")),
        ("content an array holding a boolean", one(user(json!([{"type": "text"}, false]))), Some("content")),
        ("metadata a string", one(json!({"role": "user", "content": "x", "metadata": "x"})), Some("metadata")),
        ("metadata an array", one(json!({"role": "user", "content": "x", "metadata": [1]})), Some("metadata")),
        ("metadata a number", one(json!({"role": "user", "content": "x", "metadata": 1})), Some("metadata")),
        ("metadata a boolean", one(json!({"role": "user", "content": "x", "metadata": true})), Some("metadata")),
        ("negative expected_seq", json!({"expected_seq": -1, "messages": [user("x")]}), Some("expected_seq")),
        ("fractional expected_seq", json!({"expected_seq": 1.5, "messages": [user("x")]}), Some("expected_seq")),
        ("expected_seq a string", json!({"expected_seq": "1", "messages": [user("x")]}), Some("expected_seq")),
        ("expected_seq a boolean", json!({"expected_seq": true, "messages": [user("x")]}), Some("expected_seq")),
        ("expected_seq beyond i64", serde_json::from_str(r#"{"expected_seq": 9223372036854775808, "messages": [{"role": "user", "content": "x"}]}"#).expect("json"), Some("expected_seq")),
        ("unknown top-level field", json!({"messages": [user("x")], "bogus_field": 1}), Some("bogus_field")),
        ("unknown field inside a message", one(json!({"role": "user", "content": "x", "colour": "red"})), Some("colour")),
        ("a message with a client-chosen seq", one(json!({"role": "user", "content": "x", "seq": 9})), Some("seq")),
        ("a second message that is invalid", json!({"messages": [user("ok"), {"role": "robot", "content": "x"}]}), Some("role")),
        ("the last of 100 messages invalid", {
            let mut many: Vec<Value> = (0..99).map(|n| user(format!("m{n}"))).collect();
            many.push(json!({"role": "user", "content": 7}));
            json!({ "messages": many })
        }, Some("content")),
        ("body a JSON array", json!([user("x")]), None),
        ("body a JSON string", json!("messages"), None),
        ("body a number", json!(1), None),
        ("body null", Value::Null, None),
        ("body true", json!(true), None),
    ];
    for (label, body, needle) in cases {
        fixture
            .append_rejected(label, &Post::json(&body), 422, "validation_failed", needle)
            .await;
    }
}

#[tokio::test]
async fn reset_validation_failures_are_422_naming_the_field_and_write_nothing() {
    let fixture = Fixture::new().await;
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "unknown field",
            json!({"bogus_field": 1}),
            Some("bogus_field"),
        ),
        ("a role", json!({"role": "user"}), Some("role")),
        ("content", json!({"content": "x"}), Some("content")),
        (
            "messages",
            json!({"messages": [user("x")]}),
            Some("messages"),
        ),
        (
            "metadata a string",
            json!({"metadata": "x"}),
            Some("metadata"),
        ),
        (
            "metadata an array",
            json!({"metadata": []}),
            Some("metadata"),
        ),
        (
            "metadata a number",
            json!({"metadata": 3}),
            Some("metadata"),
        ),
        (
            "negative expected_seq",
            json!({"expected_seq": -1}),
            Some("expected_seq"),
        ),
        (
            "fractional expected_seq",
            json!({"expected_seq": 1.5}),
            Some("expected_seq"),
        ),
        (
            "expected_seq a string",
            json!({"expected_seq": "1"}),
            Some("expected_seq"),
        ),
        ("body an array", json!([]), None),
        ("body a string", json!("reset"), None),
        ("body null", Value::Null, None),
    ];
    for (label, body, needle) in cases {
        fixture
            .reset_rejected(label, &Post::json(&body), 422, "validation_failed", needle)
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 422 invalid_text and invalid_number
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_nul_character_anywhere_in_content_or_metadata_is_422_invalid_text() {
    let fixture = Fixture::new().await;
    let with_metadata =
        |metadata: Value| one(json!({"role": "user", "content": "x", "metadata": metadata}));
    let cases: Vec<(&str, Value)> = vec![
        ("content string", one(user("a\u{0}b"))),
        ("content string that is only NUL", one(user("\u{0}"))),
        ("string content block", one(user(json!(["ok", "a\u{0}"])))),
        (
            "object content block value",
            one(user(json!([{"type": "text", "text": "a\u{0}b"}]))),
        ),
        (
            "object content block key",
            one(user(json!([{"te\u{0}xt": "x"}]))),
        ),
        (
            "deep inside a content block",
            one(user(json!([{"a": {"b": ["c", "\u{0}"]}}]))),
        ),
        ("metadata value", with_metadata(json!({"note": "a\u{0}b"}))),
        ("metadata key", with_metadata(json!({"no\u{0}te": "x"}))),
        (
            "nested metadata value",
            with_metadata(json!({"tool_calls": [{"args": {"q": "\u{0}"}}]})),
        ),
        (
            "nested metadata key",
            with_metadata(json!({"a": {"\u{0}": 1}})),
        ),
        (
            "second message",
            json!({"messages": [user("fine"), user("\u{0}")]}),
        ),
    ];
    for (label, body) in cases {
        fixture
            .append_rejected(label, &Post::json(&body), 422, "invalid_text", None)
            .await;
    }
    // The escape as a client writes it by hand, too.
    let handwritten = Post::raw(
        Some("application/json"),
        &br#"{"messages": [{"role": "user", "content": "a\u0000b"}]}"#[..],
    );
    fixture
        .append_rejected(
            "hand-written \\u0000",
            &handwritten,
            422,
            "invalid_text",
            None,
        )
        .await;
    for (label, metadata) in [
        ("reset metadata value", json!({"why": "\u{0}"})),
        ("reset metadata key", json!({"\u{0}": "x"})),
    ] {
        fixture
            .reset_rejected(
                label,
                &Post::json(&json!({ "metadata": metadata })),
                422,
                "invalid_text",
                None,
            )
            .await;
    }
}

#[tokio::test]
async fn numbers_beyond_ijson_are_422_invalid_number() {
    let fixture = Fixture::new().await;
    let in_block = |number: &str| {
        format!(r#"{{"messages": [{{"role": "user", "content": [{{"n": {number}}}]}}]}}"#)
    };
    let in_metadata = |number: &str| {
        format!(
            r#"{{"messages": [{{"role": "user", "content": "x", "metadata": {{"n": {number}}}}}]}}"#
        )
    };
    let cases: Vec<(String, String)> = vec![
        ("2^53 in a content block".into(), in_block("9007199254740992")),
        ("-2^53 in metadata".into(), in_metadata("-9007199254740992")),
        ("2^53 in metadata".into(), in_metadata("9007199254740992")),
        ("-2^53 in a content block".into(), in_block("-9007199254740992")),
        ("2^53 written as a float".into(), in_block("9007199254740992.0")),
        ("2^53 in exponent form".into(), in_metadata("9.007199254740992e15")),
        ("u64::MAX".into(), in_block("18446744073709551615")),
        ("beyond u64".into(), in_metadata("18446744073709551616")),
        ("1e300 in a content block".into(), in_block("1e300")),
        ("1e300 in metadata".into(), in_metadata("1e300")),
        ("-1e300".into(), in_block("-1e300")),
        ("1e400 overflowing a double, in a content block".into(), in_block("1e400")),
        ("1e400 overflowing a double, in metadata".into(), in_metadata("1e400")),
        ("-1e400".into(), in_metadata("-1e400")),
        (
            "deep in metadata".into(),
            r#"{"messages": [{"role": "user", "content": "x", "metadata": {"a": {"b": [1, 9007199254740993]}}}]}"#.into(),
        ),
    ];
    for (label, body) in &cases {
        fixture
            .append_rejected(
                label,
                &Post::raw(Some("application/json"), body.as_bytes()),
                422,
                "invalid_number",
                None,
            )
            .await;
    }
    for number in ["9007199254740992", "1e300", "1e400"] {
        let body = format!(r#"{{"metadata": {{"n": {number}}}}}"#);
        fixture
            .reset_rejected(
                &format!("reset metadata {number}"),
                &Post::raw(Some("application/json"), body.into_bytes()),
                422,
                "invalid_number",
                None,
            )
            .await;
    }
}

#[tokio::test]
async fn numbers_within_ijson_are_accepted_with_their_value() {
    let app = TestApp::spawn().await;
    let body = r#"{"messages": [{"role": "user", "content": [{"max": 9007199254740991, "min": -9007199254740991, "half": 0.5, "tiny": 1e-7, "one": 1.0, "big": 1.5e15}], "metadata": {"n": -9007199254740991, "f": 123.456}}]}"#;
    let response = Post::raw(Some("application/json"), body.as_bytes())
        .send(&app, &messages_path("numbers"))
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let entries = app.all_entries("numbers").await;
    let block = &entries[0]["content"][0];
    assert_eq!(block["max"].as_i64(), Some(9_007_199_254_740_991));
    assert_eq!(block["min"].as_i64(), Some(-9_007_199_254_740_991));
    assert_eq!(block["half"].as_f64(), Some(0.5));
    assert_eq!(block["tiny"].as_f64(), Some(1e-7));
    assert_eq!(block["one"].as_f64(), Some(1.0));
    assert_eq!(block["big"].as_f64(), Some(1.5e15));
    assert_eq!(
        entries[0]["metadata"]["n"].as_i64(),
        Some(-9_007_199_254_740_991)
    );
    assert_eq!(entries[0]["metadata"]["f"].as_f64(), Some(123.456));
}

// ---------------------------------------------------------------------------------------------
// 413 payload_too_large
// ---------------------------------------------------------------------------------------------

/// A valid append whose body is exactly `size` bytes, each message's content at most about
/// 220 KiB (under the per-message limit), so that only the body limit can apply.
fn append_body_of_size(size: usize) -> Vec<u8> {
    let count = size.div_ceil(220 * KIB);
    let build = |lengths: &[usize]| {
        let messages: Vec<Value> = lengths.iter().map(|&n| user("x".repeat(n))).collect();
        serde_json::to_vec(&json!({ "messages": messages })).expect("json")
    };
    let overhead = build(&vec![0; count]).len();
    let per = (size - overhead) / count;
    let mut lengths = vec![per; count];
    lengths[0] += size - overhead - per * count;
    let body = build(&lengths);
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_body_over_4_mib_is_413_and_one_of_exactly_4_mib_is_accepted() {
    let fixture = Fixture::new().await;
    let over = Post::raw(Some("application/json"), append_body_of_size(4 * MIB + 1));
    fixture
        .append_rejected(
            "valid JSON of 4 MiB + 1 byte",
            &over,
            413,
            "payload_too_large",
            None,
        )
        .await;
    let big = Post::raw(Some("application/json"), append_body_of_size(5 * MIB));
    fixture
        .append_rejected("valid JSON of 5 MiB", &big, 413, "payload_too_large", None)
        .await;
    let garbage = Post::raw(Some("application/json"), vec![b'x'; 4 * MIB + 1]);
    fixture
        .append_rejected(
            "4 MiB + 1 of garbage",
            &garbage,
            413,
            "payload_too_large",
            None,
        )
        .await;
    let reset = Post::raw(Some("application/json"), append_body_of_size(4 * MIB + 1));
    fixture
        .reset_rejected("reset of 4 MiB + 1", &reset, 413, "payload_too_large", None)
        .await;
    fixture.assert_no_other_session("over 4 MiB").await;

    let exact = Post::raw(Some("application/json"), append_body_of_size(4 * MIB));
    let response = exact.send(&fixture.app, &messages_path(EXISTING)).await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let summary = json_ok(fixture.app.get(&summary_path(EXISTING)).await).await;
    assert_eq!(summary["last_seq"], 20);
}

#[tokio::test]
async fn a_message_over_256_kib_of_content_plus_metadata_is_413_and_writes_nothing() {
    let fixture = Fixture::new().await;
    let limit = 256 * KIB;
    let cases: Vec<(&str, Value)> = vec![
        ("content alone", one(user("x".repeat(limit)))),
        (
            "content plus metadata, each under the limit",
            one(
                json!({"role": "user", "content": "x".repeat(200 * KIB), "metadata": {"m": "y".repeat(60 * KIB)}}),
            ),
        ),
        (
            "metadata alone",
            one(json!({"role": "user", "content": "", "metadata": {"m": "y".repeat(limit)}})),
        ),
        (
            "content blocks",
            one(user(
                json!(["x".repeat(130 * KIB), {"text": "y".repeat(130 * KIB)}]),
            )),
        ),
        // 131072 characters but 262144 bytes: the limit counts bytes.
        ("two-byte characters", one(user("é".repeat(limit / 2)))),
        (
            "second message of a batch",
            json!({"messages": [user("ok"), user("x".repeat(limit + 1))]}),
        ),
    ];
    for (label, body) in cases {
        fixture
            .append_rejected(label, &Post::json(&body), 413, "payload_too_large", None)
            .await;
    }
    let reset = Post::json(&json!({"metadata": {"m": "y".repeat(limit)}}));
    fixture
        .reset_rejected("reset metadata", &reset, 413, "payload_too_large", None)
        .await;

    // Just under the limit (content plus metadata 255 KiB and a few bytes) is accepted.
    let near = one(
        json!({"role": "user", "content": "x".repeat(250 * KIB), "metadata": {"m": "y".repeat(5 * KIB)}}),
    );
    let response = fixture.app.post_json(&messages_path(EXISTING), &near).await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Reading: 400 invalid_parameter, 404
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn out_of_range_query_parameters_are_400_invalid_parameter() {
    let fixture = Fixture::new().await;
    let messages = messages_path(EXISTING);
    let context = format!("/v1/sessions/{EXISTING}/context");
    let mut targets: Vec<String> = [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999",
        "after_seq=-1",
        "after_seq=abc",
        "after_seq=9223372036854775808",
        "order=sideways",
        "order=",
        "before_seq=0&order=desc",
        "before_seq=-1&order=desc",
        "before_seq=abc&order=desc",
        "order=desc&limit=0",
        "order=desc&limit=1001",
    ]
    .iter()
    .map(|query| format!("{messages}?{query}"))
    .collect();
    for query in ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit="] {
        targets.push(format!("{context}?{query}"));
        targets.push(format!("/v1/sessions?{query}"));
    }
    for target in targets {
        problem(
            &target,
            fixture.app.get(&target).await,
            400,
            "invalid_parameter",
        )
        .await;
    }
    fixture.assert_no_other_session("query parameters").await;
}

#[tokio::test]
async fn query_parameters_at_their_limits_are_accepted() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let messages = messages_path(EXISTING);
    for query in [
        "limit=1",
        "limit=1000",
        "after_seq=0",
        "order=asc",
        "order=desc",
        "order=desc&before_seq=1",
        "order=desc&limit=1000",
    ] {
        let page = json_ok(app.get(&format!("{messages}?{query}")).await).await;
        assert_eq!(page["session_id"], EXISTING, "{query}");
    }
    // Seqs at the top of the 64-bit range are valid cursors, not overflows.
    let page = json_ok(
        app.get(&format!("{messages}?after_seq=9223372036854775807"))
            .await,
    )
    .await;
    assert_eq!(page["entries"], json!([]));
    assert_eq!(page["next_after_seq"], Value::Null);
    let page = json_ok(
        app.get(&format!(
            "{messages}?order=desc&before_seq=9223372036854775807"
        ))
        .await,
    )
    .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    for query in ["limit=1", "limit=1000"] {
        let window = json_ok(
            app.get(&format!("/v1/sessions/{EXISTING}/context?{query}"))
                .await,
        )
        .await;
        assert_eq!(
            window["entries"].as_array().map(Vec::len),
            Some(1),
            "{query}"
        );
        let sessions = json_ok(app.get(&format!("/v1/sessions?{query}")).await).await;
        assert_eq!(
            sessions["sessions"].as_array().map(Vec::len),
            Some(1),
            "{query}"
        );
    }
}

#[tokio::test]
async fn missing_sessions_are_404_session_not_found_and_unknown_routes_404_not_found() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    for target in [
        "/v1/sessions/missing",
        "/v1/sessions/missing/messages",
        "/v1/sessions/missing/context",
        "/v1/sessions/missing/messages?order=desc",
    ] {
        problem(target, app.get(target).await, 404, "session_not_found").await;
    }
    problem(
        "reset of a missing session",
        app.post_json(&reset_path("missing"), &json!({})).await,
        404,
        "session_not_found",
    )
    .await;
    problem(
        "reset of a missing session with expected_seq 0",
        app.post_json(&reset_path("missing"), &json!({"expected_seq": 0}))
            .await,
        404,
        "session_not_found",
    )
    .await;
    fixture.assert_absent("reset", "missing").await;
    for target in [
        "/v1/nope",
        "/nope",
        "/v1",
        "/v2/sessions",
        "/v1/sessions/existing/nope",
        "/v1/sessions/existing/messages/1",
        "/v1/sessions/",
    ] {
        problem(target, app.get(target).await, 404, "not_found").await;
    }
    problem(
        "POST /v1/nope",
        app.post_json("/v1/nope", &json!({})).await,
        404,
        "not_found",
    )
    .await;
    fixture.assert_no_other_session("404s").await;
}

// ---------------------------------------------------------------------------------------------
// No 5xx, whatever the input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn odd_requests_never_get_a_5xx() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let json = ("Content-Type", &b"application/json"[..]);
    let deep = format!(
        r#"{{"messages": [{{"role": "user", "content": [{{"d": {}1{}}}]}}]}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let cases: Vec<(&str, String, Vec<Header>, Vec<u8>)> = vec![
        ("PUT", messages_path(EXISTING), vec![json], b"{}".to_vec()),
        ("DELETE", summary_path(EXISTING), vec![], vec![]),
        ("PATCH", summary_path(EXISTING), vec![json], b"{}".to_vec()),
        ("GET", reset_path(EXISTING), vec![], vec![]),
        ("POST", "/v1/sessions".into(), vec![json], b"{}".to_vec()),
        ("POST", summary_path(EXISTING), vec![json], b"{}".to_vec()),
        ("POST", format!("/v1/sessions/{EXISTING}/context"), vec![json], b"{}".to_vec()),
        ("GET", format!("{}?limit=1&limit=2", messages_path(EXISTING)), vec![], vec![]),
        ("GET", format!("{}?limit=%FF", messages_path(EXISTING)), vec![], vec![]),
        ("GET", format!("{}?after={}", "/v1/sessions", "%00"), vec![], vec![]),
        ("GET", format!("{}?after={}", "/v1/sessions", "x".repeat(5000)), vec![], vec![]),
        ("POST", messages_path(EXISTING), vec![("Content-Type", b"application/json\xff")], b"{}".to_vec()),
        ("POST", messages_path(EXISTING), vec![("Content-Type", b"")], b"{}".to_vec()),
        ("POST", messages_path(EXISTING), vec![("Content-Type", b";;;")], b"{}".to_vec()),
        ("POST", messages_path(EXISTING), vec![json], deep.into_bytes()),
        ("POST", messages_path(EXISTING), vec![json], br#"{"expected_seq": -9223372036854775809, "messages": []}"#.to_vec()),
        ("POST", messages_path(EXISTING), vec![json], br#"{"expected_seq": 1e400, "messages": []}"#.to_vec()),
        ("POST", messages_path(EXISTING), vec![json], b"\xef\xbb\xbf{\"messages\": []}".to_vec()),
        ("POST", messages_path(EXISTING), vec![json], b"\0".to_vec()),
        ("POST", messages_path(EXISTING), vec![json], br#"{"messages": [{"role": "user", "content": "x", "metadata": {"k": 1, "k": "\u0000"}}]}"#.to_vec()),
    ];
    for (method, target, headers, body) in cases {
        let response = raw(app, method, &target, &headers, &body).await;
        let status = response.status().as_u16();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let text = response.text().await.unwrap_or_default();
        let label = format!("{method} {}", &target[..target.len().min(120)]);
        assert!(
            (400..500).contains(&status),
            "{label}: status {status}: {text}"
        );
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{label}: {text}"
        );
    }
    fixture.assert_no_other_session("odd requests").await;

    // Unknown or garbled query parameters that no route reads may be ignored, but never fail.
    for target in [
        format!("{}?%zz=%%&x=%FF", messages_path(EXISTING)),
        "/v1/sessions?&&==&".to_owned(),
    ] {
        let status = raw(app, "GET", &target, &[], b"").await.status().as_u16();
        assert!(status < 500, "{target}: status {status}");
    }

    // Extreme but valid values get their documented non-5xx answers.
    let stale = json!({"expected_seq": i64::MAX, "messages": [user("x")]});
    let conflict = problem(
        "expected_seq i64::MAX",
        app.post_json(&messages_path(EXISTING), &stale).await,
        409,
        "seq_conflict",
    )
    .await;
    assert_eq!(conflict["current_seq"], 1);
    let deep_ok = format!(
        r#"{{"messages": [{{"role": "user", "content": [{{"d": {}1{}}}]}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let response = Post::raw(Some("application/json"), deep_ok.into_bytes())
        .send(app, &messages_path(EXISTING))
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "100 nested arrays: {}",
        response.text().await.unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Valid edge cases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_edge_cases_of_content_metadata_and_expected_seq_are_appended() {
    let app = TestApp::spawn().await;
    let session = "edges";
    let mixed =
        json!(["plain text", {"type": "image", "url": "https://example.com/a.png"}, "", {}]);
    let unicode = "Grüße 🌍 \u{1}\u{7f} \u{feff} مرحبا";
    let cases: Vec<(&str, Value)> = vec![
        ("empty content", one(user(""))),
        (
            "content mixing strings and objects",
            one(user(mixed.clone())),
        ),
        // An array of zero blocks is still an array of objects and strings.
        ("empty content array", one(user(json!([])))),
        (
            "metadata null",
            one(json!({"role": "assistant", "content": "x", "metadata": null})),
        ),
        (
            "metadata empty",
            one(json!({"role": "system", "content": "x", "metadata": {}})),
        ),
        (
            "expected_seq null",
            json!({"expected_seq": null, "messages": [{"role": "tool", "content": "x"}]}),
        ),
        (
            "unicode and control characters other than NUL",
            one(user(unicode)),
        ),
    ];
    for (index, (label, body)) in cases.iter().enumerate() {
        let response = app.post_json(&messages_path(session), body).await;
        assert_eq!(
            response.status().as_u16(),
            201,
            "{label}: {}",
            response.text().await.unwrap_or_default()
        );
        let result: Value = response.json().await.expect("json");
        assert_eq!(result["first_seq"], index as i64 + 1, "{label}");
    }
    let entries = app.all_entries(session).await;
    assert_eq!(entries.len(), cases.len());
    assert_eq!(entries[0]["content"], "");
    assert_eq!(entries[0]["metadata"], json!({}));
    assert_eq!(entries[1]["content"], mixed);
    assert_eq!(entries[2]["content"], json!([]));
    assert_eq!(
        entries[3]["metadata"],
        json!({}),
        "metadata null is stored as {{}}"
    );
    assert_eq!(entries[3]["role"], "assistant");
    assert_eq!(entries[4]["role"], "system");
    assert_eq!(entries[5]["role"], "tool");
    assert_eq!(entries[6]["content"], unicode);

    // expected_seq 0 on a new session and the right expected_seq on an existing one.
    let response = app
        .post_json(
            &messages_path("new"),
            &json!({"expected_seq": 0, "messages": [user("x")]}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let response = app
        .post_json(
            &messages_path(session),
            &json!({"expected_seq": 7, "messages": [user("x")]}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);

    // A reset with metadata null and expected_seq null.
    let response = app
        .post_json(
            &reset_path(session),
            &json!({"expected_seq": null, "metadata": null}),
        )
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let entries = app.all_entries(session).await;
    assert_eq!(entries[8]["kind"], "context_reset");
    assert_eq!(entries[8]["metadata"], json!({}));
}

#[tokio::test]
async fn an_append_of_exactly_100_messages_is_accepted_in_order() {
    let app = TestApp::spawn().await;
    let messages: Vec<Value> = (0..100).map(|n| user(format!("m{n}"))).collect();
    let response = app
        .post_json(&messages_path("hundred"), &json!({ "messages": messages }))
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["first_seq"], 1);
    assert_eq!(result["last_seq"], 100);
    assert_eq!(result["entries"].as_array().map(Vec::len), Some(100));
    let entries = app.all_entries("hundred").await;
    assert_eq!(entries.len(), 100);
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], n as i64 + 1);
        assert_eq!(entry["content"], format!("m{n}"));
    }
}
