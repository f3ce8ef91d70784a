//! What goes over the wire with the WhatsApp Cloud API (SPEC §13), in Meta's own shapes: the
//! send request and its answer (success or Graph error), the webhook envelope Meta posts to
//! `POST /inbound/cloud-api`, and its `X-Hub-Signature-256`.
//!
//! Reading is tolerant, because Meta adds fields and omits others without notice: unknown fields
//! are ignored, anything Meta may leave out is an `Option` (or an empty list), an unknown status
//! or message type is kept as its text, and a `timestamp` is read as a string or a number. Only
//! what identifies an event is required (a status's `id` and `status`, a message's `id`): without
//! it the payload is malformed.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

/// `object` of every WhatsApp Business Account webhook.
pub const OBJECT: &str = "whatsapp_business_account";
/// `messaging_product` of every request and webhook value.
pub const MESSAGING_PRODUCT: &str = "whatsapp";
/// The header Meta signs a webhook in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

// ---------------------------------------------------------------------------------------------
// Webhook envelope

/// The body of a webhook: `{"object", "entry": [{"id", "changes": [{"field", "value"}]}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// One WhatsApp Business Account's changes (`id` is the WABA id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change; `field` is `messages` for statuses and inbound messages (other fields, such as
/// `message_template_status_update`, carry other shapes and are read as an empty value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub value: ChangeValue,
}

/// `value` of a `messages` change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<InboundMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
}

/// Which of the business's numbers the change is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
}

/// The sender of an inbound message. A user with a username may come with a business-scoped
/// `user_id` and no `wa_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A message a customer sent. `from` may be missing for a user known only by `user_id`; `text`
/// is there for `type: "text"` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<String>,
    /// `text`, `image`, `button`, `unsupported`, …: kept as Meta wrote it.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextBody>,
}

impl InboundMessage {
    /// The text of a `text` message.
    pub fn body(&self) -> Option<&str> {
        self.text.as_ref().map(|t| t.body.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextBody {
    #[serde(default)]
    pub body: String,
}

/// What happened to a message we sent (`id` is its wamid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub status: DeliveryStatus,
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    /// The `biz_opaque_callback_data` of the send, echoed (our message id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<StatusError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// `status` of a [`Status`]; one Meta adds later is kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
    #[serde(untagged)]
    Other(String),
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Other(s) => s,
        }
    }
}

/// Why a message `failed` (`errors[]` of a status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
}

/// `error_data` of a Graph error or a status error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// What a sent message costs (on `sent` and `delivered` statuses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// Meta writes unix seconds as a string; a number is taken as well.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Send request and answer

/// `POST /{version}/{phone_number_id}/messages`. `content` gives `type` and its object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub messaging_product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_type: Option<String>,
    pub to: String,
    #[serde(flatten)]
    pub content: Content,
    /// Echoed on every status webhook of this message: we put our message id here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
}

/// `"type": …` with the object of that name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    Text { text: Text },
    Document { document: Media },
    Image { image: Media },
    Template { template: Template },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<bool>,
    pub body: String,
}

/// A document or an image, by `link` (or an uploaded media `id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Documents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// An approved template: our placeholders fill `{{1}}…{{n}}` of its body, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: Language,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Language {
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// `body`, `header`, `button`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// `text` for ours.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl SendRequest {
    fn new(to: &str, content: Content, callback: Option<&str>) -> Self {
        Self {
            messaging_product: MESSAGING_PRODUCT.to_owned(),
            recipient_type: Some("individual".to_owned()),
            to: to.to_owned(),
            content,
            biz_opaque_callback_data: callback.map(str::to_owned),
        }
    }

    /// A text message (link previews off).
    pub fn text(to: &str, body: &str, callback: Option<&str>) -> Self {
        let text = Text {
            preview_url: Some(false),
            body: body.to_owned(),
        };
        Self::new(to, Content::Text { text }, callback)
    }

    /// A file by link: an image for `.jpg/.jpeg/.png` is the caller's choice (`image`).
    pub fn media(
        to: &str,
        image: bool,
        link: &str,
        caption: Option<&str>,
        filename: Option<&str>,
        callback: Option<&str>,
    ) -> Self {
        let media = Media {
            link: Some(link.to_owned()),
            id: None,
            caption: caption.map(str::to_owned),
            filename: if image {
                None
            } else {
                filename.map(str::to_owned)
            },
        };
        let content = if image {
            Content::Image { image: media }
        } else {
            Content::Document { document: media }
        };
        Self::new(to, content, callback)
    }

    /// A template whose body takes `params` as `{{1}}…{{n}}` (no component when there are none).
    pub fn template(
        to: &str,
        name: &str,
        language: &str,
        params: &[&str],
        callback: Option<&str>,
    ) -> Self {
        let components = if params.is_empty() {
            Vec::new()
        } else {
            vec![Component {
                kind: "body".to_owned(),
                parameters: params
                    .iter()
                    .map(|p| Parameter {
                        kind: "text".to_owned(),
                        text: Some((*p).to_owned()),
                    })
                    .collect(),
            }]
        };
        let template = Template {
            name: name.to_owned(),
            language: Language {
                code: language.to_owned(),
            },
            components,
        };
        Self::new(to, Content::Template { template }, callback)
    }

    /// `type` as it goes over the wire.
    pub fn kind(&self) -> &'static str {
        match self.content {
            Content::Text { .. } => "text",
            Content::Document { .. } => "document",
            Content::Image { .. } => "image",
            Content::Template { .. } => "template",
        }
    }
}

/// A `2xx` answer to a send: `messages[0].id` is the wamid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<AnswerContact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<AnswerMessage>,
}

impl SendAnswer {
    pub fn wamid(&self) -> Option<&str> {
        self.messages.first().map(|m| m.id.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerContact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerMessage {
    pub id: String,
    /// `accepted`, `held_for_quality_assessment`, … (templates only, newer versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// A Graph error answer: `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: GraphError,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: String,
    /// `OAuthException`, …
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the outcome is decided on (SPEC §13 "Outcomes").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Signature

/// `X-Hub-Signature-256` of `body`: `sha256=` and the lowercase hex HMAC-SHA256 with the app
/// secret.
pub fn signature(app_secret: &[u8], body: &[u8]) -> String {
    let digest = mac(app_secret, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `header` is `body`'s signature with `app_secret`, compared in constant time. No
/// header, another scheme, bad hex or an empty secret (anyone could sign with it) → `false`.
pub fn verify(app_secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    !app_secret.is_empty() && mac(app_secret, body).verify_slice(&expected).is_ok()
}

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

/// Hex digits (either case) as bytes; `None` for an odd length or a non-hex character.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            Some((high * 16 + low) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests;
