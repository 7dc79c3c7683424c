//! Arrays and objects where one value was expected, kept only as far as an error message
//! shows them.
//!
//! Such a value is only ever quoted (cut to 100 characters), but parsed whole into a JSON tree
//! it costs about 20 times its text: a 1 MB body of `[[0],[0],...]` held 13 MB. So each
//! request has a budget of values its previews may keep ([`REQUEST_PREVIEW_VALUES`], enough
//! for the 100 errors a rejection lists); strings are cut, and what is left over is skipped
//! unread into memory, marked by a `"…"` element.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Values all the previews of one request may keep.
pub const REQUEST_PREVIEW_VALUES: usize = 4096;
/// Values one preview may keep, so that the first bad value does not take the whole budget.
const VALUES_EACH: usize = 32;
/// Characters of a string kept (messages quote 100).
const STRING_CHARS: usize = 128;
const MORE: &str = "…";

/// Reads any JSON value into a preview drawing on `budget` (values left for this request).
pub struct Preview<'b> {
    budget: &'b Cell<usize>,
    /// Values this preview may still keep.
    own: Cell<usize>,
}

impl<'b> Preview<'b> {
    pub fn new(budget: &'b Cell<usize>) -> Self {
        Self { budget, own: Cell::new(VALUES_EACH) }
    }

    /// Takes room for one value; false when none is left.
    fn take(&self) -> bool {
        let (left, own) = (self.budget.get(), self.own.get());
        if left == 0 || own == 0 {
            return false;
        }
        self.budget.set(left - 1);
        self.own.set(own - 1);
        true
    }

    /// The next value of a container, or `None` (after skipping it) when no room is left.
    fn element<'de, A: SeqAccess<'de>>(&self, seq: &mut A) -> Result<Option<Option<Value>>, A::Error> {
        if !self.take() {
            return Ok(None);
        }
        let next = seq.next_element_seed(Nested(self))?;
        if next.is_none() {
            // The end of the array, not a value: its room is given back.
            self.budget.set(self.budget.get() + 1);
            self.own.set(self.own.get() + 1);
        }
        Ok(Some(next))
    }

    /// An array's first values (each nested value drawing on the same room), the rest skipped.
    pub fn array<'de, A: SeqAccess<'de>>(&self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match self.element(&mut seq)? {
                Some(Some(value)) => items.push(value),
                Some(None) => return Ok(Value::Array(items)),
                None => break,
            }
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            items.push(Value::from(MORE));
        }
        Ok(Value::Array(items))
    }

    pub fn object<'de, A: MapAccess<'de>>(&self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        let mut more = false;
        while let Some(key) = map.next_key::<ClippedString>()? {
            if self.take() {
                let value = map.next_value_seed(Nested(self))?;
                fields.insert(key.0, value);
            } else {
                map.next_value::<IgnoredAny>()?;
                more = true;
            }
        }
        if more {
            fields.insert(MORE.into(), Value::from(MORE));
        }
        Ok(Value::Object(fields))
    }
}

/// A value inside a preview.
struct Nested<'a, 'b>(&'a Preview<'b>);

impl<'de> DeserializeSeed<'de> for Nested<'_, '_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_, '_> {
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
        Ok(Value::String(clipped(v)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        self.0.array(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        self.0.object(map)
    }
}

fn clipped(text: &str) -> String {
    match text.char_indices().nth(STRING_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}{MORE}", &text[..cut]),
    }
}

/// An object key, cut like a string value.
struct ClippedString(String);

impl<'de> de::Deserialize<'de> for ClippedString {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = ClippedString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<ClippedString, E> {
                Ok(ClippedString(clipped(v)))
            }
        }
        d.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview(text: &str, budget: &Cell<usize>) -> Value {
        Nested(&Preview::new(budget)).deserialize(&mut serde_json::Deserializer::from_str(text)).unwrap()
    }

    #[test]
    fn a_preview_keeps_the_start_of_a_value_and_marks_the_rest() {
        let budget = Cell::new(REQUEST_PREVIEW_VALUES);
        assert_eq!(preview("[1, [2, 3], {\"a\": \"b\"}]", &budget), serde_json::json!([1, [2, 3], {"a": "b"}]));
        let nested = format!("[{}]", vec!["[0]"; 100_000].join(","));
        let shown = preview(&nested, &budget);
        let items = shown.as_array().unwrap();
        assert_eq!(items.len(), VALUES_EACH / 2 + 1, "{shown}");
        assert_eq!(items.last().unwrap(), MORE);
        let long = format!("\"{}\"", "x".repeat(10_000));
        assert_eq!(preview(&long, &budget).as_str().unwrap().chars().count(), STRING_CHARS + 1);
        let object = format!("{{{}}}", (0..100).map(|i| format!("\"k{i}\": {i}")).collect::<Vec<_>>().join(","));
        assert_eq!(preview(&object, &budget).as_object().unwrap().len(), VALUES_EACH + 1);
    }

    #[test]
    fn a_request_s_previews_share_one_budget() {
        let budget = Cell::new(40);
        assert_eq!(preview(&format!("[{}]", vec!["1"; 100].join(",")), &budget).as_array().unwrap().len(), 33);
        assert_eq!(budget.get(), 8);
        assert_eq!(preview("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", &budget).as_array().unwrap().len(), 9);
        assert_eq!(preview("[1, 2]", &budget), serde_json::json!([MORE]), "nothing left: only the mark");
    }
}
