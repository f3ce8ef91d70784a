//! Request headers that must come once ([`single_valued`]), and headers for browsers, set on the
//! way out of the router so that every page gets them, whoever serves it (`/ops/ui`, `/docs`):
//!
//! - every response: `X-Content-Type-Options: nosniff`;
//! - an HTML page: a `Content-Security-Policy` that lets run exactly the page's own inline
//!   `<script>` and `<style>` blocks (by their SHA-256, computed from the page being sent, so it
//!   cannot fall out of step with the page), lets it call only this origin, and forbids framing
//!   (`frame-ancestors 'none'`, and `X-Frame-Options: DENY` for older browsers): the ops page
//!   has buttons worth clickjacking.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// Request headers that name one thing: sent twice, one reader could take the first and another
/// the last, so the request is refused whole rather than one of them used silently.
pub const SINGLE_VALUED: [&str; 1] = ["Idempotency-Key"];

/// Refuses a request that repeats a [`SINGLE_VALUED`] header: 400 naming it.
pub async fn single_valued(req: Request, next: Next) -> Response {
    if let Some(name) = repeated(req.headers()) {
        return AppError::BadRequest(format!(
            "the {name} header appears more than once; send it once"
        ))
        .into_response();
    }
    next.run(req).await
}

/// The first [`SINGLE_VALUED`] header `headers` holds more than once (names match in any case).
fn repeated(headers: &HeaderMap) -> Option<&'static str> {
    SINGLE_VALUED
        .into_iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
}

/// The largest HTML page the policy is computed for (ours are a few tens of kB).
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

pub async fn security_headers(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !is_html(&parts.headers) {
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_PAGE_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return AppError::Internal(anyhow::anyhow!("reading an HTML page: {e}"))
                .into_response();
        }
    };
    let policy = page_policy(&String::from_utf8_lossy(&bytes));
    if let Ok(value) = HeaderValue::from_str(&policy) {
        parts.headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    parts
        .headers
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Response::from_parts(parts, Body::from(bytes))
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("text/html")
        })
}

/// The policy of one page: its inline scripts and styles by hash, calls to this origin only.
pub fn page_policy(html: &str) -> String {
    let sources = |tag: &str| {
        let hashes: Vec<String> = inline_blocks(html, tag)
            .into_iter()
            .map(|block| {
                let digest = Sha256::digest(block.as_bytes());
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect();
        if hashes.is_empty() {
            "'none'".to_owned()
        } else {
            hashes.join(" ")
        }
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        sources("script"),
        sources("style")
    )
}

/// The text of every inline `<tag …>…</tag>` block (a `<script src=…>` is not inline), exactly as
/// a browser hashes it.
fn inline_blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let open = format!("<{tag}");
    let close = format!("</{tag}");
    let mut blocks = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find(&open) {
        let start = at + found;
        let after_name = start + open.len();
        let Some(next) = lower[after_name..].chars().next() else {
            break;
        };
        if !(next == '>' || next.is_ascii_whitespace()) {
            at = after_name;
            continue;
        }
        let Some(tag_end) = lower[after_name..].find('>').map(|i| after_name + i + 1) else {
            break;
        };
        let Some(content_end) = lower[tag_end..].find(&close).map(|i| tag_end + i) else {
            break;
        };
        if !lower[after_name..tag_end].contains("src=") {
            blocks.push(&html[tag_end..content_end]);
        }
        at = content_end + close.len();
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_valued_header_sent_twice_is_named() {
        let mut headers = HeaderMap::new();
        assert_eq!(repeated(&headers), None);
        headers.append("idempotency-key", HeaderValue::from_static("a"));
        headers.append("x-other", HeaderValue::from_static("1"));
        headers.append("x-other", HeaderValue::from_static("2"));
        assert_eq!(repeated(&headers), None);
        headers.append("Idempotency-Key", HeaderValue::from_static("a"));
        assert_eq!(repeated(&headers), Some("Idempotency-Key"));
    }

    #[test]
    fn the_policy_names_each_inline_block_by_hash_and_nothing_else() {
        let page = "<html><head><STYLE>b{}</STYLE><script src=\"/x.js\"></script></head>\
                    <body><scripts>no</scripts><script type=\"module\">\nrun()\n</script></body></html>";
        assert_eq!(inline_blocks(page, "style"), ["b{}"]);
        assert_eq!(inline_blocks(page, "script"), ["\nrun()\n"]);
        let policy = page_policy(page);
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
        };
        assert!(
            policy.contains(&format!("script-src 'sha256-{}';", hash("\nrun()\n"))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src 'sha256-{}';", hash("b{}"))),
            "{policy}"
        );
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(page_policy("<p>plain</p>").contains("script-src 'none'; style-src 'none'"));
    }
}
