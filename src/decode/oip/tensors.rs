//! Tensors to rows: JSON `data` is read straight into the typed buffer of its input, and
//! binary tensor data (the protocol's extension) is copied in whole.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

use super::{InferInput, RequestedOutput};
use crate::decode::{self, DecodeError, Sink};
use crate::error::clip;
use crate::tensor::columns::{Column, Scalar};
use crate::tensor::rows::Rows;
use crate::tensor::signature::{InputPlan, TensorInfo};

/// The outputs to return: all, or those asked for. Asking for one twice is refused rather than
/// answered twice or once: either would be a guess at what the client meant.
pub fn selected_outputs<'a, 'r>(
    all: &'a [TensorInfo],
    wanted: Option<&'r [RequestedOutput]>,
) -> Result<Vec<(&'a TensorInfo, Option<&'r RequestedOutput>)>, DecodeError> {
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return Ok(all.iter().map(|o| (o, None)).collect());
    };
    let selected = wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|o| o.name == w.name)
                .map(|o| (o, Some(w)))
                .ok_or_else(|| DecodeError::invalid(format!("unknown output '{}'", clip(&w.name))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Known names only by now, so a repeat shows up within the model's few outputs.
    if let Some(twice) = first_duplicate(selected.iter().map(|(o, _)| o.name.as_str())) {
        return Err(DecodeError::invalid(format!("output '{twice}' is requested more than once")));
    }
    Ok(selected)
}

fn first_duplicate<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    names.clone().enumerate().find(|(i, name)| names.clone().take(*i).any(|earlier| earlier == *name)).map(|(_, n)| n)
}

/// Checks names, datatypes and shapes, then reads every input into the rows: from `data`, or
/// from `binary` (the bytes after the JSON header) where `binary_data_size` says so, in the
/// order the inputs are given. Every size the client states is checked, with checked
/// arithmetic, before anything is allocated for it: `shape` is only a claim, and
/// `[1000000000000, 5]` must not reserve memory.
pub fn to_rows(
    model: decode::Model<'_>,
    inputs: &[InferInput],
    binary: &[u8],
    max_rows: usize,
) -> Result<Rows, DecodeError> {
    let parts = binary_parts(inputs, binary)?;
    to_rows_from_parts(model, inputs, &parts, max_rows)
}

/// [`to_rows`] with each input's binary data already apart, by position (`None`: it has
/// `data`), as gRPC's `raw_input_contents` sends it; a length must still match its shape.
pub fn to_rows_from_parts(
    model: decode::Model<'_>,
    inputs: &[InferInput],
    binary_parts: &[Option<&[u8]>],
    max_rows: usize,
) -> Result<Rows, DecodeError> {
    let plan = &model.feed.inputs;
    if binary_parts.len() != inputs.len() {
        return Err(DecodeError::invalid(format!(
            "{} inputs, but binary data for {}",
            inputs.len(),
            binary_parts.len()
        )));
    }
    if let Some(unknown) = inputs.iter().find(|i| !plan.iter().any(|p| p.name == i.name)) {
        return Err(DecodeError::invalid(format!("unknown input '{}'", clip(&unknown.name))));
    }
    // Known names only by now, so a repeat shows up within the model's few inputs.
    if let Some(twice) = first_duplicate(inputs.iter().map(|i| i.name.as_str())) {
        return Err(DecodeError::invalid(format!("input '{twice}' is given more than once")));
    }
    let mut rows: Option<usize> = None;
    let mut found = Vec::with_capacity(plan.len());
    for (index, expected) in plan.iter().enumerate() {
        let (at, input) = inputs
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == expected.name)
            .ok_or_else(|| DecodeError::invalid(format!("missing input '{}'", expected.name)))?;
        let want = expected.elem.oip_datatype();
        if input.datatype != want {
            return Err(DecodeError::invalid(format!(
                "input '{}': datatype {} does not match the model's {want}",
                input.name,
                clip(&input.datatype)
            )));
        }
        let n = check_shape(expected, &input.shape, max_rows)
            .map_err(|e| DecodeError::invalid(format!("input '{}': {e}", input.name)))?;
        if *rows.get_or_insert(n) != n {
            return Err(DecodeError::invalid(format!(
                "input '{}' has {n} rows, others have {}",
                input.name,
                rows.unwrap_or(0)
            )));
        }
        found.push((index, input, binary_parts[at]));
    }
    let rows = rows.unwrap_or(0);
    let mut sink = Sink::new(model.plan, model.feed, max_rows, rows);
    sink.grow_rows(rows);
    for (index, input, bytes) in found {
        let expected = &plan[index];
        let fail = |e: String| DecodeError::invalid(format!("input '{}': {e}", input.name));
        let count = rows * expected.fields.len();
        match (bytes, &input.data) {
            (Some(_), Some(_)) => {
                return Err(fail("has both `data` and `parameters.binary_data_size`; send one".into()))
            }
            (Some(bytes), None) => {
                let mut column = Column::with_capacity(expected.elem, count);
                column.read_binary(bytes, count).map_err(fail)?;
                sink.put_column(index, column);
            }
            (None, Some(data)) => read_data(data.get(), index, &input.shape, count, &mut sink).map_err(fail)?,
            (None, None) => return Err(fail("has neither `data` nor `parameters.binary_data_size`".into())),
        }
    }
    sink.finish(model.schema)
}

/// Each input's bytes of the binary section, by position; the sizes must add up to it exactly.
fn binary_parts<'b>(inputs: &[InferInput], binary: &'b [u8]) -> Result<Vec<Option<&'b [u8]>>, DecodeError> {
    let mut rest = binary;
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let Some(size) = size else {
            out.push(None);
            continue;
        };
        let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
            DecodeError::invalid(format!("input '{}': binary_data_size must be a whole number of bytes", input.name))
        })?;
        if size > rest.len() {
            return Err(DecodeError::invalid(format!(
                "input '{}': binary_data_size is {size}, but only {} bytes of binary data are left",
                input.name,
                rest.len()
            )));
        }
        let (part, tail) = rest.split_at(size);
        out.push(Some(part));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(DecodeError::invalid(format!("{} bytes of binary data belong to no input", rest.len())));
    }
    Ok(out)
}

/// Reads `data` (flat, or nested exactly like `shape`) into input `input`'s column, each
/// element checked against its field's rules. Structural problems end the read; values that
/// break the schema are collected in the sink.
fn read_data(data: &str, input: usize, shape: &[i64], count: usize, sink: &mut Sink<'_>) -> Result<(), String> {
    let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
    let fields = &sink.plan().inputs[input];
    let width = fields.len();
    let mut de = serde_json::Deserializer::from_str(data);
    let mut reader = Reader { sink, fields, width, count, at: 0 };
    let layout = DataSeed { reader: &mut reader, dims: &dims, depth: 0 }
        .deserialize(&mut de)
        .and_then(|layout| de.end().map(|()| layout))
        .map_err(|e| {
            let message = crate::error::clip_quoted(&e.to_string()).into_owned();
            format!("data is neither flat nor nested like shape {}: {message}", shape_text(shape))
        })?;
    if reader.at != count {
        let how = match layout {
            Layout::Flat => "",
            Layout::Nested => "nested ",
        };
        return Err(format!("shape {} needs {count} values, {how}data has {}", shape_text(shape), reader.at));
    }
    Ok(())
}

struct Reader<'r, 's, 'p> {
    sink: &'r mut Sink<'s>,
    fields: &'p [usize],
    width: usize,
    count: usize,
    /// Elements read so far.
    at: usize,
}

impl Reader<'_, '_, '_> {
    fn push(&mut self, value: Scalar) {
        if self.at < self.count {
            let (row, column) = (self.at / self.width, self.at % self.width);
            self.sink.element(row, self.fields[column], value);
        }
        self.at += 1;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Flat,
    Nested,
}

/// One level of `data`: at the top, values (flat) or arrays (nested); below, arrays of exactly
/// the shape's length down to the values at the last level.
struct DataSeed<'a, 'r, 's, 'p> {
    reader: &'a mut Reader<'r, 's, 'p>,
    dims: &'a [usize],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = Layout;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Layout, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_, '_, '_> {
    type Value = Layout;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.depth == 0 {
            f.write_str("an array of values, or of arrays nested like the shape")
        } else {
            write!(f, "an array of {} items", self.dims.get(self.depth).copied().unwrap_or(0))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Layout, A::Error> {
        let DataSeed { reader, dims, depth } = self;
        let mut items = 0;
        let mut layout = None;
        loop {
            let item = if depth > 0 && depth >= dims.len() {
                // Below the last dimension there are only values.
                return Err(de::Error::custom(format!("data is nested deeper than shape's {} dimensions", dims.len())));
            } else if layout == Some(Layout::Flat) || (depth > 0 && depth + 1 == dims.len()) {
                seq.next_element_seed(Leaf(reader))?.map(|()| Layout::Flat)
            } else {
                seq.next_element_seed(Item { reader, dims, depth: depth + 1 })?
            };
            let Some(kind) = item else { break };
            if *layout.get_or_insert(kind) != kind {
                return Err(de::Error::custom(format!("data[{items}] mixes values and arrays at one level")));
            }
            items += 1;
        }
        if depth > 0 && items != dims[depth] {
            return Err(de::Error::custom(format!(
                "an array at depth {depth} holds {items} items, shape says {}",
                dims[depth]
            )));
        }
        if depth == 0 && layout == Some(Layout::Nested) && items != dims[0] {
            return Err(de::Error::custom(format!("data holds {items} arrays, shape says {}", dims[0])));
        }
        Ok(if depth == 0 { layout.unwrap_or(Layout::Flat) } else { Layout::Nested })
    }
}

/// One item of the top level or an inner level: an array (nested) or, only at the top, a value.
struct Item<'a, 'r, 's, 'p> {
    reader: &'a mut Reader<'r, 's, 'p>,
    dims: &'a [usize],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Item<'_, '_, '_, '_> {
    type Value = Layout;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Layout, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! item_values {
    ($($method:ident: $ty:ty => $make:expr),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Layout, E> {
            if self.depth > 1 {
                return Err(E::custom(format!("a value where shape needs an array of {}", self.dims.get(self.depth).copied().unwrap_or(0))));
            }
            self.reader.push($make(v));
            Ok(Layout::Flat)
        }
    )*};
}

impl<'de> Visitor<'de> for Item<'_, '_, '_, '_> {
    type Value = Layout;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Layout, A::Error> {
        DataSeed { reader: self.reader, dims: self.dims, depth: self.depth }.visit_seq(seq)
    }

    item_values!(
        visit_bool: bool => Scalar::Bool,
        visit_i64: i64 => Scalar::I64,
        visit_u64: u64 => Scalar::U64,
        visit_f64: f64 => Scalar::F64,
        visit_str: &str => |s: &str| Scalar::Str(s.to_owned())
    );

    fn visit_unit<E: de::Error>(self) -> Result<Layout, E> {
        self.reader.push(Scalar::Null);
        Ok(Layout::Flat)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Layout, A::Error> {
        let value = crate::decode::preview::Preview::new(self.reader.sink.preview()).object(map)?;
        self.reader.push(Scalar::Other(value));
        Ok(Layout::Flat)
    }
}

/// A value at the last level of nested data.
struct Leaf<'a, 'r, 's, 'p>(&'a mut Reader<'r, 's, 'p>);

impl<'de> DeserializeSeed<'de> for Leaf<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match decode::json::ScalarSeed::new(self.0.sink.preview()).deserialize(d)? {
            Scalar::Other(Value::Array(_)) => Err(de::Error::custom("an array where shape needs a value")),
            value => {
                self.0.push(value);
                Ok(())
            }
        }
    }
}

/// `[1, 2, 3]`, or the first dimensions and a count when the client sent a long shape.
fn shape_text(shape: &[i64]) -> String {
    clip(&format!("{shape:?}")).into_owned()
}

/// Checks a client's shape against the model input's (`[N]` or `[N, F]`; `F` is fixed for
/// every input inferd feeds) and returns the row count, held to 1..=`max_rows`. The model's
/// batch dimension is always free: rows of several requests are batched together.
fn check_shape(expected: &InputPlan, shape: &[i64], max_rows: usize) -> Result<usize, String> {
    let model_shape = match expected.rank {
        1 => "[N]".to_owned(),
        _ => format!("[N, {}]", expected.fields.len()),
    };
    if shape.len() != expected.rank {
        return Err(format!(
            "shape {} has {} dimensions, the model's {model_shape} has {}",
            shape_text(shape),
            shape.len(),
            expected.rank
        ));
    }
    if let Some(d) = shape.iter().find(|d| **d < 0) {
        return Err(format!("shape {} has a negative dimension {d}", shape_text(shape)));
    }
    if expected.rank == 2 && usize::try_from(shape[1]).ok() != Some(expected.fields.len()) {
        return Err(format!("shape {} does not fit the model's {model_shape}", shape_text(shape)));
    }
    // A dimension beyond usize is beyond the limit as well.
    let rows = usize::try_from(shape[0]).unwrap_or(usize::MAX);
    if rows == 0 {
        return Err(format!("shape {} has 0 rows; a request needs at least one instance", shape_text(shape)));
    }
    if rows > max_rows {
        return Err(format!("{} rows, more than the limit of {max_rows} instances per request", shape[0]));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::InstancePlan;
    use crate::schema::InstanceSchema;
    use crate::tensor::signature::{ElemType, FeedPlan, Signature};
    use serde_json::json;

    struct Model {
        schema: InstanceSchema,
        feed: FeedPlan,
        plan: InstancePlan,
    }

    impl Model {
        fn new(inputs: Vec<TensorInfo>) -> Self {
            let signature = Signature { inputs, outputs: vec![] };
            let schema = InstanceSchema::derive(&signature, "m").unwrap();
            let feed = FeedPlan::new(&signature, schema.fields()).unwrap();
            let plan = InstancePlan::compile(schema.document(), &feed, signature.matrix_width().is_some());
            Self { schema, feed, plan }
        }

        fn rows(&self, inputs: &[InferInput], max_rows: usize) -> Result<Rows, String> {
            let model = decode::Model { plan: &self.plan, feed: &self.feed, schema: &self.schema, outputs: &[] };
            to_rows(model, inputs, &[], max_rows).map_err(|e| match e {
                // As `/v2` words it: each field by its tensor position.
                DecodeError::Validation { ref details, .. } => {
                    let at = |path: &str| {
                        let (row, field) = path.trim_start_matches("/instances/").split_once('/').unwrap();
                        format!("{field}[{row}]")
                    };
                    let fields: Vec<String> =
                        details.iter().map(|d| format!("{}: {}", at(&d.path), d.message)).collect();
                    format!("{e}: {}", fields.join("; "))
                }
                e => e.to_string(),
            })
        }
    }

    fn info(name: &str, elem: ElemType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), elem, shape: shape.to_vec() }
    }

    fn input(name: &str, shape: &[i64], datatype: &str, data: Value) -> InferInput {
        let data = Some(serde_json::value::to_raw_value(&data).unwrap());
        InferInput { name: name.into(), shape: shape.to_vec(), datatype: datatype.into(), parameters: None, data }
    }

    fn mixed() -> Model {
        Model::new(vec![info("a", ElemType::F32, &[-1, 1]), info("s", ElemType::String, &[-1])])
    }

    fn linear() -> Model {
        Model::new(vec![info("features", ElemType::F32, &[-1, 5])])
    }

    fn linear_error(shape: &[i64], data: Value) -> String {
        linear().rows(&[input("features", shape, "FP32", data)], 1024).unwrap_err()
    }

    #[test]
    fn tensors_become_typed_columns_from_nested_or_flat_data() {
        let m = mixed();
        let rows = m
            .rows(&[input("a", &[2, 1], "FP32", json!([[1], [2.5]])), input("s", &[2], "BYTES", json!(["p", "q"]))], 8)
            .unwrap();
        assert_eq!(rows.len, 2);
        assert_eq!(rows.columns[0], Column::F32(vec![1.0, 2.5]));
        assert_eq!(rows.columns[1], Column::String(vec!["p".into(), "q".into()]));
        let rows = linear()
            .rows(&[input("features", &[2, 5], "FP32", json!([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]))], 8)
            .unwrap();
        assert_eq!(rows.columns[0], Column::F32((1..=10).map(|v| v as f32).collect()));
    }

    #[test]
    fn bad_tensors_are_named() {
        let m = mixed();
        let err = |inputs: &[InferInput]| m.rows(inputs, 1024).unwrap_err();
        let s = || input("s", &[1], "BYTES", json!(["p"]));
        assert!(err(&[input("a", &[1, 1], "FP64", json!([1])), s()])
            .contains("datatype FP64 does not match the model's FP32"));
        assert!(err(&[input("a", &[1, 1], "FP32", json!([1, 2])), s()]).contains("needs 1 values, data has 2"));
        assert!(err(&[input("a", &[1, 3], "FP32", json!([1, 2, 3])), s()]).contains("does not fit the model's [N, 1]"));
        assert!(err(&[input("a", &[2, 1], "FP32", json!([1, 2])), s()]).contains("has 1 rows, others have 2"));
        assert!(err(&[input("zz", &[1], "FP32", json!([1]))]).contains("unknown input 'zz'"));
        assert!(err(&[input("a", &[1, 1], "FP32", json!([1]))]).contains("missing input 's'"));
        let e = err(&[input("a", &[1, 1], "FP32", json!(["x"])), s()]);
        assert!(e.contains("a[0]: must be a number, got string \"x\""), "{e}");
    }

    #[test]
    fn huge_overflowing_and_negative_shapes_are_refused_before_allocating() {
        // Each would reserve terabytes, or wrap to a small count, if sizes were trusted.
        assert_eq!(
            linear_error(&[1_000_000_000_000, 5], json!([1, 2, 3, 4, 5])),
            "input 'features': 1000000000000 rows, more than the limit of 1024 instances per request"
        );
        assert_eq!(
            linear_error(&[3_689_348_814_741_910_324, 5], json!([1, 2, 3, 4, 5])),
            "input 'features': 3689348814741910324 rows, more than the limit of 1024 instances per request"
        );
        assert_eq!(
            linear_error(&[1, 3_689_348_814_741_910_324], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [1, 3689348814741910324] does not fit the model's [N, 5]"
        );
        assert_eq!(
            linear_error(&[-1, 5], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [-1, 5] has a negative dimension -1"
        );
        assert_eq!(
            linear_error(&[0, 5], json!([])),
            "input 'features': shape [0, 5] has 0 rows; a request needs at least one instance"
        );
        assert_eq!(linear().rows(&[input("features", &[3, 5], "FP32", json!(vec![0; 15]))], 3).unwrap().len, 3);
        let over = linear().rows(&[input("features", &[4, 5], "FP32", json!(vec![0; 20]))], 3).unwrap_err();
        assert_eq!(over, "input 'features': 4 rows, more than the limit of 3 instances per request");
    }

    #[test]
    fn shapes_must_have_the_models_rank_and_fixed_dimensions() {
        assert_eq!(
            linear_error(&[1, 1, 5], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [1, 1, 5] has 3 dimensions, the model's [N, 5] has 2"
        );
        let long = vec![1; 1000];
        assert!(
            linear_error(&long, json!([1])).ends_with("… (3000 chars) has 1000 dimensions, the model's [N, 5] has 2")
        );
        let m = mixed();
        let err =
            m.rows(&[input("a", &[1, 1], "FP32", json!([1])), input("s", &[2, 1], "BYTES", json!(["p", "q"]))], 8);
        assert_eq!(err.unwrap_err(), "input 's': shape [2, 1] has 2 dimensions, the model's [N] has 1");
    }

    #[test]
    fn data_is_flat_or_nested_exactly_like_the_shape() {
        let ok = |shape: &[i64], data: Value| linear().rows(&[input("features", shape, "FP32", data)], 8);
        assert!(ok(&[2, 5], json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).is_ok());
        assert!(ok(&[2, 5], json!([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])).is_ok());
        let bad = |shape: &[i64], data: Value, want: &str| {
            let err = linear_error(shape, data);
            assert!(err.starts_with("input 'features': ") && err.contains(want), "{err} lacks {want}");
        };
        bad(&[1, 5], json!([[[1, 2, 3, 4, 5]]]), "an array where shape needs a value");
        bad(&[1, 5], json!([[1, 2, 3, 4, [5]]]), "an array where shape needs a value");
        bad(&[2, 5], json!([[1, 2, 3, 4, 5], [6, 7, 8, 9]]), "holds 4 items, shape says 5");
        bad(&[2, 5], json!([[1, 2, 3, 4, 5], 6, 7, 8, 9, 10]), "mixes values and arrays");
        bad(&[1, 5], json!([[1, 2], [3, 4, 5]]), "holds 2 items, shape says 5");
        bad(&[1, 5], json!([1, 2, 3, 4, 5, 6]), "shape [1, 5] needs 5 values, data has 6");
        bad(&[1, 5], json!(7), "invalid type: integer `7`");
    }

    #[test]
    fn binary_data_is_cut_by_binary_data_size() {
        let m = linear();
        let mut features = input("features", &[1, 5], "FP32", json!(null));
        features.data = None;
        features.parameters = Some(json!({"binary_data_size": 20}));
        let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let model = decode::Model { plan: &m.plan, feed: &m.feed, schema: &m.schema, outputs: &[] };
        let rows = to_rows(model, std::slice::from_ref(&features), &bytes, 8).unwrap();
        assert_eq!(rows.columns[0], Column::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        let err = to_rows(model, std::slice::from_ref(&features), &bytes[..19], 8).unwrap_err().to_string();
        assert!(err.contains("binary_data_size is 20, but only 19 bytes"), "{err}");
        let mut extra = bytes.clone();
        extra.push(0);
        let err = to_rows(model, std::slice::from_ref(&features), &extra, 8).unwrap_err().to_string();
        assert_eq!(err, "1 bytes of binary data belong to no input");
    }

    #[test]
    fn repeated_names_are_refused() {
        let x = || input("features", &[1, 5], "FP32", json!([1, 2, 3, 4, 5]));
        assert_eq!(linear().rows(&[x(), x()], 8).unwrap_err(), "input 'features' is given more than once");
        let outputs = [TensorInfo { name: "p".into(), elem: ElemType::F32, shape: vec![-1, 1] }];
        let want = |name: &str| RequestedOutput { name: name.into(), parameters: None };
        let err = selected_outputs(&outputs, Some(&[want("p"), want("p")])).unwrap_err().to_string();
        assert_eq!(err, "output 'p' is requested more than once");
        let long = "o".repeat(5000);
        let err = selected_outputs(&outputs, Some(&[want(&long)])).unwrap_err().to_string();
        assert_eq!(err, format!("unknown output '{}… (5000 chars)'", "o".repeat(100)));
        assert_eq!(selected_outputs(&outputs, Some(&[want("p")])).unwrap().len(), 1);
    }
}
