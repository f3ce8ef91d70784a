//! The send call: `POST {base}/{version}/{phone_number_id}/messages` with a Bearer token.

use std::time::Duration;

use serde_json::{Value, json};

use super::codes;
use crate::{
    config::Secret,
    gateway::{
        SendRequest, TemplateCall,
        outcome::{Outcome, exchange},
    },
};

/// A caption longer than this is refused by the Graph API (checked at enqueue, SPEC §13).
pub const MAX_CAPTION: usize = 1024;

#[derive(Clone)]
pub struct CloudApi {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

impl CloudApi {
    /// `base`: `https://graph.facebook.com` (or the sandbox's); the version and number complete
    /// the path.
    pub fn new(
        base: &str,
        version: &str,
        phone_number_id: &str,
        token: Secret,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(64)
            .build()?;
        let url = format!(
            "{}/{version}/{phone_number_id}/messages",
            base.trim_end_matches('/')
        );
        Ok(Self { http, url, token })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; never panics, every failure becomes an [`Outcome`].
    pub async fn send(&self, request: &SendRequest<'_>) -> Outcome {
        let call = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .json(&body(request));
        exchange(call, codes::classify).await
    }
}

/// The request body: a template when the message goes out as one, else a file (image for
/// `.jpg/.jpeg/.png`, document otherwise) with the text as its caption, else the text. The
/// message id rides along as `biz_opaque_callback_data`, echoed on its status webhooks.
pub fn body(request: &SendRequest<'_>) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": request.to,
        "biz_opaque_callback_data": request.message_id.to_string(),
    });
    let (kind, content) = match (request.template, request.file_url) {
        (Some(template), _) => ("template", template_object(template)),
        (None, Some(link)) if is_image(link) => {
            ("image", with_caption(json!({"link": link}), request.body))
        }
        (None, Some(link)) => {
            let mut document = with_caption(json!({"link": link}), request.body);
            if let Some(name) = file_name(link) {
                document["filename"] = json!(name);
            }
            ("document", document)
        }
        (None, None) => ("text", json!({"preview_url": false, "body": request.body})),
    };
    body["type"] = json!(kind);
    body[kind] = content;
    body
}

fn template_object(template: &TemplateCall) -> Value {
    let mut object = json!({
        "name": template.name,
        "language": {"code": template.language},
    });
    if !template.params.is_empty() {
        let parameters: Vec<Value> = template
            .params
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect();
        object["components"] = json!([{"type": "body", "parameters": parameters}]);
    }
    object
}

fn with_caption(mut object: Value, caption: &str) -> Value {
    if !caption.is_empty() {
        object["caption"] = json!(caption);
    }
    object
}

/// The link's path without its query, lower-cased, ends in an image extension.
pub fn is_image(link: &str) -> bool {
    let path = link
        .split(['?', '#'])
        .next()
        .unwrap_or(link)
        .to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// The last path segment of the link, if it has one.
fn file_name(link: &str) -> Option<&str> {
    let path = link.split(['?', '#']).next()?;
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_, name) = after_host.rsplit_once('/')?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        body: &'a str,
        file: Option<&'a str>,
        template: Option<&'a TemplateCall>,
    ) -> SendRequest<'a> {
        SendRequest {
            message_id: uuid::Uuid::nil(),
            to: "628123",
            body,
            file_url: file,
            template,
        }
    }

    #[test]
    fn text_document_image_and_template_bodies() {
        let text = body(&request("halo", None, None));
        assert_eq!(text["type"], "text");
        assert_eq!(text["text"]["body"], "halo");
        assert_eq!(
            text["biz_opaque_callback_data"],
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(text["messaging_product"], "whatsapp");
        assert_eq!(text["recipient_type"], "individual");

        let doc = body(&request(
            "nota",
            Some("https://x.test/a/invoice.pdf?sig=1"),
            None,
        ));
        assert_eq!(doc["type"], "document");
        assert_eq!(
            doc["document"]["link"],
            "https://x.test/a/invoice.pdf?sig=1"
        );
        assert_eq!(doc["document"]["caption"], "nota");
        assert_eq!(doc["document"]["filename"], "invoice.pdf");

        let image = body(&request("", Some("https://x.test/foto.JPG"), None));
        assert_eq!(image["type"], "image");
        assert!(image["image"].get("caption").is_none());

        let call = TemplateCall {
            name: "service_reminder".into(),
            language: "en_US".into(),
            params: vec!["Budi".into(), "B 1 X".into()],
        };
        let template = body(&request("rendered", None, Some(&call)));
        assert_eq!(template["type"], "template");
        assert_eq!(template["template"]["language"]["code"], "en_US");
        assert_eq!(
            template["template"]["components"][0]["parameters"][1]["text"],
            "B 1 X"
        );
        assert!(template.get("text").is_none());
    }

    #[test]
    fn file_names_and_image_extensions() {
        assert!(is_image("https://x/y.png?x=1"));
        assert!(!is_image("https://x/y.pdf"));
        assert_eq!(file_name("https://host.test/"), None);
        assert_eq!(file_name("https://host.test"), None);
        assert_eq!(file_name("https://host.test/a/b.pdf"), Some("b.pdf"));
    }
}
