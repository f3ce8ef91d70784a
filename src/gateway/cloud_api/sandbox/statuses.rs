//! The status webhooks the sandbox posts back for a message it took: `sent`, `delivered`, `read`
//! (or one `failed` for a trial number), each after the sandbox's `status_delay`, in Meta's
//! envelope and signed with the app secret as Meta signs. A post that fails is logged and
//! dropped, as a sandbox may: nothing is retried.

use std::{sync::Arc, time::Duration};

use axum::http::header;

use super::CloudSandbox;
use crate::gateway::cloud_api::payload::{
    Change, ChangeValue, DeliveryStatus, Entry, ErrorData, MESSAGING_PRODUCT, Metadata,
    Notification, OBJECT, Pricing, SIGNATURE_HEADER, Status, StatusError, signature,
};

/// The number and account the sandbox's webhooks say they come from.
const DISPLAY_PHONE_NUMBER: &str = "15550000000";
const WABA_ID: &str = "100000000000000";
/// One post, connect to last byte.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// A message the sandbox took, as its statuses name it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub wamid: String,
    pub to: String,
    pub callback: Option<String>,
    pub template: bool,
    /// A trial number's error, reported by a `failed` status instead of the usual three.
    pub fails_with: Option<i64>,
}

pub struct Poster {
    pub sandbox: Arc<CloudSandbox>,
    http: reqwest::Client,
}

impl Poster {
    pub fn new(sandbox: Arc<CloudSandbox>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(POST_TIMEOUT).build()?;
        Ok(Self { sandbox, http })
    }

    /// Posts the statuses of `taken` in the background, one after the other.
    pub fn spawn(self: &Arc<Self>, taken: Taken) {
        let poster = self.clone();
        tokio::spawn(async move {
            let plan = match taken.fails_with {
                None => vec![
                    DeliveryStatus::Sent,
                    DeliveryStatus::Delivered,
                    DeliveryStatus::Read,
                ],
                Some(_) => vec![DeliveryStatus::Failed],
            };
            for status in plan {
                tokio::time::sleep(poster.sandbox.status_delay).await;
                poster
                    .post(&notification(&poster.sandbox, &taken, status))
                    .await;
            }
        });
    }

    async fn post(&self, notification: &Notification) {
        let Ok(body) = serde_json::to_vec(notification) else {
            return;
        };
        let signed = signature(self.sandbox.app_secret.expose().as_bytes(), &body);
        let answer = self
            .http
            .post(&self.sandbox.inbound_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "facebookexternalua")
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                url = %self.sandbox.inbound_url,
                "the Cloud API sandbox's status webhook was refused; dropped"
            ),
            Err(e) => tracing::warn!(
                url = %self.sandbox.inbound_url,
                "the Cloud API sandbox could not post a status webhook ({e}); dropped"
            ),
        }
    }
}

/// The envelope of one status of `taken`, stamped now.
pub fn notification(sandbox: &CloudSandbox, taken: &Taken, status: DeliveryStatus) -> Notification {
    let pricing =
        matches!(status, DeliveryStatus::Sent | DeliveryStatus::Delivered).then(|| Pricing {
            billable: Some(taken.template),
            pricing_model: Some("PMP".to_owned()),
            category: Some(if taken.template { "utility" } else { "service" }.to_owned()),
        });
    let errors = taken
        .fails_with
        .filter(|_| status == DeliveryStatus::Failed)
        .map(|code| {
            let title = super::graph::title(code).to_owned();
            vec![StatusError {
                code: Some(code),
                message: Some(title.clone()),
                title: Some(title),
                error_data: Some(ErrorData {
                    messaging_product: None,
                    details: Some(format!("sandbox trial number: error {code}")),
                }),
            }]
        })
        .unwrap_or_default();
    let status = Status {
        id: taken.wamid.clone(),
        status,
        timestamp: Some(chrono::Utc::now().timestamp().to_string()),
        recipient_id: Some(taken.to.clone()),
        biz_opaque_callback_data: taken.callback.clone(),
        errors,
        pricing,
    };
    Notification {
        object: OBJECT.to_owned(),
        entry: vec![Entry {
            id: WABA_ID.to_owned(),
            changes: vec![Change {
                field: "messages".to_owned(),
                value: ChangeValue {
                    messaging_product: Some(MESSAGING_PRODUCT.to_owned()),
                    metadata: Some(Metadata {
                        display_phone_number: Some(DISPLAY_PHONE_NUMBER.to_owned()),
                        phone_number_id: Some(sandbox.phone_number_id.clone()),
                    }),
                    statuses: vec![status],
                    ..ChangeValue::default()
                },
            }],
        }],
    }
}
