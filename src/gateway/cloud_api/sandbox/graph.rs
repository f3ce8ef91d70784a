//! The sandbox's side of a send: checking a request as the Graph API does, and the Graph error
//! answers (`{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}`), including the
//! errors a trial number asks for (README "Cloud API sandbox").

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use crate::gateway::cloud_api::payload::{ErrorAnswer, ErrorData, GraphError, MESSAGING_PRODUCT};

/// Graph's limits on a text body and on a caption, in characters.
pub const MAX_TEXT: usize = 4096;
pub const MAX_CAPTION: usize = 1024;
/// Graph's limit on `biz_opaque_callback_data`.
pub const MAX_CALLBACK_DATA: usize = 512;

/// A Graph error answer.
#[derive(Debug)]
pub struct Fault {
    pub status: StatusCode,
    pub error: GraphError,
}

impl Fault {
    fn new(status: StatusCode, code: i64, message: String, details: Option<String>) -> Self {
        Self {
            status,
            error: GraphError {
                message,
                kind: Some("OAuthException".to_owned()),
                code: Some(code),
                error_subcode: None,
                error_data: details.map(|details| ErrorData {
                    messaging_product: Some(MESSAGING_PRODUCT.to_owned()),
                    details: Some(details),
                }),
                fbtrace_id: Some(fbtrace_id()),
            },
        }
    }

    /// `400`, code 100: the request is not one Graph would take.
    pub fn invalid(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) Invalid parameter".to_owned(),
            Some(details.into()),
        )
    }

    /// `401`, code 190: no access token, or not this process's sandbox key.
    pub fn bad_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token".to_owned(),
            None,
        )
    }

    /// `400`, code 100 subcode 33: a phone number id that is not the sandbox's.
    pub fn unknown_object(id: &str) -> Self {
        let mut fault = Self::new(
            StatusCode::BAD_REQUEST,
            100,
            format!(
                "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded \
                 due to missing permissions, or does not support this operation"
            ),
            None,
        );
        fault.error.kind = Some("GraphMethodException".to_owned());
        fault.error.error_subcode = Some(33);
        fault
    }

    /// `503`, code 2: the sandbox could not keep the message.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            2,
            "Service temporarily unavailable".to_owned(),
            None,
        )
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(ErrorAnswer { error: self.error })).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "OAuth \"Facebook Platform\" \"invalid_token\" \"Invalid OAuth access token\"",
                ),
            );
        }
        response
    }
}

/// Graph's request id, random (for the look of it).
fn fbtrace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..23].to_owned()
}

/// What the sandbox needs of a request Graph would take.
#[derive(Debug, PartialEq)]
pub struct Accepted {
    pub to: String,
    pub kind: &'static str,
    pub callback: Option<String>,
    /// The request as received.
    pub request: Value,
}

/// Checks `body` as Graph does: `messaging_product`, `to`, `type` with its object and the fields
/// it needs, the length limits. `Err` is what is wrong (`error_data.details` of a
/// [`Fault::invalid`]).
pub fn check(body: &[u8]) -> Result<Accepted, String> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| "the request body must be a JSON object".to_owned())?;
    let Some(fields) = request.as_object() else {
        return Err("the request body must be a JSON object".to_owned());
    };
    match fields.get("messaging_product") {
        Some(Value::String(p)) if p == MESSAGING_PRODUCT => {}
        None => {
            return Err("The parameter messaging_product is required.".to_owned());
        }
        Some(_) => return Err("messaging_product must be \"whatsapp\"".to_owned()),
    }
    if let Some(t) = fields.get("recipient_type")
        && *t != "individual"
    {
        return Err("recipient_type must be \"individual\"".to_owned());
    }
    let to = match fields.get("to") {
        Some(Value::String(to))
            if (5..=15).contains(&to.len()) && to.bytes().all(|b| b.is_ascii_digit()) =>
        {
            to.clone()
        }
        None => return Err("The parameter to is required.".to_owned()),
        Some(_) => {
            return Err("to must be a phone number: 5 to 15 digits, country code first".to_owned());
        }
    };
    // Graph takes a request without `type` as text.
    let kind = match fields.get("type") {
        None => "text",
        Some(Value::String(t)) => match t.as_str() {
            "text" => "text",
            "document" => "document",
            "image" => "image",
            "template" => "template",
            _ => return Err(format!("type {t:?} is not supported")),
        },
        Some(_) => return Err("type must be a string".to_owned()),
    };
    let Some(object) = fields.get(kind).and_then(Value::as_object) else {
        return Err(format!(
            "Param {kind} is required for type {kind} and must be an object"
        ));
    };
    match kind {
        "text" => check_text(object)?,
        "template" => check_template(object)?,
        _ => check_media(kind, object)?,
    }
    let callback = match fields.get("biz_opaque_callback_data") {
        None => None,
        Some(Value::String(c)) if c.chars().count() <= MAX_CALLBACK_DATA => Some(c.clone()),
        Some(_) => {
            return Err(format!(
                "biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_DATA} characters"
            ));
        }
    };
    Ok(Accepted {
        to,
        kind,
        callback,
        request,
    })
}

fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn check_text(text: &Map<String, Value>) -> Result<(), String> {
    let body = string(text, "body").filter(|b| !b.trim().is_empty());
    let Some(body) = body else {
        return Err("Param text['body'] is required".to_owned());
    };
    if body.chars().count() > MAX_TEXT {
        return Err(format!(
            "Param text['body'] must be at most {MAX_TEXT} characters long"
        ));
    }
    if text.get("preview_url").is_some_and(|p| !p.is_boolean()) {
        return Err("Param text['preview_url'] must be a boolean".to_owned());
    }
    Ok(())
}

fn check_media(kind: &str, media: &Map<String, Value>) -> Result<(), String> {
    match (string(media, "link"), string(media, "id")) {
        (Some(link), None) => {
            let web = url::Url::parse(link)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !web {
                return Err(format!("Param {kind}['link'] must be an http or https URL"));
            }
        }
        (None, Some(id)) if !id.is_empty() => {}
        _ => {
            return Err(format!("Param {kind} needs one of 'link' or 'id'"));
        }
    }
    match media.get("caption") {
        None => {}
        Some(Value::String(c)) if c.chars().count() <= MAX_CAPTION => {}
        Some(_) => {
            return Err(format!(
                "Param {kind}['caption'] must be a string of at most {MAX_CAPTION} characters"
            ));
        }
    }
    if media.get("filename").is_some_and(|f| !f.is_string()) {
        return Err(format!("Param {kind}['filename'] must be a string"));
    }
    Ok(())
}

fn check_template(template: &Map<String, Value>) -> Result<(), String> {
    if string(template, "name").is_none_or(str::is_empty) {
        return Err("Param template['name'] is required".to_owned());
    }
    let language = template.get("language").and_then(Value::as_object);
    if language
        .and_then(|l| string(l, "code"))
        .is_none_or(str::is_empty)
    {
        return Err("Param template['language']['code'] is required".to_owned());
    }
    let components = match template.get("components") {
        None => return Ok(()),
        Some(Value::Array(c)) => c,
        Some(_) => {
            return Err("Param template['components'] must be an array".to_owned());
        }
    };
    for (i, component) in components.iter().enumerate() {
        let Some(component) = component
            .as_object()
            .filter(|c| string(c, "type").is_some())
        else {
            return Err(format!(
                "Param template['components'][{i}] must be an object with a type"
            ));
        };
        let parameters = match component.get("parameters") {
            None => continue,
            Some(Value::Array(p)) => p,
            Some(_) => {
                return Err(format!(
                    "Param template['components'][{i}]['parameters'] must be an array"
                ));
            }
        };
        for (j, p) in parameters.iter().enumerate() {
            let Some(p) = p.as_object() else {
                return Err(format!(
                    "Param template['components'][{i}]['parameters'][{j}] must be an object"
                ));
            };
            let ok = match string(p, "type") {
                Some("text") => string(p, "text").is_some(),
                Some(_) => true,
                None => false,
            };
            if !ok {
                return Err(format!(
                    "Param template['components'][{i}]['parameters'][{j}] needs a type (and text for type text)"
                ));
            }
        }
    }
    Ok(())
}

/// How a trial number's error is given: at once (an HTTP error) or later (`200` with a wamid,
/// then a `failed` status webhook instead of sent, delivered, read) — as Meta does for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    Refused(i64),
    FailsLater(i64),
}

/// Error codes a trial number may ask for, with the HTTP status Graph answers them with (`0`:
/// a `failed` status webhook) and Graph's title. Longer codes first, so that one ending in
/// another's digits is found first.
const TRIALS: [(i64, u16, &str); 12] = [
    (130429, 400, "Rate limit hit"),
    (
        131056,
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
    ),
    (131026, 0, "Message undeliverable"),
    (131047, 0, "Re-engagement message"),
    (131048, 0, "Spam rate limit hit"),
    (
        131049,
        0,
        "This message was not delivered to maintain healthy ecosystem engagement.",
    ),
    (
        132000,
        400,
        "Number of parameters does not match the expected number of params",
    ),
    (
        132001,
        404,
        "Template name does not exist in the translation",
    ),
    (80007, 400, "Rate limit issues"),
    (
        190,
        401,
        "Error validating access token: Session has expired",
    ),
    (368, 403, "Temporarily blocked for policies violations"),
    (4, 400, "Application request limit reached"),
];

/// A recipient whose number ends in `0000` is a trial: the code written just before the `0000`
/// (`62812 131026 0000` → 131026), else 131026 (undeliverable).
pub fn trial(to: &str) -> Option<Trial> {
    let rest = to.strip_suffix("0000")?;
    let (code, status, _) = TRIALS
        .iter()
        .find(|(code, _, _)| rest.ends_with(&code.to_string()))
        .copied()
        .unwrap_or(TRIALS[2]);
    Some(if status == 0 {
        Trial::FailsLater(code)
    } else {
        Trial::Refused(code)
    })
}

/// Graph's title of a trial code.
pub fn title(code: i64) -> &'static str {
    TRIALS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("Unknown error", |(_, _, title)| title)
}

/// The HTTP error a [`Trial::Refused`] is answered with.
pub fn refusal(code: i64) -> Fault {
    let status = TRIALS
        .iter()
        .find(|(c, _, _)| *c == code)
        .and_then(|(_, s, _)| StatusCode::from_u16(*s).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let message = if code == 190 {
        title(code).to_owned()
    } else {
        format!("(#{code}) {}", title(code))
    };
    let details = (code != 190).then(|| format!("sandbox trial number: error {code}"));
    let mut fault = Fault::new(status, code, message, details);
    if code == 190 {
        fault.error.error_subcode = Some(463);
    }
    fault
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_number_names_its_error_before_the_0000() {
        assert_eq!(trial("628123456789"), None);
        assert_eq!(trial("62812130429000"), None);
        assert_eq!(trial("628121304290000"), Some(Trial::Refused(130429)));
        assert_eq!(trial("628121310260000"), Some(Trial::FailsLater(131026)));
        assert_eq!(trial("62812131900000"), Some(Trial::Refused(190)));
        assert_eq!(trial("6281299940000"), Some(Trial::Refused(4)));
        assert_eq!(trial("628129990000"), Some(Trial::FailsLater(131026)));
        let fault = refusal(132001);
        assert_eq!(fault.status, StatusCode::NOT_FOUND);
        assert_eq!(fault.error.code, Some(132001));
    }
}
