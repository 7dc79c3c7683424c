//! The streaming decoder of JSON bodies (`/predict`, `/v1`, batch scoring): a request body read
//! with `serde` seeds straight into the column buffers of the model's input tensors, every
//! field checked on its way in (by the sink).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::preview::Preview;

use super::sink::{ColumnEntry, Sink};
use super::{DecodeError, Model};
use crate::error::{clip, clip_quoted};
use crate::tensor::columns::Scalar;
use crate::tensor::rows::Rows;

/// Which envelope a body is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// inferd's own: `{"instances": [...]}` and nothing else.
    Predict,
    /// KServe V1 / TensorFlow Serving: `{"instances": [...]}` or the columnar
    /// `{"inputs": ...}`, with an optional `signature_name`.
    V1,
}

/// Which of the two forms a V1 body used; the answer mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    #[default]
    Rows,
    Columns,
}

/// Decodes a JSON body of instances (`/predict`, `/v1`) into rows.
pub fn body(model: Model<'_>, body: &[u8], envelope: Envelope, max_rows: usize) -> Result<(Rows, Form), DecodeError> {
    // A guess at the row count from the body's size keeps the columns from regrowing.
    let expected = (body.len() / (model.plan.fields.len() * 8).max(16)).max(1);
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in values it skips.
    let body = std::str::from_utf8(body).map_err(|e| DecodeError::Malformed(format!("not valid UTF-8: {e}")))?;
    let mut sink = Sink::new(model.plan, model.feed, max_rows, expected);
    let form = read_body(body.as_bytes(), envelope, &mut sink).map_err(json_error)?;
    Ok((sink.finish(model.schema)?, form))
}

/// A parser's error in the service's shape: broken JSON is `malformed_json`, valid JSON that
/// is not the envelope is `invalid_request`.
pub fn json_error(e: serde_json::Error) -> DecodeError {
    let message = clip_quoted(&e.to_string()).into_owned();
    match e.classify() {
        serde_json::error::Category::Data => {
            DecodeError::invalid(format!("request body has the wrong shape: {message}"))
        }
        _ => DecodeError::Malformed(message),
    }
}

/// Reads a whole request body into `sink`; syntax and envelope errors end the read, field
/// errors are collected in the sink.
pub fn read_body(body: &[u8], envelope: Envelope, sink: &mut Sink<'_>) -> Result<Form, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let form = BodySeed { sink, envelope }.deserialize(&mut de)?;
    de.end()?;
    Ok(form)
}

struct BodySeed<'s, 'p> {
    sink: &'s mut Sink<'p>,
    envelope: Envelope,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = Form;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Form, D::Error> {
        d.deserialize_map(self)
    }
}

const PREDICT_FIELDS: &[&str] = &["instances"];
const V1_FIELDS: &[&str] = &["instances", "inputs", "signature_name"];

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = Form;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.envelope {
            Envelope::Predict => f.write_str("an object with `instances`"),
            Envelope::V1 => f.write_str("an object with `instances` or `inputs`"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Form, A::Error> {
        let expected = if self.envelope == Envelope::Predict { PREDICT_FIELDS } else { V1_FIELDS };
        let mut form = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "instances" | "inputs" if form.is_some() => {
                    return Err(de::Error::custom("give either `instances` or `inputs`, once"));
                }
                "instances" => {
                    map.next_value_seed(InstancesSeed(&mut *self.sink))?;
                    form = Some(Form::Rows);
                }
                "inputs" if self.envelope == Envelope::V1 => {
                    map.next_value_seed(ColumnarSeed(&mut *self.sink))?;
                    form = Some(Form::Columns);
                }
                // TensorFlow Serving names the signature; a model here has one.
                "signature_name" if self.envelope == Envelope::V1 => {
                    map.next_value::<std::borrow::Cow<'de, str>>()?;
                }
                other => return Err(de::Error::unknown_field(&clip(other), expected)),
            }
        }
        form.ok_or_else(|| de::Error::missing_field("instances"))
    }
}

/// The columnar form's `inputs`: an object of lists (each kept up to one past the row limit,
/// the rest counted), or, for a one-input model, a list of plain rows.
struct ColumnarSeed<'s, 'p>(&'s mut Sink<'p>);

impl<'de> DeserializeSeed<'de> for ColumnarSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ColumnarSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of named inputs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let limit = self.0.max_rows() + 1;
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if entries.len() > self.0.plan().fields.len() {
                // More entries than the model has fields: the rest are only skipped.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let (width, preview) = (self.0.plan().fields.len(), self.0.preview());
            let (values, len) = map.next_value_seed(ListSeed { limit, width, preview })?;
            entries.push(ColumnEntry { name, values, len });
        }
        self.0.columns(entries);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        if self.0.plan().matrix {
            return InstancesSeed(self.0).visit_seq(seq);
        }
        IgnoredAny.visit_seq(seq)?;
        self.0.columnar_error(None, "must be an object of named inputs (rows need a model with one input)".into());
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got a boolean".into());
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got a number".into());
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got a number".into());
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got a number".into());
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got a string".into());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.columnar_error(None, "must be an object of named inputs, got null".into());
        Ok(())
    }
}

/// One list of the columnar form: its first `limit` values, and how many it held; `None`
/// (after skipping it) when it is not a list.
struct ListSeed<'b> {
    limit: usize,
    /// The model's fields: a list of rows keeps this many values of each, and one more.
    width: usize,
    preview: &'b Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = (Option<Vec<Scalar>>, usize);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match ScalarList(self).deserialize(d)? {
            Some((values, len)) => Ok((Some(values), len)),
            None => Ok((None, 0)),
        }
    }
}

struct ScalarList<'b>(ListSeed<'b>);

impl<'de> DeserializeSeed<'de> for ScalarList<'_> {
    type Value = Option<(Vec<Scalar>, usize)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarList<'_> {
    type Value = Option<(Vec<Scalar>, usize)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        let mut len = 0;
        loop {
            if len < self.0.limit {
                let seed = ScalarSeed::list_value(self.0.preview, self.0.width);
                let Some(value) = seq.next_element_seed(seed)? else { break };
                values.push(value);
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            len += 1;
        }
        Ok(Some((values, len)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

struct InstancesSeed<'s, 'p>(&'s mut Sink<'p>);

impl<'de> DeserializeSeed<'de> for InstancesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence of instances")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            match self.0.begin_row() {
                Some(row) => {
                    if seq.next_element_seed(InstanceSeed { sink: &mut *self.0, row })?.is_none() {
                        self.0.abandon_row();
                        return Ok(());
                    }
                    self.0.end_row(row);
                }
                // Over the limit: counted, not built.
                None => {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        return Ok(());
                    }
                    self.0.count_extra();
                }
            }
        }
    }
}

struct InstanceSeed<'s, 'p> {
    sink: &'s mut Sink<'p>,
    row: usize,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an instance")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let plan = self.sink.plan();
        let mut hint = 0;
        while let Some(key) = map.next_key_seed(KeySeed { plan, hint })? {
            match key {
                Key::Field(field) => {
                    hint = field + 1;
                    let value = map.next_value_seed(ScalarSeed::new(self.sink.preview()))?;
                    self.sink.field(self.row, field, value);
                }
                Key::Other(name) => {
                    map.next_value::<IgnoredAny>()?;
                    self.sink.unknown_field(self.row, &name);
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.sink.plan().matrix {
            let value = Preview::new(self.sink.preview()).array(seq)?;
            self.sink.not_an_instance(self.row, Scalar::Other(value));
            return Ok(());
        }
        let width = self.sink.plan().fields.len();
        let mut n = 0;
        while let Some(value) = seq.next_element_seed(ScalarSeed::new(self.sink.preview()))? {
            if n < width {
                // A plain row's columns are the schema's properties, in order.
                self.sink.field(self.row, n, value);
            }
            n += 1;
        }
        if n != width {
            self.sink.wrong_row_length(self.row, n);
        }
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::I64(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::U64(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::F64(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::Str(v.to_owned()));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.sink.not_an_instance(self.row, Scalar::Null);
        Ok(())
    }
}

/// One field's value read straight into a [`Scalar`], with no JSON tree built for it (an
/// array or object, which no field takes, is kept as a preview for its message, drawing on
/// the request's budget).
pub struct ScalarSeed<'b> {
    preview: &'b Cell<usize>,
    /// Set for a value of a columnar list, which may be a row of the `[N, F]` input
    /// (`{"x": [[...], ...]}`): its first `width + 1` values are kept as they are (each nested
    /// array or object as a preview) and the rest skipped.
    row_width: Option<usize>,
}

impl<'b> ScalarSeed<'b> {
    pub fn new(preview: &'b Cell<usize>) -> Self {
        Self { preview, row_width: None }
    }

    fn list_value(preview: &'b Cell<usize>, width: usize) -> Self {
        Self { preview, row_width: Some(width) }
    }
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        let Some(width) = self.row_width else {
            return Preview::new(self.preview).array(seq).map(Scalar::Other);
        };
        let mut values = Vec::new();
        while values.len() <= width {
            let Some(value) = seq.next_element_seed(RowValue(self.preview))? else { break };
            values.push(value);
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other(Value::Array(values)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        Preview::new(self.preview).object(map).map(Scalar::Other)
    }
}

/// One value of a row: scalars as they are, arrays and objects as previews.
struct RowValue<'b>(&'b Cell<usize>);

impl<'de> DeserializeSeed<'de> for RowValue<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Ok(match ScalarSeed::new(self.0).deserialize(d)? {
            Scalar::Other(value) => value,
            Scalar::Str(text) => Value::String(text),
            scalar => scalar.to_value(),
        })
    }
}

enum Key {
    Field(usize),
    Other(String),
}

/// An instance's key, looked up without allocating (only an unknown name is kept, for its
/// message).
struct KeySeed<'p> {
    plan: &'p crate::schema::InstancePlan,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Key, E> {
        Ok(match self.plan.find(name, self.hint) {
            Some(field) => Key::Field(field),
            None => Key::Other(name.to_owned()),
        })
    }
}
