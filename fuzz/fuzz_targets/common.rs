//! The committed house-price models' plans and schemas, built without ONNX Runtime: the
//! signatures are written out as `GET /v2/models/{model}` reports them.

use std::path::Path;

use inferd::model::signature::{ElemType, FeedPlan, Signature, TensorInfo};
use inferd::schema::InstanceSchema;

/// `server.max_instances_per_request` in the committed `runtime.toml`.
pub const MAX_ROWS: usize = 1024;

pub struct Model {
    pub schema: InstanceSchema,
    pub plan: FeedPlan,
}

fn info(name: &str, elem: ElemType, width: i64) -> TensorInfo {
    TensorInfo { name: name.into(), elem, shape: vec![-1, width] }
}

fn model(file: &str, inputs: Vec<TensorInfo>) -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(file);
    let schema = InstanceSchema::from_file(&path).expect("committed schema");
    let signature = Signature { inputs, outputs: vec![info("price", ElemType::F32, 1)] };
    let plan = FeedPlan::new(&signature, schema.fields()).expect("schema fits the model");
    Model { schema, plan }
}

/// `house_price`: one `[N, 1]` input per feature. `house_price_linear`: one `[N, 5]` matrix.
pub fn models() -> [Model; 2] {
    let mut inputs = vec![info("lotsize", ElemType::F32, 1)];
    for name in ["bedrooms", "bathrms", "stories", "garagepl"] {
        inputs.push(info(name, ElemType::I64, 1));
    }
    for name in ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"] {
        inputs.push(info(name, ElemType::String, 1));
    }
    [model("house_price.json", inputs), model("house_price_linear.json", vec![info("features", ElemType::F32, 5)])]
}

/// What `run_instances` does with decoded instances short of the model: the count, the schema
/// check, and the encoding, which must succeed for instances the schema accepts.
pub fn check_and_encode(model: &Model, instances: &[serde_json::Value]) {
    if instances.is_empty() || instances.len() > MAX_ROWS {
        return;
    }
    let mut errors = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        model.schema.check(i, instance, &mut errors);
    }
    if errors.is_empty() {
        if let Err(errors) = inferd::model::tensors::Rows::encode(&model.plan, instances, 0) {
            panic!("instances the schema accepts failed to encode: {errors:?}");
        }
    }
}
