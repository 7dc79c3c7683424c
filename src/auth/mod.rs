//! Who is calling: API keys and JWT bearer tokens, checked against the scope each route needs,
//! and rate limits per principal. Built once from [`AuthConfig`]; absent when auth is off, so
//! an open server pays nothing for it.

pub mod jwt;
pub mod keys;
mod limits;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};

use crate::config::AuthConfig;
use keys::ApiKeys;
use limits::{Limit, SubjectLimits};

/// What a credential may do. `admin` is reserved for the model-control routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Predict,
    Read,
    Admin,
    Metrics,
}

impl Scope {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "predict" => Some(Self::Predict),
            "read" => Some(Self::Read),
            "admin" => Some(Self::Admin),
            "metrics" => Some(Self::Metrics),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::Read => "read",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The known names among `names`; others are ignored (tokens may carry other services' scopes).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().filter_map(Scope::parse).fold(Self::default(), |set, scope| set.with(scope))
    }

    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

/// An accepted caller: an API key's name or a token's subject, with what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    /// `key` or `jwt`.
    pub kind: &'static str,
    pub scopes: Scopes,
    limit: Limit,
}

/// Why a request was turned away; `reason` is the `inferd_auth_failures_total` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No credential, or a header that carries none we can use (`Authorization: Basic ...`).
    Missing,
    Malformed,
    UnknownKey,
    InvalidSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    InvalidToken,
    Forbidden(Scope),
    RateLimited {
        principal: Arc<str>,
        retry_after: Duration,
    },
}

impl Failure {
    /// Every reason, for registering the counter's series up front.
    pub const REASONS: [&'static str; 11] = [
        "missing",
        "malformed",
        "unknown_key",
        "invalid_signature",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "invalid_token",
        "forbidden",
        "rate_limited",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// What the client is told; never the credential.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => {
                "a credential is required: send `Authorization: Bearer <token or key>` or `x-api-key: <key>`"
            }
            Self::Malformed => "the Authorization header is not `Bearer <credential>`",
            Self::UnknownKey => "the API key is not known",
            Self::InvalidSignature => "the token's signature does not verify",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongAudience => "the token's audience is not accepted",
            Self::WrongIssuer => "the token's issuer is not accepted",
            Self::InvalidToken => "the token is not valid",
            Self::Forbidden(_) | Self::RateLimited { .. } => "",
        }
    }
}

/// The credential of `Authorization: Bearer <credential>`: the scheme in any case, spaces around
/// the credential trimmed.
pub fn bearer(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credential)| credential.trim())
        .filter(|credential| !credential.is_empty())
}

/// The credentials this server accepts.
pub struct Authenticator {
    keys: ApiKeys,
    jwt: Option<jwt::Verifier>,
    subjects: Option<SubjectLimits>,
    pub public_docs: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("api_keys", &self.keys.len()).field("jwt", &self.jwt.is_some()).finish()
    }
}

impl Authenticator {
    /// `None` when no credential source is configured: every route stays open.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let jwt = jwt::Verifier::from_config(config)?;
        let subjects = config.jwt.as_ref().and_then(|j| j.rate_limit).map(|limit| SubjectLimits::new(&limit));
        Ok(Some(Self { keys: ApiKeys::from_config(&config.api_keys), jwt, subjects, public_docs: config.public_docs }))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let jwt = self.jwt.as_ref().map_or_else(|| "no JWT".to_owned(), jwt::Verifier::describe);
        format!("{} API key(s), {jwt}", self.keys.len())
    }

    /// Who sent the request: `Authorization: Bearer <credential>` (a JWT when it looks like
    /// one and tokens are configured, else an API key), or `x-api-key: <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Failure> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            // Proxies disagree on which of two headers counts: neither does here.
            if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
                return Err(Failure::Malformed);
            }
            let value = value.to_str().map_err(|_| Failure::Malformed)?;
            let credential = bearer(value).ok_or(Failure::Malformed)?;
            return match &self.jwt {
                Some(verifier) if jwt::looks_like_jwt(credential) => {
                    let claims = verifier.verify(credential)?;
                    let limit = self.subjects.as_ref().map_or(Limit::None, |_| Limit::Subject);
                    Ok(Principal { name: claims.subject, kind: "jwt", scopes: claims.scopes, limit })
                }
                _ => self.keys.find(credential.as_bytes()),
            };
        }
        match headers.get("x-api-key") {
            Some(key) => self.keys.find(key.as_bytes()),
            None => Err(Failure::Missing),
        }
    }

    /// The principal's rate limit, if it has one.
    pub fn admit(&self, principal: &Principal) -> Result<(), Failure> {
        let wait = match &principal.limit {
            Limit::None => None,
            Limit::Key(bucket) => limits::wait(bucket),
            Limit::Subject => self.subjects.as_ref().and_then(|s| s.wait(&principal.name)),
        };
        match wait {
            None => Ok(()),
            Some(retry_after) => Err(Failure::RateLimited { principal: principal.name.clone(), retry_after }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyConfig, RateLimitConfig, Secret};
    use axum::http::HeaderValue;

    fn with_key(key: &str, scopes: &[&str], rate_limit: Option<RateLimitConfig>) -> Authenticator {
        let config = AuthConfig {
            api_keys: vec![ApiKeyConfig {
                name: "app".into(),
                sha256: keys::sha256_hex(key.as_bytes()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                rate_limit,
            }],
            ..AuthConfig::default()
        };
        Authenticator::from_config(&config).unwrap().expect("auth on")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn keys_are_read_from_either_header_and_unknown_ones_refused() {
        let auth = with_key("k-123", &["predict"], None);
        let p = auth.authenticate(&headers(&[("authorization", "Bearer k-123")])).unwrap();
        assert_eq!((&*p.name, p.scopes.contains(Scope::Predict), p.scopes.contains(Scope::Read)), ("app", true, false));
        assert!(auth.authenticate(&headers(&[("authorization", "bearer  k-123 ")])).is_ok());
        assert!(auth.authenticate(&headers(&[("x-api-key", "k-123")])).is_ok());
        assert_eq!(auth.authenticate(&headers(&[("x-api-key", "k-124")])).unwrap_err(), Failure::UnknownKey);
        assert_eq!(auth.authenticate(&headers(&[])).unwrap_err(), Failure::Missing);
        assert_eq!(auth.authenticate(&headers(&[("authorization", "Basic YTpi")])).unwrap_err(), Failure::Malformed);
        assert_eq!(auth.authenticate(&headers(&[("authorization", "Bearer ")])).unwrap_err(), Failure::Malformed);
        let mut twice = headers(&[("authorization", "Bearer k-123")]);
        twice.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        assert_eq!(auth.authenticate(&twice).unwrap_err(), Failure::Malformed);
        // A JWT-shaped key is still a key when no tokens are configured.
        assert_eq!(auth.authenticate(&headers(&[("authorization", "Bearer a.b.c")])).unwrap_err(), Failure::UnknownKey);
    }

    #[test]
    fn a_key_over_its_rate_limit_is_told_when_to_retry() {
        let auth = with_key("k", &["read"], Some(RateLimitConfig { per_second: 0.5, burst: 2 }));
        let p = auth.authenticate(&headers(&[("x-api-key", "k")])).unwrap();
        assert!(auth.admit(&p).is_ok());
        assert!(auth.admit(&p).is_ok());
        match auth.admit(&p).unwrap_err() {
            Failure::RateLimited { principal, retry_after } => {
                assert_eq!(&*principal, "app");
                assert!(
                    retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_secs(2),
                    "{retry_after:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_is_absent_without_a_credential_source() {
        assert!(Authenticator::from_config(&AuthConfig::default()).unwrap().is_none());
        let hs = AuthConfig { jwt_secret: Some(Secret("s".into())), ..AuthConfig::default() };
        assert!(Authenticator::from_config(&hs).unwrap().is_some());
    }

    #[test]
    fn scope_sets_ignore_names_they_do_not_know() {
        let set = Scopes::from_names(["read", "write", "metrics"]);
        assert!(set.contains(Scope::Read) && set.contains(Scope::Metrics));
        assert!(!set.contains(Scope::Predict) && !set.contains(Scope::Admin));
    }
}

/// Who made the request, once access control accepted a credential: a request extension for
/// handlers and a response extension for the access log.
#[derive(Debug, Clone)]
pub struct Caller {
    /// A key's name, a token's subject.
    pub name: Arc<str>,
    /// `key`, `jwt` or `metrics_token`, so that a key and a subject of the same name differ.
    pub kind: &'static str,
}
