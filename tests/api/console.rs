//! The web console's files: compiled into the binary, served without a key, each answer (a 404
//! included) with the security headers, and revalidated by ETag.

use reqwest::StatusCode;

use crate::helpers::TestApp;

fn assert_secured(response: &reqwest::Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_owned()
    };
    let policy = header("content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(policy.contains(part), "{what}: {part} in {policy}");
    }
    assert!(!policy.contains("unsafe-"), "{what}: {policy}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(
        header("cross-origin-opener-policy"),
        "same-origin",
        "{what}"
    );
    assert!(response.headers().contains_key("cache-control"), "{what}");
}

#[tokio::test]
async fn console_files_are_served_with_their_types_and_the_security_headers() {
    let app = TestApp::spawn().await;
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/views.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let response = reqwest::get(app.url(path)).await.expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_secured(&response, path);
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style() {
    let app = TestApp::spawn().await;
    let page = reqwest::get(app.url("/console"))
        .await
        .expect("request sent")
        .text()
        .await
        .expect("body");
    assert!(page.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one script, from a file"
    );
    assert!(!page.contains("<style"), "no inline style");
    assert!(!page.contains(" style="), "no style attribute");
    let handler = page.split(" on").skip(1).any(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(!handler, "no inline handler");
}

#[tokio::test]
async fn unknown_console_paths_are_problem_documents_with_the_security_headers() {
    let app = TestApp::spawn().await;
    for path in [
        "/console/nope.js",
        "/console/a/b",
        "/console/..%2fCargo.toml",
    ] {
        let response = reqwest::get(app.url(path)).await.expect("request sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_secured(&response, path);
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let response = reqwest::Client::new()
        .post(app.url("/console"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_secured(&response, "POST /console");
}

#[tokio::test]
async fn a_browser_revalidates_console_files_by_etag() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let first = client
        .get(app.url("/console/app.js"))
        .send()
        .await
        .expect("request sent");
    let etag = first.headers()["etag"].clone();
    let again = client
        .get(app.url("/console/app.js"))
        .header("If-None-Match", etag.clone())
        .send()
        .await
        .expect("request sent");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag);
    assert_secured(&again, "304");
    let other = client
        .get(app.url("/console/style.css"))
        .header("If-None-Match", etag)
        .send()
        .await
        .expect("request sent");
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another file's tag does not match"
    );
}
