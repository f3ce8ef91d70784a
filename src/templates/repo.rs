//! `templates` and `template_versions`: every change is a new version; the highest is current.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, types::Json};

use super::{Bodies, Current, Language};

/// One version as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Version {
    pub version: i32,
    #[sqlx(json)]
    pub bodies: Bodies,
    pub created_at: DateTime<Utc>,
    /// The token's `sub` that saved it (`built-in` for the seeded texts).
    pub created_by: String,
}

/// A template with its versions, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Template {
    pub key: String,
    /// `maintenance_reminder` and `manual_reminder` are built in (used by the reminder
    /// passes); other keys are custom.
    pub builtin: bool,
    /// The placeholders its bodies may use.
    pub placeholders: Vec<&'static str>,
    pub current_version: i32,
    /// The current version's bodies.
    pub bodies: Bodies,
    pub versions: Vec<Version>,
    /// The approved Meta template that sends it on the Cloud API (`PUT
    /// /templates/{key}/cloud-api`), if mapped.
    pub cloud_api: Option<super::cloud_api::Mapping>,
}

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    builtin: bool,
    cloud_api: Option<Json<super::cloud_api::Mapping>>,
}

async fn versions(pool: &PgPool, keys: &[String]) -> sqlx::Result<Vec<(String, Version)>> {
    #[derive(sqlx::FromRow)]
    struct KeyedVersion {
        key: String,
        #[sqlx(flatten)]
        version: Version,
    }
    let rows: Vec<KeyedVersion> = sqlx::query_as(
        "SELECT key, version, bodies, created_at, created_by FROM template_versions
         WHERE key = ANY($1) ORDER BY key, version DESC",
    )
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.key, r.version)).collect())
}

fn assemble(rows: Vec<Row>, mut all: Vec<(String, Version)>) -> Vec<Template> {
    rows.into_iter()
        .filter_map(|r| {
            let versions: Vec<Version> = all
                .iter()
                .filter(|(k, _)| *k == r.key)
                .map(|(_, v)| v.clone())
                .collect();
            all.retain(|(k, _)| *k != r.key);
            let current = versions.first()?.clone();
            Some(Template {
                placeholders: super::placeholders_for(&r.key),
                key: r.key,
                builtin: r.builtin,
                cloud_api: r.cloud_api.map(|Json(m)| m),
                current_version: current.version,
                bodies: current.bodies,
                versions,
            })
        })
        .collect()
}

/// Templates with their Cloud API mappings.
macro_rules! rows {
    () => {
        concat!(
            "SELECT t.key, t.builtin, CASE WHEN m.key IS NULL THEN NULL ELSE ",
            crate::cloud_mapping_json!(),
            " END AS cloud_api FROM templates t LEFT JOIN cloud_api_templates m ON m.key = t.key"
        )
    };
}

/// Every template, built-in ones first, then by key.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Template>> {
    let rows: Vec<Row> = sqlx::query_as(concat!(rows!(), " ORDER BY t.builtin DESC, t.key"))
        .fetch_all(pool)
        .await?;
    let keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
    let all = versions(pool, &keys).await?;
    Ok(assemble(rows, all))
}

pub async fn get(pool: &PgPool, key: &str) -> sqlx::Result<Option<Template>> {
    let rows: Vec<Row> = sqlx::query_as(concat!(rows!(), " WHERE t.key = $1"))
        .bind(key)
        .fetch_all(pool)
        .await?;
    let all = versions(pool, &[key.to_owned()]).await?;
    Ok(assemble(rows, all).pop())
}

/// The current version of `key`, as a pass renders with it (on a pool, or on a transaction).
pub async fn current<'e>(
    db: impl sqlx::PgExecutor<'e>,
    key: &str,
) -> sqlx::Result<Option<Current>> {
    let row: Option<(i32, Json<Bodies>)> = sqlx::query_as(
        "SELECT version, bodies FROM template_versions WHERE key = $1
         ORDER BY version DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(version, Json(bodies))| Current {
        key: key.to_owned(),
        version,
        bodies,
    }))
}

/// The current version of each of `keys` that exists, by key (a template send renders with it).
pub async fn current_many(
    pool: &PgPool,
    keys: &[&str],
) -> sqlx::Result<std::collections::HashMap<String, Current>> {
    let rows: Vec<(String, i32, Json<Bodies>)> = sqlx::query_as(
        "SELECT DISTINCT ON (key) key, version, bodies FROM template_versions
         WHERE key = ANY($1) ORDER BY key, version DESC",
    )
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, version, Json(bodies))| {
            let current = Current {
                key: key.clone(),
                version,
                bodies,
            };
            (key, current)
        })
        .collect())
}

/// What a save did.
pub enum Saved {
    /// A new version (`created`: the template itself is new).
    Version { version: Version, created: bool },
    /// A new custom template must start with its Indonesian body.
    NeedsIndonesian,
}

/// Saves `body` as the `language` body of a new version of `key` (the other language's body is
/// carried over from the current version). A new key is a new custom template. Concurrent
/// saves of one key are serialized on its row: versions never collide.
pub async fn save(
    pool: &PgPool,
    key: &str,
    language: Language,
    body: &str,
    by: &str,
) -> sqlx::Result<Saved> {
    let mut tx = pool.begin().await?;
    let created = sqlx::query("INSERT INTO templates (key) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    sqlx::query("SELECT 1 FROM templates WHERE key = $1 FOR UPDATE")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let latest: Option<(i32, Json<Bodies>)> = sqlx::query_as(
        "SELECT version, bodies FROM template_versions WHERE key = $1
         ORDER BY version DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let (next, bodies) = match (latest, language) {
        (Some((v, Json(mut bodies))), Language::Id) => {
            bodies.id = body.to_owned();
            (v + 1, bodies)
        }
        (Some((v, Json(mut bodies))), Language::En) => {
            bodies.en = Some(body.to_owned());
            (v + 1, bodies)
        }
        (None, Language::Id) => (
            1,
            Bodies {
                id: body.to_owned(),
                en: None,
            },
        ),
        (None, Language::En) => {
            tx.rollback().await?;
            return Ok(Saved::NeedsIndonesian);
        }
    };
    let version: Version = sqlx::query_as(
        "INSERT INTO template_versions (key, version, bodies, created_by)
         VALUES ($1, $2, $3, $4)
         RETURNING version, bodies, created_at, created_by",
    )
    .bind(key)
    .bind(next)
    .bind(Json(&bodies))
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Saved::Version { version, created })
}
