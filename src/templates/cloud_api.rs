//! `PUT /templates/{key}/cloud-api` (SPEC §13 "Templates"): which Meta-approved template sends
//! one of ours on the Cloud API, and how our placeholders fill its parameters.

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};

use super::{Language, placeholders_for};
use crate::{
    error::{AppError, AppResult, FieldError},
    gateway::TemplateCall,
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::{Fields, JsonObject, Path},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

/// The most parameters a mapping may fill.
pub const MAX_PARAMS: usize = 20;

/// A template's Cloud API mapping, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Mapping {
    /// The approved template's name at Meta.
    pub name: String,
    /// Our language → Meta's language code; `id` is required.
    #[sqlx(json)]
    #[schema(value_type = Object, example = json!({"id": "id", "en": "en_US"}))]
    pub languages: BTreeMap<String, String>,
    /// Our placeholders, in the order that fills `{{1}}…{{n}}`.
    pub params: Vec<String>,
    /// Set when Meta refused a send with a template error (`132000`, `132001`), until the
    /// mapping is saved again.
    pub flagged: Option<Flag>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// Why a mapping is flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flag {
    pub code: i32,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// The columns of a [`Mapping`] (over `cloud_api_templates m`), as one jsonb value.
#[macro_export]
macro_rules! cloud_mapping_json {
    () => {
        "jsonb_build_object(
            'name', m.name, 'languages', m.languages, 'params', to_jsonb(m.params),
            'flagged', CASE WHEN m.flagged_at IS NULL THEN NULL ELSE jsonb_build_object(
                'code', m.flagged_code, 'error', m.flagged_error, 'at', m.flagged_at) END,
            'updated_at', m.updated_at, 'updated_by', m.updated_by)"
    };
}

impl Mapping {
    /// The call that sends a message rendered from this template: the language code for
    /// `language` (`id`'s when it has none) and the parameters from the message's values.
    /// `Err` names the first parameter the values lack.
    pub fn call(&self, language: Language, values: &Value) -> Result<TemplateCall, String> {
        let code = self
            .languages
            .get(language.as_str())
            .or_else(|| self.languages.get(Language::Id.as_str()))
            .ok_or_else(|| "the mapping has no language code for `id`".to_owned())?;
        let params = self
            .params
            .iter()
            .map(|name| match values.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(format!("no value for parameter `{name}`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TemplateCall {
            name: self.name.clone(),
            language: code.clone(),
            params,
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/templates/{key}/cloud-api", put(save))
}

/// The body of `PUT /templates/{key}/cloud-api`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"name": "service_reminder", "languages": {"id": "id", "en": "en_US"}, "params": ["nama", "no_pol", "tanggal"]}))]
#[allow(dead_code)]
pub struct MappingChange {
    /// The approved template's name: lowercase letters, digits and `_`, up to 512.
    #[schema(min_length = 1, max_length = 512, pattern = "^[a-z0-9_]+$")]
    name: String,
    /// Our language (`id` required, `en` optional) → Meta's language code (`id`, `en_US`, …).
    #[schema(value_type = Object)]
    languages: BTreeMap<String, String>,
    /// Our placeholders, in the order that fills `{{1}}…{{n}}` (at most 20; may be empty).
    #[schema(max_items = 20)]
    params: Option<Vec<String>>,
}

/// Maps a template to an approved Meta template (role `ops`); saving clears a flag. `404` for
/// a template that does not exist; `422` names an unknown placeholder or language.
#[utoipa::path(put, path = "/templates/{key}/cloud-api", operation_id = "map_template_cloud_api", tag = "templates",
    params(("key" = String, Path, description = "an existing template's key")),
    request_body = MappingChange,
    responses((status = 200, description = "The mapping", body = Envelope<Mapping>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Invalid, TooLarge, BodyTimeout, Unavailable),
    security(("bearer" = [])))]
pub async fn save(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(key): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Mapping>> {
    let mut f = Fields::new(&body);
    let name = f.required_str("name");
    let params = f.optional_array("params").unwrap_or_default();
    let mut errors = f.errors;
    if let Some(name) = name
        && (name.is_empty()
            || name.len() > 512
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 512 lowercase letters, digits and `_` (Meta's template name)",
        ));
    }
    let languages = languages(body.get("languages"), &mut errors);
    let allowed = placeholders_for(&key);
    if params.len() > MAX_PARAMS {
        errors.push(FieldError::new("params", format!("at most {MAX_PARAMS}")));
    }
    let mut names = Vec::new();
    for (i, p) in params.iter().enumerate() {
        match p.as_str() {
            Some(p) if allowed.contains(&p) => names.push(p.to_owned()),
            Some(p) => errors.push(FieldError::new(
                format!("params[{i}]"),
                format!("unknown placeholder `{p}`; allowed: {}", allowed.join(", ")),
            )),
            None => errors.push(FieldError::new(format!("params[{i}]"), "must be a string")),
        }
    }
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let saved: Option<Json<Mapping>> = sqlx::query_scalar(concat!(
        "WITH m AS (
            INSERT INTO cloud_api_templates AS c (key, name, languages, params, updated_by)
            SELECT key, $2, $3, $4, $5 FROM templates WHERE key = $1
            ON CONFLICT (key) DO UPDATE SET name = $2, languages = $3, params = $4,
                updated_by = $5, updated_at = now(),
                flagged_code = NULL, flagged_error = NULL, flagged_at = NULL
            RETURNING c.*)
         SELECT ",
        cloud_mapping_json!(),
        " FROM m"
    ))
    .bind(&key)
    .bind(name)
    .bind(Json(&languages))
    .bind(&names)
    .bind(&caller.sub)
    .fetch_optional(&state.pool)
    .await?;
    let Json(mapping) = saved.ok_or_else(|| AppError::NotFound(format!("no template {key:?}")))?;
    tracing::info!(
        key,
        name = mapping.name,
        by = caller.sub,
        "Cloud API template mapped"
    );
    Ok(Reply::ok(mapping, format!("Template {key} maps to {name}")))
}

/// `languages`: an object of our language → a Meta code (letters and `_`, up to 16).
fn languages(raw: Option<&Value>, errors: &mut Vec<FieldError>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(map)) = raw else {
        errors.push(FieldError::new(
            "languages",
            "is required: an object like {\"id\": \"id\", \"en\": \"en_US\"}",
        ));
        return out;
    };
    for (ours, code) in map {
        let field = format!("languages.{ours}");
        if Language::parse(ours).is_none() {
            errors.push(FieldError::new(field, Language::MESSAGE));
            continue;
        }
        match code.as_str() {
            Some(c)
                if !c.is_empty()
                    && c.len() <= 16
                    && c.chars().all(|ch| ch.is_ascii_alphabetic() || ch == '_') =>
            {
                out.insert(ours.clone(), c.to_owned());
            }
            _ => errors.push(FieldError::new(
                field,
                "must be a language code like `id` or `en_US`",
            )),
        }
    }
    if !map.contains_key(Language::Id.as_str()) {
        errors.push(FieldError::new("languages.id", "is required"));
    }
    out
}

/// Flags the mapping of `key` after Meta refused a send with a template error.
/// The skip reason of every reminder of a pass whose template (`key`) has no Meta mapping
/// while the Cloud API sends (SPEC §13): such a reminder could not be sent.
pub const NO_TEMPLATE: &str = "no cloud_api template";

/// [`NO_TEMPLATE`] when `gateway` is the Cloud API and template `key` is not mapped.
pub async fn unsendable(
    db: impl PgExecutor<'_>,
    gateway: crate::gateway::settings::GatewayKind,
    key: &str,
) -> sqlx::Result<Option<String>> {
    if gateway != crate::gateway::settings::GatewayKind::CloudApi {
        return Ok(None);
    }
    let mapped: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cloud_api_templates WHERE key = $1)")
            .bind(key)
            .fetch_one(db)
            .await?;
    Ok((!mapped).then(|| NO_TEMPLATE.to_owned()))
}

pub async fn flag(db: impl PgExecutor<'_>, key: &str, code: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE cloud_api_templates SET flagged_code = $2, flagged_error = $3, flagged_at = now()
         WHERE key = $1",
    )
    .bind(key)
    .bind(i32::try_from(code).unwrap_or(i32::MAX))
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Every mapping, by template key (a send run looks its message's up).
pub async fn all(db: impl PgExecutor<'_>) -> sqlx::Result<BTreeMap<String, Mapping>> {
    let rows: Vec<(String, Json<Mapping>)> = sqlx::query_as(concat!(
        "SELECT m.key, ",
        cloud_mapping_json!(),
        " FROM cloud_api_templates m"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(k, Json(m))| (k, m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_fills_parameters_in_order_in_the_recipient_s_language() {
        let mapping = Mapping {
            name: "service_reminder".into(),
            languages: [("id".into(), "id".into()), ("en".into(), "en_US".into())].into(),
            params: vec!["nama".into(), "no_pol".into(), "hari".into()],
            flagged: None,
            updated_at: Utc::now(),
            updated_by: "ops".into(),
        };
        let values =
            serde_json::json!({"no_pol": "B 1 X", "nama": "Budi", "hari": 2, "model": "x"});
        let call = mapping.call(Language::En, &values).unwrap();
        assert_eq!(call.language, "en_US");
        assert_eq!(call.params, ["Budi", "B 1 X", "2"]);
        let only_id = Mapping {
            languages: [("id".into(), "id".into())].into(),
            ..mapping.clone()
        };
        assert_eq!(only_id.call(Language::En, &values).unwrap().language, "id");
        let err = mapping
            .call(Language::Id, &serde_json::json!({"nama": "Budi"}))
            .unwrap_err();
        assert!(err.contains("no_pol"), "{err}");
    }
}
