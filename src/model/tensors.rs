//! Rows of validated instances as typed columns, and the conversions to and from ORT tensors.

use std::borrow::Cow;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor};
use serde_json::{Map, Number, Value};

use super::signature::{ElemType, FeedPlan, InputPlan, TensorInfo};
use crate::error::{shown, FieldError};

/// Conversion of one JSON value into a tensor element and back.
trait Element: Sized {
    fn from_json(value: &Value) -> Result<Self, String>;
    fn to_json(&self) -> Value;
}

/// An integer read from JSON, before its type's range is checked.
enum Integral {
    Exact(i128),
    /// Integral, but beyond any integer type (`1e300`): shown as the client wrote it.
    Huge,
}

/// JSON Schema counts 3.0 as an integer, so it is accepted as 3. serde_json reads an integer
/// beyond i64 and u64 (2^64, say) as a float: it is integral too, and refused for its range
/// by the caller rather than called "not an integer".
fn integer(value: &Value) -> Result<Integral, String> {
    if let Some(i) = value.as_i64() {
        return Ok(Integral::Exact(i.into()));
    }
    if let Some(u) = value.as_u64() {
        return Ok(Integral::Exact(u.into()));
    }
    match value.as_f64() {
        // Every integral f64 below 1e38 converts to i128 exactly.
        Some(f) if f.fract() == 0.0 && f.abs() < 1e38 => Ok(Integral::Exact(f as i128)),
        Some(f) if f.fract() == 0.0 => Ok(Integral::Huge),
        _ => Err(format!("must be an integer, got {}", shown(value))),
    }
}

/// A finite number no larger in magnitude than `max`, the largest finite value of the element
/// type as it is printed (`65504`, `3.4028235e38`): beyond it the conversion would give infinity.
fn number(value: &Value, max: f64, max_shown: &str) -> Result<f64, String> {
    let v = value.as_f64().ok_or_else(|| format!("must be a number, got {}", shown(value)))?;
    // serde_json refuses literals that overflow f64 (`1e400`), so `v` is finite; the check
    // keeps that true whatever the parser.
    if v.is_finite() && v.abs() <= max {
        Ok(v)
    } else {
        Err(format!("must be a number between -{max_shown} and {max_shown}, got {}", shown(value)))
    }
}

macro_rules! integer_elements {
    ($($ty:ty),*) => {$(
        impl Element for $ty {
            fn from_json(value: &Value) -> Result<Self, String> {
                let out_of_range = |got: &dyn std::fmt::Display| {
                    format!("must be an integer between {} and {}, got {got}", <$ty>::MIN, <$ty>::MAX)
                };
                match integer(value)? {
                    Integral::Exact(i) => <$ty>::try_from(i).map_err(|_| out_of_range(&i)),
                    Integral::Huge => Err(out_of_range(&shown(value))),
                }
            }
            fn to_json(&self) -> Value {
                Value::from(*self)
            }
        }
    )*};
}
integer_elements!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Element for f64 {
    fn from_json(value: &Value) -> Result<Self, String> {
        number(value, f64::MAX, "1.7976931348623157e308")
    }
    fn to_json(&self) -> Value {
        float(*self)
    }
}

impl Element for f32 {
    fn from_json(value: &Value) -> Result<Self, String> {
        // 3.4028235e38 is how f32::MAX prints; it lies a little above f32::MAX as an f64 and
        // still rounds to f32::MAX, so it is the bound rather than `f64::from(f32::MAX)`.
        number(value, 3.4028235e38, "3.4028235e38").map(|v| v as f32)
    }
    fn to_json(&self) -> Value {
        float(f64::from(*self))
    }
}

impl Element for half::f16 {
    fn from_json(value: &Value) -> Result<Self, String> {
        number(value, 65504.0, "65504").map(half::f16::from_f64)
    }
    fn to_json(&self) -> Value {
        float(self.to_f64())
    }
}

impl Element for bool {
    fn from_json(value: &Value) -> Result<Self, String> {
        value.as_bool().ok_or_else(|| format!("must be a boolean, got {}", shown(value)))
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

macro_rules! columns {
    ($($variant:ident: $ty:ty),* $(,)?) => {
        /// One model input's values for a run of rows, row-major.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Column {
            $($variant(Vec<$ty>),)*
            String(Vec<String>),
        }

        impl Column {
            fn with_capacity(elem: ElemType, capacity: usize) -> Self {
                match elem {
                    $(ElemType::$variant => Self::$variant(Vec::with_capacity(capacity)),)*
                    ElemType::String => Self::String(Vec::with_capacity(capacity)),
                }
            }

            /// Appends one JSON value; the error message says what was expected.
            fn push(&mut self, value: &Value) -> Result<(), String> {
                match self {
                    $(Self::$variant(c) => c.push(<$ty>::from_json(value)?),)*
                    Self::String(c) => {
                        c.push(value.as_str().ok_or_else(|| format!("must be a string, got {}", shown(value)))?.to_owned())
                    }
                }
                Ok(())
            }

            fn extend(&mut self, other: &Column) {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => a.extend_from_slice(b),)*
                    (Self::String(a), Self::String(b)) => a.extend_from_slice(b),
                    _ => unreachable!("columns of one model always share element types"),
                }
            }

            fn into_input(self, shape: Vec<i64>) -> ort::Result<SessionInputValue<'static>> {
                Ok(match self {
                    $(Self::$variant(v) => Tensor::from_array((shape, v))?.into(),)*
                    Self::String(v) => Tensor::from_string_array((shape, v.as_slice()))?.into(),
                })
            }
        }

        /// Every element of an output tensor, as JSON, row-major.
        fn output_values(value: &DynValue, elem: ElemType) -> ort::Result<Vec<Value>> {
            Ok(match elem {
                $(ElemType::$variant => value.try_extract_tensor::<$ty>()?.1.iter().map(Element::to_json).collect(),)*
                ElemType::String => value.try_extract_strings()?.1.into_iter().map(Value::from).collect(),
            })
        }
    };
}

columns!(
    F16: half::f16, F32: f32, F64: f64,
    I8: i8, I16: i16, I32: i32, I64: i64,
    U8: u8, U16: u16, U32: u32, U64: u64,
    Bool: bool,
);

/// Encoded rows: one [`Column`] per model input, in the plan's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub len: usize,
    pub columns: Vec<Column>,
}

impl Rows {
    /// Encodes instances that passed schema validation. `first_index` numbers them in the
    /// request, for error paths.
    pub fn encode(plan: &FeedPlan, instances: &[Value], first_index: usize) -> Result<Rows, Vec<FieldError>> {
        let mut errors = Vec::new();
        let columns = plan
            .inputs
            .iter()
            .map(|input| {
                let mut column = Column::with_capacity(input.elem, instances.len() * input.fields.len());
                for (i, instance) in instances.iter().enumerate() {
                    for field in &input.fields {
                        let value = instance.get(field).unwrap_or(&Value::Null);
                        if let Err(message) = column.push(value) {
                            errors
                                .push(FieldError { path: format!("/instances/{}/{field}", first_index + i), message });
                        }
                    }
                }
                column
            })
            .collect();
        if errors.is_empty() {
            Ok(Rows { len: instances.len(), columns })
        } else {
            Err(errors)
        }
    }

    /// Joins several jobs' rows into one batch, in order.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Rows>) -> Rows {
        let mut parts = parts.into_iter();
        let mut out = parts.next().expect("a batch holds at least one job").clone();
        for part in parts {
            out.len += part.len;
            for (a, b) in out.columns.iter_mut().zip(&part.columns) {
                a.extend(b);
            }
        }
        out
    }

    pub fn into_inputs(self, plan: &FeedPlan) -> ort::Result<Vec<(Cow<'static, str>, SessionInputValue<'static>)>> {
        let n = self.len as i64;
        plan.inputs
            .iter()
            .zip(self.columns)
            .map(|(input, column): (&InputPlan, Column)| {
                let shape = if input.rank == 1 { vec![n] } else { vec![n, input.fields.len() as i64] };
                Ok((Cow::Owned(input.name.clone()), column.into_input(shape)?))
            })
            .collect()
    }
}

/// One row's outputs, keyed by output name.
pub type Prediction = Map<String, Value>;

/// Splits each output along its first dimension into `rows` predictions: a scalar where a row
/// holds one element, a flat array where it holds several.
pub fn predictions(outputs: &SessionOutputs<'_>, infos: &[TensorInfo], rows: usize) -> Result<Vec<Prediction>, String> {
    let mut out: Vec<Prediction> = (0..rows).map(|_| Map::with_capacity(infos.len())).collect();
    for info in infos {
        let value = outputs.get(&info.name).ok_or_else(|| format!("output '{}' missing from the run", info.name))?;
        let values = output_values(value, info.elem).map_err(|e| format!("output '{}': {e}", info.name))?;
        if rows == 0 || values.len() % rows != 0 {
            return Err(format!("output '{}' has {} elements for {rows} rows", info.name, values.len()));
        }
        let per_row = values.len() / rows;
        let mut values = values.into_iter();
        for prediction in &mut out {
            let value = if per_row == 1 {
                values.next().expect("length checked above")
            } else {
                Value::Array(values.by_ref().take(per_row).collect())
            };
            prediction.insert(info.name.clone(), value);
        }
    }
    Ok(out)
}

/// JSON has no NaN or infinity; such outputs become null rather than failing the request.
fn float(v: f64) -> Value {
    Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> FeedPlan {
        FeedPlan {
            inputs: vec![
                InputPlan { name: "x".into(), elem: ElemType::F32, fields: vec!["a".into(), "b".into()], rank: 2 },
                InputPlan { name: "n".into(), elem: ElemType::I64, fields: vec!["n".into()], rank: 2 },
                InputPlan { name: "s".into(), elem: ElemType::String, fields: vec!["s".into()], rank: 1 },
            ],
        }
    }

    #[test]
    fn encodes_row_major_and_accepts_integral_floats() {
        let rows = Rows::encode(
            &plan(),
            &[json!({"a": 1, "b": 2.5, "n": 3.0, "s": "yes"}), json!({"a": 4, "b": 5, "n": 6, "s": "no"})],
            0,
        )
        .unwrap();
        assert_eq!(rows.len, 2);
        assert_eq!(rows.columns[0], Column::F32(vec![1.0, 2.5, 4.0, 5.0]));
        assert_eq!(rows.columns[1], Column::I64(vec![3, 6]));
        assert_eq!(rows.columns[2], Column::String(vec!["yes".into(), "no".into()]));
    }

    #[test]
    fn conversion_errors_carry_paths() {
        let errs = Rows::encode(&plan(), &[json!({"a": 1, "b": 2, "n": 3.5, "s": 1})], 7).unwrap_err();
        assert_eq!(errs[0].path, "/instances/7/n");
        assert_eq!(errs[0].message, "must be an integer, got 3.5");
        assert_eq!(errs[1].path, "/instances/7/s");
    }

    #[test]
    fn small_and_unsigned_integers_are_range_checked() {
        let mut column = Column::with_capacity(ElemType::U8, 2);
        column.push(&json!(255)).unwrap();
        assert_eq!(column.push(&json!(256)).unwrap_err(), "must be an integer between 0 and 255, got 256");
        assert_eq!(column.push(&json!(-1)).unwrap_err(), "must be an integer between 0 and 255, got -1");
        let mut column = Column::with_capacity(ElemType::U64, 1);
        column.push(&json!(u64::MAX)).unwrap();
        assert_eq!(column, Column::U64(vec![u64::MAX]));
        let mut column = Column::with_capacity(ElemType::F16, 1);
        column.push(&json!(1.5)).unwrap();
        assert_eq!(column, Column::F16(vec![half::f16::from_f32(1.5)]));
    }

    #[test]
    fn integers_beyond_u64_are_refused_for_their_range() {
        let two_to_64: Value = serde_json::from_str("18446744073709551616").unwrap();
        assert!(two_to_64.is_f64(), "serde_json reads 2^64 as a float");
        let mut column = Column::with_capacity(ElemType::U64, 1);
        assert_eq!(
            column.push(&two_to_64).unwrap_err(),
            "must be an integer between 0 and 18446744073709551615, got 18446744073709551616"
        );
        let mut column = Column::with_capacity(ElemType::I64, 1);
        assert_eq!(
            column.push(&json!(1e300)).unwrap_err(),
            "must be an integer between -9223372036854775808 and 9223372036854775807, got 1e+300"
        );
        column.push(&json!(1e15)).unwrap();
        assert_eq!(column.push(&Value::Null).unwrap_err(), "must be an integer, got null");
    }

    #[test]
    fn floats_that_would_overflow_their_type_are_refused() {
        assert!(serde_json::from_str::<Value>("1e400").is_err(), "serde_json refuses what overflows f64");
        let mut column = Column::with_capacity(ElemType::F16, 2);
        column.push(&json!(65504)).unwrap();
        column.push(&json!(-65504.0)).unwrap();
        assert_eq!(column.push(&json!(1e6)).unwrap_err(), "must be a number between -65504 and 65504, got 1000000.0");
        assert_eq!(column.push(&json!(65505)).unwrap_err(), "must be a number between -65504 and 65504, got 65505");
        let mut column = Column::with_capacity(ElemType::F32, 2);
        column.push(&json!(3.4028235e38)).unwrap();
        assert_eq!(column, Column::F32(vec![f32::MAX]));
        assert_eq!(
            column.push(&json!(-1e300)).unwrap_err(),
            "must be a number between -3.4028235e38 and 3.4028235e38, got -1e+300"
        );
        let mut column = Column::with_capacity(ElemType::F64, 1);
        column.push(&json!(1e300)).unwrap();
        assert_eq!(column.push(&Value::Null).unwrap_err(), "must be a number, got null");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let mut column = Column::with_capacity(ElemType::F32, 1);
        let err = column.push(&json!("x".repeat(1 << 20))).unwrap_err();
        assert_eq!(err, format!("must be a number, got \"{}…\" (1048576 chars)", "x".repeat(100)));
    }

    #[test]
    fn concat_keeps_order() {
        let p = plan();
        let a = Rows::encode(&p, &[json!({"a": 1, "b": 2, "n": 3, "s": "x"})], 0).unwrap();
        let b = Rows::encode(&p, &[json!({"a": 4, "b": 5, "n": 6, "s": "y"})], 0).unwrap();
        let joined = Rows::concat([&a, &b]);
        assert_eq!(joined.len, 2);
        assert_eq!(joined.columns[0], Column::F32(vec![1.0, 2.0, 4.0, 5.0]));
        assert_eq!(joined.columns[2], Column::String(vec!["x".into(), "y".into()]));
    }
}
