//! The committed house-price models' plans and schemas, built without ONNX Runtime: the
//! signatures are written out as `GET /v2/models/{model}` reports them.

use std::path::Path;

use inferd::schema::InstancePlan;
use inferd::schema::InstanceSchema;
use inferd::tensor::rows::Rows;
use inferd::tensor::signature::{ElemType, FeedPlan, Signature, TensorInfo};

/// `server.max_instances_per_request` in the committed `runtime.toml`.
pub const MAX_ROWS: usize = 1024;

pub struct Model {
    pub schema: InstanceSchema,
    pub plan: FeedPlan,
    pub decoder: InstancePlan,
}

impl Model {
    pub fn decoding(&self) -> inferd::decode::Model<'_> {
        inferd::decode::Model { plan: &self.decoder, feed: &self.plan, schema: &self.schema, outputs: &[] }
    }
}

fn info(name: &str, elem: ElemType, width: i64) -> TensorInfo {
    TensorInfo { name: name.into(), elem, shape: vec![-1, width] }
}

fn model(file: &str, inputs: Vec<TensorInfo>) -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(file);
    let schema = InstanceSchema::from_file(&path).expect("committed schema");
    let signature = Signature { inputs, outputs: vec![info("price", ElemType::F32, 1)] };
    let plan = FeedPlan::new(&signature, schema.fields()).expect("schema fits the model");
    let decoder = InstancePlan::compile(schema.document(), &plan, signature.matrix_width().is_some());
    Model { schema, plan, decoder }
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

/// Rows the decoder accepted must be what jsonschema accepts: each rebuilt instance passes it.
pub fn agrees_with_jsonschema(model: &Model, rows: &Rows) {
    for row in 0..rows.len {
        let instance = inferd::decode::sink::instance(&model.decoder, rows, row);
        let mut errors = Vec::new();
        model.schema.check(row, &instance, &mut errors);
        assert!(errors.is_empty(), "the decoder accepted {instance} which jsonschema refuses: {errors:?}");
    }
}
