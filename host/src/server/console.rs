//! The web console's static assets (`host/console/`, embedded in the binary so the console
//! works offline with no other server): `GET /console/` and `GET /console/<file>`.
//!
//! The console signs in with a token it keeps in page memory only and sends as a bearer
//! token to the same JSON API every client uses, so it holds no ambient credential (no
//! cookie) that a cross-site request could ride: CSRF has nothing to forge, and a tenant
//! sees exactly what its token may read through the API. Every asset is served under a
//! strict Content-Security-Policy: scripts, styles and connections from this origin only.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::error::GatewayError;

/// The console's files, embedded at build time.
#[derive(rust_embed::Embed)]
#[folder = "console/"]
struct Assets;

/// Same-origin scripts, styles and fetches only; no inline code, no framing, no forms
/// posting elsewhere. `data:` images are what Chart.js's exported charts use.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves `path` (under `/console`), or `None` when the path is not the console's.
pub fn serve(method: &Method, path: &str) -> Option<Result<Response<Body>, GatewayError>> {
    let rest = path.strip_prefix("/console")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(Err(GatewayError::MethodNotAllowed));
    }
    Some(Ok(match rest {
        // Relative asset links resolve against `/console/`, not `/`.
        "" => redirect("/console/"),
        "/" => asset("index.html").unwrap_or_else(not_found),
        // Names are looked up in the embedded set; never walk out of it.
        file if file.split('/').any(|part| part == ".." || part.contains('\\')) => not_found(),
        file => asset(&file[1..]).unwrap_or_else(not_found),
    }))
}

fn asset(name: &str) -> Option<Response<Body>> {
    let file = Assets::get(name)?;
    // Embedded files are borrowed from the binary: served without a copy.
    let bytes = match file.data {
        std::borrow::Cow::Borrowed(data) => Bytes::from_static(data),
        std::borrow::Cow::Owned(data) => Bytes::from(data),
    };
    let mut response = Response::new(Full::new(bytes).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    // The page is small; always fresh means an upgraded gateway never serves a stale mix.
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(secure(response))
}

fn not_found() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")).boxed_unsync());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    secure(response)
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static(to));
    secure(response)
}

fn secure(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_served_under_its_policy_and_nothing_else_is_claimed() {
        let index = serve(&Method::GET, "/console/").and_then(Result::ok).expect("index");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[http::header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(index.headers()[http::header::CONTENT_TYPE].to_str().is_ok_and(|t| t.starts_with("text/html")));
        let bare = serve(&Method::GET, "/console").and_then(Result::ok).expect("redirect");
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        let missing = serve(&Method::GET, "/console/no-such-file.js").and_then(Result::ok).expect("404");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(matches!(serve(&Method::POST, "/console/"), Some(Err(GatewayError::MethodNotAllowed))));
        let escape = serve(&Method::GET, "/console/../Cargo.toml").and_then(Result::ok).expect("404");
        assert_eq!(escape.status(), StatusCode::NOT_FOUND);
        assert!(serve(&Method::GET, "/consoles").is_none());
        assert!(serve(&Method::GET, "/v1/models").is_none());
    }
}
