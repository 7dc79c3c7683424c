//! API keys: stored as their SHA-256, compared in constant time, minted by `inferd key new`.

use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limits::{self, Limit};
use super::{Failure, Principal, Scopes};
use crate::config::ApiKeyConfig;

/// Random bytes in a new key: 256 bits.
const KEY_BYTES: usize = 32;
/// Marks inferd's keys, so that secret scanners and people can tell what leaked.
const KEY_PREFIX: &str = "inferd_";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Key {
    hash: [u8; 32],
    name: Arc<str>,
    scopes: Scopes,
    limit: Limit,
}

pub struct ApiKeys(Vec<Key>);

impl ApiKeys {
    pub fn from_config(keys: &[ApiKeyConfig]) -> Self {
        Self(
            keys.iter()
                .map(|k| {
                    let mut hash = [0u8; 32];
                    // The config check guarantees 64 hex digits.
                    hex::decode_to_slice(&k.sha256, &mut hash).expect("validated sha256");
                    Key {
                        hash,
                        name: k.name.as_str().into(),
                        scopes: Scopes::from_names(k.scopes.iter().map(String::as_str)),
                        limit: k.rate_limit.map_or(Limit::None, |l| Limit::Key(Arc::new(limits::bucket(&l)))),
                    }
                })
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key whose hash is this key's. Every configured hash is compared, in constant time,
    /// so that timing tells nothing about which (or how much of one) matched.
    pub fn find(&self, presented: &[u8]) -> Result<Principal, Failure> {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for key in &self.0 {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(key);
            }
        }
        found
            .map(|k| Principal { name: k.name.clone(), kind: "key", scopes: k.scopes, limit: k.limit.clone() })
            .ok_or(Failure::UnknownKey)
    }
}

/// A fresh key and the lines that configure it, for `inferd key new`.
pub fn new_key(name: &str, scopes: &[String]) -> Result<String, String> {
    let config = ApiKeyConfig { name: name.into(), sha256: "0".repeat(64), scopes: scopes.to_vec(), rate_limit: None };
    validator::Validate::validate(&config).map_err(|e| e.to_string())?;
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let sha256 = sha256_hex(key.as_bytes());
    let quoted: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
    Ok(format!(
        "key: {key}\n\
         (shown once: give it to the client; inferd keeps only its SHA-256)\n\n\
         # runtime.toml\n\
         [[auth.api_keys]]\n\
         name = \"{name}\"\n\
         sha256 = \"{sha256}\"\n\
         scopes = [{}]\n\n\
         # or, in the environment\n\
         INFERD_API_KEYS=\"{name}:{}:{sha256}\"\n",
        quoted.join(", "),
        scopes.join("+"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_configured_by_the_lines_printed_with_it() {
        let out = new_key("app", &["predict".into(), "read".into()]).unwrap();
        let key = out.lines().next().unwrap().strip_prefix("key: ").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43, "{key}");
        let sha = sha256_hex(key.as_bytes());
        assert!(out.contains(&format!("sha256 = \"{sha}\"")), "{out}");
        assert!(out.contains(&format!("INFERD_API_KEYS=\"app:predict+read:{sha}\"")), "{out}");
        let env = out.lines().last().unwrap().trim_start_matches("INFERD_API_KEYS=").trim_matches('"');
        let keys = ApiKeys::from_config(&crate::config::parse_env_keys(env).unwrap());
        assert_eq!(&*keys.find(key.as_bytes()).unwrap().name, "app");
        assert_ne!(new_key("app", &["read".into()]).unwrap(), new_key("app", &["read".into()]).unwrap());
        assert!(new_key("bad name", &["read".into()]).is_err());
        assert!(new_key("app", &["write".into()]).unwrap_err().contains("unknown scope"));
    }
}
