//! `/templates` (README "Templates"): read with any valid token, saved with role `ops`, and
//! previewed without sending anything.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Language, Subject, Workshop, repo};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::{Caller, OpsCaller},
        envelope::{Envelope, Reply},
        extract::{Fields, JsonObject, Path},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    reminders::{business_date, calendar},
    state::AppState,
};

/// The longest body a template may have (WhatsApp's own limit is far above a reminder).
pub const MAX_BODY_CHARS: usize = 4_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list))
        .route("/templates/{key}", get(one).put(save))
        .route("/templates/{key}/preview", post(preview))
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn not_found(key: &str) -> AppError {
    AppError::NotFound(format!("no template {key:?}"))
}

/// Every template with its versions (newest first) and the placeholders it may use. Any valid
/// token.
#[utoipa::path(get, path = "/templates", operation_id = "list_templates", tag = "templates",
    responses((status = 200, description = "Every template", body = Envelope<Vec<repo::Template>>),
        Unauthorized, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
) -> AppResult<Reply<Vec<repo::Template>>> {
    let all = repo::list(&state.pool).await?;
    let n = all.len();
    Ok(Reply::ok(all, format!("{n} template(s)")))
}

/// One template: its current bodies, its versions and its placeholders. Any valid token.
#[utoipa::path(get, path = "/templates/{key}", operation_id = "get_template", tag = "templates",
    params(("key" = String, Path, description = "`maintenance_reminder`, `manual_reminder` or a custom key")),
    responses((status = 200, description = "The template", body = Envelope<repo::Template>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<AppState>,
    _: Caller,
    Path(key): Path<String>,
) -> AppResult<Reply<repo::Template>> {
    let t = repo::get(&state.pool, &key)
        .await?
        .ok_or_else(|| not_found(&key))?;
    Ok(Reply::ok(t, "Template"))
}

/// The body of `PUT /templates/{key}`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"body": "Halo {salutation} {nama}, kendaraan {no_pol} jatuh tempo servis pada {tanggal}. Hubungi {service_phone}.", "language": "id"}))]
#[allow(dead_code)]
pub struct TemplateChange {
    /// The text, with `{placeholder}`s the template allows (`{{` and `}}` for braces); 1 to
    /// 4,000 characters.
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    body: String,
    /// Which body this is: `id` (default) or `en`. A new custom template starts with `id`.
    language: Option<Language>,
}

/// A saved version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SavedTemplate {
    key: String,
    #[serde(flatten)]
    version: repo::Version,
}

/// Saves a new version of a template (role `ops`): the given language's body changes, the
/// other is carried over. A key that does not exist yet is a new custom template. `422` names
/// every unknown placeholder; the reminder passes use the new version from their next run.
#[utoipa::path(put, path = "/templates/{key}", operation_id = "save_template", tag = "templates",
    params(("key" = String, Path, description = "a built-in key, or a new/custom one: lowercase letters, digits and `_`, starting with a letter, up to 64")),
    request_body = TemplateChange,
    responses((status = 200, description = "A new version", body = Envelope<SavedTemplate>),
        (status = 201, description = "A new custom template, version 1", body = Envelope<SavedTemplate>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, Invalid, TooLarge, BodyTimeout, Unavailable),
    security(("bearer" = [])))]
pub async fn save(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(key): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<SavedTemplate>> {
    let mut f = Fields::new(&body);
    let text = f.required_str("body");
    let language = f.optional_str("language");
    let mut errors = f.errors;
    if !valid_key(&key) {
        errors.push(FieldError::new(
            "key",
            "must be lowercase letters, digits and `_`, starting with a letter, at most 64",
        ));
    }
    let language = match language {
        None => Language::Id,
        Some(raw) => Language::parse(raw).unwrap_or_else(|| {
            errors.push(FieldError::new("language", Language::MESSAGE));
            Language::Id
        }),
    };
    errors.extend(text.and_then(|t| body_error(&key, t)));
    let Some(text) = text.filter(|_| errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    match repo::save(&state.pool, &key, language, text, &caller.sub).await? {
        repo::Saved::NeedsIndonesian => Err(AppError::Validation(vec![FieldError::new(
            "language",
            "a new template starts with its Indonesian (`id`) body",
        )])),
        repo::Saved::Version { version, created } => {
            tracing::info!(
                key,
                version = version.version,
                by = caller.sub,
                language = language.as_str(),
                "template saved"
            );
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let message = format!("Template {key} version {}", version.version);
            Ok(Reply(status, SavedTemplate { key, version }, message))
        }
    }
}

/// The body of `POST /templates/{key}/preview` (all optional).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"vehicle_id": "0193a4b2-7c1e-7d4a-9f00-2b1c3d4e5f60", "language": "en", "body": "Hello {salutation} {nama}, your {no_pol} is due on {tanggal}."}))]
#[allow(dead_code)]
pub struct PreviewRequest {
    /// An unsaved text to render instead of the saved body (what an editor shows before
    /// Save); checked as `PUT` checks it: 1 to 4,000 characters, only the template's
    /// placeholders, else `422` on `body`. Nothing is saved.
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    body: Option<String>,
    /// `maintenance_reminder`: the customer (with their first vehicle unless `vehicle_id`).
    #[schema(format = Uuid)]
    customer_id: Option<String>,
    /// `maintenance_reminder`: the vehicle (and its customer).
    #[schema(format = Uuid)]
    vehicle_id: Option<String>,
    /// `manual_reminder`: the manual record.
    #[schema(format = Uuid)]
    manual_id: Option<String>,
    /// Render this language's body, with its month names, instead of the recipient's (`id` or
    /// `en`): what a recipient of that language would get.
    language: Option<Language>,
    /// Placeholder values (strings), over anything taken from a record; the only source for
    /// custom templates.
    values: Option<std::collections::HashMap<String, String>>,
}

/// What a preview renders.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Preview {
    key: String,
    /// The current version (with `body`: the version the unsaved text would follow).
    version: i32,
    language: Language,
    /// The text as it would be sent.
    text: String,
    /// Placeholders the body uses that had no value (rendered as nothing).
    missing: Vec<String>,
}

fn uuid_field(f: &mut Fields<'_>, name: &str) -> Option<Uuid> {
    let raw = f.optional_str(name)?;
    match Uuid::parse_str(raw.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            f.errors.push(FieldError::new(name, "must be a UUID"));
            None
        }
    }
}

#[derive(sqlx::FromRow)]
struct VehicleRow {
    nama: Option<String>,
    salutation: Option<String>,
    language: String,
    no_pol: Option<String>,
    model: Option<String>,
    next_visit_date: Option<NaiveDate>,
    last_visit_date: Option<NaiveDate>,
}

#[derive(sqlx::FromRow)]
struct ManualRow {
    customer_name: String,
    salutation: Option<String>,
    language: String,
    nopol: String,
    next_service: Option<NaiveDate>,
    last_service: Option<NaiveDate>,
}

/// Renders a template for a customer, a vehicle, a manual record or given values, exactly as a
/// reminder would be (the recipient's salutation and language, the due date by the calendar's
/// rule, `hari` counted from today). `body` renders an unsaved text instead of the saved one
/// (the ops page's live preview). Nothing is stored or sent. Any valid token. A rendered text
/// over 4,096 characters is a `422`: on `body` for an unsaved text, else on `template`.
#[utoipa::path(post, path = "/templates/{key}/preview", operation_id = "preview_template", tag = "templates",
    params(("key" = String, Path, description = "the template")),
    request_body = PreviewRequest,
    responses((status = 200, description = "The rendered text", body = Envelope<Preview>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Invalid, TooLarge, BodyTimeout, Unavailable),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    _: Caller,
    Path(key): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Preview>> {
    let mut f = Fields::new(&body);
    let customer_id = uuid_field(&mut f, "customer_id");
    let vehicle_id = uuid_field(&mut f, "vehicle_id");
    let manual_id = uuid_field(&mut f, "manual_id");
    let language = f.optional_str("language");
    let draft = f.optional_str("body");
    let mut errors = f.errors;
    if let Some(e) = draft.and_then(|text| body_error(&key, text)) {
        errors.push(e);
    }
    let language = language.and_then(|raw| {
        let l = Language::parse(raw);
        if l.is_none() {
            errors.push(FieldError::new("language", Language::MESSAGE));
        }
        l
    });
    let mut given = super::Values::new();
    match body.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => given = values(map, &key, &mut errors),
        Some(_) => errors.push(FieldError::new(
            "values",
            "must be an object of placeholder values",
        )),
    }
    let builtin = [super::MAINTENANCE, super::MANUAL].contains(&key.as_str());
    for (name, set) in [
        ("customer_id", customer_id.is_some()),
        ("vehicle_id", vehicle_id.is_some()),
        ("manual_id", manual_id.is_some()),
    ] {
        let fits = match key.as_str() {
            super::MAINTENANCE => name != "manual_id",
            super::MANUAL => name == "manual_id",
            _ => false,
        };
        if set && !fits {
            let why = if builtin {
                format!("does not apply to {key}")
            } else {
                "custom templates take `values` only".to_owned()
            };
            errors.push(FieldError::new(name, why));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let current = super::repo::current(&state.pool, &key)
        .await?
        .ok_or_else(|| not_found(&key))?;
    let config = &state.config;
    let workshop = Workshop {
        service_phone: config.service_phone.clone(),
        name: config.workshop_name.clone(),
    };
    let today = business_date(config.app_timezone, Utc::now());
    let months = config.service_interval_months;
    let mut values = super::Values::from([
        ("service_phone".to_owned(), workshop.service_phone.clone()),
        ("workshop_name".to_owned(), workshop.name.clone()),
    ]);
    if key == crate::inbound::OPTOUT_CONFIRMATION {
        values.insert(
            "optin_keyword".to_owned(),
            config.inbound.keywords.optin_example().to_owned(),
        );
    }
    values.extend(crate::admin::preview_values_for(&key, config));
    let mut recipient_language = Language::Id;
    if vehicle_id.is_some() || customer_id.is_some() {
        let row: Option<VehicleRow> = sqlx::query_as(
            "SELECT c.nama, c.salutation, c.language, v.no_pol, v.model, v.next_visit_date,
                    v.last_visit_date
             FROM customers c LEFT JOIN vehicles v ON v.customer_id = c.id
             WHERE ($1::uuid IS NULL OR v.id = $1) AND ($2::uuid IS NULL OR c.id = $2)
             ORDER BY v.created_at NULLS LAST, v.id LIMIT 1",
        )
        .bind(vehicle_id)
        .bind(customer_id)
        .fetch_optional(&state.pool)
        .await?;
        let row = row.ok_or_else(|| {
            AppError::NotFound(match vehicle_id {
                Some(v) => format!(
                    "no vehicle {v}{}",
                    customer_id
                        .map(|c| format!(" of customer {c}"))
                        .unwrap_or_default()
                ),
                None => format!("no customer {}", customer_id.unwrap_or_default()),
            })
        })?;
        recipient_language = Language::from_db(&row.language);
        let name = row.nama.unwrap_or_default();
        let due = calendar::due_date(row.next_visit_date, row.last_visit_date, months);
        values.extend(subject_values(
            &name,
            row.salutation.as_deref(),
            language.unwrap_or(recipient_language),
            row.no_pol.as_deref().unwrap_or_default(),
            row.model.as_deref(),
            due.map(|d| d.0),
            today,
            &workshop,
        ));
    }
    if let Some(id) = manual_id {
        let row: ManualRow = sqlx::query_as(
            "SELECT customer_name, salutation, language, nopol, next_service, last_service
             FROM manual_whatsapp WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no manual record {id}")))?;
        recipient_language = Language::from_db(&row.language);
        let due = calendar::due_date(row.next_service, row.last_service, months);
        values.extend(subject_values(
            &row.customer_name,
            row.salutation.as_deref(),
            language.unwrap_or(recipient_language),
            &row.nopol,
            None,
            due.map(|d| d.0),
            today,
            &workshop,
        ));
    }
    let language = language.unwrap_or(recipient_language);
    values.extend(given);
    let body = draft.unwrap_or_else(|| current.bodies.for_language(language));
    // An empty salutation is a value (the name starts with one, or none is wanted).
    let missing: Vec<String> = super::used(body)
        .into_iter()
        .filter(|p| match values.get(p) {
            None => true,
            Some(v) => v.is_empty() && p != "salutation",
        })
        .collect();
    let text = super::render(body, &values);
    // What a pass would skip is refused, not returned: a body of placeholders can render
    // megabytes.
    if let Err(too_long) = super::check_text(&text) {
        return Err(match draft {
            Some(_) => AppError::validation("body", too_long.to_string()),
            None => AppError::validation(
                "template",
                format!("{key} version {} {too_long}", current.version),
            ),
        });
    }
    Ok(Reply::ok(
        Preview {
            key,
            version: current.version,
            language,
            text,
            missing,
        },
        "Preview (nothing sent)",
    ))
}

/// Why `text` cannot be a body of `key` (as `PUT` decides it), as the error on `body`.
fn body_error(key: &str, text: &str) -> Option<FieldError> {
    let n = text.chars().count();
    let why = if n > MAX_BODY_CHARS {
        format!("must be at most {MAX_BODY_CHARS} characters (got {n})")
    } else {
        super::check(key, text).err()?
    };
    Some(FieldError::new("body", why))
}

/// The values a reminder about `no_pol` due on `due` gets (none for the date when there is no
/// due date).
#[allow(clippy::too_many_arguments)]
fn subject_values(
    name: &str,
    salutation: Option<&str>,
    language: Language,
    no_pol: &str,
    model: Option<&str>,
    due: Option<NaiveDate>,
    today: NaiveDate,
    workshop: &Workshop,
) -> super::Values {
    let mut v = super::values(
        &Subject {
            name,
            salutation,
            language,
            no_pol,
            model,
            due: due.unwrap_or(today),
            today,
        },
        workshop,
    );
    if due.is_none() {
        for k in ["tanggal", "tanggal_dmy", "hari"] {
            v.remove(k);
        }
    }
    v
}

/// `values`: strings (numbers are taken as their text) for placeholders the template knows.
fn values(map: &Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> super::Values {
    let allowed = super::placeholders_for(key);
    let mut out = super::Values::new();
    for (name, v) in map {
        let field = format!("values.{name}");
        if !allowed.contains(&name.as_str()) {
            errors.push(FieldError::new(
                field,
                format!(
                    "is not a placeholder of {key}; allowed: {}",
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        match v {
            Value::String(s) if s.chars().count() <= MAX_BODY_CHARS => {
                out.insert(name.clone(), s.clone());
            }
            Value::Number(n) => {
                out.insert(name.clone(), n.to_string());
            }
            _ => errors.push(FieldError::new(
                field,
                format!("must be a string of at most {MAX_BODY_CHARS} characters"),
            )),
        }
    }
    out
}
