//! Rows of validated instances as typed columns, and the conversions to and from ORT tensors.

use std::borrow::Cow;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::Tensor;
use serde_json::{Map, Number, Value};

use super::signature::{ElemType, FeedPlan, InputPlan, TensorInfo};
use crate::error::FieldError;

/// One model input's values for a run of rows, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl Column {
    fn with_capacity(elem: ElemType, capacity: usize) -> Self {
        match elem {
            ElemType::F32 => Self::F32(Vec::with_capacity(capacity)),
            ElemType::F64 => Self::F64(Vec::with_capacity(capacity)),
            ElemType::I32 => Self::I32(Vec::with_capacity(capacity)),
            ElemType::I64 => Self::I64(Vec::with_capacity(capacity)),
            ElemType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            ElemType::String => Self::String(Vec::with_capacity(capacity)),
        }
    }

    /// Appends one JSON value; the error message says what was expected.
    fn push(&mut self, value: &Value) -> Result<(), String> {
        let as_int = |v: &Value| -> Result<i64, String> {
            // JSON Schema counts 3.0 as an integer, so it is accepted as 3.
            match v.as_i64() {
                Some(i) => Ok(i),
                None => match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                    _ => Err(format!("must be an integer, got {v}")),
                },
            }
        };
        let as_f64 = |v: &Value| v.as_f64().ok_or_else(|| format!("must be a number, got {v}"));
        match self {
            Self::F32(c) => c.push(as_f64(value)? as f32),
            Self::F64(c) => c.push(as_f64(value)?),
            Self::I32(c) => {
                let i = as_int(value)?;
                c.push(i32::try_from(i).map_err(|_| format!("must fit in a 32-bit integer, got {i}"))?)
            }
            Self::I64(c) => c.push(as_int(value)?),
            Self::Bool(c) => c.push(value.as_bool().ok_or_else(|| format!("must be a boolean, got {value}"))?),
            Self::String(c) => {
                c.push(value.as_str().ok_or_else(|| format!("must be a string, got {value}"))?.to_owned())
            }
        }
        Ok(())
    }

    fn extend(&mut self, other: &Column) {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a.extend_from_slice(b),
            (Self::F64(a), Self::F64(b)) => a.extend_from_slice(b),
            (Self::I32(a), Self::I32(b)) => a.extend_from_slice(b),
            (Self::I64(a), Self::I64(b)) => a.extend_from_slice(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            (Self::String(a), Self::String(b)) => a.extend_from_slice(b),
            _ => unreachable!("columns of one model always share element types"),
        }
    }

    fn into_input(self, shape: Vec<i64>) -> ort::Result<SessionInputValue<'static>> {
        Ok(match self {
            Self::F32(v) => Tensor::from_array((shape, v))?.into(),
            Self::F64(v) => Tensor::from_array((shape, v))?.into(),
            Self::I32(v) => Tensor::from_array((shape, v))?.into(),
            Self::I64(v) => Tensor::from_array((shape, v))?.into(),
            Self::Bool(v) => Tensor::from_array((shape, v))?.into(),
            Self::String(v) => Tensor::from_string_array((shape, v.as_slice()))?.into(),
        })
    }
}

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
        let err = |e: ort::Error| format!("output '{}': {e}", info.name);
        let values: Vec<Value> = match info.elem {
            ElemType::F32 => {
                value.try_extract_tensor::<f32>().map_err(err)?.1.iter().map(|v| float(*v as f64)).collect()
            }
            ElemType::F64 => value.try_extract_tensor::<f64>().map_err(err)?.1.iter().map(|v| float(*v)).collect(),
            ElemType::I32 => {
                value.try_extract_tensor::<i32>().map_err(err)?.1.iter().map(|v| Value::from(*v)).collect()
            }
            ElemType::I64 => {
                value.try_extract_tensor::<i64>().map_err(err)?.1.iter().map(|v| Value::from(*v)).collect()
            }
            ElemType::Bool => {
                value.try_extract_tensor::<bool>().map_err(err)?.1.iter().map(|v| Value::from(*v)).collect()
            }
            ElemType::String => value.try_extract_strings().map_err(err)?.1.into_iter().map(Value::from).collect(),
        };
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
