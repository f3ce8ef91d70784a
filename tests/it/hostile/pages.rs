//! The HTML pages cannot be framed and run only their own inline code; no response is sniffed.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

/// The `'sha256-…'` source of the text between `<tag>` and `</tag>`.
fn inline_hash(page: &str, tag: &str) -> String {
    let start = page.find(&format!("<{tag}>")).expect("an inline block") + tag.len() + 2;
    let end = page[start..].find(&format!("</{tag}>")).unwrap() + start;
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[tokio::test]
async fn html_pages_forbid_framing_and_allow_only_their_own_inline_script_and_style() {
    let app = TestApp::spawn().await;
    for path in ["/ops/ui", "/docs"] {
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let headers = res.headers().clone();
        let page = res.text().await.unwrap();
        let csp = headers["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(
            csp.contains(&format!("script-src {};", inline_hash(&page, "script"))),
            "{path}: {csp}"
        );
        assert!(
            csp.contains(&format!("style-src {};", inline_hash(&page, "style"))),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    let res = app.get("/whatsapp/messages").send().await.unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(!res.headers().contains_key("x-frame-options"));
}
