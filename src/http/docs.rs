//! `/openapi.json`, generated from the handlers' annotations, and `/docs`, a self-contained
//! page (no CDN) that lists every operation and can call it with a pasted token.
//!
//! Every JSON answer is enveloped: a success is `Envelope_<Data>` (`body = Envelope<Data>` in
//! an annotation), an error [`ErrorEnvelope`]. The error statuses a handler can give are listed
//! with the response sets below (`responses((status = 200, …), Unauthorized, NotFound)`), so
//! that they read the same everywhere; `scripts/contract-test` checks the document against the
//! running service.

use axum::{Json, Router, response::Html, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        RefOr, Required,
        schema::{Schema, SchemaType, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::http::envelope::ErrorEnvelope;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "bengkel-whatsapp", description = "Durable WhatsApp messaging for vehicle workshops: every send is a persisted job."),
    paths(
        crate::http::health::health,
        crate::http::health::ready,
        crate::http::health::metrics_text,
        crate::messages::routes::send,
        crate::messages::routes::send_simple,
        crate::messages::routes::send_with_file,
        crate::messages::routes::send_scheduled,
        crate::messages::routes::list,
        crate::messages::routes::detail,
        crate::messages::routes::cancel,
        crate::gateway::sandbox::list,
        crate::gateway::cloud_api::sandbox::list,
        crate::customers::routes::create,
        crate::customers::routes::list,
        crate::customers::routes::detail,
        crate::customers::routes::update,
        crate::customers::routes::remove,
        crate::customers::routes::add_vehicle,
        crate::customers::routes::update_vehicle,
        crate::customers::routes::remove_vehicle,
        crate::customers::routes::bulk_import,
        crate::reminders::routes::send_now,
        crate::reminders::routes::run_now,
        crate::reminders::routes::start,
        crate::reminders::routes::stop,
        crate::reminders::routes::status,
        crate::reminders::routes::health,
        crate::reminders::routes::list,
        crate::reminders::report::list,
        crate::reminders::report::detail,
        crate::reminders::report::statistics,
        crate::reminders::report::by_customer,
        crate::reminders::report::by_customer_vehicle,
        crate::reminders::report::remove,
        crate::reminders::report::reset_frequency,
        crate::manual::routes::create,
        crate::manual::routes::list,
        crate::manual::routes::detail,
        crate::manual::routes::by_nopol,
        crate::manual::routes::update,
        crate::manual::routes::toggle_active,
        crate::manual::routes::remove,
        crate::manual::routes::bulk_import,
        crate::manual::sends::send_reminders,
        crate::manual::sends::send_reminder,
        crate::manual::sends::send_custom_message,
        crate::manual::routes::stats,
        crate::ops::routes::ui,
        crate::ops::routes::queues,
        crate::ops::routes::pause,
        crate::ops::routes::resume,
        crate::ops::routes::jobs,
        crate::ops::routes::job,
        crate::ops::routes::requeue,
        crate::ops::routes::cancel,
        crate::ops::routes::requeue_many,
        crate::ops::routes::purge,
        crate::policy::routes::sender_state,
        crate::policy::routes::policy,
        crate::policy::routes::change_policy,
        crate::policy::routes::held,
        crate::suppressions::routes::add,
        crate::suppressions::routes::list,
        crate::suppressions::routes::remove,
        crate::suppressions::routes::changes,
        crate::messages::send_batch::send_batch,
        crate::templates::routes::list,
        crate::templates::routes::one,
        crate::templates::routes::save,
        crate::templates::routes::preview,
        crate::templates::cloud_api::save,
        crate::webhooks::routes::create,
        crate::webhooks::routes::list,
        crate::webhooks::routes::detail,
        crate::webhooks::routes::update,
        crate::webhooks::routes::remove,
        crate::webhooks::routes::rotate,
        crate::webhooks::routes::test,
        crate::webhooks::routes::deliveries,
        crate::webhooks::routes::replay_one,
        crate::webhooks::routes::replay_range,
        crate::inbound::routes::starsender,
        crate::inbound::routes::list,
        crate::inbound::cloud_routes::verify_subscription,
        crate::inbound::cloud_routes::notification,
        crate::admin::alerts::alertmanager,
        crate::console::routes::today,
        crate::console::routes::lookup,
        crate::segments::routes::create,
        crate::segments::routes::list,
        crate::segments::routes::detail,
        crate::segments::routes::remove,
        crate::segments::routes::preview,
        crate::campaigns::routes::create,
        crate::campaigns::routes::list,
        crate::campaigns::routes::detail,
        crate::campaigns::routes::start,
        crate::campaigns::routes::pause,
        crate::campaigns::routes::resume,
        crate::campaigns::routes::cancel,
    ),
    components(schemas(ErrorEnvelope, crate::messages::read::DeliveryFilter)),
    modifiers(&BearerAuth, &OptionalBodies),
    tags((name = "messages", description = "Send and track WhatsApp messages"),
         (name = "health"), (name = "customers", description = "Customers and vehicles (reminder data)"), (name = "sandbox", description = "The built-in sandbox gateways (StarSender, WhatsApp Cloud API)"),
         (name = "reminders", description = "Daily maintenance reminders: fan-out, schedule, log"),
         (name = "whatsapp-report", description = "How often each customer + vehicle was reminded"),
         (name = "manual-whatsapp", description = "Customers kept outside the customer table, reminded through the same queue"),
         (name = "ops", description = "Operations (role ops): queues, jobs, requeue, cancel, pause, purge"),
         (name = "suppressions", description = "The opt-out list: numbers that must not be messaged. Any valid token reads it, adds a number or widens its scope; narrowing (all → reminders) and removing need role ops"),
         (name = "templates", description = "Message texts with versions, one body per language; saved with role ops, previewed without sending"),
         (name = "webhooks", description = "Outbound webhooks (role ops): subscriptions, signed events (Standard Webhooks 1.0), deliveries with their attempts, replay"),
         (name = "inbound", description = "What customers write to the workshop's number: the gateways' webhooks (no token: a secret path or a signature) and the list of inbound messages (role ops)"),
         (name = "alerts", description = "Alertmanager's notifications as WhatsApp messages to ADMIN_PHONES"),
         (name = "console", description = "The workshop's console (role ops): today's reminders, and a lookup by phone, number plate or name with the number's conversation"),
         (name = "segments", description = "Saved filters over vehicles and manual records (role ops): one recipient per number, opted-out numbers left out; preview who one reaches"),
         (name = "campaigns", description = "Campaigns (role ops): steps with weighted template variants (and holdouts) sent to a segment as §11 batches, follow-ups with only_if, results per step and variant"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `request_body(content = Option<T>)` is how an annotation says "the body may be empty"
/// (`OptionalJsonObject`): the document says `required: false` with `T`, not `T | null` (a JSON
/// `null` body is malformed, `400`).
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for body in
                operations
                    .into_iter()
                    .flatten()
                    .filter_map(|op| match op.request_body.as_mut() {
                        Some(RefOr::T(body)) => Some(body),
                        _ => None,
                    })
            {
                for content in body.content.values_mut() {
                    let RefOr::T(content) = content else { continue };
                    let Some(RefOr::T(Schema::OneOf(one))) = &content.schema else {
                        continue;
                    };
                    if one.items.len() == 2 && one.items.iter().any(is_null) {
                        let schema = one.items.iter().find(|s| !is_null(s)).cloned();
                        content.schema = schema;
                        body.required = Some(Required::False);
                    }
                }
            }
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route(
            "/docs",
            get(|| async { Html(include_str!("../../assets/docs.html")) }),
        )
}

#[cfg(test)]
#[path = "docs_tests.rs"]
mod tests;
