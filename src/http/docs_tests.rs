use serde_json::Value;

use super::*;

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op));
        }
    }
    ops
}

fn json_schema_ref(response: &Value) -> Option<&str> {
    response["content"]["application/json"]["schema"]["$ref"].as_str()
}

/// Changes outside `/ops/` that need role `ops` (SPEC §3), and `POST /suppressions`, which
/// needs it to narrow an opt-out.
const OPS_ONLY: [(&str, &str); 19] = [
    ("GET", "/inbound/messages"),
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("PATCH", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("POST", "/webhooks/{id}/rotate-secret"),
    ("POST", "/webhooks/{id}/test"),
    ("GET", "/webhooks/{id}/deliveries"),
    ("POST", "/webhooks/{id}/replay"),
    ("POST", "/webhooks/deliveries/{id}/replay"),
    ("POST", "/scheduler/maintenance-reminder/start"),
    ("POST", "/scheduler/maintenance-reminder/stop"),
    ("POST", "/whatsapp-report/reset-frequency"),
    ("DELETE", "/whatsapp-report/{report_id}"),
    ("DELETE", "/suppressions/{phone}"),
    ("POST", "/suppressions"),
    ("PUT", "/templates/{key}"),
    ("PUT", "/ops/policy"),
];

/// Every operation lists what its extractors and lookups can answer, each error with the
/// error envelope, each JSON success with an envelope.
#[test]
fn every_operation_documents_its_errors_and_envelopes() {
    let doc = document();
    let mut problems = Vec::new();
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        let mut need = |cond: bool, status: &str, why: &str| {
            if cond && !has(status) {
                problems.push(format!("{method} {path}: no {status} ({why})"));
            }
        };
        let security = op["security"].as_array().cloned().unwrap_or_default();
        let token = security.iter().any(|s| s.get("bearer").is_some());
        need(token, "401", "takes a token");
        need(
            path.starts_with("/ops/") && path != "/ops/ui"
                || OPS_ONLY.contains(&(method.as_str(), path.as_str())),
            "403",
            "needs role ops",
        );
        // `PUT /templates/{key}` creates what it does not find: no 404.
        let creates = method.eq_ignore_ascii_case("put") && path == "/templates/{key}";
        need(
            path.contains('{') && !creates,
            "404",
            "looks up a path parameter",
        );
        need(path.contains('{'), "400", "decodes a path parameter");
        need(
            path.contains('{'),
            "422",
            "refuses a path parameter with a NUL",
        );
        let body = op.get("requestBody").is_some();
        // Meta's webhook is stored as its signed bytes, not read: nothing to refuse in it.
        let raw = method.eq_ignore_ascii_case("post") && path == "/inbound/cloud-api";
        need(body && !raw, "400", "reads a JSON body");
        need(body && !raw, "422", "validates a JSON body");
        need(body, "413", "limits a JSON body");
        need(body, "408", "times a JSON body out");
        let query = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        need(query, "400", "decodes a query string");
        for (status, response) in responses {
            if response["description"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                problems.push(format!("{method} {path} {status}: no description"));
            }
            let json = response["content"].get("application/json").is_some();
            if status.starts_with('4') || status.starts_with('5') {
                if json_schema_ref(response) != Some("#/components/schemas/ErrorEnvelope") {
                    problems.push(format!("{method} {path} {status}: not an ErrorEnvelope"));
                }
            } else if json
                && !json_schema_ref(response)
                    .is_some_and(|r| r.starts_with("#/components/schemas/Envelope_"))
            {
                problems.push(format!("{method} {path} {status}: not an Envelope"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn operation_ids_are_unique_and_links_name_them() {
    let doc = document();
    let mut ids = std::collections::HashSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(id.clone()),
            "{method} {path}: {id} is not unique"
        );
    }
    let mut links = 0;
    for (_, _, op) in operations(&doc) {
        for response in op["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flat_map(|l| l.values())
            {
                let target = link["operationId"].as_str().unwrap();
                assert!(ids.contains(target), "link to {target}");
                links += 1;
            }
        }
    }
    assert!(links >= 8);
}

/// A body that may be empty is optional, never `null` (which would be a `400`).
#[test]
fn optional_bodies_are_not_nullable() {
    let doc = document();
    for (path, schema) in [
        ("/manual-whatsapp/send-reminders", "SendReminders"),
        ("/ops/jobs/requeue", "BulkRequeueRequest"),
    ] {
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert_eq!(body["required"], false, "{path}");
        assert_eq!(
            body["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{path}"
        );
    }
    assert_eq!(
        doc["paths"]["/ops/purge"]["post"]["requestBody"]["required"],
        true
    );
}

#[test]
fn every_reference_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 100);
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} is missing"
        );
    }
}

/// Annotations cannot name constants: the numbers and patterns they repeat are the code's.
#[test]
fn documented_constraints_are_the_codes() {
    use crate::{manual, messages::request};
    let doc = document();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let prop = |name: &str, field: &str, key: &str| schema(name)["properties"][field][key].clone();
    let send = "SendRequest";
    assert_eq!(prop(send, "body", "maxLength"), request::MAX_BODY_CHARS);
    assert_eq!(prop(send, "delay", "maximum"), request::MAX_DELAY_SECS);
    assert_eq!(prop(send, "ttl_seconds", "maximum"), request::MAX_TTL_SECS);
    assert_eq!(prop(send, "respect_window", "type")[0], "boolean");
    assert_eq!(prop(send, "file", "maxLength"), request::MAX_FILE_URL_CHARS);
    let file_url = &doc["paths"]["/whatsapp/send-with-file"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "file_url")
        .unwrap()["schema"];
    assert_eq!(file_url["maxLength"], request::MAX_FILE_URL_CHARS);
    assert_eq!(
        prop("NewRecord", "customer_name", "maxLength"),
        manual::MAX_NAME
    );
    assert_eq!(prop("NewRecord", "nopol", "maxLength"), manual::MAX_NOPOL);
    assert_eq!(prop("NewRecord", "notes", "maxLength"), manual::MAX_NOTES);
    assert_eq!(
        prop("RecordChanges", "customer_name", "maxLength"),
        manual::MAX_NAME
    );
    assert_eq!(
        prop("RecordChanges", "nopol", "maxLength"),
        manual::MAX_NOPOL
    );
    assert_eq!(
        prop("CustomMessage", "message", "maxLength"),
        manual::MAX_CUSTOM_MESSAGE
    );
    assert_eq!(
        prop("CustomerImport", "customers", "maxItems"),
        crate::customers::routes::MAX_IMPORT
    );
    let values = |name: &str| -> Vec<String> {
        serde_json::from_value(schema(name)["enum"].clone()).unwrap()
    };
    assert_eq!(values("QueueName"), crate::ops::QUEUES);
    assert_eq!(
        values("JobStatus"),
        crate::ops::JobState::ALL.map(crate::ops::JobState::as_str)
    );
    assert_eq!(values("SuppressionScope"), ["reminders", "all"]);
    assert_eq!(
        values("SuppressionSource"),
        crate::suppressions::Source::ALL.map(crate::suppressions::Source::as_str)
    );
    assert_eq!(
        values("MessageKind"),
        crate::messages::Kind::ALL.map(crate::messages::Kind::as_str)
    );
    assert_eq!(
        values("Gateway"),
        crate::inbound::Gateway::ALL.map(crate::inbound::Gateway::as_str)
    );
    assert_eq!(
        values("DeliveryStatus"),
        crate::messages::DeliveryStatus::ALL.map(crate::messages::DeliveryStatus::as_str)
    );
    assert_eq!(
        values("DeliveryStatusFilter"),
        crate::messages::read::DeliveryFilter::ALL
            .map(crate::messages::read::DeliveryFilter::as_str)
    );
    assert_eq!(
        prop("SuppressionRequest", "reason", "maxLength"),
        crate::suppressions::MAX_REASON_CHARS
    );
    assert_eq!(
        values("ReminderStatus"),
        crate::reminders::routes::REMINDER_STATUSES
    );

    // Every phone number the API reads is documented with the parser's pattern.
    let phone = crate::messages::phone::PHONE_PATTERN;
    let mut seen = 0;
    for (s, field) in [
        ("SendRequest", "to"),
        ("NewRecord", "no_hp"),
        ("RecordChanges", "no_hp"),
        ("CustomMessage", "no_hp"),
        ("SuppressionRequest", "phone"),
    ] {
        assert_eq!(prop(s, field, "pattern"), phone, "{s}.{field}");
        seen += 1;
    }
    for (_, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["name"] == "phone"
                || p["name"] == "to" && path == "/whatsapp/messages"
                || p["name"] == "from" && path == "/inbound/messages"
            {
                assert_eq!(p["schema"]["pattern"], phone, "{path} {}", p["name"]);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 5 + 8, "phone fields and parameters checked");
    // StarSender's `from`: the same, or followed by a WhatsApp address' domain.
    let number = phone.strip_suffix(r"\s*$").unwrap();
    assert_eq!(
        prop("StarSenderInbound", "from", "pattern"),
        format!(r"{number}\s*(?:@(?:s\.whatsapp\.net|c\.us)\s*)?$")
    );

    let mut job_ids = 0;
    for (_, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            if path.starts_with("/ops/jobs") && (p["name"] == "id" || p["name"] == "cursor") {
                assert_eq!(p["schema"]["pattern"], crate::ops::JOB_ID_PATTERN, "{path}");
                job_ids += 1;
            }
        }
    }
    assert_eq!(job_ids, 4, "job id parameters checked");
}

/// What an error renders is what [`ErrorEnvelope`] documents.
#[tokio::test]
async fn errors_render_the_documented_envelope() {
    use axum::response::IntoResponse;

    use crate::error::{AppError, FieldError};
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorEnvelope"];
    let known: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let required: Vec<String> = serde_json::from_value(schema["required"].clone()).unwrap();
    for error in [
        AppError::NotFound("x".into()),
        AppError::Validation(vec![FieldError::new("to", "is required")]),
        AppError::RateLimited {
            retry_after_secs: 3,
        },
    ] {
        let response = error.into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let body = body.as_object().unwrap();
        assert!(body.keys().all(|k| known.contains(&k)), "{body:?}");
        assert!(required.iter().all(|k| body.contains_key(k)), "{body:?}");
        assert_eq!(body["success"], false);
        assert_eq!(body["data"], serde_json::json!({}));
    }
}

/// Two types documented under one schema name: utoipa keeps one of them silently, and every
/// operation of the other documents the wrong body (a `Preview` of segments once replaced the
/// templates' one). Each `ToSchema` type's name — or its `#[schema(as = …)]` — is unique.
#[test]
fn no_two_documented_types_share_a_schema_name() {
    fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    let mut clashes = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // The attributes above an item: a derive with ToSchema, maybe `schema(as = Name)`.
        let mut attrs = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[") || (!attrs.is_empty() && !line.starts_with("pub ")) {
                attrs.push_str(line);
                continue;
            }
            let item = line
                .strip_prefix("pub struct ")
                .or_else(|| line.strip_prefix("pub enum "));
            if let Some(item) = item
                && attrs.contains("ToSchema")
            {
                let own: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let name = attrs
                    .split("schema(as = ")
                    .nth(1)
                    .map(|rest| {
                        rest.chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect()
                    })
                    .unwrap_or(own);
                let at = file.display().to_string();
                if let Some(first) = seen.insert(name.clone(), at.clone()) {
                    clashes.push(format!("{name}: {first} and {at}"));
                }
            }
            attrs.clear();
        }
    }
    assert!(clashes.is_empty(), "{clashes:#?}");
    assert!(seen.len() > 50, "the scan found only {} types", seen.len());
}
