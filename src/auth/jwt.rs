//! JWT bearer tokens (crate `jsonwebtoken`): HS256 with the environment's secret, RS256 and
//! ES256 with a PEM public key or a JWKS file. The key is chosen by the token's `alg` (and
//! `kid`), and each key verifies only its own algorithm, so a token cannot pick how it is
//! checked: an HS256 token "signed" with the RSA public key finds no HS256 key, and `alg: none`
//! does not parse. A token whose header names critical extensions (`crit`) is refused: RFC 7515
//! §4.1.6 has a recipient refuse every extension it does not understand, and inferd understands
//! none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{Failure, Scopes};
use crate::config::{AuthConfig, JwtConfig};

/// Tokens verified lately, so that a client sending the same token with every request pays
/// for one signature check (an RS256 one costs tens of microseconds), not one per request. Only
/// tokens up to this long are kept, and at most this many: a full cache is emptied.
const CACHED_TOKEN_BYTES: usize = 4096;
const CACHED_TOKENS: usize = 4096;

/// The longest `sub` accepted. Longer ones are refused rather than cut, since a cut subject
/// would share another's rate limit and log name.
const MAX_SUBJECT_BYTES: usize = 256;

/// What an accepted token says about its bearer.
#[derive(Debug, Clone)]
pub struct Claims {
    pub subject: Arc<str>,
    pub scopes: Scopes,
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct Verifier {
    keys: Vec<Key>,
    settings: JwtConfig,
    /// Keyed by the whole token, so that a token differing in any byte is verified afresh;
    /// with the `exp` that bounds the entry.
    verified: Mutex<HashMap<Box<str>, (Claims, u64)>>,
}

/// Two dots or more: a token (well-formed or not, so that a forged one counts as an invalid
/// token, not an unknown key). API keys, as `inferd key new` makes them, have none.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.bytes().filter(|&b| b == b'.').count() >= 2
}

impl Verifier {
    /// `None` when no key source is configured.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Self>, String> {
        let settings = auth.jwt.clone().unwrap_or_default();
        let mut keys = Vec::new();
        if let Some(secret) = &auth.jwt_secret {
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.0.as_bytes()),
            });
        }
        if let Some(path) = &settings.public_key {
            let pem = std::fs::read(path).map_err(|e| format!("auth.jwt.public_key {}: {e}", path.display()))?;
            let key = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => Key { kid: None, algorithm: Algorithm::RS256, key },
                Err(_) => DecodingKey::from_ec_pem(&pem)
                    .map(|key| Key { kid: None, algorithm: Algorithm::ES256, key })
                    .map_err(|e| {
                        format!("auth.jwt.public_key {}: neither an RSA nor an EC public key: {e}", path.display())
                    })?,
            };
            keys.push(key);
        }
        if let Some(path) = &settings.jwks_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?;
            let set: JwkSet =
                serde_json::from_str(&text).map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))?;
            for jwk in &set.keys {
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
                    // Other key types are left for other services sharing the set.
                    _ => continue,
                };
                // A key meant for encryption, or for another algorithm, does not verify tokens.
                let declared = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
                if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
                    || declared.is_some_and(|a| a != format!("{algorithm:?}"))
                {
                    continue;
                }
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwt.jwks_file {}: a key does not load: {e}", path.display()))?;
                keys.push(Key { kid: jwk.common.key_id.clone(), algorithm, key });
            }
            if !keys.iter().any(|k| k.algorithm != Algorithm::HS256) {
                return Err(format!("auth.jwt.jwks_file {}: no RSA or P-256 key in the set", path.display()));
            }
        }
        Ok((!keys.is_empty()).then_some(Self { keys, settings, verified: Mutex::new(HashMap::new()) }))
    }

    pub fn describe(&self) -> String {
        let mut algorithms: Vec<String> = self.keys.iter().map(|k| format!("{:?}", k.algorithm)).collect();
        algorithms.dedup();
        format!("JWT ({}: {} key(s))", algorithms.join(", "), self.keys.len())
    }

    pub fn verify(&self, token: &str) -> Result<Claims, Failure> {
        let cacheable = token.len() <= CACHED_TOKEN_BYTES;
        let now = jsonwebtoken::get_current_timestamp();
        if cacheable {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((claims, exp)) = verified.get(token) {
                if now <= exp.saturating_add(self.settings.leeway_seconds) {
                    return Ok(claims.clone());
                }
            }
        }
        let (claims, exp) = self.verify_signed(token)?;
        if cacheable {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= CACHED_TOKENS {
                verified.clear();
            }
            verified.insert(token.into(), (claims.clone(), exp));
        }
        Ok(claims)
    }

    /// The signature and every claim checked; the claims and `exp` when the token is good.
    fn verify_signed(&self, token: &str) -> Result<(Claims, u64), Failure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::InvalidToken)?;
        // jsonwebtoken parses `crit` but leaves it to us; an empty list is refused too (the RFC
        // forbids producing one).
        if header.crit.is_some() {
            return Err(Failure::InvalidToken);
        }
        let candidates: Vec<&Key> = self.keys.iter().filter(|k| k.algorithm == header.alg).collect();
        let key = match (&header.kid, candidates.as_slice()) {
            (_, []) => return Err(Failure::InvalidToken),
            (Some(kid), keys) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .or_else(|| keys.iter().find(|k| k.kid.is_none()))
                .ok_or(Failure::InvalidSignature)?,
            (None, [only]) => only,
            // Several keys of this algorithm and no `kid` to choose between them: refused
            // rather than guessed, unless exactly one of them has no `kid` either.
            (None, keys) => match keys.iter().filter(|k| k.kid.is_none()).collect::<Vec<_>>()[..] {
                [only] => only,
                _ => return Err(Failure::InvalidToken),
            },
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        // A configured audience or issuer is required, not only checked when present.
        let mut required = vec!["exp", "sub"];
        match &self.settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Failure::Expired,
            ErrorKind::ImmatureSignature => Failure::NotYetValid,
            ErrorKind::InvalidAudience => Failure::WrongAudience,
            ErrorKind::InvalidIssuer => Failure::WrongIssuer,
            ErrorKind::InvalidSignature => Failure::InvalidSignature,
            _ => Failure::InvalidToken,
        })?;
        let claims = data.claims;
        let subject =
            claims.get("sub").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or(Failure::InvalidToken)?;
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(Failure::InvalidToken);
        }
        // RFC 7519 makes `iss` one string; the library also takes a list.
        if self.settings.issuer.is_some() && !claims.get("iss").is_some_and(Value::is_string) {
            return Err(Failure::WrongIssuer);
        }
        // `exp` is a required claim, so the validation above saw a number.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((Claims { subject: subject.into(), scopes: self.scopes(&claims) }, exp))
    }

    /// `scope` (space-separated), `scp` (a list or space-separated), and the scopes the
    /// configured roles grant.
    fn scopes(&self, claims: &Value) -> Scopes {
        let words = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
                _ => Vec::new(),
            }
        };
        let mut names = words(claims.get("scope"));
        names.extend(words(claims.get("scp")));
        for role in words(claims.get(&self.settings.roles_claim)) {
            if let Some(granted) = self.settings.roles.get(&role) {
                names.extend(granted.iter().cloned());
            }
        }
        Scopes::from_names(names.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use crate::config::Secret;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};

    fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn verifier(jwt: JwtConfig) -> Verifier {
        let auth = AuthConfig { jwt: Some(jwt), jwt_secret: Some(Secret("s3cret".into())), ..AuthConfig::default() };
        Verifier::from_config(&auth).unwrap().unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: serde_json::Value) -> String {
        sign_hs256(b"s3cret", &claims)
    }

    #[test]
    fn claims_give_the_subject_and_scopes_from_scope_scp_and_roles() {
        let mut jwt = JwtConfig::default();
        jwt.roles.insert("analyst".into(), vec!["read".into()]);
        let v = verifier(jwt);
        let claims = v
            .verify(&token(serde_json::json!({"sub": "ana", "exp": now() + 60, "scope": "predict other", "scp": ["metrics"], "roles": ["analyst", "x"]})))
            .unwrap();
        assert_eq!(&*claims.subject, "ana");
        for scope in [Scope::Predict, Scope::Metrics, Scope::Read] {
            assert!(claims.scopes.contains(scope), "{scope:?}");
        }
        assert!(!claims.scopes.contains(Scope::Admin));
    }

    #[test]
    fn time_audience_issuer_and_signature_are_enforced() {
        let jwt = JwtConfig {
            audience: Some("inferd".into()),
            issuer: Some("idp".into()),
            leeway_seconds: 5,
            ..JwtConfig::default()
        };
        let v = verifier(jwt);
        let good = serde_json::json!({"sub": "a", "aud": "inferd", "iss": "idp", "exp": now() + 60});
        assert!(v.verify(&token(good.clone())).is_ok());
        let with = |key: &str, value: serde_json::Value| {
            let mut c = good.clone();
            c[key] = value;
            v.verify(&token(c)).unwrap_err()
        };
        assert_eq!(with("exp", (now() - 60).into()), Failure::Expired);
        assert!(
            v.verify(&token(serde_json::json!({"sub": "a", "aud": "inferd", "iss": "idp", "exp": now() - 2}))).is_ok(),
            "within leeway"
        );
        assert_eq!(with("nbf", (now() + 60).into()), Failure::NotYetValid);
        assert_eq!(with("aud", "other".into()), Failure::WrongAudience);
        assert_eq!(with("iss", "other".into()), Failure::WrongIssuer);
        assert_eq!(with("iss", serde_json::json!(["idp"])), Failure::WrongIssuer, "iss is one string");
        assert_eq!(
            v.verify(&token(serde_json::json!({"sub": "a", "aud": "inferd", "iss": "idp"}))).unwrap_err(),
            Failure::InvalidToken,
            "exp is required"
        );
        let forged = sign_hs256(b"guess", &good);
        assert_eq!(v.verify(&forged).unwrap_err(), Failure::InvalidSignature);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&good.to_string()));
        assert_eq!(v.verify(&none).unwrap_err(), Failure::InvalidToken);
        let rs = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(&good.to_string()));
        assert_eq!(v.verify(&rs).unwrap_err(), Failure::InvalidToken, "no RSA key configured");
    }

    #[test]
    fn a_cached_token_still_expires_and_a_changed_one_is_verified_afresh() {
        let v = verifier(JwtConfig { leeway_seconds: 0, ..JwtConfig::default() });
        let soon = token(serde_json::json!({"sub": "a", "exp": now() + 1}));
        assert!(v.verify(&soon).is_ok());
        assert!(v.verify(&soon).is_ok(), "from the cache");
        assert_eq!(v.verified.lock().unwrap().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(v.verify(&soon).unwrap_err(), Failure::Expired, "the cache keeps no token past its exp");
        let good = token(serde_json::json!({"sub": "b", "exp": now() + 60}));
        assert!(v.verify(&good).is_ok());
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert!(v.verify(&tampered).is_err(), "a different token is not a cache hit");
    }

    #[test]
    fn a_critical_header_extension_is_refused_even_when_signed() {
        let v = verifier(JwtConfig::default());
        let claims = serde_json::json!({"sub": "a", "exp": now() + 60});
        let signed = |crit: Option<Vec<String>>| {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = crit;
            header.extras.insert("x".into(), "y".into());
            v.verify(&jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s3cret")).unwrap())
        };
        assert!(signed(None).is_ok(), "an unlisted extra header field is fine");
        assert_eq!(signed(Some(vec!["x".into()])).unwrap_err(), Failure::InvalidToken);
        assert_eq!(signed(Some(vec![])).unwrap_err(), Failure::InvalidToken, "an empty crit is invalid");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let not_a_list = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256","crit":"x"}"#), b64(&claims.to_string()));
        assert_eq!(v.verify(&not_a_list).unwrap_err(), Failure::InvalidToken);
    }

    #[test]
    fn anything_with_two_dots_is_taken_for_a_token() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."), "alg none's empty signature");
        assert!(looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("inferd_abc"));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn a_long_or_blank_subject_is_refused_not_cut() {
        let v = verifier(JwtConfig::default());
        let sub = |s: String| v.verify(&token(serde_json::json!({"sub": s, "exp": now() + 60})));
        assert_eq!(&*sub("u".repeat(256)).unwrap().subject, "u".repeat(256));
        assert_eq!(sub("u".repeat(257)).unwrap_err(), Failure::InvalidToken);
        assert_eq!(sub("   ".into()).unwrap_err(), Failure::InvalidToken);
    }
}
