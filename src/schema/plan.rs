//! An instance schema compiled, at load, into one check per field: what the streaming decoder
//! applies to each value on its way into the column buffers.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::{shown, FieldError};
use crate::tensor::columns::Scalar;
use crate::tensor::signature::{ElemType, FeedPlan};

/// Keywords of the top level the plan carries out (or that only annotate).
const TOP_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "type",
    "properties",
    "required",
    "additionalProperties",
];
/// Keywords of a property the plan carries out (or that only annotate).
pub const FIELD_KEYWORDS: &[&str] = &[
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "type",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "enum",
    "minLength",
    "maxLength",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Number,
    Integer,
    String,
    Boolean,
}

#[derive(Debug, Clone)]
enum Check {
    /// `minimum` and friends: the bound, as written in the schema for messages.
    Bound {
        limit: f64,
        shown: Value,
        kind: Bound,
    },
    Enum {
        options: Vec<Value>,
        shown: String,
    },
    MinLength(u64),
    MaxLength(u64),
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Min,
    Max,
    ExclusiveMin,
    ExclusiveMax,
}

/// How one field is checked and where its value goes.
#[derive(Debug, Clone)]
pub struct FieldPlan {
    pub name: String,
    /// The model input it feeds, and its column in that input's row.
    pub input: usize,
    pub offset: usize,
    pub elem: ElemType,
    pub required: bool,
    ty: JsonType,
    checks: Vec<Check>,
}

/// Every field's check, the layout of the rows, and what the plan leaves to jsonschema.
#[derive(Debug, Clone)]
pub struct InstancePlan {
    pub fields: Vec<FieldPlan>,
    index: HashMap<String, usize>,
    /// Fields of each input, in column order (indexes into `fields`).
    pub inputs: Vec<Vec<usize>>,
    /// `additionalProperties` is not `false`: other fields are ignored, not refused.
    pub open: bool,
    /// A model with one `[N, F]` input also takes an instance as a plain row of F values.
    pub matrix: bool,
    /// Keywords found that the plan does not carry out: jsonschema checks the decoded
    /// instances against the whole schema after the plan's own checks.
    pub fallback: Vec<String>,
}

impl InstancePlan {
    /// Compiles `document` (already known to be a valid schema of an object with typed
    /// properties) for the inputs of `feed`.
    pub fn compile(document: &Value, feed: &FeedPlan, matrix: bool) -> InstancePlan {
        let mut fallback = Vec::new();
        let top = document.as_object().cloned().unwrap_or_default();
        unknown_keywords(&top, TOP_KEYWORDS, "", &mut fallback);
        let properties = top.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let required: Vec<&str> = top
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let open = match top.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(_) => {
                fallback.push("additionalProperties (a schema)".into());
                true
            }
        };
        // A required name that is not a property can never be satisfied by the plan's fields.
        if required.iter().any(|name| !properties.contains_key(*name)) {
            fallback.push("required (a name that is not a property)".into());
        }
        // Fields in the schema's order, which is the order clients send them in.
        let mut fields = Vec::with_capacity(properties.len());
        let mut inputs: Vec<Vec<usize>> = feed.inputs.iter().map(|i| vec![usize::MAX; i.fields.len()]).collect();
        for (name, schema) in &properties {
            let Some((input_index, offset)) = feed
                .inputs
                .iter()
                .enumerate()
                .find_map(|(i, input)| input.fields.iter().position(|f| f == name).map(|o| (i, o)))
            else {
                continue;
            };
            let schema = schema.as_object().cloned().unwrap_or_default();
            unknown_keywords(&schema, FIELD_KEYWORDS, name, &mut fallback);
            let ty = match schema.get("type").and_then(Value::as_str) {
                Some("integer") => JsonType::Integer,
                Some("string") => JsonType::String,
                Some("boolean") => JsonType::Boolean,
                _ => JsonType::Number,
            };
            inputs[input_index][offset] = fields.len();
            fields.push(FieldPlan {
                name: name.clone(),
                input: input_index,
                offset,
                elem: feed.inputs[input_index].elem,
                required: required.contains(&name.as_str()),
                ty,
                checks: checks(&schema, name, &mut fallback),
            });
        }
        debug_assert!(inputs.iter().flatten().all(|f| *f != usize::MAX), "the feed plan maps every property");
        let index = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        InstancePlan { fields, index, inputs, open, matrix, fallback }
    }

    /// The field named `name`; `hint` is tried first (clients mostly send fields in order).
    pub fn find(&self, name: &str, hint: usize) -> Option<usize> {
        match self.fields.get(hint) {
            Some(field) if field.name == name => Some(hint),
            _ => self.index.get(name).copied(),
        }
    }
}

fn unknown_keywords(schema: &Map<String, Value>, known: &[&str], field: &str, out: &mut Vec<String>) {
    for key in schema.keys().filter(|k| !known.contains(&k.as_str())) {
        out.push(if field.is_empty() { key.clone() } else { format!("{key} (property '{field}')") });
    }
}

fn checks(schema: &Map<String, Value>, field: &str, fallback: &mut Vec<String>) -> Vec<Check> {
    let mut out = Vec::new();
    for (key, kind) in [
        ("minimum", Bound::Min),
        ("maximum", Bound::Max),
        ("exclusiveMinimum", Bound::ExclusiveMin),
        ("exclusiveMaximum", Bound::ExclusiveMax),
    ] {
        if let Some(shown) = schema.get(key) {
            match shown.as_f64() {
                Some(limit) => out.push(Check::Bound { limit, shown: shown.clone(), kind }),
                None => fallback.push(format!("{key} (property '{field}')")),
            }
        }
    }
    if let Some(options) = schema.get("enum") {
        match options.as_array() {
            Some(list) => out.push(Check::Enum { options: list.clone(), shown: options.to_string() }),
            None => fallback.push(format!("enum (property '{field}')")),
        }
    }
    for (key, make) in [("minLength", Check::MinLength as fn(u64) -> Check), ("maxLength", Check::MaxLength)] {
        if let Some(limit) = schema.get(key) {
            match limit.as_u64() {
                Some(n) => out.push(make(n)),
                None => fallback.push(format!("{key} (property '{field}')")),
            }
        }
    }
    out
}

impl FieldPlan {
    /// Appends one error per keyword `value` breaks, worded as the jsonschema path words it.
    pub fn check(&self, value: &Scalar, path: impl Fn() -> String, errors: &mut Vec<FieldError>) {
        let mut fail = |message: String| errors.push(FieldError { path: path(), message });
        let type_ok = match (self.ty, value) {
            (JsonType::Number, Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_)) => true,
            (JsonType::Integer, Scalar::U64(_) | Scalar::I64(_)) => true,
            (JsonType::Integer, Scalar::F64(f)) => f.fract() == 0.0,
            (JsonType::String, Scalar::Str(_)) | (JsonType::Boolean, Scalar::Bool(_)) => true,
            _ => false,
        };
        if !type_ok {
            let expected = match self.ty {
                JsonType::Number => "a number",
                JsonType::Integer => "an integer",
                JsonType::String => "a string",
                JsonType::Boolean => "a boolean",
            };
            let got = value.to_value();
            let got = match value {
                Scalar::Null => "null".to_owned(),
                _ => format!("{} {}", shown_type(value), shown(&got)),
            };
            fail(format!("must be {expected}, got {got}"));
        }
        for check in &self.checks {
            match check {
                Check::Bound { limit, shown: bound, kind } => {
                    let Some(v) = value.as_f64() else { continue };
                    let (ok, rule) = match kind {
                        Bound::Min => (v >= *limit, ">="),
                        Bound::Max => (v <= *limit, "<="),
                        Bound::ExclusiveMin => (v > *limit, ">"),
                        Bound::ExclusiveMax => (v < *limit, "<"),
                    };
                    if !ok {
                        fail(format!("must be {rule} {bound}, got {}", shown(&value.to_value())));
                    }
                }
                Check::Enum { options, shown: listed } => {
                    if !options.iter().any(|option| equal(option, value)) {
                        fail(format!("must be one of {listed}, got {}", shown(&value.to_value())));
                    }
                }
                Check::MinLength(n) => {
                    if let Scalar::Str(s) = value {
                        if (s.chars().count() as u64) < *n {
                            fail(format!("must be at least {n} characters long, got {}", shown(&value.to_value())));
                        }
                    }
                }
                Check::MaxLength(n) => {
                    if let Scalar::Str(s) = value {
                        if s.chars().count() as u64 > *n {
                            fail(format!("must be at most {n} characters long, got {}", shown(&value.to_value())));
                        }
                    }
                }
            }
        }
    }

    /// The schema calls the field an integer (fed, perhaps, to a float tensor).
    pub fn is_integer(&self) -> bool {
        self.ty == JsonType::Integer
    }

    /// True when a value already of the field's element type (binary tensor data) can still
    /// break a rule: a bound, an `enum`, a length, or `integer` fed from a float tensor.
    pub fn has_checks(&self) -> bool {
        !self.checks.is_empty() || (self.ty == JsonType::Integer && self.elem.json_type() == "number")
    }
}

/// The type a message names: `integer` for what was written as one, else `number`.
fn shown_type(value: &Scalar) -> &'static str {
    match value {
        Scalar::U64(_) | Scalar::I64(_) => "integer",
        Scalar::F64(_) => "number",
        other => other.type_name(),
    }
}

/// JSON Schema equality: numbers by value (1 equals 1.0), everything else as JSON.
fn equal(option: &Value, value: &Scalar) -> bool {
    match (option, value) {
        (Value::String(a), Scalar::Str(b)) => a == b,
        (Value::Bool(a), Scalar::Bool(b)) => a == b,
        (Value::Null, Scalar::Null) => true,
        (Value::Number(a), v) => match (a.as_f64(), v.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}
