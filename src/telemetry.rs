//! Logs (text or JSON, one object per line) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_postgres=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every labelled counter starts at 0 in every process, so that `increase()` sees its first
/// event (a series that appears at 1 has no increase to show, and an alert would miss it) — the
/// webhook counters too, one series per event type and attempt class. The
/// delivery-policy gauges (effective rate, circuit open) start at 0 until the policy
/// sets them, so that the dashboard and the circuit alert always have a series.
fn zero_series() {
    for kind in crate::messages::Kind::ALL.map(crate::messages::Kind::as_str) {
        metrics::counter!("bengkel_messages_enqueued_total", "kind" => kind).increment(0);
        metrics::counter!("bengkel_messages_suppressed_total", "kind" => kind).increment(0);
        metrics::counter!("bengkel_messages_expired_total", "kind" => kind).increment(0);
    }
    for gateway in crate::inbound::Gateway::ALL {
        for result in crate::inbound::InboundResult::ALL {
            metrics::counter!("bengkel_inbound_total", "gateway" => gateway.as_str(), "result" => result.as_str())
                .increment(0);
        }
    }
    for source in crate::suppressions::Source::ALL {
        metrics::counter!("bengkel_optouts_total", "source" => source.as_str()).increment(0);
    }
    for outcome in ["sent", "retry", "failed", "ambiguous", "expired"] {
        metrics::counter!("bengkel_sends_total", "outcome" => outcome).increment(0);
    }
    for gateway in crate::gateway::GatewayKind::ALL {
        for class in crate::gateway::Class::ALL {
            metrics::counter!(
                "bengkel_gateway_responses_total",
                "gateway" => gateway.as_str(),
                "class" => class.as_str()
            )
            .increment(0);
        }
    }
    for code in crate::gateway::cloud_api::codes::COUNTED {
        metrics::counter!("bengkel_cloud_api_errors_total", "code" => code.to_string())
            .increment(0);
    }
    metrics::counter!("bengkel_cloud_api_errors_total", "code" => "other").increment(0);
    for resolution in ["receipt", "resent"] {
        metrics::counter!("bengkel_ambiguous_sends_total", "resolution" => resolution).increment(0);
    }
    metrics::counter!("bengkel_cloud_api_statuses_dropped_total").increment(0);
    metrics::counter!("bengkel_cloud_api_statuses_duplicate_total").increment(0);
    for trigger in ["cron", "catch_up", "manual"] {
        metrics::counter!("bengkel_fanout_runs_total", "trigger" => trigger).increment(0);
    }
    metrics::counter!("bengkel_fanout_reminders_queued_total").increment(0);
    for status in crate::messages::DeliveryStatus::ALL {
        metrics::counter!("bengkel_receipts_total", "status" => status.as_str()).increment(0);
    }
    for reason in crate::policy::HoldReason::ALL {
        metrics::counter!("bengkel_sends_held_total", "reason" => reason.as_str()).increment(0);
    }
    for kind in crate::webhooks::EventType::ALL {
        metrics::counter!("bengkel_webhook_events_total", "type" => kind.as_str()).increment(0);
    }
    for class in crate::webhooks::AttemptClass::ALL {
        metrics::counter!("bengkel_webhook_attempts_total", "class" => class.as_str()).increment(0);
    }
    metrics::gauge!("bengkel_send_rate_effective").set(0.0);
    metrics::gauge!("bengkel_circuit_open").set(0.0);
}

/// The process-wide Prometheus recorder, installed on first use. Every `*_seconds` metric is a
/// histogram (not a summary) so that dashboards can aggregate quantiles across processes.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            zero_series();
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_metrics_are_exposed_from_the_start_and_the_duration_is_a_histogram() {
        let handle = metrics_handle();
        let text = handle.render();
        for kind in crate::webhooks::EventType::ALL {
            let line = format!(
                "bengkel_webhook_events_total{{type=\"{}\"}} ",
                kind.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        for class in crate::webhooks::AttemptClass::ALL {
            let line = format!(
                "bengkel_webhook_attempts_total{{class=\"{}\"}} ",
                class.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        metrics::histogram!("bengkel_webhook_attempt_duration_seconds").record(0.2);
        let text = handle.render();
        assert!(
            text.contains("bengkel_webhook_attempt_duration_seconds_bucket{le=\"0.25\"}"),
            "{text}"
        );
    }
}
