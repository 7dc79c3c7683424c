//! `POST /v2/models/{model}/infer` up to the model: parse the request and read its tensors into
//! rows. Nothing may panic or abort, and what is accepted must satisfy the schema.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

mod common;

static MODELS: LazyLock<[common::Model; 2]> = LazyLock::new(common::models);

fuzz_target!(|body: &[u8]| {
    for model in MODELS.iter() {
        if let Ok(rows) = inferd::decode::oip::decode_json(model.decoding(), body, common::MAX_ROWS) {
            common::agrees_with_jsonschema(model, &rows);
        }
    }
});
