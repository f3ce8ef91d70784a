//! `/openapi.json`, generated from the handlers' annotations, and `/docs`, a self-contained
//! page (no CDN) that lists every operation and can call it with a pasted token.

use axum::{Json, Router, response::Html, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "bengkel-whatsapp", description = "Durable WhatsApp messaging for vehicle workshops: every send is a persisted job."),
    paths(
        crate::http::health,
        crate::http::ready,
        crate::http::metrics_text,
        crate::messages::routes::send,
        crate::messages::routes::send_simple,
        crate::messages::routes::send_with_file,
        crate::messages::routes::send_scheduled,
        crate::messages::routes::list,
        crate::messages::routes::detail,
        crate::messages::routes::cancel,
        crate::gateway::sandbox::list,
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
        crate::manual::routes::send_reminders,
        crate::manual::routes::send_reminder,
        crate::manual::routes::send_custom_message,
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
    ),
    modifiers(&BearerAuth),
    tags((name = "messages", description = "Send and track WhatsApp messages"),
         (name = "health"), (name = "customers", description = "Customers and vehicles (reminder data)"), (name = "sandbox", description = "The built-in StarSender sandbox"),
         (name = "reminders", description = "Daily maintenance reminders: fan-out, schedule, log"),
         (name = "whatsapp-report", description = "How often each customer + vehicle was reminded"),
         (name = "manual-whatsapp", description = "Customers kept outside the customer table, reminded through the same queue"),
         (name = "ops", description = "Operations (role ops): queues, jobs, requeue, cancel, pause, purge"))
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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route(
            "/docs",
            get(|| async { Html(include_str!("../../assets/docs.html")) }),
        )
}
