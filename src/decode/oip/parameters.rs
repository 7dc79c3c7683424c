//! The `parameters` objects of an inference request, read keeping only what inferd uses.
//!
//! They are documented as accepted and ignored beyond a few keys, but parsed whole into a JSON
//! tree a 1 MiB `{"x": [[0],[0],...]}` cost 99 MiB. So only the known keys are kept, and only
//! scalar values: an array or object there becomes `null` (which the checks then refuse as
//! not a number or boolean), skipped without being held.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

/// The keys read from any `parameters`: the request's, an input's or a requested output's.
const KNOWN: [&str; 4] = ["timeout", "binary_data_output", "binary_data", "binary_data_size"];

/// `#[serde(deserialize_with)]` for an `Option<Value>` of parameters.
pub fn known<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    d.deserialize_any(Parameters).map(Some)
}

struct Parameters;

impl<'de> Visitor<'de> for Parameters {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of parameters")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<KnownKey>()? {
            match key.0 {
                Some(name) => {
                    kept.insert(name.to_owned(), map.next_value_seed(ScalarOnly)?);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Value::Object(kept))
    }
    // Anything but an object carries no known key.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Value::Object(Map::new()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
}

/// A key: one of [`KNOWN`], or `None` for any other (not kept).
struct KnownKey(Option<&'static str>);

impl<'de> de::Deserialize<'de> for KnownKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = KnownKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a parameter name")
            }
            fn visit_str<E>(self, v: &str) -> Result<KnownKey, E> {
                Ok(KnownKey(KNOWN.iter().copied().find(|k| *k == v)))
            }
        }
        d.deserialize_str(Key)
    }
}

/// A scalar as it is; an array or object skipped, as `null`.
struct ScalarOnly;

impl<'de> DeserializeSeed<'de> for ScalarOnly {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarOnly {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(crate::error::clip(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Skip.visit_map(map).map(|()| Value::Null)
    }
}

/// A value read and dropped. Unlike `IgnoredAny`, it goes through `deserialize_any`, so
/// serde_json's nesting limit (128) still refuses a body nested deeper, as it refuses it
/// everywhere else.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Value {
        known(&mut serde_json::Deserializer::from_str(text)).unwrap().unwrap()
    }

    #[test]
    fn only_known_keys_and_scalars_are_kept() {
        let nested = format!("[{}]", vec!["[0]"; 10_000].join(","));
        let text = format!(r#"{{"timeout": 5, "x": {nested}, "binary_data": {nested}, "binary_data_output": true}}"#);
        assert_eq!(read(&text), serde_json::json!({"timeout": 5, "binary_data": null, "binary_data_output": true}));
        assert_eq!(read("[1, 2]"), serde_json::json!({}));
        assert_eq!(read("7"), serde_json::json!({}));
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(known(&mut serde_json::Deserializer::from_str(&deep)).is_err(), "nested past serde_json's limit");
    }
}
