//! One row of a batch written as JSON straight from its tensors, with no map built on the way:
//! for `/predict` answers, KServe V1 answers and prediction-log lines.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::ModelSpec;
use crate::tensor::columns::Column;
use crate::tensor::rows::{Batch, Cell};
use crate::tensor::signature::TensorInfo;

/// The outputs under their public names: each graph output renamed by `renames` (graph name ->
/// public name, from the config's `outputs`), the others as the graph names them. Every key
/// must name an output, and the names that result must all differ.
pub fn public_outputs(
    graph: &[TensorInfo],
    renames: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<TensorInfo>, String> {
    let names = || graph.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(unknown) = renames.keys().find(|k| !graph.iter().any(|o| o.name == **k)) {
        return Err(format!(
            "outputs: '{}' is not an output of the graph; its outputs are: {}",
            crate::error::clip(unknown),
            names()
        ));
    }
    let public: Vec<TensorInfo> = graph
        .iter()
        .map(|o| TensorInfo { name: renames.get(&o.name).unwrap_or(&o.name).clone(), ..o.clone() })
        .collect();
    for (i, output) in public.iter().enumerate() {
        if let Some(other) = public[..i].iter().position(|o| o.name == output.name) {
            return Err(format!(
                "outputs: outputs '{}' and '{}' would both be answered as '{}'",
                graph[other].name, graph[i].name, output.name
            ));
        }
    }
    Ok(public)
}

/// Probabilities keyed by class name, for one output (opt-in per model).
#[derive(Debug, Clone)]
pub struct Classes {
    /// The output that holds one probability per class.
    pub output: usize,
    pub labels: Vec<String>,
    /// With the config's `labels`: the output holding the predicted class, and the value it
    /// gives for each column; such a value is written as that column's label instead.
    pub label: Option<(usize, Vec<String>)>,
}

impl Classes {
    /// The label naming the class the label output gave as `value`; `None` for a value that
    /// names no column (it is then written as given).
    fn name_of(&self, values: &[String], value: &serde_json::Value) -> Option<&str> {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        values.iter().position(|v| *v == text).and_then(|k| self.labels.get(k)).map(String::as_str)
    }
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
        let infos = &self.spec.outputs;
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
            Some(Classes { label: Some((output, values)), .. })
                if *output == self.output && outputs.per_row[*output] == 1 =>
            {
                let value = outputs.columns[*output].value_at(self.row);
                match self.spec.classes.as_ref().and_then(|c| c.name_of(values, &value)) {
                    Some(name) => s.serialize_str(name),
                    None => value.serialize(s),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::signature::ElemType;
    use serde_json::json;

    #[test]
    fn outputs_are_renamed_when_every_key_is_an_output_and_the_names_stay_distinct() {
        let info = |name: &str| TensorInfo { name: name.into(), elem: ElemType::F32, shape: vec![-1, 1] };
        let graph = [info("label"), info("probabilities")];
        let renames = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let names = |outputs: Vec<TensorInfo>| outputs.into_iter().map(|o| o.name).collect::<Vec<_>>();
        assert_eq!(names(public_outputs(&graph, &renames(&[])).unwrap()), ["label", "probabilities"]);
        assert_eq!(names(public_outputs(&graph, &renames(&[("probabilities", "p")])).unwrap()), ["label", "p"]);
        let swapped = renames(&[("label", "probabilities"), ("probabilities", "label")]);
        assert_eq!(names(public_outputs(&graph, &swapped).unwrap()), ["probabilities", "label"]);
        let err = public_outputs(&graph, &renames(&[("variable", "price")])).unwrap_err();
        assert_eq!(err, "outputs: 'variable' is not an output of the graph; its outputs are: label, probabilities");
        let err = public_outputs(&graph, &renames(&[("label", "probabilities")])).unwrap_err();
        assert_eq!(err, "outputs: outputs 'label' and 'probabilities' would both be answered as 'probabilities'");
    }

    #[test]
    fn a_predicted_class_is_named_by_its_column_whether_a_number_or_text() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let classes = Classes { output: 1, labels: names(&["cat", "dog", "bird"]), label: None };
        let numbers = names(&["0", "1", "2"]);
        assert_eq!(classes.name_of(&numbers, &json!(1)), Some("dog"));
        assert_eq!(classes.name_of(&numbers, &json!(3)), None, "no such column: written as given");
        let graph = names(&["-1", "0", "7"]);
        assert_eq!(classes.name_of(&graph, &json!(7)), Some("bird"));
        assert_eq!(classes.name_of(&graph, &json!("-1")), Some("cat"));
        assert_eq!(classes.name_of(&graph, &json!(true)), None);
    }
}
