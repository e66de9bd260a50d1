//! Every bad input of API.md gets its exact 4xx problem document and writes nothing; no input gets
//! a 5xx; the valid edge cases succeed.
//!
//! The bad inputs are tables of [`Case`]s run by [`Fixture::refuses`]: each rejected POST is sent
//! twice, to a session that holds one entry (whose summary must not move) and to a session that
//! does not exist (which must still not exist afterwards), and each answer must be the expected
//! problem document, naming the offending field where the case says so, leaking no internals.

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
const JSON: Option<&str> = Some("application/json");

fn summary_path(session: &str) -> String {
    format!("/v1/sessions/{session}")
}

fn messages_path(session: &str) -> String {
    format!("/v1/sessions/{session}/messages")
}

fn reset_path(session: &str) -> String {
    format!("/v1/sessions/{session}/reset")
}

fn context_path(session: &str) -> String {
    format!("/v1/sessions/{session}/context")
}

fn user(content: impl Into<Value>) -> Value {
    json!({"role": "user", "content": content.into()})
}

/// `{"messages": [message]}`.
fn one(message: Value) -> Value {
    json!({ "messages": [message] })
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

/// A POST that can be sent any number of times.
#[derive(Clone)]
struct Post {
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Post {
    fn json(body: &Value) -> Self {
        Self::raw(JSON, serde_json::to_vec(body).expect("serializable"))
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

/// A problem a request must get: its status and code.
#[derive(Clone, Copy, Debug)]
struct Refusal(u16, &'static str);

const MALFORMED_JSON: Refusal = Refusal(400, "malformed_json");
const INVALID_PARAMETER: Refusal = Refusal(400, "invalid_parameter");
const INVALID_SESSION_ID: Refusal = Refusal(400, "invalid_session_id");
const INVALID_IDEMPOTENCY_KEY: Refusal = Refusal(400, "invalid_idempotency_key");
const SESSION_NOT_FOUND: Refusal = Refusal(404, "session_not_found");
const NOT_FOUND: Refusal = Refusal(404, "not_found");
const SEQ_CONFLICT: Refusal = Refusal(409, "seq_conflict");
const PAYLOAD_TOO_LARGE: Refusal = Refusal(413, "payload_too_large");
const UNSUPPORTED_MEDIA_TYPE: Refusal = Refusal(415, "unsupported_media_type");
const VALIDATION_FAILED: Refusal = Refusal(422, "validation_failed");
const INVALID_TEXT: Refusal = Refusal(422, "invalid_text");
const INVALID_NUMBER: Refusal = Refusal(422, "invalid_number");

/// Asserts that `response` is one of the `expected` problem documents (the one with its status)
/// leaking no internals, and returns it; `label` and the body are in the message otherwise.
async fn problem_of(label: &str, response: Response, expected: &[Refusal]) -> Value {
    let got = response.status().as_u16();
    let Some(&Refusal(status, code)) = expected.iter().find(|refusal| refusal.0 == got) else {
        let body = response.text().await.unwrap_or_default();
        panic!("{label}: expected one of {expected:?}, got {got}: {body}");
    };
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

/// [`problem_of`] with one expected problem.
async fn problem(label: &str, response: Response, expected: Refusal) -> Value {
    problem_of(label, response, &[expected]).await
}

/// Asserts a 201 (with `label` and the body in the message otherwise) and returns the body.
async fn created(label: &str, response: Response) -> Value {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{label}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A raw header: name and value bytes.
type Header<'a> = (&'a str, &'a [u8]);

const JSON_HEADER: Header = ("Content-Type", b"application/json");

/// A raw request: method, target, headers, body.
type RawRequest<'a> = (&'a str, String, Vec<Header<'a>>, Vec<u8>);

/// A raw request's method, target (its first 120 characters) and headers, for messages.
fn raw_label(method: &str, target: &str, headers: &[Header]) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value)))
        .collect();
    format!("{method} {} {headers:?}", &target[..target.len().min(120)])
}

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

// ---------------------------------------------------------------------------------------------
// Cases and the fixture that runs them
// ---------------------------------------------------------------------------------------------

/// The two write routes of a session.
#[derive(Clone, Copy)]
enum Route {
    Append,
    Reset,
}

impl Route {
    fn path(self, session: &str) -> String {
        match self {
            Route::Append => messages_path(session),
            Route::Reset => reset_path(session),
        }
    }

    /// How a label names the existing and the missing session of this route.
    fn sessions(self) -> [&'static str; 2] {
        match self {
            Route::Append => ["existing session", "new session"],
            // The body is checked before existence, so a missing session gets the same answer.
            Route::Reset => ["reset existing", "reset missing"],
        }
    }
}

/// A POST that must be refused, and the field the problem's detail must name.
struct Case {
    route: Route,
    label: String,
    post: Post,
    names: Option<&'static str>,
}

fn append(label: impl Into<String>, post: Post) -> Case {
    Case {
        route: Route::Append,
        label: label.into(),
        post,
        names: None,
    }
}

fn reset(label: impl Into<String>, post: Post) -> Case {
    Case {
        route: Route::Reset,
        ..append(label, post)
    }
}

/// The same POST to both routes.
fn both(label: &str, post: Post) -> [Case; 2] {
    [append(label, post.clone()), reset(label, post)]
}

impl Case {
    fn naming(self, field: Option<&'static str>) -> Self {
        Self {
            names: field,
            ..self
        }
    }

    fn on(self, route: Route) -> Self {
        Self { route, ..self }
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
            SESSION_NOT_FOUND,
        )
        .await;
    }

    /// `case` is answered with one of `expected`, naming its field, both for the existing session
    /// and for a new one, and writes nothing.
    async fn refused(&self, case: &Case, expected: &[Refusal]) {
        let Case {
            route,
            label,
            post,
            names,
        } = case;
        let [existing, missing] = route.sessions();
        let fresh = self.fresh_id();
        for (session, which) in [(EXISTING, existing), (fresh.as_str(), missing)] {
            let response = post.send(&self.app, &route.path(session)).await;
            let found = problem_of(&format!("{label} ({which})"), response, expected).await;
            if let Some(field) = names {
                let detail = found["detail"].as_str().unwrap_or_default();
                assert!(
                    detail.contains(field),
                    "{label}: detail {detail:?} should name {field:?}"
                );
            }
            if session == EXISTING {
                self.assert_untouched(label).await;
            } else {
                self.assert_absent(label, session).await;
            }
        }
    }

    /// Every case is refused with `expected` and writes nothing.
    async fn refuses(&self, expected: Refusal, cases: impl IntoIterator<Item = Case>) {
        self.refuses_with(&[expected], cases).await;
    }

    /// Every case is refused with one of `expected` and writes nothing.
    async fn refuses_with(&self, expected: &[Refusal], cases: impl IntoIterator<Item = Case>) {
        let mut count = 0;
        for case in cases {
            self.refused(&case, expected).await;
            count += 1;
        }
        assert!(count > 0, "no cases");
        self.assert_no_other_session(&format!("{expected:?}")).await;
    }

    /// Every raw request is refused with `expected` and writes nothing.
    async fn refuses_raw(&self, expected: Refusal, requests: &[RawRequest<'_>]) {
        for (method, target, headers, body) in requests {
            let label = raw_label(method, target, headers);
            let response = raw(&self.app, method, target, headers, body).await;
            problem(&label, response, expected).await;
        }
        self.assert_no_other_session(&format!("{expected:?}")).await;
    }

    /// Every GET of `targets` is refused with `expected` and writes nothing.
    async fn refuses_gets(&self, expected: Refusal, targets: &[String]) {
        for target in targets {
            problem(target, self.app.get(target).await, expected).await;
        }
        self.assert_no_other_session(&format!("{expected:?}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Conventions: JSON, content type, empty bodies
// ---------------------------------------------------------------------------------------------

const MALFORMED: &[(&str, &[u8])] = &[
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

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let cases = MALFORMED
        .iter()
        .flat_map(|(label, body)| both(label, Post::raw(JSON, *body)));
    Fixture::new().await.refuses(MALFORMED_JSON, cases).await;
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_400_malformed_json_wherever_it_is() {
    // "\ud800" is valid JSON syntax but no text (RFC 8259 8.2): API.md makes it malformed JSON,
    // in content, metadata and keys alike, and before any check of the body's shape.
    let appends: [&[u8]; 6] = [
        br#"{"messages": [{"role": "user", "content": "a\ud800b"}]}"#,
        br#"{"messages": [{"role": "user", "content": "\udc00"}]}"#,
        br#"{"messages": [{"role": "user", "content": "\ud800\u0041"}]}"#,
        br#"{"messages": [{"role": "user", "content": "x", "metadata": {"k": "\udfff"}}]}"#,
        br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}]}"#,
        br#"{"messages": [{"role": "robot", "content": "x"}, {"role": "user", "content": "\ud800"}]}"#,
    ];
    let resets: [&[u8]; 2] = [
        br#"{"metadata": {"a": "\ud800"}}"#,
        br#"{"metadata": {"\udbff": 1}}"#,
    ];
    let cases = appends
        .into_iter()
        .map(|body| append("lone surrogate", Post::raw(JSON, body)))
        .chain(
            resets
                .into_iter()
                .map(|body| reset("lone surrogate", Post::raw(JSON, body))),
        );
    Fixture::new().await.refuses(MALFORMED_JSON, cases).await;
}

const NOT_JSON: &[(&str, Option<&str>)] = &[
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

#[tokio::test]
async fn a_body_not_declared_as_json_is_415_and_writes_nothing() {
    let body = serde_json::to_vec(&one(user("hi"))).expect("json");
    let cases = NOT_JSON.iter().flat_map(|&(label, content_type)| {
        [
            append(label, Post::raw(content_type, body.clone())),
            reset(label, Post::raw(content_type, &b"{}"[..])),
        ]
    });
    Fixture::new()
        .await
        .refuses(UNSUPPORTED_MEDIA_TYPE, cases)
        .await;
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
        let append = Post::raw(Some(content_type), body.clone());
        created(
            content_type,
            append.send(&app, &messages_path("charsets")).await,
        )
        .await;
        let reset = Post::raw(Some(content_type), &b"{}"[..]);
        created(
            &format!("reset with {content_type}"),
            reset.send(&app, &reset_path("charsets")).await,
        )
        .await;
        let summary = json_ok(app.get(&summary_path("charsets")).await).await;
        assert_eq!(summary["last_seq"], 2 * (index as i64 + 1));
    }
}

#[tokio::test]
async fn an_empty_post_without_content_type_counts_as_an_empty_object() {
    let fixture = Fixture::new().await;
    let empty = Post::raw(None, Vec::new());
    // {} for messages lacks the required `messages`.
    let case = append("empty append", empty.clone()).naming(Some("messages"));
    fixture.refuses(VALIDATION_FAILED, [case]).await;
    // {} is a complete reset; a missing session is still 404.
    let missing = fixture.fresh_id();
    problem(
        "empty reset of a missing session",
        empty.send(&fixture.app, &reset_path(&missing)).await,
        SESSION_NOT_FOUND,
    )
    .await;
    fixture.assert_absent("empty reset", &missing).await;
    let response = empty.send(&fixture.app, &reset_path(EXISTING)).await;
    created("empty reset", response).await;
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

/// A valid request to each session route of `id`.
fn session_routes(id: &str) -> Vec<RawRequest<'static>> {
    let append = serde_json::to_vec(&one(user("hi"))).expect("json");
    vec![
        ("POST", messages_path(id), vec![JSON_HEADER], append),
        ("POST", reset_path(id), vec![JSON_HEADER], b"{}".to_vec()),
        ("GET", summary_path(id), vec![], vec![]),
        ("GET", messages_path(id), vec![], vec![]),
        ("GET", context_path(id), vec![], vec![]),
    ]
}

#[tokio::test]
async fn an_invalid_session_id_is_400_on_every_session_route() {
    let mut requests: Vec<RawRequest> = bad_session_ids()
        .iter()
        .flat_map(|(_, id)| session_routes(id))
        .collect();
    // The empty id: on the summary route `/v1/sessions/` is another URL (404 not_found, tested
    // below), but between two slashes it is an empty session_id.
    requests.extend(
        session_routes("")
            .into_iter()
            .filter(|(_, target, _, _)| *target != summary_path("")),
    );
    assert_eq!(requests.len(), bad_session_ids().len() * 5 + 4);
    Fixture::new()
        .await
        .refuses_raw(INVALID_SESSION_ID, &requests)
        .await;
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
            &[JSON_HEADER],
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
        created(id, response).await;
        let summary = json_ok(raw(&app, "GET", &summary_path(id), &[], b"").await).await;
        assert_eq!(summary["session_id"], id);
        assert_eq!(summary["last_seq"], 1);
    }
}

#[tokio::test]
async fn path_parameters_are_checked_before_content_type_before_body_before_existence() {
    let fixture = Fixture::new().await;
    let garbage: &[u8] = b"{not json";
    // A bad session id beats a bad content type, a bad Idempotency-Key, a bad body and bad query
    // parameters.
    let mut bad_id_first: Vec<RawRequest> = Vec::new();
    for target in [
        messages_path("a%20b"),
        reset_path("a%20b"),
        messages_path("%2E%2E"),
        reset_path("."),
    ] {
        for headers in [
            // A bad content type.
            vec![("Content-Type", &b"text/plain"[..])],
            // No content type, a non-empty body.
            vec![],
            // A bad idempotency key.
            vec![JSON_HEADER, ("Idempotency-Key", b"a b")],
            // A malformed body.
            vec![JSON_HEADER],
        ] {
            bad_id_first.push(("POST", target.clone(), headers, garbage.to_vec()));
        }
    }
    for target in [
        "/v1/sessions/a%20b/messages?limit=0",
        "/v1/sessions/a;b/context?limit=abc",
        "/v1/sessions/./messages?order=up",
    ] {
        bad_id_first.push(("GET", target.to_owned(), vec![], vec![]));
    }
    fixture.refuses_raw(INVALID_SESSION_ID, &bad_id_first).await;

    // The content type beats a bad body and a missing session.
    let invalid = serde_json::to_vec(&json!({"messages": []})).expect("json");
    let content_type_first = [Route::Append, Route::Reset].into_iter().flat_map(|route| {
        [
            append("text/plain garbage", Post::raw(Some("text/plain"), garbage)).on(route),
            append(
                "text/plain invalid body",
                Post::raw(Some("text/plain"), invalid.clone()),
            )
            .on(route),
        ]
    });
    fixture
        .refuses(UNSUPPORTED_MEDIA_TYPE, content_type_first)
        .await;

    // The body beats existence: a reset of a missing session with a bad body is about the body.
    let malformed = reset("malformed reset", Post::raw(JSON, garbage));
    fixture.refuses(MALFORMED_JSON, [malformed]).await;
    let invalid = reset("invalid reset", Post::json(&json!({"metadata": "x"})));
    fixture.refuses(VALIDATION_FAILED, [invalid]).await;

    // Query parameters are checked before existence too.
    let missing = fixture.fresh_id();
    let targets = [
        format!("{}?limit=0", messages_path(&missing)),
        format!("{}?limit=1001", context_path(&missing)),
    ];
    fixture.refuses_gets(INVALID_PARAMETER, &targets).await;
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
    let cases = bad_idempotency_keys().into_iter().flat_map(|(label, key)| {
        [
            append(
                label,
                Post::json(&one(user("hi"))).header("Idempotency-Key", key.clone()),
            ),
            reset(label, Post::json(&json!({})).header("Idempotency-Key", key)),
        ]
    });
    let two_keys = |post: Post| {
        post.header("Idempotency-Key", HeaderValue::from_static("turn-1"))
            .header("Idempotency-Key", HeaderValue::from_static("turn-2"))
    };
    let two_keys = [
        append("two keys", two_keys(Post::json(&one(user("hi"))))),
        reset("two keys", two_keys(Post::json(&json!({})))),
    ];
    Fixture::new()
        .await
        .refuses(INVALID_IDEMPOTENCY_KEY, cases.chain(two_keys))
        .await;
}

#[tokio::test]
async fn idempotency_keys_of_1_and_255_visible_characters_are_accepted() {
    let app = TestApp::spawn().await;
    let long = "k".repeat(255);
    for (index, key) in ["k", "turn-5f3a\"\\!~{}", &long].into_iter().enumerate() {
        let response = app
            .post_with_key(&messages_path("keys"), key, &one(user(format!("m{index}"))))
            .await;
        created(key, response).await;
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
        VALIDATION_FAILED,
    )
    .await;
    fixture.assert_untouched("rejected with a key").await;
    // Had the key been stored, another body would be 422 idempotency_key_reused.
    let response = app
        .post_with_key(&path, "retry-me", &one(user("fixed")))
        .await;
    let replayed = response.headers().get("idempotent-replayed").is_some();
    created("the same key, another body", response).await;
    assert!(!replayed, "a replay of a rejected request");
}

// ---------------------------------------------------------------------------------------------
// 422 validation_failed
// ---------------------------------------------------------------------------------------------

/// Bad append bodies and the field each problem must name.
#[rustfmt::skip]
fn invalid_appends() -> Vec<(&'static str, Value, Option<&'static str>)> {
    let too_many: Vec<Value> = (0..101).map(|n| user(format!("m{n}"))).collect();
    let mut last_of_100_invalid: Vec<Value> = (0..99).map(|n| user(format!("m{n}"))).collect();
    last_of_100_invalid.push(json!({"role": "user", "content": 7}));
    let beyond_i64 = r#"{"expected_seq": 9223372036854775808, "messages": [{"role": "user", "content": "x"}]}"#;
    vec![
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
        ("expected_seq beyond i64", serde_json::from_str(beyond_i64).expect("json"), Some("expected_seq")),
        ("unknown top-level field", json!({"messages": [user("x")], "bogus_field": 1}), Some("bogus_field")),
        ("unknown field inside a message", one(json!({"role": "user", "content": "x", "colour": "red"})), Some("colour")),
        ("a message with a client-chosen seq", one(json!({"role": "user", "content": "x", "seq": 9})), Some("seq")),
        ("a second message that is invalid", json!({"messages": [user("ok"), {"role": "robot", "content": "x"}]}), Some("role")),
        ("the last of 100 messages invalid", json!({ "messages": last_of_100_invalid }), Some("content")),
        ("body a JSON array", json!([user("x")]), None),
        ("body a JSON string", json!("messages"), None),
        ("body a number", json!(1), None),
        ("body null", Value::Null, None),
        ("body true", json!(true), None),
    ]
}

#[tokio::test]
async fn append_validation_failures_are_422_naming_the_field_and_write_nothing() {
    let cases = invalid_appends()
        .into_iter()
        .map(|(label, body, field)| append(label, Post::json(&body)).naming(field));
    Fixture::new().await.refuses(VALIDATION_FAILED, cases).await;
}

/// Bad reset bodies and the field each problem must name.
#[rustfmt::skip]
fn invalid_resets() -> Vec<(&'static str, Value, Option<&'static str>)> {
    vec![
        ("unknown field", json!({"bogus_field": 1}), Some("bogus_field")),
        ("a role", json!({"role": "user"}), Some("role")),
        ("content", json!({"content": "x"}), Some("content")),
        ("messages", json!({"messages": [user("x")]}), Some("messages")),
        ("metadata a string", json!({"metadata": "x"}), Some("metadata")),
        ("metadata an array", json!({"metadata": []}), Some("metadata")),
        ("metadata a number", json!({"metadata": 3}), Some("metadata")),
        ("negative expected_seq", json!({"expected_seq": -1}), Some("expected_seq")),
        ("fractional expected_seq", json!({"expected_seq": 1.5}), Some("expected_seq")),
        ("expected_seq a string", json!({"expected_seq": "1"}), Some("expected_seq")),
        ("body an array", json!([]), None),
        ("body a string", json!("reset"), None),
        ("body null", Value::Null, None),
    ]
}

#[tokio::test]
async fn reset_validation_failures_are_422_naming_the_field_and_write_nothing() {
    let cases = invalid_resets()
        .into_iter()
        .map(|(label, body, field)| reset(label, Post::json(&body)).naming(field));
    Fixture::new().await.refuses(VALIDATION_FAILED, cases).await;
}

// ---------------------------------------------------------------------------------------------
// 422 invalid_text and invalid_number
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_nul_character_anywhere_in_content_or_metadata_is_422_invalid_text() {
    let with_metadata =
        |metadata: Value| one(json!({"role": "user", "content": "x", "metadata": metadata}));
    let appends = [
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
    let resets = [
        ("reset metadata value", json!({"why": "\u{0}"})),
        ("reset metadata key", json!({"\u{0}": "x"})),
    ];
    let mut cases: Vec<Case> = appends
        .iter()
        .map(|(label, body)| append(*label, Post::json(body)))
        .collect();
    // The escape as a client writes it by hand, too.
    cases.push(append(
        "hand-written \\u0000",
        Post::raw(
            JSON,
            &br#"{"messages": [{"role": "user", "content": "a\u0000b"}]}"#[..],
        ),
    ));
    cases.extend(
        resets
            .iter()
            .map(|(label, metadata)| reset(*label, Post::json(&json!({ "metadata": metadata })))),
    );
    Fixture::new().await.refuses(INVALID_TEXT, cases).await;
}

#[tokio::test]
async fn numbers_beyond_ijson_are_422_invalid_number() {
    let in_block = |number: &str| {
        format!(r#"{{"messages": [{{"role": "user", "content": [{{"n": {number}}}]}}]}}"#)
    };
    let in_metadata = |number: &str| {
        format!(
            r#"{{"messages": [{{"role": "user", "content": "x", "metadata": {{"n": {number}}}}}]}}"#
        )
    };
    let appends: Vec<(&str, String)> = vec![
        ("2^53 in a content block", in_block("9007199254740992")),
        ("-2^53 in metadata", in_metadata("-9007199254740992")),
        ("2^53 in metadata", in_metadata("9007199254740992")),
        ("-2^53 in a content block", in_block("-9007199254740992")),
        ("2^53 written as a float", in_block("9007199254740992.0")),
        ("2^53 in exponent form", in_metadata("9.007199254740992e15")),
        ("u64::MAX", in_block("18446744073709551615")),
        ("beyond u64", in_metadata("18446744073709551616")),
        ("1e300 in a content block", in_block("1e300")),
        ("1e300 in metadata", in_metadata("1e300")),
        ("-1e300", in_block("-1e300")),
        (
            "1e400 overflowing a double, in a content block",
            in_block("1e400"),
        ),
        (
            "1e400 overflowing a double, in metadata",
            in_metadata("1e400"),
        ),
        ("-1e400", in_metadata("-1e400")),
        (
            "deep in metadata",
            r#"{"messages": [{"role": "user", "content": "x", "metadata": {"a": {"b": [1, 9007199254740993]}}}]}"#.into(),
        ),
    ];
    let mut cases: Vec<Case> = appends
        .into_iter()
        .map(|(label, body)| append(label, Post::raw(JSON, body)))
        .collect();
    cases.extend(["9007199254740992", "1e300", "1e400"].map(|number| {
        let body = format!(r#"{{"metadata": {{"n": {number}}}}}"#);
        reset(format!("reset metadata {number}"), Post::raw(JSON, body))
    }));
    Fixture::new().await.refuses(INVALID_NUMBER, cases).await;
}

#[tokio::test]
async fn numbers_within_ijson_are_accepted_with_their_value() {
    let app = TestApp::spawn().await;
    let body = r#"{"messages": [{"role": "user", "content": [{"max": 9007199254740991, "min": -9007199254740991, "half": 0.5, "tiny": 1e-7, "one": 1.0, "big": 1.5e15}], "metadata": {"n": -9007199254740991, "f": 123.456}}]}"#;
    let response = Post::raw(JSON, body)
        .send(&app, &messages_path("numbers"))
        .await;
    created("numbers within I-JSON", response).await;
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
    let over = || Post::raw(JSON, append_body_of_size(4 * MIB + 1));
    let cases = [
        append("valid JSON of 4 MiB + 1 byte", over()),
        append(
            "valid JSON of 5 MiB",
            Post::raw(JSON, append_body_of_size(5 * MIB)),
        ),
        append(
            "4 MiB + 1 of garbage",
            Post::raw(JSON, vec![b'x'; 4 * MIB + 1]),
        ),
        reset("reset of 4 MiB + 1", over()),
    ];
    fixture.refuses(PAYLOAD_TOO_LARGE, cases).await;

    let exact = Post::raw(JSON, append_body_of_size(4 * MIB));
    let response = exact.send(&fixture.app, &messages_path(EXISTING)).await;
    created("exactly 4 MiB", response).await;
    let summary = json_ok(fixture.app.get(&summary_path(EXISTING)).await).await;
    assert_eq!(summary["last_seq"], 20);
}

#[tokio::test]
async fn a_message_over_256_kib_of_content_plus_metadata_is_413_and_writes_nothing() {
    let fixture = Fixture::new().await;
    let limit = 256 * KIB;
    let appends = [
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
    let mut cases: Vec<Case> = appends
        .iter()
        .map(|(label, body)| append(*label, Post::json(body)))
        .collect();
    cases.push(reset(
        "reset metadata",
        Post::json(&json!({"metadata": {"m": "y".repeat(limit)}})),
    ));
    fixture.refuses(PAYLOAD_TOO_LARGE, cases).await;

    // Just under the limit (content plus metadata 255 KiB and a few bytes) is accepted.
    let near = one(
        json!({"role": "user", "content": "x".repeat(250 * KIB), "metadata": {"m": "y".repeat(5 * KIB)}}),
    );
    let response = fixture.app.post_json(&messages_path(EXISTING), &near).await;
    created("just under the limit", response).await;
}

// ---------------------------------------------------------------------------------------------
// Reading: 400 invalid_parameter, 404
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn out_of_range_query_parameters_are_400_invalid_parameter() {
    let messages = messages_path(EXISTING);
    let context = context_path(EXISTING);
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
    Fixture::new()
        .await
        .refuses_gets(INVALID_PARAMETER, &targets)
        .await;
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
    let top = i64::MAX;
    let page = json_ok(app.get(&format!("{messages}?after_seq={top}")).await).await;
    assert_eq!(page["entries"], json!([]));
    assert_eq!(page["next_after_seq"], Value::Null);
    let page = json_ok(
        app.get(&format!("{messages}?order=desc&before_seq={top}"))
            .await,
    )
    .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    for query in ["limit=1", "limit=1000"] {
        for (target, list) in [
            (format!("{}?{query}", context_path(EXISTING)), "entries"),
            (format!("/v1/sessions?{query}"), "sessions"),
        ] {
            let page = json_ok(app.get(&target).await).await;
            assert_eq!(page[list].as_array().map(Vec::len), Some(1), "{target}");
        }
    }
}

#[tokio::test]
async fn missing_sessions_are_404_session_not_found_and_unknown_routes_404_not_found() {
    let fixture = Fixture::new().await;
    let missing = [
        "/v1/sessions/missing",
        "/v1/sessions/missing/messages",
        "/v1/sessions/missing/context",
        "/v1/sessions/missing/messages?order=desc",
    ]
    .map(String::from);
    fixture.refuses_gets(SESSION_NOT_FOUND, &missing).await;
    let resets = [
        ("reset of a missing session", json!({})),
        (
            "reset of a missing session with expected_seq 0",
            json!({"expected_seq": 0}),
        ),
    ];
    for (label, body) in resets {
        let response = fixture.app.post_json(&reset_path("missing"), &body).await;
        problem(label, response, SESSION_NOT_FOUND).await;
    }
    fixture.assert_absent("reset", "missing").await;
    let unknown = [
        "/v1/nope",
        "/nope",
        "/v1",
        "/v2/sessions",
        "/v1/sessions/existing/nope",
        "/v1/sessions/existing/messages/1",
        "/v1/sessions/",
    ]
    .map(String::from);
    fixture.refuses_gets(NOT_FOUND, &unknown).await;
    problem(
        "POST /v1/nope",
        fixture.app.post_json("/v1/nope", &json!({})).await,
        NOT_FOUND,
    )
    .await;
    fixture.assert_no_other_session("404s").await;
}

// ---------------------------------------------------------------------------------------------
// No 5xx, whatever the input
// ---------------------------------------------------------------------------------------------

/// An append with arrays nested `depth` deep in a content block.
fn nested_arrays(depth: usize) -> String {
    format!(
        r#"{{"messages": [{{"role": "user", "content": [{{"d": {}1{}}}]}}]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[tokio::test]
async fn odd_requests_never_get_a_5xx() {
    let fixture = Fixture::new().await;
    let app = &fixture.app;
    let json = JSON_HEADER;
    let messages = messages_path(EXISTING);
    let summary = summary_path(EXISTING);
    let post = |headers: Vec<Header<'static>>, body: &[u8]| -> RawRequest<'static> {
        ("POST", messages.clone(), headers, body.to_vec())
    };
    let get = |target: String| -> RawRequest<'static> { ("GET", target, vec![], vec![]) };
    #[rustfmt::skip]
    let cases: Vec<RawRequest> = vec![
        ("PUT", messages.clone(), vec![json], b"{}".to_vec()),
        ("DELETE", summary.clone(), vec![], vec![]),
        ("PATCH", summary.clone(), vec![json], b"{}".to_vec()),
        get(reset_path(EXISTING)),
        ("POST", "/v1/sessions".into(), vec![json], b"{}".to_vec()),
        ("POST", summary.clone(), vec![json], b"{}".to_vec()),
        ("POST", context_path(EXISTING), vec![json], b"{}".to_vec()),
        get(format!("{messages}?limit=1&limit=2")),
        get(format!("{messages}?limit=%FF")),
        get("/v1/sessions?after=%00".to_owned()),
        get(format!("/v1/sessions?after={}", "x".repeat(5000))),
        post(vec![("Content-Type", b"application/json\xff")], b"{}"),
        post(vec![("Content-Type", b"")], b"{}"),
        post(vec![("Content-Type", b";;;")], b"{}"),
        post(vec![json], nested_arrays(5000).as_bytes()),
        post(vec![json], br#"{"expected_seq": -9223372036854775809, "messages": []}"#),
        post(vec![json], br#"{"expected_seq": 1e400, "messages": []}"#),
        post(vec![json], b"\xef\xbb\xbf{\"messages\": []}"),
        post(vec![json], b"\0"),
        post(vec![json], br#"{"messages": [{"role": "user", "content": "x", "metadata": {"k": 1, "k": "\u0000"}}]}"#),
    ];
    for (method, target, headers, body) in &cases {
        let response = raw(app, method, target, headers, body).await;
        let status = response.status().as_u16();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let text = response.text().await.unwrap_or_default();
        let label = raw_label(method, target, headers);
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
        format!("{messages}?%zz=%%&x=%FF"),
        "/v1/sessions?&&==&".to_owned(),
    ] {
        let status = raw(app, "GET", &target, &[], b"").await.status().as_u16();
        assert!(status < 500, "{target}: status {status}");
    }

    // Extreme but valid values get their documented non-5xx answers.
    let stale = json!({"expected_seq": i64::MAX, "messages": [user("x")]});
    let conflict = problem(
        "expected_seq i64::MAX",
        app.post_json(&messages, &stale).await,
        SEQ_CONFLICT,
    )
    .await;
    assert_eq!(conflict["current_seq"], 1);
    let response = Post::raw(JSON, nested_arrays(100))
        .send(app, &messages)
        .await;
    created("100 nested arrays", response).await;
    // The deepest content: the block's array and object, then arrays to MAX_NESTING in all.
    let deepest = chatledger::ledger::MAX_NESTING - 2;
    let response = Post::raw(JSON, nested_arrays(deepest))
        .send(app, &messages)
        .await;
    created("content nested to the limit", response).await;
    let response = Post::raw(JSON, nested_arrays(deepest + 1))
        .send(app, &messages)
        .await;
    let refused = problem("content nested past the limit", response, VALIDATION_FAILED).await;
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("nested too deeply")),
        "{refused}"
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
        let result = created(label, response).await;
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

    // A surrogate pair, escaped, is one character.
    let paired = raw(
        &app,
        "POST",
        &messages_path("escaped-pair"),
        &[("Content-Type", b"application/json")],
        br#"{"messages": [{"role": "user", "content": "\ud83d\ude00", "metadata": {"\uD83C\uDF0D": "\ud83c\udf0d"}}]}"#,
    )
    .await;
    created("an escaped surrogate pair", paired).await;
    let entries = app.all_entries("escaped-pair").await;
    assert_eq!(entries[0]["content"], "😀");
    assert_eq!(entries[0]["metadata"], json!({"🌍": "🌍"}));

    // expected_seq 0 on a new session and the right expected_seq on an existing one; a reset
    // with metadata null and expected_seq null.
    for (label, path, body) in [
        (
            "expected_seq 0 on a new session",
            messages_path("new"),
            json!({"expected_seq": 0, "messages": [user("x")]}),
        ),
        (
            "expected_seq 7",
            messages_path(session),
            json!({"expected_seq": 7, "messages": [user("x")]}),
        ),
        (
            "reset with nulls",
            reset_path(session),
            json!({"expected_seq": null, "metadata": null}),
        ),
    ] {
        created(label, app.post_json(&path, &body).await).await;
    }
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
    let result = created("100 messages", response).await;
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
