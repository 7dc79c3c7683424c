//! Class labels of classifiers, so that probabilities can be returned keyed by class.
//!
//! A model opts in with `probabilities_by_class = true` in its `[[models]]` entry. Three things
//! are then settled once, at load time:
//!
//! - **Which output holds the probabilities** ([`probability_output`]): the output named
//!   `probabilities` when there is one (what skl2onnx names it), else the only floating-point
//!   output of shape `[N, K]`. Either way K must be a fixed dimension of at least 2.
//! - **The class names** ([`resolve_labels`]): the config's `labels` when given (they win over
//!   the graph's, and the graph is then not read), else the names the graph declares
//!   ([`graph_class_labels`]). There must be exactly K of them, all different.
//! - Column `k` of the probabilities belongs to label `k`: classifiers converted by skl2onnx
//!   emit their probability columns in the order of their `classlabels_*` attribute.
//!
//! The graph's names are read from the ONNX file's protobuf with `prost`, declaring only the
//! few fields needed; everything else (weights included) is skipped unparsed.

use std::path::Path;

use serde::Serialize;

use crate::config::first_duplicate;
pub use crate::config::{check_labels, MAX_LABELS, MAX_LABEL_CHARS};
use crate::tensor::signature::{ElemType, TensorInfo};

/// The ONNX domain of the classic machine-learning operators (`ai.onnx.ml`).
pub const ML_DOMAIN: &str = "ai.onnx.ml";
/// Node attributes that name a classifier's classes, in column order of its probabilities.
/// `classlabels_strings` on every classifier; integers are `classlabels_ints` on
/// LinearClassifier and SVMClassifier, `classlabels_int64s` on TreeEnsembleClassifier and ZipMap.
pub const LABEL_ATTRIBUTES: [&str; 3] = ["classlabels_strings", "classlabels_ints", "classlabels_int64s"];
/// The output that holds the probabilities when a graph has one by this name.
pub const PROBABILITIES_OUTPUT: &str = "probabilities";
/// The output that holds the predicted class when a graph has one by this name.
pub const LABEL_OUTPUT: &str = "label";

/// Only the parts of `onnx.proto` needed here; prost skips every other field.
mod proto {
    /// `ModelProto`; `graph = 7`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    /// `GraphProto`; `node = 1`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
    }

    /// `NodeProto`; `input = 1`, `name = 3`, `op_type = 4`, `attribute = 5`, `domain = 7`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        #[prost(string, tag = "7")]
        pub domain: String,
    }

    /// `AttributeProto`; `name = 1`, `ints = 8`, `strings = 9`. ONNX (proto2) writes `ints`
    /// unpacked; prost reads both encodings.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
    }
}

/// The classes the ONNX file at `path` names, in column order of its probabilities; `None`
/// when it names none. See [`graph_class_labels_from_bytes`].
pub fn graph_class_labels(path: &Path) -> Result<Option<Vec<String>>, String> {
    crate::reading::note(path);
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    graph_class_labels_from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The classes a serialized `ModelProto` names: the first non-empty `classlabels_strings`,
/// `classlabels_ints` or `classlabels_int64s` attribute of each `ai.onnx.ml` node of the main
/// graph (LinearClassifier, SVMClassifier, TreeEnsembleClassifier, ZipMap...), integers written
/// as decimal text (`-1`, `0`, `7`). Several nodes naming the same classes (an ensemble, a
/// classifier followed by ZipMap) count once; nodes that disagree (one-vs-rest models, whose
/// inner binary classifiers are labelled 0 and 1) are an error, since which names belong to the
/// output cannot be told. Subgraphs and model-local functions are not searched; classifiers
/// that keep their classes in an initializer (skl2onnx's MLPClassifier, for one) name none.
pub fn graph_class_labels_from_bytes(bytes: &[u8]) -> Result<Option<Vec<String>>, String> {
    use prost::Message;
    let model = proto::ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
    let mut found: Option<(Vec<String>, String)> = None;
    for node in model.graph.iter().flat_map(|g| &g.node) {
        if node.domain != ML_DOMAIN {
            continue;
        }
        let Some(labels) = node_labels(node)? else { continue };
        let who = if node.name.is_empty() {
            format!("{} node", node.op_type)
        } else {
            format!("{} node '{}'", node.op_type, node.name)
        };
        match &found {
            None => found = Some((labels, who)),
            Some((first, first_who)) if *first != labels => {
                return Err(format!(
                    "the graph names its classes twice, differently: {first_who} {first:?}, {who} {labels:?}; \
                     list the classes in the model's `labels`"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(labels, _)| labels))
}

/// A value each graph input takes that the graph knows: the first category of the
/// `ai.onnx.ml` OneHotEncoder or LabelEncoder fed by the input itself (`cats_strings`,
/// `cats_int64s`, `keys_strings`, `keys_int64s`), by input name. An encoder refuses a category
/// it does not know, so an example made of these runs where zeros and empty strings may not.
pub fn input_categories(path: &Path) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    use prost::Message;
    crate::reading::note(path);
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| format!("not an ONNX model: {e}"))?;
    let mut found = std::collections::BTreeMap::new();
    for node in model.graph.iter().flat_map(|g| &g.node) {
        if node.domain != ML_DOMAIN || !matches!(node.op_type.as_str(), "OneHotEncoder" | "LabelEncoder") {
            continue;
        }
        let Some(input) = node.input.first() else { continue };
        for attribute in &node.attribute {
            let value = match attribute.name.as_str() {
                "cats_strings" | "keys_strings" => {
                    attribute.strings.first().map(|s| serde_json::json!(String::from_utf8_lossy(s)))
                }
                "cats_int64s" | "keys_int64s" => attribute.ints.first().map(|i| serde_json::json!(i)),
                _ => None,
            };
            if let Some(value) = value {
                found.entry(input.clone()).or_insert(value);
            }
        }
    }
    Ok(found)
}

fn node_labels(node: &proto::NodeProto) -> Result<Option<Vec<String>>, String> {
    for attribute in &node.attribute {
        if !LABEL_ATTRIBUTES.contains(&attribute.name.as_str()) {
            continue;
        }
        if !attribute.strings.is_empty() {
            let labels = attribute
                .strings
                .iter()
                .map(|s| String::from_utf8(s.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("{} node '{}': {} is not UTF-8", node.op_type, node.name, attribute.name))?;
            return Ok(Some(labels));
        }
        if !attribute.ints.is_empty() {
            return Ok(Some(attribute.ints.iter().map(i64::to_string).collect()));
        }
    }
    Ok(None)
}

/// The output that holds a classifier's probabilities, and its number of classes K.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbabilityOutput {
    /// Its position among the model's outputs.
    pub index: usize,
    pub name: String,
    /// K, the output's second dimension.
    pub classes: usize,
}

/// Picks the output holding the probabilities: the one named `probabilities` if any (it must
/// then fit, no other is tried), else the only floating-point (float16/32/64) output of shape
/// `[N, K]`. K must be fixed and at least 2: one column names no choice between classes.
pub fn probability_output(outputs: &[TensorInfo]) -> Result<ProbabilityOutput, String> {
    let is_float = |o: &TensorInfo| matches!(o.elem, ElemType::F16 | ElemType::F32 | ElemType::F64);
    let width = |o: &TensorInfo| match o.shape.as_slice() {
        [_, k] if *k >= 2 => Some(*k as usize),
        _ => None,
    };
    if let Some((index, named)) = outputs.iter().enumerate().find(|(_, o)| o.name == PROBABILITIES_OUTPUT) {
        let classes = width(named).filter(|_| is_float(named)).ok_or_else(|| {
            format!(
                "output '{PROBABILITIES_OUTPUT}' is {:?} of shape {}; probabilities by class need a float \
                 [N, K] output with K fixed and at least 2",
                named.elem,
                shape_text(&named.shape)
            )
        })?;
        return Ok(ProbabilityOutput { index, name: named.name.clone(), classes });
    }
    let fits: Vec<(usize, &TensorInfo, usize)> = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| is_float(o))
        .filter_map(|(i, o)| width(o).map(|k| (i, o, k)))
        .collect();
    match fits.as_slice() {
        [(index, output, classes)] => {
            Ok(ProbabilityOutput { index: *index, name: output.name.clone(), classes: *classes })
        }
        [] => Err(format!(
            "no output holds probabilities: none is named '{PROBABILITIES_OUTPUT}' and none is a float [N, K] \
             tensor with K fixed and at least 2 (outputs: {})",
            outputs
                .iter()
                .map(|o| format!("'{}' {:?} {}", o.name, o.elem, shape_text(&o.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        several => Err(format!(
            "several outputs could hold the probabilities ({}); name the one that does '{PROBABILITIES_OUTPUT}' \
             in the graph",
            several.iter().map(|(_, o, _)| format!("'{}'", o.name)).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| if *d < 0 { "N".to_owned() } else { d.to_string() }).collect();
    format!("[{}]", dims.join(", "))
}

/// Where the class names came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// The model's `labels` in the config.
    Config,
    /// The graph's `classlabels_*` attributes.
    Graph,
}

/// The class names, in column order of the probabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassLabels {
    pub labels: Vec<String>,
    pub source: LabelSource,
}

/// The final class names for an output (named `output`, for messages) with `classes` columns:
/// the config's when given, else the graph's. They must number exactly `classes` and differ
/// from one another.
pub fn resolve_labels(
    config: Option<&[String]>,
    graph: Option<&[String]>,
    classes: usize,
    output: &str,
) -> Result<ClassLabels, String> {
    let (labels, source, whose) = match (config, graph) {
        (Some(labels), _) => (labels, LabelSource::Config, "the config's `labels`"),
        (None, Some(labels)) => (labels, LabelSource::Graph, "the graph's class labels"),
        (None, None) => {
            return Err(format!(
                "output '{output}' has {classes} classes but nothing names them: the graph has no \
                 classlabels_* attribute on an {ML_DOMAIN} node; list them in the model's `labels`"
            ))
        }
    };
    if labels.len() != classes {
        return Err(format!(
            "{whose} name {} classes ({}) but output '{output}' has {classes} columns",
            labels.len(),
            preview(labels)
        ));
    }
    if let Some(dup) = first_duplicate(labels) {
        return Err(format!("{whose} name the class {dup:?} more than once"));
    }
    Ok(ClassLabels { labels: labels.to_vec(), source })
}

fn preview(labels: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = labels.iter().take(SHOWN).map(|l| format!("{l:?}")).collect();
    if labels.len() > SHOWN {
        parts.push(format!("... {} more", labels.len() - SHOWN));
    }
    parts.join(", ")
}

/// The output that holds a classifier's predicted class, for naming it by the config's
/// `labels`: the one named `label` (skl2onnx's name), else the only integer or string output of
/// shape `[N]` or `[N, 1]` besides the probabilities. `None` when there is no such output.
pub fn label_output(outputs: &[TensorInfo], probabilities: usize) -> Option<usize> {
    let fits = |o: &TensorInfo| {
        let kind = matches!(
            o.elem,
            ElemType::I8
                | ElemType::I16
                | ElemType::I32
                | ElemType::I64
                | ElemType::U8
                | ElemType::U16
                | ElemType::U32
                | ElemType::U64
                | ElemType::String
        );
        kind && matches!(o.shape.as_slice(), [_] | [_, 1])
    };
    let candidates = || outputs.iter().enumerate().filter(|(i, o)| *i != probabilities && fits(o));
    if let Some((i, _)) = candidates().find(|(_, o)| o.name == LABEL_OUTPUT) {
        return Some(i);
    }
    let mut all = candidates();
    match (all.next(), all.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// The values the label output takes, in column order of the probabilities, as text: the
/// graph's class names when it has them (`"setosa"`, `"7"`), else the column numbers, since a
/// classifier whose classes are 0 to K-1 predicts its column's number.
pub fn label_values(graph: Option<&[String]>, classes: usize) -> Vec<String> {
    match graph {
        Some(names) if names.len() == classes => names.to_vec(),
        _ => (0..classes).map(|k| k.to_string()).collect(),
    }
}

/// Everything needed to key a classifier's probabilities by class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassProbabilities {
    pub output: ProbabilityOutput,
    /// `labels[k]` names column `k` of the output.
    pub labels: Vec<String>,
    pub source: LabelSource,
    /// With the config's `labels`: the label output ([`label_output`]) and the value it gives
    /// for each column ([`label_values`]), so that it answers the config's name too.
    pub label: Option<(usize, Vec<String>)>,
}

/// For a model with `probabilities_by_class = true`: picks the output ([`probability_output`])
/// and its class names ([`resolve_labels`]); with the config's `labels`, also the label output
/// and the values it takes, from the graph's class names when it has them.
pub fn class_probabilities(
    path: &Path,
    config_labels: Option<&[String]>,
    outputs: &[TensorInfo],
) -> Result<ClassProbabilities, String> {
    let output = probability_output(outputs)?;
    let label = label_output(outputs, output.index);
    // The graph is read when its names are used: for the probabilities without config labels,
    // or to tell which config label a predicted class is. One that cannot be read then is
    // taken as naming none (its labels are not needed to key the probabilities).
    let graph = match (config_labels, label) {
        (None, _) => graph_class_labels(path)?,
        (Some(_), Some(_)) => graph_class_labels(path).ok().flatten(),
        (Some(_), None) => None,
    };
    let ClassLabels { labels, source } = resolve_labels(config_labels, graph.as_deref(), output.classes, &output.name)?;
    let label = match source {
        LabelSource::Config => label.map(|i| (i, label_values(graph.as_deref(), output.classes))),
        LabelSource::Graph => None,
    };
    Ok(ClassProbabilities { output, labels, source, label })
}

#[cfg(test)]
mod tests {
    use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto};
    use super::*;
    use prost::Message;

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn node(op: &str, domain: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            input: vec!["x".into()],
            name: format!("{op}1"),
            op_type: op.into(),
            attribute,
            domain: domain.into(),
        }
    }

    fn text_attr(name: &str, values: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: vec![],
            strings: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    fn int_attr(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), ints: values.to_vec(), strings: vec![] }
    }

    fn model(nodes: Vec<NodeProto>) -> Vec<u8> {
        ModelProto { graph: Some(GraphProto { node: nodes }) }.encode_to_vec()
    }

    fn output(name: &str, elem: ElemType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), elem, shape: shape.to_vec() }
    }

    #[test]
    fn the_bundled_iris_model_names_its_species() {
        let labels = graph_class_labels(&repo("models/iris.onnx")).unwrap();
        assert_eq!(labels, Some(strings(&["setosa", "versicolor", "virginica"])));
    }

    #[test]
    fn regressors_name_no_classes() {
        assert_eq!(graph_class_labels(&repo("models/house_price.onnx")).unwrap(), None);
        assert_eq!(graph_class_labels(&repo("models/house_price_linear.onnx")).unwrap(), None);
    }

    #[test]
    fn inputs_fed_to_encoders_take_their_first_category() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encoders.onnx");
        let fed = |input: &str, mut node: NodeProto| {
            node.input = vec![input.into()];
            node
        };
        let nodes = vec![
            fed("colour", node("OneHotEncoder", ML_DOMAIN, vec![text_attr("cats_strings", &["red", "blue"])])),
            fed("size", node("LabelEncoder", ML_DOMAIN, vec![int_attr("keys_int64s", &[3, 5])])),
            fed("other", node("OneHotEncoder", "", vec![text_attr("cats_strings", &["not ml"])])),
            fed("tree", node("TreeEnsembleClassifier", ML_DOMAIN, vec![int_attr("classlabels_int64s", &[1])])),
        ];
        std::fs::write(&path, model(nodes)).unwrap();
        let found = input_categories(&path).unwrap();
        let want: std::collections::BTreeMap<String, serde_json::Value> =
            [("colour".into(), serde_json::json!("red")), ("size".into(), serde_json::json!(3))].into();
        assert_eq!(found, want);
    }

    #[test]
    fn a_tiny_model_written_to_a_file_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.onnx");
        let nodes = vec![
            node("Cast", "", vec![int_attr("to", &[1])]),
            node("TreeEnsembleClassifier", ML_DOMAIN, vec![int_attr("classlabels_int64s", &[-1, 0, 7])]),
        ];
        std::fs::write(&path, model(nodes)).unwrap();
        assert_eq!(graph_class_labels(&path).unwrap(), Some(strings(&["-1", "0", "7"])));
        let err = graph_class_labels(&dir.path().join("absent.onnx")).unwrap_err();
        assert!(err.starts_with("cannot read ") && err.contains("absent.onnx"), "{err}");
    }

    #[test]
    fn labels_come_from_ml_nodes_only_and_agreeing_nodes_count_once() {
        let classifier = node("LinearClassifier", ML_DOMAIN, vec![text_attr("classlabels_strings", &["a", "b"])]);
        let zipmap = node("ZipMap", ML_DOMAIN, vec![text_attr("classlabels_strings", &["a", "b"])]);
        assert_eq!(
            graph_class_labels_from_bytes(&model(vec![classifier.clone(), zipmap])).unwrap(),
            Some(strings(&["a", "b"]))
        );
        // The attribute name alone is not enough outside ai.onnx.ml.
        let custom = node("Mine", "com.example", vec![text_attr("classlabels_strings", &["x"])]);
        assert_eq!(graph_class_labels_from_bytes(&model(vec![custom])).unwrap(), None);
        // An empty attribute is passed over for the next one.
        let svm = node(
            "SVMClassifier",
            ML_DOMAIN,
            vec![text_attr("classlabels_strings", &[]), int_attr("classlabels_ints", &[0, 1])],
        );
        assert_eq!(graph_class_labels_from_bytes(&model(vec![svm])).unwrap(), Some(strings(&["0", "1"])));
        assert_eq!(graph_class_labels_from_bytes(&model(vec![])).unwrap(), None);
        assert_eq!(graph_class_labels_from_bytes(&ModelProto { graph: None }.encode_to_vec()).unwrap(), None);
    }

    #[test]
    fn disagreeing_nodes_and_bad_bytes_are_errors() {
        let outer = node("LinearClassifier", ML_DOMAIN, vec![text_attr("classlabels_strings", &["a", "b", "c"])]);
        let inner = node("LinearClassifier", ML_DOMAIN, vec![int_attr("classlabels_ints", &[0, 1])]);
        let err = graph_class_labels_from_bytes(&model(vec![outer, inner])).unwrap_err();
        assert!(err.contains("names its classes twice, differently") && err.contains("`labels`"), "{err}");

        let bad = node(
            "LinearClassifier",
            ML_DOMAIN,
            vec![AttributeProto { name: "classlabels_strings".into(), ints: vec![], strings: vec![vec![0xff, 0xfe]] }],
        );
        let err = graph_class_labels_from_bytes(&model(vec![bad])).unwrap_err();
        assert!(err.contains("is not UTF-8"), "{err}");

        let err = graph_class_labels_from_bytes(b"\x3a\xff\xff\xff").unwrap_err();
        assert!(err.starts_with("not an ONNX model"), "{err}");
    }

    #[test]
    fn the_probability_output_is_named_or_the_only_float_matrix() {
        let iris = [output("label", ElemType::String, &[-1]), output("probabilities", ElemType::F32, &[-1, 3])];
        assert_eq!(
            probability_output(&iris).unwrap(),
            ProbabilityOutput { index: 1, name: "probabilities".into(), classes: 3 }
        );

        let unnamed = [output("scores", ElemType::F64, &[-1, 4]), output("label", ElemType::I64, &[-1, 4])];
        assert_eq!(
            probability_output(&unnamed).unwrap(),
            ProbabilityOutput { index: 0, name: "scores".into(), classes: 4 }
        );

        // A named output that does not fit is an error; no other one is tried.
        let named_bad = [output("probabilities", ElemType::F32, &[-1]), output("scores", ElemType::F32, &[-1, 2])];
        let err = probability_output(&named_bad).unwrap_err();
        assert!(err.contains("output 'probabilities' is F32 of shape [N]"), "{err}");

        let regressor = [output("variable", ElemType::F32, &[-1, 1])];
        let err = probability_output(&regressor).unwrap_err();
        assert!(err.contains("no output holds probabilities") && err.contains("'variable' F32 [N, 1]"), "{err}");

        let dynamic = [output("scores", ElemType::F32, &[-1, -1])];
        assert!(probability_output(&dynamic).is_err());

        let two = [output("a", ElemType::F32, &[-1, 3]), output("b", ElemType::F16, &[-1, 3])];
        let err = probability_output(&two).unwrap_err();
        assert!(err.contains("several outputs") && err.contains("'a', 'b'"), "{err}");
    }

    #[test]
    fn the_label_output_is_named_or_the_only_integer_or_string_column() {
        let iris = [output("label", ElemType::String, &[-1]), output("probabilities", ElemType::F32, &[-1, 3])];
        assert_eq!(label_output(&iris, 1), Some(0));
        let unnamed = [output("probs", ElemType::F32, &[-1, 2]), output("class", ElemType::I64, &[-1, 1])];
        assert_eq!(label_output(&unnamed, 0), Some(1));
        let two = [
            output("p", ElemType::F32, &[-1, 2]),
            output("a", ElemType::I64, &[-1]),
            output("b", ElemType::I32, &[-1]),
        ];
        assert_eq!(label_output(&two, 0), None, "which one cannot be told");
        let named = [
            output("p", ElemType::F32, &[-1, 2]),
            output("a", ElemType::I64, &[-1]),
            output("label", ElemType::I32, &[-1]),
        ];
        assert_eq!(label_output(&named, 0), Some(2));
        let wide = [output("p", ElemType::F32, &[-1, 2]), output("label", ElemType::I64, &[-1, 2])];
        assert_eq!(label_output(&wide, 0), None, "one class per row");
        assert_eq!(label_values(Some(&strings(&["-1", "0", "7"])), 3), strings(&["-1", "0", "7"]));
        assert_eq!(label_values(None, 3), strings(&["0", "1", "2"]), "an integer label is its column");
    }

    #[test]
    fn config_labels_win_and_must_fit_the_output() {
        let graph = strings(&["0", "1", "2"]);
        let config = strings(&["cat", "dog", "bird"]);
        let got = resolve_labels(Some(&config), Some(&graph), 3, "probabilities").unwrap();
        assert_eq!(got, ClassLabels { labels: config.clone(), source: LabelSource::Config });
        let got = resolve_labels(None, Some(&graph), 3, "probabilities").unwrap();
        assert_eq!(got, ClassLabels { labels: graph.clone(), source: LabelSource::Graph });

        let err = resolve_labels(Some(&config[..2]), Some(&graph), 3, "probabilities").unwrap_err();
        assert_eq!(
            err,
            "the config's `labels` name 2 classes (\"cat\", \"dog\") but output 'probabilities' has 3 columns"
        );
        let err = resolve_labels(None, Some(&graph), 4, "p").unwrap_err();
        assert!(err.starts_with("the graph's class labels name 3 classes"), "{err}");
        let err = resolve_labels(None, None, 3, "p").unwrap_err();
        assert!(err.contains("nothing names them") && err.contains("`labels`"), "{err}");
        let dup = strings(&["a", "b", "a"]);
        let err = resolve_labels(None, Some(&dup), 3, "p").unwrap_err();
        assert_eq!(err, "the graph's class labels name the class \"a\" more than once");
    }

    #[test]
    fn config_label_lists_are_checked() {
        assert!(check_labels(&strings(&["setosa", "versicolor"])).is_ok());
        assert_eq!(check_labels(&[]).unwrap_err(), "must list at least one label");
        assert_eq!(check_labels(&strings(&["a", ""])).unwrap_err(), "label 1 is empty");
        assert_eq!(check_labels(&["é".repeat(256)]), Ok(()), "characters are counted, not bytes");
        assert_eq!(check_labels(&["x".repeat(257)]).unwrap_err(), "label 0 has 257 characters, more than 256");
        assert_eq!(check_labels(&strings(&["a", "b", "a"])).unwrap_err(), "the label \"a\" is listed more than once");
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| i.to_string()).collect();
        assert_eq!(check_labels(&many).unwrap_err(), "must list at most 4096 labels, got 4097");
        assert!(check_labels(&many[..MAX_LABELS]).is_ok());
    }

    #[test]
    fn class_probabilities_reads_the_graph_only_without_config_labels() {
        let outputs = [output("label", ElemType::String, &[-1]), output("probabilities", ElemType::F32, &[-1, 3])];
        let iris = repo("models/iris.onnx");
        let got = class_probabilities(&iris, None, &outputs).unwrap();
        assert_eq!(got.labels, strings(&["setosa", "versicolor", "virginica"]));
        assert_eq!((got.source, got.output.index, got.label), (LabelSource::Graph, 1, None));
        let mine = strings(&["s", "ve", "vi"]);
        let got = class_probabilities(&iris, Some(&mine), &outputs).unwrap();
        assert_eq!(got.label, Some((0, strings(&["setosa", "versicolor", "virginica"]))), "the graph's names map");
        let got = class_probabilities(&repo("models/absent.onnx"), Some(&mine), &outputs).unwrap();
        assert_eq!((got.labels, got.source), (mine, LabelSource::Config));
        assert_eq!(got.label, Some((0, strings(&["0", "1", "2"]))), "no graph: columns by number");
        let err = class_probabilities(&repo("models/house_price.onnx"), None, &outputs).unwrap_err();
        assert!(err.contains("nothing names them"), "{err}");
    }
}
