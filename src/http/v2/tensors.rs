//! Tensors to instances and predictions back to tensors.

use serde_json::{Map, Value};

use super::types::{InferInput, OutputTensor, RequestedOutput, V2Error};
use crate::model::signature::{InputPlan, TensorInfo};
use crate::model::tensors::Prediction;

/// `/instances/3/bedrooms` reads better as `bedrooms[3]` when the client sent tensors.
pub(super) fn tensor_path(path: &str) -> String {
    match path.trim_start_matches("/instances/").split_once('/') {
        Some((row, field)) => format!("{field}[{row}]"),
        None => path.to_owned(),
    }
}

pub(super) fn selected_outputs<'a>(
    all: &'a [TensorInfo],
    wanted: Option<&[RequestedOutput]>,
) -> Result<Vec<&'a TensorInfo>, V2Error> {
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return Ok(all.iter().collect());
    };
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|o| o.name == w.name)
                .ok_or_else(|| V2Error::bad_request(format!("unknown output '{}'", w.name)))
        })
        .collect()
}

/// Checks names, datatypes and shapes, then cuts the tensors into one instance per row.
pub(super) fn to_instances(plan: &[InputPlan], inputs: &[InferInput]) -> Result<Vec<Value>, V2Error> {
    if let Some(unknown) = inputs.iter().find(|i| !plan.iter().any(|p| p.name == i.name)) {
        return Err(V2Error::bad_request(format!("unknown input '{}'", unknown.name)));
    }
    let mut rows: Option<usize> = None;
    let mut columns = Vec::with_capacity(plan.len());
    for expected in plan {
        let input = inputs
            .iter()
            .find(|i| i.name == expected.name)
            .ok_or_else(|| V2Error::bad_request(format!("missing input '{}'", expected.name)))?;
        let want = expected.elem.oip_datatype();
        if input.datatype != want {
            return Err(V2Error::bad_request(format!(
                "input '{}': datatype {} does not match the model's {want}",
                input.name, input.datatype
            )));
        }
        let width = expected.fields.len();
        let shape_ok = !input.shape.is_empty()
            && input.shape.iter().all(|d| *d >= 0)
            && input.shape[1..].iter().product::<i64>() == width as i64;
        if !shape_ok {
            return Err(V2Error::bad_request(format!(
                "input '{}': shape {:?} does not fit the model's [N, {width}]",
                input.name, input.shape
            )));
        }
        let n = input.shape[0] as usize;
        if *rows.get_or_insert(n) != n {
            return Err(V2Error::bad_request(format!(
                "input '{}' has {n} rows, others have {}",
                input.name,
                rows.unwrap_or(0)
            )));
        }
        let mut data = Vec::with_capacity(n * width);
        flatten(&input.data, &mut data);
        if data.len() != n * width {
            return Err(V2Error::bad_request(format!(
                "input '{}': shape {:?} needs {} values, data has {}",
                input.name,
                input.shape,
                n * width,
                data.len()
            )));
        }
        columns.push((expected, data));
    }
    let rows = rows.unwrap_or(0);
    let instances = (0..rows)
        .map(|r| {
            let mut instance = Map::new();
            for (input, data) in &columns {
                let width = input.fields.len();
                for (j, field) in input.fields.iter().enumerate() {
                    instance.insert(field.clone(), data[r * width + j].clone());
                }
            }
            Value::Object(instance)
        })
        .collect();
    Ok(instances)
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other.clone()),
    }
}

pub(super) fn to_output(info: &TensorInfo, predictions: &[Prediction]) -> OutputTensor {
    let mut data = Vec::new();
    for prediction in predictions {
        match prediction.get(&info.name) {
            Some(Value::Array(items)) => data.extend(items.iter().cloned()),
            Some(value) => data.push(value.clone()),
            None => {}
        }
    }
    let rows = predictions.len() as i64;
    let per_row = if rows == 0 { 0 } else { data.len() as i64 / rows };
    let shape = match info.shape.len() {
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
    };
    OutputTensor { name: info.name.clone(), shape, datatype: info.elem.oip_datatype().to_owned(), data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signature::ElemType;
    use serde_json::json;

    fn input(name: &str, shape: &[i64], datatype: &str, data: Value) -> InferInput {
        InferInput { name: name.into(), shape: shape.to_vec(), datatype: datatype.into(), parameters: None, data }
    }

    fn plan() -> Vec<InputPlan> {
        vec![
            InputPlan { name: "x".into(), elem: ElemType::F32, fields: vec!["a".into(), "b".into()], rank: 2 },
            InputPlan { name: "s".into(), elem: ElemType::String, fields: vec!["s".into()], rank: 2 },
        ]
    }

    #[test]
    fn tensors_become_rows_with_nested_or_flat_data() {
        let inputs =
            [input("x", &[2, 2], "FP32", json!([[1, 2], [3, 4]])), input("s", &[2, 1], "BYTES", json!(["p", "q"]))];
        let rows = to_instances(&plan(), &inputs).unwrap();
        assert_eq!(rows, vec![json!({"a": 1, "b": 2, "s": "p"}), json!({"a": 3, "b": 4, "s": "q"})]);
    }

    #[test]
    fn bad_tensors_are_named() {
        let err = |inputs: &[InferInput]| to_instances(&plan(), inputs).unwrap_err().error;
        let s = input("s", &[1], "BYTES", json!(["p"]));
        assert!(err(&[input("x", &[1, 2], "FP64", json!([1, 2])), input("s", &[1], "BYTES", json!(["p"]))])
            .contains("datatype FP64 does not match the model's FP32"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2, 3]))]).contains("needs 2 values, data has 3"));
        assert!(err(&[input("x", &[1, 3], "FP32", json!([1, 2, 3]))]).contains("does not fit the model's [N, 2]"));
        assert!(err(&[input("x", &[2, 2], "FP32", json!([1, 2, 3, 4])), s]).contains("has 1 rows, others have 2"));
        assert!(err(&[input("zz", &[1], "FP32", json!([1]))]).contains("unknown input 'zz'"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2]))]).contains("missing input 's'"));
    }

    #[test]
    fn outputs_are_flattened_with_their_shape() {
        let info = TensorInfo { name: "p".into(), elem: ElemType::F32, shape: vec![-1, 2] };
        let mut a = Map::new();
        a.insert("p".into(), json!([0.1, 0.9]));
        let mut b = Map::new();
        b.insert("p".into(), json!([0.7, 0.3]));
        let out = to_output(&info, &[a, b]);
        assert_eq!(out.shape, vec![2, 2]);
        assert_eq!(out.data, vec![json!(0.1), json!(0.9), json!(0.7), json!(0.3)]);
        assert_eq!(out.datatype, "FP32");
    }

    #[test]
    fn schema_paths_read_as_tensor_positions() {
        assert_eq!(tensor_path("/instances/3/bedrooms"), "bedrooms[3]");
    }
}
