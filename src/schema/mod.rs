//! The JSON Schema of one instance: loaded from `schemas/` or derived from the ONNX inputs,
//! compiled once, and used to report every invalid field of a request.

use std::path::Path;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::{json, Map, Value};

mod plan;

pub use plan::{FieldPlan, InstancePlan};

use crate::error::{clip, examples_text, shown, FieldError};
use crate::tensor::signature::{ElemType, Signature};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("schema {path} is not JSON: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("schema {path} is not a valid JSON Schema: {message}")]
    Invalid { path: String, message: String },
    #[error("schema {path}: {message}")]
    Shape { path: String, message: String },
}

pub struct InstanceSchema {
    document: Value,
    validator: Validator,
    /// Properties in document order, with their declared JSON type.
    fields: Vec<(String, String)>,
    /// Built from the ONNX inputs rather than read from a file; its example is a guess.
    derived: bool,
}

impl std::fmt::Debug for InstanceSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSchema").field("fields", &self.fields).finish()
    }
}

impl InstanceSchema {
    pub fn from_file(path: &Path) -> Result<Self, SchemaError> {
        let shown = path.display().to_string();
        crate::reading::note(path);
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read { path: shown.clone(), source })?;
        let document =
            serde_json::from_str(&text).map_err(|source| SchemaError::Json { path: shown.clone(), source })?;
        Self::from_document(document, &shown)
    }

    /// Builds the schema a model without a schema file gets: one required property per input
    /// (or per column `<input>_<i>` of a single `[N, F]` input), typed by element type.
    pub fn derive(signature: &Signature, model: &str) -> Result<Self, SchemaError> {
        let document = document_for(
            signature,
            &format!("{model} instance"),
            "Derived from the model's ONNX inputs (no schema file configured).",
            false,
        );
        let mut schema = Self::from_document(document, &format!("<derived for {model}>"))?;
        schema.derived = true;
        Ok(schema)
    }

    /// Checks a document as a schema file is checked at load (draft 2020-12, an object with
    /// typed properties, valid examples); `shown` names it in errors.
    pub fn from_document(document: Value, shown: &str) -> Result<Self, SchemaError> {
        let shape = |message: String| SchemaError::Shape { path: shown.to_owned(), message };
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .build(&document)
            .map_err(|e| SchemaError::Invalid { path: shown.to_owned(), message: e.to_string() })?;
        if document.get("type").and_then(Value::as_str) != Some("object") {
            return Err(shape("the top level must have \"type\": \"object\"".into()));
        }
        let properties = document
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| shape("the top level needs \"properties\"".into()))?;
        let fields = properties
            .iter()
            .map(|(name, prop)| match prop.get("type").and_then(Value::as_str) {
                Some(ty) => Ok((name.clone(), ty.to_owned())),
                None => Err(shape(format!("property '{name}' must declare one \"type\""))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Self { document, validator, fields, derived: false };
        if schema.examples().is_empty() {
            return Err(shape("needs at least one instance under \"examples\" (used to warm the model up)".into()));
        }
        for (i, example) in schema.examples().iter().enumerate() {
            let mut errors = Vec::new();
            schema.check(i, example, &mut errors);
            if !errors.is_empty() {
                return Err(shape(format!("examples[{i}] does not satisfy the schema: {}", examples_text(&errors))));
            }
        }
        Ok(schema)
    }

    pub fn is_derived(&self) -> bool {
        self.derived
    }

    pub fn document(&self) -> &Value {
        &self.document
    }

    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    pub fn examples(&self) -> &[Value] {
        self.document.get("examples").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Appends one [`FieldError`] per violation of instance `index` of the request.
    pub fn check(&self, index: usize, instance: &Value, errors: &mut Vec<FieldError>) {
        if self.validator.is_valid(instance) {
            return;
        }
        let base = format!("/instances/{index}");
        for error in self.validator.iter_errors(instance) {
            describe(&base, &error, errors);
        }
    }
}

/// The instance schema of a graph's inputs, as a derived schema serves it and `inferd schema`
/// prints it: one required property per input (or per column `<input>_<i>` of a single
/// `[N, F]` input), typed by element type, no other property, and one example of zeros,
/// `false` and empty strings. With `bounded`, integers get their element type's range as
/// `minimum` and `maximum`, for a person to narrow; a derived schema goes without, since the
/// decoder checks that range anyway and says it better (`must be an integer between 0 and 255`).
pub fn document_for(signature: &Signature, title: &str, description: &str, bounded: bool) -> Value {
    let mut properties = Map::new();
    let mut example = Map::new();
    let mut add = |name: String, elem: ElemType, description: String| {
        example.insert(name.clone(), example_value(elem));
        let mut property = json!({"type": elem.json_type(), "description": description});
        if let Some((min, max)) = integer_range(elem).filter(|_| bounded) {
            property["minimum"] = json!(min);
            if let Some(max) = max {
                property["maximum"] = json!(max);
            }
        }
        properties.insert(name, property);
    };
    if let Some(width) = signature.matrix_width() {
        let input = &signature.inputs[0];
        for i in 0..width {
            add(
                format!("{}_{i}", input.name),
                input.elem,
                format!("Column {i} of ONNX input '{}' ({})", input.name, input.elem),
            );
        }
    } else {
        for input in &signature.inputs {
            add(input.name.clone(), input.elem, format!("ONNX input '{}' ({})", input.name, input.elem));
        }
    }
    let required: Vec<&String> = properties.keys().collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
        "examples": [example],
    })
}

/// The values an integer element type holds, as JSON Schema bounds: (minimum, maximum). None
/// for 64-bit signed integers, whose bounds JSON numbers do not hold exactly and no one sends.
fn integer_range(elem: ElemType) -> Option<(i64, Option<u64>)> {
    Some(match elem {
        ElemType::I8 => (i8::MIN.into(), Some(i8::MAX as u64)),
        ElemType::I16 => (i16::MIN.into(), Some(i16::MAX as u64)),
        ElemType::I32 => (i32::MIN.into(), Some(i32::MAX as u64)),
        ElemType::U8 => (0, Some(u8::MAX.into())),
        ElemType::U16 => (0, Some(u16::MAX.into())),
        ElemType::U32 => (0, Some(u32::MAX.into())),
        ElemType::U64 => (0, None),
        _ => return None,
    })
}

fn example_value(elem: ElemType) -> Value {
    match elem.json_type() {
        "number" => json!(0.0),
        "integer" => json!(0),
        "boolean" => json!(false),
        _ => json!(""),
    }
}

/// Rewrites jsonschema's error into `{path, message}` that names the rule and the value received.
fn describe(base: &str, error: &ValidationError<'_>, out: &mut Vec<FieldError>) {
    let path = format!("{base}{}", clip(error.instance_path.as_str()));
    let got = shown(error.instance.as_ref());
    let message = match &error.kind {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(FieldError { path: format!("{path}/{}", escape(name)), message: "is required".into() });
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                out.push(FieldError {
                    path: format!("{path}/{}", clip(&escape(name))),
                    message: "is not a field of this model".into(),
                });
            }
            return;
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
            };
            // `got string "5000"` says what was sent; `got null null` would say it twice.
            let got = match error.instance.as_ref() {
                Value::Null => got,
                other => format!("{} {got}", type_name(other)),
            };
            format!("must be {} {expected}, got {got}", article(&expected))
        }
        ValidationErrorKind::Minimum { limit } => format!("must be >= {limit}, got {got}"),
        ValidationErrorKind::Maximum { limit } => format!("must be <= {limit}, got {got}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be > {limit}, got {got}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be < {limit}, got {got}"),
        ValidationErrorKind::Enum { options } => format!("must be one of {options}, got {got}"),
        ValidationErrorKind::MinLength { limit } => format!("must be at least {limit} characters long, got {got}"),
        ValidationErrorKind::MaxLength { limit } => format!("must be at most {limit} characters long, got {got}"),
        ValidationErrorKind::Pattern { pattern } => format!("must match the pattern {pattern}, got {got}"),
        // jsonschema's own wording quotes the value whole.
        _ => clip(&error.to_string()).into_owned(),
    };
    out.push(FieldError { path, message });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// JSON Pointer escaping (RFC 6901) of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::signature::TensorInfo;

    fn house() -> InstanceSchema {
        InstanceSchema::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/house_price.json")).unwrap()
    }

    fn errors(schema: &InstanceSchema, instance: Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        schema.check(3, &instance, &mut out);
        let mut pairs: Vec<_> = out.into_iter().map(|e| (e.path, e.message)).collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn committed_example_is_valid_and_fields_keep_document_order() {
        let schema = house();
        assert!(errors(&schema, schema.examples()[0].clone()).is_empty());
        assert_eq!(schema.fields()[0].0, "lotsize");
        assert_eq!(schema.fields()[10].0, "prefarea");
    }

    #[test]
    fn reports_every_violation_with_rule_and_value() {
        let schema = house();
        let mut instance = schema.examples()[0].clone();
        instance["bedrooms"] = json!(14);
        instance["airco"] = json!("maybe");
        instance["lotsize"] = json!("5000");
        instance["colour"] = json!("red");
        instance.as_object_mut().unwrap().remove("stories");
        let got = errors(&schema, instance);
        assert_eq!(
            got,
            vec![
                ("/instances/3/airco".into(), r#"must be one of ["yes","no"], got "maybe""#.into()),
                ("/instances/3/bedrooms".into(), "must be <= 10, got 14".into()),
                ("/instances/3/colour".into(), "is not a field of this model".into()),
                ("/instances/3/lotsize".into(), r#"must be a number, got string "5000""#.into()),
                ("/instances/3/stories".into(), "is required".into()),
            ]
        );
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let schema = house();
        let mut instance = schema.examples()[0].clone();
        instance["bedrooms"] = json!(3.0);
        assert!(errors(&schema, instance.clone()).is_empty());
        instance["bedrooms"] = json!(3.5);
        assert_eq!(
            errors(&schema, instance),
            vec![("/instances/3/bedrooms".into(), "must be an integer, got number 3.5".into())]
        );
    }

    #[test]
    fn null_is_named_once_and_long_values_are_cut() {
        let schema = house();
        let mut instance = schema.examples()[0].clone();
        instance["lotsize"] = Value::Null;
        instance["airco"] = json!("y".repeat(1 << 20));
        instance[&"k".repeat(500)] = json!(1);
        let got = errors(&schema, instance);
        let cut = format!("\"{}…\" (1048576 chars)", "y".repeat(100));
        assert_eq!(got[0], ("/instances/3/airco".into(), format!(r#"must be one of ["yes","no"], got {cut}"#)));
        assert_eq!(got[1].0, format!("/instances/3/{}… (500 chars)", "k".repeat(100)));
        assert_eq!(got[2], ("/instances/3/lotsize".into(), "must be a number, got null".into()));
    }

    #[test]
    fn a_schema_whose_example_is_invalid_is_refused() {
        let doc =
            json!({"type": "object", "properties": {"a": {"type": "integer", "maximum": 1}}, "examples": [{"a": 2}]});
        let err = InstanceSchema::from_document(doc, "t").unwrap_err().to_string();
        // Plain text, never the Rust debug form (`[FieldError { path: ... }]`).
        assert!(err.ends_with("examples[0] does not satisfy the schema: examples[0].a: must be <= 1, got 2"), "{err}");
    }

    #[test]
    fn derived_schema_names_matrix_columns() {
        let sig = Signature {
            inputs: vec![TensorInfo { name: "features".into(), elem: ElemType::F32, shape: vec![-1, 3] }],
            outputs: vec![],
        };
        let schema = InstanceSchema::derive(&sig, "m").unwrap();
        let names: Vec<_> = schema.fields().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["features_0", "features_1", "features_2"]);
        assert_eq!(errors(&schema, json!({"features_0": 1})).len(), 2);
    }
}
