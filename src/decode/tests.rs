//! The decoder against the reference it replaces: jsonschema on a parsed tree, then the
//! element conversion. Generated instances must be accepted or refused alike, with the same
//! errors (path and message).

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::json::body;
use super::DecodeError;
use super::{Envelope, Model};
use crate::error::FieldError;
use crate::schema::InstancePlan;
use crate::schema::InstanceSchema;
use crate::tensor::rows::Rows;
use crate::tensor::signature::{ElemType, FeedPlan, Signature, TensorInfo};

struct Fixture {
    schema: InstanceSchema,
    feed: FeedPlan,
    plan: InstancePlan,
}

impl Fixture {
    fn house() -> Self {
        let info = |name: &str, elem| TensorInfo { name: name.into(), elem, shape: vec![-1, 1] };
        let mut inputs = vec![info("lotsize", ElemType::F32)];
        for name in ["bedrooms", "bathrms", "stories", "garagepl"] {
            inputs.push(info(name, ElemType::I64));
        }
        for name in ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"] {
            inputs.push(info(name, ElemType::String));
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/house_price.json");
        Self::new(InstanceSchema::from_file(&path).unwrap(), inputs)
    }

    fn new(schema: InstanceSchema, inputs: Vec<TensorInfo>) -> Self {
        let signature = Signature { inputs, outputs: vec![] };
        let feed = FeedPlan::new(&signature, schema.fields()).unwrap();
        let plan = InstancePlan::compile(schema.document(), &feed, signature.matrix_width().is_some());
        Self { schema, feed, plan }
    }

    fn model(&self) -> Model<'_> {
        Model { plan: &self.plan, feed: &self.feed, schema: &self.schema, outputs: &[] }
    }

    /// The decoder's verdict: the errors, sorted; empty when accepted.
    fn decoded(&self, instances: &[Value]) -> Vec<(String, String)> {
        let text = json!({ "instances": instances }).to_string();
        match body(self.model(), text.as_bytes(), Envelope::Predict, 1024) {
            Ok(_) => vec![],
            Err(DecodeError::Validation { details, .. }) => sorted(details),
            Err(other) => vec![("?".into(), other.to_string())],
        }
    }

    /// What jsonschema and then the element conversion say, as before the decoder, on the
    /// instances as parsed from the same text.
    fn reference(&self, instances: &[Value]) -> Vec<(String, String)> {
        let text = json!({ "instances": instances }).to_string();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let instances = parsed["instances"].as_array().unwrap();
        let mut errors = Vec::new();
        for (i, instance) in instances.iter().enumerate() {
            self.schema.check(i, instance, &mut errors);
        }
        if errors.is_empty() {
            if let Err(e) = Rows::encode(&self.feed, instances, 0) {
                errors = e;
            }
        }
        sorted(errors)
    }
}

fn sorted(errors: Vec<FieldError>) -> Vec<(String, String)> {
    let mut out: Vec<_> = errors.into_iter().map(|e| (e.path, e.message)).collect();
    out.sort();
    out
}

/// A value for a field: usually fitting, often not (another type, out of range, null, ...).
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..12).prop_map(Value::from),
        (-5.0f64..200000.0).prop_map(Value::from),
        Just(json!(3.0)),
        Just(json!(2.5)),
        Just(json!("yes")),
        Just(json!("no")),
        Just(json!("maybe")),
        Just(json!("5000")),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
        Just(json!(1e300)),
        Just(json!(-1)),
    ]
}

/// An instance built from the schema's example: each field kept, replaced or removed, and
/// sometimes a field the model does not have.
fn instance(example: Map<String, Value>) -> impl Strategy<Value = Value> {
    let n = example.len();
    (proptest::collection::vec((0u8..4, value()), n), any::<bool>()).prop_map(move |(changes, extra)| {
        let mut out = Map::new();
        for ((name, original), (what, replacement)) in example.iter().zip(changes) {
            match what {
                0 | 1 => {
                    out.insert(name.clone(), original.clone());
                }
                2 => {
                    out.insert(name.clone(), replacement);
                }
                _ => {}
            }
        }
        if extra {
            out.insert("colour".into(), json!("red"));
        }
        Value::Object(out)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_decoder_agrees_with_jsonschema_on_the_house_schema(
        instances in proptest::collection::vec(
            instance(Fixture::house().schema.examples()[0].as_object().unwrap().clone()), 1..4)
    ) {
        let house = Fixture::house();
        prop_assert_eq!(house.decoded(&instances), house.reference(&instances));
    }
}

#[test]
fn a_schema_the_plan_cannot_compile_falls_back_to_jsonschema() {
    let schema = json!({
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}, "n": {"type": "integer", "multipleOf": 2}},
        "required": ["code", "n"],
        "additionalProperties": false,
        "examples": [{"code": "ABC", "n": 4}]
    });
    let path = std::env::temp_dir().join(format!("inferd-fallback-{}.json", std::process::id()));
    std::fs::write(&path, schema.to_string()).unwrap();
    let schema = InstanceSchema::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let inputs = vec![
        TensorInfo { name: "code".into(), elem: ElemType::String, shape: vec![-1] },
        TensorInfo { name: "n".into(), elem: ElemType::I64, shape: vec![-1, 1] },
    ];
    let fixture = Fixture::new(schema, inputs);
    assert_eq!(fixture.plan.fallback, ["pattern (property 'code')", "multipleOf (property 'n')"]);
    for instances in [
        vec![json!({"code": "ABC", "n": 4})],
        vec![json!({"code": "abc", "n": 4})],
        vec![json!({"code": "ABC", "n": 3})],
        vec![json!({"code": 7, "n": "x"})],
    ] {
        assert_eq!(fixture.decoded(&instances), fixture.reference(&instances), "{instances:?}");
    }
    assert_eq!(fixture.decoded(&[json!({"code": "abc", "n": 3})]).len(), 2);
}

#[test]
fn plain_rows_and_duplicate_fields() {
    let schema = InstanceSchema::derive(
        &Signature {
            inputs: vec![TensorInfo { name: "x".into(), elem: ElemType::F32, shape: vec![-1, 3] }],
            outputs: vec![],
        },
        "m",
    )
    .unwrap();
    let fixture = Fixture::new(schema, vec![TensorInfo { name: "x".into(), elem: ElemType::F32, shape: vec![-1, 3] }]);
    let text = br#"{"instances": [[1, 2, 3], {"x_0": 4, "x_1": 5, "x_2": 6}]}"#;
    let (rows, _) = body(fixture.model(), text, Envelope::Predict, 8).unwrap();
    assert_eq!(rows.columns[0], crate::tensor::columns::Column::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let short = fixture.decoded(&[json!([1, 2])]);
    assert_eq!(short, [("/instances/0".to_owned(), "a plain row must hold 3 values, got 2".to_owned())]);
    let text = br#"{"instances": [{"x_0": 1, "x_0": 2, "x_1": 5, "x_2": 6}]}"#;
    let Err(DecodeError::Validation { details, .. }) = body(fixture.model(), text, Envelope::Predict, 8) else {
        panic!()
    };
    assert_eq!(details[0].message, "is given more than once");
}
