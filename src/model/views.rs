//! One row of a batch written as JSON straight from its tensors, with no map built on the way:
//! for `/predict` answers, KServe V1 answers and prediction-log lines.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::ModelSpec;
use crate::tensor::columns::Column;
use crate::tensor::rows::{Batch, Cell};

/// Probabilities keyed by class name, for one output (opt-in per model).
#[derive(Debug, Clone)]
pub struct Classes {
    /// The output that holds one probability per class.
    pub output: usize,
    pub labels: Vec<String>,
}

/// Written in place of a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Row `row`'s outputs, keyed by output name: `{"price": 231000.5}`.
pub struct RowOutputs<'a> {
    pub spec: &'a ModelSpec,
    pub batch: &'a Batch,
    pub row: usize,
    /// Names written as [`REDACTED`] (the prediction log's `redact`).
    pub redact: &'a [String],
}

impl Serialize for RowOutputs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let infos = &self.spec.signature.outputs;
        let mut map = s.serialize_map(Some(infos.len()))?;
        for (i, info) in infos.iter().enumerate() {
            if self.redact.contains(&info.name) {
                map.serialize_entry(&info.name, REDACTED)?;
            } else {
                map.serialize_entry(
                    &info.name,
                    &OutputCell { spec: self.spec, batch: self.batch, output: i, row: self.row },
                )?;
            }
        }
        map.end()
    }
}

/// One row's outputs as a JSON map, as `/predict` writes them: through the text, so that floats
/// keep their shortest form (`0.3`, not its f64 widening). For answers compared or kept as JSON.
pub fn row_outputs_json(spec: &ModelSpec, batch: &Batch, row: usize) -> serde_json::Map<String, serde_json::Value> {
    let text = serde_json::to_string(&RowOutputs { spec, batch, row, redact: &[] }).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

/// One output of one row: a scalar, an array, or a map of class to probability.
pub struct OutputCell<'a> {
    pub spec: &'a ModelSpec,
    pub batch: &'a Batch,
    pub output: usize,
    pub row: usize,
}

impl Serialize for OutputCell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let outputs = &self.batch.outputs;
        match &self.spec.classes {
            Some(classes) if classes.output == self.output && outputs.per_row[self.output] == classes.labels.len() => {
                let column = &outputs.columns[self.output];
                let n = classes.labels.len();
                let mut map = s.serialize_map(Some(n))?;
                for (k, label) in classes.labels.iter().enumerate() {
                    map.serialize_entry(label, &Cell(column, self.row * n + k))?;
                }
                map.end()
            }
            _ => outputs.serialize_cell(self.output, self.row, s),
        }
    }
}

/// Row `row`'s inputs as the model saw them, keyed by field in the schema's order.
pub struct RowInputs<'a> {
    pub spec: &'a ModelSpec,
    pub batch: &'a Batch,
    pub row: usize,
    pub redact: &'a [String],
}

impl Serialize for RowInputs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = &self.spec.decoder.fields;
        let rows = &self.batch.inputs;
        let mut map = s.serialize_map(Some(fields.len()))?;
        for field in fields {
            if self.redact.contains(&field.name) {
                map.serialize_entry(&field.name, REDACTED)?;
                continue;
            }
            let at = self.row * rows.width(field.input) + field.offset;
            let column = &rows.columns[field.input];
            // An integer field fed to a float tensor is logged as the integer it was sent as.
            let integral = match column {
                Column::F32(c) if field.is_integer() => Some(f64::from(c[at])),
                Column::F64(c) if field.is_integer() => Some(c[at]),
                _ => None,
            };
            match integral {
                Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => map.serialize_entry(&field.name, &(v as i64))?,
                _ => map.serialize_entry(&field.name, &Cell(column, at))?,
            }
        }
        map.end()
    }
}
