//! JWT authentication (README "HTTP API"): HS256, `exp` and `sub` required, `role` = `client` | `ops`.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Client,
    Ops,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Role::Client),
            "ops" => Ok(Role::Ops),
            other => Err(format!("unknown role `{other}` (expected client or ops)")),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub role: Role,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, sub: &str, role: Role, ttl: Duration) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            role,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid token. A refusal says which rule failed in fixed words, never the
    /// parser's (that would echo what the client sent and how we read it).
    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                AppError::Unauthorized(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
                        ErrorKind::InvalidAlgorithm => "token algorithm not accepted (HS256 only)",
                        ErrorKind::InvalidSignature => "token signature is invalid",
                        ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                            "token lacks the `exp` claim"
                        }
                        ErrorKind::MissingRequiredClaim(c) if c == "sub" => {
                            "token lacks the `sub` claim"
                        }
                        _ => "invalid token",
                    }
                    .to_owned(),
                )
            })?;
        // `sub` is stored (created_by, idempotency scope): PostgreSQL text takes no NUL.
        if data.claims.sub.trim().is_empty() || data.claims.sub.contains('\0') {
            return Err(AppError::Unauthorized("invalid token".into()));
        }
        Ok(data.claims)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub sub: String,
    pub role: Role,
}

fn bearer(parts: &Parts) -> Result<Option<&str>, AppError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AppError::Unauthorized("Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(AppError::Unauthorized(
            "expected `Authorization: Bearer <token>`".into(),
        )),
    }
}

/// What the public send endpoints need from the application state.
#[derive(Clone)]
pub struct PublicSends {
    /// `PUBLIC_SEND_ENDPOINTS`.
    pub enabled: bool,
    pub limiter: PublicLimiter,
}

// The extractors ask the state only for what they need (`FromRef`), so that this module does
// not depend on the application state (which holds its keys).
impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Arc<JwtKeys>: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token =
            bearer(parts)?.ok_or_else(|| AppError::Unauthorized("missing bearer token".into()))?;
        let claims = Arc::<JwtKeys>::from_ref(state).verify(token)?;
        Ok(Caller {
            sub: claims.sub,
            role: claims.role,
        })
    }
}

/// A caller with role `ops` (`client` → 403).
pub struct OpsCaller(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for OpsCaller
where
    Arc<JwtKeys>: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Ops {
            return Err(AppError::Forbidden("this endpoint needs role `ops`".into()));
        }
        Ok(OpsCaller(caller))
    }
}

/// The caller of the three query-string send endpoints: a token, or — only with
/// `PUBLIC_SEND_ENDPOINTS=true` — an anonymous client limited per IP.
#[derive(Debug, Clone)]
pub enum SendCaller {
    Token(Caller),
    Public(IpAddr),
}

impl SendCaller {
    /// The `created_by` / idempotency scope of this caller.
    pub fn scope(&self) -> String {
        match self {
            SendCaller::Token(c) => c.sub.clone(),
            SendCaller::Public(_) => "public".to_owned(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SendCaller
where
    Arc<JwtKeys>: FromRef<S>,
    PublicSends: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let public = PublicSends::from_ref(state);
        if bearer(parts)?.is_some() || !public.enabled {
            return Caller::from_request_parts(parts, state)
                .await
                .map(SendCaller::Token);
        }
        let ip = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        public.limiter.check(ip)?;
        Ok(SendCaller::Public(ip))
    }
}

/// Per-client-IP limit for unauthenticated sends (`PUBLIC_SEND_RATE_PER_MINUTE`).
#[derive(Clone)]
pub struct PublicLimiter(Arc<DefaultKeyedRateLimiter<IpAddr>>);

impl PublicLimiter {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self(Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))))
    }

    fn check(&self, ip: IpAddr) -> Result<(), AppError> {
        self.0.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            AppError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })?;
        if self.0.len() > 100_000 {
            self.0.retain_recent();
        }
        Ok(())
    }
}

/// `24h`, `30m`, `7d`, `90s` or plain seconds.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{raw}`"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in `{raw}` (use s, m, h or d)"
            ));
        }
    };
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0").is_err());
    }

    #[test]
    fn issued_tokens_verify_and_keep_their_role() {
        let keys = JwtKeys::new(b"secret");
        let token = keys
            .issue("ops-alice", Role::Ops, Duration::from_secs(60))
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "ops-alice");
        assert_eq!(claims.role, Role::Ops);
        assert!(JwtKeys::new(b"other").verify(&token).is_err());
    }
}
