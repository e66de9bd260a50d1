//! The web console (API.md "Console"): plain HTML, CSS and JavaScript modules from `console/`,
//! compiled into the binary and served under `/console` with a strict Content-Security-Policy.
//! The page holds the officer's key in memory and reads through the same `/v1` API, so
//! everything it shows is in the access log; it needs no route of its own beyond these files.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::AppState;
use super::problem::ApiError;

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Everything under `/console/`, by file name.
const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("sse.js", "text/javascript; charset=utf-8"),
    asset!("views.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Scripts, styles and pictures only from this origin, no inline script or style, no eval, no
/// framing, no plugins, no form posts anywhere; Trusted Types with no policy, so even a
/// forgotten `innerHTML` assignment throws instead of parsing markup.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     object-src 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Strong validators of the files, `INDEX` first, then `ASSETS` in order.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|asset| format!("\"{}\"", hex::encode(&Sha256::digest(asset.body)[..16])))
        .collect()
});

/// The console's routes, every answer (a 404 or 405 included) with the security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(security_headers))
}

/// `GET /console`: the console's page.
#[utoipa::path(
    get, path = "/console", tag = "console",
    responses((status = 200, description = "The web console's page", body = String, content_type = "text/html"))
)]
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &ETAGS[0], &headers)
}

/// `GET /console/{path}`: a script, style sheet or picture of the console.
#[utoipa::path(
    get, path = "/console/{path}", tag = "console",
    params(("path" = String, Path, description = "A file of the console, such as `app.js`", example = "app.js")),
    responses(
        (status = 200, description = "The file: JavaScript, CSS or SVG",
         content((String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "No such file", body = super::problem::Problem,
         content_type = "application/problem+json"),
    )
)]
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == path) {
        Some(at) => serve(&ASSETS[at], &ETAGS[at + 1], &headers),
        None => ApiError::NotFound.into_response(),
    }
}

/// The file, or 304 when the browser's copy is current; always revalidated, so that a new
/// binary's files are seen at once.
fn serve(asset: &Asset, etag: &str, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let response_headers = response.headers_mut();
    response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(etag) {
        response_headers.insert(ETAG, etag);
    }
    response
}

/// The headers of every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (CONTENT_SECURITY_POLICY, POLICY),
        (X_FRAME_OPTIONS, "DENY"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Errors are never cached; the files carry their own rule.
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
