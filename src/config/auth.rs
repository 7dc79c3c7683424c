//! Configuration of who may call the service: API keys, JWT bearer tokens, rate limits, CORS.
//! Secrets never come from the file: keys are stored as their SHA-256, the HS256 secret is
//! read from the environment only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use validator::{Validate, ValidationError};

use super::Secret;

/// Where the HS256 secret comes from; never the file.
pub const JWT_SECRET_ENV: &str = "INFERD_JWT_SECRET";
/// API keys added by the environment, for platforms configured by variables:
/// `name:scope+scope:sha256hex,...`.
pub const API_KEYS_ENV: &str = "INFERD_API_KEYS";

/// The scopes a credential may carry.
pub const SCOPES: [&str; 4] = ["predict", "read", "admin", "metrics"];

/// Access control. It is on once a credential can be checked (an API key, a JWT key file, or
/// `INFERD_JWT_SECRET`); with none, every route is open.
#[derive(Debug, Clone, Default, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `/docs` and `/openapi.json` open to everyone; otherwise they need `read`.
    pub public_docs: bool,
    /// API keys; `INFERD_API_KEYS` (`name:scope+scope:sha256hex,...`) adds more. `inferd key
    /// new` prints a fresh key with its entry.
    #[validate(nested)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// JWT bearer tokens from an identity provider. A table without a key source (`public_key`,
    /// `jwks_file` or `INFERD_JWT_SECRET`) is refused at start.
    #[validate(nested)]
    pub jwt: Option<JwtConfig>,
    /// HS256 secret, from `INFERD_JWT_SECRET` only.
    #[serde(skip)]
    pub jwt_secret: Option<Secret>,
}

impl AuthConfig {
    /// Auth is on once any credential can be checked; otherwise every route stays open.
    pub fn enabled(&self) -> bool {
        !self.api_keys.is_empty()
            || self.jwt_secret.is_some()
            || self.jwt.as_ref().is_some_and(|j| j.public_key.is_some() || j.jwks_file.is_some())
    }
}

/// An API key, sent as `Authorization: Bearer <key>` or `x-api-key: <key>`.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The principal's name, as logged: 1 to 64 of `A-Z a-z 0-9 _ - .`.
    #[validate(custom(function = "principal_name"))]
    pub name: String,
    /// SHA-256 of the key, 64 hex digits; the key itself is never stored.
    #[validate(custom(function = "sha256_hex"))]
    pub sha256: String,
    /// What the key may do, at least one of `predict`, `read`, `admin` and `metrics`.
    #[validate(custom(function = "known_scopes"))]
    pub scopes: Vec<String>,
    /// The key's rate limit; unset, none.
    #[validate(nested)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// A rate limit, kept by each replica: `burst` requests at once, then `per_second` on average.
/// Beyond it, 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second on average, above 0.
    #[validate(range(exclusive_min = 0.0, max = 1000000.0))]
    pub per_second: f64,
    /// Requests that may go at once.
    #[validate(range(min = 1, max = 1000000))]
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// When set, a token's `iss` must be there and equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be there and be or contain it.
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    #[validate(range(max = 300))]
    pub leeway_seconds: u64,
    /// RS256 (RSA) or ES256 (P-256) public key, PEM.
    pub public_key: Option<PathBuf>,
    /// A JSON Web Key Set file; a token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the subject's roles (a list of names).
    #[validate(length(min = 1))]
    pub roles_claim: String,
    /// Scopes each role grants: `analyst = ["predict", "read"]`.
    #[validate(custom(function = "role_scopes"))]
    pub roles: BTreeMap<String, Vec<String>>,
    /// The rate limit of each token subject (`sub`); unset, none.
    #[validate(nested)]
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway_seconds: 30,
            public_key: None,
            jwks_file: None,
            roles_claim: "roles".into(),
            roles: BTreeMap::new(),
            rate_limit: None,
        }
    }
}

/// Calls from browser apps on other origins. Without this table no CORS header is sent, so
/// browsers block such calls.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed, as scheme and host (`https://app.example.com`: no path, no wildcard),
    /// or `["*"]` for any.
    #[validate(length(min = 1), custom(function = "origins"))]
    pub allow_origins: Vec<String>,
    /// Request headers a browser may send.
    #[validate(length(min = 1))]
    pub allow_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer, in seconds.
    #[validate(range(max = 86400))]
    pub max_age_seconds: u64,
    /// Let browsers send cookies and credentials; not with `allow_origins = ["*"]`.
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_headers: ["content-type", "authorization", "x-api-key", "x-request-id", "x-request-timeout-ms"]
                .map(String::from)
                .into(),
            max_age_seconds: 600,
            allow_credentials: false,
        }
    }
}

impl CorsConfig {
    pub fn any_origin(&self) -> bool {
        self.allow_origins.iter().any(|o| o == "*")
    }
}

/// Parses `INFERD_API_KEYS`: `name:scope+scope:sha256hex`, comma-separated.
pub fn parse_env_keys(text: &str) -> Result<Vec<ApiKeyConfig>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let parts: Vec<&str> = entry.split(':').collect();
            let [name, scopes, sha256] = parts[..] else {
                return Err(format!("{API_KEYS_ENV}: entry {} is not name:scope+scope:sha256hex", i + 1));
            };
            let key = ApiKeyConfig {
                name: name.into(),
                sha256: sha256.into(),
                scopes: scopes.split('+').filter(|s| !s.is_empty()).map(String::from).collect(),
                rate_limit: None,
            };
            key.validate().map_err(|e| format!("{API_KEYS_ENV}: entry {} ('{name}'): {e}", i + 1))?;
            Ok(key)
        })
        .collect()
}

fn principal_name(name: &str) -> Result<(), ValidationError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(())
        .ok_or_else(|| ValidationError::new("name").with_message("must be 1 to 64 of A-Z a-z 0-9 _ - .".into()))
}

fn sha256_hex(hex: &str) -> Result<(), ValidationError> {
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(())
        .ok_or_else(|| ValidationError::new("sha256").with_message("must be the key's SHA-256 as 64 hex digits".into()))
}

fn known_scopes(scopes: &[String]) -> Result<(), ValidationError> {
    match scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        None if !scopes.is_empty() => Ok(()),
        None => Err(ValidationError::new("scopes").with_message("at least one scope is needed".into())),
        Some(unknown) => Err(ValidationError::new("scopes").with_message(
            format!("unknown scope '{}'; scopes are {}", crate::error::clip(unknown), SCOPES.join(", ")).into(),
        )),
    }
}

fn role_scopes(roles: &BTreeMap<String, Vec<String>>) -> Result<(), ValidationError> {
    roles.values().try_for_each(|scopes| known_scopes(scopes))
}

fn origins(origins: &[String]) -> Result<(), ValidationError> {
    for origin in origins {
        let ok = origin == "*"
            || (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && !origin.contains('*')
                && origin.parse::<axum::http::HeaderValue>().is_ok();
        if !ok {
            return Err(ValidationError::new("origin").with_message(
                format!(
                    "'{}' is not an origin like https://app.example.com (scheme and host, no path, no wildcard)",
                    crate::error::clip(origin)
                )
                .into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn env_keys_parse_and_name_their_faults() {
        let keys = parse_env_keys(&format!(" app:predict+read:{HASH}, ops:metrics:{HASH} ,")).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].name.as_str(), keys[0].scopes.clone()), ("app", vec!["predict".into(), "read".into()]));
        assert!(parse_env_keys("app:predict").unwrap_err().contains("entry 1 is not name:scope+scope:sha256hex"));
        assert!(parse_env_keys(&format!("app:write:{HASH}")).unwrap_err().contains("unknown scope 'write'"));
        assert!(parse_env_keys("app:read:abc").unwrap_err().contains("64 hex digits"));
        assert!(parse_env_keys("").unwrap().is_empty());
    }

    #[test]
    fn auth_is_on_with_any_key_source() {
        let mut auth = AuthConfig::default();
        assert!(!auth.enabled());
        auth.jwt = Some(JwtConfig::default());
        assert!(!auth.enabled(), "a [auth.jwt] table without a key checks nothing");
        auth.jwt_secret = Some(Secret("s".into()));
        assert!(auth.enabled());
    }
}
