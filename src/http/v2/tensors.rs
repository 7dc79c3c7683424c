//! Output columns back to tensors.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::tensor::columns::Column;
use crate::tensor::rows::Cell;
use crate::tensor::signature::TensorInfo;

/// One output tensor of the answer: its values from the output column, as JSON `data` or,
/// when binary, only its size (the bytes follow the JSON header).
pub(super) struct TensorOut<'a> {
    pub info: &'a TensorInfo,
    pub column: &'a Column,
    pub rows: usize,
    pub per_row: usize,
    pub binary_size: Option<usize>,
}

impl TensorOut<'_> {
    fn shape(&self) -> Vec<i64> {
        output_shape(self.info, self.rows, self.per_row)
    }
}

/// An output's shape for `rows` rows of `per_row` elements each (REST and gRPC answers).
pub fn output_shape(info: &TensorInfo, rows: usize, per_row: usize) -> Vec<i64> {
    let (rows, per_row) = (rows as i64, per_row as i64);
    match info.shape.len() {
        0 | 1 => vec![rows],
        2 => vec![rows, per_row],
        _ => {
            // Fill the one dynamic non-batch dimension, if any, from the element count.
            let known: i64 = info.shape[1..].iter().filter(|d| **d > 0).product();
            let mut shape: Vec<i64> = info.shape.clone();
            shape[0] = rows;
            for d in shape[1..].iter_mut().filter(|d| **d < 0) {
                *d = if known > 0 { per_row / known } else { per_row };
            }
            shape
        }
    }
}

impl Serialize for TensorOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("name", &self.info.name)?;
        map.serialize_entry("datatype", self.info.elem.oip_datatype())?;
        map.serialize_entry("shape", &self.shape())?;
        match self.binary_size {
            Some(size) => map.serialize_entry("parameters", &serde_json::json!({ "binary_data_size": size }))?,
            None => map.serialize_entry("data", &Elements(self.column))?,
        }
        map.end()
    }
}

struct Elements<'a>(&'a Column);

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..self.0.len()).map(|i| Cell(self.0, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::signature::ElemType;

    #[test]
    fn outputs_are_written_with_their_shape_and_shortest_floats() {
        let info = TensorInfo { name: "p".into(), elem: ElemType::F32, shape: vec![-1, 2] };
        let column = Column::F32(vec![0.1, 0.9, 0.7, 0.3]);
        let out = TensorOut { info: &info, column: &column, rows: 2, per_row: 2, binary_size: None };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"name":"p","datatype":"FP32","shape":[2,2],"data":[0.1,0.9,0.7,0.3]}"#
        );
        let out = TensorOut { binary_size: Some(16), ..out };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"name":"p","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}}"#
        );
    }
}
