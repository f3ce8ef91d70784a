//! A client cannot add series to the HTTP metrics: invented methods are `other`, unknown paths
//! `unmatched`.

use reqwest::Method;

use crate::helpers::TestApp;

#[tokio::test]
async fn invented_methods_and_paths_share_one_label_each() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        let method = Method::from_bytes(format!("BENGKELPROBE{i}").as_bytes()).unwrap();
        for path in ["/health", "/whatsapp/send", &format!("/invented/{i}")] {
            let res = app
                .http
                .request(method.clone(), format!("{}{path}", app.base))
                .send()
                .await
                .unwrap();
            assert!(
                res.status().is_client_error(),
                "{method} {path}: {}",
                res.status()
            );
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["success"], false);
        }
    }
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("BENGKELPROBE"), "{text}");
    assert!(!text.contains("/invented/"), "{text}");
    for line in [
        "bengkel_http_requests_total{method=\"other\",route=\"/health\",status=\"405\"}",
        "bengkel_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"}",
        "bengkel_http_request_duration_seconds_count{method=\"other\",route=\"/whatsapp/send\"}",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}
