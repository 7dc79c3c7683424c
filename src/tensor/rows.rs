//! Rows of decoded instances as typed columns, a run's outputs, and the conversions to and from
//! ONNX Runtime tensors.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorRef};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use super::columns::{Column, Scalar};
use super::signature::{ElemType, FeedPlan, InputPlan, TensorInfo};
use crate::error::FieldError;

/// Encoded rows: one [`Column`] per model input, in the plan's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub len: usize,
    pub columns: Vec<Column>,
}

impl Rows {
    /// No rows yet, with room for `capacity` of them.
    pub fn with_capacity(plan: &FeedPlan, capacity: usize) -> Rows {
        let columns = plan.inputs.iter().map(|i| Column::with_capacity(i.elem, capacity * i.fields.len())).collect();
        Rows { len: 0, columns }
    }

    /// Encodes instances given as JSON trees (the schema's examples, the jsonschema fallback).
    /// `first_index` numbers them in the request, for error paths.
    pub fn encode(plan: &FeedPlan, instances: &[Value], first_index: usize) -> Result<Rows, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut rows = Rows::with_capacity(plan, instances.len());
        for (column, input) in rows.columns.iter_mut().zip(&plan.inputs) {
            for (i, instance) in instances.iter().enumerate() {
                for field in &input.fields {
                    let value = Scalar::from_value(instance.get(field).unwrap_or(&Value::Null));
                    if let Err(message) = column.push(&value) {
                        errors.push(FieldError { path: format!("/instances/{}/{field}", first_index + i), message });
                        // Keep the layout whole so that later rows still line up.
                        column.grow(1);
                    }
                }
            }
        }
        rows.len = instances.len();
        if errors.is_empty() {
            Ok(rows)
        } else {
            Err(errors)
        }
    }

    /// Joins several jobs' rows into one batch, in order: the first job's buffers are moved,
    /// the others appended to them.
    pub fn concat(parts: impl IntoIterator<Item = Rows>) -> Rows {
        let mut parts = parts.into_iter();
        let mut out = parts.next().expect("a batch holds at least one job");
        for mut part in parts {
            out.len += part.len;
            for (a, b) in out.columns.iter_mut().zip(&mut part.columns) {
                a.append(b);
            }
        }
        out
    }

    /// Cuts rows back into runs of `lens` rows (the jobs of a batch that failed).
    pub fn split(mut self, lens: &[usize]) -> Vec<Rows> {
        let mut out = Vec::with_capacity(lens.len());
        for &len in lens.iter().rev() {
            let at = self.len - len;
            let columns = self
                .columns
                .iter_mut()
                .map(|c| {
                    let width = c.len().checked_div(self.len).unwrap_or(0);
                    c.split_off(at * width)
                })
                .collect();
            self.len = at;
            out.push(Rows { len, columns });
        }
        out.reverse();
        out
    }

    /// Elements per row of input `input`.
    pub fn width(&self, input: usize) -> usize {
        self.columns[input].len().checked_div(self.len).unwrap_or(0)
    }

    /// The rows as ONNX Runtime inputs, borrowing their buffers (strings are copied: ONNX
    /// Runtime keeps its own).
    pub fn inputs<'a>(&'a self, plan: &'a FeedPlan) -> ort::Result<Vec<(Cow<'a, str>, SessionInputValue<'a>)>> {
        let n = self.len;
        plan.inputs
            .iter()
            .zip(&self.columns)
            .map(|(input, column): (&InputPlan, &Column)| {
                let shape = if input.rank == 1 { vec![n] } else { vec![n, input.fields.len()] };
                Ok((Cow::Borrowed(input.name.as_str()), view(column, shape)?))
            })
            .collect()
    }
}

macro_rules! views {
    ($($variant:ident),*) => {
        fn view(column: &Column, shape: Vec<usize>) -> ort::Result<SessionInputValue<'_>> {
            Ok(match column {
                $(Column::$variant(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),)*
                Column::String(v) => Tensor::from_string_array((shape, v.as_slice()))?.into(),
            })
        }

        /// Every element of an output tensor, row-major.
        fn output_column(value: &DynValue, elem: ElemType) -> ort::Result<Column> {
            Ok(match elem {
                $(ElemType::$variant => Column::$variant(value.try_extract_tensor()?.1.to_vec()),)*
                ElemType::String => Column::String(value.try_extract_strings()?.1),
            })
        }
    };
}
views!(F16, F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Bool);

/// A run's outputs, one column per output of the signature, in its order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub rows: usize,
    pub columns: Vec<Column>,
    /// Elements per row of each output: 1 is written as a scalar, more as an array.
    pub per_row: Vec<usize>,
}

impl Outputs {
    pub fn read(outputs: &SessionOutputs<'_>, infos: &[TensorInfo], rows: usize) -> Result<Outputs, String> {
        let mut columns = Vec::with_capacity(infos.len());
        let mut per_row = Vec::with_capacity(infos.len());
        for info in infos {
            let value =
                outputs.get(&info.name).ok_or_else(|| format!("output '{}' missing from the run", info.name))?;
            let column = output_column(value, info.elem).map_err(|e| format!("output '{}': {e}", info.name))?;
            if rows == 0 || column.len() % rows != 0 {
                return Err(format!("output '{}' has {} elements for {rows} rows", info.name, column.len()));
            }
            per_row.push(column.len() / rows);
            columns.push(column);
        }
        Ok(Outputs { rows, columns, per_row })
    }

    /// Output `output` of row `row`: a scalar, or an array when a row holds several elements.
    pub fn serialize_cell<S: Serializer>(&self, output: usize, row: usize, s: S) -> Result<S::Ok, S::Error> {
        let column = &self.columns[output];
        match self.per_row[output] {
            1 => column.serialize_at(row, s),
            n => {
                let mut seq = s.serialize_seq(Some(n))?;
                for i in row * n..(row + 1) * n {
                    seq.serialize_element(&Cell(column, i))?;
                }
                seq.end()
            }
        }
    }
}

/// One element of a column, as a `Serialize` value.
pub struct Cell<'a>(pub &'a Column, pub usize);

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_at(self.1, s)
    }
}

/// What one ONNX Runtime call took and gave; the requests of the batch share it.
#[derive(Debug)]
pub struct Batch {
    pub inputs: Rows,
    pub outputs: Outputs,
}

/// One request's part of a batch: rows `rows` of it.
#[derive(Debug, Clone)]
pub struct Slice {
    pub batch: Arc<Batch>,
    pub rows: Range<usize>,
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
        let joined = Rows::concat([a.clone(), b.clone()]);
        assert_eq!(joined.len, 2);
        assert_eq!(joined.columns[0], Column::F32(vec![1.0, 2.0, 4.0, 5.0]));
        assert_eq!(joined.columns[2], Column::String(vec!["x".into(), "y".into()]));
        assert_eq!(joined.split(&[1, 1]), vec![a, b]);
    }
}
