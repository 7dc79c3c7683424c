//! Tensors to instances and predictions back to tensors.

use serde_json::{Map, Value};

use super::types::{InferInput, OutputTensor, RequestedOutput, V2Error};
use crate::error::{clip, shown};
use crate::model::signature::{InputPlan, TensorInfo};
use crate::model::tensors::Prediction;

/// `/instances/3/bedrooms` reads better as `bedrooms[3]` when the client sent tensors.
pub(super) fn tensor_path(path: &str) -> String {
    match path.trim_start_matches("/instances/").split_once('/') {
        Some((row, field)) => format!("{field}[{row}]"),
        None => path.to_owned(),
    }
}

/// The outputs to return: all, or those asked for. Asking for one twice is refused rather than
/// answered twice or once: either would be a guess at what the client meant.
pub(super) fn selected_outputs<'a>(
    all: &'a [TensorInfo],
    wanted: Option<&[RequestedOutput]>,
) -> Result<Vec<&'a TensorInfo>, V2Error> {
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return Ok(all.iter().collect());
    };
    let selected = wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|o| o.name == w.name)
                .ok_or_else(|| V2Error::bad_request(format!("unknown output '{}'", clip(&w.name))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Known names only by now, so a repeat shows up within the model's few outputs.
    if let Some(twice) = first_duplicate(selected.iter().map(|o| o.name.as_str())) {
        return Err(V2Error::bad_request(format!("output '{twice}' is requested more than once")));
    }
    Ok(selected)
}

fn first_duplicate<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    names.clone().enumerate().find(|(i, name)| names.clone().take(*i).any(|earlier| earlier == *name)).map(|(_, n)| n)
}

/// Checks names, datatypes, shapes and data layout, then cuts the tensors into one instance per
/// row. Every size the client states is checked, with checked arithmetic, before anything is
/// allocated for it: `shape` is only a claim, and `[1000000000000, 5]` must not reserve memory.
pub(super) fn to_instances(plan: &[InputPlan], inputs: &[InferInput], max_rows: usize) -> Result<Vec<Value>, V2Error> {
    if let Some(unknown) = inputs.iter().find(|i| !plan.iter().any(|p| p.name == i.name)) {
        return Err(V2Error::bad_request(format!("unknown input '{}'", clip(&unknown.name))));
    }
    // Known names only by now, so a repeat shows up within the model's few inputs.
    if let Some(twice) = first_duplicate(inputs.iter().map(|i| i.name.as_str())) {
        return Err(V2Error::bad_request(format!("input '{twice}' is given more than once")));
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
                input.name,
                clip(&input.datatype)
            )));
        }
        let n = check_shape(expected, &input.shape, max_rows)
            .map_err(|e| V2Error::bad_request(format!("input '{}': {e}", input.name)))?;
        if *rows.get_or_insert(n) != n {
            return Err(V2Error::bad_request(format!(
                "input '{}' has {n} rows, others have {}",
                input.name,
                rows.unwrap_or(0)
            )));
        }
        let data = leaves(&input.data, &input.shape)
            .map_err(|e| V2Error::bad_request(format!("input '{}': {e}", input.name)))?;
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

/// The tensor's elements, borrowed, row-major. `data` must be either flat (one array of
/// `element count` values) or nested exactly like `shape` (every level the right length,
/// values only at the last). The shape has passed [`check_shape`], so its element count is
/// bounded; it is still computed with checked arithmetic, and only the data actually
/// received is walked.
fn leaves<'a>(data: &'a Value, shape: &[i64]) -> Result<Vec<&'a Value>, String> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| format!("dimension {d} is out of range")))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| format!("shape {} has too many elements", shape_text(shape)))?;
    let Value::Array(items) = data else {
        return Err(format!("data must be an array, got {}", shown(data)));
    };
    if items.iter().all(|item| !item.is_array()) {
        if items.len() != count {
            return Err(format!("shape {} needs {count} values, data has {}", shape_text(shape), items.len()));
        }
        return Ok(items.iter().collect());
    }
    let mut out = Vec::with_capacity(count);
    nested(data, &dims, &mut String::from("data"), &mut out)
        .map_err(|e| format!("data is neither flat nor nested like shape {}: {e}", shape_text(shape)))?;
    Ok(out)
}

/// Walks `value` one level of `dims` at a time; `at` names the position, e.g. `data[1]`.
fn nested<'a>(value: &'a Value, dims: &[usize], at: &mut String, out: &mut Vec<&'a Value>) -> Result<(), String> {
    let Some((&len, rest)) = dims.split_first() else {
        return match value {
            Value::Array(_) => Err(format!("{at} is an array, expected a value")),
            leaf => {
                out.push(leaf);
                Ok(())
            }
        };
    };
    let Value::Array(items) = value else {
        return Err(format!("{at} is a value, expected an array of {len}"));
    };
    if items.len() != len {
        return Err(format!("{at} holds {} items, expected {len}", items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        let mark = at.len();
        at.push_str(&format!("[{i}]"));
        nested(item, rest, at, out)?;
        at.truncate(mark);
    }
    Ok(())
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
        let rows = to_instances(&plan(), &inputs, 1024).unwrap();
        assert_eq!(rows, vec![json!({"a": 1, "b": 2, "s": "p"}), json!({"a": 3, "b": 4, "s": "q"})]);
    }

    #[test]
    fn bad_tensors_are_named() {
        let err = |inputs: &[InferInput]| to_instances(&plan(), inputs, 1024).unwrap_err().error;
        let s = || input("s", &[1, 1], "BYTES", json!(["p"]));
        assert!(err(&[input("x", &[1, 2], "FP64", json!([1, 2])), s()])
            .contains("datatype FP64 does not match the model's FP32"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2, 3]))]).contains("needs 2 values, data has 3"));
        assert!(err(&[input("x", &[1, 3], "FP32", json!([1, 2, 3]))]).contains("does not fit the model's [N, 2]"));
        assert!(err(&[input("x", &[2, 2], "FP32", json!([1, 2, 3, 4])), s()]).contains("has 1 rows, others have 2"));
        assert!(err(&[input("zz", &[1], "FP32", json!([1]))]).contains("unknown input 'zz'"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2]))]).contains("missing input 's'"));
    }

    fn linear() -> Vec<InputPlan> {
        let fields = (0..5).map(|i| format!("f_{i}")).collect();
        vec![InputPlan { name: "features".into(), elem: ElemType::F32, fields, rank: 2 }]
    }

    fn linear_error(shape: &[i64], data: Value) -> String {
        to_instances(&linear(), &[input("features", shape, "FP32", data)], 1024).unwrap_err().error
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
            linear_error(&[1, -5], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [1, -5] has a negative dimension -5"
        );
        assert_eq!(
            linear_error(&[0, 5], json!([])),
            "input 'features': shape [0, 5] has 0 rows; a request needs at least one instance"
        );
        let at_limit = to_instances(&linear(), &[input("features", &[3, 5], "FP32", json!(vec![0; 15]))], 3).unwrap();
        assert_eq!(at_limit.len(), 3);
        let over = to_instances(&linear(), &[input("features", &[4, 5], "FP32", json!(vec![0; 20]))], 3).unwrap_err();
        assert_eq!(over.error, "input 'features': 4 rows, more than the limit of 3 instances per request");
    }

    #[test]
    fn shapes_must_have_the_models_rank_and_fixed_dimensions() {
        assert_eq!(
            linear_error(&[1, 1, 5], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [1, 1, 5] has 3 dimensions, the model's [N, 5] has 2"
        );
        assert_eq!(
            linear_error(&[1, 5, 1], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [1, 5, 1] has 3 dimensions, the model's [N, 5] has 2"
        );
        assert_eq!(
            linear_error(&[5], json!([1, 2, 3, 4, 5])),
            "input 'features': shape [5] has 1 dimensions, the model's [N, 5] has 2"
        );
        let long = vec![1; 1000];
        assert!(
            linear_error(&long, json!([1])).ends_with("… (3000 chars) has 1000 dimensions, the model's [N, 5] has 2")
        );
        let rank1 = [InputPlan { name: "s".into(), elem: ElemType::String, fields: vec!["s".into()], rank: 1 }];
        let rows = to_instances(&rank1, &[input("s", &[2], "BYTES", json!(["p", "q"]))], 8).unwrap();
        assert_eq!(rows, vec![json!({"s": "p"}), json!({"s": "q"})]);
        let err = to_instances(&rank1, &[input("s", &[2, 1], "BYTES", json!(["p", "q"]))], 8).unwrap_err();
        assert_eq!(err.error, "input 's': shape [2, 1] has 2 dimensions, the model's [N] has 1");
    }

    #[test]
    fn data_is_flat_or_nested_exactly_like_the_shape() {
        let ok = |shape: &[i64], data: Value| to_instances(&linear(), &[input("features", shape, "FP32", data)], 8);
        assert_eq!(ok(&[2, 5], json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).unwrap()[1]["f_0"], 6);
        assert_eq!(ok(&[2, 5], json!([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])).unwrap()[1]["f_4"], 10);
        let prefix = "input 'features': data is neither flat nor nested like shape";
        assert_eq!(
            linear_error(&[1, 5], json!([[[1, 2, 3, 4, 5]]])),
            format!("{prefix} [1, 5]: data[0] holds 1 items, expected 5")
        );
        assert_eq!(
            linear_error(&[1, 5], json!([[1, 2, 3, 4, [5]]])),
            format!("{prefix} [1, 5]: data[0][4] is an array, expected a value")
        );
        assert_eq!(
            linear_error(&[2, 5], json!([[1, 2, 3, 4, 5], [6, 7, 8, 9]])),
            format!("{prefix} [2, 5]: data[1] holds 4 items, expected 5")
        );
        assert_eq!(
            linear_error(&[2, 5], json!([[1, 2, 3, 4, 5], 6, 7, 8, 9, 10])),
            format!("{prefix} [2, 5]: data holds 6 items, expected 2")
        );
        assert_eq!(
            linear_error(&[2, 5], json!([[1, 2, 3, 4, 5], 6])),
            format!("{prefix} [2, 5]: data[1] is a value, expected an array of 5")
        );
        assert_eq!(
            linear_error(&[1, 5], json!([[1, 2], [3, 4, 5]])),
            format!("{prefix} [1, 5]: data holds 2 items, expected 1")
        );
        assert_eq!(
            linear_error(&[1, 5], json!([1, 2, 3, 4, 5, 6])),
            "input 'features': shape [1, 5] needs 5 values, data has 6"
        );
        assert_eq!(linear_error(&[1, 5], json!(7)), "input 'features': data must be an array, got 7");
    }

    #[test]
    fn repeated_names_are_refused() {
        let x = || input("features", &[1, 5], "FP32", json!([1, 2, 3, 4, 5]));
        let err = to_instances(&linear(), &[x(), x()], 8).unwrap_err().error;
        assert_eq!(err, "input 'features' is given more than once");
        let outputs = [TensorInfo { name: "p".into(), elem: ElemType::F32, shape: vec![-1, 1] }];
        let want = |name: &str| RequestedOutput { name: name.into(), parameters: None };
        let err = selected_outputs(&outputs, Some(&[want("p"), want("p")])).unwrap_err().error;
        assert_eq!(err, "output 'p' is requested more than once");
        let long = "o".repeat(5000);
        let err = selected_outputs(&outputs, Some(&[want(&long)])).unwrap_err().error;
        assert_eq!(err, format!("unknown output '{}… (5000 chars)'", "o".repeat(100)));
        assert_eq!(selected_outputs(&outputs, Some(&[want("p")])).unwrap().len(), 1);
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
